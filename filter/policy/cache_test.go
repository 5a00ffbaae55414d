package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestCacheBoundedInBytes: clients may send any chain (the listener accepts
// every certificate), so large values, each a new key, must not fill a VM's
// memory: the cache keeps within its byte budget, and a value over
// maxCachedValue is not kept at all.
func TestCacheBoundedInBytes(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "trusted"}))
	e := newEngine(t, `{"cacheSize":64}`, []*testpki.Cert{root})
	c := e.policies[0].cache
	// Six self-issued certificates with long SANs pad each chain (at most
	// eight certificates) to ~40 KB.
	var names []string
	for i := 0; i < 16; i++ {
		names = append(names, strings.Repeat("p", 240)+fmt.Sprint(i))
	}
	var pad []*testpki.Cert
	for i := 0; i < 6; i++ {
		pad = append(pad, testpki.Must(testpki.NewRoot(testpki.Options{CommonName: fmt.Sprintf("pad %d", i), DNSNames: names})))
	}
	now := time.Now()
	for i := 0; i < 64; i++ {
		leaf := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: fmt.Sprintf("client %d", i)}))
		v := xfccFor(leaf, testpki.PEM(append([]*testpki.Cert{leaf}, pad...)...))
		if i == 0 && (len(v) < 30<<10 || len(v) > maxCachedValue) {
			t.Fatalf("test value is %d bytes, want 30 KB to %d", len(v), maxCachedValue)
		}
		expect(t, e.Evaluate(xfccReq(v, now)), DecisionDeny, ReasonUntrustedChain)
		if c.bytes > c.maxBytes {
			t.Fatalf("after %d values the cache holds %d bytes, budget %d", i+1, c.bytes, c.maxBytes)
		}
	}
	if n := c.len(); n >= 64 || n == 0 {
		t.Fatalf("%d entries of ~40 KB in a 64-entry, %d-byte cache", n, c.maxBytes)
	}
	// The byte count follows evictions exactly: emptying by generation
	// resets it, and a re-added entry counts once.
	sum := 0
	for el := c.head.next; el != &c.head; el = el.next {
		sum += el.size
	}
	if sum != c.bytes {
		t.Fatalf("cache counts %d bytes, entries hold %d", c.bytes, sum)
	}

	// Over maxCachedValue: verified every time, never kept.
	var more []string
	for i := 0; i < 40; i++ {
		more = append(more, strings.Repeat("q", 240)+fmt.Sprint(i))
	}
	leaf := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "huge", DNSNames: more}))
	v := xfccFor(leaf, testpki.PEM(append([]*testpki.Cert{leaf}, pad...)...))
	if len(v) <= maxCachedValue {
		t.Fatalf("test value is %d bytes, want over %d", len(v), maxCachedValue)
	}
	for i := 0; i < 2; i++ {
		if r := e.Evaluate(xfccReq(v, now)); r.CacheHit {
			t.Fatalf("a %d-byte value was cached", len(v))
		}
	}
}

// TestCacheBudgetCapped: cacheSize sizes the entry bound, but all of a VM's
// verdict caches together never get more than cacheBytesTotal, however large
// it is set: 1<<20 entries at 16 KiB each would be 16 GiB, past what a VM can
// address, and a client sending distinct large chains would fill it.
func TestCacheBudgetCapped(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "trusted"}))
	e := newEngine(t, `{"cacheSize":1048576}`, []*testpki.Cert{root})
	if got := e.policies[0].cache.maxBytes; got != cacheBytesTotal {
		t.Fatalf("one policy with cacheSize 1<<20: budget %d bytes, want %d", got, cacheBytesTotal)
	}
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("a", `{"cacheSize":1048576}`) + `,` + policyJSON("b", `{"cacheSize":1048576}`) + `,` +
		policyJSON("c", `{"cacheSize":16}`) + `],"routes":[{"pathPrefix":"/a","policy":"a"},{"pathPrefix":"/b","policy":"b"},{"pathPrefix":"/c","policy":"c"}],"trustBundle":` +
		inlineBundle([]*testpki.Cert{root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range NewEngine(cfg).policies {
		total += p.cache.maxBytes
	}
	if total > cacheBytesTotal {
		t.Fatalf("three policies' caches may hold %d bytes together, over %d", total, cacheBytesTotal)
	}
	if small := NewEngine(cfg).policies[2].cache.maxBytes; small != 16*cacheBytesPerEntry {
		t.Fatalf("a small cacheSize keeps its own budget: %d", small)
	}
}
