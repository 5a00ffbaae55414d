package demo

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// PKI is the demo's certificate files, all PEM, under one directory.
type PKI struct {
	Dir string
}

// File names inside the PKI directory; the printed curl commands use them.
const (
	RootCA        = "client-root-ca.pem"
	Intermediate  = "client-intermediate-ca.pem"
	GoodCert      = "good-client.pem" // leaf + intermediate: what curl presents
	GoodKey       = "good-client-key.pem"
	ExpiredCert   = "expired-client.pem"
	ExpiredKey    = "expired-client-key.pem"
	OtherCA       = "other-root-ca.pem"
	OtherCert     = "other-ca-client.pem"
	OtherKey      = "other-ca-client-key.pem"
	ServerCA      = "server-ca.pem"
	ServerCert    = "server.pem"
	ServerKey     = "server-key.pem"
	BackendCA     = "backend-ca.pem"
	BackendCert   = "backend.pem"
	BackendKey    = "backend-key.pem"
	OutboundCert  = "outbound-client.pem"
	OutboundKey   = "outbound-client-key.pem"
	completeMark  = ".complete"
	demoOrg       = "mtlsgate demo"
	GoodClientCN  = "demo-client"
	OutboundCN    = "mtlsgate-gateway"
	backendDomain = "localhost"
)

func (p PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// EnsurePKI creates the demo PKI in dir unless a complete one is already
// there, so restarting the demo keeps the certificates a user has pointed
// curl (or a browser) at.
func EnsurePKI(dir string, now time.Time) (PKI, bool, error) {
	p := PKI{Dir: dir}
	if _, err := os.Stat(p.Path(completeMark)); err == nil {
		if err := p.checkValid(now); err == nil {
			return p, false, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, false, fmt.Errorf("create PKI directory: %w", err)
	}
	if err := p.generate(now); err != nil {
		return p, false, err
	}
	return p, true, nil
}

// checkValid rejects a stored PKI whose good certificates have since
// expired, so an old state directory does not make the demo fail.
func (p PKI) checkValid(now time.Time) error {
	for _, n := range []string{GoodCert, ServerCert, OutboundCert, BackendCert} {
		b, err := os.ReadFile(p.Path(n))
		if err != nil {
			return err
		}
		certs, err := parsePEMCerts(b)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if now.After(certs[0].NotAfter.Add(-24 * time.Hour)) {
			return fmt.Errorf("%s expires %s", n, certs[0].NotAfter)
		}
	}
	return nil
}

func (p PKI) generate(now time.Time) error {
	name := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, Organization: []string{demoOrg}, Country: []string{"US"}}
	}
	// The client CAs predate the expired certificate, so it was once valid
	// and fails only on its validity period.
	caStart := now.AddDate(0, 0, -90)
	root, err := testpki.NewRoot(testpki.Options{Subject: name("mtlsgate demo client root CA"), NotBefore: caStart, NotAfter: now.AddDate(5, 0, 0)})
	if err != nil {
		return fmt.Errorf("demo root CA: %w", err)
	}
	inter, err := root.Issue(testpki.Options{CA: true, Subject: name("mtlsgate demo client intermediate CA"), NotBefore: caStart, NotAfter: now.AddDate(4, 0, 0)})
	if err != nil {
		return fmt.Errorf("demo intermediate CA: %w", err)
	}
	good, err := inter.Issue(testpki.Options{Subject: pkix.Name{CommonName: GoodClientCN, Organization: []string{demoOrg}, OrganizationalUnit: []string{"engineering"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		URIs: []string{"spiffe://demo.mtlsgate.local/client/demo-client"}, DNSNames: []string{"demo-client.local"}})
	if err != nil {
		return fmt.Errorf("good client: %w", err)
	}
	expired, err := inter.Issue(testpki.Options{Subject: pkix.Name{CommonName: "expired-client", Organization: []string{demoOrg}},
		NotBefore: now.AddDate(0, 0, -30), NotAfter: now.AddDate(0, 0, -1)})
	if err != nil {
		return fmt.Errorf("expired client: %w", err)
	}
	other, err := testpki.NewRoot(testpki.Options{Subject: pkix.Name{CommonName: "some other CA", Organization: []string{"elsewhere"}}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0)})
	if err != nil {
		return fmt.Errorf("other CA: %w", err)
	}
	otherLeaf, err := other.Issue(testpki.Options{CommonName: "stranger", NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)})
	if err != nil {
		return fmt.Errorf("other-CA client: %w", err)
	}
	serverCA, err := testpki.NewRoot(testpki.Options{Subject: name("mtlsgate demo server CA"), NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0)})
	if err != nil {
		return fmt.Errorf("server CA: %w", err)
	}
	server, err := serverCA.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)})
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	backendCA, err := testpki.NewRoot(testpki.Options{Subject: name("mtlsgate demo backend CA"), NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0)})
	if err != nil {
		return fmt.Errorf("backend CA: %w", err)
	}
	backend, err := backendCA.Issue(testpki.Options{CommonName: backendDomain, DNSNames: []string{backendDomain},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)})
	if err != nil {
		return fmt.Errorf("backend certificate: %w", err)
	}
	outbound, err := backendCA.Issue(testpki.Options{Subject: pkix.Name{CommonName: OutboundCN, Organization: []string{demoOrg}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)})
	if err != nil {
		return fmt.Errorf("outbound client certificate: %w", err)
	}
	files := map[string][]byte{
		RootCA: root.PEM(), Intermediate: inter.PEM(),
		GoodCert: testpki.PEM(good, inter), GoodKey: good.KeyPEM(),
		ExpiredCert: testpki.PEM(expired, inter), ExpiredKey: expired.KeyPEM(),
		OtherCA: other.PEM(), OtherCert: otherLeaf.PEM(), OtherKey: otherLeaf.KeyPEM(),
		ServerCA: serverCA.PEM(), ServerCert: server.PEM(), ServerKey: server.KeyPEM(),
		BackendCA: backendCA.PEM(), BackendCert: backend.PEM(), BackendKey: backend.KeyPEM(),
		OutboundCert: outbound.PEM(), OutboundKey: outbound.KeyPEM(),
	}
	os.Remove(p.Path(completeMark))
	for n, b := range files {
		if err := os.WriteFile(p.Path(n), b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", n, err)
		}
	}
	return os.WriteFile(p.Path(completeMark), []byte(now.UTC().Format(time.RFC3339)+"\n"), 0o600)
}
