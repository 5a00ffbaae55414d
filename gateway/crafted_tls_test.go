package gateway_test

// Requests and TLS sessions a client shapes to make the filter decide on one
// thing and the upstream act on another, through `mtlsgate dev` with real
// TLS clients.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// adminGateway protects /admin/ only, with an inline bundle, in front of
// the upstream at upURL.
func adminGateway(t *testing.T, upURL string) (*gateway.Gateway, serverPKI, *testpki.Cert) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "crafted TLS root"}))
	cfg := map[string]any{
		"policies": []any{map[string]any{"name": "mtls", "policyType": "mtls-auth-inbound",
			"handler": map[string]any{"export": "MTLSAuthInboundPolicy", "module": "$import(@zuplo/runtime)", "options": map[string]any{}}}},
		"routes":      []any{map[string]any{"pathPrefix": "/admin/", "policy": "mtls"}},
		"trustBundle": map[string]any{"caCertificates": []string{string(root.PEM())}},
	}
	pc, _ := json.Marshal(cfg)
	sp := newServerPKI(t)
	g, _ := startGateway(t, gateway.Config{Wasm: filterWasm(t), PluginConfig: pc, Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, upURL)})
	return g, sp, root
}

// rawTarget sends GET with target as written (net/http writes an opaque URL
// verbatim, over HTTP/1.1 and as :path over HTTP/2).
func rawTarget(t *testing.T, g *gateway.Gateway, sp serverPKI, target string, h2 bool) reply {
	t.Helper()
	req, err := http.NewRequest("GET", gwURL(g, "/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target
	resp, err := client(sp, nil, h2).Do(req)
	if err != nil {
		t.Fatalf("%q h2=%v: %v", target, h2, err)
	}
	return readReply(t, resp)
}

// TestFragmentInPathRefused: Envoy's connection manager answers 400 to a
// path with a '#' before any filter runs (http_reject_path_with_fragment).
// The dev gateway handed such a path to the filter whole and then sent the
// upstream the part before '#': "/adm#in/x" was decided as "/adm#in/x" and
// served as "/adm".
func TestFragmentInPathRefused(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := adminGateway(t, up.srv.URL)
	for _, h2 := range []bool{false, true} {
		for _, target := range []string{"/public#x", "/adm#in/x", "/admin/#", "/x?q=1#/admin/"} {
			before := up.count()
			r := rawTarget(t, g, sp, target, h2)
			if r.status != http.StatusBadRequest || len(r.body) != 0 {
				t.Errorf("%q h2=%v: %d %.80q, want Envoy's 400 with no body", target, h2, r.status, r.body)
			}
			if up.count() != before {
				t.Errorf("%q h2=%v reached the upstream", target, h2)
			}
		}
	}
}

// TestUpstreamGetsThePathTheFilterSaw: the upstream's request target is the
// filter's :path as it was, as Envoy's router sends it. Parsed into a URL
// and written back, a path with a byte Go escapes ('"', non-ASCII) had every
// escape decoded and re-encoded, so "/a%2Fb" reached the upstream as
// "/a/b".
func TestUpstreamGetsThePathTheFilterSaw(t *testing.T) {
	u, got := rawUpstream(t)
	g, sp, _ := adminGateway(t, u)
	for _, c := range []struct {
		target, want string
		h2           bool
	}{
		{`/a%2Fb"c`, `/a%2Fb%22c`, false},
		{`/a%2Fb"c`, `/a%2Fb%22c`, true},
		{"/caf\xc3\xa9%2Fx?k=%2F", "/caf%C3%A9%2Fx?k=%2F", false},
		{"/a b%2F", "/a%20b%2F", true},
		{`//x"y`, `//x%22y`, false},
		{`/p%2e%2E/q`, `/p%2e%2E/q`, false},
	} {
		var status string
		if strings.HasPrefix(c.target, "//") {
			// net/http would write an opaque "//x" as a URL with a host.
			status, _ = rawHTTP1(t, g, sp, "GET "+c.target+" HTTP/1.1")
		} else {
			status = fmt.Sprint(rawTarget(t, g, sp, c.target, c.h2).status)
		}
		var line string
		select {
		case l := <-got:
			line = l[0]
		case <-time.After(5 * time.Second):
			t.Errorf("%q h2=%v: %s, upstream saw nothing", c.target, c.h2, status)
			continue
		}
		if want := "GET " + c.want + " HTTP/1.1"; line != want {
			t.Errorf("%q h2=%v: upstream request line %q, want %q", c.target, c.h2, line, want)
		}
	}
}

// TestExpectContinueAnsweredByGateway: Envoy answers "Expect: 100-continue"
// itself and removes the header before the filter chain (proxy_100_continue
// is off by default); neither the filter nor the upstream sees it.
func TestExpectContinueAnsweredByGateway(t *testing.T) {
	u, got := rawUpstream(t)
	g, sp, _ := adminGateway(t, u)
	c, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{RootCAs: sp.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue first: %v %v", resp, err)
	}
	fmt.Fprint(c, "hello")
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the body: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	for _, l := range <-got {
		if strings.HasPrefix(strings.ToLower(l), "expect:") {
			t.Errorf("upstream got %q; Envoy removes it", l)
		}
	}
}

// TestResumedSessionRechecked: a resumed TLS session carries the first
// handshake's client certificate (as BoringSSL restores the session's peer
// certificate, from which Envoy writes XFCC), whatever the client presents
// or withholds on resumption, and the filter verifies it against the
// current bundle on every request: a CA removed after the session was
// established stops a resumed connection too. Not a defect; guards against
// a verdict kept per connection or session.
func TestResumedSessionRechecked(t *testing.T) {
	e := newFilterEnv(t, false, false)
	e.sc.addCA("unrelated_root", e.cp.otherRoot)
	id := e.sc.addCA("client_root", e.cp.root)
	e.waitBundle(t)
	good := keyPair(t, e.cp.good, e.cp.inter)
	for _, ver := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(4)
		conn := func(cert *tls.Certificate) *http.Client {
			tc := &tls.Config{RootCAs: e.sp.roots, ServerName: "localhost", ClientSessionCache: cache, MaxVersion: ver,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					if cert == nil {
						return &tls.Certificate{}, nil
					}
					return cert, nil
				}}
			return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true,
				TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, Timeout: 30 * time.Second}
		}
		get := func(cert *tls.Certificate) (reply, bool) {
			resp, err := conn(cert).Get(gwURL(e.g, "/resource"))
			if err != nil {
				t.Fatal(err)
			}
			resumed := resp.TLS.DidResume
			return readReply(t, resp), resumed
		}
		if r, resumed := get(good); r.status != 200 || resumed {
			t.Fatalf("TLS %x first handshake: %d resumed=%v", ver, r.status, resumed)
		}
		for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "another certificate": keyPair(t, e.cp.stranger)} {
			r, resumed := get(cert)
			if !resumed {
				t.Fatalf("TLS %x %s: the session was not resumed", ver, name)
			}
			if sub, _ := r.hdr("x-user-sub"); r.status != 200 || sub != "CN=good client,O=Acme" {
				t.Errorf("TLS %x resumed with %s: %d x-user-sub %q, want the session's certificate", ver, name, r.status, sub)
			}
		}
		if ver == tls.VersionTLS13 {
			e.sc.cli(nil, "ca-certificate", "delete", "--cert-id", id)
			eventually(t, 20*time.Second, "resumed session refused once its CA is deleted", func() (bool, string) {
				r, resumed := get(nil)
				return resumed && r.status == 401 && strings.Contains(string(r.body), "UNTRUSTED_CHAIN"), fmt.Sprintf("resumed=%v %d %s", resumed, r.status, r.body)
			})
		}
	}
}

