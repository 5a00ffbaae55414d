//go:build wasip1

package proxywasm

import (
	"unsafe"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// The host returns data by calling proxy_on_memory_allocate, writing into the
// buffer it got, and handing the address back through a return slot. Go's GC is
// precise and knows nothing of addresses held by the host, so every buffer handed
// out stays in this table until the hostcall wrapper that asked for it takes it.
var pending = map[uint32][]byte{}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	// A zero-sized slice has no address of its own; give the host one byte so
	// the address is unique and ours.
	buf := make([]byte, max(size, 1))
	addr := uint32(uintptr(unsafe.Pointer(&buf[0])))
	pending[addr] = buf[:size]
	return addr
}

// take returns the bytes the host wrote at addr and releases our hold on them.
// An address we did not hand out (or a size larger than the buffer) yields
// nothing rather than a read of arbitrary guest memory; hosts that return no
// data (addr 0, size 0) without allocating are answered the same way.
func take(addr, size uint32) []byte {
	buf, ok := pending[addr]
	if !ok {
		return nil
	}
	delete(pending, addr)
	if int(size) > cap(buf) {
		return nil
	}
	return buf[:size]
}

func strPtr(s string) unsafe.Pointer {
	if s == "" {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func statusErr(s uint32) error {
	if s == 0 {
		return nil
	}
	return abi.Status(s)
}
