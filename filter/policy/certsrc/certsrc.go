// Package certsrc extracts a presented client certificate chain (DER, leaf
// first) from the request headers a front proxy writes: Envoy's
// x-forwarded-client-cert, RFC 9440 Client-Cert/Client-Cert-Chain, or a single
// header in one of the formats load balancers and CDNs use.
//
// Every function here reads attacker-reachable input. They return errors, never
// panic, and bound the work they do.
package certsrc

import (
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
)

// MaxChain is the most certificates accepted in one presented chain; real
// chains are 1–4 deep, anything longer is refused rather than parsed.
const MaxChain = 8

// ErrNoCertificate means the source carried no certificate at all (as opposed
// to a malformed one).
var ErrNoCertificate = errors.New("no client certificate in the request")

// ErrTooManyCertificates is wrapped by every error that refuses a chain for
// holding more than MaxChain certificates. That is a size limit, like the
// leaf's maxCertificateBytes, not a chain that could not be read: the policy
// answers it CERTIFICATE_TOO_LARGE, and the operator's fix is a shorter
// chain, not a different proxy format.
var ErrTooManyCertificates = errors.New("more than " + strconv.Itoa(MaxChain) + " certificates, the most a presented chain may hold")

// tooMany says where the limit was hit and still matches
// ErrTooManyCertificates under errors.Is.
func tooMany(where string) error {
	return &limitError{where + ": " + ErrTooManyCertificates.Error()}
}

type limitError struct{ msg string }

func (e *limitError) Error() string { return e.msg }
func (e *limitError) Unwrap() error { return ErrTooManyCertificates }

// Format is how a certificate is written into a single header.
type Format string

const (
	// URLEncodedPEM is PEM with percent-encoding: AWS ALB
	// X-Amzn-Mtls-Clientcert, nginx $ssl_client_escaped_cert, Envoy XFCC Cert=.
	URLEncodedPEM Format = "url-encoded-pem"
	// Base64DER is the DER certificate in standard base64; several certificates
	// (leaf first) may be separated by commas.
	Base64DER Format = "base64-der"
	// PEM is PEM text; header-safe variants with the line breaks replaced by
	// spaces or tabs are accepted too.
	PEM Format = "pem"
)

// ParseFormat validates a configured format name.
func ParseFormat(s string) (Format, bool) {
	switch Format(s) {
	case URLEncodedPEM, Base64DER, PEM:
		return Format(s), true
	}
	return "", false
}

// Header decodes a single header value in the given format.
func Header(value string, f Format) ([][]byte, error) {
	if strings.TrimSpace(value) == "" {
		return nil, ErrNoCertificate
	}
	switch f {
	case URLEncodedPEM:
		pem, err := url.PathUnescape(strings.TrimSpace(value))
		if err != nil {
			return nil, errors.New("certificate header is not valid percent-encoding")
		}
		return DecodePEMChain(pem)
	case PEM:
		return DecodePEMChain(value)
	case Base64DER:
		var out [][]byte
		for _, part := range strings.Split(value, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if len(out) == MaxChain {
				return nil, tooMany("certificate header")
			}
			der, err := decodeBase64(part)
			if err != nil {
				return nil, errors.New("certificate header is not base64 DER")
			}
			out = append(out, der)
		}
		if len(out) == 0 {
			return nil, ErrNoCertificate
		}
		return out, nil
	}
	return nil, errors.New("unknown certificate header format " + strconv.Quote(string(f)))
}

// decodeBase64 accepts standard base64 with or without padding, and the URL
// alphabet some proxies use.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

const (
	pemBegin = "-----BEGIN CERTIFICATE-----"
	pemEnd   = "-----END CERTIFICATE-----"
)

// DecodePEMChain decodes one or more CERTIFICATE PEM blocks. Unlike
// encoding/pem it does not need line breaks, because header values cannot carry
// them and proxies replace them with spaces or tabs.
func DecodePEMChain(s string) ([][]byte, error) {
	var out [][]byte
	for {
		b := strings.Index(s, "-----BEGIN ")
		if b < 0 {
			break
		}
		if !strings.HasPrefix(s[b:], pemBegin) {
			return nil, errors.New("PEM block is not a CERTIFICATE")
		}
		s = s[b+len(pemBegin):]
		e := strings.Index(s, pemEnd)
		if e < 0 {
			return nil, errors.New("PEM certificate is truncated (no END line)")
		}
		if len(out) == MaxChain {
			return nil, tooMany("PEM chain")
		}
		body := stripSpace(s[:e])
		der, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, errors.New("PEM certificate body is not base64")
		}
		if len(der) == 0 {
			return nil, errors.New("PEM certificate is empty")
		}
		out = append(out, der)
		s = s[e+len(pemEnd):]
	}
	if len(out) == 0 {
		if strings.TrimSpace(s) == "" {
			return nil, ErrNoCertificate
		}
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return out, nil
}

func stripSpace(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			b = append(b, c)
		}
	}
	return string(b)
}

// RFC9440 decodes Client-Cert (one sf-binary item) and Client-Cert-Chain (an
// sf-list of sf-binary items, possibly split over several header lines) into a
// chain, leaf first. Parameters on items are ignored, as RFC 9440 defines none.
func RFC9440(cert string, chain []string) ([][]byte, error) {
	cert = strings.Trim(cert, " \t")
	if cert == "" {
		return nil, ErrNoCertificate
	}
	leaf, rest, err := sfBinary(cert)
	if err != nil {
		return nil, errors.New("Client-Cert: " + err.Error())
	}
	if strings.Trim(rest, " \t") != "" {
		return nil, errors.New("Client-Cert: must be exactly one :base64: item")
	}
	out := [][]byte{leaf}
	for _, line := range chain {
		for {
			line = strings.Trim(line, " \t")
			if line == "" {
				break
			}
			if len(out) == MaxChain {
				return nil, tooMany("Client-Cert and Client-Cert-Chain")
			}
			der, rest, err := sfBinary(line)
			if err != nil {
				return nil, errors.New("Client-Cert-Chain: " + err.Error())
			}
			out = append(out, der)
			rest = strings.TrimLeft(rest, " \t")
			if rest == "" {
				break
			}
			if rest[0] != ',' {
				return nil, errors.New("Client-Cert-Chain: items must be separated by commas")
			}
			line = rest[1:]
			if strings.Trim(line, " \t") == "" {
				return nil, errors.New("Client-Cert-Chain: trailing comma")
			}
		}
	}
	return out, nil
}

// sfBinary reads ":base64:" plus optional ";param" parameters and returns the
// decoded bytes and what follows.
func sfBinary(s string) ([]byte, string, error) {
	if len(s) < 2 || s[0] != ':' {
		return nil, "", errors.New("expected a :base64: byte sequence")
	}
	end := strings.IndexByte(s[1:], ':')
	if end < 0 {
		return nil, "", errors.New("unterminated :base64: byte sequence")
	}
	b64 := s[1 : 1+end]
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		// RFC 8941 asks parsers to tolerate missing padding.
		if der, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "=")); err != nil {
			return nil, "", errors.New("byte sequence is not base64")
		}
	}
	if len(der) == 0 {
		return nil, "", errors.New("empty byte sequence")
	}
	rest := s[2+end:]
	for strings.HasPrefix(rest, ";") { // skip parameters
		i := strings.IndexByte(rest, ',')
		if i < 0 {
			rest = ""
		} else {
			rest = rest[i:]
		}
	}
	return der, rest, nil
}
