package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// abitestGateway runs the ABI-walk example plugin, which reports what it saw
// in x-abitest-* request headers, in front of an echo upstream.
func abitestGateway(t *testing.T, pluginJSON string, clusters map[string]string, up *upstream) (*gateway.Gateway, serverPKI, *syncbuf.Buffer) {
	t.Helper()
	sp := newServerPKI(t)
	g, access := startGateway(t, gateway.Config{
		Wasm: wasm(t, abitestPkg), PluginConfig: []byte(pluginJSON), RootID: "", Workers: 2,
		Certificate: sp.cert, Upstream: mustURL(t, up.srv.URL), Clusters: clusters,
	})
	return g, sp, access
}

// expectedXFCC spells out what Envoy writes for a client chain, computed
// independently of the gateway: url.QueryEscape percent-encodes exactly the
// characters PEM contains that Envoy encodes, except that it writes a space
// as '+'.
func expectedXFCC(by string, chain []*testpki.Cert, subject string) string {
	enc := func(b []byte) string { return strings.ReplaceAll(url.QueryEscape(string(b)), "+", "%20") }
	sum := sha256.Sum256(chain[0].DER)
	leaf := chain[0].Cert
	parts := []string{"By=" + by, "Hash=" + hex.EncodeToString(sum[:]),
		`Cert="` + enc(chain[0].PEM()) + `"`, `Chain="` + enc(testpki.PEM(chain...)) + `"`, `Subject="` + subject + `"`}
	if len(leaf.URIs) == 0 {
		parts = append(parts, "URI=")
	}
	for _, u := range leaf.URIs {
		parts = append(parts, "URI="+u.String())
	}
	for _, d := range leaf.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ";")
}

