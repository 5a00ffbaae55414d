// Package cli implements `mtlsgate serve`, `mtlsgate health`, the
// management commands (ca-certificate, crl, mtls-certificate, profile,
// audit) that drive a running sidecar through its admin API, and
// `mtlsgate bundle-key`, which works on files alone.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
	"github.com/mtlsgate/mtlsgate/sidecar/termtext"
)

// errUsage marks a command-line mistake (exit 2) already reported.
var errUsage = errors.New("usage")

// Run executes one command; args[0] is the command name.
func Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "mtlsgate: missing command; run 'mtlsgate help'\n")
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stdout, stderr)
	case "health":
		err = health(args[1:], stdout, stderr)
	case "ca-certificate", "crl", "mtls-certificate", "profile", "audit":
		return manage(args[0], args[1:], stdout, stderr)
	case "bundle-key":
		return bundleKey(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "mtlsgate: unknown command %q; run 'mtlsgate help'\n", args[0])
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "mtlsgate %s: %s\n", args[0], termtext.Sanitize(err.Error()))
		return 1
	}
}

type outputFlag struct{ json bool }

func (o *outputFlag) String() string {
	if o.json {
		return "json"
	}
	return "table"
}

func (o *outputFlag) Set(v string) error {
	switch v {
	case "json":
		o.json = true
	case "table", "text":
		o.json = false
	default:
		return fmt.Errorf("--output %q: use json or table", v)
	}
	return nil
}

