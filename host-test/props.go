package hosttest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/mtlsgate/mtlsgate/filter/policy/dn"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

func propInt64(v int64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(v))
	return b
}

func propBool(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

// property resolves an attribute path the way Context::getProperty does
// (source/extensions/common/wasm/context.cc): NUL-separated segments, values
// serialized by serializeValue — strings raw, int64/uint64 as 8 bytes little
// endian, bools as one byte, maps as header-map pairs. Attribute sources and
// types follow source/extensions/filters/common/expr/context.cc.
func (vm *VM) property(s *Stream, path []byte) ([]byte, abi.Status) {
	segs := strings.Split(string(path), "\x00")
	dotted := strings.Join(segs, ".")
	if s != nil {
		if v, ok := s.prop[dotted]; ok {
			return v, abi.StatusOK
		}
	}
	if v, st := vm.builtinProperty(s, segs); st != abi.StatusNotFound {
		return v, st
	}
	// Values from proxy_set_property live in filter state under
	// "wasm.<top-level name>" (Context::findValue).
	if s != nil && len(segs) == 1 {
		if v, ok := s.setProps[string(path)]; ok {
			return v, abi.StatusOK
		}
	}
	return nil, abi.StatusNotFound
}

func (vm *VM) builtinProperty(s *Stream, segs []string) ([]byte, abi.Status) {
	nf := abi.StatusNotFound
	cfg := vm.p.cfg
	switch segs[0] {
	case "plugin_name":
		return []byte(cfg.Name), abi.StatusOK
	case "plugin_root_id":
		return []byte(cfg.RootID), abi.StatusOK
	case "plugin_vm_id":
		return []byte(cfg.VMID), abi.StatusOK
	}
	if s == nil || len(segs) < 2 {
		return nil, nf
	}
	c := s.conn
	switch segs[0] {
	case "source", "destination":
		if c == nil {
			return nil, nf
		}
		ap := c.Source
		if segs[0] == "destination" {
			ap = c.Destination
		}
		if !ap.IsValid() {
			return nil, nf
		}
		switch segs[1] {
		case "address":
			// Address::Ip::asString: "ip:port", IPv6 in brackets.
			return []byte(ap.String()), abi.StatusOK
		case "port":
			return propInt64(int64(ap.Port())), abi.StatusOK
		}
	case "connection":
		if c == nil {
			return nil, nf
		}
		return connectionProperty(c, segs[1])
	case "request":
		return requestProperty(s, segs[1:])
	case "response":
		return responseProperty(s, segs[1:])
	}
	return nil, nf
}

func connectionProperty(c *Connection, name string) ([]byte, abi.Status) {
	nf := abi.StatusNotFound
	switch name {
	case "id":
		return propInt64(int64(c.ID)), abi.StatusOK
	case "mtls":
		return propBool(c.TLS != nil && c.TLS.PeerCertificate != nil), abi.StatusOK
	case "requested_server_name":
		return []byte(c.RequestedServerName), abi.StatusOK
	}
	t := c.TLS
	if t == nil {
		return nil, nf
	}
	cert := t.PeerCertificate
	switch name {
	case "tls_version":
		return []byte(t.Version), abi.StatusOK
	case "subject_peer_certificate":
		return subjectOf(cert)
	case "subject_local_certificate":
		return subjectOf(t.LocalCertificate)
	case "uri_san_peer_certificate":
		return firstURI(cert)
	case "uri_san_local_certificate":
		return firstURI(t.LocalCertificate)
	case "dns_san_peer_certificate":
		return firstDNS(cert)
	case "dns_san_local_certificate":
		return firstDNS(t.LocalCertificate)
	case "sha256_peer_certificate_digest":
		if cert == nil {
			return nil, nf
		}
		sum := sha256.Sum256(cert.Raw)
		return []byte(hex.EncodeToString(sum[:])), abi.StatusOK
	}
	return nil, nf
}

// subjectOf prints a subject as Envoy does: X509_NAME_print_ex with
// XN_FLAG_RFC2253 (source/common/tls/utility.cc, Utility::getSubjectFromCertificate),
// the same text as `openssl x509 -subject -nameopt RFC2253`, which pkix.Name's
// String does not reproduce for escapes, multi-valued RDNs or unknown OIDs.
func subjectOf(c *x509.Certificate) ([]byte, abi.Status) {
	if c == nil {
		return []byte{}, abi.StatusOK
	}
	s, err := dn.Format(c.RawSubject)
	if err != nil {
		return []byte{}, abi.StatusOK
	}
	return []byte(s), abi.StatusOK
}

// firstURI and firstDNS mirror the attributes' single-string form: the first
// SAN of that kind (source/extensions/filters/common/expr/context.cc).
func firstURI(c *x509.Certificate) ([]byte, abi.Status) {
	if c == nil || len(c.URIs) == 0 {
		return nil, abi.StatusNotFound
	}
	return []byte(c.URIs[0].String()), abi.StatusOK
}

func firstDNS(c *x509.Certificate) ([]byte, abi.Status) {
	if c == nil || len(c.DNSNames) == 0 {
		return nil, abi.StatusNotFound
	}
	return []byte(c.DNSNames[0]), abi.StatusOK
}

// requestProperty reads the request headers the filter can currently see:
// Envoy's StreamActivation uses request_headers_, else the access-log headers
// (Context::findValue), and request_headers_ is dropped once
// proxy_on_request_headers continues, so request.* is NotFound in later
// callbacks until proxy_on_log.
func requestProperty(s *Stream, segs []string) ([]byte, abi.Status) {
	nf := abi.StatusNotFound
	var m *headerMap
	if s.reqHLive || s.accessLog {
		m = s.reqH
	}
	if m == nil {
		return nil, nf
	}
	hv := func(k string) ([]byte, abi.Status) {
		if v, ok := m.get(k); ok {
			return []byte(v), abi.StatusOK
		}
		return nil, nf
	}
	switch segs[0] {
	case "path":
		return hv(":path")
	case "url_path":
		v, ok := m.get(":path")
		if !ok {
			return nil, nf
		}
		if i := strings.IndexByte(v, '?'); i >= 0 {
			v = v[:i]
		}
		return []byte(v), abi.StatusOK
	case "query":
		v, _ := m.get(":path")
		i := strings.IndexByte(v, '?')
		if i < 0 {
			return []byte{}, abi.StatusOK
		}
		v = v[i+1:]
		if j := strings.IndexByte(v, '#'); j >= 0 {
			v = v[:j]
		}
		return []byte(v), abi.StatusOK
	case "host":
		return hv(":authority")
	case "scheme":
		return hv(":scheme")
	case "method":
		return hv(":method")
	case "referer":
		return hv("referer")
	case "useragent":
		return hv("user-agent")
	case "id":
		return hv("x-request-id")
	case "headers":
		return headersProperty(m, segs[1:])
	}
	return nil, nf
}

func responseProperty(s *Stream, segs []string) ([]byte, abi.Status) {
	var m *headerMap
	if s.respHLive || s.accessLog {
		m = s.respH
	}
	if m == nil {
		return nil, abi.StatusNotFound
	}
	switch segs[0] {
	case "code":
		v, ok := m.get(":status")
		if !ok {
			return nil, abi.StatusNotFound
		}
		n := int64(0)
		for _, c := range v {
			n = n*10 + int64(c-'0')
		}
		return propInt64(n), abi.StatusOK
	case "headers":
		return headersProperty(m, segs[1:])
	}
	return nil, abi.StatusNotFound
}

// headersProperty: the whole map serializes as pairs; one header, looked up
// in Envoy's HeadersWrapper, joins repeated values with ",".
func headersProperty(m *headerMap, rest []string) ([]byte, abi.Status) {
	if len(rest) == 0 {
		return abi.EncodeHeaders(m.h), abi.StatusOK
	}
	vals := Values(m.h, rest[0])
	if len(vals) == 0 {
		return nil, abi.StatusNotFound
	}
	return bytes.Join(func() [][]byte {
		out := make([][]byte, len(vals))
		for i, v := range vals {
			out[i] = []byte(v)
		}
		return out
	}(), []byte(",")), abi.StatusOK
}
