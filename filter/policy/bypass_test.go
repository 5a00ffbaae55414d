package policy

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestRoutesMatchTheNormalizedPath: a protected prefix cannot be walked
// around with spellings an upstream resolves to the same path, nor left
// with dot segments an upstream may not resolve.
func TestRoutesMatchTheNormalizedPath(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `],
	"routes":[{"pathPrefix":"/admin/","policy":"strict"},{"path":"/metrics","policy":"strict"}],"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg)
	for path, want := range map[string]string{
		"/admin/x": DecisionDeny, "//admin/x": DecisionDeny, "/%61dmin/x": DecisionDeny, "/%2561dmin/x": DecisionDeny,
		"/./admin/x": DecisionDeny, "/public/../admin/x": DecisionDeny, "/%2E%2E/admin/x": DecisionDeny, "/admin//x?q=1": DecisionDeny,
		"/admin/": DecisionDeny, "/admin/.": DecisionDeny, "/admin": DecisionDeny, "/administrator": DecisionPassthrough, // /admin/ covers /admin
		"/metrics": DecisionDeny, "//metrics": DecisionDeny, "/metrics/.": DecisionDeny, "/metrics/": DecisionDeny, "/metrics//": DecisionDeny,
		"/metrics/x": DecisionPassthrough, "/public/./x": DecisionPassthrough,
		"/admin%2Fx": DecisionDeny, "/admin%5Cx": DecisionDeny, "/public/..%2Fadmin/x": DecisionDeny, // nginx and WSGI decode %2F into a separator
		// Under the prefix as written, outside it once resolved: an upstream
		// that does not resolve dot segments (or a prefix_rewrite) serves
		// the protected tree, so the raw reading protects too.
		"/admin/../public": DecisionDeny, "/admin/%2e%2e/public": DecisionDeny, "/admin/users/%2E%2E/%2E%2E/x": DecisionDeny, "/admin/..": DecisionDeny,
		// A case-insensitive upstream (ASP.NET Core, IIS) serves these from
		// the protected tree.
		"/ADMIN/x": DecisionDeny, "/Admin/x": DecisionDeny, "//aDmIn/x": DecisionDeny, "/%41dmin/x": DecisionDeny, "/METRICS": DecisionDeny,
		"/ADMIN/../public": DecisionDeny, "/ADMINISTRATOR": DecisionPassthrough, "/Public/x": DecisionPassthrough,
		// Path parameters end a segment for Tomcat, Jetty and Spring; a
		// backslash separates for IIS and ASP.NET.
		"/admin;/x": DecisionDeny, "/admin;jsessionid=1/x": DecisionDeny, "/public/..;/admin/x": DecisionDeny,
		`/admin\x`: DecisionDeny, `/public\..\admin\x`: DecisionDeny, `/admin\`: DecisionDeny, "/metrics;x": DecisionDeny,
		"/public;a=b/x": DecisionPassthrough,
		// Escapes decoded before ";params" are cut, escapes decoded again
		// (up to maxDecodes rounds), and a percent that is only a percent.
		"/admin%3Bfoo/x": DecisionDeny, "/admin%3b/x": DecisionDeny, "/public/..%3B/admin/x": DecisionDeny, "/metrics%3Bx": DecisionDeny,
		"/%25%36%31dmin/x": DecisionDeny, "/public/%252e%252e/admin/x": DecisionDeny, "/admin%252Fx": DecisionDeny, "/%252561dmin/x": DecisionDeny,
		"/public/100%25": DecisionPassthrough, "/public/50%25off": DecisionPassthrough, "/public/%25%25": DecisionPassthrough, "/%": DecisionPassthrough,
	} {
		r := e.Evaluate(&Request{Method: "GET", Path: path, Now: time.Now()})
		if r.Decision != want {
			t.Errorf("%s: %s, want %s", path, r.Decision, want)
		}
	}
	for in, want := range map[string]string{"/": "/", "/a/b": "/a/b", "/a//b/": "/a/b/", "/a/./b/../c": "/a/c", "/../../a": "/a", "/a/%7Euser": "/a/~user", "/a%2fb": "/a/b", "/a%5cb": "/a/b", "/%zz": "/%zz", "/%4": "/%4",
		"/a;b=c/d": "/a/d", "/a/..;/b": "/b", `/a\b\`: "/a/b/", "/a/%2e": "/a/"} {
		if got := routePath(in); got != want {
			t.Errorf("routePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOtherPoliciesInputsStripped: on a route protected by one policy, the
// certificate header another policy reads is removed when this peer may not
// send it, as on an unprotected route; the upstream may read it.
func TestOtherPoliciesInputsStripped(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "victim"}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("edge", `{"allowUnauthenticatedRequests":true}`) + `,` +
		policyJSON("lb", `{"certificateSource":"header","certificateHeader":"x-amzn-mtls-clientcert","trustedSourceCIDRs":["192.0.2.0/24"]}`) + `],
	"routes":[{"pathPrefix":"/edge","policy":"edge"},{"pathPrefix":"/lb","policy":"lb"}],
	"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg)
	forged := envoyURLEncode(string(ch.Leaf.PEM()))
	for _, c := range []struct {
		path, source string
		removed      bool
	}{
		{"/public", "198.51.100.7:1", true}, {"/edge/x", "198.51.100.7:1", true}, {"/lb/x", "198.51.100.7:1", true},
		{"/edge/x", "192.0.2.9:1", false}, // the load balancer: its header stays for the upstream
	} {
		r := e.Evaluate(&Request{Method: "GET", Path: c.path, SourceAddress: c.source, Now: time.Now(),
			Headers: []Header{{":path", c.path}, {"x-amzn-mtls-clientcert", forged}}})
		if got := slices.Contains(r.RemoveHeaders, "x-amzn-mtls-clientcert"); got != c.removed {
			t.Errorf("%s from %s: removed %v, want %v (remove %v)", c.path, c.source, got, c.removed, r.RemoveHeaders)
		}
	}
}

