// Package soak runs the dev gateway with the real filter and a real sidecar
// under mixed traffic while trust changes underneath it, and checks every
// single response against what that client should get at that moment.
package soak

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/loadtest"
	"github.com/mtlsgate/mtlsgate/sidecar/cli"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
)

// window is how long a trust change may take to reach every VM: the filter
// polls the sidecar every refreshSeconds (1 here) under a shared lease, and
// each worker VM picks the new bundle up on its next tick (1 s), plus slack
// for a loaded 2-core machine. A response to a request sent within window
// of a change may show either side of it; every other response is checked.
const window = 5 * time.Second

// TestSoak is `make soak DURATION=…`; without MTLSGATE_SOAK_DURATION it runs
// for a few seconds so the machinery itself stays tested.
func TestSoak(t *testing.T) {
	d := 8 * time.Second
	if v := os.Getenv("MTLSGATE_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("MTLSGATE_SOAK_DURATION: %v", err)
		}
	} else if testing.Short() {
		t.Skip("short mode")
	}
	runSoak(t, d)
}

// sidecar is `mtlsgate serve` (daemon.Run) on fixed ports so a restart
// comes back where the gateway's cluster points, managed with the real CLI.
type sidecar struct {
	t   *testing.T
	dir string
	// trustDir is the sidecar's --trust-dir, where CA D comes and goes as a
	// file (the way a mounted Secret changes) beside the CAs managed with
	// the CLI.
	trustDir string
	addrs    daemon.Addrs
	cancel   context.CancelFunc
	done     chan error
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *sidecar) start() {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan daemon.Addrs, 1)
	s.done = make(chan error, 1)
	admin, sds, bundleAddr := s.addrs.Admin, s.addrs.SDS, s.addrs.Bundle
	go func() {
		s.done <- daemon.Run(ctx, daemon.Config{
			DataDir: filepath.Join(s.dir, "data"), AdminListen: admin, SDSListen: sds, BundleListen: bundleAddr,
			Environment: "development", CRLMinInterval: 30 * time.Second, CRLMaxInterval: time.Hour,
			TrustDir: s.trustDir, TrustDirInterval: 200 * time.Millisecond,
			Log:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
			Ready: func(a daemon.Addrs) { ready <- a },
		})
	}()
	select {
	case a := <-ready:
		s.addrs, s.cancel = a, cancel
	case err := <-s.done:
		cancel()
		s.t.Fatalf("sidecar did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		s.t.Fatal("sidecar did not start in 30s")
	}
}

func (s *sidecar) stop() {
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Errorf("sidecar: %v", err)
	}
}

func (s *sidecar) cli(out any, args ...string) {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	full := append(append([]string{}, args...), "--server", "http://"+s.addrs.Admin, "--admin-token-file", s.addrs.TokenFile, "--output", "json")
	if code := cli.Run(full, &stdout, &stderr); code != 0 {
		s.t.Fatalf("mtlsgate %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			s.t.Fatalf("mtlsgate %s: %v", strings.Join(args, " "), err)
		}
	}
}

// trustLog records which CAs the sidecar trusts over time.
type trustLog struct {
	mu      sync.Mutex
	changes []trustChange
}

type trustChange struct {
	at      time.Time
	trusted map[string]bool
}

func (l *trustLog) set(trusted map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cp := map[string]bool{}
	for k, v := range trusted {
		cp[k] = v
	}
	l.changes = append(l.changes, trustChange{at: time.Now(), trusted: cp})
}

// expect says whether a client of ca must be allowed (1), must be denied
// (-1) or may be either (0) for a request sent at start and answered at end.
func (l *trustLog) expect(ca string, start, end time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	in, out := false, false
	for i, c := range l.changes {
		until := end
		if i+1 < len(l.changes) {
			until = l.changes[i+1].at
		}
		// This state was in effect during [c.at, until); it counts if that
		// overlaps [start-window, end].
		if until.Before(start.Add(-window)) || c.at.After(end) {
			continue
		}
		if c.trusted[ca] {
			in = true
		} else {
			out = true
		}
	}
	switch {
	case in && !out:
		return 1
	case out && !in:
		return -1
	}
	return 0
}

