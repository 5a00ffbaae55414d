package policy

import (
	"strings"
	"testing"
)

// equalWords decides whether a cached verdict is reused, so a false "equal"
// would hand one certificate another's verdict: every length around the
// 8- and 32-byte strides, every differing position.
func TestEqualWords(t *testing.T) {
	for n := 0; n <= 100; n++ {
		a := strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789", 3)[:n]
		if !equalWords(a, string([]byte(a))) {
			t.Fatalf("len %d: equal strings reported different", n)
		}
		if n > 0 && equalWords(a, a[:n-1]) {
			t.Fatalf("len %d: prefix reported equal", n)
		}
		for i := 0; i < n; i++ {
			b := []byte(a)
			b[i] ^= 0x01
			if equalWords(a, string(b)) {
				t.Fatalf("len %d: difference at %d not seen", n, i)
			}
		}
	}
}
