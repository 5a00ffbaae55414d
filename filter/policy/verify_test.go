package policy

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// signed is testpki.Signed, failing the test on error.
func signed(t *testing.T, signer *testpki.Cert, tbs any) []byte {
	t.Helper()
	return must(testpki.Signed(signer, tbs))
}

func v1Cert(t *testing.T, cn string, issuer *testpki.Cert) *testpki.Cert {
	t.Helper()
	return must(testpki.NewVersion1(cn, issuer))
}

// A self-signed version 1 root is an anchor, as crypto/x509 treats it; its
// CRL applies. Other certificates without CA:TRUE are still refused.
func TestVersion1RootAnchor(t *testing.T) {
	root := v1Cert(t, "Legacy Root", nil)
	leaf := must(root.Issue(testpki.Options{CommonName: "legacy-client"}))
	other := must(root.Issue(testpki.Options{}))
	x := xfccFor(leaf, leaf.PEM())
	e := newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, rawCRL(t, root, now.Add(-time.Hour), now.Add(24*time.Hour), other))
	expect(t, e.Evaluate(xfccReq(x, now)), DecisionAllow, "")
	expect(t, e.Evaluate(xfccReq(xfccFor(other, other.PEM()), now)), DecisionDeny, ReasonRevoked)

	v3root := must(testpki.NewRoot(testpki.Options{}))
	for _, c := range []struct {
		name string
		cert *testpki.Cert
		want string
	}{
		{"v1 not self-signed", v1Cert(t, "Legacy Sub", v3root), "is a version 1 certificate that is not self-signed"},
		{"v3 leaf", must(v3root.Issue(testpki.Options{})), "basicConstraints CA:FALSE"},
	} {
		if _, err := compileBundle(mustBundle(t, []*testpki.Cert{v3root, c.cert})); err == nil || !strings.Contains(err.Error(), "caCertificates[1]") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: compileBundle error = %v, want %q", c.name, err, c.want)
		}
	}
}

