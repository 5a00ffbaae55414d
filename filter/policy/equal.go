package policy

import "unsafe"

// equalWords is a == b comparing eight bytes per load. Go's wasm port
// compares strings one byte at a time: a cache hit on a 3 KB XFCC value spent
// ~8 µs of the request's wasm time in that comparison alone; this is about
// four times faster there. Natively memequal is vectorised and wins.
func equalWords(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	pa, pb := unsafe.Pointer(unsafe.StringData(a)), unsafe.Pointer(unsafe.StringData(b))
	if pa == pb {
		return true
	}
	i, n := 0, len(a)
	for ; i+32 <= n; i += 32 {
		if *(*uint64)(unsafe.Add(pa, i)) != *(*uint64)(unsafe.Add(pb, i)) ||
			*(*uint64)(unsafe.Add(pa, i+8)) != *(*uint64)(unsafe.Add(pb, i+8)) ||
			*(*uint64)(unsafe.Add(pa, i+16)) != *(*uint64)(unsafe.Add(pb, i+16)) ||
			*(*uint64)(unsafe.Add(pa, i+24)) != *(*uint64)(unsafe.Add(pb, i+24)) {
			return false
		}
	}
	for ; i+8 <= n; i += 8 {
		if *(*uint64)(unsafe.Add(pa, i)) != *(*uint64)(unsafe.Add(pb, i)) {
			return false
		}
	}
	return a[i:] == b[i:]
}