// TestH2cUpgradeServedAsHTTP1: Envoy's HTTP/1 codec ignores an upgrade to
// h2c, removing its headers, and serves the request as HTTP/1.1 through the
// filter chain (only other upgrades get the 403 of a listener without
// upgrade_configs). The dev gateway answered it 403 without asking the
// filter.
func TestH2cUpgradeServedAsHTTP1(t *testing.T) {
	u, got := rawUpstream(t)
	g, sp, _ := adminGateway(t, u)
	send := func(path string) string {
		c, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{RootCAs: sp.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		return resp.Status
	}
	if st := send("/public"); !strings.HasPrefix(st, "200") {
		t.Fatalf("h2c upgrade on an open path: %s, want it served as HTTP/1.1", st)
	}
	for _, l := range <-got {
		if n, _, _ := strings.Cut(strings.ToLower(l), ":"); n == "upgrade" || n == "http2-settings" || n == "connection" {
			t.Errorf("upstream got %q; Envoy removes the h2c upgrade headers", l)
		}
	}
	if st := send("/admin/x"); !strings.HasPrefix(st, "401") {
		t.Errorf("h2c upgrade on a protected path without a certificate: %s, want the filter's 401", st)
	}
}

// TestHTTP10RefusedAsEnvoyDoes: Envoy's HTTP/1 codec answers an HTTP/1.0
// request 426 Upgrade Required before any filter runs, as accept_http_10 is
// off in envoy.yaml; the dev gateway served it (a client without a Host
// header included), so a tool speaking HTTP/1.0 worked against it and
// failed against Envoy.
func TestHTTP10RefusedAsEnvoyDoes(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := adminGateway(t, up.srv.URL)
	for _, req := range []string{"GET /public HTTP/1.0\r\n\r\n", "GET /public HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n", "GET /admin/x HTTP/1.0\r\n\r\n"} {
		// curl --http1.0 offers ALPN "http/1.0" only: Envoy completes the
		// handshake without ALPN and its codec answers 426.
		for _, alpn := range []string{"http/1.1", "http/1.0"} {
			c, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{RootCAs: sp.roots, ServerName: "localhost", NextProtos: []string{alpn}})
			if err != nil {
				t.Fatalf("ALPN %s: %v", alpn, err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprint(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			if err != nil {
				t.Fatalf("%q (ALPN %s): %v", req, alpn, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUpgradeRequired {
				t.Errorf("%q (ALPN %s): %s, want Envoy's 426", req, alpn, resp.Status)
			}
		}
	}
	if n := up.count(); n != 0 {
		t.Errorf("the upstream saw %d HTTP/1.0 requests", n)
	}
}

// TestEd25519ClientCertificateAsEnvoySeesIt: Envoy's default signature
// algorithms (BoringSSL's verify list) leave out ed25519, so against Envoy
// an Ed25519 client certificate never authenticates: OpenSSL clients such as
// curl withhold it and the filter answers NO_CERTIFICATE. The dev gateway
// accepted it, verified it and sent x-user-sub upstream, so a setup that
// worked there failed behind Envoy.
func TestEd25519ClientCertificateAsEnvoySeesIt(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, root := adminGateway(t, up.srv.URL)
	ed := testpki.Must(root.Issue(testpki.Options{CommonName: "ed25519 client", Key: testpki.Ed25519}))
	ec := testpki.Must(root.Issue(testpki.Options{CommonName: "p256 client"}))
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c := client(sp, keyPair(t, ed), false)
		c.Transport.(*http.Transport).TLSClientConfig.MaxVersion = v
		r := do(t, c, "GET", gwURL(g, "/admin/x"), nil, nil)
		if r.status != http.StatusUnauthorized || r.problem(t).Reason != "NO_CERTIFICATE" {
			t.Errorf("Ed25519 client certificate over TLS %x: %d %s, want 401 NO_CERTIFICATE", v, r.status, r.body)
		}
		c = client(sp, keyPair(t, ec), false)
		c.Transport.(*http.Transport).TLSClientConfig.MaxVersion = v
		if r := do(t, c, "GET", gwURL(g, "/admin/x"), nil, nil); r.status != 200 {
			t.Errorf("P-256 client certificate over TLS %x: %d %s", v, r.status, r.body)
		}
	}
}

// TestTrailersCannotCarryIdentity: a client's request trailers reach the
// upstream (Envoy passes HTTP/2 trailers to an HTTP/2 upstream), so the
// filter strips identity names from them as from headers; other trailers
// stay.
func TestTrailersCannotCarryIdentity(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "sub=%q status=%q checksum=%q", r.Trailer.Get("x-user-sub"), r.Trailer.Get("x-mtls-verification-status"), r.Trailer.Get("x-checksum"))
	}))
	t.Cleanup(up.Close)
	g, sp, _ := adminGateway(t, up.URL)
	for _, h2 := range []bool{false, true} {
		req, err := http.NewRequest("POST", gwURL(g, "/public/upload"), io.NopCloser(strings.NewReader("body")))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		req.Trailer = http.Header{"X-User-Sub": {"CN=admin"}, "X-Mtls-Verification-Status": {"SUCCESS"}, "X-Checksum": {"c0ffee"}}
		resp, err := client(sp, nil, h2).Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		r := readReply(t, resp)
		if want := `sub="" status="" checksum="c0ffee"`; r.status != 200 || string(r.body) != want {
			t.Errorf("h2=%v: %d %s, want %s", h2, r.status, r.body, want)
		}
	}
}