// A keyUsage extension with no bit set allows no usage (RFC 5280 4.2.1.3),
// unlike an absent one, though crypto/x509 reports both as KeyUsage 0.
func TestEmptyKeyUsage(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	inter := must(root.Issue(testpki.Options{CA: true}))
	emptyKU := must(inter.Issue(testpki.Options{ExtraExtensions: []pkix.Extension{{Id: oidKeyUsage, Critical: true, Value: []byte{0x03, 0x01, 0x00}}}}))
	if emptyKU.Cert.KeyUsage != 0 {
		t.Fatalf("test certificate has keyUsage %v", emptyKU.Cert.KeyUsage)
	}
	key := must(testpki.NewKey(testpki.P256))
	noKUder := must(x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "no-ku"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, inter.Cert, key.Public(), inter.Key))
	noKU := &testpki.Cert{Cert: must(x509.ParseCertificate(noKUder)), DER: noKUder, Key: key, Issuer: inter}
	for _, x := range noKU.Cert.Extensions {
		if x.Id.Equal(oidKeyUsage) {
			t.Fatal("test certificate has a keyUsage extension")
		}
	}

	e := newEngine(t, "", []*testpki.Cert{root})
	r := e.Evaluate(xfccReq(xfccFor(emptyKU, testpki.PEM(emptyKU, inter)), now))
	expect(t, r, DecisionDeny, ReasonWrongKeyUsage)
	if !strings.Contains(r.Detail(), "no usage set") {
		t.Errorf("detail: %s", r.Detail())
	}
	expect(t, e.Evaluate(xfccReq(xfccFor(noKU, testpki.PEM(noKU, inter)), now)), DecisionAllow, "")

	envoy := NewEngine(must(ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{"chainVerification":"envoy","revocationCheck":"off"}`) + `]}`))))
	expect(t, envoy.Evaluate(xfccReq(xfccFor(emptyKU, nil), now)), DecisionDeny, ReasonWrongKeyUsage)
	expect(t, envoy.Evaluate(xfccReq(xfccFor(noKU, nil), now)), DecisionAllow, "")

	lax := newEngine(t, `{"requireClientAuthUsage":false}`, []*testpki.Cert{root})
	expect(t, lax.Evaluate(xfccReq(xfccFor(emptyKU, testpki.PEM(emptyKU, inter)), now)), DecisionAllow, "")
}

// A refusal because a CA is not valid yet holds until that CA's notBefore,
// not until the leaf expires: the cached verdict must end then.
func TestNotYetValidCAVerdictEndsAtItsNotBefore(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	inter := must(root.Issue(testpki.Options{CA: true, NotBefore: now.Add(2 * time.Minute).Truncate(time.Second)}))
	leaf := must(inter.Issue(testpki.Options{}))
	futureRoot := must(testpki.NewRoot(testpki.Options{NotBefore: now.Add(5 * time.Minute).Truncate(time.Second)}))
	leaf2 := must(futureRoot.Issue(testpki.Options{}))

	for _, c := range []struct {
		name   string
		anchor *testpki.Cert
		xfcc   string
		valid  time.Time
	}{
		{"intermediate", root, xfccFor(leaf, testpki.PEM(leaf, inter)), inter.Cert.NotBefore},
		{"anchor", futureRoot, xfccFor(leaf2, leaf2.PEM()), futureRoot.Cert.NotBefore},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(t, "", []*testpki.Cert{c.anchor})
			r := e.Evaluate(xfccReq(c.xfcc, now))
			expect(t, r, DecisionDeny, ReasonNotYetValid)
			if !strings.Contains(r.Detail(), "is valid from "+isoTime(c.valid)) {
				t.Errorf("detail: %s", r.Detail())
			}
			if r = e.Evaluate(xfccReq(c.xfcc, c.valid.Add(-time.Second))); !r.CacheHit || r.Reason != ReasonNotYetValid {
				t.Fatalf("a second before: %s %s cached=%v", r.Decision, r.Reason, r.CacheHit)
			}
			r = e.Evaluate(xfccReq(c.xfcc, c.valid))
			expect(t, r, DecisionAllow, "")
			if r.CacheHit {
				t.Fatal("cached")
			}
		})
	}
}

// allowExpiredCertificates waives the leaf's notAfter and nothing else: the
// chain is verified as of now, so a leaf that expired before its CA was
// renewed (same name and key) is accepted, also while the old CA certificate
// is still in the bundle.
func TestAllowExpiredAcrossCARenewal(t *testing.T) {
	day := 24 * time.Hour
	oldRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Corp Root", NotBefore: now.Add(-400 * day), NotAfter: now.Add(-day)}))
	newRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Corp Root", Signer: oldRoot.Key, NotBefore: now.Add(-7 * day)}))
	leaf := must(oldRoot.Issue(testpki.Options{NotBefore: now.Add(-300 * day), NotAfter: now.Add(-30 * day)}))
	revoked := must(oldRoot.Issue(testpki.Options{NotBefore: now.Add(-300 * day), NotAfter: now.Add(-30 * day)}))
	crl := must(newRoot.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	x := xfccFor(leaf, leaf.PEM())

	for _, cas := range [][]*testpki.Cert{{newRoot}, {oldRoot, newRoot}, {newRoot, oldRoot}} {
		e := newEngine(t, `{"allowExpiredCertificates":true}`, cas, crl)
		r := e.Evaluate(xfccReq(x, now))
		expect(t, r, DecisionAllow, ReasonExpired)
		// The headers describe the certificate presented, its real
		// notAfter included.
		if v, _ := header(r.SetHeaders, "x-mtls-not-after"); v != isoTime(leaf.Cert.NotAfter) {
			t.Errorf("x-mtls-not-after = %q, want %q", v, isoTime(leaf.Cert.NotAfter))
		}
		// Revocation still applies to the accepted chain.
		expect(t, e.Evaluate(xfccReq(xfccFor(revoked, revoked.PEM()), now)), DecisionDeny, ReasonRevoked)
		// Without the option the leaf is refused as before.
		strict := newEngine(t, "", cas, crl)
		expect(t, strict.Evaluate(xfccReq(x, now)), DecisionDeny, ReasonExpired)
	}
	// No valid CA now: refused, whatever the leaf.
	e := newEngine(t, `{"allowExpiredCertificates":true}`, []*testpki.Cert{oldRoot})
	expect(t, e.Evaluate(xfccReq(x, now)), DecisionDeny, ReasonExpired)
}
