package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// resignSHA1 returns c's certificate re-signed by key with SHA-1 and RSA,
// as long-lived private roots often are; crypto/x509 no longer writes such
// signatures, so the TBS is edited by hand.
func resignSHA1(t *testing.T, c *testpki.Cert, key crypto.Signer) []byte {
	t.Helper()
	sha1RSA := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, Parameters: asn1.NullRawValue}
	alg, err := asn1.Marshal(sha1RSA)
	if err != nil {
		t.Fatal(err)
	}
	var tbs asn1.RawValue
	if _, err := asn1.Unmarshal(c.Cert.RawTBSCertificate, &tbs); err != nil {
		t.Fatal(err)
	}
	var fields []byte
	for i, rest := 0, tbs.Bytes; len(rest) > 0; i++ {
		var f asn1.RawValue
		if rest, err = asn1.Unmarshal(rest, &f); err != nil {
			t.Fatal(err)
		}
		if i == 2 { // version, serialNumber, signature
			f.FullBytes = alg
		}
		fields = append(fields, f.FullBytes...)
	}
	tbsDER, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: fields})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha1.Sum(tbsDER)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, sha1RSA, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestSHA1SelfSignedRootAccepted: a self-signed root whose self-signature
// is SHA-1 was refused as "an intermediate CA issued by <itself>", because
// crypto/x509's CheckSignatureFrom refuses SHA-1. A root's own signature is
// not what path validation relies on (crypto/x509 and BoringSSL, so Envoy,
// ignore it), and Envoy accepts such roots; so does the sidecar, as the
// filter does. A self-issued certificate whose signature its own key does
// not verify is still refused, with an error that says so.
func TestSHA1SelfSignedRootAccepted(t *testing.T) {
	now := time.Now()
	root := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.RSA2048, CommonName: "SHA1 Root"}))
	sha1Root := resignSHA1(t, root, root.Key)
	c, err := CA(sha1Root, false, now)
	if err != nil {
		t.Fatalf("SHA-1 self-signed root refused: %v", err)
	}
	if c.SignatureAlgorithm != x509.SHA1WithRSA || !CARecord("sha1_root", c, "").SelfSigned {
		t.Fatalf("signature %v, recorded as self-signed: %v", c.SignatureAlgorithm, CARecord("sha1_root", c, "").SelfSigned)
	}

	// Same name, signed by another key: not a root, and the error says why
	// instead of calling it an intermediate issued by itself.
	other := testpki.Must(testpki.NewKey(testpki.RSA2048))
	_, err = CA(resignSHA1(t, root, other), false, now)
	if err == nil || !strings.Contains(err.Error(), "names itself as issuer, but its own key does not verify its signature") || strings.Contains(err.Error(), "intermediate CA issued by") {
		t.Fatalf("self-issued certificate signed by another key: %v", err)
	}
	if _, err := CA(resignSHA1(t, root, other), true, now); err != nil {
		t.Fatalf("the same with allowIntermediate: %v", err)
	}
}
