package gateway

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(b)}}
}

// A validation context with a field the gateway does not model is refused
// (NACKed): ignoring a pin or a SAN matcher would accept clients Envoy
// refuses.
func TestValidationContextFieldsNotModelledAreRefused(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	for name, vc := range map[string]*tlsv3.CertificateValidationContext{
		"hash pin":         {TrustedCa: inline(root.PEM()), VerifyCertificateHash: []string{"00"}},
		"SAN matcher":      {TrustedCa: inline(root.PEM()), MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x"}}}}},
		"allow expired":    {TrustedCa: inline(root.PEM()), AllowExpiredCertificate: true},
		"accept untrusted": {TrustedCa: inline(root.PEM()), TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED},
		"no CA":            {TrustedCa: inline([]byte("not PEM"))},
		"CRL not PEM":      {TrustedCa: inline(root.PEM()), Crl: inline([]byte("not PEM"))},
	} {
		if _, err := parseValidationContext(vc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Without only_verify_leaf_cert_crl every certificate below the anchor needs
// its issuer's current list, as BoringSSL's CRL_CHECK_ALL does; with it, only
// the leaf does.
func TestClientTrustCRLCheck(t *testing.T) {
	now := time.Now()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "root"}))
	inter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "inter"}))
	leaf := testpki.Must(inter.Issue(testpki.Options{CommonName: "leaf"}))
	revoked := testpki.Must(inter.Issue(testpki.Options{CommonName: "revoked"}))
	interCRL := testpki.Must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	rootCRL := testpki.Must(root.CRL(testpki.CRLOptions{}))
	stale := testpki.Must(inter.CRL(testpki.CRLOptions{ThisUpdate: now.Add(-48 * time.Hour), NextUpdate: now.Add(-time.Hour)}))
	// Issued by a CA whose clock runs ahead: not valid yet.
	future := testpki.Must(inter.CRL(testpki.CRLOptions{ThisUpdate: now.Add(time.Hour), Revoked: []*testpki.Cert{revoked}}))
	chain := func(c *testpki.Cert) []*x509.Certificate { return []*x509.Certificate{c.Cert, inter.Cert} }
	for _, c := range []struct {
		name     string
		crls     []byte
		leafOnly bool
		certs    []*x509.Certificate
		want     string // "" for accepted
	}{
		{"leaf only, list present", interCRL, true, chain(leaf), ""},
		{"leaf only, revoked", interCRL, true, chain(revoked), "certificate revoked"},
		{"leaf only, issuer without a list", rootCRL, true, chain(leaf), "unable to get certificate CRL"},
		{"leaf only, stale list", stale, true, chain(leaf), "CRL has expired"},
		{"leaf only, list not valid yet", future, true, chain(leaf), "CRL is not yet valid"},
		{"leaf only, a current list beside one not valid yet", append(append([]byte{}, future...), interCRL...), true, chain(leaf), ""},
		{"leaf only, a current list beside a stale one", append(append([]byte{}, interCRL...), stale...), true, chain(revoked), "certificate revoked"},
		{"whole chain, no list from the root", interCRL, false, chain(leaf), "unable to get certificate CRL"},
		{"whole chain, every list", append(append([]byte{}, interCRL...), rootCRL...), false, chain(leaf), ""},
		{"no lists", nil, false, chain(revoked), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			vc := &tlsv3.CertificateValidationContext{TrustedCa: inline(root.PEM()), OnlyVerifyLeafCertCrl: c.leafOnly}
			if c.crls != nil {
				vc.Crl = inline(c.crls)
			}
			ct, err := parseValidationContext(vc)
			if err != nil {
				t.Fatal(err)
			}
			err = ct.verify(c.certs, now)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("verify: %v, want %q", err, c.want)
			}
		})
	}
}

// BoringSSL's ssl_client purpose, which Envoy's listener applies: an
// extendedKeyUsage extension, on the leaf or a CA below the anchor, must
// name clientAuth (anyExtendedKeyUsage alone does not do), and the leaf's
// keyUsage, when present, must allow digitalSignature or keyAgreement.
// crypto/x509 accepts anyExtendedKeyUsage and does not read keyUsage.
func TestClientTrustPurpose(t *testing.T) {
	now := time.Now()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "root"}))
	inter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "inter"}))
	anyInter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "any-inter", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}))
	clientInter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "client-inter", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}))
	for _, c := range []struct {
		name  string
		certs []*testpki.Cert
		want  string // "" for accepted
	}{
		{"clientAuth", []*testpki.Cert{testpki.Must(inter.Issue(testpki.Options{CommonName: "ok"})), inter}, ""},
		{"no extendedKeyUsage", []*testpki.Cert{testpki.Must(inter.Issue(testpki.Options{CommonName: "no-eku", NoExtKeyUsage: true})), inter}, ""},
		{"keyAgreement", []*testpki.Cert{testpki.Must(inter.Issue(testpki.Options{CommonName: "ka", KeyUsage: x509.KeyUsageKeyAgreement})), inter}, ""},
		{"under a CA naming clientAuth", []*testpki.Cert{testpki.Must(clientInter.Issue(testpki.Options{CommonName: "ok2"})), clientInter}, ""},
		{"anyExtendedKeyUsage only", []*testpki.Cert{testpki.Must(inter.Issue(testpki.Options{CommonName: "any", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})), inter}, "unsupported certificate purpose"},
		{"serverAuth only", []*testpki.Cert{testpki.Must(inter.Issue(testpki.Options{CommonName: "server", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), inter}, "certificate verify failed"},
		{"keyEncipherment only", []*testpki.Cert{testpki.Must(inter.Issue(testpki.Options{Key: testpki.RSA2048, CommonName: "ke", KeyUsage: x509.KeyUsageKeyEncipherment})), inter}, "unsupported certificate purpose"},
		{"under a CA with anyExtendedKeyUsage only", []*testpki.Cert{testpki.Must(anyInter.Issue(testpki.Options{CommonName: "under-any"})), anyInter}, "unsupported certificate purpose"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ct, err := parseValidationContext(&tlsv3.CertificateValidationContext{TrustedCa: inline(root.PEM())})
			if err != nil {
				t.Fatal(err)
			}
			var certs []*x509.Certificate
			for _, x := range c.certs {
				certs = append(certs, x.Cert)
			}
			err = ct.verify(certs, now)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("verify: %v, want %q", err, c.want)
			}
		})
	}
}

