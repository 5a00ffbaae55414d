package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/gateway/demo"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/cli"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
)

const filterPkg = "github.com/mtlsgate/mtlsgate/filter"

// filterWasm is the real filter: $MTLSGATE_WASM (make test builds it), else
// built here.
func filterWasm(t testing.TB) []byte {
	t.Helper()
	if p := os.Getenv("MTLSGATE_WASM"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("MTLSGATE_WASM: %v", err)
		}
		return b
	}
	return wasm(t, filterPkg)
}

// sidecar is a real mtlsgate sidecar (daemon.Run, as `mtlsgate serve`)
// driven through the real CLI.
type sidecar struct {
	t     testing.TB
	addrs daemon.Addrs
}

func startSidecar(t testing.TB) *sidecar { return startSidecarWith(t, nil) }

// startSidecarWith starts a sidecar whose configuration edit has adjusted.
func startSidecarWith(t testing.TB, edit func(*daemon.Config)) *sidecar {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan daemon.Addrs, 1)
	done := make(chan error, 1)
	cfg := daemon.Config{
		DataDir: filepath.Join(dir, "data"), AdminListen: "127.0.0.1:0", SDSListen: "127.0.0.1:0", BundleListen: "127.0.0.1:0",
		Environment: "development", CRLMinInterval: 30 * time.Second, CRLMaxInterval: time.Hour,
		Log:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Ready: func(a daemon.Addrs) { ready <- a },
	}
	if edit != nil {
		edit(&cfg)
	}
	go func() { done <- daemon.Run(ctx, cfg) }()
	var sc *sidecar
	select {
	case a := <-ready:
		sc = &sidecar{t: t, addrs: a}
	case err := <-done:
		cancel()
		t.Fatalf("sidecar did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	})
	return sc
}

// cli runs an mtlsgate management command against the sidecar and decodes
// its --output json answer into out (when non-nil).
func (s *sidecar) cli(out any, args ...string) {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	full := append(append([]string{}, args...), "--server", "http://"+s.addrs.Admin, "--admin-token-file", s.addrs.TokenFile, "--output", "json")
	if code := cli.Run(full, &stdout, &stderr); code != 0 {
		s.t.Fatalf("mtlsgate %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			s.t.Fatalf("mtlsgate %s: decode output: %v\n%s", strings.Join(args, " "), err, stdout.String())
		}
	}
}

func (s *sidecar) addCA(name string, c *testpki.Cert) string {
	s.t.Helper()
	f := filepath.Join(s.t.TempDir(), name+".pem")
	if err := os.WriteFile(f, c.PEM(), 0o600); err != nil {
		s.t.Fatal(err)
	}
	var ca struct{ ID string }
	s.cli(&ca, "ca-certificate", "create", "--name", name, "--cert", f)
	return ca.ID
}

// clientPKI is a root with an intermediate and the client certificates the
// tests present.
type clientPKI struct {
	root, inter, good, expired, stranger *testpki.Cert
	otherRoot                            *testpki.Cert
}

func newClientPKI(t testing.TB) clientPKI {
	var p clientPKI
	// The CAs predate the expired certificate, which then fails only on its
	// own validity period.
	caStart := time.Now().AddDate(0, 0, -30)
	p.root = testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "gateway test client root", NotBefore: caStart}))
	p.inter = testpki.Must(p.root.Issue(testpki.Options{CA: true, CommonName: "gateway test client intermediate", NotBefore: caStart}))
	p.good = testpki.Must(p.inter.Issue(testpki.Options{Subject: pkix.Name{CommonName: "good client", Organization: []string{"Acme"}},
		URIs: []string{"spiffe://acme.test/good"}}))
	p.expired = testpki.Must(p.inter.Issue(testpki.Options{CommonName: "expired client",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}))
	p.otherRoot = testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "unrelated root"}))
	p.stranger = testpki.Must(p.otherRoot.Issue(testpki.Options{CommonName: "stranger"}))
	return p
}

