package proxywasm

// ctxTable maps live context ids to their records. Envoy numbers contexts
// in sequence and a stream lives for one request, so the live ids are a
// narrow moving window: a direct-mapped array indexed by the low bits holds
// nearly all of them, and a map takes the rest. In Go wasm a map operation
// hashes and probes in interpreted-speed code (about a µs each, and every
// stream callback does one), while a slot is an index and a compare.
type ctxTable[T any] struct {
	slots [ctxSlots]ctxSlot[T]
	more  map[uint32]*T
}

const ctxSlots = 64 // a power of two: ids are reduced with a mask

type ctxSlot[T any] struct {
	id uint32
	v  *T
}

func (t *ctxTable[T]) get(id uint32) *T {
	if s := &t.slots[id&(ctxSlots-1)]; s.v != nil && s.id == id {
		return s.v
	}
	if len(t.more) == 0 {
		return nil
	}
	return t.more[id]
}

// put records v under id, replacing what id held.
func (t *ctxTable[T]) put(id uint32, v *T) {
	t.del(id)
	if s := &t.slots[id&(ctxSlots-1)]; s.v == nil {
		s.id, s.v = id, v
		return
	}
	if t.more == nil {
		t.more = make(map[uint32]*T)
	}
	t.more[id] = v
}

// del forgets id and returns what it held, or nil.
func (t *ctxTable[T]) del(id uint32) *T {
	if s := &t.slots[id&(ctxSlots-1)]; s.v != nil && s.id == id {
		v := s.v
		s.id, s.v = 0, nil
		return v
	}
	if len(t.more) == 0 {
		return nil
	}
	v, ok := t.more[id]
	if ok {
		delete(t.more, id)
	}
	return v
}

func (t *ctxTable[T]) len() int {
	n := len(t.more)
	for i := range t.slots {
		if t.slots[i].v != nil {
			n++
		}
	}
	return n
}
