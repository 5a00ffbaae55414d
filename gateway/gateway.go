// Package gateway is mtlsgate's local gateway: it terminates TLS like an Envoy
// listener with ACCEPT_UNTRUSTED client certificates, sets
// x-forwarded-client-cert as Envoy's HTTP connection manager does, runs each
// request through the compiled filter in the host-test proxy-wasm host, and
// forwards what the filter allows to an upstream, optionally presenting an
// outbound client certificate received over SDS. It lets the exact .wasm that
// ships to Envoy be exercised on a laptop with curl.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// Config configures a Gateway.
type Config struct {
	// Wasm is the compiled filter; WasmPath is read when Wasm is empty.
	Wasm     []byte
	WasmPath string
	// PluginConfig is the filter's JSON configuration (Envoy's
	// config.configuration); VMConfig is vm_config.configuration.
	PluginConfig, VMConfig []byte
	// PluginName, RootID and VMID are Envoy's name, root_id and vm_id;
	// each defaults to "mtlsgate" as in envoy.yaml.
	PluginName, RootID, VMID string
	// LogLevel is the filter log level (Envoy's --component-log-level wasm:...).
	// The zero value is trace, which logs every decision; `mtlsgate dev`
	// passes info, Envoy's default.
	LogLevel abi.LogLevel

	// Listen is the TLS listener address; Listener, when set, is used instead.
	Listen   string
	Listener net.Listener
	// Certificate is the serving certificate.
	Certificate tls.Certificate

	// Upstream is where allowed requests go (http:// or https://).
	Upstream *url.URL
	// UpstreamCAs verifies an https upstream; nil means the system roots.
	UpstreamCAs *x509.CertPool
	// UpstreamServerName overrides the SNI and verified name of the upstream.
	UpstreamServerName string
	// Clusters maps the cluster names the filter calls (proxy_http_call) to
	// base URLs, e.g. "mtlsgate_sidecar" -> "http://127.0.0.1:9913".
	Clusters map[string]string

	// Workers is the number of VMs; default GOMAXPROCS, one per Envoy worker.
	Workers int

	// RouteTimeout is Envoy's route timeout: from the end of the client's
	// request until the upstream's response is complete. Zero means Envoy's
	// default, 15 s; negative disables it (Envoy's timeout: 0s). When it
	// fires before the response headers the client gets 504 "upstream
	// request timeout"; after them, the stream is reset.
	RouteTimeout time.Duration

	// SDSAddr and UpstreamMTLSCert: subscribe to that tls_certificate over
	// SDS and present it to the upstream. NodeID identifies us to the SDS
	// server (default "mtlsgate-dev-<hostname>").
	SDSAddr, UpstreamMTLSCert, NodeID string
	// ClientCASecret, with SDSAddr: require a client certificate and verify
	// it at the handshake against this validation_context secret (the
	// sidecar's is "mtlsgate-client-ca"), as envoy.yaml's strict variant
	// does with require_client_certificate and VERIFY_TRUST_CHAIN. A client
	// without one, or whose chain fails, gets a TLS alert and never reaches
	// the filter, which then runs with chainVerification "envoy".
	ClientCASecret string

	// AccessLog receives one line per request; Log receives filter and
	// gateway diagnostics. Both default to discarding.
	AccessLog, Log io.Writer
	// AccessLogJSON writes access lines as JSON objects.
	AccessLogJSON bool
}

// DefaultRouteTimeout is Envoy's default route timeout.
const DefaultRouteTimeout = 15 * time.Second

