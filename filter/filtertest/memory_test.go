package filtertest

import (
	"os"
	"sync/atomic"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// A VM lives as long as the Envoy worker: its linear memory only ever grows,
// so a leak per request or per client eventually takes the worker down. These
// tests run many requests from many distinct clients through one VM and
// require the memory to level off once the working set is reached.

// TestMemoryStable is the short version that runs with every `make test`.
func TestMemoryStable(t *testing.T) {
	runMemory(t, 20_000, 2_000, false, true)
}

// TestMemorySoak is `make soak-mem`: 1,000,000 requests from 10,000 clients.
func TestMemorySoak(t *testing.T) {
	if os.Getenv("MTLSGATE_SOAK_MEM") == "" {
		t.Skip("set MTLSGATE_SOAK_MEM=1 (make soak-mem) for the 1M-request run")
	}
	runMemory(t, 1_000_000, 10_000, true, false)
}

const memCacheSize = 1024 // the filter's default cacheSize

// pacingStep is how far, in 64 KiB pages, the peak of a short run moves
// between runs of the same build with no leak (see runMemory).
const pacingStep = 8

// runMemory sends the requests. A short run gives the guest the clock below
// instead of the host's and allows one pacing step of growth that does not
// repeat; the long run allows none.
func runMemory(t *testing.T, requests, clients int, verbose, short bool) {
	// RSA-2048 root signing leaves directly: the cheapest chain to verify in
	// wasm, so the many cache misses stay affordable.
	pool := newLeafPool(t, testpki.RSA2048, 2, clients)
	// The guest's GC paces itself by its monotonic clock as well as by
	// allocation, so with the host's clock how high the heap peaks shifts
	// with the machine's speed: a short run whose machine slowed down
	// halfway (CI starting another package) took one more step of pages,
	// leak or not. A clock that moves one microsecond per read takes the
	// machine out of the short run; the long run keeps the host's clock, as
	// in Envoy, and is long enough to ride out such steps.
	pc := hosttest.PluginConfig{
		Name: "mtlsgate", RootID: "mtlsgate", VMID: "mtlsgate",
		Configuration: mustJSON(t, filterConfig(nil, pool.ch.Root)), LogLevel: abi.LogInfo,
	}
	var clock atomic.Int64
	if short {
		pc.Nanotime = func() int64 { return clock.Add(1000) }
		defer func() {
			if clock.Load() == 0 {
				t.Error("the guest never read the steady clock: the run was paced by the host's")
			}
		}()
	}
	p := filterModule(t).NewPlugin(pc)
	plugin, vm := p, newVM(t, p)
	reqs := make([]*hosttest.Request, clients)
	for i, x := range pool.xfcc {
		reqs[i] = benchRequest(x)
	}
	send := func(i int) {
		res := do(t, vm, reqs[i])
		if res.Forwarded == nil {
			t.Fatalf("client %d denied: %s", i, res.LocalResponse.Body)
		}
	}
	// Traffic like a real edge: most requests from a set of regulars (cache
	// hits), the rest spread over every client (mostly misses, evictions).
	rng := uint64(0x9E3779B97F4A7C15)
	next := func() int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		if rng%5 != 0 {
			return int(rng>>8) % 256
		}
		return int(rng>>8) % clients
	}
	// Every client once first: the cache is full and churning from the
	// start, so what follows runs at the steady working set. Memory is then
	// compared from 40% (20% for the long run) of the requests on, leaving
	// the GC a few cycles to settle its heap goal.
	for i := 0; i < clients; i++ {
		send(i)
	}
	mark := requests * 2 / 5
	if requests >= 1_000_000 {
		mark = requests / 5
	}
	var atMark uint32
	for i := 0; i < requests; i++ {
		send(next())
		if i+1 == mark {
			atMark = vm.MemoryPages()
		}
		if verbose && (i+1)%(requests/10) == 0 {
			hits, _ := plugin.Metric("mtlsgate.cache.hit")
			misses, _ := plugin.Metric("mtlsgate.cache.miss")
			t.Logf("%8d requests: %5d pages (%.1f MiB), cache hits %d misses %d", i+1, vm.MemoryPages(),
				float64(vm.MemoryPages())/16, hits.Value, misses.Value)
		}
	}
	end := vm.MemoryPages()
	t.Logf("linear memory: %d pages at %d requests, %d pages at %d", atMark, mark, end, requests)
	switch {
	case end <= atMark:
	case !short || end-atMark > pacingStep:
		t.Errorf("linear memory grew from %d to %d pages between request %d and %d", atMark, end, mark, requests)
	default:
		// One step in a short run can be the GC's: the runtime's hash
		// seeds are random, so where the heap peaks moves by a step from
		// run to run (336 or 344 pages at the same point). A leak keeps
		// growing; the same number of requests again must not.
		more := requests - mark
		for i := 0; i < more; i++ {
			send(next())
		}
		again := vm.MemoryPages()
		t.Logf("one step of growth; %d pages after %d more requests", again, more)
		if again > end {
			t.Errorf("linear memory grew from %d pages at request %d to %d at %d and %d at %d", atMark, mark, end, requests, again, requests+more)
		}
	}
	if err := vm.Err(); err != nil {
		t.Fatal(err)
	}

	// The cache holds exactly its bound: after memCacheSize+76 distinct
	// clients in a row, the memCacheSize most recent are cached and the one
	// before them was evicted.
	seq := make([]int, memCacheSize+76)
	for i := range seq {
		seq[i] = clients - len(seq) + i
	}
	for _, c := range seq {
		send(c)
	}
	metric := func(name string) uint64 { m, _ := plugin.Metric(name); return m.Value }
	hits, misses := metric("mtlsgate.cache.hit"), metric("mtlsgate.cache.miss")
	send(seq[len(seq)-memCacheSize]) // the oldest still cached
	if metric("mtlsgate.cache.hit") != hits+1 {
		t.Errorf("the %dth most recent client was not cached", memCacheSize)
	}
	send(seq[len(seq)-memCacheSize-1]) // evicted
	if metric("mtlsgate.cache.miss") != misses+1 {
		t.Errorf("the %dth most recent client was still cached: cache exceeds its bound", memCacheSize+1)
	}
}
