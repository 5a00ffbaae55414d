//go:build !wasip1

package filtertest

// Requests a client crafts to get past the compiled filter or to corrupt its
// decisions, each from a defect found by probing it: the request, the route
// configuration that exposed it, and the answer the README promises.

import (
	"crypto/x509/pkix"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// withPeer attaches a TLS connection whose peer certificate is leaf, so the
// host answers connection.sha256_peer_certificate_digest as Envoy does.
func withPeer(r *hosttest.Request, leaf *testpki.Cert) *hosttest.Request {
	r.Conn.TLS = &hosttest.TLSInfo{Version: "TLSv1.3", PeerCertificate: leaf.Cert}
	return r
}

// TestRouteMethodCase: a route's methods match the request's without regard
// to case. A client sending "get" (a valid token; HTTP/2 carries it as is,
// and Django, Werkzeug and Rack upper-case it) must meet the GET route's
// policy, not pass unauthenticated.
func TestRouteMethodCase(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", nil)},
		"routes":      []any{map[string]any{"pathPrefix": "/admin/", "methods": []string{"get", "POST"}, "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	if res := do(t, vm, methodRequest("GET", "/admin/users", "")); res.LocalResponse == nil || res.LocalResponse.Status != 401 {
		t.Fatalf("GET without a certificate was not refused")
	}
	for _, m := range []string{"get", "Get", "post"} {
		res := do(t, vm, methodRequest(m, "/admin/users", ""))
		if res.Forwarded != nil {
			t.Errorf("%s /admin/users without a certificate reached the upstream (route methods are compared case-sensitively)", m)
		}
	}
}

// TestRouteHeadCoveredByGet: a route limited to GET covers HEAD, which Go's
// ServeMux ("GET /x" patterns), Express, Flask and Rails answer with the GET
// handler.
func TestRouteHeadCoveredByGet(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", nil)},
		"routes":      []any{map[string]any{"pathPrefix": "/admin/", "methods": []string{"GET"}, "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	if res := do(t, vm, methodRequest("HEAD", "/admin/users", "")); res.Forwarded != nil {
		t.Errorf("HEAD /admin/users without a certificate reached the upstream; a GET-only route does not cover HEAD")
	}
}

// TestHeaderNamesSubjectOmitted: headerNames.subject "" omits
// x-mtls-subject, not the identity: x-user-sub still carries the subject DN
// (it used to be taken from the rendered subject header, and arrived empty
// for every client).
func TestHeaderNamesSubjectOmitted(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"headerNames": map[string]any{"subject": ""}})},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	res := do(t, vm, request("/", "", xfccHeader(p.chainOf(p.good))))
	if res.Forwarded == nil {
		t.Fatalf("denied: %s", res.LocalResponse.Body)
	}
	if v, ok := header(res.Forwarded.Headers, "x-user-sub"); !ok || v != "CN=acme-mobile,OU=partner-prod,O=ExampleCorp" {
		t.Errorf("x-user-sub = %q (present %v), want the subject DN", v, ok)
	}
}

// TestSourceAddressKeptWhole: a configuration with an XFCC policy that
// enforces a profile with sourceCIDRs beside a header-sourced policy. The
// engine reads source.address first (to decide which other policy's input
// headers to strip) and keeps it; the connection digest read on a cache miss
// used to rewrite the buffer it shared, so the sourceCIDRs check compared
// part of a digest and refused a client inside them.
func TestSourceAddressKeptWhole(t *testing.T) {
	p := thePKI(t)
	prof := map[string]any{"profileAuthorization": "enforce", "cacheSize": 0}
	cfg := map[string]any{
		"policies": []any{
			policyDoc("direct", prof),
			policyDoc("cdn", map[string]any{"certificateSource": "header", "certificateHeader": "x-ssl-client-cert", "trustedSourceCIDRs": []string{"10.9.0.0/16"}}),
		},
		"routes": []any{
			map[string]any{"pathPrefix": "/cdn/", "policy": "cdn"},
			map[string]any{"pathPrefix": "/", "policy": "direct"},
		},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"*"}, "sourceCIDRs": []string{"203.0.113.0/24"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	for i := 0; i < 4; i++ {
		res := do(t, vm, withPeer(request("/v1/orders", "203.0.113.7:51000", xfccHeader(p.chainOf(p.good))), p.good))
		if res.Forwarded == nil {
			pr := problem(t, res)
			src := ""
			if recs := decisionRecords(t, res.Logs); len(recs) > 0 {
				src, _ = recs[0]["source"].(string)
			}
			t.Fatalf("request %d from 203.0.113.7 (inside the profile's sourceCIDRs) refused: %v; decision log source %q", i, pr["reason"], src)
		}
	}
}

// TestClientIDTrimmed: a CN with a leading or trailing space is the same
// client to an upstream (HTTP parsers trim the whitespace around a header
// value) and so to the profile rules: x-client-id carries it trimmed.
func TestClientIDTrimmed(t *testing.T) {
	p := thePKI(t)
	leaf := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "admin ", OrganizationalUnit: []string{"partner-prod"}}}))
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"profileAuthorization": "enforce"})},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"*"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	res := do(t, vm, request("/", "", xfccHeader(p.chainOf(leaf))))
	if res.Forwarded == nil {
		t.Fatalf("refused: %s", res.LocalResponse.Body)
	}
	if v, _ := header(res.Forwarded.Headers, "x-client-id"); v != "admin" {
		t.Errorf("x-client-id %q, want \"admin\" as an upstream reads it", v)
	}
}

