package policy

import "strings"

// verdictCache is a bounded LRU of rendered verdicts keyed on the raw
// certificate header value. Keys are a cheap sampled 64-bit hash: hashing a
// whole 1.5 KB chain costs about 1.8 µs in Go wasm, while a hit must stay a few
// µs end to end. Each entry keeps the full raw value and a hit compares it in
// full, so a sampled-hash collision only costs a re-verification, never a
// wrong verdict.
//
// The cache is bounded in bytes as well as entries: the listener accepts any
// client certificate, so a client can send chains of ~100 KB, each a new
// key, and a VM's linear memory never shrinks. Verdicts for values over
// maxCachedValue are not cached at all (they cost a verification each time,
// as they would have after being evicted by the next few).
type verdictCache struct {
	mu       cacheLock
	max      int
	maxBytes int
	bytes    int
	items    map[uint64]*entry
	head     entry // sentinel of the recency list; head.next is the newest
	gen      uint64
}

// cacheBytesPerEntry sizes the byte budget from the entry bound: a typical
// verdict (a 2-deep RSA-2048 chain in XFCC and its rendered headers) is 6–9
// KB, so the default 1024 entries get 16 MiB and the entry bound is the one
// that binds for ordinary clients.
//
// cacheBytesTotal bounds all of a VM's verdict caches together, whatever
// cacheSize says: Envoy gives a VM 1 GiB of linear memory at most, wasm32
// addresses 4 GiB, and a full cache of large chains must stay a small share
// of either.
const (
	cacheBytesPerEntry = 16 << 10
	maxCachedValue     = 64 << 10
	cacheBytesTotal    = 64 << 20
)

// newVerdictCache holds max verdicts in at most min(max×cacheBytesPerEntry,
// maxBytes) bytes.
func newVerdictCache(max, maxBytes int) *verdictCache {
	c := &verdictCache{max: max, maxBytes: min(max*cacheBytesPerEntry, maxBytes), items: make(map[uint64]*entry)}
	c.head.next, c.head.prev = &c.head, &c.head
	return c
}

// sampleKey mixes the length and sixteen 8-byte words spread evenly over s.
// PEM/base64 chains differ in serials near the start, keys in the middle and
// signatures near the end, so two certificates sharing all samples is rare;
// equal length plus equal samples of different certificates is caught by the
// full comparison.
func sampleKey(s string) uint64 {
	const m = 0x9E3779B97F4A7C15
	h := uint64(len(s)) * m
	n := len(s)
	if n < 8 {
		for i := 0; i < n; i++ {
			h = (h ^ uint64(s[i])) * m
		}
		return h ^ h>>31
	}
	const samples = 16
	for k := 0; k < samples; k++ {
		i := k * (n - 8) / (samples - 1)
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		h = (h ^ w) * m
		h ^= h >> 29
	}
	return h
}

// get returns the entry for raw if present and valid at nowUnix (seconds).
func (c *verdictCache) get(gen uint64, raw string, nowUnix int64) *entry {
	if c.max <= 0 {
		return nil
	}
	k := sampleKey(raw)
	c.mu.Lock()
	e := c.getLocked(gen, k, raw, nowUnix)
	c.mu.Unlock()
	return e
}

// getLocked is get under c.mu, without a deferred unlock: a defer costs a
// measurable share of a cached request in Go wasm.
func (c *verdictCache) getLocked(gen, k uint64, raw string, nowUnix int64) *entry {
	if c.gen != gen {
		c.resetLocked(gen)
		return nil
	}
	e := c.items[k]
	if e == nil || !sameKey(e.raw, raw) {
		return nil
	}
	if e.untilUnix != 0 && nowUnix >= e.untilUnix {
		c.removeLocked(k, e)
		return nil
	}
	if c.head.next != e {
		e.prev.next, e.next.prev = e.next, e.prev
		c.pushFrontLocked(e)
	}
	return e
}

func (c *verdictCache) put(gen uint64, raw string, e *entry) {
	if c.max <= 0 || len(raw) > maxCachedValue {
		return
	}
	k := sampleKey(raw)
	// A copy: raw may share a buffer the caller reuses for the next request
	// (the filter's header map), and a changed key would turn the full
	// comparison of a hit into a comparison against the wrong bytes.
	e.raw = strings.Clone(raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		c.resetLocked(gen)
	}
	if old := c.items[k]; old != nil {
		c.removeLocked(k, old)
	}
	e.size = e.footprint()
	for len(c.items) > 0 && (len(c.items) >= c.max || c.bytes+e.size > c.maxBytes) {
		last := c.head.prev
		c.removeLocked(sampleKey(last.raw), last)
	}
	c.items[k] = e
	c.bytes += e.size
	c.pushFrontLocked(e)
}

// footprint approximates the bytes an entry holds: its key and what it
// renders (identity headers carry the certificate and chain again).
func (e *entry) footprint() int {
	n := 256 + len(e.raw) + len(e.body) + len(e.detail) + len(e.subject) + len(e.issuer) + len(e.fingerprint)
	for _, h := range e.setHeaders {
		n += len(h.Key) + len(h.Value) + 32
	}
	for _, h := range e.responseHeaders {
		n += len(h.Key) + len(h.Value) + 32
	}
	return n
}

func (c *verdictCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

func (c *verdictCache) pushFrontLocked(e *entry) {
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}

func (c *verdictCache) removeLocked(k uint64, e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(c.items, k)
	c.bytes -= e.size
}

// resetLocked drops every verdict: they were reached with another bundle.
func (c *verdictCache) resetLocked(gen uint64) {
	c.items = make(map[uint64]*entry)
	c.head.next, c.head.prev = &c.head, &c.head
	c.gen = gen
	c.bytes = 0
}
