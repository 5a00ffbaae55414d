package dn

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"unicode"
)

// Pattern is a configured distinguished name, parsed once, that certificate
// names are compared against: attribute types by OID, values case-insensitively
// with surrounding whitespace trimmed and inner runs collapsed to one space,
// RDN order significant, AVA order inside a multi-valued RDN not.
type Pattern struct {
	rdns [][]normAVA // in encoding order (most general first), like a DER Name
	text string
}

type normAVA struct{ oid, value string }

// String returns the pattern as configured.
func (p *Pattern) String() string { return p.text }

// WrittenGeneralFirst reports whether the pattern was written most general
// first (C= or DC= first, CN= last), the order openssl prints without
// -nameopt RFC2253. Patterns compare in RFC 2253 order, CN first, so such a
// pattern matches only a CA whose Name is encoded the unusual way round.
func (p *Pattern) WrittenGeneralFirst() bool {
	n := len(p.rdns)
	if n < 2 || len(p.rdns[0]) != 1 || len(p.rdns[n-1]) != 1 {
		return false
	}
	// rdns is in encoding order, the reverse of the written one.
	first, last := p.rdns[n-1][0].oid, p.rdns[0][0].oid
	return (first == "2.5.4.6" || first == "0.9.2342.19200300.100.1.25") && last == "2.5.4.3" // C or DC; CN
}

// ParsePattern parses a DN written as openssl -nameopt RFC2253 prints it
// ("CN=example-ca,O=Example,C=US"); a leading "issuer=" or "subject=" copied
// along from openssl output is ignored. RFC 2253 escapes (\, and \XX),
// quoted values and #hex values are understood; ';' separates RDNs like ','.
func ParsePattern(s string) (*Pattern, error) {
	text := s
	t := strings.TrimLeftFunc(s, unicode.IsSpace)
	// openssl escapes a trailing space (`CN=a\ `): trimming must keep it, or
	// the pattern would end in a dangling backslash. An odd run of
	// backslashes before the cut means the first trimmed space was escaped.
	if kept := strings.TrimRightFunc(t, unicode.IsSpace); len(kept) < len(t) && t[len(kept)] == ' ' && oddBackslashes(kept) {
		t = t[:len(kept)+1]
	} else {
		t = kept
	}
	for _, prefix := range []string{"issuer=", "subject="} {
		if len(t) >= len(prefix) && strings.EqualFold(t[:len(prefix)], prefix) {
			t = t[len(prefix):]
		}
	}
	if strings.TrimSpace(t) == "" {
		return nil, errors.New("distinguished name is empty: write it as openssl -nameopt RFC2253 prints it, e.g. CN=example-ca,O=Example,C=US")
	}
	var rdns [][]normAVA
	var cur []normAVA
	for len(t) > 0 {
		ava, rest, sep, err := parseAVA(t)
		if err != nil {
			return nil, err
		}
		cur = append(cur, ava)
		t = rest
		if sep != '+' {
			rdns = append(rdns, cur)
			cur = nil
		}
		if sep != 0 && strings.TrimSpace(t) == "" {
			return nil, errors.New("distinguished name ends with a separator: remove the trailing ',', ';' or '+'")
		}
	}
	// Configured text is most specific first; a DER Name is the reverse.
	for i, j := 0, len(rdns)-1; i < j; i, j = i+1, j-1 {
		rdns[i], rdns[j] = rdns[j], rdns[i]
	}
	return &Pattern{rdns: rdns, text: text}, nil
}

