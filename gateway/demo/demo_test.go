package demo

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
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
	bin := filepath.Join(dir, "mtlsgate")
	build := exec.Command("go", "build", "-o", bin, "github.com/mtlsgate/mtlsgate/cmd/mtlsgate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mtlsgate: %v\n%s", err, out)
	}
	wasm := os.Getenv("MTLSGATE_WASM")
	if wasm == "" {
		var err error
		if wasm, err = hosttest.BuildWasm("github.com/mtlsgate/mtlsgate/filter"); err != nil {
			t.Fatal(err)
		}
	}
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
