package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
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

// TestKeyPairRefusesKeysEnvoyCannotLoad: Envoy's TLS context refuses RSA
// under 2048 bits and ECDSA off the NIST curves it supports, NACKs the
// secret and keeps presenting what it had. The upload is refused instead,
// saying what to issue, and serve withholds such a certificate already
// stored.
func TestKeyPairRefusesKeysEnvoyCannotLoad(t *testing.T) {
	selfSigned := func(priv crypto.Signer) ([]byte, []byte) {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
		if err != nil {
			t.Fatal(err)
		}
		key, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []struct {
		name string
		key  crypto.Signer
		want string // "" accepted
	}{
		{"RSA-1024", rsa1024, "a 1024-bit RSA key"},
		{"P-224", p224, "an ECDSA key on P-224"},
		{"P-384", p384, ""},
		{"P-256", p256, ""},
		{"Ed25519", ed, "an Ed25519 key"},
	} {
		cert, key := selfSigned(c.key)
		_, _, _, err := KeyPair(cert, key, time.Now())
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || err.(*problem.Error).Code != "unsupported_key"):
			t.Errorf("%s: %v, want unsupported_key naming %q", c.name, err, c.want)
		}
		// A store written before the check is judged the same way at serve.
		if got := StoredKeyUnsupported(string(cert)); got != c.want {
			t.Errorf("%s stored: %q, want %q", c.name, got, c.want)
		}
	}
}