// TestEncodedPathLayers: over TLS, HTTP/1.1 and HTTP/2, a protected prefix
// escaped three times is protected, five layers of escapes and overlong
// UTF-8 ('.' spelt %C0%AE) are refused 400 AMBIGUOUS_PATH before the
// upstream, and a literal percent escaped three times still reaches it.
func TestEncodedPathLayers(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := adminGateway(t, up.srv.URL)
	for _, h2 := range []bool{false, true} {
		for _, c := range []struct {
			target, reason string
			status         int
		}{
			{"/%252561dmin/x", "NO_CERTIFICATE", http.StatusUnauthorized},
			{"/%2525252561dmin/x", "AMBIGUOUS_PATH", http.StatusBadRequest},
			{"/%C0%AE%C0%AE/admin/x", "AMBIGUOUS_PATH", http.StatusBadRequest},
			{"/public/%C0%AE%C0%AE%C0%AFadmin/x", "AMBIGUOUS_PATH", http.StatusBadRequest},
			{"/files/100%252541", "", http.StatusOK},
		} {
			before := up.count()
			r := rawTarget(t, g, sp, c.target, h2)
			if r.status != c.status || r.header.Get("x-mtls-verification-reason") != c.reason {
				t.Errorf("%q h2=%v: %d %q, want %d %q", c.target, h2, r.status, r.header.Get("x-mtls-verification-reason"), c.status, c.reason)
			}
			if reached := up.count() != before; reached != (c.status == http.StatusOK) {
				t.Errorf("%q h2=%v: reached the upstream %v", c.target, h2, reached)
			}
			if c.status == http.StatusOK && (r.echo == nil || r.echo.Path != c.target) {
				t.Errorf("%q h2=%v: upstream saw %+v, want the path as sent", c.target, h2, r.echo)
			}
		}
	}
}
