package pki

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"my_ca", "$ca", "_x1", "ÉcoleCA", "a"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1ca", "my-ca", "a b", "class", "ca.pem"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestFingerprintFormat(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	fp := Fingerprint(root.DER)
	if len(fp) != 32*3-1 || strings.ToUpper(fp) != fp || strings.Count(fp, ":") != 31 {
		t.Fatalf("fingerprint %q", fp)
	}
}

func TestCAChecks(t *testing.T) {
	now := time.Now()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "R"}))
	inter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "I"}))
	if _, err := CA(root.PEM(), false, now); err != nil {
		t.Fatalf("root refused: %v", err)
	}
	if _, err := CA(inter.PEM(), false, now); err == nil || !strings.Contains(err.Error(), `issued by "CN=R"`) {
		t.Fatalf("intermediate: %v", err)
	}
	if _, err := CA(inter.PEM(), true, now); err != nil {
		t.Fatalf("intermediate with allowIntermediate: %v", err)
	}
	if _, err := CA(append(root.PEM(), inter.PEM()...), false, now); err == nil || !strings.Contains(err.Error(), "2 certificates") {
		t.Fatalf("two certificates: %v", err)
	}
	if _, err := CA(root.PEM(), false, root.Cert.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	if !IsDER(root.DER) || IsDER(root.PEM()) {
		t.Fatal("DER detection")
	}
	// A self-signed version 1 root (no extensions at all) anchors, as it
	// does in crypto/x509 and the filter; a version 1 certificate another
	// CA signed is no CA.
	v1 := testpki.Must(testpki.NewVersion1("Legacy Root", nil))
	if _, err := CA(v1.PEM(), false, now); err != nil {
		t.Fatalf("version 1 root refused: %v", err)
	}
	v1sub := testpki.Must(testpki.NewVersion1("Legacy Sub", v1))
	if _, err := CA(v1sub.PEM(), true, now); err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Fatalf("version 1 certificate signed by another: %v", err)
	}
}

func TestKeyPairKeepsChain(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.RSA2048, 3, testpki.Options{}))
	leaf, chain, key, err := KeyPair(testpki.PEM(ch.Leaf, ch.Issuer()), ch.Leaf.KeyPEM(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.String() != ch.Leaf.Cert.Subject.String() || string(chain) != string(testpki.PEM(ch.Leaf, ch.Issuer())) || string(key) != string(ch.Leaf.KeyPEM()) {
		t.Fatal("chain or key not kept as given")
	}
	other := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	if _, _, _, err := KeyPair(ch.Leaf.PEM(), other.Leaf.KeyPEM(), time.Now()); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatch: %v", err)
	}
}

func TestCRLSignature(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	other := testpki.Must(testpki.NewRoot(testpki.Options{}))
	der := testpki.Must(root.CRLDER(testpki.CRLOptions{}))
	if _, p, err := CRL(der, root.Cert); err != nil || !strings.HasPrefix(string(p), "-----BEGIN X509 CRL-----") {
		t.Fatalf("DER CRL: %v", err)
	}
	if _, _, err := CRL(der, other.Cert); err == nil || !strings.Contains(err.Error(), "not signed by") {
		t.Fatalf("wrong issuer: %v", err)
	}
}
