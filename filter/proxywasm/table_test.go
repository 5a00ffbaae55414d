package proxywasm

import (
	"math/rand"
	"testing"
)

// TestCtxTableMatchesMap drives the table and a plain map with the same
// random operations, ids drawn so that many collide in the direct-mapped
// slots, and requires identical answers throughout.
func TestCtxTableMatchesMap(t *testing.T) {
	var tab ctxTable[int]
	ref := map[uint32]*int{}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200000; i++ {
		// A sliding window like Envoy's sequential ids, plus far-off ids
		// that share low bits with live ones.
		id := uint32(i/4 + rng.Intn(96))
		if rng.Intn(8) == 0 {
			id += uint32(ctxSlots * (1 + rng.Intn(4)))
		}
		switch rng.Intn(3) {
		case 0:
			v := new(int)
			*v = i
			tab.put(id, v)
			ref[id] = v
		case 1:
			got, want := tab.del(id), ref[id]
			delete(ref, id)
			if got != want {
				t.Fatalf("op %d: del(%d) = %v, want %v", i, id, got, want)
			}
		default:
			if got, want := tab.get(id), ref[id]; got != want {
				t.Fatalf("op %d: get(%d) = %v, want %v", i, id, got, want)
			}
		}
		if i%1000 == 0 && tab.len() != len(ref) {
			t.Fatalf("op %d: len %d, want %d", i, tab.len(), len(ref))
		}
	}
	for id, want := range ref {
		if got := tab.get(id); got != want {
			t.Fatalf("final get(%d) = %v, want %v", id, got, want)
		}
	}
}

// TestCtxTableReplace: putting an id twice keeps one entry, the newer.
func TestCtxTableReplace(t *testing.T) {
	var tab ctxTable[int]
	a, b, c := new(int), new(int), new(int)
	tab.put(5, a)
	tab.put(5+ctxSlots, c) // same slot, goes to the map
	tab.put(5, b)
	if tab.get(5) != b || tab.get(5+ctxSlots) != c || tab.len() != 2 {
		t.Fatalf("get(5)=%p want %p; get(%d)=%p want %p; len %d", tab.get(5), b, 5+ctxSlots, tab.get(5+ctxSlots), c, tab.len())
	}
	if tab.del(5) != b || tab.get(5) != nil || tab.len() != 1 {
		t.Fatal("del(5) did not remove exactly the entry")
	}
}
