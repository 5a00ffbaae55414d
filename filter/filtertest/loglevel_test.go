package filtertest

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// The filter asks the host for its log level at most once a second, not on
// every request (TestCachedRequestAllocatesNothing counts the calls); a level
// raised on Envoy's admin endpoint must still show in the decision log
// within that second.
func TestLogLevelChangeFollowed(t *testing.T) {
	pool := newLeafPool(t, testpki.P256, 2, 1)
	plugin, vm := newPlugin(t, filterConfig(nil, pool.ch.Root), nil)
	req := benchRequest(pool.xfcc[0])
	decisions := func() int {
		n := 0
		for _, l := range vm.TakeLogs() {
			if l.Level == abi.LogDebug && strings.Contains(l.Message, `"msg":"mtls decision"`) {
				n++
			}
		}
		return n
	}
	if res := do(t, vm, req); res.Forwarded == nil {
		t.Fatal("valid client denied")
	}
	if n := decisions(); n != 0 {
		t.Fatalf("%d debug decision lines at info", n)
	}

	plugin.SetLogLevel(abi.LogDebug)
	// Within the TTL; the margin is for a loaded machine, the loop ends at
	// the first line.
	wait := logLevelTTL + 10*time.Second
	deadline := time.Now().Add(wait)
	for decisions() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no debug decision line %v after the level went to debug", wait)
		}
		do(t, vm, req)
		time.Sleep(50 * time.Millisecond)
	}

	// Lowered: the filter may still format the line for up to a second, and
	// the host drops it, as Envoy's logger does.
	plugin.SetLogLevel(abi.LogInfo)
	vm.TakeLogs()
	do(t, vm, req)
	if n := decisions(); n != 0 {
		t.Fatalf("%d debug decision lines after the level went back to info", n)
	}
}

// logLevelTTL mirrors the filter's refresh interval (filter/main.go).
const logLevelTTL = time.Second