// parseAVA reads "type=value" up to an unescaped separator and returns the
// separator found (',', '+' or 0 at the end; ';' is reported as ',').
func parseAVA(s string) (normAVA, string, byte, error) {
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return normAVA{}, "", 0, errors.New("distinguished name: expected type=value in " + strconv.Quote(s) + ": write it as openssl -nameopt RFC2253 prints it")
	}
	typ := strings.TrimSpace(s[:eq])
	oid, err := attrOID(typ)
	if err != nil {
		return normAVA{}, "", 0, err
	}
	s = strings.TrimLeft(s[eq+1:], " \t")
	var val []byte
	hexForm := false
	i := 0
	switch {
	case strings.HasPrefix(s, "\""):
		i = 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			val = append(val, s[i])
		}
		if i >= len(s) {
			return normAVA{}, "", 0, errors.New("distinguished name: unterminated quoted value for " + typ)
		}
		i++
		for i < len(s) && s[i] == ' ' {
			i++
		}
	case strings.HasPrefix(s, "#"):
		hexForm = true
		i = 1
		for i < len(s) && s[i] != ',' && s[i] != ';' && s[i] != '+' {
			i++
		}
		raw, err := hex.DecodeString(strings.TrimSpace(s[1:i]))
		if err != nil {
			return normAVA{}, "", 0, errors.New("distinguished name: value of " + typ + " starts with # but is not hex DER; escape a literal # as \\#")
		}
		val = raw
	default:
		for ; i < len(s) && s[i] != ',' && s[i] != ';' && s[i] != '+'; i++ {
			if s[i] == '\\' {
				if i+1 >= len(s) {
					return normAVA{}, "", 0, errors.New("distinguished name: dangling backslash at the end")
				}
				if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
					v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
					val = append(val, byte(v))
					i += 2
					continue
				}
				i++
			}
			val = append(val, s[i])
		}
	}
	var sep byte
	if i < len(s) {
		switch s[i] {
		case ',', ';':
			sep = ','
		case '+':
			sep = '+'
		default:
			return normAVA{}, "", 0, errors.New("distinguished name: unexpected text after the value of " + typ)
		}
		i++
	}
	v := ""
	if hexForm {
		v = "#" + hex.EncodeToString(val)
	} else {
		v = normalize(string(val))
	}
	return normAVA{oid: oid, value: v}, s[i:], sep, nil
}

// oddBackslashes reports whether s ends in an odd number of backslashes, so
// that the character after it is escaped.
func oddBackslashes(s string) bool {
	n := 0
	for n < len(s) && s[len(s)-1-n] == '\\' {
		n++
	}
	return n%2 == 1
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func attrOID(typ string) (string, error) {
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(t, "oid.")
	if oid, ok := aliases[t]; ok {
		return oid, nil
	}
	if t != "" && t[0] >= '0' && t[0] <= '9' {
		for _, c := range t {
			if (c < '0' || c > '9') && c != '.' {
				return "", errors.New("distinguished name: attribute type " + strconv.Quote(typ) + " is not a dotted OID")
			}
		}
		return t, nil
	}
	return "", errors.New("distinguished name: unknown attribute type " + strconv.Quote(typ) + ": use a name openssl prints (CN, O, OU, C, ST, L, emailAddress, DC, UID, ...) or a dotted OID")
}

// normalize lowercases and folds whitespace so "Example  Corp " equals
// "example corp".
func normalize(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.TrimSpace(s) {
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

func normValue(a AVA) string {
	if _, known := shortNames[a.OID]; known {
		if text, ok := decode(a); ok {
			return normalize(text)
		}
	}
	return "#" + hex.EncodeToString(a.DER)
}

// Match reports whether the DER-encoded name equals the pattern.
func (p *Pattern) Match(der []byte) bool {
	rdns, err := ParseRDNSequence(der)
	if err != nil {
		return false
	}
	return p.MatchRDNs(rdns)
}

// MatchRDNs is Match over an already parsed name.
func (p *Pattern) MatchRDNs(rdns []RDN) bool {
	if len(rdns) != len(p.rdns) {
		return false
	}
	for i, rdn := range rdns {
		want := p.rdns[i]
		if len(rdn) != len(want) {
			return false
		}
		used := make([]bool, len(want))
	next:
		for _, a := range rdn {
			v := normValue(a)
			for k, w := range want {
				if !used[k] && w.oid == a.OID && (w.value == v || (strings.HasPrefix(w.value, "#") && w.value == "#"+hex.EncodeToString(a.DER))) {
					used[k] = true
					continue next
				}
			}
			return false
		}
	}
	return true
}
