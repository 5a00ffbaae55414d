// Package devcmd is the `mtlsgate dev` command: the local gateway that runs
// the compiled filter in front of an upstream, as Envoy would.
package devcmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// Usage is the command's synopsis, for the top-level help.
const Usage = "dev --wasm F --plugin-config F --listen ADDR --tls-cert F --tls-key F --upstream URL [--cluster NAME=URL ...] [--workers N] [--route-timeout D] [--sds ADDR --upstream-mtls-cert NAME]"

type clusterFlag map[string]string

func (c clusterFlag) String() string {
	var parts []string
	for k, v := range c {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (c clusterFlag) Set(s string) error {
	name, u, ok := strings.Cut(s, "=")
	if !ok || name == "" || u == "" {
		return fmt.Errorf("want NAME=URL, e.g. mtlsgate_sidecar=http://127.0.0.1:9913")
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return fmt.Errorf("cluster %s: %q is not an http:// or https:// URL", name, u)
	}
	c[name] = u
	return nil
}

var logLevels = map[string]abi.LogLevel{"trace": abi.LogTrace, "debug": abi.LogDebug, "info": abi.LogInfo,
	"warn": abi.LogWarn, "warning": abi.LogWarn, "error": abi.LogError, "critical": abi.LogCritical}

// Run runs `mtlsgate dev` until SIGINT or SIGTERM and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtlsgate dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clusters := clusterFlag{}
	var (
		wasmPath     = fs.String("wasm", "build/mtlsgate.wasm", "the compiled filter (the same file Envoy loads)")
		pluginConfig = fs.String("plugin-config", "", "the filter's JSON configuration (Envoy's config.configuration)")
		listen       = fs.String("listen", "127.0.0.1:8443", "TLS listen address")
		tlsCert      = fs.String("tls-cert", "", "serving certificate chain (PEM)")
		tlsKey       = fs.String("tls-key", "", "serving private key (PEM)")
		upstream     = fs.String("upstream", "", "where allowed requests go: http://host:port or https://host:port")
		upstreamCA   = fs.String("upstream-ca", "", "CA certificates (PEM) that verify an https upstream (default: system roots)")
		upstreamSNI  = fs.String("upstream-server-name", "", "SNI and verified name for the upstream (default: its host)")
		workers      = fs.Int("workers", 0, "filter VMs, one per Envoy worker (default GOMAXPROCS)")
		routeTimeout = fs.Duration("route-timeout", gateway.DefaultRouteTimeout, "Envoy's route timeout: end of request to end of response; 0 disables")
		sdsAddr      = fs.String("sds", "", "SDS server (host:port) to fetch secrets from (--upstream-mtls-cert, --client-ca-secret)")
		mtlsCert     = fs.String("upstream-mtls-cert", "", "SDS secret name of the client certificate presented to the upstream")
		clientCA     = fs.String("client-ca-secret", "", "SDS validation context that verifies clients at the handshake, as envoy.yaml's strict variant does (the sidecar's is mtlsgate-client-ca); pair it with chainVerification \"envoy\"")
		nodeID       = fs.String("node-id", "", "node id sent to the SDS server (default mtlsgate-dev-<hostname>)")
		logLevel     = fs.String("log-level", "info", "filter log level: trace, debug, info, warn, error, critical")
		rootID       = fs.String("root-id", "mtlsgate", "plugin root_id")
		vmID         = fs.String("vm-id", "mtlsgate", "vm_id")
		output       = fs.String("output", "text", "access log format: text or json")
	)
	fs.Var(clusters, "cluster", "NAME=URL for the filter's http callouts (repeatable), e.g. mtlsgate_sidecar=http://127.0.0.1:9913")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: mtlsgate %s\n\nFlags:\n", Usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mtlsgate dev: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q; every setting is a flag (see mtlsgate dev --help)", fs.Arg(0))
	}
	if *pluginConfig == "" {
		return fail("--plugin-config is required: the filter's JSON configuration, e.g. a file from policies/")
	}
	if *tlsCert == "" || *tlsKey == "" {
		return fail("--tls-cert and --tls-key are required: the certificate and key the gateway serves")
	}
	if *upstream == "" {
		return fail("--upstream is required: the URL allowed requests are forwarded to, e.g. https://127.0.0.1:9443")
	}
	up, err := url.Parse(*upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return fail("--upstream %q: want an http:// or https:// URL with a host, e.g. https://127.0.0.1:9443", *upstream)
	}
	if (*sdsAddr == "") != (*mtlsCert == "" && *clientCA == "") {
		return fail("--sds goes with --upstream-mtls-cert, --client-ca-secret or both: the SDS address and the secret names to fetch from it")
	}
	if *output != "text" && *output != "json" {
		return fail("--output %q: want text or json", *output)
	}
	lvl, ok := logLevels[strings.ToLower(*logLevel)]
	if !ok {
		return fail("--log-level %q: want trace, debug, info, warn, error or critical", *logLevel)
	}
	if *routeTimeout < 0 {
		return fail("--route-timeout %v: want a duration of 0 (no timeout) or more, e.g. 15s", *routeTimeout)
	}
	rto := *routeTimeout
	if rto == 0 {
		rto = -1 // gateway.Config: negative disables, zero is the default
	}
	plugin, err := os.ReadFile(*pluginConfig)
	if err != nil {
		return fail("read --plugin-config: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
	if err != nil {
		return fail("load --tls-cert/--tls-key: %v", err)
	}
	var cas *x509.CertPool
	if *upstreamCA != "" {
		b, err := os.ReadFile(*upstreamCA)
		if err != nil {
			return fail("read --upstream-ca: %v", err)
		}
		cas = x509.NewCertPool()
		if !cas.AppendCertsFromPEM(b) {
			return fail("--upstream-ca %s holds no PEM certificate", *upstreamCA)
		}
	}
	if _, err := os.Stat(*wasmPath); err != nil {
		return fail("--wasm %s: %v (run 'make build' first)", *wasmPath, err)
	}
	cfg := gateway.Config{
		WasmPath: *wasmPath, PluginConfig: plugin, RootID: *rootID, VMID: *vmID, LogLevel: lvl,
		Listen: *listen, Certificate: cert, Upstream: up, UpstreamCAs: cas, UpstreamServerName: *upstreamSNI,
		Clusters: clusters, Workers: *workers, RouteTimeout: rto, SDSAddr: *sdsAddr, UpstreamMTLSCert: *mtlsCert, ClientCASecret: *clientCA, NodeID: *nodeID,
		AccessLog: stdout, Log: stderr, AccessLogJSON: *output == "json",
	}
	g, err := gateway.New(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "mtlsgate dev: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "mtlsgate dev: listening on https://%s, forwarding to %s with %d filter VM(s)\n", g.Addr(), up, g.Workers())
	return serve(ctx, g, stderr)
}

// serve runs g until ctx ends, then drains in-flight requests.
func serve(ctx context.Context, g *gateway.Gateway, stderr io.Writer) int {
	errc := make(chan error, 1)
	go func() { errc <- g.Serve() }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "mtlsgate dev: %v\n", err)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(sctx)
		return 1
	case <-ctx.Done():
	}
	fmt.Fprintln(stderr, "mtlsgate dev: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "mtlsgate dev: shutdown: %v\n", err)
		return 1
	}
	<-errc
	return 0
}
