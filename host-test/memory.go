package hosttest

// copiedMemory is wazero's own way of growing a linear memory (a larger
// slice, the contents copied), for where address space cannot be reserved.
type copiedMemory struct{ buf []byte }

func (m *copiedMemory) Reallocate(size uint64) []byte {
	if size > uint64(cap(m.buf)) {
		grown := make([]byte, size, max(size, 2*uint64(cap(m.buf))))
		copy(grown, m.buf)
		m.buf = grown
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *copiedMemory) Free() { m.buf = nil }