func TestXFCCAndConnectionProperties(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, access := abitestGateway(t, `{}`, nil, up)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "xfcc root"}))
	inter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "xfcc intermediate"}))
	leaf := testpki.Must(inter.Issue(testpki.Options{
		Subject:  pkix.Name{CommonName: "alice", Organization: []string{"Acme, Inc."}, OrganizationalUnit: []string{"eng"}},
		URIs:     []string{"spiffe://acme.test/alice", "https://acme.test/u/alice"},
		DNSNames: []string{"alice.acme.test", "a.acme.test"},
	}))
	c := client(sp, keyPair(t, leaf, inter), false)

	var localAddr string
	req, _ := http.NewRequest("GET", gwURL(g, "/hello?x=1"), nil)
	req.Header.Set("X-Forwarded-Client-Cert", "Hash=spoofed;Subject=\"CN=admin\"")
	req = req.WithContext(withConnTrace(req.Context(), &localAddr))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := readReply(t, resp)
	if r.status != 200 || r.echo == nil {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	// openssl's RFC 2253 form escapes the comma in "Acme, Inc." and lists
	// the most specific RDN first.
	want := expectedXFCC("spiffe://test.local/gateway", []*testpki.Cert{leaf, inter}, `CN=alice,OU=eng,O=Acme\, Inc.`)
	if got := r.echo.Headers["X-Forwarded-Client-Cert"]; len(got) != 1 || got[0] != want {
		t.Fatalf("x-forwarded-client-cert\n got %q\nwant %q", got, want)
	}
	checks := map[string]string{
		"x-abitest-prop-connection-mtls":                     "true",
		"x-abitest-prop-connection-subject_peer_certificate": `CN=alice,OU=eng,O=Acme\, Inc.`,
		"x-abitest-prop-source-address":                      localAddr,
		"x-abitest-prop-destination-address":                 g.Addr().String(),
		"x-abitest-prop-request-path":                        "/hello?x=1",
		"x-abitest-prop-request-method":                      "GET",
		"x-abitest-prop-plugin_name":                         "mtlsgate",
		"x-forwarded-proto":                                  "https",
	}
	_, port, _ := net.SplitHostPort(localAddr)
	checks["x-abitest-prop-source-port"] = port
	for k, v := range checks {
		if got, _ := r.hdr(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if id, _ := r.hdr("x-abitest-prop-connection-id"); id == "" || id == "0" {
		t.Errorf("connection id %q, want a positive number", id)
	}
	if rid, _ := r.hdr("x-request-id"); len(rid) != 36 {
		t.Errorf("x-request-id %q, want a generated UUID", rid)
	}
	if !strings.Contains(access.String(), `GET "/hello?x=1" HTTP/1.1 200`) {
		t.Errorf("access log lacks the request line:\n%s", access.String())
	}
}

func TestSpoofedXFCCWithoutCertificateIsDropped(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := abitestGateway(t, `{}`, nil, up)
	r := do(t, client(sp, nil, false), "GET", gwURL(g, "/"), map[string]string{
		"X-Forwarded-Client-Cert": `Hash=abc;Subject="CN=admin"`, "X-Forwarded-Proto": "http"}, nil)
	if r.status != 200 || r.echo == nil {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	if v, ok := r.hdr("x-forwarded-client-cert"); ok {
		t.Errorf("client-sent x-forwarded-client-cert reached the upstream: %q", v)
	}
	if v, _ := r.hdr("x-forwarded-proto"); v != "https" {
		t.Errorf("x-forwarded-proto %q, want https", v)
	}
	if v, _ := r.hdr("x-abitest-prop-connection-mtls"); v != "false" {
		t.Errorf("connection.mtls %q without a client certificate, want false", v)
	}
}

func TestLocalResponseAndResponseCallbacks(t *testing.T) {
	up := newEchoUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Secret", "do not leak")
	})
	g, sp, access := abitestGateway(t, `{"localResponsePath": "/deny"}`, nil, up)
	c := client(sp, nil, false)

	r := do(t, c, "GET", gwURL(g, "/deny"), nil, nil)
	if r.status != 403 || string(r.body) != "denied by abitest\n" || r.header.Get("X-Local") != "yes" {
		t.Fatalf("local response: status %d, headers %v, body %q", r.status, r.header, r.body)
	}
	// Envoy encodes a local reply through the filter's response callbacks.
	if v := r.header.Get("X-Abitest-Response"); v != "seen 403" {
		t.Errorf("x-abitest-response on the local reply %q, want \"seen 403\"", v)
	}
	if up.count() != 0 {
		t.Errorf("upstream saw %d requests; the local reply must stop the request", up.count())
	}
	if !strings.Contains(access.String(), "403 reason=abitest_denied") {
		t.Errorf("access log lacks the local reply's details:\n%s", access.String())
	}

	r = do(t, c, "GET", gwURL(g, "/ok"), nil, nil)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if v := r.header.Get("X-Abitest-Response"); v != "seen 200" {
		t.Errorf("x-abitest-response %q, want \"seen 200\"", v)
	}
	if v := r.header.Get("X-Upstream-Secret"); v != "" {
		t.Errorf("the filter removed x-upstream-secret, yet the client got %q", v)
	}
}

func TestHeaderMutationsReachUpstream(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := abitestGateway(t, `{}`, nil, up)
	r := do(t, client(sp, nil, false), "GET", gwURL(g, "/m"), map[string]string{
		"X-Remove-Me": "1", "X-Replace-Me": "original", "Connection": "X-Hop", "X-Hop": "hop"}, nil)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if _, ok := r.hdr("x-remove-me"); ok {
		t.Error("x-remove-me reached the upstream after the filter removed it")
	}
	if v, _ := r.hdr("x-replace-me"); v != "replaced" {
		t.Errorf("x-replace-me %q, want replaced", v)
	}
	if v := r.echo.Headers["X-Added"]; len(v) != 2 || v[0] != "one" || v[1] != "two" {
		t.Errorf("x-added %q, want [one two]", v)
	}
	if _, ok := r.hdr("x-hop"); ok {
		t.Error("a header named in Connection is hop-by-hop and must not be forwarded")
	}
}

func TestHTTP2AndBodies(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, access := abitestGateway(t, `{}`, nil, up)
	leafCh := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "h2 client"}))
	for _, h2 := range []bool{false, true} {
		c := client(sp, keyPair(t, leafCh.Leaf), h2)
		body := make([]byte, 300<<10)
		_, _ = rand.Read(body)
		sum := sha256.Sum256(body)
		r := do(t, c, "POST", gwURL(g, "/upload"), map[string]string{"Content-Type": "application/octet-stream"}, bytes.NewReader(body))
		wantProto := "HTTP/1.1"
		if h2 {
			wantProto = "HTTP/2.0"
		}
		if r.status != 200 || r.proto != wantProto {
			t.Fatalf("h2=%v: status %d proto %s, want 200 %s", h2, r.status, r.proto, wantProto)
		}
		if r.echo.BodyBytes != len(body) || r.echo.BodySHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("h2=%v: upstream got %d bytes (sha %s), want %d", h2, r.echo.BodyBytes, r.echo.BodySHA256, len(body))
		}
		if v, _ := r.hdr("x-forwarded-client-cert"); !strings.Contains(v, `Subject="CN=h2 client"`) {
			t.Errorf("h2=%v: xfcc %q", h2, v)
		}
		if v, _ := r.hdr("x-abitest-prop-request-host"); !strings.HasPrefix(v, "localhost:") {
			t.Errorf("h2=%v: request.host %q, want the :authority", h2, v)
		}
	}
	if !strings.Contains(access.String(), `POST "/upload" HTTP/2.0 200`) {
		t.Errorf("access log lacks the HTTP/2 request:\n%s", access.String())
	}
}

