package demo

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
)

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p, fresh, err := EnsurePKI(dir, now)
	if err != nil || !fresh {
		t.Fatalf("EnsurePKI: fresh=%v err=%v", fresh, err)
	}
	load := func(name string) []*x509.Certificate {
		b, err := os.ReadFile(p.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		cs, err := parsePEMCerts(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return cs
	}
	pool := func(names ...string) *x509.CertPool {
		cp := x509.NewCertPool()
		for _, n := range names {
			for _, c := range load(n) {
				cp.AddCert(c)
			}
		}
		return cp
	}
	verify := func(leafFile string, roots *x509.CertPool, eku x509.ExtKeyUsage, at time.Time) error {
		chain := load(leafFile)
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{eku}, CurrentTime: at})
		return err
	}
	clientRoots := pool(RootCA)
	if err := verify(GoodCert, clientRoots, x509.ExtKeyUsageClientAuth, now); err != nil {
		t.Errorf("good client does not chain to the demo root: %v", err)
	}
	if err := verify(ExpiredCert, clientRoots, x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Error("expired client verifies now")
	} else if err := verify(ExpiredCert, clientRoots, x509.ExtKeyUsageClientAuth, now.AddDate(0, 0, -2)); err != nil {
		t.Errorf("expired client is not otherwise valid: %v", err)
	}
	if err := verify(OtherCert, clientRoots, x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Error("the other CA's client verifies against the demo root")
	}
	if err := verify(ServerCert, pool(ServerCA), x509.ExtKeyUsageServerAuth, now); err != nil {
		t.Errorf("server certificate: %v", err)
	}
	if err := verify(BackendCert, pool(BackendCA), x509.ExtKeyUsageServerAuth, now); err != nil {
		t.Errorf("backend certificate: %v", err)
	}
	if err := verify(OutboundCert, pool(BackendCA), x509.ExtKeyUsageClientAuth, now); err != nil {
		t.Errorf("outbound certificate: %v", err)
	}
	if _, fresh, err := EnsurePKI(dir, now); err != nil || fresh {
		t.Errorf("second EnsurePKI regenerated (fresh=%v, err=%v); it must reuse a valid PKI", fresh, err)
	}
	if _, fresh, err := EnsurePKI(dir, now.AddDate(2, 0, 0)); err != nil || !fresh {
		t.Errorf("EnsurePKI two years on: fresh=%v err=%v; expired demo certificates must be replaced", fresh, err)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--check", "--interactive"}, "exclude each other"},
		{[]string{"stray"}, "unexpected argument"},
		{[]string{"--refresh-seconds", "0"}, "at least 1"},
		{[]string{"--output", "xml"}, "use text or json"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}

// TestCheck is `make demo`: the real mtlsgate binary runs the sidecar and
// the CLI, the real filter runs in the gateway, and every documented request
// must answer as documented.
func TestCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the mtlsgate binary and the filter")
	}
	dir := t.TempDir()
	bin := buildMtlsgate(t)
	wasm := buildFilter(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--check", "--state", filepath.Join(dir, "state"), "--mtlsgate", bin,
		"--wasm", wasm, "--policy", "../../policies/basic.json", "--refresh-seconds", "1"}, &out, &errb)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	if code != 0 {
		if b, err := os.ReadFile(filepath.Join(dir, "state", "gateway.log")); err == nil {
			t.Logf("gateway.log:\n%s", b)
		}
		t.Fatalf("demo --check exit %d", code)
	}
	for _, want := range []string{"ok   HTTP/1.1 200", "ok   HTTP/2   401 reason=NO_CERTIFICATE", "reason=UNTRUSTED_CHAIN", "reason=EXPIRED", "All checks passed."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// --output json: stdout is one document with every result; the
	// progress lines go to stderr.
	out.Reset()
	errb.Reset()
	code = run(context.Background(), []string{"--check", "--output", "json", "--state", filepath.Join(dir, "state"), "--mtlsgate", bin,
		"--wasm", wasm, "--policy", "../../policies/basic.json", "--refresh-seconds", "1"}, &out, &errb)
	var doc struct {
		Gateway  string `json:"gateway"`
		Passed   *bool  `json:"passed"`
		Requests []struct {
			Name, Curl string
			Results    []struct {
				Protocol string
				OK       bool
				Got      string
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || code != 0 {
		t.Fatalf("--output json: exit %d, %v:\n%s\nstderr:\n%s", code, err, out.String(), errb.String())
	}
	if doc.Passed == nil || !*doc.Passed || len(doc.Requests) != 4 || !strings.HasPrefix(doc.Gateway, "https://localhost:") || !strings.Contains(errb.String(), "All checks passed.") {
		t.Fatalf("--output json document %+v", doc)
	}
	for _, r := range doc.Requests {
		if len(r.Results) != 2 || !r.Results[0].OK || !r.Results[1].OK || !strings.HasPrefix(r.Curl, "curl ") {
			t.Errorf("%s: %+v", r.Name, r)
		}
	}
}

func buildMtlsgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mtlsgate")
	build := exec.Command("go", "build", "-o", bin, "github.com/mtlsgate/mtlsgate/cmd/mtlsgate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mtlsgate: %v\n%s", err, out)
	}
	return bin
}

func buildFilter(t *testing.T) string {
	t.Helper()
	if wasm := os.Getenv("MTLSGATE_WASM"); wasm != "" {
		return wasm
	}
	wasm, err := hosttest.BuildWasm("github.com/mtlsgate/mtlsgate/filter")
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

// TestBusyPort: when a sidecar port is taken (another make run still up),
// the demo says why the sidecar exited and which flag moves the port, with
// only this run's lines from the sidecar log it keeps across runs.
func TestBusyPort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the mtlsgate binary")
	}
	bin := buildMtlsgate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	// The sidecar fails before the gateway loads the filter: any file will do.
	wasm := filepath.Join(t.TempDir(), "unused.wasm")
	if err := os.WriteFile(wasm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	for i := 0; i < 2; i++ {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"--check", "--state", state, "--mtlsgate", bin, "--wasm", wasm,
			"--admin-listen", busy}, &out, &errb)
		msg := errb.String()
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, msg)
		}
		for _, want := range []string{"sidecar exited before it was ready", "listen on " + busy, "address already in use",
			"sidecar.log", "--admin-listen 127.0.0.1:", `make run DEMOFLAGS="--admin-listen 127.0.0.1:`} {
			if !strings.Contains(msg, want) {
				t.Errorf("run %d: %q lacks %q", i+1, msg, want)
			}
		}
		if n := strings.Count(msg, "mtlsgate serve: listen on"); n != 1 {
			t.Errorf("run %d: the sidecar's error appears %d times (earlier runs' lines?): %s", i+1, n, msg)
		}
	}
}

