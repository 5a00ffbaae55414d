package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// sdsServer is the sidecar's SDS server (its cache and gRPC service), fed
// directly so a test can replace a secret under the same name, which is what
// a rotation looks like to an SDS client.
type sdsServer struct {
	cache   *sds.Cache
	tracker *sds.Tracker
	addr    string
}

func startSDS(t testing.TB) *sdsServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &sdsServer{cache: sds.NewCache(sds.Options{Environment: "development"}), tracker: sds.NewTracker()}
	g := sds.NewGRPCServer(ctx, s.cache, s.tracker)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(func() {
		cancel()
		g.Stop()
	})
	return s
}

func (s *sdsServer) publish(t testing.TB, name string, c *testpki.Cert) {
	t.Helper()
	err := s.cache.Update(context.Background(), sds.State{Outbound: []store.Outbound{{
		ID: "mtlscert_" + c.Cert.SerialNumber.String(), Name: name, ChainPEM: string(c.PEM()), KeyPEM: c.KeyPEM(),
		EnvironmentTypes: []string{"development"}, Enabled: true,
	}}})
	if err != nil {
		t.Fatalf("publish secret: %v", err)
	}
}

// TestOutboundCertificateRotatesOverSDS: a push replaces the certificate the
// gateway presents upstream, without a restart, even when the upstream
// connection is busy at the moment of the push.
func TestOutboundCertificateRotatesOverSDS(t *testing.T) {
	srv := startSDS(t)
	entered, release := make(chan struct{}), make(chan struct{})
	be := newBackend(t, func(r *http.Request) {
		if r.URL.Path == "/hold" {
			close(entered)
			<-release
		}
	})
	first := testpki.Must(be.ca.Issue(testpki.Options{CommonName: "outbound one"}))
	second := testpki.Must(be.ca.Issue(testpki.Options{CommonName: "outbound two"}))
	srv.publish(t, "backend_client_cert", first)

	sp := newServerPKI(t)
	g, _ := startGateway(t, gateway.Config{
		Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, be.url()), UpstreamCAs: be.pool,
		SDSAddr: srv.addr, UpstreamMTLSCert: "backend_client_cert", NodeID: "rotation-test",
	})
	select {
	case <-g.SDSReady():
	case <-time.After(20 * time.Second):
		t.Fatal("no SDS secret within 20s")
	}
	c := client(sp, nil, false)
	presented := func() string {
		r := do(t, c, "GET", gwURL(g, "/"), nil, nil)
		if r.status != 200 || r.echo == nil {
			return fmt.Sprintf("status %d: %s", r.status, r.body)
		}
		return r.echo.GatewayCert
	}
	if got := presented(); got != "CN=outbound one" {
		t.Fatalf("upstream saw %q, want CN=outbound one", got)
	}
	if subs := srv.tracker.Subscribers("backend_client_cert"); len(subs) == 0 {
		t.Errorf("the SDS server records no subscriber for backend_client_cert")
	}
	v1 := g.SDSVersion()
	held := make(chan reply, 1)
	go func() { held <- do(t, c, "GET", gwURL(g, "/hold"), nil, nil) }()
	<-entered
	srv.publish(t, "backend_client_cert", second)
	eventually(t, 20*time.Second, "push received", func() (bool, string) {
		return g.SDSVersion() != v1, g.SDSVersion()
	})
	close(release)
	if r := <-held; r.status != 200 || r.echo.GatewayCert != "CN=outbound one" {
		t.Errorf("request in flight during the push: %d %q", r.status, r.echo.GatewayCert)
	}
	// Every request after the push uses a connection with the new secret.
	for i := 0; i < 3; i++ {
		if got := presented(); got != "CN=outbound two" {
			t.Fatalf("request %d after the push: upstream saw %q, want CN=outbound two", i, got)
		}
	}
}

// TestUpstreamRequiresOutboundCertificate: without SDS the gateway has no
// client certificate, and the upstream refuses it: Envoy's router answers
// 503 for such a connection failure.
func TestUpstreamRequiresOutboundCertificate(t *testing.T) {
	be := newBackend(t)
	sp := newServerPKI(t)
	g, access := startGateway(t, gateway.Config{
		Wasm: wasm(t, abitestPkg), PluginConfig: []byte(`{}`), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, be.url()), UpstreamCAs: be.pool,
	})
	r := do(t, client(sp, nil, false), "GET", gwURL(g, "/"), nil, nil)
	if r.status != 503 {
		t.Fatalf("status %d without an outbound certificate, want 503; body %s", r.status, r.body)
	}
	if want := "flags=UF upstream_error="; !strings.Contains(access.String(), want) {
		t.Errorf("access log lacks the upstream error:\n%s", access.String())
	}
}
