package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// Packages of the two filters the setups run.
const (
	FilterPkg = "github.com/mtlsgate/mtlsgate/filter"
	NoopPkg   = "github.com/mtlsgate/mtlsgate/filter/examples/noop"
)

// WasmFile returns the path of a compiled filter: $MTLSGATE_WASM for the
// mtlsgate filter when set (what `make` built), else a cached build of pkg.
func WasmFile(pkg string) (string, error) {
	if p := os.Getenv("MTLSGATE_WASM"); p != "" && pkg == FilterPkg {
		return p, nil
	}
	return hosttest.BuildWasm(pkg)
}

// PKI is a server certificate for the gateway and a client CA with n client
// certificates under it.
type PKI struct {
	Server     tls.Certificate
	ServerRoot *x509.CertPool
	ClientCA   *testpki.Cert
	Clients    []tls.Certificate
	Leaves     []*testpki.Cert
}

// NewPKI builds the certificates; client leaves share one key (the
// verifier's work does not depend on it) so hundreds stay cheap.
func NewPKI(n int) (*PKI, error) {
	sca, err := testpki.NewRoot(testpki.Options{CommonName: "loadtest server CA"})
	if err != nil {
		return nil, err
	}
	srv, err := sca.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, err
	}
	p := &PKI{ServerRoot: x509.NewCertPool()}
	p.ServerRoot.AddCert(sca.Cert)
	if p.Server, err = tls.X509KeyPair(srv.PEM(), srv.KeyPEM()); err != nil {
		return nil, err
	}
	if p.ClientCA, err = testpki.NewRoot(testpki.Options{CommonName: "loadtest client CA"}); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		o := testpki.Options{CommonName: "client-" + strconv.Itoa(i)}
		if i > 0 {
			o.Signer = p.Leaves[0].Key
		}
		leaf, err := p.ClientCA.Issue(o)
		if err != nil {
			return nil, err
		}
		p.Leaves = append(p.Leaves, leaf)
		c, err := tls.X509KeyPair(leaf.PEM(), leaf.KeyPEM())
		if err != nil {
			return nil, err
		}
		p.Clients = append(p.Clients, c)
	}
	return p, nil
}

// Setup names a gateway configuration under test.
type Setup string

const (
	WithFilter Setup = "filter" // build/mtlsgate.wasm, mtls policy, inline bundle
	WithNoop   Setup = "noop"   // the no-op filter: the host's own cost
	NoWasm     Setup = "nowasm" // a plain TLS reverse proxy
)

// Stack is an upstream and a gateway (or plain proxy) in front of it.
type Stack struct {
	URL      string
	Upstream *httptest.Server
	Gateway  *gateway.Gateway
	close    func()
}

// Close stops everything.
func (s *Stack) Close() { s.close() }

// Start runs setup on loopback in front of a trivial upstream. pluginConfig
// overrides the filter's configuration (nil: one mtls policy with the PKI's
// client CA inline).
func Start(ctx context.Context, setup Setup, p *PKI, pluginConfig []byte, clusters map[string]string) (*Stack, error) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "text/plain")
		// Echo the identity so checks can see what the upstream received.
		w.Header().Set("x-seen-user-sub", r.Header.Get("x-user-sub"))
		_, _ = w.Write([]byte("ok"))
	}))
	u, _ := url.Parse(up.URL)
	st := &Stack{Upstream: up}
	if setup == NoWasm {
		pp, err := NewPlainProxy("127.0.0.1:0", p.Server, u)
		if err != nil {
			up.Close()
			return nil, err
		}
		st.URL = "https://" + pp.Addr().String()
		st.close = func() { pp.Close(); up.Close() }
		return st, nil
	}
	pkg, cfg := FilterPkg, pluginConfig
	if setup == WithNoop {
		pkg, cfg = NoopPkg, []byte(`{}`)
	} else if cfg == nil {
		cfg, _ = json.Marshal(map[string]any{
			"policies": []any{map[string]any{"name": "mtls", "policyType": "mtls-auth-inbound",
				"handler": map[string]any{"export": "MTLSAuthInboundPolicy", "module": "$import(@zuplo/runtime)", "options": map[string]any{}}}},
			"trustBundle": map[string]any{"caCertificates": []string{string(p.ClientCA.PEM())}},
		})
	}
	path, err := WasmFile(pkg)
	if err != nil {
		up.Close()
		return nil, err
	}
	// Info, as `mtlsgate dev` and Envoy run by default: at the zero level
	// (trace) the filter formats and logs every decision, which measures the
	// logging, not the filter.
	g, err := gateway.New(ctx, gateway.Config{WasmPath: path, PluginConfig: cfg, Listen: "127.0.0.1:0",
		Certificate: p.Server, Upstream: u, Clusters: clusters, LogLevel: abi.LogInfo})
	if err != nil {
		up.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	go func() { _ = g.Serve() }()
	st.Gateway = g
	st.URL = "https://" + g.Addr().String()
	st.close = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(sctx)
		up.Close()
	}
	return st, nil
}
