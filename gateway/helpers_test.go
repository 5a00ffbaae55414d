package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/gateway/demo"
	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

const abitestPkg = "github.com/mtlsgate/mtlsgate/filter/examples/abitest"

var (
	wasmMu    sync.Mutex
	wasmBytes = map[string][]byte{}
)

// wasm builds pkg with the standard toolchain (cached across runs).
func wasm(t testing.TB, pkg string) []byte {
	t.Helper()
	wasmMu.Lock()
	defer wasmMu.Unlock()
	if b, ok := wasmBytes[pkg]; ok {
		return b
	}
	path, err := hosttest.BuildWasm(pkg)
	if err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wasmBytes[pkg] = b
	return b
}

// serverPKI is the gateway's serving certificate and the root a client
// trusts it by.
type serverPKI struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

func newServerPKI(t testing.TB) serverPKI {
	t.Helper()
	ca := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "gateway test server CA"}))
	leaf := testpki.Must(ca.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"},
		URIs:        []string{"spiffe://test.local/gateway"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	cert, err := tls.X509KeyPair(leaf.PEM(), leaf.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return serverPKI{cert: cert, roots: roots}
}

type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

// newEchoUpstream is a plain-HTTP upstream answering with demo.Echo; extra
// wraps it for tests that need to set response headers.
func newEchoUpstream(t testing.TB, extra func(w http.ResponseWriter, r *http.Request)) *upstream {
	u := &upstream{}
	echo := demo.EchoHandler()
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.mu.Unlock()
		if extra != nil {
			extra(w, r)
		}
		echo.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// startGateway starts a gateway on a loopback port and stops it with the test.
func startGateway(t testing.TB, cfg gateway.Config) (*gateway.Gateway, *syncbuf.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	access := &syncbuf.Buffer{}
	if cfg.AccessLog == nil {
		cfg.AccessLog = access
	}
	if cfg.Log == nil {
		cfg.Log = testWriter{t}
	}
	g, err := gateway.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return g, access
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// client returns an HTTPS client trusting the gateway's server CA and
// presenting cert (leaf first, then its chain) when non-nil. h2 selects
// HTTP/2 through ALPN; otherwise HTTP/1.1.
func client(sp serverPKI, cert *tls.Certificate, h2 bool) *http.Client {
	tc := &tls.Config{RootCAs: sp.roots, ServerName: "localhost"}
	if cert != nil {
		// Present the certificate whatever CA names the server lists, as curl
		// does: the gateway sends none (ACCEPT_UNTRUSTED).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func keyPair(t testing.TB, certs ...*testpki.Cert) *tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(testpki.PEM(certs...), certs[0].KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	return &kp
}

func gwURL(g *gateway.Gateway, path string) string {
	_, port, _ := net.SplitHostPort(g.Addr().String())
	return "https://localhost:" + port + path
}

type reply struct {
	status int
	header http.Header
	body   []byte
	proto  string
	echo   *demo.Echo
}

func do(t testing.TB, c *http.Client, method, u string, hdr map[string]string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return readReply(t, resp)
}

// hdr returns a header the upstream received ("" when absent) and whether
// it was present.
func (r reply) hdr(name string) (string, bool) {
	if r.echo == nil {
		return "", false
	}
	v, ok := r.echo.Headers[http.CanonicalHeaderKey(name)]
	if !ok {
		return "", false
	}
	return strings.Join(v, ","), true
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// eventually polls cond until it holds or the deadline passes: for state
// that propagates asynchronously (bundle refreshes, SDS pushes).
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s; last: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readReply(t testing.TB, resp *http.Response) reply {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: b, proto: resp.Proto}
	var e demo.Echo
	if json.Unmarshal(b, &e) == nil && e.Headers != nil {
		r.echo = &e
	}
	return r
}

// withConnTrace records the client side of the connection a request uses.
func withConnTrace(ctx context.Context, local *string) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		*local = i.Conn.LocalAddr().String()
	}})
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }
