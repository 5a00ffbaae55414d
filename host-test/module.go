// Package hosttest runs a compiled proxy-wasm (ABI 0.2.1) filter the way
// Envoy does, on wazero, so the real .wasm can be exercised in unit tests,
// benchmarks and the local dev gateway.
//
// Usage: Compile (or CompileFile) the module once; make a Plugin from it with
// the VM and plugin configuration, upstream clusters and log level; create one
// VM per worker from the Plugin (VMs of a Plugin share shared data, queues and
// metrics, as Envoy's workers do); run requests through a VM with Do, or
// callback by callback with a Stream.
//
// A VM is safe for concurrent use: every call into the guest takes the VM's
// lock, because a wasm instance cannot run two calls at once. Timers and http
// callout responses are delivered by the VM's pump goroutine (StartPump), or
// stepped by the caller (Tick, DeliverPending) when no pump runs.
package hosttest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/mtlsgate/mtlsgate/host-test/internal/shared"
	"github.com/mtlsgate/mtlsgate/host-test/internal/wasmbuild"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// Module is a compiled filter and the wazero runtime that runs its VMs.
type Module struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	abiVer   string
}

// Import is one function the module imports.
type Import struct {
	Module, Name string
}

// ErrImport reports a module that imports a function Envoy does not provide,
// so it would fail to load in Envoy with "missing import".
var ErrImport = errors.New("module imports a function Envoy does not provide")

// CompileFile reads and compiles a .wasm file.
func CompileFile(ctx context.Context, path string) (*Module, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read wasm module: %w", err)
	}
	return Compile(ctx, b)
}

// Compile compiles a module once; many VMs can then be created from it.
// It fails if the module imports anything Envoy would not link.
func Compile(ctx context.Context, wasmBytes []byte) (*Module, error) {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(false))
	m := &Module{rt: rt}
	compiled, err := rt.CompileModule(ctx, wasmBytes)
	if err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("compile wasm module: %w", err)
	}
	m.compiled = compiled
	exports := compiled.ExportedFunctions()
	for _, v := range []string{"0_2_1", "0_2_0", "0_1_0"} {
		if _, ok := exports["proxy_abi_version_"+v]; ok {
			m.abiVer = v
			break
		}
	}
	if m.abiVer == "" {
		rt.Close(ctx)
		return nil, errors.New("module exports no proxy_abi_version_* function; Envoy would reject it")
	}
	if err := checkImports(compiled, m.abiVer); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	if err := instantiateHostModules(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	return m, nil
}

// checkImports rejects imports Envoy does not register. For env, Envoy
// registers the common proxy_* functions for every ABI and the ABI-specific
// ones only for their version (proxy-wasm-cpp-host src/wasm.cc,
// WasmBase::registerCallbacks): proxy_continue_request, _continue_response,
// _get_configuration and _clear_route_cache only for 0.1.0; proxy_continue_stream,
// _close_stream for 0.2.x and proxy_get_log_level for 0.2.1.
func checkImports(c wazero.CompiledModule, ver string) error {
	var bad []string
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch mod {
		case "env":
			if !envAllowed(name, ver) {
				bad = append(bad, mod+"."+name)
			}
		case "wasi_snapshot_preview1", "wasi_unstable":
			if !wasiAllowed[name] {
				bad = append(bad, mod+"."+name)
			}
		default:
			bad = append(bad, mod+"."+name)
		}
	}
	if len(c.ImportedMemories()) > 0 {
		bad = append(bad, "(imported memory)")
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%w (ABI %s): %s", ErrImport, strings.ReplaceAll(ver, "_", "."), strings.Join(bad, ", "))
	}
	return nil
}

// Imports lists the module's imported functions.
func (m *Module) Imports() []Import {
	var out []Import
	for _, f := range m.compiled.ImportedFunctions() {
		mod, name, _ := f.Import()
		out = append(out, Import{mod, name})
	}
	return out
}

// ABIVersion is the proxy-wasm ABI the module declares, e.g. "0.2.1".
func (m *Module) ABIVersion() string { return strings.ReplaceAll(m.abiVer, "_", ".") }

// Close releases the runtime and every VM created from it.
func (m *Module) Close(ctx context.Context) error { return m.rt.Close(ctx) }

// Upstream is where proxy_http_call requests for one cluster go: an in-process
// handler or a base URL ("http://127.0.0.1:8080"). The call's :path is
// appended to URL.
type Upstream struct {
	Handler http.Handler
	URL     string
}

