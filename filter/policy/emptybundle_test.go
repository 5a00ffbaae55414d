package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestEmptyBundleStopsTrust: the sidecar serves an empty CA list once the last
// CA is deleted; the engine must take it (and refuse everyone) rather than keep
// the previous bundle in force.
func TestEmptyBundleStopsTrust(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "client"}))
	e := newEngine(t, `{}`, []*testpki.Cert{ch.Root})
	now := time.Now()
	expect(t, e.Evaluate(xfccReq(chainXFCC(ch), now)), DecisionAllow, ReasonNone)

	if err := e.SetBundle(bundle.New(nil, nil, nil, 0, now)); err != nil {
		t.Fatalf("empty bundle from the sidecar refused: %v", err)
	}
	r := e.Evaluate(xfccReq(chainXFCC(ch), now))
	expect(t, r, DecisionDeny, ReasonUntrustedChain)
	if !strings.Contains(r.Detail(), "ca-certificate create") {
		t.Errorf("detail %q does not tell the operator to upload a CA", r.Detail())
	}

	if _, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{}`) + `],"trustBundle":{"caCertificates":[]}}`)); err == nil {
		t.Error("an inline trust bundle without CAs was accepted")
	}
}

// TestMappedPrefixTooShort: ::ffff:0:0/80 would match no IPv4 peer at all; it
// is refused with the form to write instead.
func TestMappedPrefixTooShort(t *testing.T) {
	if _, err := parseCIDR("::ffff:10.0.0.0/80"); err == nil || !strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Fatalf("short mapped prefix: err %v", err)
	}
	p, err := parseCIDR("::ffff:10.0.0.0/104")
	if err != nil || p.String() != "10.0.0.0/8" {
		t.Fatalf("::ffff:10.0.0.0/104 → %v %v, want 10.0.0.0/8", p, err)
	}
}