// TestInteractive is `make run` on free ports, stopped once it prints its
// commands: the hint about protocols is curl's way round, and the readiness
// probes stay off the console and are explained in the access log.
func TestInteractive(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the mtlsgate binary and the filter")
	}
	bin, wasm := buildMtlsgate(t), buildFilter(t)
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		args := []string{"--state", state, "--mtlsgate", bin, "--wasm", wasm, "--policy", "../../policies/basic.json", "--refresh-seconds", "1"}
		for _, f := range []string{"--listen", "--upstream-listen", "--admin-listen", "--sds-listen", "--bundle-listen"} {
			args = append(args, f, "127.0.0.1:0")
		}
		done <- run(ctx, args, &out, &errb)
	}()
	deadline := time.After(90 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl-C") {
		select {
		case code := <-done:
			t.Fatalf("demo exited %d before it was ready:\n%s\n%s", code, out.String(), errb.String())
		case <-deadline:
			t.Fatalf("demo not ready:\n%s\n%s", out.String(), errb.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after Ctrl-C: %s", code, errb.String())
	}
	stdout := out.String()
	if !strings.Contains(stdout, "add --http1.1 to any of them for HTTP/1.1") || strings.Contains(stdout, "--http2") {
		t.Errorf("protocol hint:\n%s", stdout)
	}
	if strings.Contains(stdout, "access: ") {
		t.Errorf("readiness probes on the console:\n%s", stdout)
	}
	log, err := os.ReadFile(filepath.Join(state, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	// Every access line in the log comes after the line explaining the probes.
	explained := strings.Index(string(log), "demo: readiness probes follow")
	first := regexp.MustCompile(`(?m) GET "/" HTTP/\S+ \d{3} reason=`).FindIndex(log)
	if explained < 0 || first == nil || first[0] < explained {
		t.Errorf("gateway.log does not explain its probe lines first:\n%s", log)
	}
}
