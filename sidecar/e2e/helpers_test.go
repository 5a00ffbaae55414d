// Package e2e drives a real `mtlsgate serve` process: built once in TestMain,
// store on disk, admin API and CLI over loopback, SDS over gRPC with
// go-control-plane's discovery protos.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/sidecar/cli"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mtlsgate-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mtlsgate")
	args := []string{"build", "-o", binary}
	if os.Getenv("MTLSGATE_E2E_RACE") != "" {
		// Race-check the server process too, not only the test process.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/mtlsgate")...)
	build.Dir = "../.."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mtlsgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type serveProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	addrs   daemon.Addrs
	stderr  *syncbuf.Buffer
	dataDir string
	exited  chan struct{} // closed when the process has been reaped
	exitErr error
}

// startServe runs `mtlsgate serve` on ephemeral loopback ports.
func startServe(t *testing.T, dataDir string, extra ...string) *serveProc {
	t.Helper()
	p, err := tryServe(t, dataDir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	return p
}

func tryServe(t *testing.T, dataDir string, extra ...string) (*serveProc, error) {
	args := append([]string{"serve", "--data-dir", dataDir, "--output", "json",
		"--admin-listen", "127.0.0.1:0", "--sds-listen", "127.0.0.1:0", "--bundle-listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &serveProc{t: t, cmd: cmd, stderr: &syncbuf.Buffer{}, dataDir: dataDir, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { p.exitErr = cmd.Wait(); close(p.exited) }()
	select {
	case line, ok := <-lines:
		if !ok {
			<-p.exited
			return nil, fmt.Errorf("serve exited before ready (%v): %s", p.exitErr, p.stderr.String())
		}
		if err := json.Unmarshal([]byte(line), &p.addrs); err != nil {
			return nil, fmt.Errorf("ready line %q: %v", line, err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("serve not ready: %s", p.stderr.String())
	}
	return p, nil
}

// stop sends SIGTERM and expects a clean exit.
func (p *serveProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.exitErr != nil {
			p.t.Errorf("serve exited with %v after SIGTERM: %s", p.exitErr, p.stderr.String())
		}
	case <-time.After(15 * time.Second):
		p.t.Errorf("serve did not stop on SIGTERM")
		p.cmd.Process.Kill()
	}
}

func (p *serveProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *serveProc) client(t *testing.T) *cli.Client {
	t.Helper()
	c, err := cli.NewClient("http://"+p.addrs.Admin, p.addrs.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type result struct {
	stdout, stderr string
	code           int
}

// run executes the CLI as a separate process against p.
func (p *serveProc) run(args ...string) result {
	args = append(args, "--server", "http://"+p.addrs.Admin, "--admin-token-file", p.addrs.TokenFile)
	return runCLI(nil, args...)
}

func runCLI(env []string, args ...string) result {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{out.String(), errb.String(), code}
}

// runJSON runs a CLI command with --output json and decodes its answer.
func (p *serveProc) runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	r := p.run(append(args, "--output", "json")...)
	if r.code != 0 {
		t.Fatalf("mtlsgate %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	// Decode into a zero value: omitempty fields absent from this answer
	// must not keep values from an earlier one.
	reflect.ValueOf(v).Elem().SetZero()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("mtlsgate %s: output %q: %v", strings.Join(args, " "), r.stdout, err)
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ---- SDS clients

// push is one response seen by a test SDS client.
type push struct {
	at      time.Time
	version string
	secrets map[string]*tlsv3.Secret
	removed []string
}

type sdsClient struct {
	t      *testing.T
	node   *corev3.Node
	pushes chan push
	sotw   secretv3.SecretDiscoveryService_StreamSecretsClient
	delta  secretv3.SecretDiscoveryService_DeltaSecretsClient
	mu     sync.Mutex
	nonce  string
	ver    string
	names  []string // current state-of-the-world subscription
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func decodeSecrets(t *testing.T, anys []*discoveryv3.Resource) map[string]*tlsv3.Secret {
	out := map[string]*tlsv3.Secret{}
	for _, r := range anys {
		var s tlsv3.Secret
		if err := r.GetResource().UnmarshalTo(&s); err != nil {
			t.Errorf("decode secret: %v", err)
			continue
		}
		out[s.GetName()] = &s
	}
	return out
}

// newSotW opens a StreamSecrets stream for names, ACKing every response.
func newSotW(t *testing.T, addr, nodeID, cluster string, names ...string) *sdsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := secretv3.NewSecretDiscoveryServiceClient(dial(t, addr)).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sdsClient{t: t, node: &corev3.Node{Id: nodeID, Cluster: cluster}, pushes: make(chan push, 64), sotw: stream, names: names}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: resourcev3.SecretType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(c.pushes)
				return
			}
			p := push{at: time.Now(), version: resp.GetVersionInfo(), secrets: map[string]*tlsv3.Secret{}}
			for _, a := range resp.GetResources() {
				var s tlsv3.Secret
				if err := a.UnmarshalTo(&s); err == nil {
					p.secrets[s.GetName()] = &s
				}
			}
			c.mu.Lock()
			c.nonce, c.ver = resp.GetNonce(), resp.GetVersionInfo()
			_ = stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: c.names, VersionInfo: c.ver, ResponseNonce: c.nonce})
			c.mu.Unlock()
			c.pushes <- p
		}
	}()
	return c
}

// resubscribe changes a state-of-the-world subscription (Envoy redeployed
// with another secret name).
func (c *sdsClient) resubscribe(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names = names
	if err := c.sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: names, VersionInfo: c.ver, ResponseNonce: c.nonce}); err != nil {
		c.t.Fatal(err)
	}
}

// newDelta opens a DeltaSecrets stream subscribed to names, ACKing responses.
func newDelta(t *testing.T, addr, nodeID, cluster string, names ...string) *sdsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := secretv3.NewSecretDiscoveryServiceClient(dial(t, addr)).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sdsClient{t: t, node: &corev3.Node{Id: nodeID, Cluster: cluster}, pushes: make(chan push, 64), delta: stream}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: c.node, TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(c.pushes)
				return
			}
			p := push{at: time.Now(), version: resp.GetSystemVersionInfo(), secrets: decodeSecrets(t, resp.GetResources()), removed: resp.GetRemovedResources()}
			c.mu.Lock()
			_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: resp.GetNonce()})
			c.mu.Unlock()
			c.pushes <- p
		}
	}()
	return c
}

