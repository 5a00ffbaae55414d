// Package demo is `mtlsgate demo`, behind `make run` and `make demo`: it
// creates a demo PKI, starts the sidecar and loads it through the CLI, starts
// an upstream that requires the gateway's outbound certificate, runs the local
// gateway with the real filter, and prints (or, with --check, runs) curl
// commands showing each outcome.
package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
)

// Usage is the command's synopsis, for the top-level help.
const Usage = "demo [--state DIR] [--interactive | --check]"

// Names the demo registers in the sidecar; envoy.yaml uses the same
// outbound certificate name.
const (
	caName       = "demo_client_root"
	outboundName = "backend_client_cert"
	sidecarName  = "mtlsgate_sidecar"
)

type options struct {
	state, wasm, policy, bin             string
	listen, upstreamListen               string
	adminListen, sdsListen, bundleListen string
	check, interactive, json             bool
	refreshSeconds                       int
	readyTimeout                         time.Duration
}

// Run runs `mtlsgate demo` and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mtlsgate demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.state, "state", ".state/demo", "directory for the demo PKI, the sidecar's store and logs")
	fs.BoolVar(&o.interactive, "interactive", false, "print the curl commands and run until Ctrl-C (the default)")
	fs.BoolVar(&o.check, "check", false, "run the requests, print each result, exit 0 only if all behave as documented")
	fs.StringVar(&o.wasm, "wasm", "build/mtlsgate.wasm", "the compiled filter")
	fs.StringVar(&o.policy, "policy", "policies/basic.json", "plugin configuration; its trustBundle is pointed at the sidecar")
	fs.StringVar(&o.bin, "mtlsgate", "", "mtlsgate binary that runs the sidecar and the CLI (default: this program)")
	fs.StringVar(&o.listen, "listen", "", "gateway address (default 127.0.0.1:8443; --check: a free port)")
	fs.StringVar(&o.upstreamListen, "upstream-listen", "", "demo upstream address (default 127.0.0.1:9443; --check: a free port)")
	fs.StringVar(&o.adminListen, "admin-listen", "", "sidecar admin API (default 127.0.0.1:9911; --check: a free port)")
	fs.StringVar(&o.sdsListen, "sds-listen", "", "sidecar SDS (default 127.0.0.1:9912; --check: a free port)")
	fs.StringVar(&o.bundleListen, "bundle-listen", "", "sidecar bundle endpoint (default 127.0.0.1:9913; --check: a free port)")
	fs.IntVar(&o.refreshSeconds, "refresh-seconds", 5, "how often the filter refreshes its trust bundle from the sidecar")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long to wait for the pieces to come up")
	fs.Func("output", "text (the default) or json: one JSON document on stdout (addresses, curl commands and, with --check, each result); progress goes to stderr", func(v string) error {
		switch v {
		case "text":
			o.json = false
		case "json":
			o.json = true
		default:
			return fmt.Errorf("%q: use text or json", v)
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mtlsgate demo: unexpected argument %q; run mtlsgate demo --help\n", fs.Arg(0))
		return 2
	}
	if o.check && o.interactive {
		fmt.Fprintln(stderr, "mtlsgate demo: --check and --interactive exclude each other; pick one")
		return 2
	}
	if o.refreshSeconds < 1 {
		fmt.Fprintln(stderr, "mtlsgate demo: --refresh-seconds must be at least 1")
		return 2
	}
	defaultAddr := func(p *string, interactive string) {
		if *p != "" {
			return
		}
		if o.check {
			*p = "127.0.0.1:0"
		} else {
			*p = interactive
		}
	}
	defaultAddr(&o.listen, "127.0.0.1:8443")
	defaultAddr(&o.upstreamListen, "127.0.0.1:9443")
	defaultAddr(&o.adminListen, "127.0.0.1:9911")
	defaultAddr(&o.sdsListen, "127.0.0.1:9912")
	defaultAddr(&o.bundleListen, "127.0.0.1:9913")
	if o.bin == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "mtlsgate demo: locate this program: %v; pass --mtlsgate build/mtlsgate\n", err)
			return 1
		}
		o.bin = exe
	}
	d := &demo{o: o, stdout: stdout, stderr: stderr}
	code := d.run(ctx)
	d.stop()
	return code
}

type demo struct {
	o              options
	stdout, stderr io.Writer
	pki            PKI
	sidecar        *exec.Cmd
	sidecarDone    chan error
	addrs          sidecarAddrs
	upstream       *http.Server
	upstreamAddr   string
	gw             *gateway.Gateway
	gwDone         chan error
	gwLog          *os.File
	// echo turns on the access lines on the console once the gateway is
	// ready, so the readiness probes do not show there.
	echo atomic.Bool
	logs []*os.File
}

