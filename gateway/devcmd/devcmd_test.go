package devcmd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

type files struct {
	wasm, plugin, cert, key string
	roots                   *x509.CertPool
}

func writeFiles(t *testing.T) files {
	t.Helper()
	dir := t.TempDir()
	wasmPath, err := hosttest.BuildWasm("github.com/mtlsgate/mtlsgate/filter/examples/abitest")
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "devcmd CA"}))
	leaf := testpki.Must(ca.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	f := files{wasm: wasmPath, plugin: filepath.Join(dir, "plugin.json"), cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"),
		roots: x509.NewCertPool()}
	f.roots.AddCert(ca.Cert)
	for p, b := range map[string][]byte{f.plugin: []byte(`{}`), f.cert: leaf.PEM(), f.key: leaf.KeyPEM()} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestBadFlagsSayWhatToDo(t *testing.T) {
	f := writeFiles(t)
	base := []string{"--wasm", f.wasm, "--plugin-config", f.plugin, "--tls-cert", f.cert, "--tls-key", f.key, "--upstream", "http://127.0.0.1:1"}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", f.cert, "--tls-key", f.key, "--upstream", "http://x"}, "--plugin-config is required"},
		{[]string{"--plugin-config", f.plugin, "--upstream", "http://x"}, "--tls-cert and --tls-key are required"},
		{append(base[:8:8], "--upstream", "ftp://x"), "want an http:// or https:// URL"},
		{append(append([]string{}, base...), "--cluster", "noequals"), "want NAME=URL"},
		{append(append([]string{}, base...), "--sds", "127.0.0.1:1"), "--sds goes with --upstream-mtls-cert, --client-ca-secret or both"},
		{append(append([]string{}, base...), "--client-ca-secret", "mtlsgate-client-ca"), "--sds goes with --upstream-mtls-cert, --client-ca-secret or both"},
		{append(append([]string{}, base...), "--log-level", "loud"), "want trace, debug, info"},
		{append(append([]string{}, base...), "stray"), "unexpected argument"},
		{append(append([]string{}, base...), "--route-timeout", "-1s"), "want a duration of 0 (no timeout) or more"},
		{append(append([]string{}, base...), "--wasm", filepath.Join(t.TempDir(), "missing.wasm")), "run 'make build' first"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, &stdout, &stderr)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", c.args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: stderr %q lacks %q", c.args, stderr.String(), c.want)
		}
	}
}

// TestServesAndStopsCleanly runs the command as `mtlsgate dev` runs it, sends
// one request, then cancels it (as SIGINT does) and expects exit 0.
func TestServesAndStopsCleanly(t *testing.T) {
	f := writeFiles(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream saw "+r.Header.Get("X-Abitest-Prop-Request-Path"))
	}))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--wasm", f.wasm, "--plugin-config", f.plugin, "--tls-cert", f.cert, "--tls-key", f.key,
			"--upstream", up.URL, "--listen", addr, "--workers", "1", "--output", "json"}, stdout, stderr)
	}()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots, ServerName: "localhost"}}, Timeout: 10 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	var body []byte
	for {
		resp, err := c.Get("https://" + addr + "/dev?q=1")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		select {
		case code := <-exit:
			t.Fatalf("exited %d before serving: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving within 30s: %v; stderr %s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(body) != "upstream saw /dev?q=1" {
		t.Errorf("body %q", body)
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d after the signal, want 0; stderr %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), `"path":"/dev?q=1"`) || !strings.Contains(stdout.String(), `"status":200`) {
		t.Errorf("no JSON access line for the request:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("stderr lacks the shutdown notice:\n%s", stderr.String())
	}
}
