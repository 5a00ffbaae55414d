// Package termtext makes text that outside parties chose safe to print on
// an operator's terminal. An SDS client names its own node id, and a CRL
// server writes its own HTTP reason phrase; printed raw, escape sequences in
// them can retitle the window, rewrite what the table shows, or, on some
// terminals, answer with input of their own.
package termtext

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sanitize replaces what a terminal would act on instead of showing: C0
// controls (ESC, CR, tab and newline included, which also break a table's
// columns and lines), DEL, C1 controls, bytes that are not UTF-8 (a lone
// 0x9b is CSI to an 8-bit terminal) and the bidirectional overrides that
// reorder what is displayed. Each becomes a visible \xNN or \uNNNN escape,
// so the text stays readable and the substitution shows.
func Sanitize(s string) string {
	if safe(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case control(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case bidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func safe(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || control(r) || bidi(r) {
			return false
		}
	}
	return true
}

func control(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 }

// bidi reports the explicit directional formatting characters (Unicode
// UAX #9): embeddings, overrides and isolates.
func bidi(r rune) bool { return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 }
