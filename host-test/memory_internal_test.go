package hosttest

import (
	"testing"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
)

// TestLinearMemoryGrows: both backings keep the contents across a grow and
// refuse to grow past the maximum; the mapped one grows in place.
func TestLinearMemoryGrows(t *testing.T) {
	const page, max = 64 << 10, 64 << 20
	backings := map[string]experimental.LinearMemory{"copied": &copiedMemory{}}
	if memoryAllocator != nil {
		backings["allocator"] = memoryAllocator.Allocate(page, max)
	}
	for name, m := range backings {
		t.Run(name, func(t *testing.T) {
			defer m.Free()
			b := m.Reallocate(page)
			if len(b) != page {
				t.Fatalf("len %d, want %d", len(b), page)
			}
			for i := range b {
				if b[i] != 0 {
					t.Fatalf("byte %d of fresh memory is %d", i, b[i])
				}
			}
			b[0], b[page-1] = 1, 2
			g := m.Reallocate(16 * page)
			if len(g) != 16*page || g[0] != 1 || g[page-1] != 2 || g[16*page-1] != 0 {
				t.Fatalf("after grow: len %d, first %d, last of old %d, last %d", len(g), g[0], g[page-1], g[16*page-1])
			}
			if _, inPlace := m.(*mappedMemory); inPlace && unsafe.SliceData(g) != unsafe.SliceData(b) {
				t.Fatal("mapped memory moved on grow")
			}
			if _, mapped := m.(*mappedMemory); mapped && m.Reallocate(max+page) != nil {
				t.Fatal("grew past the reservation")
			}
		})
	}
}
