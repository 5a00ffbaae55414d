package policy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// envoyURLEncode percent-encodes everything but RFC 3986 unreserved
// characters, the strictest form a proxy may produce.
func envoyURLEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// xfccFor writes the element Envoy produces with SANITIZE_SET and
// set_current_client_cert_details {cert, chain, subject, uri, dns}.
func xfccFor(leaf *testpki.Cert, chain []byte) string {
	parts := []string{
		"By=spiffe://gateway.example/envoy",
		"Hash=" + strings.ToLower(strings.ReplaceAll(fingerprint(leaf.DER), ":", "")),
		`Cert="` + envoyURLEncode(string(leaf.PEM())) + `"`,
	}
	if chain != nil {
		parts = append(parts, `Chain="`+envoyURLEncode(string(chain))+`"`)
	}
	parts = append(parts, `Subject="`+strings.ReplaceAll(leaf.Cert.Subject.String(), `"`, `\"`)+`"`, "URI=")
	for _, d := range leaf.Cert.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ";")
}

func chainXFCC(ch *testpki.Chain) string { return xfccFor(ch.Leaf, ch.Presented()) }

func policyJSON(name string, options string) string {
	if options == "" {
		options = "{}"
	}
	return `{"name":"` + name + `","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":` + options + `}}`
}

func inlineBundle(cas []*testpki.Cert, crls ...[]byte) string {
	var c, r []string
	for _, ca := range cas {
		b, _ := json.Marshal(string(ca.PEM()))
		c = append(c, string(b))
	}
	for _, crl := range crls {
		b, _ := json.Marshal(string(crl))
		r = append(r, string(b))
	}
	return `{"caCertificates":[` + strings.Join(c, ",") + `],"crls":[` + strings.Join(r, ",") + `]}`
}

// newEngine builds an engine with one policy and an inline bundle.
func newEngine(t testing.TB, options string, cas []*testpki.Cert, crls ...[]byte) *Engine {
	t.Helper()
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", options) + `],"trustBundle":` + inlineBundle(cas, crls...) + `}`))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	e := NewEngine(cfg)
	if !e.HasBundle() {
		t.Fatal("inline bundle not loaded")
	}
	return e
}

func xfccReq(v string, now time.Time, extra ...Header) *Request {
	h := []Header{{":method", "GET"}, {":path", "/api"}, {"user-agent", "curl"}}
	if v != "" {
		h = append(h, Header{"x-forwarded-client-cert", v})
	}
	return &Request{Method: "GET", Path: "/api", Headers: append(h, extra...), SourceAddress: "203.0.113.9:51000", Now: now}
}

func header(hs []Header, k string) (string, bool) {
	for _, h := range hs {
		if h.Key == k {
			return h.Value, true
		}
	}
	return "", false
}

// expect checks the decision and reason and, for denials, the problem body.
func expect(t *testing.T, r *Result, decision string, reason Reason) {
	t.Helper()
	if r.Decision != decision || r.Reason != reason {
		t.Fatalf("decision=%s reason=%q, want %s %q (detail: %s)", r.Decision, r.Reason, decision, reason, r.Detail())
	}
	if decision == DecisionDeny {
		if r.Action != Respond {
			t.Fatalf("deny without a local response")
		}
		var body map[string]any
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("problem body is not JSON: %v: %s", err, r.Body)
		}
		if body["reason"] != string(reason) || body["type"] != ProblemType(reason) || int(body["status"].(float64)) != r.Status || body["title"] == "" || body["detail"] == "" {
			t.Fatalf("problem body wrong: %s", r.Body)
		}
		if ct, _ := header(r.ResponseHeaders, "content-type"); ct != "application/problem+json" {
			t.Fatalf("content-type %q", ct)
		}
		if rh, _ := header(r.ResponseHeaders, "x-mtls-verification-reason"); rh != string(reason) {
			t.Fatalf("response reason header %q", rh)
		}
		if _, ok := header(r.SetHeaders, "x-user-sub"); ok {
			t.Fatal("denial sets identity")
		}
	} else if r.Action != Continue {
		t.Fatalf("decision %s but action %v", decision, r.Action)
	}
	var log map[string]any
	if err := json.Unmarshal([]byte(r.LogLine()), &log); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, r.LogLine())
	}
	if log["decision"] != decision {
		t.Fatalf("log line decision: %s", r.LogLine())
	}
}

func mustBundle(t testing.TB, cas []*testpki.Cert, crls ...[]byte) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Parse([]byte(inlineBundle(cas, crls...)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var bundleWithGarbage = bundle.Bundle{Version: "garbage", CACertificates: []bundle.CA{{PEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}}
