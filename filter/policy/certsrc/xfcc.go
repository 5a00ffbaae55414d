package certsrc

import (
	"errors"
	"net/url"
	"strings"
)

// XFCCElement is one element of x-forwarded-client-cert, as Envoy writes it in
// mutateXfccRequestHeader (source/common/http/conn_manager_utility.cc):
// By=<uri>;Hash=<hex>;Cert="<url-encoded pem>";Chain="<url-encoded pem>";
// Subject="<rfc2253>";URI=<uri>;DNS=<name>;DNS=<name>. Values are still
// encoded; Chain holds the whole chain, leaf first.
type XFCCElement struct {
	By      []string
	Hash    string
	Cert    string
	Chain   string
	Subject string
	URI     []string
	DNS     []string
}

// splitTop splits s at sep outside double-quoted strings, honouring backslash
// escapes inside quotes. It reports an unbalanced quote.
func splitTop(s string, sep byte, max int) ([]string, error) {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			if len(out) == max {
				return nil, errors.New("x-forwarded-client-cert has too many parts")
			}
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if quoted {
		return nil, errors.New("x-forwarded-client-cert has an unterminated quoted value")
	}
	return append(out, s[start:]), nil
}

// maxXFCCElements bounds APPEND_FORWARD chains of proxies; maxXFCCPairs the
// key=value pairs of one element (DNS= repeats once per SAN).
const (
	maxXFCCElements = 32
	maxXFCCPairs    = 256
)

// SelectXFCC returns the raw element a policy reads: the last one (the element
// the nearest Envoy appended) or the first. Repeated header lines are treated
// as one comma-joined value, as HTTP defines.
func SelectXFCC(values []string, last bool) (string, error) {
	elems, err := xfccElements(values)
	if err != nil {
		return "", err
	}
	if last {
		return elems[len(elems)-1], nil
	}
	return elems[0], nil
}

// SelectXFCCFor returns the last element whose Hash= is hash (the SHA-256,
// in hex, of the certificate the downstream connection presented), or the
// last element when none is. Envoy writes URI= and DNS= values unquoted, so
// a SAN holding ",Cert=..." splits the element Envoy wrote in two and makes
// its tail look like a later element; the element Envoy wrote is the one
// carrying its Hash=. The caller must still check that the certificate read
// from it has that digest: the tail can carry a Hash= too.
func SelectXFCCFor(values []string, hash string) (string, error) {
	elems, err := xfccElements(values)
	if err != nil {
		return "", err
	}
	for i := len(elems) - 1; i >= 0; i-- {
		if elementHash(elems[i]) == hash && hash != "" {
			return elems[i], nil
		}
	}
	return elems[len(elems)-1], nil
}

// elementHash is the element's Hash= value in lower case, "" when it has
// none or cannot be split.
func elementHash(raw string) string {
	pairs, err := splitTop(raw, ';', maxXFCCPairs)
	if err != nil {
		return ""
	}
	for _, p := range pairs {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "Hash") {
			return strings.ToLower(strings.TrimSpace(v))
		}
	}
	return ""
}

func xfccElements(values []string) ([]string, error) {
	var elems []string
	for _, v := range values {
		parts, err := splitTop(v, ',', maxXFCCElements)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if strings.TrimSpace(p) != "" {
				elems = append(elems, p)
			}
			if len(elems) > maxXFCCElements {
				return nil, errors.New("x-forwarded-client-cert has too many elements")
			}
		}
	}
	if len(elems) == 0 {
		return nil, ErrNoCertificate
	}
	return elems, nil
}

// ParseXFCCElement parses one element's key=value pairs. Keys are matched
// case-insensitively; unknown keys are ignored so newer Envoy fields do not
// break parsing; a repeated single-valued key is an error, because two Cert
// values cannot both be the client's.
func ParseXFCCElement(raw string) (XFCCElement, error) {
	var e XFCCElement
	pairs, err := splitTop(raw, ';', maxXFCCPairs)
	if err != nil {
		return e, err
	}
	for _, p := range pairs {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		eq := strings.IndexByte(p, '=')
		if eq <= 0 {
			return e, errors.New("x-forwarded-client-cert: expected key=value, got a part without '='")
		}
		key, val := strings.TrimSpace(p[:eq]), unquote(strings.TrimSpace(p[eq+1:]))
		var single *string
		switch {
		case strings.EqualFold(key, "By"):
			e.By = append(e.By, val)
		case strings.EqualFold(key, "Hash"):
			single = &e.Hash
		case strings.EqualFold(key, "Cert"):
			single = &e.Cert
		case strings.EqualFold(key, "Chain"):
			single = &e.Chain
		case strings.EqualFold(key, "Subject"):
			single = &e.Subject
		case strings.EqualFold(key, "URI"):
			e.URI = append(e.URI, val)
		case strings.EqualFold(key, "DNS"):
			e.DNS = append(e.DNS, val)
		}
		if single != nil {
			if *single != "" {
				return e, errors.New("x-forwarded-client-cert: key " + key + " appears twice in one element")
			}
			*single = val
		}
	}
	return e, nil
}

func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	v = v[1 : len(v)-1]
	if strings.IndexByte(v, '\\') < 0 {
		return v
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b = append(b, v[i])
	}
	return string(b)
}

// XFCC decodes the selected element's certificate chain, leaf first. Chain=
// wins when present (it starts with the leaf); Cert= must then be the same
// certificate. An element without either carries no certificate.
func XFCC(e XFCCElement) ([][]byte, error) {
	var leaf, chain [][]byte
	var err error
	if e.Cert != "" {
		if leaf, err = urlPEM(e.Cert, "Cert"); err != nil {
			return nil, err
		}
		if len(leaf) != 1 {
			return nil, errors.New("x-forwarded-client-cert Cert= must hold exactly one certificate")
		}
	}
	if e.Chain != "" {
		if chain, err = urlPEM(e.Chain, "Chain"); err != nil {
			return nil, err
		}
	}
	switch {
	case chain != nil && leaf != nil:
		if string(chain[0]) != string(leaf[0]) {
			return nil, errors.New("x-forwarded-client-cert Cert= and the first certificate of Chain= differ")
		}
		return chain, nil
	case chain != nil:
		return chain, nil
	case leaf != nil:
		return leaf, nil
	}
	return nil, ErrNoCertificate
}

func urlPEM(v, key string) ([][]byte, error) {
	pem, err := url.PathUnescape(v)
	if err != nil {
		return nil, errors.New("x-forwarded-client-cert " + key + "= is not valid percent-encoding")
	}
	certs, err := DecodePEMChain(pem)
	if errors.Is(err, ErrTooManyCertificates) {
		return nil, tooMany("x-forwarded-client-cert " + key + "=")
	}
	if err != nil {
		// Not wrapped: a Cert= that decodes to nothing is malformed, not
		// ErrNoCertificate.
		return nil, errors.New("x-forwarded-client-cert " + key + "=: " + err.Error())
	}
	return certs, nil
}