type sidecarAddrs struct {
	Admin     string `json:"admin"`
	SDS       string `json:"sds"`
	Bundle    string `json:"bundle"`
	TokenFile string `json:"adminTokenFile"`
}

// say reports progress: on stdout for a reader, on stderr when stdout
// carries the JSON document.
func (d *demo) say(format string, args ...any) {
	w := d.stdout
	if d.o.json {
		w = d.stderr
	}
	fmt.Fprintf(w, format+"\n", args...)
}

func (d *demo) fail(format string, args ...any) int {
	fmt.Fprintf(d.stderr, "mtlsgate demo: "+format+"\n", args...)
	return 1
}

func (d *demo) run(ctx context.Context) int {
	o := d.o
	if _, err := os.Stat(o.wasm); err != nil {
		return d.fail("filter %s: %v (run 'make build' first)", o.wasm, err)
	}
	if err := os.MkdirAll(o.state, 0o700); err != nil {
		return d.fail("create state directory: %v", err)
	}
	pki, fresh, err := EnsurePKI(filepath.Join(o.state, "pki"), time.Now())
	if err != nil {
		return d.fail("demo PKI: %v", err)
	}
	d.pki = pki
	dataDir := filepath.Join(o.state, "sidecar")
	if fresh {
		// A new PKI invalidates what an earlier run uploaded.
		if err := os.RemoveAll(dataDir); err != nil {
			return d.fail("reset sidecar store: %v", err)
		}
		d.say("Created the demo PKI in %s", pki.Dir)
	} else {
		d.say("Reusing the demo PKI in %s", pki.Dir)
	}

	if err := d.startSidecar(ctx, dataDir); err != nil {
		return d.fail("%v%s", err, d.portHint(err))
	}
	d.say("Sidecar:  admin http://%s  SDS %s  bundle http://%s/v1/bundle (log: %s)", d.addrs.Admin, d.addrs.SDS, d.addrs.Bundle, filepath.Join(o.state, "sidecar.log"))
	if err := d.register(ctx); err != nil {
		return d.fail("%v", err)
	}
	if err := d.startUpstream(); err != nil {
		return d.fail("%v%s", err, d.portHint(err))
	}
	d.say("Upstream: https://%s (echoes the request headers as JSON; requires the gateway's client certificate)", d.upstreamAddr)
	if err := d.startGateway(ctx); err != nil {
		return d.fail("%v%s", err, d.portHint(err))
	}
	if err := d.waitReady(ctx); err != nil {
		return d.fail("%v", err)
	}
	d.echo.Store(!o.check)
	d.say("Gateway:  https://%s (filter %s, policy %s; access log: %s)", d.gw.Addr(), o.wasm, o.policy, filepath.Join(o.state, "gateway.log"))
	d.say("")
	if o.check {
		return d.check(ctx)
	}
	if o.json {
		d.report(nil)
	}
	d.printCurls()
	d.say("Press Ctrl-C to stop.")
	select {
	case <-ctx.Done():
	case err := <-d.gwDone:
		return d.fail("gateway stopped: %v", err)
	case err := <-d.sidecarDone:
		return d.fail("sidecar stopped: %v (see %s)", err, filepath.Join(o.state, "sidecar.log"))
	}
	d.say("\nStopping.")
	return 0
}

func (d *demo) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(d.o.state, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	d.logs = append(d.logs, f)
	return f, nil
}

// startSidecar runs `mtlsgate serve` as a child process, as an operator
// would, and reads its ready line for the bound addresses.
func (d *demo) startSidecar(ctx context.Context, dataDir string) error {
	logf, err := d.logFile("sidecar.log")
	if err != nil {
		return err
	}
	// The log is kept across runs; only this run's lines explain a failure.
	var from int64
	if fi, err := logf.Stat(); err == nil {
		from = fi.Size()
	}
	cmd := exec.Command(d.o.bin, "serve", "--data-dir", dataDir, "--admin-listen", d.o.adminListen,
		"--sds-listen", d.o.sdsListen, "--bundle-listen", d.o.bundleListen, "--environment", "development", "--output", "json")
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("sidecar stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sidecar (%s serve): %w", d.o.bin, err)
	}
	d.sidecar = cmd
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
				continue
			}
			fmt.Fprintln(logf, sc.Text())
		}
		if first {
			close(lines)
		}
	}()
	d.sidecarDone = make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		d.sidecarDone <- cmd.Wait()
		close(exited)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			<-exited
			return fmt.Errorf("sidecar exited before it was ready: %s (see %s)", lastLines(logf.Name(), from, 3), logf.Name())
		}
		if err := json.Unmarshal([]byte(line), &d.addrs); err != nil || d.addrs.Admin == "" {
			return fmt.Errorf("sidecar ready line %q: %v", line, err)
		}
	case <-time.After(d.o.readyTimeout):
		return fmt.Errorf("sidecar not ready within %s; see %s", d.o.readyTimeout, logf.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// cli runs one management command through the mtlsgate binary, exactly as a
// user would type it, and decodes its JSON output.
func (d *demo) cli(ctx context.Context, out any, args ...string) error {
	full := append(append([]string{}, args...), "--server", "http://"+d.addrs.Admin, "--admin-token-file", d.addrs.TokenFile, "--output", "json")
	cmd := exec.CommandContext(ctx, d.o.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mtlsgate %s: %v: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			return fmt.Errorf("mtlsgate %s: decode output: %w", strings.Join(args[:2], " "), err)
		}
	}
	return nil
}

