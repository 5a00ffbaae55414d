package policy

import (
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

// CASLimiter is a fixed-window counter over a CASStore. Each key holds
// "<window index> <count>", where the window index is the Unix time divided
// by the window length; a request in a newer window starts the count again.
// One key per client and profile, rewritten in place, so the store grows with
// the number of distinct clients, not with time.
//
// The window is fixed, not sliding: a client may spend its budget at the end
// of one window and again at the start of the next (at most twice the limit
// over any window-length interval). It is exact within a window across every
// VM sharing the store, which is the property the limit promises.
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
	cur := now.UnixNano() / int64(window)
	retry := func(idx int64) time.Duration {
		return time.Duration((idx+1)*int64(window) - now.UnixNano())
	}
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		v, cas, found, err := l.Store.Get(key)
		if err != nil {
			l.fail(err)
			return true, 0
		}
		idx, count := cur, 0
		if found {
			if si, sc, ok := decodeWindow(v); ok && si >= cur {
				// A later index than ours means another worker's clock
				// is ahead; count against its window rather than reset.
				idx, count = si, sc
			}
		}
		if count >= limit {
			return false, retry(idx)
		}
		setCas := cas
		if !found {
			setCas = absentCAS
		}
		l.mu.Lock()
		l.buf = strconv.AppendInt(l.buf[:0], idx, 10)
		l.buf = append(l.buf, ' ')
		l.buf = strconv.AppendInt(l.buf, int64(count+1), 10)
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
	return false, retry(cur)
}

func (l *CASLimiter) fail(err error) {
	if l.OnError != nil {
		l.OnError(err)
	}
}

func decodeWindow(v []byte) (idx int64, count int, ok bool) {
	for i := 0; i < len(v); i++ {
		if v[i] != ' ' {
			continue
		}
		a, err1 := strconv.ParseInt(string(v[:i]), 10, 64)
		b, err2 := strconv.Atoi(string(v[i+1:]))
		if err1 != nil || err2 != nil || b < 0 {
			return 0, 0, false
		}
		return a, b, true
	}
	return 0, 0, false
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
