package policy

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limiter counts requests against a budget. The engine calls it once per
// request that passed every other check, so a refused request never spends
// budget. Implementations must be safe for concurrent use.
type Limiter interface {
	// Allow counts one request for key against limit per window at now and
	// reports whether it fits; when it does not, retryAfter is the time left
	// in the window. key is valid only during the call (it may share a
	// buffer the engine reuses): copy it to keep it.
	Allow(key string, limit int, window time.Duration, now time.Time) (ok bool, retryAfter time.Duration)
}

// CASStore is a key-value store with compare-and-swap versions, the shape of
// proxy-wasm shared data: Get returns the value and its cas (the value may
// share a buffer the next Get reuses; the key, and Set's value, are valid
// only during the call, so a store that keeps them copies them); Set with a
// non-zero cas fails with mismatch when an existing key's cas differs, and
// creates a missing key whatever cas says (proxy-wasm-cpp-host
// src/shared_data.cc, SharedData::set).
type CASStore interface {
	Get(key string) (value []byte, cas uint32, found bool, err error)
	Set(key string, value []byte, cas uint32) (mismatch bool, err error)
}

// maxCASAttempts bounds the read-modify-write loop. Contention comes only
// from the other worker VMs of one proxy hitting the same client at the same
// instant; each attempt that loses means another request was counted.
const maxCASAttempts = 32

// absentCAS is the cas the limiter writes a key it found missing with. Envoy's
// set creates a missing key regardless of cas but checks a non-zero cas
// against a key that exists, so if another VM created the key between our
// get and set, our set fails with a mismatch (its cas is a fresh counter
// value, which equals this sentinel only at one point of a 2^32 cycle)
// instead of silently overwriting its count, as cas 0 would.
const absentCAS = 0xFFFFFFFF

// CASLimiter is a sliding-window counter over a CASStore. Each key holds
// "<window index> <previous count> <count>": the window index is the Unix
// time divided by the window length, count the requests allowed in that
// window, previous count those of the window before. A request is allowed
// when count plus the previous count weighted by the share of the previous
// window still inside the last window-length stays within the limit:
//
//	previous × (1 − elapsed/window) + count + 1 ≤ limit
//
// So a client that spent its budget at the end of one window cannot spend
// it again at the start of the next, as a fixed window lets it (twice the
// limit within moments); its budget comes back as the old window slides
// out. Within a window the count is exact across every VM sharing the
// store. One key per client and profile, rewritten in place, so the store
// grows with the number of distinct clients, not with time.
type CASLimiter struct {
	Store CASStore
	// OnError, if set, hears about store failures. The request is then
	// allowed: a limiter outage must not take the gateway down with it.
	OnError func(error)

	// buf holds the value being written: a buffer on the stack would
	// escape through the Store interface and cost an allocation per
	// request in Go wasm. mu is the verdict cache's kind of lock, a no-op
	// in the single-threaded filter.
	mu  cacheLock
	buf []byte
}

// Allow implements Limiter.
func (l *CASLimiter) Allow(key string, limit int, window time.Duration, now time.Time) (bool, time.Duration) {
	if window <= 0 || limit <= 0 {
		return false, time.Second
	}
	w, t := int64(window), now.UnixNano()
	cur := t / w
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		v, cas, found, err := l.Store.Get(key)
		if err != nil {
			l.fail(err)
			return true, 0
		}
		win := slidingWindow{idx: cur}
		if found {
			if s, ok := decodeWindow(v); ok {
				switch {
				case s.idx >= cur:
					// A later index than ours means another worker's clock
					// is ahead; count against its window rather than reset.
					win = s
				case s.idx == cur-1:
					win.prev = s.count
				}
			}
		}
		if !win.admits(limit, w, t) {
			return false, win.wait(limit, w, t)
		}
		setCas := cas
		if !found {
			setCas = absentCAS
		}
		l.mu.Lock()
		l.buf = strconv.AppendInt(l.buf[:0], win.idx, 10)
		l.buf = append(l.buf, ' ')
		l.buf = strconv.AppendInt(l.buf, int64(win.prev), 10)
		l.buf = append(l.buf, ' ')
		l.buf = strconv.AppendInt(l.buf, int64(win.count+1), 10)
		mismatch, err := l.Store.Set(key, l.buf, setCas)
		l.mu.Unlock()
		if err != nil {
			l.fail(err)
			return true, 0
		}
		if !mismatch {
			return true, 0
		}
	}
	// Still losing after this many rounds means the client is sending
	// faster than the VMs can count it; refusing errs on the limit's side.
	return false, time.Duration((cur+1)*w - t)
}

