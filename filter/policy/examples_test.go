package policy

import (
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestExamplePolicies loads every document in policies/ as shipped and checks
// it behaves as its README says.
func TestExamplePolicies(t *testing.T) {
	files, err := filepath.Glob("../../policies/*.json")
	if err != nil || len(files) < 4 {
		t.Fatalf("example policies missing: %v %v", files, err)
	}
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{}))
	engines := map[string]*Engine{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseConfig(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if cfg.TrustBundle.Sidecar == nil {
			t.Fatalf("%s: examples load the bundle from the sidecar", f)
		}
		e := NewEngine(cfg)
		if err := e.SetBundle(mustBundle(t, []*testpki.Cert{ch.Root})); err != nil {
			t.Fatal(err)
		}
		engines[filepath.Base(f)] = e
	}
	n := time.Now()
	expect(t, engines["basic.json"].Evaluate(xfccReq(chainXFCC(ch), n)), DecisionAllow, "")
	expect(t, engines["basic.json"].Evaluate(xfccReq("", n)), DecisionDeny, ReasonNoCertificate)

	sr := engines["staged-rollout.json"]
	r := sr.Evaluate(&Request{Method: "GET", Path: "/api/orders", Now: n})
	expect(t, r, DecisionAllowUnauthenticated, ReasonNoCertificate)
	expect(t, sr.Evaluate(&Request{Method: "GET", Path: "/admin/users", Now: n}), DecisionDeny, ReasonNoCertificate)
	if r := sr.Evaluate(&Request{Method: "GET", Path: "/health", Now: n}); r.Decision != DecisionPassthrough {
		t.Fatalf("unrouted path: %s", r.Decision)
	}

	expect(t, engines["issuer-pinning.json"].Evaluate(xfccReq(chainXFCC(ch), n)), DecisionDeny, ReasonIssuerDNMismatch)
	pinned := must(ch.Root.Issue(testpki.Options{CA: true, Subject: pkix.Name{CommonName: "example-ca", Organization: []string{"Example"}, Country: []string{"US"}}}))
	leaf := must(pinned.Issue(testpki.Options{}))
	expect(t, engines["issuer-pinning.json"].Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, pinned)), n)), DecisionAllow, "")

	cdn := engines["cdn-header.json"]
	v := envoyURLEncode(string(ch.Presented()))
	expect(t, cdn.Evaluate(&Request{Headers: []Header{{"x-amzn-mtls-clientcert", v}}, SourceAddress: "10.0.3.4:5555", Now: n}), DecisionAllow, "")
	expect(t, cdn.Evaluate(&Request{Headers: []Header{{"x-amzn-mtls-clientcert", v}}, SourceAddress: "198.51.100.2:5555", Now: n}), DecisionDeny, ReasonUntrustedSource)
}
