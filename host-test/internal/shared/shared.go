// Package shared holds the state Envoy keeps per process rather than per VM:
// shared data with compare-and-swap, shared queues and metrics. Several VMs of
// one plugin (Envoy runs one per worker thread) use one Store.
package shared

import (
	"sort"
	"sync"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

type entry struct {
	value []byte
	cas   uint32
}

// QueueOwner receives the notification that a registered queue has data.
// Envoy posts proxy_on_queue_ready to the thread of the VM that registered
// the queue (proxy-wasm-cpp-host src/shared_data.cc, SharedData::enqueue).
type QueueOwner interface {
	QueueReady(contextID, token uint32)
}

type queue struct {
	items     [][]byte
	owner     QueueOwner
	contextID uint32
}

type queueKey struct{ vmID, name string }

// Store is safe for concurrent use.
type Store struct {
	mu      sync.Mutex
	data    map[string]entry
	cas     uint32
	tokens  map[queueKey]uint32
	queues  map[uint32]*queue
	nextTok uint32

	metrics *Metrics
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{
		data:    map[string]entry{},
		cas:     1,
		tokens:  map[queueKey]uint32{},
		queues:  map[uint32]*queue{},
		nextTok: 1,
		metrics: newMetrics(),
	}
}

// Metrics returns the store's metric registry.
func (s *Store) Metrics() *Metrics { return s.metrics }

// nextCas mirrors SharedData::nextCas (proxy-wasm-cpp-host src/shared_data.h):
// one counter for the whole store starting at 1, skipping 0 on wrap-around,
// because 0 means "unconditional" to proxy_set_shared_data.
func (s *Store) nextCas() uint32 {
	c := s.cas
	s.cas++
	if s.cas == 0 {
		s.cas++
	}
	return c
}

// Get returns a copy of the value and its cas, or NotFound.
func (s *Store) Get(key string) ([]byte, uint32, abi.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[key]
	if !ok {
		return nil, 0, abi.StatusNotFound
	}
	return append([]byte(nil), e.value...), e.cas, abi.StatusOK
}

// Set stores value under key. A non-zero cas must match the current cas of an
// existing key; a missing key is created whatever cas says
// (proxy-wasm-cpp-host src/shared_data.cc, SharedData::set).
func (s *Store) Set(key string, value []byte, cas uint32) abi.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.data[key]; ok && cas != 0 && cas != e.cas {
		return abi.StatusCasMismatch
	}
	s.data[key] = entry{value: append([]byte(nil), value...), cas: s.nextCas()}
	return abi.StatusOK
}

// RegisterQueue creates the queue or takes over an existing one (its data is
// kept), returning its token.
func (s *Store) RegisterQueue(vmID, name string, owner QueueOwner, contextID uint32) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := queueKey{vmID, name}
	tok, ok := s.tokens[k]
	if !ok {
		tok = s.nextTok
		s.nextTok++
		if s.nextTok == 0 {
			s.nextTok = 1
		}
		s.tokens[k] = tok
		s.queues[tok] = &queue{}
	}
	q := s.queues[tok]
	q.owner = owner
	q.contextID = contextID
	return tok
}

// ResolveQueue returns the token of a registered queue or NotFound.
func (s *Store) ResolveQueue(vmID, name string) (uint32, abi.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.tokens[queueKey{vmID, name}]
	if !ok {
		return 0, abi.StatusNotFound
	}
	return tok, abi.StatusOK
}

// Enqueue appends data and notifies the queue's owner outside the lock.
func (s *Store) Enqueue(token uint32, data []byte) abi.Status {
	s.mu.Lock()
	q, ok := s.queues[token]
	if !ok {
		s.mu.Unlock()
		return abi.StatusNotFound
	}
	q.items = append(q.items, append([]byte(nil), data...))
	owner, cid := q.owner, q.contextID
	s.mu.Unlock()
	if owner != nil {
		owner.QueueReady(cid, token)
	}
	return abi.StatusOK
}

// Dequeue pops the oldest item: NotFound for an unknown token, Empty for an
// empty queue.
func (s *Store) Dequeue(token uint32) ([]byte, abi.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[token]
	if !ok {
		return nil, abi.StatusNotFound
	}
	if len(q.items) == 0 {
		return nil, abi.StatusEmpty
	}
	d := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	return d, abi.StatusOK
}

// Metric is one metric's state as tests read it.
type Metric struct {
	Name  string
	Type  abi.MetricType
	Value uint64
	// Values holds every value a histogram recorded, in order.
	Values []uint64
}

// Metrics is keyed by name: in Envoy, every worker's VM defining the same name
// gets the same stat from the shared scope, while ids stay per VM.
type Metrics struct {
	mu     sync.Mutex
	byName map[string]*Metric
}

func newMetrics() *Metrics { return &Metrics{byName: map[string]*Metric{}} }

// Define returns the metric with that name, creating it.
func (m *Metrics) Define(t abi.MetricType, name string) *Metric {
	m.mu.Lock()
	defer m.mu.Unlock()
	if x, ok := m.byName[name]; ok {
		return x
	}
	x := &Metric{Name: name, Type: t}
	m.byName[name] = x
	return x
}

// Add adds delta to a counter or gauge (gauges may go down).
func (m *Metrics) Add(x *Metric, delta int64) {
	m.mu.Lock()
	x.Value = uint64(int64(x.Value) + delta)
	m.mu.Unlock()
}

// Set sets a gauge.
func (m *Metrics) Set(x *Metric, v uint64) {
	m.mu.Lock()
	x.Value = v
	m.mu.Unlock()
}

// Record appends a histogram sample.
func (m *Metrics) Record(x *Metric, v uint64) {
	m.mu.Lock()
	x.Values = append(x.Values, v)
	m.mu.Unlock()
}

// Value reads a counter or gauge.
func (m *Metrics) Value(x *Metric) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return x.Value
}

// Snapshot copies every metric, sorted by name.
func (m *Metrics) Snapshot() []Metric {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Metric, 0, len(m.byName))
	for _, x := range m.byName {
		c := *x
		c.Values = append([]uint64(nil), x.Values...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