// register uploads the client root CA and the gateway's outbound certificate,
// unless an earlier run with the same PKI already did.
func (d *demo) register(ctx context.Context) error {
	var cas []struct{ Name string }
	if err := d.cli(ctx, &cas, "ca-certificate", "list"); err != nil {
		return err
	}
	if !hasName(cas, caName) {
		if err := d.cli(ctx, nil, "ca-certificate", "create", "--name", caName, "--cert", d.pki.Path(RootCA)); err != nil {
			return err
		}
		d.say("Uploaded:  ca-certificate %s (%s)", caName, d.pki.Path(RootCA))
	}
	var outs []struct{ Name string }
	if err := d.cli(ctx, &outs, "mtls-certificate", "list"); err != nil {
		return err
	}
	if !hasName(outs, outboundName) {
		if err := d.cli(ctx, nil, "mtls-certificate", "create", "--name", outboundName, "--cert", d.pki.Path(OutboundCert),
			"--key", d.pki.Path(OutboundKey), "--environment-type", "development"); err != nil {
			return err
		}
		d.say("Uploaded:  mtls-certificate %s (%s)", outboundName, d.pki.Path(OutboundCert))
	}
	return nil
}

func hasName(list []struct{ Name string }, name string) bool {
	for _, e := range list {
		if e.Name == name {
			return true
		}
	}
	return false
}

func (d *demo) startUpstream() error {
	read := func(n string) ([]byte, error) { return os.ReadFile(d.pki.Path(n)) }
	cert, err1 := read(BackendCert)
	key, err2 := read(BackendKey)
	ca, err3 := read(BackendCA)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("upstream certificates: %w", err)
	}
	tc, err := UpstreamTLS(cert, key, ca)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", d.o.upstreamListen)
	if err != nil {
		return fmt.Errorf("upstream: listen on %s: %w (pass --upstream-listen)", d.o.upstreamListen, err)
	}
	d.upstreamAddr = ln.Addr().String()
	d.upstream = &http.Server{Handler: EchoHandler(), TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = d.upstream.Serve(tls.NewListener(ln, tc)) }()
	return nil
}

// pluginConfig is the chosen policy file with its trustBundle pointed at the
// sidecar cluster and the demo's refresh period.
func (d *demo) pluginConfig() ([]byte, error) {
	b, err := os.ReadFile(d.o.policy)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("policy %s: %w", d.o.policy, err)
	}
	tb, _ := json.Marshal(map[string]any{"cluster": sidecarName, "path": "/v1/bundle", "refreshSeconds": d.o.refreshSeconds})
	cfg["trustBundle"] = tb
	return json.Marshal(cfg)
}