// TestUnderscoreSpellingsStripped: upstreams that map header names to CGI
// variables read x_user_sub as x-user-sub, so a client's underscore spelling
// of an identity header is removed like the dashed one.
func TestUnderscoreSpellingsStripped(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	e := newEngine(t, `{"allowUnauthenticatedRequests":true}`, []*testpki.Cert{ch.Root})
	r := e.Evaluate(xfccReq("", time.Now(), Header{"x_user_sub", "CN=admin"}, Header{"x_mtls_verification_status", "SUCCESS"},
		Header{"x-mtls_subject", "CN=admin"}, Header{"client_cert", ":AA==:"}, Header{"x-user-sub", "CN=admin"}, Header{"x_user_agent", "kept"}))
	for _, h := range []string{"x_user_sub", "x_mtls_verification_status", "x-mtls_subject", "client_cert", "x-user-sub"} {
		if !slices.Contains(r.RemoveHeaders, h) {
			t.Errorf("%s not removed (remove %v)", h, r.RemoveHeaders)
		}
	}
	if slices.Contains(r.RemoveHeaders, "x_user_agent") {
		t.Errorf("an unrelated header was removed: %v", r.RemoveHeaders)
	}
}

// TestInputHeaderUnderscoreSpelling: the underscore spelling of a
// certificate input header is always the client's (Envoy and trusted
// proxies write the dashed one), so it is removed even where the dashed one
// is read.
func TestInputHeaderUnderscoreSpelling(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	e := newEngine(t, "", []*testpki.Cert{ch.Root})
	r := e.Evaluate(xfccReq(chainXFCC(ch), time.Now(), Header{"x_forwarded_client_cert", "Cert=forged"}))
	expect(t, r, DecisionAllow, "")
	if !slices.Contains(r.RemoveHeaders, "x_forwarded_client_cert") || slices.Contains(r.RemoveHeaders, "x-forwarded-client-cert") {
		t.Fatalf("remove %v", r.RemoveHeaders)
	}
	// A configured name with underscores: its dashed spelling is the
	// client's, and goes.
	e = newEngine(t, `{"certificateSource":"header","certificateHeader":"ssl_client_cert","trustedSourceCIDRs":["192.0.2.0/24"]}`, []*testpki.Cert{ch.Root})
	r = e.Evaluate(&Request{Method: "GET", Path: "/", SourceAddress: "198.51.100.7:1", Now: time.Now(),
		Headers: []Header{{":path", "/"}, {"ssl_client_cert", "forged"}, {"ssl-client-cert", "forged"}}})
	if !slices.Contains(r.RemoveHeaders, "ssl_client_cert") || !slices.Contains(r.RemoveHeaders, "ssl-client-cert") {
		t.Fatalf("configured underscore name: remove %v", r.RemoveHeaders)
	}
}