func runSoak(t *testing.T, d time.Duration) {
	ctx := context.Background()
	// Client CAs; the stranger's root is never trusted.
	roots := map[string]*testpki.Cert{}
	leaves := map[string]*testpki.Cert{}
	for _, n := range []string{"A", "B", "C", "D"} {
		roots[n] = testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "soak root " + n}))
		leaves[n] = testpki.Must(roots[n].Issue(testpki.Options{CommonName: "soak client " + n}))
	}
	stranger := testpki.Must(testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "stranger root"})).Issue(testpki.Options{CommonName: "stranger"}))
	expired := testpki.Must(roots["A"].Issue(testpki.Options{CommonName: "expired A", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}))

	sc := &sidecar{t: t, dir: t.TempDir(), trustDir: t.TempDir(), addrs: daemon.Addrs{Admin: freePort(t), SDS: freePort(t), Bundle: freePort(t)}}
	sc.start()
	defer func() { sc.stop() }()
	ids := map[string]string{}
	trust := &trustLog{}
	trusted := map[string]bool{}
	addCA := func(n string) {
		f := filepath.Join(sc.dir, n+".pem")
		if err := os.WriteFile(f, roots[n].PEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		var ca struct{ ID string }
		sc.cli(&ca, "ca-certificate", "create", "--name", "soak_"+n, "--cert", f)
		ids[n] = ca.ID
		trusted[n] = true
		trust.set(trusted)
	}
	delCA := func(n string) {
		// Recorded as untrusted from the moment the command starts: from
		// then on either answer is possible until the window has passed.
		trusted[n] = false
		trust.set(trusted)
		sc.cli(nil, "ca-certificate", "delete", "--cert-id", ids[n])
	}
	// D is trusted while its file is in the trust directory: from the write
	// on, and no longer from the moment the removal starts.
	dirFile := filepath.Join(sc.trustDir, "soak-d.pem")
	addDirCA := func() {
		if err := os.WriteFile(dirFile, roots["D"].PEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		trusted["D"] = true
		trust.set(trusted)
	}
	delDirCA := func() {
		trusted["D"] = false
		trust.set(trusted)
		if err := os.Remove(dirFile); err != nil {
			t.Fatal(err)
		}
	}
	addCA("A")

	// Route /v1/ takes the TLS certificate (XFCC); /edge/ takes an RFC 9440
	// header from a trusted front proxy (the load generator on loopback).
	pol := func(name string, opts map[string]any) map[string]any {
		return map[string]any{"name": name, "policyType": "mtls-auth-inbound",
			"handler": map[string]any{"export": "MTLSAuthInboundPolicy", "module": "$import(@zuplo/runtime)", "options": opts}}
	}
	cfg, _ := json.Marshal(map[string]any{
		"policies":    []any{pol("tls", map[string]any{}), pol("edge", map[string]any{"certificateSource": "rfc9440", "trustedSourceCIDRs": []string{"127.0.0.1/32"}})},
		"routes":      []any{map[string]any{"pathPrefix": "/v1/", "policy": "tls"}, map[string]any{"pathPrefix": "/edge/", "policy": "edge"}},
		"trustBundle": map[string]any{"cluster": "mtlsgate_sidecar", "path": "/v1/bundle", "refreshSeconds": 1},
	})
	p, err := loadtest.NewPKI(0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := loadtest.Start(ctx, loadtest.WithFilter, p, cfg, map[string]string{"mtlsgate_sidecar": "http://" + sc.addrs.Bundle})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	tlsCert := func(c *testpki.Cert) *tls.Certificate { return mustPair(t, c) }
	var mu sync.Mutex
	stats := map[string]map[string]int{}
	count := func(client, outcome string) {
		mu.Lock()
		defer mu.Unlock()
		if stats[client] == nil {
			stats[client] = map[string]int{}
		}
		stats[client][outcome]++
	}
	// judge checks one response against the trust history. ca "" means the
	// client can never be allowed.
	judge := func(client, ca, subject string) func(time.Time, *http.Response, []byte) error {
		return func(start time.Time, r *http.Response, body []byte) error {
			end := time.Now()
			sub := r.Header.Get("x-seen-user-sub")
			if r.StatusCode >= 500 {
				count(client, "5xx")
				return fmt.Errorf("%s: %d %s", client, r.StatusCode, body)
			}
			want := -1
			if ca != "" {
				want = trust.expect(ca, start, end)
			}
			allowed := r.StatusCode == 200
			switch {
			case allowed && sub != subject:
				count(client, "wrong-identity")
				return fmt.Errorf("%s: forwarded with x-user-sub %q", client, sub)
			case allowed && want < 0:
				count(client, "wrongly-allowed")
				return fmt.Errorf("%s: allowed at %v though its CA was untrusted throughout", client, start.Format(time.StampMilli))
			case !allowed && r.StatusCode != 401:
				count(client, fmt.Sprint(r.StatusCode))
				return fmt.Errorf("%s: status %d %s", client, r.StatusCode, body)
			case !allowed && want > 0:
				count(client, "wrongly-denied")
				return fmt.Errorf("%s: denied at %v though its CA was trusted throughout: %s", client, start.Format(time.StampMilli), body)
			case want == 0:
				count(client, "in-window")
			case allowed:
				count(client, "allowed")
			default:
				count(client, "denied")
			}
			return nil
		}
	}
	sfv := func(c *testpki.Cert) string { return ":" + base64.StdEncoding.EncodeToString(c.DER) + ":" }
	spoof := http.Header{"X-User-Sub": {"CN=admin"}, "X-Mtls-Subject": {"CN=admin"}}
	clients := []loadtest.Client{
		{Cert: tlsCert(leaves["A"]), Path: "/v1/a", Header: spoof, Check: judge("tls-A", "A", leaves["A"].Cert.Subject.String())},
		{Cert: tlsCert(leaves["B"]), Path: "/v1/b", Check: judge("tls-B", "B", leaves["B"].Cert.Subject.String())},
		{Cert: tlsCert(leaves["C"]), Path: "/v1/c", Check: judge("tls-C", "C", leaves["C"].Cert.Subject.String())},
		{Cert: tlsCert(leaves["D"]), Path: "/v1/d", Check: judge("tls-D", "D", leaves["D"].Cert.Subject.String())},
		{Cert: tlsCert(stranger), Path: "/v1/s", Check: judge("tls-stranger", "", "")},
		{Cert: tlsCert(expired), Path: "/v1/e", Check: judge("tls-expired", "", "")},
		{Path: "/v1/none", Header: spoof, Check: judge("no-cert", "", "")},
		{Path: "/edge/b", Header: http.Header{"Client-Cert": {sfv(leaves["B"])}}, Check: judge("header-B", "B", leaves["B"].Cert.Subject.String())},
		{Path: "/edge/forged", Header: http.Header{"Client-Cert": {sfv(stranger)}, "X-User-Sub": {"CN=admin"}}, Check: judge("header-stranger", "", "")},
	}

	// Wait for the first bundle: until then protected routes answer 503 by
	// design (TRUST_BUNDLE_UNAVAILABLE), which is not what the soak measures.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, _ := loadtest.Run(ctx, loadtest.Options{URL: st.URL, RootCAs: p.ServerRoot, ServerName: "localhost", Clients: clients[:1], Requests: 1})
		if r != nil && r.Status[200] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the filter did not load the sidecar's bundle in 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	stats = map[string]map[string]int{}

	// Trust operations, one every period: add, rotate, remove, restart. The
	// short run cycles fast to exercise every operation; a long run spaces
	// them so most responses fall outside a propagation window and are
	// checked strictly.
	period := 2 * time.Second
	if d >= 30*time.Second {
		period = 6 * time.Second
	}
	ops := []struct {
		name string
		do   func()
	}{
		{"add B, D's file", func() { addCA("B"); addDirCA() }},
		{"rotate A -> C", func() { addCA("C"); delCA("A") }},
		{"restart sidecar", func() { sc.stop(); sc.start() }},
		{"remove B, D's file", func() { delCA("B"); delDirCA() }},
		{"rotate C -> A", func() { addCA("A"); delCA("C") }},
	}
	var heap []uint64
	stop := make(chan struct{})
	opsDone := make(chan []string)
	go func() {
		var done []string
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				opsDone <- done
				return
			case <-tick.C:
			}
			op := ops[i%len(ops)]
			op.do()
			done = append(done, op.name)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap = append(heap, ms.HeapInuse)
		}
	}()
	res, err := loadtest.Run(ctx, loadtest.Options{URL: st.URL, RootCAs: p.ServerRoot, ServerName: "localhost",
		Clients: clients, Concurrency: 2 * len(clients), Duration: d})
	close(stop)
	done := <-opsDone
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak %v: %s", d, res)
	t.Logf("trust operations (%d): %s", len(done), strings.Join(done, ", "))
	for client, s := range stats {
		t.Logf("  %-16s %v", client, s)
	}
	if len(heap) > 2 {
		t.Logf("host heap in use after each operation (MiB): %s", mib(heap))
	}
	if res.Wrong > 0 || res.Failed > 0 {
		t.Errorf("%d wrong decisions, %d transport errors: %v", res.Wrong, res.Failed, res.Errors)
	}
	if res.Requests == 0 {
		t.Fatal("no requests completed")
	}
}

func mustPair(t *testing.T, c *testpki.Cert) *tls.Certificate {
	pair, err := tls.X509KeyPair(c.PEM(), c.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

func mib(v []uint64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%.0f", float64(x)/(1<<20)))
	}
	return strings.Join(parts, " ")
}
