//go:build wasip1

package proxywasm

import (
	"encoding/binary"
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

// decodeHeaders is abi.DecodeHeaders without the copies: keys and values are
// strings over b itself. b is a buffer take() handed over, which nothing
// writes again, so the strings stay immutable. Go wasm allocation is costly
// (tens of µs for a few KB with GC), and a request's header map is its
// largest input: one allocation instead of one per key and value.
func decodeHeaders(b []byte) ([]Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, abi.ErrBadHeaderMap
	}
	n := int(binary.LittleEndian.Uint32(b))
	if uint64(n)*8 > uint64(len(b)-4) {
		return nil, abi.ErrBadHeaderMap
	}
	sizes := b[4 : 4+8*n]
	p := 4 + 8*n
	out := make([]Header, 0, n)
	for i := 0; i < n; i++ {
		kl := int(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if kl < 0 || vl < 0 || kl+vl+2 > len(b)-p || kl+vl+2 < 0 {
			return nil, abi.ErrBadHeaderMap
		}
		k := bytesString(b[p : p+kl])
		p += kl + 1
		v := bytesString(b[p : p+vl])
		p += vl + 1
		out = append(out, Header{Key: k, Value: v})
	}
	return out, nil
}

// bytesString aliases b, which the caller must never modify again.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
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
