package policy

import (
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/crlscope"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestEnvoyPathCraftedChains: in envoy mode the client chooses the chain the
// filter re-finds its path in. Whatever it presents, a revoked certificate on
// the only valid path to a bundle CA must stay refused.
func TestEnvoyPathCraftedChains(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Root"}))
	inter := must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing"}))
	revoked := must(inter.Issue(testpki.Options{CommonName: "revoked"}))
	good := must(inter.Issue(testpki.Options{CommonName: "good"}))
	interCRL := must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	rootCRL := must(root.CRL(testpki.CRLOptions{}))

	// The intermediate's earlier certificate: same name and key, expired,
	// and (as CAs drop expired certificates from their lists) not listed.
	// Its renewal is the one the root revoked.
	oldInter := must(root.Issue(testpki.Options{CA: true, RawSubject: inter.Cert.RawSubject, Signer: inter.Key,
		NotBefore: now.Add(-3 * 365 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}))
	interRevokedCRL := must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{inter}}))
	// A certificate of the intermediate's key valid only from tomorrow.
	futureInter := must(root.Issue(testpki.Options{CA: true, RawSubject: inter.Cert.RawSubject, Signer: inter.Key,
		NotBefore: now.Add(24 * time.Hour)}))

	// Junk: a self-signed CA with the intermediate's name and another key,
	// and one with the root's name.
	fakeInter := must(testpki.NewRoot(testpki.Options{CA: true, RawSubject: inter.Cert.RawSubject}))
	fakeRoot := must(testpki.NewRoot(testpki.Options{CA: true, RawSubject: root.Cert.RawSubject}))

	x := func(leaf *testpki.Cert, chain ...*testpki.Cert) string {
		return xfccFor(leaf, testpki.PEM(append([]*testpki.Cert{leaf}, chain...)...))
	}
	cases := []struct {
		name     string
		opts     string
		cas      []*testpki.Cert
		crls     [][]byte
		xfcc     string
		decision string
		reason   Reason
	}{
		{"root presented first, then the intermediate twice", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked, root, inter, inter), DecisionDeny, ReasonRevoked},
		{"same-name junk before the intermediate", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked, fakeInter, fakeRoot, inter), DecisionDeny, ReasonRevoked},
		{"junk only", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked, fakeInter, fakeRoot), DecisionDeny, ReasonUntrustedChain},
		{"anchored intermediate, chain sent too", `{}`, []*testpki.Cert{inter, root}, [][]byte{rootCRL, interCRL}, x(revoked, inter, root), DecisionDeny, ReasonRevoked},
		{"good client through junk", `{"requireCRL":true}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(good, fakeInter, fakeRoot, root, inter), DecisionAllow, ""},
		{"revoked intermediate, its expired earlier certificate presented first", `{}`, []*testpki.Cert{root}, [][]byte{interRevokedCRL}, x(good, oldInter, inter), DecisionDeny, ReasonRevoked},
		{"revoked intermediate, only its expired earlier certificate presented", `{}`, []*testpki.Cert{root}, [][]byte{interRevokedCRL}, x(good, oldInter), DecisionDeny, ReasonExpired},
		{"revoked intermediate, a not yet valid certificate of it presented first", `{}`, []*testpki.Cert{root}, [][]byte{interRevokedCRL}, x(good, futureInter, inter), DecisionDeny, ReasonRevoked},
		{"revoked intermediate, allowRevokedCertificates", `{"allowRevokedCertificates":true}`, []*testpki.Cert{root}, [][]byte{interRevokedCRL}, x(good, oldInter, inter), DecisionDeny, ReasonRevoked},
		{"anchored intermediate revoked above it, allowRevokedCertificates", `{"allowRevokedCertificates":true}`, []*testpki.Cert{inter, root}, [][]byte{interRevokedCRL}, x(good, inter), DecisionDeny, ReasonRevoked},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := `{"chainVerification":"envoy"}`
			if c.opts != `{}` {
				opts = `{"chainVerification":"envoy",` + strings.TrimPrefix(c.opts, "{")
			}
			e := newEngine(t, opts, c.cas, c.crls...)
			r := e.Evaluate(xfccReq(c.xfcc, now))
			expect(t, r, c.decision, c.reason)
			// Filter mode decides the same chain the same way.
			if c.reason != ReasonUntrustedChain {
				f := newEngine(t, strings.Replace(opts, `"envoy"`, `"filter"`, 1), c.cas, c.crls...)
				expect(t, f.Evaluate(xfccReq(c.xfcc, now)), c.decision, c.reason)
			}
		})
	}

	t.Run("more certificates than a chain may hold", func(t *testing.T) {
		e := newEngine(t, `{"chainVerification":"envoy"}`, []*testpki.Cert{root}, rootCRL, interCRL)
		r := e.Evaluate(xfccReq(x(good, inter, inter, inter, inter, inter, inter, inter, root), now))
		expect(t, r, DecisionDeny, ReasonCertificateTooLarge)
	})

	// A cached acceptance ends when a CA of the path expires, as in filter
	// mode, not when the leaf does.
	t.Run("verdict cached no longer than the path's CAs are valid", func(t *testing.T) {
		shortInter := must(root.Issue(testpki.Options{CA: true, CommonName: "Short", NotAfter: now.Add(time.Hour)}))
		leaf := must(shortInter.Issue(testpki.Options{CommonName: "under-short"}))
		e := newEngine(t, `{"chainVerification":"envoy"}`, []*testpki.Cert{root}, rootCRL)
		expect(t, e.Evaluate(xfccReq(x(leaf, shortInter), now)), DecisionAllow, "")
		expect(t, e.Evaluate(xfccReq(x(leaf, shortInter), now.Add(2*time.Hour))), DecisionDeny, ReasonExpired)
	})

	t.Run("verdict cached no longer than the list is current", func(t *testing.T) {
		soon := must(inter.CRL(testpki.CRLOptions{ThisUpdate: now.Add(-time.Hour).Truncate(time.Second), NextUpdate: now.Add(time.Minute).Truncate(time.Second)}))
		e := newEngine(t, `{"chainVerification":"envoy"}`, []*testpki.Cert{root}, rootCRL, soon)
		expect(t, e.Evaluate(xfccReq(x(good, inter), now)), DecisionAllow, "")
		expect(t, e.Evaluate(xfccReq(x(good, inter), now.Add(2*time.Minute))), DecisionDeny, ReasonRevocationUnknown)
	})
}

// TestEnvoyModeScopedListsAndAnchoredIntermediates: the rules of filter mode
// for lists scoped to a distribution point and for an intermediate anchored
// beside its root hold in envoy mode, whatever the client presents.
func TestEnvoyModeScopedListsAndAnchoredIntermediates(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Root"}))
	inter := must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing"}))
	rootCRL := must(root.CRL(testpki.CRLOptions{}))
	pointA, pointB := "http://crl.example/a.crl", "http://crl.example/b.crl"
	inA := must(inter.Issue(testpki.Options{CommonName: "in a", CRLDistributionPoints: []string{pointA}}))
	revokedInA := must(inter.Issue(testpki.Options{CommonName: "revoked in a", CRLDistributionPoints: []string{pointA}}))
	// Listed on B's list while naming A, or no point: still revoked.
	listedOnB := must(inter.Issue(testpki.Options{CommonName: "listed on b", CRLDistributionPoints: []string{pointA}}))
	listedNoPoint := must(inter.Issue(testpki.Options{CommonName: "listed, no point"}))
	listA := crlWith(t, inter, revokedInA, 11, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointA)}}, nil)
	listB := crlWith(t, inter, listedOnB, 12, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointB)}}, nil)
	listB2 := crlWith(t, inter, listedNoPoint, 13, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointB+"?2")}}, nil)
	e := newEngine(t, `{"chainVerification":"envoy","requireCRL":true}`, []*testpki.Cert{root}, rootCRL, listA, listB, listB2)
	for _, c := range []struct {
		leaf   *testpki.Cert
		reason Reason
	}{{inA, ""}, {revokedInA, ReasonRevoked}, {listedOnB, ReasonRevoked}, {listedNoPoint, ReasonRevoked}} {
		r := e.Evaluate(xfccReq(xfccFor(c.leaf, testpki.PEM(c.leaf, inter)), now))
		if r.Reason != c.reason {
			t.Errorf("%s: %s %q (%s), want %q", c.leaf.Cert.Subject, r.Decision, r.Reason, r.Detail(), c.reason)
		}
	}

	leaf := must(inter.Issue(testpki.Options{CommonName: "client"}))
	revokesInter := must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{inter}}))
	interCRL := must(inter.CRL(testpki.CRLOptions{}))
	for _, cas := range [][]*testpki.Cert{{root, inter}, {inter, root}} {
		for _, opts := range []string{`{"chainVerification":"envoy"}`, `{"chainVerification":"envoy","allowRevokedCertificates":true}`} {
			e := newEngine(t, opts, cas, revokesInter, interCRL)
			// The intermediate sent, not sent, sent with the root, sent twice.
			for _, chain := range [][]*testpki.Cert{{leaf, inter}, {leaf}, {leaf, root, inter}, {leaf, inter, inter}} {
				r := e.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(chain...)), now))
				expect(t, r, DecisionDeny, ReasonRevoked)
			}
		}
	}
	// Only the intermediate anchored: nothing above it is known.
	e = newEngine(t, `{"chainVerification":"envoy","requireCRL":true}`, []*testpki.Cert{inter}, revokesInter, interCRL)
	expect(t, e.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, inter, root)), now)), DecisionAllow, "")
}