func (d *demo) startGateway(ctx context.Context) error {
	plugin, err := d.pluginConfig()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(d.pki.Path(ServerCert), d.pki.Path(ServerKey))
	if err != nil {
		return fmt.Errorf("gateway certificate: %w", err)
	}
	caPEM, err := os.ReadFile(d.pki.Path(BackendCA))
	if err != nil {
		return fmt.Errorf("backend CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	_, port, _ := net.SplitHostPort(d.upstreamAddr)
	logf, err := d.logFile("gateway.log")
	if err != nil {
		return err
	}
	d.gwLog = logf
	echo := d.stdout
	if d.o.json {
		echo = d.stderr // stdout carries only the JSON document
	}
	g, err := gateway.New(ctx, gateway.Config{
		WasmPath: d.o.wasm, PluginConfig: plugin, Listen: d.o.listen, Certificate: cert,
		Upstream: &url.URL{Scheme: "https", Host: "localhost:" + port}, UpstreamCAs: pool,
		Clusters: map[string]string{sidecarName: "http://" + d.addrs.Bundle},
		SDSAddr:  d.addrs.SDS, UpstreamMTLSCert: outboundName, NodeID: "mtlsgate-demo",
		AccessLog: io.MultiWriter(logf, prefixWriter{w: echo, prefix: "access: ", on: &d.echo}), Log: logf,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	d.gw = g
	d.gwDone = make(chan error, 1)
	go func() { d.gwDone <- g.Serve() }()
	return nil
}

// waitReady waits for the outbound certificate over SDS and the first trust
// bundle in the filter (before it, protected routes answer 503).
func (d *demo) waitReady(ctx context.Context) error {
	deadline := time.After(d.o.readyTimeout)
	select {
	case <-d.gw.SDSReady():
	case <-deadline:
		return fmt.Errorf("no outbound certificate over SDS within %s; see %s", d.o.readyTimeout, filepath.Join(d.o.state, "gateway.log"))
	case <-ctx.Done():
		return ctx.Err()
	}
	c, err := d.client("")
	if err != nil {
		return err
	}
	// The probes land in the access log; say so there, so their 503s and 401
	// do not read as failures.
	fmt.Fprintf(d.gwLog, "%s demo: readiness probes follow: GET / without a certificate until the filter has its first trust bundle (503 TRUST_BUNDLE_UNAVAILABLE before it, then 401 NO_CERTIFICATE)\n", time.Now().Format(time.RFC3339))
	for {
		resp, err := c.Get(d.url("/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				return nil
			}
		}
		select {
		case <-deadline:
			return fmt.Errorf("the filter has no trust bundle after %s; see %s", d.o.readyTimeout, filepath.Join(d.o.state, "gateway.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *demo) url(path string) string {
	_, port, _ := net.SplitHostPort(d.gw.Addr().String())
	return "https://localhost:" + port + path
}

// client presents the named demo certificate ("" for none) and trusts the
// demo server CA, as the printed curl commands do.
func (d *demo) client(certName string) (*http.Client, error) {
	caPEM, err := os.ReadFile(d.pki.Path(ServerCA))
	if err != nil {
		return nil, fmt.Errorf("server CA: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if certName != "" {
		kp, err := tls.LoadX509KeyPair(d.pki.Path(certName), d.pki.Path(keyFor[certName]))
		if err != nil {
			return nil, fmt.Errorf("client certificate %s: %w", certName, err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}, nil
}

var keyFor = map[string]string{GoodCert: GoodKey, ExpiredCert: ExpiredKey, OtherCert: OtherKey}

func (d *demo) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d.gw != nil {
		if err := d.gw.Shutdown(ctx); err != nil {
			fmt.Fprintf(d.stderr, "mtlsgate demo: gateway shutdown: %v\n", err)
		}
	}
	if d.upstream != nil {
		_ = d.upstream.Shutdown(ctx)
	}
	if d.sidecar != nil && d.sidecar.Process != nil {
		_ = d.sidecar.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.sidecarDone:
		case <-ctx.Done():
			_ = d.sidecar.Process.Kill()
			<-d.sidecarDone
		}
	}
	for _, f := range d.logs {
		f.Close()
	}
}

// prefixWriter copies whole lines to w with a prefix, while on.
type prefixWriter struct {
	w      io.Writer
	prefix string
	on     *atomic.Bool
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if p.on.Load() {
		fmt.Fprint(p.w, p.prefix+string(b))
	}
	return len(b), nil
}

// lastLines is the last n non-empty lines written to path after offset from,
// joined by " | ": the reason a child process gave for exiting.
func lastLines(path string, from int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "no log"
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return "no log"
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "it wrote nothing"
	}
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// portHint names the flag that moves a listener an error reports as taken,
// with a free-looking alternative: ports clash when another demo or sidecar
// is still running.
func (d *demo) portHint(err error) string {
	msg := err.Error()
	if !strings.Contains(msg, "address already in use") {
		return ""
	}
	for _, l := range []struct{ flag, addr string }{
		{"--admin-listen", d.o.adminListen}, {"--sds-listen", d.o.sdsListen}, {"--bundle-listen", d.o.bundleListen},
		{"--listen", d.o.listen}, {"--upstream-listen", d.o.upstreamListen},
	} {
		host, port, err := net.SplitHostPort(l.addr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n == 0 || !strings.Contains(msg, "listen on "+l.addr+":") {
			continue
		}
		if n += 10000; n > 65535 {
			n -= 20000
		}
		alt := l.flag + " " + net.JoinHostPort(host, strconv.Itoa(n))
		return fmt.Sprintf("; %s is taken (another make run or mtlsgate serve?): stop it, or move this listener with %s (make run DEMOFLAGS=\"%s\")", l.addr, alt, alt)
	}
	return ""
}