func (l *CASLimiter) fail(err error) {
	if l.OnError != nil {
		l.OnError(err)
	}
}

// slidingWindow is one key's state: the counts of window idx and of the
// window before it.
type slidingWindow struct {
	idx         int64
	prev, count int
}

// weight is the share of the previous window that still lies inside the
// window-length ending at t (nanoseconds since the epoch, w the window's
// length): 1 at the start of window idx, 0 at its end. A clock behind the
// window's start counts as its start.
func (s slidingWindow) weight(w, t int64) float64 {
	elapsed := t - s.idx*w
	if elapsed < 0 {
		elapsed = 0
	}
	return float64(w-elapsed) / float64(w)
}

// admits reports whether one more request fits at t.
func (s slidingWindow) admits(limit int, w, t int64) bool {
	return float64(s.prev)*s.weight(w, t)+float64(s.count)+1 <= float64(limit)
}

// wait is how long from t, with no further requests, until one fits: later
// in this window, once enough of the previous one has slid out, or else in
// the next, once enough of this one has.
func (s slidingWindow) wait(limit int, w, t int64) time.Duration {
	room := float64(limit - 1)
	at := (s.idx + 1) * w
	switch {
	case s.count <= limit-1 && s.prev > 0:
		// prev × (1 − e/w) ≤ limit − 1 − count
		at = s.idx*w + int64(math.Ceil(float64(w)*(1-(room-float64(s.count))/float64(s.prev))))
	case s.count > 0:
		// Next window: count × (1 − e/w) ≤ limit − 1.
		at = (s.idx+1)*w + int64(math.Ceil(float64(w)*max(0, 1-room/float64(s.count))))
	}
	if at <= t {
		return 0
	}
	return time.Duration(at - t)
}

// decodeWindow reads a stored value. A value written before the window
// slid ("<index> <count>") reads with no previous count.
func decodeWindow(v []byte) (slidingWindow, bool) {
	var f [3]int64
	n := 0
	for start, i := 0, 0; i <= len(v); i++ {
		if i < len(v) && v[i] != ' ' {
			continue
		}
		if n == len(f) {
			return slidingWindow{}, false
		}
		x, err := strconv.ParseInt(string(v[start:i]), 10, 64)
		if err != nil || (n > 0 && (x < 0 || x > math.MaxInt32)) {
			return slidingWindow{}, false
		}
		f[n], n, start = x, n+1, i+1
	}
	switch n {
	case 2:
		return slidingWindow{idx: f[0], count: int(f[1])}, true
	case 3:
		return slidingWindow{idx: f[0], prev: int(f[1]), count: int(f[2])}, true
	}
	return slidingWindow{}, false
}

// MemoryCAS is an in-process CASStore with proxy-wasm shared data semantics,
// for `mtlsgate verify`, native tests and benchmarks.
type MemoryCAS struct {
	mu   sync.Mutex
	next uint32
	data map[string]memEntry
}

type memEntry struct {
	v   []byte
	cas uint32
}

// Get implements CASStore.
func (m *MemoryCAS) Get(key string) ([]byte, uint32, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.data[key]
	if !ok {
		return nil, 0, false, nil
	}
	return append([]byte(nil), e.v...), e.cas, true, nil
}

// Set implements CASStore.
func (m *MemoryCAS) Set(key string, value []byte, cas uint32) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		m.data = map[string]memEntry{}
	}
	if e, ok := m.data[key]; ok && cas != 0 && cas != e.cas {
		return true, nil
	}
	m.next++
	if m.next == 0 {
		m.next = 1
	}
	m.data[strings.Clone(key)] = memEntry{v: append([]byte(nil), value...), cas: m.next}
	return false, nil
}

// NewMemoryLimiter returns a CASLimiter over a fresh MemoryCAS: the same
// algorithm the filter runs over shared data, within one process.
func NewMemoryLimiter() *CASLimiter { return &CASLimiter{Store: &MemoryCAS{}} }
