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

// A scratch buffer is a reusable destination for one host call's result, so
// the per-request reads (the request header map, ~3.5 KB with an XFCC, and
// source.address) do not each allocate: in Go wasm a fresh multi-KB
// allocation regularly takes a new span from the heap and costs tens of µs,
// which was the largest single cost of a cached request. Whatever is decoded
// from a scratch buffer is valid only until the same buffer is used again.
type scratch struct {
	buf  []byte
	addr uint32 // address handed to the host for the call in progress, or 0
}

// want is the scratch buffer the next proxy_on_memory_allocate fills, set by
// a hostcall wrapper just before the call and cleared by the allocation (or
// by the wrapper, if the host returned without allocating).
var want *scratch

// call runs a host call whose result the host writes through
// proxy_on_memory_allocate, directing that allocation to s.
func (s *scratch) call(f func() uint32) uint32 {
	want, s.addr = s, 0
	st := f()
	want = nil
	return st
}

// take is the scratch form of take: the bytes at addr if addr is the address
// this buffer handed out for the call just made.
func (s *scratch) take(addr, size uint32) []byte {
	if s.addr == 0 || addr != s.addr || int(size) > len(s.buf) {
		return take(addr, size)
	}
	s.addr = 0
	return s.buf[:size]
}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	if s := want; s != nil {
		// One allocation per call: a second one (not expected from any host)
		// gets ordinary memory below.
		want = nil
		if uint32(len(s.buf)) < max(size, 1) {
			s.buf = make([]byte, max(size, 1, uint32(2*len(s.buf))))
		}
		s.addr = uint32(uintptr(unsafe.Pointer(&s.buf[0])))
		return s.addr
	}
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
	if len(pending) == 0 {
		return nil
	}
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
// strings over b itself. Either b is a buffer take() handed over, which
// nothing writes again, so the strings stay immutable, or it is a scratch
// buffer and the caller documents how long they stay valid. Go wasm allocation is costly
// (tens of µs for a few KB with GC), and a request's header map is its
// largest input: one allocation instead of one per key and value.
func decodeHeaders(b []byte) ([]Header, error) { return decodeHeadersInto(nil, b) }

// decodeHeadersInto is decodeHeaders appending to out.
func decodeHeadersInto(out []Header, b []byte) ([]Header, error) {
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
	if cap(out) < n {
		out = make([]Header, 0, n)
	}
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

// Host calls hand results back through pointers. A local whose address goes to
// a wasmimport escapes to the heap, and in Go wasm that allocation costs more
// than the call itself; results land in package-level slots instead. A host
// call can re-enter the guest before it returns (Envoy may run a callback
// inline), so the slots nest as a stack; past its depth, ordinary memory.
type retSlot struct {
	a, b, c uint32
	v       uint64
}

var (
	retSlots [8]retSlot
	retTop   int
)

func pushRet() *retSlot {
	if retTop == len(retSlots) {
		return new(retSlot)
	}
	r := &retSlots[retTop]
	retTop++
	*r = retSlot{}
	return r
}

func popRet(r *retSlot) {
	if retTop > 0 && r == &retSlots[retTop-1] {
		retTop--
	}
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
