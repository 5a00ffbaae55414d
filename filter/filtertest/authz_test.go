// The sidecar's store (bbolt) does not build for wasip1, and these tests run
// the filter from the native host anyway; the tag keeps
// `GOOS=wasip1 GOARCH=wasm go vet ./filter/...` building.

//go:build !wasip1

package filtertest

import (
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/bundlesrv"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Leaves issued by the shared intermediate for the profile tests; the shared
// "good" leaf is CN=acme-mobile, OU=partner-prod.
var (
	authzLeavesOnce         sync.Once
	intruderLeaf, teamXLeaf *testpki.Cert
)

func authzLeaves(t testing.TB) (*pki, *testpki.Cert, *testpki.Cert) {
	p := thePKI(t)
	authzLeavesOnce.Do(func() {
		m := testpki.Must[*testpki.Cert]
		intruderLeaf = m(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "intruder", OrganizationalUnit: []string{"partner-prod"}}}))
		teamXLeaf = m(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "acme-mobile", OrganizationalUnit: []string{"team-x"}}}))
	})
	return p, intruderLeaf, teamXLeaf
}

func methodRequest(method, path, source string, extra ...abi.Header) *hosttest.Request {
	r := request(path, source, extra...)
	r.Headers[0] = abi.Header{Key: ":method", Value: method}
	return r
}

// sidecarLike serves /v1/bundle the way `mtlsgate serve` does: the real store
// and the real bundle server, without the process around them.
type sidecarLike struct {
	st  *store.Store
	srv *bundlesrv.Server
	cas []store.CA
}

func newSidecarLike(t *testing.T, root *testpki.Cert) *sidecarLike {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &sidecarLike{st: st, srv: bundlesrv.New(), cas: []store.CA{{ID: "mtlsca_root", Name: "root", PEM: string(root.PEM())}}}
	s.publish(t)
	return s
}

