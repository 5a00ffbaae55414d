package policy

import (
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// A root renewed with the same name and key is the same CA: the CRL its key
// signs applies to chains ending at either certificate, whichever the bundle
// lists first.
func TestCRLAppliesToRenewedRoot(t *testing.T) {
	oldRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Corp Root", NotBefore: now.Add(-3 * 365 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)}))
	newRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Corp Root", Signer: oldRoot.Key}))
	revoked := must(newRoot.Issue(testpki.Options{CommonName: "revoked-client"}))
	good := must(newRoot.Issue(testpki.Options{CommonName: "good-client"}))
	crl := must(newRoot.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))

	for _, order := range []struct {
		name string
		cas  []*testpki.Cert
	}{{"old root first", []*testpki.Cert{oldRoot, newRoot}}, {"new root first", []*testpki.Cert{newRoot, oldRoot}}} {
		for _, opts := range []string{`{}`, `{"requireCRL":true}`} {
			t.Run(order.name+" "+opts, func(t *testing.T) {
				e := newEngine(t, opts, order.cas, crl)
				expect(t, e.Evaluate(xfccReq(xfccFor(revoked, revoked.PEM()), now)), DecisionDeny, ReasonRevoked)
				// requireCRL is satisfied by the same list.
				expect(t, e.Evaluate(xfccReq(xfccFor(good, good.PEM()), now)), DecisionAllow, "")
			})
		}
	}

	// The client reaches the same CA through a cross-certificate (same name
	// and key, issued by another anchored root) because the anchored
	// self-signed certificate has expired: the CA's CRL still applies.
	t.Run("cross-certificate", func(t *testing.T) {
		bridge := must(testpki.NewRoot(testpki.Options{CommonName: "Bridge Root"}))
		cross := must(bridge.Issue(testpki.Options{CA: true, RawSubject: oldRoot.Cert.RawSubject, Signer: oldRoot.Key}))
		leaf := must(oldRoot.Issue(testpki.Options{CommonName: "via-cross"}))
		crl := must(oldRoot.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}}))
		bridgeCRL := must(bridge.CRL(testpki.CRLOptions{}))
		for _, opts := range []string{`{}`, `{"requireCRL":true}`} {
			e := newEngine(t, opts, []*testpki.Cert{oldRoot, bridge}, crl, bridgeCRL)
			r := e.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, cross)), now))
			expect(t, r, DecisionDeny, ReasonRevoked)
		}
	})
}
