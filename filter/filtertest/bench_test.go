package filtertest

import (
	"context"
	"strconv"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// The compiled filter per request in the host, against two references:
//   - BenchmarkFloor: the no-op filter (same ABI layer) on the identical
//     request through the identical harness, so filter/floor is the filter's
//     own cost and nothing of the host's;
//   - filter/policy's benchmarks of the same names: the same policy work run
//     natively, the limit for wasm (benchstat -ignore pkg native=… wasm=…).
// docs/PERFORMANCE.md records the numbers and the targets.

var benchCases = []struct {
	k     testpki.KeyType
	depth int
}{{testpki.P256, 2}, {testpki.P256, 3}, {testpki.RSA2048, 2}, {testpki.RSA2048, 3}, {testpki.RSA4096, 2}, {testpki.RSA4096, 3}}

func caseName(k testpki.KeyType, depth int) string {
	return k.String() + "/depth" + strconv.Itoa(depth)
}

// Cold benchmarks cycle coldPool distinct leaves through a cache of
// coldCache entries: every request misses and evicts (as in filter/policy).
const (
	coldPool  = 128
	coldCache = 64
)

// hotPool is the chain of the hot path and the floor: root → intermediate →
// leaf, so the XFCC carries leaf and intermediate (a 2-certificate chain).
func hotPool(b *testing.B) *leafPool { return newLeafPool(b, testpki.P256, 3, 1) }

func runRequests(b *testing.B, vm *hosttest.VM, reqs []*hosttest.Request, check func(*testing.B, *hosttest.Result)) {
	ctx := context.Background()
	check(b, do(b, vm, reqs[0]))
	b.ReportAllocs()
	i := 1
	for b.Loop() {
		res, err := vm.Do(ctx, reqs[i%len(reqs)])
		if err != nil || res.Forwarded == nil || res.Status != 200 {
			b.Fatalf("request %d: err %v, local %+v", i, err, res.LocalResponse)
		}
		i++
	}
	b.StopTimer()
	if err := vm.Err(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFloor: the no-op filter, the hot path's exact request.
func BenchmarkFloor(b *testing.B) {
	p := hotPool(b)
	vm := newVM(b, noopModule(b).NewPlugin(hostConfig(nil)))
	runRequests(b, vm, []*hosttest.Request{benchRequest(p.xfcc[0])}, func(b *testing.B, r *hosttest.Result) {
		if r.Forwarded == nil {
			b.Fatal("no-op filter did not forward")
		}
	})
}

// forwardedIdentity fails unless the request reached the upstream with every
// identity header the filter writes.
func forwardedIdentity(b *testing.B, r *hosttest.Result) {
	b.Helper()
	if r.Forwarded == nil {
		b.Fatalf("denied: %s", r.LocalResponse.Body)
	}
	for _, k := range []string{"x-mtls-subject", "x-mtls-issuer", "x-mtls-not-before", "x-mtls-not-after",
		"x-mtls-sha256-fingerprint", "x-mtls-serial", "x-user-sub", "x-mtls-verification-status", "client-cert"} {
		if _, ok := header(r.Forwarded.Headers, k); !ok {
			b.Fatalf("%s not written", k)
		}
	}
}

// BenchmarkHotPath: a client seen before (cached verdict), all identity
// headers written. P-256/depth3 is the headline number.
func BenchmarkHotPath(b *testing.B) {
	for _, c := range benchCases {
		b.Run(caseName(c.k, c.depth), func(b *testing.B) {
			p := newLeafPool(b, c.k, c.depth, coldPool)
			_, vm := newPlugin(b, filterConfig(nil, p.ch.Root), nil)
			runRequests(b, vm, []*hosttest.Request{benchRequest(p.xfcc[0])}, forwardedIdentity)
			if m, _ := vm.Plugin().Metric("mtlsgate.cache.miss"); m.Value != 1 {
				b.Fatalf("%d cache misses, want only the first request", m.Value)
			}
		})
	}
}

// BenchmarkHotPathOverFloor runs the hot path and the floor in one
// benchmark, alternating chunks of interleaveChunk requests (and which goes
// first), and reports each one's time per request and their ratio, the
// "≤ 4× floor" target. Separate benchmark runs minutes apart see this
// machine's drift as a difference between the two; here both share it.
// Each op is one request to each.
func BenchmarkHotPathOverFloor(b *testing.B) {
	p := hotPool(b)
	req := benchRequest(p.xfcc[0])
	_, hot := newPlugin(b, filterConfig(nil, p.ch.Root), nil)
	floor := newVM(b, noopModule(b).NewPlugin(hostConfig(nil)))
	forwardedIdentity(b, do(b, hot, req))
	do(b, floor, req)
	ctx := context.Background()
	run := func(vm *hosttest.VM, n int) time.Duration {
		start := time.Now()
		for i := 0; i < n; i++ {
			if res, err := vm.Do(ctx, req); err != nil || res.Forwarded == nil {
				b.Fatalf("request: err %v, local %+v", err, res.LocalResponse)
			}
		}
		return time.Since(start)
	}
	var tHot, tFloor time.Duration
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(interleaveChunk, b.N-done)
		if round%2 == 0 {
			tHot += run(hot, n)
			tFloor += run(floor, n)
		} else {
			tFloor += run(floor, n)
			tHot += run(hot, n)
		}
		done += n
	}
	b.StopTimer()
	if m, _ := hot.Plugin().Metric("mtlsgate.cache.miss"); m.Value != 1 {
		b.Fatalf("%d cache misses, want only the first request", m.Value)
	}
	b.ReportMetric(float64(tHot.Nanoseconds())/float64(b.N), "hot-ns/req")
	b.ReportMetric(float64(tFloor.Nanoseconds())/float64(b.N), "floor-ns/req")
	b.ReportMetric(float64(tHot)/float64(tFloor), "x-floor")
}

// interleaveChunk is short against the machine's drift (seconds to minutes)
// and long against a chunk's switch between the two VMs.
const interleaveChunk = 500

// BenchmarkColdPath: a certificate the VM has not seen on every request.
func BenchmarkColdPath(b *testing.B) {
	for _, c := range benchCases {
		b.Run(caseName(c.k, c.depth), func(b *testing.B) {
			p := newLeafPool(b, c.k, c.depth, coldPool)
			_, vm := newPlugin(b, filterConfig(map[string]any{"cacheSize": coldCache}, p.ch.Root), nil)
			reqs := make([]*hosttest.Request, len(p.xfcc))
			for i, x := range p.xfcc {
				reqs[i] = benchRequest(x)
			}
			runRequests(b, vm, reqs, forwardedIdentity)
			if m, _ := vm.Plugin().Metric("mtlsgate.cache.hit"); m.Value != 0 {
				b.Fatalf("%d cache hits on the cold path", m.Value)
			}
		})
	}
}

// BenchmarkNewVM: instantiate the module and start the plugin (_initialize,
// vm_start, configure with a one-CA inline bundle), as Envoy does for each
// worker and on every configuration change.
func BenchmarkNewVM(b *testing.B) {
	p := hotPool(b)
	for _, m := range []struct {
		name string
		mod  func(testing.TB) *hosttest.Module
		cfg  []byte
	}{
		{"filter", filterModule, mustJSON(b, filterConfig(nil, p.ch.Root))},
		{"noop", noopModule, nil},
	} {
		b.Run(m.name, func(b *testing.B) {
			plugin := m.mod(b).NewPlugin(hostConfig(m.cfg))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				vm, err := plugin.NewVM(ctx)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = vm.Close(ctx)
				b.StartTimer()
			}
		})
	}
}

// Shared-data keys of filter/main.go for the sidecar source the tests use
// (cluster mtlsgate_sidecar, path /v1/bundle).
const (
	sharedBundleKey = "mtlsgate.bundle/mtlsgate_sidecar/v1/bundle"
	sharedLeaseKey  = "mtlsgate.bundle.lease/mtlsgate_sidecar/v1/bundle"
)

// BenchmarkBundleRefresh: a new /v1/bundle document parsed and swapped in by
// the wasm filter. It goes through the path every worker VM takes when the
// bundle changes: the fetching VM publishes the body in shared data, and each
// VM's tick loads it. The fetch lease is held far in the future so no tick
// calls the sidecar; the HTTP round trip is the sidecar's, not the filter's.
func BenchmarkBundleRefresh(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("CAs="+strconv.Itoa(n), func(b *testing.B) {
			docs := bundleDocs(b, n)
			plugin, vm := newPlugin(b, map[string]any{"policies": []any{policyDoc("mtls", nil)},
				"trustBundle": map[string]any{"cluster": "mtlsgate_sidecar"}}, nil)
			plugin.SetSharedData(sharedLeaseKey, []byte("9223372036854775807"), 0)
			b.SetBytes(int64(len(docs[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				plugin.SetSharedData(sharedBundleKey, docs[i%2], 0)
				if err := vm.Tick(); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.StopTimer()
			if m, _ := plugin.Metric("mtlsgate.bundle.loaded"); m.Value != uint64(i) {
				b.Fatalf("%d bundles loaded in %d refreshes", m.Value, i)
			}
		})
	}
}