// pluginConfig is policies/basic.json with the options and refresh period a
// test needs; the sidecar cluster is named as in the example.
func pluginConfig(t testing.TB, allowUnauthenticated bool) []byte {
	t.Helper()
	b, err := os.ReadFile("../policies/basic.json")
	if err != nil {
		t.Fatalf("read example policy: %v", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	pol := cfg["policies"].([]any)[0].(map[string]any)
	pol["handler"].(map[string]any)["options"].(map[string]any)["allowUnauthenticatedRequests"] = allowUnauthenticated
	cfg["trustBundle"] = map[string]any{"cluster": "mtlsgate_sidecar", "path": "/v1/bundle", "refreshSeconds": 1}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type problemDoc struct {
	Type, Title, Detail, Reason string
	Status                      int
}

func (r reply) problem(t testing.TB) problemDoc {
	t.Helper()
	var p problemDoc
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("status %d content-type %q, want application/problem+json; body %s", r.status, ct, r.body)
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body: %v: %s", err, r.body)
	}
	return p
}

type filterEnv struct {
	sc   *sidecar
	g    *gateway.Gateway
	sp   serverPKI
	cp   clientPKI
	up   *upstream
	logs *syncbuf.Buffer
}

func newFilterEnv(t *testing.T, allowUnauthenticated bool, trustRoot bool) *filterEnv {
	t.Helper()
	e := &filterEnv{sc: startSidecar(t), sp: newServerPKI(t), cp: newClientPKI(t)}
	if trustRoot {
		e.sc.addCA("client_root", e.cp.root)
	}
	e.up = newEchoUpstream(t, nil)
	e.g, e.logs = startGateway(t, gateway.Config{
		Wasm: filterWasm(t), PluginConfig: pluginConfig(t, allowUnauthenticated), Workers: 2,
		Certificate: e.sp.cert, Upstream: mustURL(t, e.up.srv.URL),
		Clusters: map[string]string{"mtlsgate_sidecar": "http://" + e.sc.addrs.Bundle},
	})
	return e
}

func (e *filterEnv) get(t testing.TB, cert *tls.Certificate, h2 bool, hdr map[string]string) reply {
	return do(t, client(e.sp, cert, h2), "GET", gwURL(e.g, "/resource"), hdr, nil)
}

// waitBundle waits until the filter has a trust bundle: before the first
// fetch it answers 503 TRUST_BUNDLE_UNAVAILABLE, or lets the request through
// with that reason when unauthenticated requests are allowed.
func (e *filterEnv) waitBundle(t testing.TB) {
	eventually(t, 20*time.Second, "trust bundle loaded", func() (bool, string) {
		r := e.get(t, nil, false, nil)
		reason, _ := r.hdr("x-mtls-verification-reason")
		return r.status != 503 && reason != "TRUST_BUNDLE_UNAVAILABLE" && !strings.Contains(string(r.body), "TRUST_BUNDLE_UNAVAILABLE"),
			fmt.Sprintf("%d %s", r.status, r.body)
	})
}

var spoofed = map[string]string{
	"X-Mtls-Subject":             "CN=admin",
	"X-User-Sub":                 "admin",
	"Client-Cert":                ":bm90IGEgY2VydA==:",
	"X-Forwarded-Client-Cert":    `Hash=00;Subject="CN=admin"`,
	"X-Mtls-Verification-Status": "SUCCESS",
}

func TestFilterAllowsAndDenies(t *testing.T) {
	e := newFilterEnv(t, false, true)
	e.waitBundle(t)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			hits := e.up.count()
			r := e.get(t, keyPair(t, e.cp.good, e.cp.inter), h2, spoofed)
			if r.status != 200 || r.echo == nil {
				t.Fatalf("good certificate: %d %s", r.status, r.body)
			}
			if h2 && r.proto != "HTTP/2.0" {
				t.Errorf("proto %s, want HTTP/2.0", r.proto)
			}
			for k, want := range map[string]string{
				"x-mtls-subject":             "CN=good client,O=Acme",
				"x-mtls-verification-status": "SUCCESS",
				"x-user-sub":                 "CN=good client,O=Acme",
			} {
				if got, _ := r.hdr(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if v, _ := r.hdr("client-cert"); v == spoofed["Client-Cert"] || !strings.HasPrefix(v, ":") {
				t.Errorf("client-cert %q: want the verified leaf (RFC 9440), not the client's", v)
			}
			if v, _ := r.hdr("x-forwarded-client-cert"); strings.Contains(v, "CN=admin") {
				t.Errorf("spoofed XFCC reached the upstream: %q", v)
			}

			for _, c := range []struct {
				name   string
				cert   *tls.Certificate
				reason string
			}{
				{"no certificate", nil, "NO_CERTIFICATE"},
				{"other CA", keyPair(t, e.cp.stranger), "UNTRUSTED_CHAIN"},
				{"expired", keyPair(t, e.cp.expired, e.cp.inter), "EXPIRED"},
			} {
				r := e.get(t, c.cert, h2, spoofed)
				if r.status != 401 {
					t.Errorf("%s: status %d, want 401; body %s", c.name, r.status, r.body)
					continue
				}
				if p := r.problem(t); p.Reason != c.reason || p.Status != 401 {
					t.Errorf("%s: problem %+v, want reason %s", c.name, p, c.reason)
				}
			}
			if got := e.up.count() - hits; got != 1 {
				t.Errorf("upstream saw %d requests, want only the allowed one", got)
			}
		})
	}
	for _, want := range []string{"200 reason=SUCCESS", "401 reason=NO_CERTIFICATE", "401 reason=UNTRUSTED_CHAIN", "401 reason=EXPIRED"} {
		if !strings.Contains(e.logs.String(), want) {
			t.Errorf("access log lacks %q:\n%s", want, e.logs.String())
		}
	}
}

func TestFilterUnauthenticatedAllowed(t *testing.T) {
	e := newFilterEnv(t, true, true)
	e.waitBundle(t)
	r := e.get(t, nil, false, spoofed)
	if r.status != 200 || r.echo == nil {
		t.Fatalf("no certificate with allowUnauthenticatedRequests: %d %s", r.status, r.body)
	}
	for _, k := range []string{"x-mtls-subject", "x-user-sub", "client-cert", "x-forwarded-client-cert"} {
		if v, ok := r.hdr(k); ok {
			t.Errorf("%s reached the upstream on an unauthenticated request: %q", k, v)
		}
	}
	if v, _ := r.hdr("x-mtls-verification-reason"); v != "NO_CERTIFICATE" {
		t.Errorf("x-mtls-verification-reason %q, want NO_CERTIFICATE", v)
	}
	if v, _ := r.hdr("x-mtls-verification-status"); v == "SUCCESS" || v == "" {
		t.Errorf("x-mtls-verification-status %q on an unauthenticated request", v)
	}
	if !strings.Contains(e.logs.String(), "200 reason=NO_CERTIFICATE") {
		t.Errorf("access log lacks the reason of the unauthenticated pass:\n%s", e.logs.String())
	}
}

// TestTrustFollowsSidecar: a CA uploaded through the CLI becomes trusted,
// and a deleted one untrusted, without restarting the gateway.
func TestTrustFollowsSidecar(t *testing.T) {
	e := newFilterEnv(t, false, false)
	// Some other CA is trusted at first, so the filter has a bundle in which
	// the client's root is missing.
	e.sc.addCA("unrelated_root", e.cp.otherRoot)
	e.waitBundle(t)
	good := keyPair(t, e.cp.good, e.cp.inter)
	if r := e.get(t, good, false, nil); r.status != 401 || r.problem(t).Reason != "UNTRUSTED_CHAIN" {
		t.Fatalf("before the CA is uploaded: %d %s", r.status, r.body)
	}
	id := e.sc.addCA("client_root", e.cp.root)
	eventually(t, 20*time.Second, "uploaded CA trusted", func() (bool, string) {
		r := e.get(t, good, false, nil)
		return r.status == 200, fmt.Sprintf("%d %s", r.status, r.body)
	})
	e.sc.cli(nil, "ca-certificate", "delete", "--cert-id", id)
	eventually(t, 20*time.Second, "deleted CA untrusted", func() (bool, string) {
		r := e.get(t, good, false, nil)
		return r.status == 401 && strings.Contains(string(r.body), "UNTRUSTED_CHAIN"), fmt.Sprintf("%d %s", r.status, r.body)
	})
	// The other CA's clients were trusted throughout.
	if r := e.get(t, keyPair(t, e.cp.stranger), false, nil); r.status != 200 {
		t.Errorf("client of the CA that stayed: %d %s", r.status, r.body)
	}
}

// backend is an upstream that requires a client certificate from its CA.
type backend struct {
	ca   *testpki.Cert
	pool *x509.CertPool
	srv  *httptest.Server
}

func newBackend(t testing.TB, before ...func(r *http.Request)) *backend {
	b := &backend{ca: testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "backend CA"}))}
	leaf := testpki.Must(b.ca.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	tc, err := demo.UpstreamTLS(leaf.PEM(), leaf.KeyPEM(), b.ca.PEM())
	if err != nil {
		t.Fatal(err)
	}
	echo := demo.EchoHandler()
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, f := range before {
			f(r)
		}
		echo.ServeHTTP(w, r)
	}))
	b.srv.TLS = tc
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	b.pool = x509.NewCertPool()
	b.pool.AddCert(b.ca.Cert)
	return b
}