// parse parses flags, reporting mistakes on stderr as one line.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return flag.ErrHelp
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && (name == "account" || name == "project") {
			// Commands copied from a hosted gateway's documentation.
			fmt.Fprintf(stderr, "mtlsgate %s: --%s: mtlsgate has no accounts or projects; it manages the sidecar at --server (default $MTLSGATE_SERVER or %s), so drop --%s\n", fs.Name(), name, api.DefaultServer, name)
			return errUsage
		}
		fmt.Fprintf(stderr, "mtlsgate %s: %v; run with -h for the flags\n", fs.Name(), err)
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mtlsgate %s: unexpected argument %q; values are given with flags, run with -h for the list\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg daemon.Config
	var out outputFlag
	fs.StringVar(&cfg.DataDir, "data-dir", daemon.DefaultDataDir, "directory of the store (created 0700 if missing; an existing one keeps its mode)")
	fs.StringVar(&cfg.AdminListen, "admin-listen", daemon.DefaultAdminListen, "admin API address (host:port or unix:/path)")
	fs.StringVar(&cfg.SDSListen, "sds-listen", daemon.DefaultSDSListen, "SDS gRPC address (host:port or unix:/path)")
	fs.StringVar(&cfg.BundleListen, "bundle-listen", daemon.DefaultBundleListen, "trust bundle endpoint address (host:port or unix:/path)")
	fs.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "bearer token file for the admin API, generated (0600) if absent (default <data-dir>/admin-token)")
	fs.StringVar(&cfg.EncryptionKeyFile, "encryption-key-file", "", "32-byte key (raw, hex or base64) sealing private keys with AES-256-GCM")
	fs.StringVar(&cfg.BundleSigningKeyFile, "bundle-signing-key", "", "PEM ECDSA P-256 private key that signs the trust bundle (header "+bundle.SignatureHeader+"), for filters with trustBundle.publicKeys; make one with: mtlsgate bundle-key create --out FILE")
	fs.StringVar(&cfg.Environment, "environment", daemon.DefaultEnvironment, "environment whose outbound certificates this sidecar serves (development, preview, production)")
	fs.DurationVar(&cfg.CRLMinInterval, "crl-refresh-min-interval", 30*time.Second, "shortest time between two downloads of a CRL URL (and retry delay)")
	fs.DurationVar(&cfg.CRLMaxInterval, "crl-refresh-max-interval", time.Hour, "longest time between two downloads of a CRL URL")
	fs.DurationVar(&cfg.CRLMaxAge, "crl-max-age-without-next-update", daemon.DefaultCRLMaxAge, "how long after its thisUpdate a CRL without nextUpdate stays current; then it is stale like a list past its nextUpdate")
	fs.StringVar(&cfg.TrustDir, "trust-dir", "", "directory of CA certificate and CRL files (PEM; a CRL also DER), e.g. a mounted Kubernetes Secret, that the store follows; CAs and CRLs added through the admin API and not in it are left alone")
	fs.DurationVar(&cfg.TrustDirInterval, "trust-dir-interval", daemon.DefaultTrustDirInterval, "how often --trust-dir is read")
	fs.IntVar(&cfg.AuditRetention, "audit-retention", store.DefaultAuditRetention, "how many audit records the store keeps (see mtlsgate audit list); the oldest are dropped")
	fs.BoolVar(&cfg.SDSCRLs, "sds-crls", false, "also send the CRLs to Envoy in the SDS validation context, for an Envoy that verifies clients (VERIFY_TRUST_CHAIN) without the mtlsgate filter: Envoy then refuses every client of a CA that has no CRL, or whose CRL is past its nextUpdate")
	fs.Var(&out, "output", "ready line format: table or json")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	// Flag values that cannot work are usage mistakes (exit 2), as for every
	// other command: a supervisor restarting on exit 1 would only loop.
	usage := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "mtlsgate serve: "+format+"\n", a...)
		return errUsage
	}
	if cfg.AuditRetention <= 0 {
		return usage("--audit-retention must be at least 1, e.g. %d", store.DefaultAuditRetention)
	}
	if cfg.TrustDirInterval <= 0 {
		return usage("--trust-dir-interval must be positive, e.g. 10s")
	}
	valid := false
	for _, e := range api.EnvironmentTypes {
		valid = valid || e == cfg.Environment
	}
	if !valid {
		return usage("--environment %q is not one of %s", cfg.Environment, strings.Join(api.EnvironmentTypes, ", "))
	}
	if cfg.CRLMaxAge <= 0 {
		return usage("--crl-max-age-without-next-update must be positive, e.g. %s", daemon.DefaultCRLMaxAge)
	}
	if cfg.CRLMinInterval <= 0 || cfg.CRLMaxInterval < cfg.CRLMinInterval {
		return usage("--crl-refresh-min-interval must be positive and at most --crl-refresh-max-interval")
	}
	cfg.Log = slog.New(slog.NewJSONHandler(stderr, nil))
	cfg.Ready = func(a daemon.Addrs) {
		if out.json {
			_ = json.NewEncoder(stdout).Encode(a)
			return
		}
		fmt.Fprintf(stdout, "mtlsgate serve: admin %s  sds %s  bundle %s/v1/bundle  token %s\n", httpAddr(a.Admin), a.SDS, httpAddr(a.Bundle), a.TokenFile)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return daemon.Run(ctx, cfg)
}

// httpAddr shows a bound HTTP listener the way --server takes it.
func httpAddr(a string) string {
	if strings.HasPrefix(a, "unix:") {
		return a
	}
	return "http://" + a
}

// health asks a running serve whether it is ready (GET /readyz, no token):
// exit 0 when it is. It is for probes that run inside the sidecar's
// container (a Kubernetes exec probe, a Docker HEALTHCHECK), which reach the
// loopback-only admin listener where a kubelet HTTP probe cannot.
func health(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	server := fs.String("server", "", "admin API of mtlsgate serve: http://HOST:PORT or unix:/path (default $MTLSGATE_SERVER or "+api.DefaultServer+")")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	var out outputFlag
	fs.Var(&out, "output", "table (a word) or json ({status, server, error})")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	addr := serverAddr(*server)
	err := checkReady(addr, *timeout)
	if out.json {
		doc := map[string]string{"status": "ready", "server": addr}
		if err != nil {
			doc["status"], doc["error"] = "not ready", err.Error()
		}
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(doc)
	} else if err == nil {
		fmt.Fprintln(stdout, "ready")
	}
	return err
}

