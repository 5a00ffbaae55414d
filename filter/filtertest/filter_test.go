package filtertest

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// pki is one shared hierarchy for the decision tests: RSA-2048 root →
// intermediate → leaves of every kind the tests need.
type pki struct {
	root, inter, otherRoot            *testpki.Cert
	good, expired, future, serverOnly *testpki.Cert
	revoked, big, foreign             *testpki.Cert
	crl, staleCRL                     []byte
}

var shared *pki

func thePKI(t testing.TB) *pki {
	t.Helper()
	if shared != nil {
		return shared
	}
	m := testpki.Must[*testpki.Cert]
	p := &pki{}
	// The CAs predate every leaf, as real ones do: an expired leaf accepted by
	// allowExpiredCertificates is verified at an instant inside its validity.
	now := time.Now()
	caFrom := now.Add(-30 * 24 * time.Hour)
	p.root = m(testpki.NewRoot(testpki.Options{Key: testpki.RSA2048, NotBefore: caFrom, NotAfter: caFrom.Add(10 * 365 * 24 * time.Hour),
		Subject: pkix.Name{CommonName: "Example Root CA", Organization: []string{"Example"}, Country: []string{"US"}}}))
	p.inter = m(p.root.Issue(testpki.Options{Key: testpki.RSA2048, CA: true, NotBefore: caFrom, NotAfter: caFrom.Add(5 * 365 * 24 * time.Hour),
		Subject: pkix.Name{CommonName: "example-ca", Organization: []string{"Example"}, Country: []string{"US"}}}))
	leaf := func(o testpki.Options) *testpki.Cert {
		o.Key = testpki.P256
		return m(p.inter.Issue(o))
	}
	p.good = leaf(testpki.Options{Subject: pkix.Name{CommonName: "acme-mobile", OrganizationalUnit: []string{"partner-prod"}, Organization: []string{"ExampleCorp"}},
		URIs: []string{"spiffe://example.org/acme"}, DNSNames: []string{"acme.example.org"}})
	p.expired = leaf(testpki.Options{CommonName: "expired", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	p.future = leaf(testpki.Options{CommonName: "future", NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	p.serverOnly = leaf(testpki.Options{CommonName: "server-only", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.revoked = leaf(testpki.Options{CommonName: "revoked"})
	p.big = leaf(testpki.Options{CommonName: "big", ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, 3000)}}})
	p.otherRoot = m(testpki.NewRoot(testpki.Options{Key: testpki.P256, CommonName: "Other Root"}))
	p.foreign = m(p.otherRoot.Issue(testpki.Options{Key: testpki.P256, CommonName: "foreign"}))
	p.crl = testpki.Must(p.inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{p.revoked}}))
	p.staleCRL = testpki.Must(p.inter.CRL(testpki.CRLOptions{ThisUpdate: now.Add(-72 * time.Hour), NextUpdate: now.Add(-time.Hour)}))
	shared = p
	return p
}

func (p *pki) chainOf(leaf *testpki.Cert) string {
	if leaf.Issuer == p.otherRoot {
		return xfcc(leaf, leaf.PEM())
	}
	return xfcc(leaf, append(leaf.PEM(), p.inter.PEM()...))
}

func xfccHeader(v string) abi.Header { return abi.Header{Key: "x-forwarded-client-cert", Value: v} }

// TestEveryReasonInTheFilter drives the compiled filter to each verdict and
// checks the whole response: status, problem+json body, reason header, and
// that nothing reached the upstream.
func TestEveryReasonInTheFilter(t *testing.T) {
	p := thePKI(t)
	cases := []struct {
		name    string
		options map[string]any
		crls    [][]byte
		hdrs    []abi.Header
		source  string
		reason  string
	}{
		{name: "no certificate", reason: "NO_CERTIFICATE"},
		{name: "garbage xfcc", hdrs: []abi.Header{xfccHeader(`Cert="%%%not-pem"`)}, reason: "MALFORMED_CERTIFICATE"},
		{name: "truncated pem", hdrs: []abi.Header{xfccHeader(p.chainOf(p.good)[:300] + `"`)}, reason: "MALFORMED_CERTIFICATE"},
		{name: "other CA", hdrs: []abi.Header{xfccHeader(p.chainOf(p.foreign))}, reason: "UNTRUSTED_CHAIN"},
		{name: "missing intermediate", hdrs: []abi.Header{xfccHeader(xfcc(p.good, p.good.PEM()))}, reason: "UNTRUSTED_CHAIN"},
		{name: "expired", hdrs: []abi.Header{xfccHeader(p.chainOf(p.expired))}, reason: "EXPIRED"},
		{name: "not yet valid", hdrs: []abi.Header{xfccHeader(p.chainOf(p.future))}, reason: "NOT_YET_VALID"},
		{name: "revoked", crls: [][]byte{p.crl}, hdrs: []abi.Header{xfccHeader(p.chainOf(p.revoked))}, reason: "REVOKED"},
		{name: "stale crl strict", crls: [][]byte{p.staleCRL}, hdrs: []abi.Header{xfccHeader(p.chainOf(p.good))}, reason: "REVOCATION_UNKNOWN"},
		{name: "issuer pinning", options: map[string]any{"certIssuerDN": "CN=someone-else, O=Example, C=US"},
			hdrs: []abi.Header{xfccHeader(p.chainOf(p.good))}, reason: "ISSUER_DN_MISMATCH"},
		{name: "serverAuth only", hdrs: []abi.Header{xfccHeader(p.chainOf(p.serverOnly))}, reason: "WRONG_KEY_USAGE"},
		{name: "oversize leaf", options: map[string]any{"maxCertificateBytes": 2048},
			hdrs: []abi.Header{xfccHeader(p.chainOf(p.big))}, reason: "CERTIFICATE_TOO_LARGE"},
		{name: "rfc9440 from untrusted source", options: map[string]any{"certificateSource": "rfc9440", "trustedSourceCIDRs": []string{"10.0.0.0/8"}},
			hdrs: []abi.Header{{Key: "client-cert", Value: ":" + base64.StdEncoding.EncodeToString(p.good.DER) + ":"}}, source: "198.51.100.9:4000", reason: "UNTRUSTED_SOURCE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := map[string]any{"policies": []any{policyDoc("mtls", tc.options)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root}, tc.crls...)}
			_, vm := newPlugin(t, cfg, nil)
			res := do(t, vm, request("/v1/orders", tc.source, tc.hdrs...))
			if res.Forwarded != nil {
				t.Fatalf("request reached the upstream with %v", res.Forwarded.Headers)
			}
			if res.LocalResponse.Status != 401 {
				t.Fatalf("status %d, want 401", res.LocalResponse.Status)
			}
			pr := problem(t, res)
			if pr["reason"] != tc.reason || pr["status"] != float64(401) {
				t.Fatalf("problem %v, want reason %s", pr, tc.reason)
			}
			for _, k := range []string{"type", "title", "detail"} {
				if s, _ := pr[k].(string); s == "" {
					t.Errorf("problem field %q empty: %v", k, pr)
				}
			}
			if v, _ := header(res.LocalResponse.Headers, "x-mtls-verification-reason"); v != tc.reason {
				t.Errorf("x-mtls-verification-reason %q, want %s", v, tc.reason)
			}
			if !strings.Contains(res.LocalResponse.Details, strings.ToLower(tc.reason)) && !strings.Contains(res.LocalResponse.Details, tc.reason) {
				t.Errorf("response details %q do not name the reason", res.LocalResponse.Details)
			}
		})
	}
}