func (b *backend) url() string {
	_, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	return "https://localhost:" + port
}

// TestOutboundCertificateFromSidecar: the certificate uploaded with
// `mtlsgate mtls-certificate create` reaches the gateway over SDS and is
// presented to an upstream that requires it.
func TestOutboundCertificateFromSidecar(t *testing.T) {
	sc := startSidecar(t)
	sp, cp := newServerPKI(t), newClientPKI(t)
	sc.addCA("client_root", cp.root)
	be := newBackend(t)
	out := testpki.Must(be.ca.Issue(testpki.Options{CommonName: "gateway outbound"}))
	dir := t.TempDir()
	certF, keyF := filepath.Join(dir, "out.pem"), filepath.Join(dir, "out-key.pem")
	if err := os.WriteFile(certF, out.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyF, out.KeyPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	sc.cli(nil, "mtls-certificate", "create", "--name", "backend_client_cert", "--cert", certF, "--key", keyF, "--environment-type", "development")

	g, _ := startGateway(t, gateway.Config{
		Wasm: filterWasm(t), PluginConfig: pluginConfig(t, false), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, be.url()), UpstreamCAs: be.pool,
		Clusters: map[string]string{"mtlsgate_sidecar": "http://" + sc.addrs.Bundle},
		SDSAddr:  sc.addrs.SDS, UpstreamMTLSCert: "backend_client_cert",
	})
	select {
	case <-g.SDSReady():
	case <-time.After(20 * time.Second):
		t.Fatal("no SDS secret within 20s")
	}
	good := keyPair(t, cp.good, cp.inter)
	eventually(t, 20*time.Second, "request reaches the mTLS upstream", func() (bool, string) {
		r := do(t, client(sp, good, false), "GET", gwURL(g, "/x"), nil, nil)
		return r.status == 200 && r.echo != nil && r.echo.GatewayCert == "CN=gateway outbound", fmt.Sprintf("%d %s", r.status, r.body)
	})
	// The sidecar reports the gateway as a subscriber of the certificate.
	var list []struct {
		Name        string
		Subscribers []json.RawMessage
	}
	sc.cli(&list, "mtls-certificate", "list")
	if len(list) != 1 || len(list[0].Subscribers) == 0 {
		t.Errorf("sidecar lists no subscriber for backend_client_cert: %+v", list)
	}
}