// TestUnverifiedXFCCNotForwarded: the listener accepts any client
// certificate (ACCEPT_UNTRUSTED), so Envoy's x-forwarded-client-cert carries
// whatever certificate, Subject= and URI= (Istio's default) a client minted.
// Envoy-aware upstreams read XFCC as proof of identity, so it goes upstream
// only with a certificate the filter verified from it: not on
// allowUnauthenticatedRequests routes, not on unrouted paths.
func TestUnverifiedXFCCNotForwarded(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("enforced", nil), policyDoc("staged", map[string]any{"allowUnauthenticatedRequests": true})},
		"routes": []any{
			map[string]any{"pathPrefix": "/api/", "policy": "staged"},
			map[string]any{"pathPrefix": "/admin/", "policy": "enforced"},
		},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	forged := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.P256, CommonName: "admin", URIs: []string{"spiffe://cluster.local/ns/prod/sa/admin"}}))
	x := `Hash=` + strings.Repeat("0", 64) + `;Cert="` + envoyPEMEscaper.Replace(string(forged.PEM())) + `";Subject="CN=admin";URI=spiffe://cluster.local/ns/prod/sa/admin`
	for _, path := range []string{"/api/orders", "/health"} {
		res := do(t, vm, withPeer(request(path, "", xfccHeader(x)), forged))
		if res.Forwarded == nil {
			t.Fatalf("%s refused", path)
		}
		st, _ := header(res.Forwarded.Headers, "x-mtls-verification-status")
		if v, ok := header(res.Forwarded.Headers, "x-forwarded-client-cert"); ok {
			t.Errorf("%s (status %q): the upstream receives the unverified client's XFCC %.80q...", path, st, v)
		}
	}
	// A verified certificate's XFCC goes through.
	res := do(t, vm, withPeer(request("/admin/x", "", xfccHeader(p.chainOf(p.good))), p.good))
	if res.Forwarded == nil {
		t.Fatalf("verified client refused: %s", res.LocalResponse.Body)
	}
	if _, ok := header(res.Forwarded.Headers, "x-forwarded-client-cert"); !ok {
		t.Error("a verified client's XFCC was removed")
	}
}

