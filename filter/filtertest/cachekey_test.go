package filtertest

import (
	"strings"
	"testing"
)

// TestCacheKeyCollision: the verdict cache indexes on a hash of sixteen
// 8-byte samples of the certificate header and compares the whole value on a
// hit. Two XFCC values differing only outside the sampled bytes share a
// bucket; the second must be verified on its own, never served the first
// one's verdict. This runs the wasm build's comparison, which differs from
// the native one.
func TestCacheKeyCollision(t *testing.T) {
	p := thePKI(t)
	plugin, vm := newPlugin(t, filterConfig(nil, p.root), nil)
	good := p.chainOf(p.good)
	if res := do(t, vm, request("/", "", xfccHeader(good))); res.Forwarded == nil {
		t.Fatalf("valid client denied: %s", res.LocalResponse.Body)
	}
	// Unsampled positions inside the leaf's base64, as the cache samples them.
	n := len(good)
	sampled := make([]bool, n)
	for k := 0; k < 16; k++ {
		i := k * (n - 8) / 15
		for j := i; j < i+8; j++ {
			sampled[j] = true
		}
	}
	start := strings.Index(good, "CERTIFICATE-----%0A") + len("CERTIFICATE-----%0A") + 8
	end := strings.Index(good[start:], "%0A-----END") + start
	tried := 0
	for i := start; i < end && tried < 8; i++ {
		c := good[i]
		if sampled[i] || !(c >= 'A' && c <= 'Y') || good[i-1] == '%' || good[i-2] == '%' {
			continue
		}
		forged := good[:i] + string(c+1) + good[i+1:]
		misses, _ := plugin.Metric("mtlsgate.cache.miss")
		res := do(t, vm, request("/", "", xfccHeader(forged)))
		if res.Forwarded != nil {
			t.Fatalf("XFCC altered at byte %d was allowed: it shared a cached verdict", i)
		}
		if after, _ := plugin.Metric("mtlsgate.cache.miss"); after.Value != misses.Value+1 {
			t.Fatalf("XFCC altered at byte %d did not miss the cache", i)
		}
		tried++
		i += 97 // spread the altered bytes over the certificate
	}
	if tried < 4 {
		t.Fatalf("only %d unsampled positions tried", tried)
	}
}