// Gateway is a running local gateway.
type Gateway struct {
	cfg       Config
	mod       *hosttest.Module
	plugin    *hosttest.Plugin
	vms       []*hosttest.VM
	pool      chan *hosttest.VM
	transport atomic.Pointer[http.Transport]
	sds       *sdsClient
	clientCA  *sdsClient // nil unless Config.ClientCASecret
	srv       *http.Server
	ln        net.Listener
	logMu     sync.Mutex
	logw      io.Writer
	accessw   io.Writer
	connIDs   atomic.Uint64
	// conns holds each downstream connection's last reported state, HTTP/2
	// included (its server reports idle per connection through ConnState,
	// which http.Server's own idle tracking does not see).
	conns sync.Map // net.Conn -> http.ConnState

	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New compiles the filter, starts one VM per worker (each running its own
// timers and http callouts in real time, as Envoy's workers do), connects to
// SDS when asked, and binds the listener. Serve starts accepting.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, logw: cfg.Log, accessw: cfg.AccessLog}
	bgctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			g.close(context.Background())
		}
	}()

	mod, err := hosttest.Compile(ctx, cfg.Wasm)
	if err != nil {
		return nil, fmt.Errorf("load filter: %w", err)
	}
	g.mod = mod
	clusters := make(map[string]hosttest.Upstream, len(cfg.Clusters))
	for name, u := range cfg.Clusters {
		clusters[name] = hosttest.Upstream{URL: strings.TrimRight(u, "/")}
	}
	g.plugin = mod.NewPlugin(hosttest.PluginConfig{
		Name: cfg.PluginName, RootID: cfg.RootID, VMID: cfg.VMID,
		VMConfig: cfg.VMConfig, Configuration: cfg.PluginConfig,
		LogLevel: cfg.LogLevel, Clusters: clusters,
		// Envoy gives up on a callout after its timeout; a client without one
		// would let a hung sidecar pin the filter's refresh forever.
		HTTPClient: &http.Client{Timeout: 30 * time.Second},
	})
	g.pool = make(chan *hosttest.VM, cfg.Workers)
	for i := 0; i < cfg.Workers; i++ {
		vm, err := g.plugin.NewVM(ctx)
		if err != nil {
			return nil, fmt.Errorf("start filter VM %d: %w", i, err)
		}
		g.vms = append(g.vms, vm)
		vm.StartPump()
		g.pool <- vm
		g.bg.Add(1)
		go g.drainLogs(bgctx, i, vm)
	}

	if cfg.ClientCASecret != "" {
		g.clientCA = newSDSClient(cfg.SDSAddr, cfg.ClientCASecret, cfg.NodeID, g.logf, nil)
		g.clientCA.validation = true
		g.bg.Add(1)
		go func() {
			defer g.bg.Done()
			g.clientCA.run(bgctx)
		}()
	}
	if cfg.UpstreamMTLSCert != "" {
		g.sds = newSDSClient(cfg.SDSAddr, cfg.UpstreamMTLSCert, cfg.NodeID, g.logf, func() {
			// Pooled connections keep the certificate they were opened with,
			// and one busy at the moment of the push would otherwise be
			// reused indefinitely. A fresh pool makes every later request use
			// a connection that presents the new certificate; the old pool's
			// idle connections close now, its busy ones when they go idle.
			if old := g.transport.Swap(g.newTransport()); old != nil {
				old.CloseIdleConnections()
			}
		})
	}
	g.transport.Store(g.newTransport())
	if g.sds != nil {
		g.bg.Add(1)
		go func() {
			defer g.bg.Done()
			g.sds.run(bgctx)
		}()
	}

	ln := cfg.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
	}
	g.ln = ln
	g.srv = &http.Server{
		Handler:           http.HandlerFunc(g.serveHTTP),
		TLSConfig:         g.tlsConfig(),
		ConnContext:       g.connContext,
		ConnState:         g.trackConn,
		ReadHeaderTimeout: 30 * time.Second,
		// Envoy's max_request_headers_kb default: larger headers get 431
		// before any filter runs.
		MaxHeaderBytes: maxRequestHeadersKB << 10,
		// OPTIONS * is Envoy's to answer (404, a non-relative path), not
		// net/http's built-in 200.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     log.New(writerFunc(func(p []byte) (int, error) { g.logf("%s", strings.TrimSpace(string(p))); return len(p), nil }), "", 0),
	}
	ok = true
	return g, nil
}

// newTransport is the router's connection pool to the upstream.
func (g *Gateway) newTransport() *http.Transport {
	t := &http.Transport{
		ForceAttemptHTTP2: true,
		// A proxy passes accept-encoding and bodies through as they are; the
		// transport would otherwise ask for gzip itself and inflate the reply.
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
		// Bounds how long a pool replaced by a rotation keeps a connection
		// that was busy when it was replaced.
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig: &tls.Config{
			RootCAs:    g.cfg.UpstreamCAs,
			ServerName: g.cfg.UpstreamServerName,
			MinVersion: tls.VersionTLS12,
		},
	}
	if g.sds != nil {
		t.TLSClientConfig.GetClientCertificate = g.sds.Certificate
	}
	return t
}