// TestTickCalloutsResolveClusters: the filter's timer runs in real time and
// its proxy_http_call reaches the cluster mapped by name. (Resuming a request
// paused on a callout is covered by host-test; the guest layer does not yet
// set the effective context for callout callbacks, see host-test's
// TestPauseHTTPCallResume.)
func TestTickCalloutsResolveClusters(t *testing.T) {
	var mu sync.Mutex
	ticks := 0
	side := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tick" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		ticks++
		n := ticks
		mu.Unlock()
		fmt.Fprintf(w, "tick-%d", n)
	}))
	t.Cleanup(side.Close)
	up := newEchoUpstream(t, nil)
	g, sp, _ := abitestGateway(t, `{"cluster": "side", "calloutPath": "/tick", "tickMs": 20}`,
		map[string]string{"side": side.URL}, up)
	c := client(sp, nil, false)
	// The shared data entry the tick's callout writes keeps changing while
	// ticks run.
	first := ""
	eventually(t, 10*time.Second, "tick callouts reach the filter", func() (bool, string) {
		v, _ := do(t, c, "GET", gwURL(g, "/t"), nil, nil).hdr("x-abitest-shared")
		if first == "" && strings.HasPrefix(v, "200 tick-") {
			first = v
		}
		return first != "" && strings.HasPrefix(v, "200 tick-") && v != first, v
	})
}

