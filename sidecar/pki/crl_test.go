package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
)

// crlWith is a list signed by ca with the given extensions, as a CA's
// software would write them.
func crlWith(t testing.TB, ca *testpki.Cert, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(5), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(42), RevocationTime: time.Now().Add(-time.Hour)}},
		ExtraExtensions:           exts,
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// deltaCRLIndicator is the extension of a delta CRL (RFC 5280 5.2.4): the
// number of the base CRL it updates.
func deltaCRLIndicator(t testing.TB, base int64) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(big.NewInt(base))
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: v}
}

// issuingDistributionPoint (RFC 5280 5.2.5) limited to user certificates,
// or naming a distribution point only.
func issuingDistributionPoint(t testing.TB, onlyUserCerts bool) pkix.Extension {
	t.Helper()
	type idp struct {
		DistributionPoint asn1.RawValue `asn1:"optional,tag:0"`
		OnlyUserCerts     bool          `asn1:"optional,tag:1"`
	}
	var v idp
	if onlyUserCerts {
		v.OnlyUserCerts = true
	} else {
		uri := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte("http://pki.example.com/shard-3.crl")}
		names, err := asn1.Marshal(uri)
		if err != nil {
			t.Fatal(err)
		}
		// DistributionPointName.fullName [0] GeneralNames.
		v.DistributionPoint = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
			Bytes: mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: names})}
	}
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: b}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCRLMustBeComplete: a delta CRL or a partitioned one (which Go parses
// without complaint) would un-revoke what it leaves out; both are refused
// with crl_not_complete and the way forward. A complete list is taken.
func TestCRLMustBeComplete(t *testing.T) {
	ca := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Partitioning CA"}))
	if _, _, err := CRL(crlWith(t, ca), ca.Cert); err != nil {
		t.Fatalf("complete CRL refused: %v", err)
	}
	// An issuingDistributionPoint naming only the point, as AD CS marks its
	// full CRLs: complete for the certificates naming that point.
	if _, _, err := CRL(crlWith(t, ca, issuingDistributionPoint(t, false)), ca.Cert); err != nil {
		t.Fatalf("CRL naming only its distribution point refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		ext  pkix.Extension
		want string
	}{
		{"delta", deltaCRLIndicator(t, 4), "is a delta CRL"},
		{"only user certificates", issuingDistributionPoint(t, true), "issuingDistributionPoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := crlWith(t, ca, tc.ext)
			b, _ := pem.Decode(list)
			if _, err := x509.ParseRevocationList(b.Bytes); err != nil {
				t.Fatalf("Go no longer parses this list (%v): the check may be redundant", err)
			}
			_, _, err := CRL(list, ca.Cert)
			p, ok := problem.As(err)
			if !ok || p.Code != "crl_not_complete" || p.Status != 400 || !strings.Contains(p.Detail, tc.want) || !strings.Contains(p.Detail, "complete") {
				t.Fatalf("got %v, want crl_not_complete saying %q", err, tc.want)
			}
		})
	}
}

// TestCRLOfSameKeyOtherNameRefused: a list signed with the CA's key but
// issued under another name (the CA renamed or re-issued with its old key)
// is not the CA's list; the check every path shares refuses it with both
// names, so the operator sees which list was given to which CA.
func TestCRLOfSameKeyOtherNameRefused(t *testing.T) {
	oldCA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Old CA"}))
	newCA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "New CA", Signer: oldCA.Key}))
	_, _, err := CRL(crlWith(t, oldCA), newCA.Cert)
	p, ok := problem.As(err)
	if !ok || p.Code != "crl_wrong_issuer" || !strings.Contains(p.Detail, `"CN=Old CA"`) || !strings.Contains(p.Detail, `"CN=New CA"`) {
		t.Fatalf("list of CN=Old CA given to CN=New CA (same key): %v", err)
	}
	if _, _, err := CRL(crlWith(t, newCA), newCA.Cert); err != nil {
		t.Fatalf("the CA's own list: %v", err)
	}
}