func (c *sdsClient) changeDelta(subscribe, unsubscribe []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe}); err != nil {
		c.t.Fatal(err)
	}
}

// next waits for the next push. The deadline only keeps a broken build from
// hanging the suite; nothing asserts on timing.
func (c *sdsClient) next(what string) push {
	c.t.Helper()
	select {
	case p, ok := <-c.pushes:
		if !ok {
			c.t.Fatalf("SDS stream closed while waiting for %s", what)
		}
		return p
	case <-time.After(30 * time.Second):
		c.t.Fatalf("no SDS push for %s", what)
	}
	return push{}
}

// until waits for a push satisfying ok, skipping others.
func (c *sdsClient) until(what string, ok func(push) bool) push {
	c.t.Helper()
	for {
		if p := c.next(what); ok(p) {
			return p
		}
	}
}

// never fails if a push satisfying bad arrives within d.
func (c *sdsClient) never(what string, d time.Duration, bad func(push) bool) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p, ok := <-c.pushes:
			if !ok {
				c.t.Fatalf("SDS stream closed while checking for no %s", what)
			}
			if bad(p) {
				c.t.Fatalf("got %s: version %s, secrets %v", what, p.version, keys(p.secrets))
			}
		case <-deadline:
			return
		}
	}
}

func trustedCA(p push) string {
	return p.secrets["mtlsgate-client-ca"].GetValidationContext().GetTrustedCa().GetInlineString()
}

func crlOf(p push) string {
	return p.secrets["mtlsgate-client-ca"].GetValidationContext().GetCrl().GetInlineString()
}

// waitFor polls cond; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func pkixName(org, country string) pkix.Name {
	return pkix.Name{Organization: []string{org}, Country: []string{country}}
}
