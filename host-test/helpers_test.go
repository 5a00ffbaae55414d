package hosttest_test

import (
	"context"
	"sync"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
)

const (
	abitestPkg = "github.com/mtlsgate/mtlsgate/filter/examples/abitest"
	noopPkg    = "github.com/mtlsgate/mtlsgate/filter/examples/noop"
)

var (
	modMu   sync.Mutex
	modules = map[string]*hosttest.Module{}
)

// module builds (or reuses the cached build of) pkg and compiles it once per
// test binary; VMs are cheap, compilation is not.
func module(tb testing.TB, pkg string) *hosttest.Module {
	tb.Helper()
	modMu.Lock()
	defer modMu.Unlock()
	if m, ok := modules[pkg]; ok {
		return m
	}
	path, err := hosttest.BuildWasm(pkg)
	if err != nil {
		tb.Fatalf("build %s: %v", pkg, err)
	}
	m, err := hosttest.CompileFile(context.Background(), path)
	if err != nil {
		tb.Fatalf("compile %s: %v", pkg, err)
	}
	modules[pkg] = m
	return m
}

func newVM(tb testing.TB, p *hosttest.Plugin) *hosttest.VM {
	tb.Helper()
	vm, err := p.NewVM(context.Background())
	if err != nil {
		tb.Fatalf("new VM: %v", err)
	}
	tb.Cleanup(func() { vm.Close(context.Background()) })
	return vm
}