// A validation context the gateway cannot apply is NACKed and the one in use
// stays, as Envoy keeps the secret it has; a later good one replaces it.
func TestValidationContextUpdates(t *testing.T) {
	rootA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "A"}))
	rootB := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "B"}))
	ofA := testpki.Must(rootA.Issue(testpki.Options{CommonName: "a"}))
	ofB := testpki.Must(rootB.Issue(testpki.Options{CommonName: "b"}))
	c := newSDSClient("unused", "mtlsgate-client-ca", "node", func(string, ...any) {}, nil)
	c.validation = true
	push := func(version string, s *tlsv3.Secret) error {
		a, err := anypb.New(s)
		if err != nil {
			t.Fatal(err)
		}
		return c.apply(&discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: []*anypb.Any{a}, TypeUrl: secretTypeURL})
	}
	vc := func(ca *testpki.Cert, mod func(*tlsv3.CertificateValidationContext)) *tlsv3.Secret {
		v := &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.PEM())}
		if mod != nil {
			mod(v)
		}
		return &tlsv3.Secret{Name: "mtlsgate-client-ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: v}}
	}
	accepts := func(leaf *testpki.Cert) bool {
		ct := c.Trust()
		return ct != nil && ct.verify([]*x509.Certificate{leaf.Cert}, time.Now()) == nil
	}
	if c.Trust() != nil || accepts(ofA) {
		t.Fatal("a client accepted before any validation context")
	}
	if err := push("1", vc(rootA, nil)); err != nil || !accepts(ofA) || accepts(ofB) {
		t.Fatalf("version 1: %v", err)
	}
	if err := push("2", vc(rootB, func(v *tlsv3.CertificateValidationContext) { v.VerifyCertificateHash = []string{"00"} })); err == nil {
		t.Fatal("a context with a pin was applied")
	}
	if err := push("3", &tlsv3.Secret{Name: "mtlsgate-client-ca"}); err == nil {
		t.Fatal("a secret that is not a validation_context was applied")
	}
	if c.Version() != "1" || !accepts(ofA) || accepts(ofB) {
		t.Fatalf("after the NACKs version %q", c.Version())
	}
	if err := push("4", vc(rootB, nil)); err != nil || accepts(ofA) || !accepts(ofB) {
		t.Fatalf("version 4: %v", err)
	}
}

// Chain shapes a client may send, decided as BoringSSL decides them: an
// expired intermediate fails unless a valid certificate of the same CA is
// sent too, order does not matter, and a missing intermediate fails.
func TestClientTrustChainShapes(t *testing.T) {
	now := time.Now()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "root"}))
	inter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "inter"}))
	oldInter := testpki.Must(root.Issue(testpki.Options{CA: true, RawSubject: inter.Cert.RawSubject, Signer: inter.Key,
		NotBefore: now.Add(-3 * 365 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}))
	leaf := testpki.Must(inter.Issue(testpki.Options{CommonName: "leaf"}))
	ct, err := parseValidationContext(&tlsv3.CertificateValidationContext{TrustedCa: inline(root.PEM())})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		certs []*testpki.Cert
		ok    bool
	}{
		{"intermediate sent", []*testpki.Cert{leaf, inter}, true},
		{"intermediate not sent", []*testpki.Cert{leaf}, false},
		{"only an expired certificate of the intermediate", []*testpki.Cert{leaf, oldInter}, false},
		{"expired certificate first, then a valid one", []*testpki.Cert{leaf, oldInter, inter}, true},
		{"root first, then the intermediate", []*testpki.Cert{leaf, root, inter}, true},
	} {
		var certs []*x509.Certificate
		for _, x := range c.certs {
			certs = append(certs, x.Cert)
		}
		if err := ct.verify(certs, now); (err == nil) != c.ok {
			t.Errorf("%s: verify: %v, want accepted %v", c.name, err, c.ok)
		}
	}
}
