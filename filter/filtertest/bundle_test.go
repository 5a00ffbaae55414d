package filtertest

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// fakeSidecar serves /v1/bundle the way the sidecar does (ETag, 304), and can
// be switched to failing.
type fakeSidecar struct {
	mu      sync.Mutex
	body    []byte
	version string
	// sig is the signature header sent with body, none when "".
	sig     string
	failing bool
	gets    atomic.Int32
}

func (f *fakeSidecar) set(cas ...*testpki.Cert) {
	body, version := bundleOf(cas...)
	f.serve(body, version, "")
}

// serve makes body, of the given version, the answer, with sig as its
// signature header ("" for none).
func (f *fakeSidecar) serve(body []byte, version, sig string) {
	f.mu.Lock()
	f.body, f.version, f.sig = body, version, sig
	f.mu.Unlock()
}

func bundleOf(cas ...*testpki.Cert) (body []byte, version string) {
	var list []bundle.CA
	for _, c := range cas {
		list = append(list, bundle.CA{PEM: string(c.PEM())})
	}
	b := bundle.New(list, nil, nil, 0, time.Now())
	body, err := b.Marshal()
	if err != nil {
		panic(err)
	}
	return body, b.Version
}

func (f *fakeSidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.gets.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		http.Error(w, "sidecar restarting", http.StatusServiceUnavailable)
		return
	}
	etag := strconv.Quote(f.version)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/json")
	if f.sig != "" {
		w.Header().Set(bundle.SignatureHeader, f.sig)
	}
	w.Write(f.body)
}

// TestBundleFromSidecar walks the trust bundle's life cycle in the filter:
// 503 before the first bundle, loaded on a tick, shared with a second VM
// without a second fetch, kept while the sidecar fails, replaced when it
// recovers, and an emptied CA list stopping trust at once.
func TestBundleFromSidecar(t *testing.T) {
	p := thePKI(t)
	sc := &fakeSidecar{}
	sc.set(p.root)
	cfg := map[string]any{"policies": []any{policyDoc("mtls", nil)},
		"trustBundle": map[string]any{"cluster": "mtlsgate_sidecar", "path": "/v1/bundle", "refreshSeconds": 1}}
	plugin, vm0 := newPlugin(t, cfg, map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc}})
	vm1 := newVM(t, plugin)
	good := xfccHeader(p.chainOf(p.good))

	res := do(t, vm0, request("/", "", good))
	if res.LocalResponse == nil || res.LocalResponse.Status != 503 || problem(t, res)["reason"] != "TRUST_BUNDLE_UNAVAILABLE" {
		t.Fatalf("before any bundle: want 503 TRUST_BUNDLE_UNAVAILABLE, got %+v", res.LocalResponse)
	}

	tick(t, vm0)
	if sc.gets.Load() != 1 {
		t.Fatalf("sidecar fetched %d times, want 1", sc.gets.Load())
	}
	for i, vm := range []*hosttest.VM{vm0, vm1} {
		if res := do(t, vm, request("/", "", good)); res.Forwarded == nil {
			t.Fatalf("vm%d after the bundle loaded: %+v %s", i, res.LocalResponse, res.LocalResponse.Body)
		}
	}
	tick(t, vm1) // the lease is held for the refresh period: no second fetch
	if n := sc.gets.Load(); n != 1 {
		t.Errorf("second VM fetched again (%d fetches); the bundle should come from shared data", n)
	}

	// The sidecar fails: the last good bundle stays in force.
	sc.mu.Lock()
	sc.failing = true
	sc.mu.Unlock()
	time.Sleep(1100 * time.Millisecond) // let the 1 s fetch lease expire
	tick(t, vm0)
	if sc.gets.Load() < 2 {
		t.Fatalf("no refetch after the refresh period")
	}
	if res := do(t, vm0, request("/", "", good)); res.Forwarded == nil {
		t.Fatalf("a failing sidecar dropped the last good bundle: %s", res.LocalResponse.Body)
	}
	warned := false
	for _, l := range vm0.Logs() {
		if l.Level == abi.LogWarn {
			warned = true
		}
	}
	if !warned {
		t.Errorf("a failed refresh was not logged as a warning")
	}

	// The sidecar recovers with the last CA deleted: trust stops.
	sc.mu.Lock()
	sc.failing = false
	sc.mu.Unlock()
	sc.set()
	time.Sleep(1100 * time.Millisecond)
	tick(t, vm0)
	tick(t, vm1)
	for i, vm := range []*hosttest.VM{vm0, vm1} {
		res := do(t, vm, request("/", "", good))
		if res.LocalResponse == nil || problem(t, res)["reason"] != "UNTRUSTED_CHAIN" {
			t.Fatalf("vm%d after the last CA was deleted: want 401 UNTRUSTED_CHAIN, got %+v", i, res.LocalResponse)
		}
	}
	if m, ok := plugin.Metric("mtlsgate.bundle.loaded"); !ok || m.Value < 3 {
		t.Errorf("bundle loads counted %+v, want at least 3 (two versions, two VMs)", m)
	}
}
