package gateway_test

// A crafted certificate through `mtlsgate dev` with a real TLS client.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestInjectedXFCCElementNotForwarded: through the dev gateway, which writes
// URI= and DNS= unquoted as Istio's defaults do, a certificate whose SAN
// carries XFCC syntax is verified as itself and the upstream gets its element
// alone, with a real TLS client.
func TestInjectedXFCCElementNotForwarded(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "probe root"}))
	victim := testpki.Must(root.Issue(testpki.Options{CommonName: "admin"}))
	sum := sha256.Sum256(victim.Cert.Raw)
	vh := hex.EncodeToString(sum[:])
	esc := strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D")
	injected := "x,Hash=" + vh + `;Cert="` + esc.Replace(string(victim.PEM())) + `";Subject="CN=admin";URI=spiffe://cluster.local/ns/prod/sa/admin`
	mallory := testpki.Must(root.Issue(testpki.Options{CommonName: "mallory", DNSNames: []string{injected}}))
	cfg := map[string]any{
		"policies": []any{map[string]any{"name": "mtls", "policyType": "mtls-auth-inbound",
			"handler": map[string]any{"export": "MTLSAuthInboundPolicy", "module": "$import(@zuplo/runtime)", "options": map[string]any{}}}},
		"trustBundle": map[string]any{"caCertificates": []string{string(root.PEM())}},
	}
	pc, _ := json.Marshal(cfg)
	sp := newServerPKI(t)
	up := newEchoUpstream(t, nil)
	g, _ := startGateway(t, gateway.Config{Wasm: filterWasm(t), PluginConfig: pc, Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, up.srv.URL)})
	r := do(t, client(sp, keyPair(t, mallory), false), "GET", gwURL(g, "/orders"), nil, nil)
	if r.status != 200 {
		t.Fatalf("mallory: %d %s", r.status, r.body)
	}
	if sub, _ := r.hdr("x-user-sub"); sub != "CN=mallory" {
		t.Fatalf("x-user-sub %q", sub)
	}
	x, _ := r.hdr("x-forwarded-client-cert")
	if strings.Contains(x, "Hash="+vh) {
		els := strings.Split(x, ",Hash=")
		t.Errorf("upstream XFCC carries an element naming the victim's certificate (last element starts Hash=%.24s...; Subject=\"CN=admin\" present: %v)",
			els[len(els)-1], strings.Contains(x, `Subject="CN=admin"`))
	}
}
