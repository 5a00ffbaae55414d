package policy

import (
	"slices"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func layoutEngine(t *testing.T, routes string) *Engine {
	t.Helper()
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],
	"routes":` + routes + `,"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(cfg)
}

// TestCommonLayouts: legitimate requests in common route layouts get the
// policy an operator expects and no 400 AMBIGUOUS_PATH; where a reading
// reaches a stricter route (a servlet's ;jsessionid under a strict
// catch-all), the stricter applies.
func TestCommonLayouts(t *testing.T) {
	type c struct {
		routes, method, path, policy string
		hdr                          []Header
	}
	for _, k := range []c{
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/api/","policy":"open"}]`, "GET", "/api/users/42", "open", nil},
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/api/","policy":"open"}]`, "GET", "/api/Users/42", "open", nil},
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/api/","policy":"open"}]`, "GET", "/api/projects/group%2Fproj/files", "open", nil},
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/api/","policy":"open"}]`, "GET", "/api/users;jsessionid=AB12", "open", nil},
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/api/","policy":"open"}]`, "GET", "/api/admin/users", "strict", nil},
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/","policy":"open"}]`, "GET", "/", "open", nil},
		{`[{"pathPrefix":"/api/admin/","policy":"strict"},{"pathPrefix":"/","policy":"open"}]`, "GET", "/Index.html", "open", nil},
		// Exact "/" open, everything else strict.
		{`[{"path":"/","policy":"open"},{"pathPrefix":"/","policy":"strict"}]`, "GET", "/", "open", nil},
		{`[{"path":"/","policy":"open"},{"pathPrefix":"/","policy":"strict"}]`, "GET", "/?x=1", "open", nil},
		{`[{"path":"/","policy":"open"},{"pathPrefix":"/","policy":"strict"}]`, "GET", "/;jsessionid=AB12", "strict", nil},
		// Java servlet URL rewriting on an exact public route.
		{`[{"path":"/login","policy":"open"},{"pathPrefix":"/","policy":"strict"}]`, "GET", "/login;jsessionid=AB12", "strict", nil},
		{`[{"path":"/health","policy":"open"},{"pathPrefix":"/","policy":"strict"}]`, "GET", "/health", "open", nil},
		// Google API clients: POST + X-HTTP-Method-Override: GET for long queries.
		{`[{"pathPrefix":"/api/","methods":["GET"],"policy":"open"},{"pathPrefix":"/api/","policy":"strict"}]`, "POST", "/api/search", "strict",
			[]Header{{"x-http-method-override", "GET"}}},
	} {
		e := layoutEngine(t, k.routes)
		r := e.Evaluate(&Request{Method: k.method, Path: k.path, Headers: k.hdr, Now: time.Now()})
		if r.Reason == ReasonAmbiguousPath || r.Policy != k.policy {
			t.Errorf("%s %s %s: policy %q reason %q, want policy %q", k.routes, k.method, k.path, r.Policy, r.Reason, k.policy)
		}
	}
}