func checkReady(addr string, timeout time.Duration) error {
	resp, err := httpClient(addr, timeout).Get(baseURL(addr) + "/readyz")
	if err != nil {
		return fmt.Errorf("not reachable at %s: %w (is mtlsgate serve running, with this --admin-listen?)", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready (%d): %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// cmd is one management subcommand.
type cmd struct {
	fs   *flag.FlagSet
	out  outputFlag
	srv  string
	tok  string
	cl   *Client
	w    io.Writer
	errw io.Writer
}

func newCmd(name string, stdout, stderr io.Writer) *cmd {
	c := &cmd{fs: flag.NewFlagSet(name, flag.ContinueOnError), w: stdout, errw: stderr}
	c.fs.StringVar(&c.srv, "server", "", "admin API of mtlsgate serve: http://HOST:PORT or unix:/path (default $MTLSGATE_SERVER or "+api.DefaultServer+")")
	c.fs.StringVar(&c.tok, "admin-token-file", "", "admin token file (default: the token itself from $MTLSGATE_ADMIN_TOKEN, then the file ./"+daemon.DefaultDataDir+"/"+daemon.TokenFileName+")")
	c.fs.Var(&c.out, "output", "table or json")
	return c
}

func (c *cmd) json(v any) error {
	enc := json.NewEncoder(c.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table and fields print what the admin API answers, which carries text
// from outside parties (SDS clients' node ids, CRL servers' errors): every
// cell is sanitized, so it can neither drive the terminal nor break the
// table's columns.
func (c *cmd) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(c.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, v := range r {
			cells[i] = termtext.Sanitize(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

func (c *cmd) fields(kv ...string) {
	tw := tabwriter.NewWriter(c.w, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], termtext.Sanitize(kv[i+1]))
	}
	tw.Flush()
}

type verb struct {
	help  string
	flags func(c *cmd) func() error
}

func manage(group string, args []string, stdout, stderr io.Writer) int {
	verbs := groups[group]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stderr
		code := 2
		if len(args) > 0 {
			w, code = stdout, 0
		}
		fmt.Fprintf(w, "Usage: mtlsgate %s <subcommand> [flags]\n\nSubcommands:\n", group)
		for _, name := range verbOrder[group] {
			fmt.Fprintf(w, "  %-9s %s\n", name, verbs[name].help)
		}
		return code
	}
	v, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "mtlsgate %s: unknown subcommand %q; one of: %s\n", group, args[0], strings.Join(verbOrder[group], ", "))
		return 2
	}
	c := newCmd(group+" "+args[0], stdout, stderr)
	run := v.flags(c)
	if err := parse(c.fs, args[1:], stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cl, err := NewClient(c.srv, c.tok)
	if err == nil {
		c.cl = cl
		err = run()
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	msg := err.Error()
	fmt.Fprintf(stderr, "mtlsgate %s %s: %s\n", group, args[0], termtext.Sanitize(strings.ReplaceAll(msg, "\n", " ")))
	if c.out.json {
		p, ok := problem.As(err)
		if !ok {
			p = &problem.Error{Code: "error", Detail: msg}
		}
		_ = c.json(map[string]any{"error": p})
	}
	return 1
}

// required reports a missing flag as a usage error.
func (c *cmd) required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			fmt.Fprintf(c.errw, "mtlsgate %s: --%s is required; run with -h for the flags\n", c.fs.Name(), pairs[i])
			return errUsage
		}
	}
	return nil
}

// stdin is standard input, read once: --cert - --key - both take it.
var stdin struct {
	once sync.Once
	data []byte
	err  error
}

// readFile reads a file named by a flag with an error that says which flag;
// "-" is standard input.
func readFile(flagName, path string) ([]byte, error) {
	if path == "-" {
		stdin.once.Do(func() { stdin.data, stdin.err = io.ReadAll(os.Stdin) })
		if stdin.err != nil {
			return nil, fmt.Errorf("cannot read --%s from standard input: %w", flagName, stdin.err)
		}
		return stdin.data, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read --%s %s: %w", flagName, path, unwrapPath(err))
	}
	return data, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