// TestAllowedRequestGetsIdentity checks the upstream sees exactly the
// identity the certificate proves, and nothing the client claimed.
func TestAllowedRequestGetsIdentity(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{"policies": []any{policyDoc("mtls", nil)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	plugin, vm := newPlugin(t, cfg, nil)
	spoofed := []abi.Header{
		{Key: "x-mtls-subject", Value: "CN=admin"}, {Key: "x-user-sub", Value: "CN=admin"},
		{Key: "x-mtls-verification-status", Value: "SUCCESS"}, {Key: "client-cert", Value: ":AAAA:"},
		{Key: "x-mtls-anything", Value: "forged"},
	}
	for i := 0; i < 3; i++ { // the second and third requests hit the verdict cache
		res := do(t, vm, request("/v1/orders", "", append([]abi.Header{xfccHeader(p.chainOf(p.good))}, spoofed...)...))
		if res.Forwarded == nil {
			t.Fatalf("request %d denied: %+v %s", i, res.LocalResponse, res.LocalResponse.Body)
		}
		fw := res.Forwarded.Headers
		want := map[string]string{
			"x-mtls-subject":             "CN=acme-mobile,OU=partner-prod,O=ExampleCorp",
			"x-user-sub":                 "CN=acme-mobile,OU=partner-prod,O=ExampleCorp",
			"x-mtls-issuer":              "CN=example-ca,O=Example,C=US",
			"x-mtls-verification-status": "SUCCESS",
			"x-mtls-san-uri":             "spiffe://example.org/acme",
			"x-mtls-san-dns":             "acme.example.org",
			"x-mtls-not-after":           p.good.Cert.NotAfter.UTC().Format(time.RFC3339),
			"client-cert":                ":" + base64.StdEncoding.EncodeToString(p.good.DER) + ":",
		}
		for k, v := range want {
			if got, _ := header(fw, k); got != v {
				t.Errorf("request %d: %s = %q, want %q", i, k, got, v)
			}
		}
		if fp, _ := header(fw, "x-mtls-sha256-fingerprint"); len(fp) != 95 || strings.ToUpper(fp) != fp {
			t.Errorf("fingerprint %q is not uppercase colon hex of a SHA-256", fp)
		}
		if _, ok := header(fw, "x-mtls-anything"); ok {
			t.Errorf("client-sent x-mtls-anything reached the upstream")
		}
		for _, h := range fw {
			if h.Value == "CN=admin" || h.Value == ":AAAA:" || h.Value == "forged" {
				t.Errorf("spoofed %s=%q reached the upstream", h.Key, h.Value)
			}
		}
	}
	if m, ok := plugin.Metric("mtlsgate.decision.allow"); !ok || m.Value != 3 {
		t.Errorf("allow counter = %+v, want 3", m)
	}
}

// TestUnauthenticatedAllowedNeverYieldsUserSub: a staged rollout lets failed
// clients through, labelled, but never with an identity.
func TestUnauthenticatedAllowedNeverYieldsUserSub(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{"policies": []any{policyDoc("staged", map[string]any{"allowUnauthenticatedRequests": true})},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	for _, tc := range []struct {
		name, status, reason string
		hdrs                 []abi.Header
		meta                 bool
	}{
		{"none", "NONE", "NO_CERTIFICATE", nil, false},
		{"foreign", "FAILED", "UNTRUSTED_CHAIN", []abi.Header{xfccHeader(p.chainOf(p.foreign))}, true},
		{"expired", "FAILED", "EXPIRED", []abi.Header{xfccHeader(p.chainOf(p.expired))}, true},
	} {
		spoof := abi.Header{Key: "x-user-sub", Value: "CN=admin"}
		res := do(t, vm, request("/", "", append(tc.hdrs, spoof)...))
		if res.Forwarded == nil {
			t.Fatalf("%s: denied, want forwarded", tc.name)
		}
		fw := res.Forwarded.Headers
		if v, _ := header(fw, "x-mtls-verification-status"); v != tc.status {
			t.Errorf("%s: status %q, want %s", tc.name, v, tc.status)
		}
		if v, _ := header(fw, "x-mtls-verification-reason"); v != tc.reason {
			t.Errorf("%s: reason %q, want %s", tc.name, v, tc.reason)
		}
		if v, ok := header(fw, "x-user-sub"); ok {
			t.Errorf("%s: x-user-sub %q for an unverified client", tc.name, v)
		}
		if _, ok := header(fw, "x-mtls-subject"); ok != tc.meta {
			t.Errorf("%s: metadata present=%v, want %v", tc.name, ok, tc.meta)
		}
	}
}

// TestRoutesAndPassthrough: only routed requests are checked, but identity
// headers are stripped from every request.
func TestRoutesAndPassthrough(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", nil)},
		"routes":      []any{map[string]any{"pathPrefix": "/v1/", "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	res := do(t, vm, request("/v1/orders", ""))
	if res.LocalResponse == nil || res.LocalResponse.Status != 401 {
		t.Fatalf("protected route without a certificate was not refused")
	}
	res = do(t, vm, request("/health", "", abi.Header{Key: "X-User-Sub", Value: "CN=admin"}, abi.Header{Key: "x-mtls-subject", Value: "x"}))
	if res.Forwarded == nil {
		t.Fatalf("unrouted request was refused: %s", res.LocalResponse.Body)
	}
	for _, k := range []string{"x-user-sub", "x-mtls-subject", "x-mtls-verification-status"} {
		if v, ok := header(res.Forwarded.Headers, k); ok {
			t.Errorf("unprotected route forwarded %s=%q", k, v)
		}
	}
}

// TestCertificateSources covers RFC 9440 and the three custom header formats
// from a trusted front proxy.
func TestCertificateSources(t *testing.T) {
	p := thePKI(t)
	leafPEM := string(p.good.PEM())
	interPEM := string(p.inter.PEM())
	sf := func(der []byte) string { return ":" + base64.StdEncoding.EncodeToString(der) + ":" }
	cases := []struct {
		name    string
		options map[string]any
		hdrs    []abi.Header
	}{
		{"rfc9440", map[string]any{"certificateSource": "rfc9440"},
			[]abi.Header{{Key: "client-cert", Value: sf(p.good.DER)}, {Key: "client-cert-chain", Value: sf(p.inter.DER)}}},
		{"url-encoded-pem", map[string]any{"certificateSource": "header", "certificateHeader": "X-Amzn-Mtls-Clientcert", "certificateHeaderFormat": "url-encoded-pem"},
			[]abi.Header{{Key: "x-amzn-mtls-clientcert", Value: envoyPEMEscaper.Replace(leafPEM + interPEM)}}},
		{"base64-der", map[string]any{"certificateSource": "header", "certificateHeader": "x-client-cert-der", "certificateHeaderFormat": "base64-der"},
			[]abi.Header{{Key: "x-client-cert-der", Value: base64.StdEncoding.EncodeToString(p.good.DER) + "," + base64.StdEncoding.EncodeToString(p.inter.DER)}}},
		{"pem", map[string]any{"certificateSource": "header", "certificateHeader": "x-ssl-cert", "certificateHeaderFormat": "pem"},
			[]abi.Header{{Key: "x-ssl-cert", Value: strings.ReplaceAll(leafPEM+interPEM, "\n", " ")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.options["trustedSourceCIDRs"] = []string{"10.1.0.0/16"}
			cfg := map[string]any{"policies": []any{policyDoc("edge", tc.options)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}
			_, vm := newPlugin(t, cfg, nil)
			res := do(t, vm, request("/", "10.1.2.3:5555", tc.hdrs...))
			if res.Forwarded == nil {
				t.Fatalf("trusted source refused: %s", res.LocalResponse.Body)
			}
			if v, _ := header(res.Forwarded.Headers, "x-mtls-subject"); !strings.HasPrefix(v, "CN=acme-mobile") {
				t.Errorf("subject %q", v)
			}
			res = do(t, vm, request("/", "192.0.2.1:5555", tc.hdrs...))
			if res.LocalResponse == nil {
				t.Fatalf("untrusted source was forwarded")
			}
			if pr := problem(t, res); pr["reason"] != "UNTRUSTED_SOURCE" {
				t.Errorf("untrusted source reason %v", pr["reason"])
			}
		})
	}
}

// TestConfigurationRejected: a bad configuration fails plugin start, naming the
// field, so Envoy refuses it instead of running open.
func TestConfigurationRejected(t *testing.T) {
	for _, tc := range []struct {
		name, cfg, mention string
	}{
		{"unknown option", `{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"allowUnauthenticated":true}}}],"trustBundle":{"cluster":"s"}}`, "allowUnauthenticated"},
		{"wrong type", `{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"allowExpiredCertificates":"yes"}}}],"trustBundle":{"cluster":"s"}}`, "allowExpiredCertificates"},
		{"unknown policyType", `{"policies":[{"name":"p","policyType":"api-key-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{}}}],"trustBundle":{"cluster":"s"}}`, "policyType"},
		{"not json", `{"policies":`, "JSON"},
		{"shadowed route", `{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{}}},{"name":"open","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"allowUnauthenticatedRequests":true}}}],"routes":[{"pathPrefix":"/","policy":"open"},{"pathPrefix":"/admin/","policy":"p"}],"trustBundle":{"cluster":"s"}}`, "routes[1]: is never reached"},
		{"route with a query", `{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{}}}],"routes":[{"path":"/admin?x=1","policy":"p"}],"trustBundle":{"cluster":"s"}}`, "routes[0].path"},
		{"trust every peer", `{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"certificateSource":"rfc9440","trustedSourceCIDRs":["0.0.0.0/0"]}}}],"trustBundle":{"cluster":"s"}}`, "trustedSourceCIDRs[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filterModule(t).NewPlugin(hostConfig([]byte(tc.cfg)))
			_, err := p.NewVM(t.Context())
			if err == nil {
				t.Fatal("plugin started with a bad configuration")
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

// TestConfigurationWarnings: settings accepted but probably not meant are
// logged at configure, naming the JSON path.
func TestConfigurationWarnings(t *testing.T) {
	cfg := `{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{}}},{"name":"spare","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{}}}],"routes":[{"pathPrefix":"/admin/","methods":["DELTE"],"policy":"p"}],"trustBundle":{"cluster":"s"}}`
	vm := newVM(t, filterModule(t).NewPlugin(hostConfig([]byte(cfg))))
	for _, want := range []string{`routes[0].methods[0]: "DELTE" is not a registered HTTP method`, `policies[1]: no route names policy "spare"`} {
		if !slices.ContainsFunc(vm.Logs(), func(l hosttest.LogEntry) bool {
			return l.Level == abi.LogWarn && strings.Contains(l.Message, want)
		}) {
			t.Errorf("no warning %q in %v", want, vm.Logs())
		}
	}
}
