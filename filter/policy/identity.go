package policy

import (
	"crypto/x509"
	"encoding/asn1"
	"net/url"
	"strconv"
	"strings"
)

// IDField names the certificate field a client or profile ID is read from.
type IDField struct {
	Kind string                // one of the idKind* constants
	OID  asn1.ObjectIdentifier // for idKindOID
}

const (
	idKindCN          = "CN"
	idKindOU          = "OU"
	idKindO           = "O"
	idKindSerial      = "serial"
	idKindFingerprint = "sha256Fingerprint"
	idKindDNSSAN      = "dnsSan"
	idKindURISAN      = "uriSan"
	idKindSPIFFE      = "spiffeId"
	idKindOID         = "oid"
)

var (
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
)

const idFieldHelp = "CN, OU, O, serial, sha256Fingerprint, dnsSan, uriSan, spiffeId or oid:<dotted OID> (e.g. oid:2.5.4.5)"

// parseIDField reads an option value such as "CN" or "oid:2.5.4.5".
func parseIDField(s string) (IDField, bool) {
	if rest, ok := strings.CutPrefix(s, "oid:"); ok {
		oid, ok := parseOID(rest)
		return IDField{Kind: idKindOID, OID: oid}, ok
	}
	for _, k := range []string{idKindCN, idKindOU, idKindO, idKindSerial, idKindFingerprint, idKindDNSSAN, idKindURISAN, idKindSPIFFE} {
		if strings.EqualFold(s, k) {
			return IDField{Kind: k}, true
		}
	}
	return IDField{}, false
}

func parseOID(s string) (asn1.ObjectIdentifier, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 32 {
		return nil, false
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || (i == 0 && n > 2) {
			return nil, false
		}
		oid[i] = n
	}
	return oid, true
}

func (f IDField) String() string {
	if f.Kind == idKindOID {
		return "oid:" + f.OID.String()
	}
	return f.Kind
}

// extractID reads the field from a verified leaf. Multi-valued fields yield
// their first value in certificate order, so the choice is stable across
// requests. An empty result means the certificate has no such value; the
// caller decides what that means.
func extractID(f IDField, c *x509.Certificate, spiffeDomains []string) string {
	var v string
	switch f.Kind {
	case idKindCN:
		// Two CNs have no one reading: the DN string shows the last first,
		// Go's pkix keeps the last, others the first. No client ID then.
		if countAttr(c, oidCN) == 1 {
			v = subjectAttr(c, oidCN)
		}
	case idKindOU:
		v = subjectAttr(c, oidOU)
	case idKindO:
		v = subjectAttr(c, oidO)
	case idKindOID:
		v = subjectAttr(c, f.OID)
	case idKindSerial:
		v = serialHex(c)
	case idKindFingerprint:
		v = fingerprint(c.Raw)
	case idKindDNSSAN:
		if len(c.DNSNames) > 0 {
			v = c.DNSNames[0]
		}
	case idKindURISAN:
		if len(c.URIs) > 0 {
			v = c.URIs[0].String()
		}
	case idKindSPIFFE:
		for _, u := range c.URIs {
			if id, ok := spiffeID(u, spiffeDomains); ok {
				v = id
				break
			}
		}
	}
	// Trimmed of what HTTP drops around a header value (spaces and tabs,
	// nothing else): an upstream reads "admin " as "admin", so the profile
	// rules must too, and a no-break space is part of the value to both.
	return headerSafe(strings.Trim(v, " \t"))
}

// countAttr counts the subject attributes with oid.
func countAttr(c *x509.Certificate, oid asn1.ObjectIdentifier) int {
	n := 0
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oid) {
			n++
		}
	}
	return n
}

// subjectAttr returns the first subject attribute with oid as a string.
func subjectAttr(c *x509.Certificate, oid asn1.ObjectIdentifier) string {
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oid) {
			if s, ok := a.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// spiffeID accepts u if it is a SPIFFE ID (spiffe://trust-domain/path, per the
// SPIFFE ID specification: lowercase trust domain, no port, userinfo, query
// or fragment, a path of non-empty segments of letters, digits, ".", "-" and
// "_" other than "." and "..", so no percent-escapes) whose trust domain is in domains (any, when domains is empty).
func spiffeID(u *url.URL, domains []string) (string, bool) {
	if u == nil || u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.Port() != "" ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", false
	}
	td := u.Host
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "", false
		}
	}
	if !spiffePath(u.EscapedPath()) {
		return "", false
	}
	if len(domains) > 0 {
		ok := false
		for _, d := range domains {
			if d == td {
				ok = true
				break
			}
		}
		if !ok {
			return "", false
		}
	}
	return u.String(), true
}

// spiffePath checks a SPIFFE ID's path as written: empty, or "/"-led
// segments that are not empty, "." or "..", of [A-Za-z0-9._-] only. A client
// glob such as spiffe://td/ns/prod/* must not cover /ns/prod/../admin, which
// paths resolve elsewhere, nor an escaped spelling of another ID.
func spiffePath(p string) bool {
	if p == "" {
		return true
	}
	if len(p) > 2048 {
		return false
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if p[0] != '/' || seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// validTrustDomain checks a spiffeTrustDomains entry.
func validTrustDomain(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