// TestForgedXFCCElementInSAN: the gateway, as Envoy with ACCEPT_UNTRUSTED,
// takes any client certificate and writes its SANs into XFCC unquoted. A
// self-signed certificate whose DNS SAN holds ",Cert=<good client>" ends
// the element the gateway wrote and starts a forged one; the filter reads
// the element carrying the connection's own Hash=, so the forger is refused
// as the stranger it is, while a genuine client whose SAN holds a comma is
// let through.
func TestForgedXFCCElementInSAN(t *testing.T) {
	e := newFilterEnv(t, false, true)
	e.waitBundle(t)
	enc := func(c ...*testpki.Cert) string { return url.PathEscape(string(testpki.PEM(c...))) }
	inj := "x,Hash=" + fingerprintHex(e.cp.good) +
		`;Cert="` + enc(e.cp.good) + `";Chain="` + enc(e.cp.good, e.cp.inter) + `"`
	forger := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "forger", DNSNames: []string{inj}}))
	odd := testpki.Must(e.cp.inter.Issue(testpki.Options{CommonName: "odd client", DNSNames: []string{"a.test,b.test"}}))
	for _, h2 := range []bool{false, true} {
		hits := e.up.count()
		r := e.get(t, keyPair(t, forger), h2, nil)
		if r.status != 401 || r.problem(t).Reason != "UNTRUSTED_CHAIN" {
			t.Fatalf("h2=%v forged element: %d %s", h2, r.status, r.body)
		}
		if e.up.count() != hits {
			t.Fatalf("h2=%v: the forged request reached the upstream", h2)
		}
		r = e.get(t, keyPair(t, odd, e.cp.inter), h2, nil)
		if sub, _ := r.hdr("x-user-sub"); r.status != 200 || sub != "CN=odd client" {
			t.Fatalf("h2=%v client with a comma in its SAN: %d x-user-sub %q %s", h2, r.status, sub, r.body)
		}
	}
}

func fingerprintHex(c *testpki.Cert) string {
	sum := sha256.Sum256(c.DER)
	return hex.EncodeToString(sum[:])
}
