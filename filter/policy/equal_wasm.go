//go:build wasm

package policy

// sameKey compares verdict cache keys (see equalWords).
func sameKey(a, b string) bool { return equalWords(a, b) }