// publish is what the daemon does after every store change.
func (s *sidecarLike) publish(t *testing.T) {
	t.Helper()
	pv, _, err := s.st.ActiveProfiles()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.srv.Update(s.cas, nil, nil, pv.Profiles, pv.Version, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// refresh makes vm fetch the bundle now and the other VMs pick it up from
// shared data. The fetch lease (one poll per refresh period across VMs) is
// expired by hand instead of waiting for it.
func refresh(t *testing.T, plugin *hosttest.Plugin, vm *hosttest.VM, others ...*hosttest.VM) {
	t.Helper()
	if st := plugin.SetSharedData(sharedLeaseKey, []byte("0"), 0); st != abi.StatusOK {
		t.Fatalf("expire lease: %v", st)
	}
	if err := vm.Tick(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := vm.WaitHTTPCalls(ctx); err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		if err := o.Tick(); err != nil {
			t.Fatal(err)
		}
	}
}

func exampleConfig(t *testing.T) []byte {
	data, err := os.ReadFile("../../policies/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// exampleVM starts the filter on policies/profiles.json as shipped, with
// its bundle (trusting root) fetched from a sidecar-like source.
func exampleVM(t *testing.T, root *testpki.Cert) (*hosttest.Plugin, *hosttest.VM) {
	t.Helper()
	sc := newSidecarLike(t, root)
	plugin, vm := newPlugin(t, exampleConfig(t), map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc.srv.Handler()}})
	refresh(t, plugin, vm)
	return plugin, vm
}

// TestProfileAuthorizationInTheFilter runs policies/profiles.json as shipped,
// with its bundle from a sidecar-like source, and drives each outcome.
func TestProfileAuthorizationInTheFilter(t *testing.T) {
	p, intruder, teamX := authzLeaves(t)
	plugin, vm := exampleVM(t, p.root)

	good := xfccHeader(p.chainOf(p.good))
	inside := "203.0.113.40:50000"
	cases := []struct {
		name    string
		req     *hosttest.Request
		status  int
		reason  string
		headers map[string]string // response headers to check
	}{
		{"bound client, own profile named", methodRequest("POST", "/orders", inside, good, abi.Header{Key: "x-profile-id", Value: "partner-prod"}), 0, "", nil},
		{"ipv6 source", methodRequest("GET", "/orders", "[2001:db8::5]:443", good), 0, "", nil},
		{"other profile named", methodRequest("GET", "/orders", inside, good, abi.Header{Key: "X-Profile-ID", Value: "partner-staging"}), 403, "PROFILE_MISMATCH", nil},
		{"client not in profile", methodRequest("GET", "/orders", inside, xfccHeader(p.chainOf(intruder))), 403, "CLIENT_NOT_ALLOWED", nil},
		{"unknown profile", methodRequest("GET", "/orders", inside, xfccHeader(p.chainOf(teamX))), 403, "PROFILE_UNKNOWN", nil},
		{"source outside", methodRequest("GET", "/orders", "198.51.100.1:50000", good), 403, "IP_NOT_ALLOWED", nil},
		{"method", methodRequest("DELETE", "/orders/1", inside, good), 405, "METHOD_NOT_ALLOWED", map[string]string{"allow": "GET, POST"}},
		{"no certificate", methodRequest("GET", "/orders", inside), 401, "NO_CERTIFICATE", nil},
		{"expired certificate", methodRequest("GET", "/orders", inside, xfccHeader(p.chainOf(p.expired))), 401, "EXPIRED", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := do(t, vm, tc.req)
			if tc.status == 0 {
				if res.Forwarded == nil {
					t.Fatalf("refused: %d %s", res.LocalResponse.Status, res.LocalResponse.Body)
				}
				for k, v := range map[string]string{"x-client-id": "acme-mobile", "x-profile-id": "partner-prod"} {
					if got := hosttest.Values(res.Forwarded.Headers, k); len(got) != 1 || got[0] != v {
						t.Errorf("upstream %s = %q, want exactly %q", k, got, v)
					}
				}
				return
			}
			if res.Forwarded != nil {
				t.Fatalf("reached the upstream with %v", res.Forwarded.Headers)
			}
			pr := problem(t, res)
			if res.LocalResponse.Status != tc.status || pr["status"] != float64(tc.status) || pr["reason"] != tc.reason {
				t.Fatalf("status %d problem %v, want %d %s", res.LocalResponse.Status, pr, tc.status, tc.reason)
			}
			for _, k := range []string{"type", "title", "detail"} {
				if s, _ := pr[k].(string); s == "" {
					t.Errorf("problem field %q empty", k)
				}
			}
			for k, v := range tc.headers {
				if got, _ := header(res.LocalResponse.Headers, k); got != v {
					t.Errorf("response %s = %q, want %q", k, got, v)
				}
			}
			recs := decisionRecords(t, res.Logs)
			if len(recs) != 1 || recs[0]["reason"] != tc.reason || recs[0]["status"] != float64(tc.status) {
				t.Fatalf("decision records %v", recs)
			}
		})
	}
	for _, reason := range []string{"profile_mismatch", "client_not_allowed", "profile_unknown", "ip_not_allowed", "method_not_allowed"} {
		if m, ok := plugin.Metric("mtlsgate.reason." + reason); !ok || m.Value != 1 {
			t.Errorf("metric mtlsgate.reason.%s = %+v, want 1", reason, m)
		}
	}
}

// TestProfileMismatchRecord: a valid certificate whose client is not bound
// to the profile the request names is refused with 403, and the log line
// alone tells who asked for what.
func TestProfileMismatchRecord(t *testing.T) {
	p, _, _ := authzLeaves(t)
	_, vm := exampleVM(t, p.root)
	res := do(t, vm, methodRequest("GET", "/orders/123", "203.0.113.40:50000", xfccHeader(p.chainOf(p.good)),
		abi.Header{Key: "x-client-id", Value: "acme-mobile"}, abi.Header{Key: "x-profile-id", Value: "partner-staging"}))
	if res.LocalResponse == nil || res.LocalResponse.Status != 403 {
		t.Fatalf("mismatch not refused: %+v", res.LocalResponse)
	}
	recs := decisionRecords(t, res.Logs)
	if len(recs) != 1 {
		t.Fatalf("want one decision record, got %v", recs)
	}
	r := recs[0]
	want := map[string]any{"decision": "deny", "status": float64(403), "reason": "PROFILE_MISMATCH", "clientId": "acme-mobile",
		"profileId": "partner-prod", "requestedProfile": "partner-staging", "policy": "partner-profiles", "method": "GET",
		"source": "203.0.113.40:50000", "profilesVersion": "config"}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("record %s = %v, want %v", k, r[k], v)
		}
	}
	for _, k := range []string{"time", "fingerprint", "bundleVersion", "configVersion", "detail"} {
		if s, _ := r[k].(string); s == "" {
			t.Errorf("record lacks %s: %v", k, r)
		}
	}
	if ts, _ := r["time"].(string); ts != "" {
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("time %q: %v", ts, err)
		}
	}
}

