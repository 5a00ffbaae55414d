//go:build !wasip1

package filtertest

import (
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
)

// TestProfileMethodOverrideSpellings: a profile allowing GET and POST must
// not let a POST through whose _method query parameter names DELETE in a
// spelling the upstream's query parser reads as _method (percent-escaped
// key, PHP's "." for "_" and dropped leading spaces, a ";" separator) or
// whose value is percent-escaped.
func TestProfileMethodOverrideSpellings(t *testing.T) {
	p, _, _ := authzLeaves(t)
	sc := newSidecarLike(t, p.root)
	plugin, vm := newPlugin(t, exampleConfig(t), map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc.srv.Handler()}})
	refresh(t, plugin, vm)
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