// PluginConfig is what Envoy's wasm filter config carries.
type PluginConfig struct {
	// Name is plugin_name; RootID is plugin_root_id; VMID is plugin_vm_id and
	// the namespace of shared queues.
	Name, RootID, VMID string
	// VMConfig is vm_config.configuration; Configuration is the plugin's.
	VMConfig, Configuration []byte
	// LogLevel is what proxy_get_log_level reports; messages below it are
	// dropped, as Envoy's logger drops them. Default: trace (keep all).
	LogLevel abi.LogLevel
	// Clusters maps cluster names (proxy_http_call's upstream) to targets.
	Clusters map[string]Upstream
	// HTTPClient performs URL upstream calls; by default one that, like
	// Envoy's AsyncClient, neither follows redirects nor decompresses.
	HTTPClient *http.Client
	// ForeignFunctions answers proxy_call_foreign_function by name; unknown
	// names get NotFound as in Envoy.
	ForeignFunctions map[string]func(args []byte) ([]byte, abi.Status)
	// SharedWith, when it has the same VMID, makes this plugin use its
	// shared data and queues. Envoy keeps them per vm_id for the whole
	// process (proxy-wasm-cpp-host's global SharedData), across every filter
	// configuration with that vm_id and across reloads; each plugin gets its
	// own store otherwise, so unit tests stay independent.
	SharedWith *Plugin
	// Nanotime, when set, is the guest's monotonic clock (WASI
	// clock_time_get for CLOCK_MONOTONIC, which Go's runtime reads) in
	// place of the host's. The guest's GC paces itself by that clock, so a
	// test that must not depend on the machine's speed, such as one
	// comparing linear memory between two points, gives it a clock that
	// only the guest's own calls move.
	Nanotime func() int64
}

// Plugin owns the state Envoy shares between the VMs of one plugin across
// worker threads: shared data, shared queues and metrics.
type Plugin struct {
	mod   *Module
	cfg   PluginConfig
	store *shared.Store
	// level is the current log level: cfg.LogLevel until SetLogLevel.
	level atomic.Int32
}

// envoyAsyncClient calls URL upstreams as Envoy's AsyncClient does: a
// redirect is the answer (it is not followed), and the body arrives as the
// upstream sent it (no Accept-Encoding added, nothing decompressed).
var envoyAsyncClient = &http.Client{
	Transport:     &http.Transport{Proxy: http.ProxyFromEnvironment, DisableCompression: true, ForceAttemptHTTP2: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// NewPlugin makes a plugin; create VMs from it with NewVM.
func (m *Module) NewPlugin(cfg PluginConfig) *Plugin {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = envoyAsyncClient
	}
	p := &Plugin{mod: m, cfg: cfg, store: shared.NewStore()}
	if o := cfg.SharedWith; o != nil && o.cfg.VMID == cfg.VMID {
		p.store = o.store
	}
	p.level.Store(int32(cfg.LogLevel))
	return p
}

// SetLogLevel changes the log level of every VM of the plugin at once, as
// Envoy's admin endpoint /logging?wasm=LEVEL does while requests run.
func (p *Plugin) SetLogLevel(l abi.LogLevel) { p.level.Store(int32(l)) }

// LogLevel is the plugin's current log level.
func (p *Plugin) LogLevel() abi.LogLevel { return abi.LogLevel(p.level.Load()) }

// SharedData reads a shared data entry and its cas.
func (p *Plugin) SharedData(key string) (value []byte, cas uint32, ok bool) {
	v, c, st := p.store.Get(key)
	return v, c, st == abi.StatusOK
}

// SetSharedData writes an entry with proxy_set_shared_data's semantics.
func (p *Plugin) SetSharedData(key string, value []byte, cas uint32) abi.Status {
	return p.store.Set(key, value, cas)
}

// Enqueue pushes data to a registered queue, as another VM would.
func (p *Plugin) Enqueue(queueName string, data []byte) abi.Status {
	tok, st := p.store.ResolveQueue(p.cfg.VMID, queueName)
	if st != abi.StatusOK {
		return st
	}
	return p.store.Enqueue(tok, data)
}

// Metric is a metric as the plugin's VMs defined it.
type Metric = shared.Metric

// Metrics returns every metric defined by the plugin's VMs, sorted by name.
func (p *Plugin) Metrics() []Metric { return p.store.Metrics().Snapshot() }

// Metric returns one metric by name.
func (p *Plugin) Metric(name string) (Metric, bool) {
	for _, m := range p.Metrics() {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// BuildWasm compiles the Go main package pkg (import path or path relative to
// the current directory) for GOOS=wasip1 GOARCH=wasm with -buildmode=c-shared
// and returns the cached .wasm path; sources unchanged since the last build
// reuse it.
func BuildWasm(pkg string) (string, error) {
	return wasmbuild.Build(".", pkg)
}

// BuildWasmNamed is BuildWasm keeping the module's name section, so a
// function listener sees guest function names.
func BuildWasmNamed(pkg string) (string, error) {
	return wasmbuild.BuildNamed(".", pkg)
}

// exported function names the host calls.
var guestExports = []string{
	"proxy_on_memory_allocate", "proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure",
	"proxy_on_tick", "proxy_on_queue_ready", "proxy_on_request_headers", "proxy_on_request_body",
	"proxy_on_request_trailers", "proxy_on_response_headers", "proxy_on_response_body",
	"proxy_on_response_trailers", "proxy_on_http_call_response", "proxy_on_log", "proxy_on_done",
	"proxy_on_delete", "proxy_on_foreign_function",
}

func lookupExports(mod api.Module) map[string]api.Function {
	out := make(map[string]api.Function, len(guestExports))
	for _, n := range guestExports {
		if f := mod.ExportedFunction(n); f != nil {
			out[n] = f
		}
	}
	return out
}
