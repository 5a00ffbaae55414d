package gateway_test

// Requests a client crafts to get past the filter through `mtlsgate dev`,
// sent with a real TLS client: each must meet the answer Envoy's connection
// manager or the filter gives, never the upstream unauthenticated.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// catchAllGateway protects every path (catch-all route) with an inline bundle.
func catchAllGateway(t *testing.T) (*gateway.Gateway, *upstream, serverPKI) {
	return routedGateway(t, map[string]any{"pathPrefix": "/", "policy": "mtls"})
}

// routedGateway runs the filter with one mtls policy on route, trusting a
// root no test client has, in front of an echo upstream.
func routedGateway(t *testing.T, route map[string]any) (*gateway.Gateway, *upstream, serverPKI) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "unused root"}))
	cfg := map[string]any{
		"policies": []any{map[string]any{"name": "mtls", "policyType": "mtls-auth-inbound",
			"handler": map[string]any{"export": "MTLSAuthInboundPolicy", "module": "$import(@zuplo/runtime)", "options": map[string]any{}}}},
		"routes":      []any{route},
		"trustBundle": map[string]any{"caCertificates": []string{string(root.PEM())}},
	}
	pc, _ := json.Marshal(cfg)
	sp := newServerPKI(t)
	up := newEchoUpstream(t, nil)
	g, _ := startGateway(t, gateway.Config{Wasm: filterWasm(t), PluginConfig: pc, Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, up.srv.URL)})
	return g, up, sp
}

// rawHTTP1 sends one raw HTTP/1.1 request line over TLS and returns the
// status line and body.
func rawHTTP1(t *testing.T, g *gateway.Gateway, sp serverPKI, requestLine string) (string, string) {
	addr := g.Addr().String()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: sp.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s\r\nHost: localhost\r\nConnection: close\r\n\r\n", requestLine)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "error: " + err.Error(), ""
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b)
}

// TestRefusedBeforeTheFilter: what Envoy's connection manager answers
// before any filter runs never reaches the upstream: 404 to a target that is
// not a path (downstream_rq_non_relative_path; the dev gateway used to hand
// ":path *" to the filter, which matched no route, and send it upstream as
// "/*"), and 403 to CONNECT, an upgrade envoy.yaml has no upgrade_configs for.
func TestRefusedBeforeTheFilter(t *testing.T) {
	g, up, sp := catchAllGateway(t)
	if st, _ := rawHTTP1(t, g, sp, "GET /anything HTTP/1.1"); !strings.HasPrefix(st, "401") {
		t.Fatalf("GET /anything without a certificate: %s, want 401", st)
	}
	for _, c := range []struct{ line, status string }{
		{"GET * HTTP/1.1", "404"}, {"OPTIONS * HTTP/1.1", "404"}, {"POST * HTTP/1.1", "404"},
		{"CONNECT localhost:443 HTTP/1.1", "403"}, {"CONNECT /admin HTTP/1.1", "403"},
	} {
		before := up.count()
		st, body := rawHTTP1(t, g, sp, c.line)
		if !strings.HasPrefix(st, c.status) {
			t.Errorf("%q: %s, want Envoy's %s", c.line, st, c.status)
		}
		if up.count() != before {
			t.Errorf("%q without a certificate reached the upstream (%s): %s", c.line, st, strings.TrimSpace(body))
		}
	}
}

// TestLowercaseMethodRouted: the dev gateway passes a lowercase method through
// to the filter and the upstream, as Envoy does over HTTP/2; "get" must meet
// the GET route's policy, since upstreams that upper-case the method serve it
// as GET.
func TestLowercaseMethodRouted(t *testing.T) {
	g, up, sp := routedGateway(t, map[string]any{"pathPrefix": "/admin/", "methods": []string{"GET"}, "policy": "mtls"})
	if st, _ := rawHTTP1(t, g, sp, "GET /admin/users HTTP/1.1"); !strings.HasPrefix(st, "401") {
		t.Fatalf("GET: %s, want 401", st)
	}
	before := up.count()
	st, body := rawHTTP1(t, g, sp, "get /admin/users HTTP/1.1")
	if up.count() != before {
		t.Errorf("\"get /admin/users\" without a certificate reached the upstream (%s): %s", st, strings.TrimSpace(body))
	}
}

// TestHeaderFloodRefused: a request with more header lines than Envoy's
// max_headers_count (100), or more than its 60 KiB, is answered 431 before
// the filter runs, as Envoy does; under the limit the filter decides.
func TestHeaderFloodRefused(t *testing.T) {
	g, up, sp := catchAllGateway(t)
	send := func(lines int, value string) string {
		c, err := tls.Dial("tcp", g.Addr().String(), &tls.Config{RootCAs: sp.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		var b strings.Builder
		b.WriteString("GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
		for i := 0; i < lines; i++ {
			fmt.Fprintf(&b, "x-mtls-%d: %s\r\n", i, value)
		}
		b.WriteString("\r\n")
		if _, err := io.WriteString(c, b.String()); err != nil {
			return "write: " + err.Error()
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "error: " + err.Error()
		}
		resp.Body.Close()
		return resp.Status
	}
	// 97 lines plus host and connection: 99 headers, under the limit (no
	// certificate, so the filter answers 401 itself).
	if st := send(97, "x"); !strings.HasPrefix(st, "401") {
		t.Fatalf("99 header lines: %s, want the filter's 401", st)
	}
	before := up.count()
	for _, c := range []struct {
		lines int
		value string
	}{{99, "x"}, {60000, "x"}, {20, strings.Repeat("v", 4<<10)}} {
		if st := send(c.lines, c.value); !strings.HasPrefix(st, "431") {
			t.Errorf("%d header lines of %d bytes: %s, want 431", c.lines, len(c.value), st)
		}
	}
	if up.count() != before {
		t.Error("an oversized request reached the upstream")
	}
}