func (cfg *Config) defaults() error {
	if len(cfg.Wasm) == 0 {
		if cfg.WasmPath == "" {
			return errors.New("no filter module: set Wasm or WasmPath")
		}
		b, err := os.ReadFile(cfg.WasmPath)
		if err != nil {
			return fmt.Errorf("read filter module: %w", err)
		}
		cfg.Wasm = b
	}
	if cfg.PluginName == "" {
		cfg.PluginName = "mtlsgate"
	}
	if cfg.RootID == "" {
		cfg.RootID = "mtlsgate"
	}
	if cfg.VMID == "" {
		cfg.VMID = "mtlsgate"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.RouteTimeout == 0 {
		cfg.RouteTimeout = DefaultRouteTimeout
	}
	if cfg.Upstream == nil || cfg.Upstream.Host == "" || (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https") {
		return errors.New("upstream must be an http:// or https:// URL with a host")
	}
	if cfg.Listener == nil && cfg.Listen == "" {
		return errors.New("no listen address")
	}
	if len(cfg.Certificate.Certificate) == 0 {
		return errors.New("no serving certificate")
	}
	if (cfg.SDSAddr == "") != (cfg.UpstreamMTLSCert == "" && cfg.ClientCASecret == "") {
		return errors.New("SDS needs both an address and the name of a secret: the upstream certificate, the client CA validation context, or both")
	}
	if cfg.NodeID == "" {
		h, _ := os.Hostname()
		cfg.NodeID = "mtlsgate-dev-" + h
	}
	if cfg.AccessLog == nil {
		cfg.AccessLog = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	return nil
}

// tlsConfig mirrors a DownstreamTlsContext with require_client_certificate
// false and trust_chain_verification ACCEPT_UNTRUSTED: every client is asked
// for a certificate, any certificate (or none) completes the handshake, and
// the filter decides.
//
// A client offering only protocols outside h2 and http/1.1 (curl --http1.0
// offers "http/1.0") completes the handshake without ALPN, as Envoy's ALPN
// callback answers no match with SSL_TLSEXT_ERR_NOACK; crypto/tls would
// refuse the handshake with no_application_protocol, and the request would
// never reach the codec that answers HTTP/1.0 with 426.
func (g *Gateway) tlsConfig() *tls.Config {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{g.cfg.Certificate},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}
	if g.clientCA != nil {
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = g.verifyClient
	}
	noALPN := cfg.Clone()
	noALPN.NextProtos = nil
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		for _, p := range hello.SupportedProtos {
			if p == "h2" || p == "http/1.1" {
				return nil, nil
			}
		}
		if len(hello.SupportedProtos) == 0 {
			return nil, nil
		}
		return noALPN, nil
	}
	return cfg
}

// Workers is the number of filter VMs.
func (g *Gateway) Workers() int { return len(g.vms) }

// Addr is the listener's address.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Serve accepts connections until Shutdown; it returns nil after a shutdown.
func (g *Gateway) Serve() error {
	err := g.srv.ServeTLS(g.ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// SDSReady is closed when the first upstream certificate arrived over SDS
// (nil when SDS is not configured).
func (g *Gateway) SDSReady() <-chan struct{} {
	if g.sds == nil {
		return nil
	}
	return g.sds.Ready()
}

// ClientCAReady is closed when the first client validation context arrived
// over SDS (nil without Config.ClientCASecret).
func (g *Gateway) ClientCAReady() <-chan struct{} {
	if g.clientCA == nil {
		return nil
	}
	return g.clientCA.Ready()
}

// SDSVersion is the version of the upstream certificate in use.
func (g *Gateway) SDSVersion() string {
	if g.sds == nil {
		return ""
	}
	return g.sds.Version()
}

// Plugin exposes the filter's shared state (shared data, metrics), which
// Envoy shows on its admin endpoint.
func (g *Gateway) Plugin() *hosttest.Plugin { return g.plugin }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then stops the VMs and the SDS stream.
func (g *Gateway) Shutdown(ctx context.Context) error {
	// http.Server.Shutdown closes idle HTTP/1 connections itself but counts an
	// HTTP/2 connection as active for its whole life, relying on GOAWAY; a
	// client that keeps an idle HTTP/2 connection open then holds shutdown
	// until the deadline. Close connections once they report idle.
	stop := make(chan struct{})
	go g.closeIdle(stop)
	err := g.srv.Shutdown(ctx)
	close(stop)
	if cerr := g.close(ctx); err == nil {
		err = cerr
	}
	return err
}

func (g *Gateway) trackConn(c net.Conn, st http.ConnState) {
	if st == http.StateClosed || st == http.StateHijacked {
		g.conns.Delete(c)
		return
	}
	g.conns.Store(c, st)
}

func (g *Gateway) closeIdle(stop <-chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			g.conns.Range(func(k, v any) bool {
				if v.(http.ConnState) == http.StateIdle {
					k.(net.Conn).Close()
				}
				return true
			})
		}
	}
}

func (g *Gateway) close(ctx context.Context) error {
	if g.cancel != nil {
		g.cancel()
	}
	if t := g.transport.Load(); t != nil {
		t.CloseIdleConnections()
	}
	var errs []error
	for _, vm := range g.vms {
		if err := vm.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	g.bg.Wait()
	if g.mod != nil {
		if err := g.mod.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		g.mod = nil
	}
	g.vms = nil
	return errors.Join(errs...)
}

// drainLogs moves the filter's log lines to the log writer, so a long-running
// gateway neither loses them nor keeps them all in memory.
func (g *Gateway) drainLogs(ctx context.Context, worker int, vm *hosttest.VM) {
	defer g.bg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	flush := func() {
		for _, l := range vm.TakeLogs() {
			g.logf("wasm[%d] %s", worker, l)
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case <-t.C:
			flush()
		}
	}
}

func (g *Gateway) logf(format string, args ...any) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	fmt.Fprintf(g.logw, time.Now().Format("2006-01-02T15:04:05.000Z07:00")+" "+format+"\n", args...)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