// TestManyOwnedHeaders: numerous distinct names in the filter's namespace
// neither trap the VM nor reach the upstream (Envoy caps a request at 100
// headers by default, but the cap is configurable).
func TestManyOwnedHeaders(t *testing.T) {
	p := thePKI(t)
	_, vm := newPlugin(t, map[string]any{"policies": []any{policyDoc("mtls", nil)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}, nil)
	hs := []abi.Header{xfccHeader(p.chainOf(p.good))}
	for i := 0; i < 2000; i++ {
		hs = append(hs, abi.Header{Key: "x-mtls-" + strconv.Itoa(i), Value: "x"})
	}
	res := do(t, vm, withPeer(request("/", "", hs...), p.good))
	if res.Forwarded == nil {
		t.Fatalf("refused: %s", res.LocalResponse.Body)
	}
	for _, h := range res.Forwarded.Headers {
		if strings.HasPrefix(h.Key, "x-mtls-") && h.Value == "x" {
			t.Fatalf("%s reached the upstream", h.Key)
		}
	}
}

// TestPathSpellings: every spelling of a protected path an upstream may
// resolve to it is protected, or refused (a NUL byte, an overlong UTF-8
// sequence, five layers of escapes); "*" and "" never reach the filter in
// Envoy (404 before the filter chain).
func TestPathSpellings(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", nil)},
		"routes":      []any{map[string]any{"pathPrefix": "/admin/", "policy": "mtls"}, map[string]any{"path": "/login", "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	passes := map[string]bool{"*": true, "": true}
	for _, path := range []string{
		"/admin/x", "//admin/x", "/./admin/x", "/%61dmin/x", "/public/../admin/x", "/public/%2e%2e/admin/x", "/public/%2E%2E/admin/x",
		"/admin/x?q=1", "/admin/x#f", "/admin", "/ADMIN/x", "/admin%2fx", "/admin%2Fx", "/admin;/x", "/admin;jsessionid=1/x",
		"/public/..;/admin/x", "/admin\\x", "/public\\..\\admin\\x", "/%2561dmin/x", "/admin%00/x", "/admin\x00/x", "/admin%20/x",
		"/admin%3Bx/y", "/adm%00in/x", "/%25%36%31dmin/x", "/%252561dmin/x", "/%2541DMIN/x", "/login%3B", "/login%00",
		"/login", "/login/", "/login?x", "/login;x", "/Login", "/login%2f", "/login/.", "/./login", "/login.", "*", "",
		"/%25252561dmin/x", "/%2525252561dmin/x", "/%C0%AE%C0%AE/admin/x", "/public/%C0%AE%C0%AE%C0%AFadmin/x", "/\xC0\xAE\xC0\xAE/admin/x",
		"/%25C0%25AE%25C0%25AE/admin/x", "/login%C0%AE",
	} {
		res := do(t, vm, request(path, ""))
		if got := res.Forwarded != nil; got != passes[path] {
			t.Errorf("%q: passes unauthenticated %v, want %v", path, got, passes[path])
		}
	}
}

// TestDecisionLogUTF8: the decision record is parsed by log pipelines;
// client bytes copied into it (not UTF-8, or clipped in the middle of a
// character) must keep it valid JSON (RFC 8259 requires UTF-8).
func TestDecisionLogUTF8(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"profileAuthorization": "enforce"})},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"*"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	for _, v := range []string{"\xff\xfe", strings.Repeat("a", 127) + "é"} {
		res := do(t, vm, request("/", "", xfccHeader(p.chainOf(p.good)), abi.Header{Key: "x-profile-id", Value: v}))
		for _, l := range res.Logs {
			if strings.HasPrefix(l.Message, `{"msg":"mtls decision"`) && !utf8.ValidString(l.Message) {
				t.Errorf("decision record for x-profile-id %q is not valid UTF-8: ...%q", v, l.Message[strings.Index(l.Message, `"requestedProfile"`):][:40])
			}
		}
	}
}

// TestRateLimitKeysDistinct: profile and client IDs may contain '/', and
// client "b/c" of profile "a" must not spend the budget of client "c" of
// profile "a/b".
func TestRateLimitKeysDistinct(t *testing.T) {
	p := thePKI(t)
	one := map[string]any{"requests": 1, "per": "minute"}
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"profileAuthorization": "enforce"})},
		"profiles": []any{map[string]any{"id": "a", "clients": []string{"*"}, "rateLimit": one},
			map[string]any{"id": "a/b", "clients": []string{"*"}, "rateLimit": one}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	x := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "c", OrganizationalUnit: []string{"a/b"}}}))
	y := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "b/c", OrganizationalUnit: []string{"a"}}}))
	if res := do(t, vm, request("/", "", xfccHeader(p.chainOf(x)))); res.Forwarded == nil {
		t.Fatalf("first client refused: %s", res.LocalResponse.Body)
	}
	if res := do(t, vm, request("/", "", xfccHeader(p.chainOf(y)))); res.Forwarded == nil {
		t.Errorf("client \"b/c\" of profile \"a\", first request, refused %v: it spent the budget of client \"c\" of profile \"a/b\"", problem(t, res)["reason"])
	}
}

// TestPathParamsAndBackslash: spellings that Java servlet containers
// (Tomcat, Jetty, Spring: ";" path parameters, "..;"), IIS/ASP.NET
// (backslash and %5C as slash) and nginx, WSGI servers and gorilla/mux (%2F
// decoded into a separator) resolve to /admin/x are protected like /admin/x.
func TestPathParamsAndBackslash(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", nil)},
		"routes":      []any{map[string]any{"pathPrefix": "/admin/", "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	for _, path := range []string{"/admin;/x", "/admin;jsessionid=1/x", "/public/..;/admin/x", "/admin\\x", "/public\\..\\admin\\x",
		"/admin%2Fusers", "/admin%2fusers", "/public/..%2Fadmin/users", "/admin%5Cusers", "/public%5C..%5Cadmin%5Cusers"} {
		if res := do(t, vm, request(path, "")); res.Forwarded != nil {
			t.Errorf("%q (an upstream resolves it to /admin/x) passes unauthenticated", path)
		}
	}
}
