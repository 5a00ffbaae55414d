//go:build !wasip1

package filtertest

import (
	"crypto/x509/pkix"
	"encoding/json"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestProfileMethodOverrideSpellings: a profile allowing GET and POST must
// not let a POST through whose _method query parameter names DELETE in a
// spelling the upstream's query parser reads as _method (percent-escaped
// key, PHP's "." for "_" and dropped leading spaces, a ";" separator) or
// whose value is percent-escaped.
func TestProfileMethodOverrideSpellings(t *testing.T) {
	p, _, _ := authzLeaves(t)
	_, vm := exampleVM(t, p.root)
	good := xfccHeader(p.chainOf(p.good))
	inside := "203.0.113.40:50000"
	if res := do(t, vm, methodRequest("POST", "/orders?_method=POST&x=1", inside, good)); res.Forwarded == nil {
		t.Fatalf("allowed override refused: %d %s", res.LocalResponse.Status, res.LocalResponse.Body)
	}
	for _, q := range []string{
		"_method=DELETE",
		"%5Fmethod=DELETE",
		"%5fmethod=DELETE",
		"_%6Dethod=DELETE",
		".method=DELETE",
		"+_method=DELETE",
		"%20_method=DELETE",
		"a=1;_method=DELETE",
		"_method=DEL%45TE",
		"_method=%20DELETE",
	} {
		res := do(t, vm, methodRequest("POST", "/orders?"+q, inside, good))
		if res.Forwarded != nil {
			t.Errorf("?%s: POST reached the upstream", q)
			continue
		}
		if res.LocalResponse.Status != 405 {
			t.Errorf("?%s: status %d, want 405", q, res.LocalResponse.Status)
		}
	}
}

// TestSPIFFEGlobDotSegments: with clientIdField spiffeId, a profile binding
// spiffe://example.org/ns/prod/* must not take a certificate whose URI SAN
// only looks like a SPIFFE ID under that path (a dot segment, a
// percent-escape): the SPIFFE ID specification refuses such paths, so the
// certificate has no client ID.
func TestSPIFFEGlobDotSegments(t *testing.T) {
	p := thePKI(t)
	var cfg map[string]any
	if err := json.Unmarshal(exampleConfig(t), &cfg); err != nil {
		t.Fatal(err)
	}
	opts := cfg["policies"].([]any)[0].(map[string]any)["handler"].(map[string]any)["options"].(map[string]any)
	opts["clientIdField"] = "spiffeId"
	cfg["profiles"] = []any{map[string]any{"id": "partner-prod", "clients": []any{"spiffe://example.org/ns/prod/*"}}}
	sc := newSidecarLike(t, p.root)
	plugin, vm := newPlugin(t, cfg, map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc.srv.Handler()}})
	refresh(t, plugin, vm)
	for _, c := range []struct {
		path   string
		status int
	}{{"/ns/prod/api", 0}, {"/ns/prod/../admin", 403}, {"/ns/prod/./x", 403}, {"/ns/prod/%2E%2E/admin", 403}, {"/ns/prod/a%2F..%2Fadmin", 403}} {
		leaf := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256,
			Subject: pkix.Name{CommonName: "svc", OrganizationalUnit: []string{"partner-prod"}}, URIs: []string{"spiffe://example.org" + c.path}}))
		res := do(t, vm, methodRequest("GET", "/orders", "203.0.113.40:50000", xfccHeader(p.chainOf(leaf))))
		switch {
		case c.status == 0 && res.Forwarded == nil:
			t.Errorf("%s: refused %d %s", c.path, res.LocalResponse.Status, res.LocalResponse.Body)
		case c.status != 0 && res.Forwarded != nil:
			t.Errorf("%s: reached the upstream as %q", c.path, hosttest.Values(res.Forwarded.Headers, "x-client-id"))
		case c.status != 0 && res.LocalResponse.Status != c.status:
			t.Errorf("%s: status %d, want %d", c.path, res.LocalResponse.Status, c.status)
		}
	}
}
