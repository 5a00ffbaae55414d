//go:build !wasip1

package filtertest

import (
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestEnvoyModeRevocation: with chainVerification "envoy" the compiled
// filter checks the client's revocation against the bundle's CRLs itself.
// Envoy is given no CRLs, so a CA without a list keeps its clients (where
// Envoy, given one CA's list, refused every other CA's clients at the
// handshake), and a revoked client is refused on its next request, not only
// at its next handshake.
func TestEnvoyModeRevocation(t *testing.T) {
	p := thePKI(t)
	for _, c := range []struct {
		name    string
		options map[string]any
		leaf    *testpki.Cert
		chain   []byte
		reason  string // "" for forwarded
	}{
		{"revoked", nil, p.revoked, testpki.PEM(p.revoked, p.inter), "REVOKED"},
		{"revoked, allowed by policy", map[string]any{"allowRevokedCertificates": true}, p.revoked, testpki.PEM(p.revoked, p.inter), ""},
		{"good", nil, p.good, testpki.PEM(p.good, p.inter), ""},
		{"CA without a CRL", nil, p.foreign, testpki.PEM(p.foreign), ""},
		{"CA without a CRL, requireCRL", map[string]any{"requireCRL": true}, p.foreign, testpki.PEM(p.foreign), "REVOCATION_UNKNOWN"},
		{"intermediate not sent", nil, p.revoked, testpki.PEM(p.revoked), "UNTRUSTED_CHAIN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := map[string]any{"chainVerification": "envoy"}
			for k, v := range c.options {
				opts[k] = v
			}
			cfg := map[string]any{
				"policies":    []any{policyDoc("mtls", opts)},
				"trustBundle": inlineBundle([]*testpki.Cert{p.root, p.otherRoot}, p.crl),
			}
			_, vm := newPlugin(t, cfg, nil)
			res := do(t, vm, withPeer(request("/", "", xfccHeader(envoyElement(c.leaf, c.chain))), c.leaf))
			if c.reason == "" {
				if res.Forwarded == nil {
					t.Fatalf("refused: %s", res.LocalResponse.Body)
				}
				if sub, _ := header(res.Forwarded.Headers, "x-user-sub"); sub == "" {
					t.Error("forwarded without x-user-sub")
				}
				return
			}
			if res.Forwarded != nil || res.LocalResponse.Status != 401 {
				t.Fatalf("forwarded or not 401: %+v", res.LocalResponse)
			}
			if got := problem(t, res)["reason"]; got != c.reason {
				t.Errorf("reason %v, want %s", got, c.reason)
			}
		})
	}
}
