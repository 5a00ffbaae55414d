package shared

import (
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

func TestSharedDataCAS(t *testing.T) {
	s := NewStore()
	if _, _, st := s.Get("k"); st != abi.StatusNotFound {
		t.Fatalf("missing key: %v", st)
	}
	// A missing key is created whatever cas is passed (SharedData::set).
	if st := s.Set("k", []byte("v1"), 99); st != abi.StatusOK {
		t.Fatalf("create: %v", st)
	}
	v, cas1, _ := s.Get("k")
	if string(v) != "v1" || cas1 != 1 {
		t.Fatalf("got %q cas %d, want v1 cas 1 (the counter starts at 1)", v, cas1)
	}
	if st := s.Set("k", []byte("v2"), cas1+1); st != abi.StatusCasMismatch {
		t.Fatalf("stale cas: %v", st)
	}
	if st := s.Set("k", []byte("v2"), cas1); st != abi.StatusOK {
		t.Fatalf("matching cas: %v", st)
	}
	_, cas2, _ := s.Get("k")
	if cas2 != 2 {
		t.Fatalf("cas after second set = %d", cas2)
	}
	// One counter for the whole store: another key continues it.
	s.Set("other", nil, 0)
	if _, c, _ := s.Get("other"); c != 3 {
		t.Fatalf("other key cas = %d", c)
	}
	// cas 0 is unconditional.
	if st := s.Set("k", []byte("v3"), 0); st != abi.StatusOK {
		t.Fatalf("unconditional: %v", st)
	}
	// The stored value is a copy.
	buf := []byte("abc")
	s.Set("copy", buf, 0)
	buf[0] = 'x'
	if v, _, _ := s.Get("copy"); string(v) != "abc" {
		t.Fatalf("store aliases caller memory: %q", v)
	}
}

func TestCasSkipsZeroOnWrap(t *testing.T) {
	s := NewStore()
	s.cas = ^uint32(0)
	s.Set("a", nil, 0)
	s.Set("b", nil, 0)
	_, a, _ := s.Get("a")
	_, b, _ := s.Get("b")
	if a != ^uint32(0) || b != 1 {
		t.Fatalf("cas around wrap: %d then %d", a, b)
	}
}

type owner struct{ got [][2]uint32 }

func (o *owner) QueueReady(c, tok uint32) { o.got = append(o.got, [2]uint32{c, tok}) }

func TestQueues(t *testing.T) {
	s := NewStore()
	if _, st := s.ResolveQueue("vm", "q"); st != abi.StatusNotFound {
		t.Fatalf("resolve before register: %v", st)
	}
	if st := s.Enqueue(5, nil); st != abi.StatusNotFound {
		t.Fatalf("enqueue unknown: %v", st)
	}
	o := &owner{}
	tok := s.RegisterQueue("vm", "q", o, 1)
	if tok != 1 {
		t.Fatalf("first token %d", tok)
	}
	if r, st := s.ResolveQueue("vm", "q"); st != abi.StatusOK || r != tok {
		t.Fatalf("resolve: %d %v", r, st)
	}
	if _, st := s.ResolveQueue("other-vm", "q"); st != abi.StatusNotFound {
		t.Fatalf("queues are per vm_id: %v", st)
	}
	if _, st := s.Dequeue(tok); st != abi.StatusEmpty {
		t.Fatalf("empty: %v", st)
	}
	s.Enqueue(tok, []byte("a"))
	s.Enqueue(tok, []byte("b"))
	if len(o.got) != 2 || o.got[0] != [2]uint32{1, tok} {
		t.Fatalf("notifications %v", o.got)
	}
	// Re-registering keeps the token and the data, and moves notifications.
	o2 := &owner{}
	if again := s.RegisterQueue("vm", "q", o2, 7); again != tok {
		t.Fatalf("re-register token %d", again)
	}
	for _, want := range []string{"a", "b"} {
		if d, st := s.Dequeue(tok); st != abi.StatusOK || string(d) != want {
			t.Fatalf("dequeue %q %v, want %q", d, st, want)
		}
	}
	s.Enqueue(tok, nil)
	if len(o2.got) != 1 || o2.got[0][0] != 7 {
		t.Fatalf("new owner notifications %v", o2.got)
	}
}

func TestMetrics(t *testing.T) {
	m := NewStore().Metrics()
	c := m.Define(abi.MetricCounter, "c")
	if m.Define(abi.MetricCounter, "c") != c {
		t.Fatal("same name must give the same metric")
	}
	m.Add(c, 3)
	g := m.Define(abi.MetricGauge, "g")
	m.Set(g, 10)
	m.Add(g, -4)
	h := m.Define(abi.MetricHistogram, "h")
	m.Record(h, 5)
	m.Record(h, 9)
	snap := m.Snapshot()
	if len(snap) != 3 || snap[0].Value != 3 || snap[1].Value != 6 || len(snap[2].Values) != 2 {
		t.Fatalf("snapshot %+v", snap)
	}
}
