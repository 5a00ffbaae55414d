package testpki

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestChainVerifiesAndCRLParses(t *testing.T) {
	for _, k := range []KeyType{P256, RSA2048, Ed25519} {
		ch, err := NewChain(k, 3, Options{DNSNames: []string{"client.example"}, URIs: []string{"spiffe://example/client"}})
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(ch.Root.Cert)
		inters := x509.NewCertPool()
		inters.AddCert(ch.Intermediates[0].Cert)
		if _, err := ch.Leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("%s: generated chain does not verify: %v", k, err)
		}
		der, err := ch.Issuer().CRLDER(CRLOptions{Revoked: []*Cert{ch.Leaf}, NextUpdate: time.Now().Add(-time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := crl.CheckSignatureFrom(ch.Issuer().Cert); err != nil {
			t.Fatalf("%s: CRL signature: %v", k, err)
		}
		if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(ch.Leaf.Cert.SerialNumber) != 0 {
			t.Fatalf("%s: CRL does not list the leaf", k)
		}
		if !crl.NextUpdate.Before(time.Now()) {
			t.Fatalf("%s: stale CRL option ignored", k)
		}
	}
}

func TestLeafDefaultsAndRejectsNonCAIssuer(t *testing.T) {
	ch := Must(NewChain(P256, 2, Options{CommonName: "c1"}))
	if ch.Leaf.Cert.Subject.CommonName != "c1" || ch.Leaf.Cert.IsCA {
		t.Fatalf("leaf subject/CA wrong: %v %v", ch.Leaf.Cert.Subject, ch.Leaf.Cert.IsCA)
	}
	if len(ch.Leaf.Cert.ExtKeyUsage) != 1 || ch.Leaf.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("leaf EKU = %v, want clientAuth", ch.Leaf.Cert.ExtKeyUsage)
	}
	if _, err := ch.Leaf.Issue(Options{}); err == nil {
		t.Fatal("a leaf must not be able to issue")
	}
}
