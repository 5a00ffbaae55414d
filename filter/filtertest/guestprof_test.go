package filtertest

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestGuestProfile times every guest function of the compiled filter on the
// hot-path request, with wazero's function listener: self and inclusive
// time per request, and calls per request. It is a tool, not a test: it
// runs only when GUESTPROF_WASM names an unstripped build (names come from
// the name section), e.g.
//
//	go run ./filter/wasmbuild/overlay > /tmp/overlay.json
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath \
//	  -overlay /tmp/overlay.json -o /tmp/prof.wasm ./filter
//	GUESTPROF_WASM=/tmp/prof.wasm go test -run TestGuestProfile -v ./filter/filtertest
//
// The listener's own cost (a clock read on each call and return) inflates
// every number two to three times, most for functions called often; compare
// runs with each other, not with the benchmark.
type gprof struct {
	stack []gframe
	self  map[string]time.Duration
	incl  map[string]time.Duration
	calls map[string]int
	// allocs counts heap allocations (mallocgc) and byte-wise comparisons
	// (memequal, a loop over single bytes in Go wasm) by the guest function
	// that asked for them, the nearest caller outside the runtime.
	allocs map[string]int
	on     bool
}

type gframe struct {
	name  string
	start time.Time
	child time.Duration
}

func (p *gprof) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	return gl{p, def.DebugName()}
}

type gl struct {
	p    *gprof
	name string
}

func (l gl) Before(_ context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	p := l.p
	if p.on && (l.name == ".runtime.mallocgc" || l.name == ".runtime.memequal") {
		for i := len(p.stack) - 1; i >= 0; i-- {
			if n := p.stack[i].name; !strings.HasPrefix(n, ".runtime.") {
				p.allocs[strings.TrimPrefix(l.name, ".runtime.")+" from "+n]++
				break
			}
		}
	}
	p.stack = append(p.stack, gframe{name: l.name, start: time.Now()})
}

func (l gl) After(_ context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64) {
	p := l.p
	f := p.stack[len(p.stack)-1]
	p.stack = p.stack[:len(p.stack)-1]
	d := time.Since(f.start)
	if len(p.stack) > 0 {
		p.stack[len(p.stack)-1].child += d
	}
	if p.on {
		p.self[f.name] += d - f.child
		p.incl[f.name] += d
		p.calls[f.name]++
	}
}

func (l gl) Abort(ctx context.Context, m api.Module, def api.FunctionDefinition, _ error) {
	l.After(ctx, m, def, nil)
}

func TestGuestProfile(t *testing.T) {
	path := os.Getenv("GUESTPROF_WASM")
	if path == "" {
		t.Skip("GUESTPROF_WASM not set")
	}
	p := &gprof{self: map[string]time.Duration{}, incl: map[string]time.Duration{}, calls: map[string]int{}, allocs: map[string]int{}}
	ctx := experimental.WithFunctionListenerFactory(context.Background(), p)
	m, err := hosttest.CompileFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	pool := newLeafPool(t, testpki.P256, 3, 1)
	plugin := m.NewPlugin(hosttest.PluginConfig{Name: "mtlsgate", RootID: "mtlsgate", VMID: "mtlsgate",
		Configuration: mustJSON(t, filterConfig(nil, pool.ch.Root)), LogLevel: 2})
	vm := newVM(t, plugin)
	req := benchRequest(pool.xfcc[0])
	for i := 0; i < 200; i++ {
		if _, err := vm.Do(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	const n = 2000
	p.on = true
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := vm.Do(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(start)
	p.on = false
	dump := func(title string, m map[string]time.Duration) {
		type kv struct {
			k string
			v time.Duration
		}
		var l []kv
		for k, v := range m {
			l = append(l, kv{k, v})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
		fmt.Printf("== %s (per request, total %v/req)\n", title, el/n)
		for _, e := range l[:min(60, len(l))] {
			fmt.Printf("%10.2fµs %8.1f calls  %s\n", float64(e.v.Nanoseconds())/n/1000, float64(p.calls[e.k])/n, e.k)
		}
	}
	dump("self", p.self)
	dump("inclusive", p.incl)
	fmt.Printf("== heap allocations and string comparisons per request, by the function asking\n")
	sites := make([]string, 0, len(p.allocs))
	for k := range p.allocs {
		sites = append(sites, k)
	}
	sort.Slice(sites, func(i, j int) bool { return p.allocs[sites[i]] > p.allocs[sites[j]] })
	for _, k := range sites {
		fmt.Printf("%8.2f  %s\n", float64(p.allocs[k])/n, k)
	}
}

// TestCachedRequestAllocatesNothing: a request whose verdict is cached makes
// no guest heap allocation. In Go wasm an allocation costs about 0.3 µs and
// feeds the GC, and the hot path was made allocation-free on purpose
// (docs/PERFORMANCE.md); a change that brings one back fails here with the
// function that asked for it. Counted with a function listener on a build
// that keeps its name section, so the count is exact, not timed.
// profiledFilter compiles an unstripped build of the filter (function
// names from its name section) with p listening to every guest function.
func profiledFilter(t *testing.T) (*gprof, *hosttest.Module) {
	t.Helper()
	path, err := hosttest.BuildWasmNamed("github.com/mtlsgate/mtlsgate/filter")
	if err != nil {
		t.Fatal(err)
	}
	p := &gprof{self: map[string]time.Duration{}, incl: map[string]time.Duration{}, calls: map[string]int{}, allocs: map[string]int{}}
	m, err := hosttest.CompileFile(experimental.WithFunctionListenerFactory(context.Background(), p), path)
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

func TestCachedRequestAllocatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second, unstripped filter module")
	}
	p, m := profiledFilter(t)
	pool := newLeafPool(t, testpki.P256, 3, 1)
	plugin := m.NewPlugin(hosttest.PluginConfig{Name: "mtlsgate", RootID: "mtlsgate", VMID: "mtlsgate",
		Configuration: mustJSON(t, filterConfig(nil, pool.ch.Root)), LogLevel: abi.LogInfo})
	vm := newVM(t, plugin)
	req := benchRequest(pool.xfcc[0])
	// Warm up: the first request verifies and fills the cache; buffers grow
	// to size over the next few.
	for i := 0; i < 20; i++ {
		if res := do(t, vm, req); res.Forwarded == nil {
			t.Fatalf("request %d denied: %s", i, res.LocalResponse.Body)
		}
	}
	const n = 200
	p.on = true
	start := time.Now()
	for i := 0; i < n; i++ {
		if res := do(t, vm, req); res.Forwarded == nil {
			t.Fatalf("request %d denied", i)
		}
	}
	elapsed := time.Since(start)
	p.on = false
	// The log level is read once per logLevelTTL, not per request.
	if c, most := p.calls["env.proxy_get_log_level"], 1+int(elapsed/logLevelTTL); c > most {
		t.Errorf("proxy_get_log_level called %d times in %d requests over %v, want at most %d", c, n, elapsed, most)
	}
	if p.calls[".proxy_on_request_headers"] != n {
		t.Fatalf("listener saw %d proxy_on_request_headers calls, want %d: not counting the guest", p.calls[".proxy_on_request_headers"], n)
	}
	if m, _ := plugin.Metric("mtlsgate.cache.hit"); m.Value < n {
		t.Fatalf("%d cache hits, want at least %d", m.Value, n)
	}
	for site, c := range p.allocs {
		if strings.HasPrefix(site, "mallocgc ") {
			t.Errorf("%.2f heap allocations per cached request: %s", float64(c)/n, site)
		}
	}
}
