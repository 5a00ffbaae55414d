package pki

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestDNMatchesOpenSSL: names the CLI shows are the ones certIssuerDN and the
// filter's headers use (openssl's RFC 2253 form), not pkix.Name's, which
// prints emailAddress as a raw OID.
func TestDNMatchesOpenSSL(t *testing.T) {
	c := testpki.Must(testpki.NewRoot(testpki.Options{Subject: pkix.Name{CommonName: "ops, root", Organization: []string{"Example"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "pki@example.org"}}}}))
	want := `emailAddress=pki@example.org,CN=ops\, root,O=Example`
	if got := DN(c.Cert.RawSubject); got != want {
		t.Errorf("DN = %q, want %q", got, want)
	}
	if c.Cert.Subject.String() == want {
		t.Fatal("pkix.Name.String already matches; this test no longer distinguishes the formats")
	}
}