// TestMoreSpellings: more spellings of a protected prefix (case, the long s
// .NET folds to s, IIS's trailing dots and spaces) and every method-override
// reading stay protected.
func TestMoreSpellings(t *testing.T) {
	e := layoutEngine(t, `[{"pathPrefix":"/secret/","policy":"strict"}]`)
	for _, p := range []string{"/secret/x", "/SECRET/x", "/\u017fecret/x", "/secret./x", "/secret%20/x", "/secret../x"} {
		r := e.Evaluate(&Request{Method: "GET", Path: p, Now: time.Now()})
		if r.Decision == DecisionPassthrough {
			t.Errorf("%q: passthrough", p)
		}
	}
	// Every override is a reading: an upstream reading X-HTTP-Method
	// (OData, ASP.NET Web API) or a later line sees DELETE.
	m := layoutEngine(t, `[{"path":"/items","methods":["DELETE"],"policy":"strict"}]`)
	for _, h := range [][]Header{
		{{"x-http-method", "DELETE"}},
		{{"x-http-method-override", "GET"}, {"x-http-method", "DELETE"}},
		{{"x-http-method-override", "POST"}, {"x-http-method-override", "DELETE"}},
	} {
		r := m.Evaluate(&Request{Method: "POST", Path: "/items", Headers: h, Now: time.Now()})
		if r.Decision == DecisionPassthrough {
			t.Errorf("override %v: passthrough", h)
		}
	}
	// Spellings a query parser reads as _method=DELETE: escaped key or
	// value, PHP's "." for "_" and dropped leading spaces, ";" separators.
	for _, q := range []string{"_method=DELETE", "%5Fmethod=DELETE", "_%6dethod=DELETE", ".method=DELETE",
		"+_method=DELETE", "a=1;_method=DELETE", "_method=DEL%45TE", "_method=+DELETE"} {
		r := m.Evaluate(&Request{Method: "POST", Path: "/items?" + q, Now: time.Now()})
		if r.Decision == DecisionPassthrough {
			t.Errorf("?%s: passthrough", q)
		}
	}
	for _, q := range []string{"method=DELETE", "_methods=DELETE", "x_method=DELETE", "_method%=DELETE"} {
		r := m.Evaluate(&Request{Method: "POST", Path: "/items?" + q, Now: time.Now()})
		if r.Decision != DecisionPassthrough {
			t.Errorf("?%s: %s, want passthrough", q, r.Decision)
		}
	}
}

// XFCC with several elements: removed once, set once, miss and hit alike.
func TestXFCCReplacedOnce(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "client"}))
	px := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "proxy"}))
	e := newEngine(t, "", []*testpki.Cert{ch.Root})
	el := chainXFCC(ch)
	v := chainXFCC(px) + "," + el
	var res Result
	for i := 0; i < 3; i++ {
		req := xfccReq(v, time.Now())
		req.PeerCertificateDigest = digestOf(ch.Leaf)
		e.EvaluateInto(req, &res)
		if res.Decision != DecisionAllow {
			t.Fatalf("run %d: %s %s %s", i, res.Decision, res.Reason, res.Detail())
		}
		n := 0
		for _, h := range res.RemoveHeaders {
			if h == xfccHeader {
				n++
			}
		}
		s := 0
		for _, h := range res.SetHeaders {
			if h.Key == xfccHeader {
				s++
				if h.Value != el {
					t.Errorf("run %d: set %q", i, h.Value)
				}
			}
		}
		if n != 1 || s != 1 {
			t.Errorf("run %d (hit=%v): removed %d set %d, remove=%v", i, res.CacheHit, n, s, res.RemoveHeaders)
		}
	}
	// Two XFCC lines (repeated header) rather than one comma list.
	for i := 0; i < 2; i++ {
		req := xfccReq(chainXFCC(px), time.Now(), Header{xfccHeader, el})
		req.PeerCertificateDigest = digestOf(ch.Leaf)
		e.EvaluateInto(req, &res)
		n := 0
		for _, h := range res.RemoveHeaders {
			if h == xfccHeader {
				n++
			}
		}
		if res.Decision != DecisionAllow || n != 1 {
			t.Errorf("two lines run %d: %s %s removed %d", i, res.Decision, res.Reason, n)
		}
	}
	// Header-sourced policy: input removed unless verified.
	lb := newEngine(t, `{"certificateSource":"header","certificateHeader":"x-client-cert","trustedSourceCIDRs":["192.0.2.0/24"]}`, []*testpki.Cert{ch.Root})
	for _, k := range []struct {
		src, val string
		removed  bool
	}{{"198.51.100.1:1", envoyURLEncode(string(ch.Leaf.PEM())), true}, {"192.0.2.1:1", "garbage", true}, {"192.0.2.1:1", envoyURLEncode(string(px.Leaf.PEM())), true}} {
		for i := 0; i < 2; i++ {
			lb.EvaluateInto(&Request{Method: "GET", Path: "/", SourceAddress: k.src, Now: time.Now(), Headers: []Header{{"x-client-cert", k.val}}}, &res)
			if got := slices.Contains(res.RemoveHeaders, "x-client-cert"); res.Action == Continue && got != k.removed {
				t.Errorf("%s %.10s run %d: %s removed=%v", k.src, k.val, i, res.Decision, got)
			}
		}
	}
}