// TestAmbiguousPathRefused: with a catch-all route beside a protected one,
// both requiring certificates (from different issuers), a path that reaches
// the catch-all as written and the protected route once resolved (or the
// other way round) is refused: which reading the upstream acts on is
// unknown, and either way one of the two policies is skipped.
func TestAmbiguousPathRefused(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("other", `{"certIssuerDN":"CN=Other CA"}`) + `],
	"routes":[{"pathPrefix":"/admin/","policy":"strict"},{"pathPrefix":"/","policy":"other"}],"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg)
	for path, want := range map[string]string{
		"/admin/x": DecisionDeny, "/public/x": DecisionDeny,
		"//admin/x": "400", "/%61dmin/x": "400", "/public/../admin/x": "400", "/./admin/x": "400", "/admin/../public": "400",
		"/public//x": DecisionDeny, "/admin//x": DecisionDeny, // both readings reach the same policy
		// The catch-all as written, the protected route with case folded.
		"/ADMIN/x": "400", "/Admin//x": "400", "/PUBLIC/X": DecisionDeny,
		// ...or with every escape decoded, once or twice; a NUL anywhere.
		"/admin%3Bfoo/x": "400", "/%2561dmin/x": "400", "/%C5%BFdmin/x": DecisionDeny, "/public/a%00": "400",
	} {
		r := e.Evaluate(&Request{Method: "GET", Path: path, Now: time.Now(), Headers: []Header{{":path", path}, {"x-user-sub", "forged"}}})
		got := r.Decision
		if r.Status == 400 {
			got = "400"
			if r.Reason != ReasonAmbiguousPath || r.Action != Respond || !strings.Contains(string(r.Body), "ambiguous-path") || !slices.Contains(r.RemoveHeaders, "x-user-sub") {
				t.Errorf("%s: 400 without its reason, body or the strip: %+v", path, r)
			}
		}
		if got != want {
			t.Errorf("%s: %s (%s), want %s", path, got, r.Reason, want)
		}
	}
}

// TestStricterReadingWins: when the readings reach a policy that requires a
// certificate and one that lets unauthenticated requests through, the
// stricter applies instead of a 400: a request that passes it passes both.
func TestStricterReadingWins(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],
	"routes":[{"pathPrefix":"/admin/","policy":"strict"},{"path":"/login","policy":"open"},{"pathPrefix":"/api/","methods":["GET"],"policy":"open"},{"pathPrefix":"/","policy":"strict"}],
	"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg)
	for _, c := range []struct {
		method, path, policy string
		hdr                  []Header
	}{
		{"GET", "/login", "open", nil},
		{"GET", "/login;jsessionid=AB12", "strict", nil}, // a servlet's session URL under the strict catch-all
		{"GET", "//admin/x", "strict", nil},
		{"GET", "/api/search", "open", nil},
		{"POST", "/api/search", "strict", []Header{{"x-http-method-override", "GET"}}}, // Google API clients' long queries
	} {
		r := e.Evaluate(&Request{Method: c.method, Path: c.path, Headers: c.hdr, Now: time.Now()})
		if r.Reason == ReasonAmbiguousPath || r.Policy != c.policy {
			t.Errorf("%s %s: policy %q reason %q, want policy %q", c.method, c.path, r.Policy, r.Reason, c.policy)
		}
	}
}

// TestRouteCaseFolding: methods match routes without regard to case, and a
// route written with capitals is reached by any spelling; a path it reaches
// only with case folded, beside a route that takes it as written, is
// ambiguous.
func TestRouteCaseFolding(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],
	"routes":[{"pathPrefix":"/Reports/","methods":["POST"],"policy":"strict"},{"path":"/api/Orders","policy":"strict"},{"pathPrefix":"/api/","policy":"open"},{"path":"/export","methods":["GET"],"policy":"strict"}],
	"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg)
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/Reports/q", DecisionDeny}, {"post", "/Reports/q", DecisionDeny}, {"Post", "/reports/q", DecisionDeny},
		{"GET", "/reports/q", DecisionPassthrough}, {"get", "/Reports/q", DecisionPassthrough},
		{"HEAD", "/export", DecisionDeny}, {"head", "/export", DecisionDeny}, {"DELETE", "/export", DecisionPassthrough}, // HEAD goes with GET
		{"head", "/Reports/q", DecisionPassthrough},                                // ...and only with GET
		{"GET", "/api/Orders", DecisionDeny}, {"GET", "/api/orders", DecisionDeny}, // the stricter of the two readings {"GET", "/API/ORDERS", DecisionDeny},
		{"GET", "/api/customers", DecisionAllowUnauthenticated}, {"GET", "/Api/customers", DecisionAllowUnauthenticated},
	} {
		r := e.Evaluate(&Request{Method: c.method, Path: c.path, Now: time.Now()})
		got := r.Decision
		if r.Status == 400 && r.Reason == ReasonAmbiguousPath {
			got = "400"
		}
		if got != c.want {
			t.Errorf("%s %s: %s (%s), want %s", c.method, c.path, got, r.Reason, c.want)
		}
	}
}

// TestDecodedReadings: spellings that reach a protected route only once
// every escape is decoded (NUL, ";", non-ASCII letters that fold to ASCII,
// a second round of decoding), beside an open catch-all: the protected
// route applies, or the path is refused; legitimate escapes under the open
// routes are untouched.
func TestDecodedReadings(t *testing.T) {
	e := layoutEngine(t, `[{"pathPrefix":"/admin/","policy":"strict"},{"pathPrefix":"/secret/","policy":"strict"},{"pathPrefix":"/files/","policy":"open"},{"pathPrefix":"/","policy":"open"}]`)
	for _, c := range []struct{ path, want string }{
		// NUL: cut there by some upstreams, dropped by others; refused.
		{"/admin%00/x", "400"}, {"/adm%00in/x", "400"}, {"/files/a%00b", "400"}, {"/%2500", "400"}, {"/admin\x00/x", "400"}, {"/x?y=%00", "open"},
		// ";" decoded before path parameters are cut.
		{"/admin%3Bfoo/x", "strict"}, {"/admin%3bfoo/x", "strict"}, {"/public/..%3B/admin/x", "strict"}, {"/files/a%3Bb", "open"},
		// Non-ASCII letters that fold to ASCII, raw and percent-encoded:
		// U+017F LATIN SMALL LETTER LONG S, U+212A KELVIN SIGN.
		{"/ſecret/x", "strict"}, {"/%C5%BFecret/x", "strict"}, {"/%c5%bfecret/", "strict"}, {"/%C5%BFECRET", "strict"},
		{"/%E2%84%AAeys/x", "open"}, {"/files/caf%C3%A9", "open"}, {"/%FF%FE/x", "open"}, {"/%C5/x", "open"},
		// Decoded again while an escape is left, up to four rounds; one
		// left after the fourth is refused.
		{"/%2561dmin/x", "strict"}, {"/%25%36%31dmin/x", "strict"}, {"/public/%252e%252e/admin/x", "strict"}, {"/%2573ecret/x", "strict"},
		{"/%25C5%25BFecret/x", "strict"}, {"/admin%253Bx/y", "strict"}, {"/%252561dmin/x", "strict"}, {"/%25252561dmin/x", "strict"},
		{"/public/%25252e%25252e/admin/x", "strict"}, {"/%2525252561dmin/x", "400"}, {"/files/%2525252525", "400"},
		// The third round is a reading of its own, not only the last: an
		// upstream behind three decoding layers cuts ";params" from
		// /admin;%2F..%2F..%2Fpublic and serves /admin, while the fourth
		// round, /admin;/../../public, resolves to /public.
		{"/admin%25253B%2525252F..%2525252F..%2525252Fpublic", "strict"},
		// Overlong UTF-8 ('.', '/', '\\' spelt in two or more bytes), raw,
		// escaped or escaped twice: refused wherever they lead.
		{"/%C0%AE%C0%AE/admin/x", "400"}, {"/public/%C0%AE%C0%AE%C0%AFadmin/x", "400"}, {"/admin%C0%AFx", "400"}, {"/files/%c1%9c", "400"},
		{"/%E0%80%AE%E0%80%AE/admin/x", "400"}, {"/%F0%80%80%AE/x", "400"}, {"/%25C0%25AE%25C0%25AE/admin/x", "400"},
		{"/\xC0\xAE\xC0\xAE/admin/x", "400"}, {"/files/\xC0\xAE", "400"},
		// Valid UTF-8 and Latin-1 that share those lead bytes are not
		// overlong.
		{"/files/%E0%A4%85", "open"}, {"/files/%F0%9F%98%80", "open"}, {"/files/%C0%20propos", "open"}, {"/files/caf%E9", "open"}, {"/files/%C0", "open"},
		// Decoded, with dot segments and ";" left as they are.
		{"/%61dmin/..;/x", "strict"}, {"/%61dmin/%2e%2e/x", "strict"}, {"/%2561dmin/..;/x", "strict"}, {"/%61dmin%2f..%2fx", "strict"},
		{"/files/%2e%2e/x", "open"},
		// Decoded, then cut at a decoded '?' or '#'.
		{"/admin%3F/../public", "strict"}, {"/admin%23/../x", "strict"}, {"/admin%253F/../x", "strict"}, {"/files/what%3F", "open"},
		// A literal percent, escaped once or more.
		{"/files/100%25", "open"}, {"/files/50%25off", "open"}, {"/files/100%2541", "open"}, {"/files/%25", "open"}, {"/files/%", "open"},
		{"/files/100%252541", "open"}, {"/files/%25252525", "open"},
	} {
		r := e.Evaluate(&Request{Method: "GET", Path: c.path, Now: time.Now(), Headers: []Header{{":path", c.path}, {"x-user-sub", "forged"}}})
		got := r.Policy
		if r.Status == 400 {
			got = "400"
			if r.Reason != ReasonAmbiguousPath || !strings.Contains(string(r.Body), "ambiguous-path") || !slices.Contains(r.RemoveHeaders, "x-user-sub") {
				t.Errorf("%q: 400 without its reason, body or the strip: %+v", c.path, r)
			}
		}
		if got != c.want {
			t.Errorf("%q: %s (%s %s), want %s", c.path, got, r.Decision, r.Reason, c.want)
		}
	}
	// Without routes the path decides nothing, and a NUL in it is the
	// upstream's business.
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	r := newEngine(t, `{"allowUnauthenticatedRequests":true}`, []*testpki.Cert{ch.Root}).Evaluate(&Request{Method: "GET", Path: "/a%00b", Now: time.Now()})
	if r.Decision != DecisionAllowUnauthenticated {
		t.Errorf("no routes, NUL: %s (%s)", r.Decision, r.Reason)
	}
}

// TestResolvePath: the readings beside the raw one, and their bound.
func TestResolvePath(t *testing.T) {
	for in, want := range map[string][]string{
		"/a%3Bb/c":     {"/a;b/c", "/a/c"},
		"/%2561":       {"/%61", "/a"},
		"/%25":         {"/%"},
		"/%C5%BF":      {"/ſ"},
		"/%252525":     {"/%2525", "/%25", "/%"},
		"/%252561":     {"/%2561", "/%61", "/a"},
		"/%25252561":   {"/%252561", "/%2561", "/%61", "/a"},
		"/%61%3B":      {"/a%3B", "/a;", "/a"},
		"/a%2fb":       {"/a/b"},
		"/%2e%2E/a%3B": {"/a%3B", "/../a;", "/a"},
	} {
		rs, why := resolvePath(in)
		if why != refuseNone || !slices.Equal(rs.list(), want) {
			t.Errorf("resolvePath(%q) = %q (refused %d), want %q", in, rs.list(), why, want)
		}
	}
	for want, ins := range map[refusal][]string{
		refuseNUL: {"/%00", "/a\x00", "/%2500", "/%25%30%30", "/%2561%00", "/%%00", "/%252500", "/%25252500"},
		refuseOverlong: {"/%C0%AE", "/%c0%af", "/%C1%9C", "/%E0%80%AE", "/%E0%9F%BF", "/%F0%80%80%AE", "/%F0%8F%BF%BF", "/%25C0%25AE",
			"/\xC0\xAF", "/\xC0%AF", "/%252525C0%252525AE"},
		refuseDeep: {"/%2525252561", "/%" + strings.Repeat("25", 5), "/a/%252525252F"},
		refuseNone: {"/%2", "/%", "/%0", "/%C0", "/%C0A", "/%C2%A0", "/%E0%A0%80", "/%F0%90%80%80", "/%C0%2520", "/%" + strings.Repeat("25", 4)},
	} {
		for _, in := range ins {
			if _, why := resolvePath(in); why != want {
				t.Errorf("resolvePath(%q): refused %d, want %d", in, why, want)
			}
		}
	}
	// Long paths of escapes: linear work, readings no longer than the path.
	for _, unit := range []string{"%25", "%2525", "%3B", "%C5%BF", "%2e%2e/", "/", "%", "%%2", "%252e%252e%252F", "%25252525", "%C0", "%E0%A4%85"} {
		in := "/" + strings.Repeat(unit, 1<<20/len(unit))
		rs, _ := resolvePath(in)
		for _, s := range rs.list() {
			if len(s) > len(in)+1 {
				t.Errorf("%q×%d: a reading of %d bytes", unit, 1<<20/len(unit), len(s))
			}
		}
	}
	// One percent before a long run of "25" loses one layer a round: a
	// fixed point would take a pass per layer, quadratic in the path. Four
	// rounds, then refused.
	in := "/%" + strings.Repeat("25", 1<<19)
	if _, why := resolvePath(in); why != refuseDeep {
		t.Errorf("%%25…×%d: refused %d, want %d", 1<<19, why, refuseDeep)
	}
}