// TestSpoofedIdentityNeverReachesUpstream: whatever the client sends in the
// identity headers, upstream sees only the filter's values, on protected and
// unprotected routes alike.
func TestSpoofedIdentityNeverReachesUpstream(t *testing.T) {
	p, _, _ := authzLeaves(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", map[string]any{"requestedProfileHeader": "x-want-profile"})},
		"routes":      []any{map[string]any{"pathPrefix": "/api/", "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	spoof := []abi.Header{{Key: "x-client-id", Value: "admin"}, {Key: "X-Profile-Id", Value: "internal"}, {Key: "x-want-profile", Value: "internal"},
		{Key: "x-client-id", Value: "root"}}
	for i := 0; i < 2; i++ {
		res := do(t, vm, request("/api/orders", "", append([]abi.Header{xfccHeader(p.chainOf(p.good))}, spoof...)...))
		if res.Forwarded == nil {
			t.Fatalf("refused: %s", res.LocalResponse.Body)
		}
		fw := res.Forwarded.Headers
		if v := hosttest.Values(fw, "x-client-id"); len(v) != 1 || v[0] != "acme-mobile" {
			t.Errorf("x-client-id upstream %q", v)
		}
		if v := hosttest.Values(fw, "x-profile-id"); len(v) != 1 || v[0] != "partner-prod" {
			t.Errorf("x-profile-id upstream %q", v)
		}
		if _, ok := header(fw, "x-want-profile"); ok {
			t.Error("the requested-profile header reached the upstream")
		}
	}
	for _, path := range []string{"/health", "/api/orders"} { // unprotected; protected without a certificate is refused
		res := do(t, vm, request(path, "", spoof...))
		if res.Forwarded == nil {
			continue
		}
		for _, k := range []string{"x-client-id", "x-profile-id", "x-want-profile"} {
			if v, ok := header(res.Forwarded.Headers, k); ok {
				t.Errorf("%s: client-sent %s=%q reached the upstream", path, k, v)
			}
		}
	}
}

// TestRateLimitSharedAcrossVMs: the budget is per client for the whole proxy.
// Several VMs of one plugin (Envoy's worker threads) share shared data, so a
// limit of L per minute admits exactly L requests across all of them.
func TestRateLimitSharedAcrossVMs(t *testing.T) {
	p, _, _ := authzLeaves(t)
	const limit, vms, rounds = 5, 4, 4
	cfg := map[string]any{
		"policies":    []any{policyDoc("metered", map[string]any{"profileAuthorization": "enforce"})},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"acme-*"}, "rateLimit": map[string]any{"requests": limit, "per": "minute"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	for attempt := 1; ; attempt++ {
		plugin := filterModule(t).NewPlugin(hostConfig(mustJSON(t, cfg)))
		var all []*hosttest.VM
		for i := 0; i < vms; i++ {
			all = append(all, newVM(t, plugin))
		}
		start := time.Now()
		allowed, limited := 0, 0
		for r := 0; r < rounds; r++ {
			for _, vm := range all {
				res := do(t, vm, request("/orders", "", xfccHeader(p.chainOf(p.good))))
				switch {
				case res.Forwarded != nil:
					allowed++
				case res.LocalResponse.Status == 429:
					limited++
					ra, _ := header(res.LocalResponse.Headers, "retry-after")
					if ra == "" || ra == "0" || len(ra) > 2 {
						t.Fatalf("Retry-After %q", ra)
					}
					if pr := problem(t, res); pr["reason"] != "RATE_LIMITED" {
						t.Fatalf("problem %v", pr)
					}
				default:
					t.Fatalf("unexpected %d %s", res.LocalResponse.Status, res.LocalResponse.Body)
				}
			}
		}
		if start.Unix()/60 != time.Now().Unix()/60 && attempt < 3 {
			continue // a minute boundary fell inside the run: the old window weighs in only partly
		}
		if allowed != limit || limited != vms*rounds-limit {
			t.Fatalf("allowed %d, limited %d across %d VMs; want exactly %d allowed", allowed, limited, vms, limit)
		}
		if m, ok := plugin.Metric("mtlsgate.reason.rate_limited"); !ok || m.Value != uint64(vms*rounds-limit) {
			t.Fatalf("rate_limited metric %+v", m)
		}
		return
	}
}

// TestProfilesChangeAndRollBackWithoutReconfiguring: bindings come from the
// sidecar's store through the bundle. An over-blocking change takes effect on
// the running plugin, and `profile rollback` restores the earlier behaviour,
// with no configuration reload in between.
func TestProfilesChangeAndRollBackWithoutReconfiguring(t *testing.T) {
	p, intruder, _ := authzLeaves(t)
	sc := newSidecarLike(t, p.root)
	plugin, vm := newPlugin(t, exampleConfig(t), map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc.srv.Handler()}})
	vm2 := newVM(t, plugin)
	refresh(t, plugin, vm, vm2)

	approved := func() *hosttest.Request {
		return methodRequest("GET", "/orders", "203.0.113.40:50000", xfccHeader(p.chainOf(p.good)))
	}
	denied := func() *hosttest.Request {
		return methodRequest("GET", "/orders", "203.0.113.40:50000", xfccHeader(p.chainOf(intruder)))
	}
	check := func(stage string, wantProfiles string, approvedOK bool) {
		t.Helper()
		for i, v := range []*hosttest.VM{vm, vm2} {
			res := do(t, v, approved())
			if (res.Forwarded != nil) != approvedOK {
				t.Fatalf("%s, vm %d: approved client forwarded=%v, want %v", stage, i, res.Forwarded != nil, approvedOK)
			}
			if !approvedOK {
				if pr := problem(t, res); pr["reason"] != "CLIENT_NOT_ALLOWED" {
					t.Fatalf("%s: %v", stage, pr)
				}
				if recs := decisionRecords(t, res.Logs); len(recs) != 1 || recs[0]["profilesVersion"] != wantProfiles {
					t.Fatalf("%s: records %v, want profilesVersion %s", stage, recs, wantProfiles)
				}
			}
			res = do(t, v, denied())
			if res.LocalResponse == nil || res.LocalResponse.Status != 403 {
				t.Fatalf("%s, vm %d: client outside every binding not refused", stage, i)
			}
			if recs := decisionRecords(t, res.Logs); len(recs) != 1 || recs[0]["profilesVersion"] != wantProfiles {
				t.Fatalf("%s: records %v, want profilesVersion %s", stage, recs, wantProfiles)
			}
		}
	}
	check("plugin configuration profiles", "config", true)

	example, err := os.ReadFile("../../policies/profiles/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Profiles json.RawMessage }
	if err := json.Unmarshal(example, &doc); err != nil {
		t.Fatal(err)
	}
	mustSet := func(raw []byte) {
		t.Helper()
		if _, _, err := sc.st.SetProfiles(raw, "test", nil); err != nil {
			t.Fatal(err)
		}
		sc.publish(t)
		refresh(t, plugin, vm, vm2)
	}
	mustSet(doc.Profiles)
	check("sidecar version 1", "sidecar:1", true)

	mustSet([]byte(`[{"id":"partner-prod","clients":["globex-*"],"methods":["GET","POST"]}]`))
	check("sidecar version 2 (over-blocking)", "sidecar:2", false)

	if _, err := sc.st.RollbackProfiles(1, "test", nil); err != nil {
		t.Fatal(err)
	}
	sc.publish(t)
	refresh(t, plugin, vm, vm2)
	check("rolled back to version 1", "sidecar:3", true)
}

// TestProfiledRequestAllocations: a cached request that also runs the
// profile rules, a named profile and a rate limit (policies/profiles.json
// as shipped, partner-prod: 120 per minute) allocates nothing in the guest,
// like the plain cached request (TestCachedRequestAllocatesNothing).
func TestProfiledRequestAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second, unstripped filter module")
	}
	prof, m := profiledFilter(t)
	p, _, _ := authzLeaves(t)
	sc := newSidecarLike(t, p.root)
	plugin := m.NewPlugin(hosttest.PluginConfig{Name: "mtlsgate", RootID: "mtlsgate", VMID: "mtlsgate",
		Configuration: exampleConfig(t), LogLevel: abi.LogInfo,
		Clusters: map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc.srv.Handler()}}})
	vm := newVM(t, plugin)
	refresh(t, plugin, vm)
	req := methodRequest("POST", "/orders", "203.0.113.40:50000", xfccHeader(p.chainOf(p.good)), abi.Header{Key: "x-profile-id", Value: "partner-prod"})
	for i := 0; i < 20; i++ {
		if res := do(t, vm, req); res.Forwarded == nil {
			t.Fatalf("request %d refused: %s", i, res.LocalResponse.Body)
		}
	}
	const n = 50 // under the 120 per minute the profile allows, with the warm-up
	prof.on = true
	for i := 0; i < n; i++ {
		if res := do(t, vm, req); res.Forwarded == nil {
			t.Fatalf("request %d refused: %s", i, res.LocalResponse.Body)
		}
	}
	prof.on = false
	// The rate limiter ran: one counter read and one write per request.
	if g, s := prof.calls["env.proxy_get_shared_data"], prof.calls["env.proxy_set_shared_data"]; g != n || s != n {
		t.Fatalf("%d shared-data reads and %d writes in %d requests, want one each per request", g, s, n)
	}
	for site, c := range prof.allocs {
		if strings.HasPrefix(site, "mallocgc ") {
			t.Errorf("%.2f heap allocations per request: %s", float64(c)/n, site)
		}
	}
}

// BenchmarkProfiledRequest: the hot path plus profile authorization: a
// cached verdict, the client naming its own profile, the profile's method,
// address and rate-limit checks (a limit too high to reach), all headers
// written. Compare with BenchmarkHotPath/P-256/depth2 (same chain shape).
func BenchmarkProfiledRequest(b *testing.B) {
	p, _, _ := authzLeaves(b)
	cfg := map[string]any{
		"policies": []any{policyDoc("partners", map[string]any{"profileAuthorization": "enforce"})},
		"profiles": []any{map[string]any{"id": "partner-prod", "clients": []string{"acme-mobile"}, "methods": []string{"GET", "POST"},
			"sourceCIDRs": []string{"203.0.113.0/24"}, "rateLimit": map[string]any{"requests": 1_000_000_000, "per": "second"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(b, cfg, nil)
	req := methodRequest("POST", "/orders", "203.0.113.40:50000", xfccHeader(p.chainOf(p.good)), abi.Header{Key: "x-profile-id", Value: "partner-prod"})
	runRequests(b, vm, []*hosttest.Request{req}, func(b *testing.B, r *hosttest.Result) {
		if r.Forwarded == nil {
			b.Fatalf("refused: %+v", r.LocalResponse)
		}
	})
}
