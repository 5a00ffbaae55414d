package termtext

import "testing"

// TestSanitize: what a terminal would act on comes out as a visible escape,
// and ordinary text (DNs with accents included) is left as it is.
func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"CN=Zoë Root,O=Example":           "CN=Zoë Root,O=Example",
		"503 Unavailable\x1b]0;pwned\x07": `503 Unavailable\x1b]0;pwned\x07`,
		"a\tb\r\nc":                       `a\x09b\x0d\x0ac`,
		"del\x7f c1\u009b[2J":             `del\x7f c1\x9b[2J`,
		"bad utf-8 \x9b[2J":               `bad utf-8 \x9b[2J`,
		"abc\u202edcba":                   `abc\u202edcba`,
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
