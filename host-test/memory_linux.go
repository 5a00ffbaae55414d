//go:build linux

package hosttest

import (
	"runtime"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryAllocator backs each VM's linear memory with one anonymous mapping as
// large as the module's maximum, reserved but not committed, so memory.grow
// extends it in place, as V8 does in Envoy. wazero's default grows by copying
// the whole memory into a larger Go slice: milliseconds of a Go module's
// start went to that, and the old copies were garbage for the host's GC.
var memoryAllocator experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(newMappedMemory)

type mappedMemory struct {
	buf     []byte // the whole reservation; wasm sees a prefix
	cleanup runtime.Cleanup
}

func newMappedMemory(_, max uint64) experimental.LinearMemory {
	b, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
	if err != nil {
		// No address space to reserve (32-bit, a ulimit): grow by copying.
		return &copiedMemory{}
	}
	m := &mappedMemory{buf: b}
	// A VM dropped without Close must not keep its pages for the life of
	// the process.
	m.cleanup = runtime.AddCleanup(m, func(b []byte) { _ = syscall.Munmap(b) }, b)
	return m
}

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if m.buf == nil || size > uint64(len(m.buf)) {
		return nil
	}
	return m.buf[:size:size]
}

func (m *mappedMemory) Free() {
	if m.buf == nil {
		return
	}
	m.cleanup.Stop()
	_ = syscall.Munmap(m.buf)
	m.buf = nil
}