func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not on PATH; the crypto/tls clients cover the same paths")
	}
	up := newEchoUpstream(t, nil)
	dir := t.TempDir()
	ca := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "curl server CA"}))
	srv := testpki.Must(ca.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := writeFile(p, b); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kp, err := tls.X509KeyPair(srv.PEM(), srv.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := startGateway(t, gateway.Config{Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: kp, Upstream: mustURL(t, up.srv.URL)})
	chain := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "curl client"}))
	certFile := write("client.pem", chain.Presented())
	keyFile := write("client-key.pem", chain.Leaf.KeyPEM())
	caFile := write("ca.pem", ca.PEM())
	for _, http2 := range []string{"--http1.1", "--http2"} {
		out, err := exec.Command(curl, "-sS", http2, "--cacert", caFile, "--cert", certFile, "--key", keyFile,
			"-H", "x-forwarded-client-cert: spoofed", "-w", "\n%{http_code} %{http_version}", gwURL(g2, "/curl")).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", http2, err, out)
		}
		s := string(out)
		wantVersion := "1.1"
		if http2 == "--http2" {
			wantVersion = "2"
		}
		if !strings.HasSuffix(s, "200 "+wantVersion) {
			t.Fatalf("curl %s: %s", http2, s)
		}
		// curl sends the leaf and the intermediate from the --cert file.
		wantChain := strings.ReplaceAll(url.QueryEscape(string(testpki.PEM(chain.Leaf, chain.Intermediates[0]))), "+", "%20")
		if !strings.Contains(s, `Chain=\"`+wantChain+`\"`) || strings.Contains(s, "spoofed") {
			t.Errorf("curl %s: upstream did not get the presented chain in XFCC, or got the spoofed value:\n%s", http2, s)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	up := newEchoUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
	})
	sp := newServerPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(context.Background(), gateway.Config{Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`),
		Workers: 1, Certificate: sp.cert, Upstream: mustURL(t, up.srv.URL), Listener: ln, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	got := make(chan reply, 1)
	go func() { got <- do(t, client(sp, nil, false), "GET", gwURL(g, "/slow"), nil, nil) }()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- g.Shutdown(context.Background()) }()
	// Once the listener is closed the shutdown has begun; the in-flight
	// request must still complete.
	eventually(t, 10*time.Second, "listener closes", func() (bool, string) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
			return false, "still accepting"
		}
		return true, ""
	})
	close(release)
	if r := <-got; r.status != 200 {
		t.Errorf("in-flight request got %d during shutdown, want 200", r.status)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
}

func TestWorkersArePooled(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := abitestGateway(t, `{}`, nil, up)
	if g.Workers() != 2 {
		t.Fatalf("workers %d, want 2", g.Workers())
	}
	c := client(sp, nil, true)
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := do(t, c, "GET", gwURL(g, "/p/"+strconv.Itoa(i)), nil, nil)
			if r.status != 200 || r.echo == nil || r.echo.Path != "/p/"+strconv.Itoa(i) {
				errs <- fmt.Sprintf("request %d: %d %s", i, r.status, r.body)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	m, ok := g.Plugin().Metric("abitest.requests")
	if !ok || m.Value != 40 {
		t.Errorf("abitest.requests metric %+v, want 40 across both VMs", m)
	}
}

// rawUpstream records the header lines of each request exactly as they
// arrived on the wire.
func rawUpstream(t *testing.T) (string, <-chan []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan []string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			var lines []string
			for {
				l, err := br.ReadString('\n')
				l = strings.TrimRight(l, "\r\n")
				if err != nil || l == "" {
					break
				}
				lines = append(lines, l)
			}
			// The body, when it has a length, is read before answering, as
			// an upstream that acts on it does: an answer sent first would
			// race the client's body.
			for _, l := range lines {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "content-length") {
					if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
						_, _ = io.CopyN(io.Discard, br, n)
					}
				}
			}
			got <- lines
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			c.Close()
		}
	}()
	return "http://" + ln.Addr().String(), got
}

// Envoy's HTTP/1 codec writes header names lowercase and adds no
// user-agent or accept-encoding of its own; an upstream that is strict about
// either sees the same from mtlsgate dev.
func TestUpstreamHeaderNamesAsEnvoySendsThem(t *testing.T) {
	u, got := rawUpstream(t)
	sp := newServerPKI(t)
	g, _ := startGateway(t, gateway.Config{Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, u)})
	req, err := http.NewRequest("GET", gwURL(g, "/case"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header["X-Mixed-Case"] = []string{"v"}
	req.Header["User-Agent"] = nil // the client sends none
	c := client(sp, nil, false)
	c.Transport.(*http.Transport).DisableCompression = true // and no accept-encoding
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lines := <-got
	var names []string
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		names = append(names, name)
		// Go's transport writes Host itself, in that spelling.
		if name != "Host" && name != strings.ToLower(name) {
			t.Errorf("upstream got header name %q, want it lowercase", name)
		}
		if strings.EqualFold(name, "user-agent") || strings.EqualFold(name, "accept-encoding") {
			t.Errorf("upstream got %q; the client sent none and Envoy adds none", l)
		}
	}
	if !slices.Contains(names, "x-mixed-case") || !slices.Contains(names, "x-abitest-count") {
		t.Errorf("upstream header names %q lack x-mixed-case or the filter's x-abitest-count", names)
	}
}

// routeTimeoutGateway runs the ABI-walk plugin with a short route timeout in
// front of handler.
func routeTimeoutGateway(t *testing.T, timeout time.Duration, handler http.HandlerFunc) (*gateway.Gateway, serverPKI, *syncbuf.Buffer) {
	t.Helper()
	up := httptest.NewServer(handler)
	t.Cleanup(up.Close)
	sp := newServerPKI(t)
	g, access := startGateway(t, gateway.Config{Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, up.URL), RouteTimeout: timeout})
	return g, sp, access
}

// Envoy's router answers 504 "upstream request timeout" when the upstream
// has not answered within the route timeout.
func TestRouteTimeoutBeforeResponse(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	g, sp, access := routeTimeoutGateway(t, 300*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	for _, h2 := range []bool{false, true} {
		start := time.Now()
		r := do(t, client(sp, nil, h2), "GET", gwURL(g, "/slow"), nil, nil)
		if r.status != http.StatusGatewayTimeout || string(r.body) != "upstream request timeout" {
			t.Errorf("h2=%v: %d %q, want 504 \"upstream request timeout\"", h2, r.status, r.body)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("h2=%v: answered after %v", h2, d)
		}
	}
	if !strings.Contains(access.String(), "upstream_response_timeout") {
		t.Errorf("access log does not name the timeout:\n%s", access.String())
	}
}

// When the upstream's response ends early, or the timeout passes after it
// has started, the client's stream is reset: a truncated body must never
// arrive as a complete one.
func TestUpstreamCutOffResetsStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	g, sp, _ := routeTimeoutGateway(t, 300*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/plain")
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler) // the upstream drops the connection
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	for _, path := range []string{"/abort", "/stall"} {
		for _, h2 := range []bool{false, true} {
			start := time.Now()
			resp, err := client(sp, nil, h2).Get(gwURL(g, path))
			if err != nil {
				t.Fatalf("%s h2=%v: %v", path, h2, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || err == nil {
				t.Errorf("%s h2=%v: status %d, body %q read without error; want the stream reset after the partial body", path, h2, resp.StatusCode, body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s h2=%v: reset after %v, want it at the 300 ms route timeout", path, h2, d)
			}
		}
	}
}

// The timeout starts when the client's request is complete, as in Envoy: a
// slow upload is not cut off by it.
func TestRouteTimeoutStartsAfterRequestBody(t *testing.T) {
	// The upload takes three times the timeout; the upstream answers at once
	// after it, well within the timeout even on a loaded machine.
	g, sp, _ := routeTimeoutGateway(t, time.Second, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = fmt.Fprintf(w, "%d", n)
	})
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 6; i++ {
			_, _ = pw.Write([]byte("0123456789"))
			time.Sleep(500 * time.Millisecond)
		}
		pw.Close()
	}()
	req, err := http.NewRequest("POST", gwURL(g, "/upload"), pr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client(sp, nil, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := readReply(t, resp)
	if r.status != 200 || string(r.body) != "60" {
		t.Errorf("slow upload: %d %q, want 200 \"60\" (the upload took 3 s against a 1 s route timeout)", r.status, r.body)
	}
}

// Response trailers (gRPC carries its status in them) reach the client
// over HTTP/1.1 and HTTP/2, declared in advance or not, after the filter's
// trailer callback; a body the filter held back goes out when they end the
// stream.
func TestResponseTrailersReachClient(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("content-type", "application/grpc")
		if r.URL.Path == "/held" {
			w.Header().Set("x-abitest-hold-body", "1")
		}
		_, _ = io.WriteString(w, "payload")
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-Undeclared", "late")
	}))
	t.Cleanup(up.Close)
	sp := newServerPKI(t)
	g, _ := startGateway(t, gateway.Config{Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, up.URL)})
	for _, path := range []string{"/grpc", "/held"} {
		for _, h2 := range []bool{false, true} {
			resp, err := client(sp, nil, h2).Get(gwURL(g, path))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != "payload" {
				t.Fatalf("%s h2=%v: body %q, %v", path, h2, body, err)
			}
			for k, want := range map[string]string{"grpc-status": "0", "x-undeclared": "late", "x-abitest-trailers": "2"} {
				if got := resp.Trailer.Get(k); got != want {
					t.Errorf("%s h2=%v: trailer %s %q, want %q (trailers %v)", path, h2, k, got, want, resp.Trailer)
				}
			}
		}
	}
}

// Without upgrade_configs (envoy.yaml has none) Envoy answers an upgrade
// request 403 before any filter runs; the upstream never sees it.
func TestUpgradeRefusedAsEnvoyDoes(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, access := abitestGateway(t, `{}`, nil, up)
	r := do(t, client(sp, nil, false), "GET", gwURL(g, "/ws"), map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}, nil)
	if r.status != http.StatusForbidden || len(r.body) != 0 {
		t.Errorf("upgrade: %d %q, want 403 with no body", r.status, r.body)
	}
	if n := up.count(); n != 0 {
		t.Errorf("the upstream saw %d upgrade requests", n)
	}
	if !strings.Contains(access.String(), "upgrade_failed") {
		t.Errorf("access log does not say upgrade_failed:\n%s", access.String())
	}
	// A plain request on the same gateway still goes through.
	if r := do(t, client(sp, nil, false), "GET", gwURL(g, "/plain"), nil, nil); r.status != 200 {
		t.Errorf("plain request after the upgrade: %d", r.status)
	}
}

// Request trailers go through the filter's trailer callback to the
// upstream, after the whole body.
func TestRequestTrailersReachUpstream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s|%s|%s", b, r.Trailer.Get("x-checksum"), r.Trailer.Get("x-abitest-trailers"))
	}))
	t.Cleanup(up.Close)
	sp := newServerPKI(t)
	g, _ := startGateway(t, gateway.Config{Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, up.URL)})
	for _, h2 := range []bool{false, true} {
		req, err := http.NewRequest("POST", gwURL(g, "/upload"), io.NopCloser(strings.NewReader("chunked body")))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Checksum": {"c0ffee"}}
		resp, err := client(sp, nil, h2).Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		r := readReply(t, resp)
		if r.status != 200 || string(r.body) != "chunked body|c0ffee|1" {
			t.Errorf("h2=%v: %d %q, want the body, the client's trailer and the filter's upstream", h2, r.status, r.body)
		}
	}
}

// TestAbsoluteFormTarget: an HTTP/1.1 request line with an absolute URI
// reaches the filter as Envoy's codec presents it, :path /deny, so routes
// and local replies keyed on the path apply as they do to the origin form.
func TestAbsoluteFormTarget(t *testing.T) {
	up := newEchoUpstream(t, nil)
	g, sp, _ := abitestGateway(t, `{"localResponsePath": "/deny"}`, nil, up)
	for _, target := range []string{"/deny", "https://localhost/deny", "https://localhost:443/deny"} {
		conn, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{RootCAs: sp.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode == 200 || up.count() != 0 {
			t.Fatalf("%s: status %d, upstream saw %d requests; want the filter's local reply", target, resp.StatusCode, up.count())
		}
	}
}
