//go:build !wasm

package policy

// sameKey compares verdict cache keys; memequal is vectorised natively (see
// equalWords for the wasm build).
func sameKey(a, b string) bool { return a == b }
