package hosttest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/mtlsgate/mtlsgate/host-test/internal/shared"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// LogEntry is one proxy_log call, or one fd_write to stdout (info) or stderr
// (error), as Envoy routes them.
type LogEntry struct {
	Level   abi.LogLevel
	Message string
}

func (l LogEntry) String() string { return l.Level.String() + ": " + l.Message }

// ErrPluginStart reports that proxy_on_vm_start or proxy_on_configure returned
// false or trapped: Envoy does not run requests on such a plugin.
var ErrPluginStart = errors.New("plugin failed to start")

// ErrVMFailed is returned for calls on a VM whose guest trapped earlier.
var ErrVMFailed = errors.New("wasm VM failed")

// ErrNoTimer is returned by Tick when the module set no tick period.
var ErrNoTimer = errors.New("no tick period set")

type vmKey struct{}

// VM is one instance of the module with its root context, like one Envoy
// worker's VM. Its methods are safe for concurrent use.
type VM struct {
	p   *Plugin
	mod api.Module
	fns map[string]api.Function
	ctx context.Context
	// cancel stops in-flight http calls and the pump when the VM closes.
	cancel context.CancelFunc

	// mu serializes guest calls; everything below up to logMu is guarded by it
	// (host functions run inside guest calls, so they hold it too).
	mu         sync.Mutex
	stack      [8]uint64
	allocStack [1]uint64
	// keys holds header names already copied out of the guest (internKey).
	keys       map[string]string
	rootID     uint32
	nextID     uint32
	current    uint32
	effective  uint32
	streams    map[uint32]*Stream
	metricIDs  map[uint32]*shared.Metric
	nextMetric [3]uint32
	statusCode uint32
	statusMsg  string
	httpResp   *httpResult
	// configuring is true during proxy_on_configure, the only time Envoy
	// serves the plugin configuration buffer (Context::getBuffer).
	configuring bool
	nextToken   uint32
	calls       map[uint32]struct{}
	failed      error
	closed      bool
	doneCalled  bool

	tickPeriod  atomic.Int64
	tickChanged chan struct{}

	logMu sync.Mutex
	logs  []LogEntry

	evMu   sync.Mutex
	events []event
	notify chan struct{}

	pumpMu   sync.Mutex
	pumpDone chan struct{}
}

type eventKind int

const (
	evHTTP eventKind = iota
	evQueue
)

type event struct {
	kind      eventKind
	token     uint32
	contextID uint32
	http      *httpResult
}

// NewVM instantiates the module and starts the plugin the way Envoy does:
// _initialize, proxy_on_context_create(root, 0), proxy_on_vm_start,
// proxy_on_configure. A false or a trap from either start callback returns an
// error wrapping ErrPluginStart with the module's log lines.
func (p *Plugin) NewVM(ctx context.Context) (*VM, error) {
	vctx, cancel := context.WithCancel(context.Background())
	vm := &VM{
		p:           p,
		cancel:      cancel,
		rootID:      1,
		nextID:      2,
		streams:     map[uint32]*Stream{},
		metricIDs:   map[uint32]*shared.Metric{},
		calls:       map[uint32]struct{}{},
		nextToken:   1,
		tickChanged: make(chan struct{}, 1),
		notify:      make(chan struct{}, 1),
	}
	// Envoy's metric ids carry the type in the low two bits and grow by 4
	// (source/extensions/common/wasm/wasm.h, kMetricTypeMask/kMetricIdIncrement).
	vm.nextMetric = [3]uint32{uint32(abi.MetricCounter), uint32(abi.MetricGauge), uint32(abi.MetricHistogram)}
	vm.ctx = context.WithValue(vctx, vmKey{}, vm)
	vm.current = vm.rootID

	vm.mu.Lock()
	defer vm.mu.Unlock()
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions("_initialize").
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader)
	if p.cfg.Nanotime != nil {
		cfg = cfg.WithNanotime(p.cfg.Nanotime, 1)
	}
	mod, err := p.mod.rt.InstantiateModule(experimental.WithMemoryAllocator(vm.ctx, memoryAllocator), p.mod.compiled, cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: instantiate (_initialize): %v%s", ErrPluginStart, err, vm.logTail())
	}
	vm.mod = mod
	vm.fns = lookupExports(mod)
	if vm.fns["proxy_on_memory_allocate"] == nil {
		vm.closeLocked()
		return nil, fmt.Errorf("%w: module does not export proxy_on_memory_allocate", ErrPluginStart)
	}
	if _, _, err := vm.call("proxy_on_context_create", uint64(vm.rootID), 0); err != nil {
		vm.closeLocked()
		return nil, fmt.Errorf("%w: proxy_on_context_create: %v%s", ErrPluginStart, err, vm.logTail())
	}
	if r, ok, err := vm.call("proxy_on_vm_start", uint64(vm.rootID), uint64(len(p.cfg.VMConfig))); err != nil || (ok && r == 0) {
		vm.closeLocked()
		return nil, fmt.Errorf("%w: proxy_on_vm_start returned false%s%s", ErrPluginStart, errSuffix(err), vm.logTail())
	}
	vm.configuring = true
	r, ok, err := vm.call("proxy_on_configure", uint64(vm.rootID), uint64(len(p.cfg.Configuration)))
	vm.configuring = false
	if err != nil || (ok && r == 0) {
		vm.closeLocked()
		return nil, fmt.Errorf("%w: proxy_on_configure returned false%s%s", ErrPluginStart, errSuffix(err), vm.logTail())
	}
	return vm, nil
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

func (vm *VM) logTail() string {
	logs := vm.Logs()
	if len(logs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("; module log:")
	for _, l := range logs {
		b.WriteString("\n  ")
		b.WriteString(l.String())
	}
	return b.String()
}

// call invokes a guest export with vm.mu held. ok is false when the module
// does not export the function (Envoy then skips the callback). A trap marks
// the VM failed, as Envoy marks the wasm failed.
func (vm *VM) call(name string, args ...uint64) (uint64, bool, error) {
	if vm.failed != nil {
		return 0, false, vm.failed
	}
	if vm.closed {
		// Envoy never calls into a VM it has torn down; here the linear
		// memory is unmapped by then, so running guest code would fault.
		return 0, false, errVMClosed
	}
	f := vm.fns[name]
	if f == nil {
		return 0, false, nil
	}
	stack := vm.stack[:]
	copy(stack, args)
	prevCur, prevEff := vm.current, vm.effective
	if len(args) > 0 {
		vm.current = uint32(args[0])
	}
	vm.effective = 0
	err := f.CallWithStack(vm.ctx, stack)
	vm.current, vm.effective = prevCur, prevEff
	if err != nil {
		vm.failed = fmt.Errorf("%w: %s: %v", ErrVMFailed, name, err)
		return 0, true, vm.failed
	}
	return stack[0], true, nil
}

// Err returns the trap that failed the VM, if any.
func (vm *VM) Err() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.failed
}

// MemoryPages is the size of the guest's linear memory in 64 KiB wasm pages.
// Linear memory never shrinks, so a VM whose page count keeps rising under a
// steady load is leaking, which is what soak tests watch.
func (vm *VM) MemoryPages() uint32 {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.mod.Memory().Size() / 65536
}

// RootContextID is the id of the plugin's root context.
func (vm *VM) RootContextID() uint32 { return vm.rootID }

// Plugin returns the plugin the VM belongs to.
func (vm *VM) Plugin() *Plugin { return vm.p }

func (vm *VM) log(level abi.LogLevel, msg string) {
	if level < vm.p.LogLevel() {
		return
	}
	vm.logMu.Lock()
	vm.logs = append(vm.logs, LogEntry{level, msg})
	vm.logMu.Unlock()
}

// Logs returns a copy of every log line so far.
func (vm *VM) Logs() []LogEntry {
	vm.logMu.Lock()
	defer vm.logMu.Unlock()
	return append([]LogEntry(nil), vm.logs...)
}

func (vm *VM) logCount() int {
	vm.logMu.Lock()
	defer vm.logMu.Unlock()
	return len(vm.logs)
}

func (vm *VM) logsSince(n int) []LogEntry {
	vm.logMu.Lock()
	defer vm.logMu.Unlock()
	if n > len(vm.logs) {
		return nil
	}
	return append([]LogEntry(nil), vm.logs[n:]...)
}

// TakeLogs returns the collected log lines and drops them in one step, for
// callers that stream a long-running VM's log elsewhere: a line logged
// between a Logs and a ClearLogs call would otherwise be lost.
func (vm *VM) TakeLogs() []LogEntry {
	vm.logMu.Lock()
	defer vm.logMu.Unlock()
	out := vm.logs
	vm.logs = nil
	return out
}

// ClearLogs drops the collected log lines.
func (vm *VM) ClearLogs() {
	vm.logMu.Lock()
	vm.logs = nil
	vm.logMu.Unlock()
}

// TickPeriod is the period the module last set with
// proxy_set_tick_period_milliseconds (0: none).
func (vm *VM) TickPeriod() time.Duration { return time.Duration(vm.tickPeriod.Load()) }

// Tick calls proxy_on_tick on the root context now.
func (vm *VM) Tick() error {
	if vm.TickPeriod() == 0 {
		return ErrNoTimer
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return errors.New("vm closed")
	}
	_, _, err := vm.call("proxy_on_tick", uint64(vm.rootID))
	return err
}

func (vm *VM) post(ev event) {
	vm.evMu.Lock()
	vm.events = append(vm.events, ev)
	vm.evMu.Unlock()
	select {
	case vm.notify <- struct{}{}:
	default:
	}
}

// QueueReady implements shared.QueueOwner: Envoy posts proxy_on_queue_ready to
// the registering VM's thread, so it is delivered like an http response.
func (vm *VM) QueueReady(contextID, token uint32) {
	vm.post(event{kind: evQueue, token: token, contextID: contextID})
}

// Pending reports how many completed http calls and queue notifications wait
// for delivery.
func (vm *VM) Pending() int {
	vm.evMu.Lock()
	defer vm.evMu.Unlock()
	return len(vm.events)
}

// InFlight reports how many http calls have neither completed nor been
// delivered.
func (vm *VM) InFlight() int {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return len(vm.calls)
}

// DeliverPending delivers every completed http call response
// (proxy_on_http_call_response) and queue notification (proxy_on_queue_ready)
// now, and returns how many it delivered.
func (vm *VM) DeliverPending() (int, error) {
	n := 0
	for {
		vm.evMu.Lock()
		if len(vm.events) == 0 {
			vm.evMu.Unlock()
			return n, nil
		}
		ev := vm.events[0]
		vm.events = vm.events[1:]
		vm.evMu.Unlock()
		if err := vm.deliver(ev); err != nil {
			return n, err
		}
		n++
	}
}

// WaitHTTPCalls delivers http call responses as they complete until none is
// in flight or ctx ends.
func (vm *VM) WaitHTTPCalls(ctx context.Context) error {
	for {
		if _, err := vm.DeliverPending(); err != nil {
			return err
		}
		if vm.InFlight() == 0 && vm.Pending() == 0 {
			return nil
		}
		select {
		case <-vm.notify:
		case <-ctx.Done():
			return fmt.Errorf("waiting for http calls: %w", ctx.Err())
		}
	}
}

func (vm *VM) deliver(ev event) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil
	}
	switch ev.kind {
	case evQueue:
		_, _, err := vm.call("proxy_on_queue_ready", uint64(ev.contextID), uint64(ev.token))
		return err
	case evHTTP:
		delete(vm.calls, ev.token)
		r := ev.http
		vm.httpResp = r
		if r.failed {
			// Context::onHttpCallFailure: status BrokenConnection "reset",
			// and a callback with no headers, body or trailers.
			vm.statusCode, vm.statusMsg = uint32(abi.StatusBrokenConnection), "reset"
		}
		var nh, nt int
		if r.headers != nil {
			nh = len(r.headers.h)
		}
		if r.trailers != nil {
			nt = len(r.trailers.h)
		}
		_, _, err := vm.call("proxy_on_http_call_response", uint64(vm.rootID), uint64(ev.token),
			uint64(nh), uint64(len(r.body)), uint64(nt))
		vm.httpResp = nil
		if r.failed {
			vm.statusMsg = ""
		}
		return err
	}
	return nil
}

// StartPump starts the VM's pump goroutine: it calls proxy_on_tick at the
// period the module set and delivers http call responses and queue
// notifications as they arrive, so the VM runs by itself as in Envoy. Close
// stops it.
func (vm *VM) StartPump() {
	vm.pumpMu.Lock()
	defer vm.pumpMu.Unlock()
	if vm.pumpDone != nil {
		return
	}
	done := make(chan struct{})
	vm.pumpDone = done
	go func() {
		defer close(done)
		var tick *time.Ticker
		var tickC <-chan time.Time
		reset := func() {
			if tick != nil {
				tick.Stop()
				tick, tickC = nil, nil
			}
			if p := vm.TickPeriod(); p > 0 {
				tick = time.NewTicker(p)
				tickC = tick.C
			}
		}
		reset()
		defer func() {
			if tick != nil {
				tick.Stop()
			}
		}()
		for {
			select {
			case <-vm.ctx.Done():
				return
			case <-vm.notify:
				if _, err := vm.DeliverPending(); err != nil {
					vm.log(abi.LogCritical, "host: "+err.Error())
				}
			case <-vm.tickChanged:
				reset()
			case <-tickC:
				if err := vm.Tick(); err != nil && !errors.Is(err, ErrNoTimer) {
					vm.log(abi.LogCritical, "host: "+err.Error())
				}
			}
		}
	}()
}

func (vm *VM) pumpRunning() bool {
	vm.pumpMu.Lock()
	defer vm.pumpMu.Unlock()
	return vm.pumpDone != nil
}

// Close runs proxy_on_done and proxy_on_delete on the root context, stops the
// pump and in-flight calls, and releases the instance.
func (vm *VM) Close(ctx context.Context) error {
	vm.cancel()
	vm.pumpMu.Lock()
	done := vm.pumpDone
	vm.pumpMu.Unlock()
	if done != nil {
		<-done
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil
	}
	if vm.failed == nil {
		vm.doneCalled = true
		vm.call("proxy_on_done", uint64(vm.rootID))
		vm.call("proxy_on_delete", uint64(vm.rootID))
	}
	return vm.closeLocked()
}

func (vm *VM) closeLocked() error {
	vm.closed = true
	vm.cancel()
	if vm.mod == nil {
		return nil
	}
	return vm.mod.Close(context.Background())
}

var errVMClosed = errors.New("vm closed")

// memory helpers -------------------------------------------------------------

func readGuest(mod api.Module, ptr, size uint32) ([]byte, bool) {
	if size == 0 {
		return nil, true
	}
	return mod.Memory().Read(ptr, size)
}

func readGuestString(mod api.Module, ptr, size uint32) (string, bool) {
	b, ok := readGuest(mod, ptr, size)
	return string(b), ok
}

// internKey copies a header name out of guest memory, reusing the copy made
// for an earlier request: a filter writes the same few names on every
// request, and allocating each again is host overhead no real proxy has
// (Envoy's inline headers are preallocated). Bounded, so a guest writing
// endless distinct names only stops being interned.
func (vm *VM) internKey(b []byte) string {
	if k, ok := vm.keys[string(b)]; ok {
		return k
	}
	k := string(b)
	if len(vm.keys) < maxInternedKeys {
		if vm.keys == nil {
			vm.keys = make(map[string]string)
		}
		vm.keys[k] = k
	}
	return k
}

const maxInternedKeys = 512

// alloc asks the guest for memory through proxy_on_memory_allocate, as
// WasmBase::allocMemory does, and checks the result lies in memory.
func (vm *VM) alloc(mod api.Module, size uint32) (uint32, bool) {
	f := vm.fns["proxy_on_memory_allocate"]
	vm.allocStack[0] = uint64(size)
	if err := f.CallWithStack(vm.ctx, vm.allocStack[:]); err != nil {
		return 0, false
	}
	ptr := uint32(vm.allocStack[0])
	if ptr == 0 {
		return 0, false
	}
	if _, ok := mod.Memory().Read(ptr, size); !ok {
		return 0, false
	}
	return ptr, true
}

// copyOut is WasmBase::copyToPointerSize: empty data writes pointer 0 and size
// 0 without allocating; otherwise the data goes into guest-allocated memory.
func (vm *VM) copyOut(mod api.Module, data []byte, ptrPtr, sizePtr uint32) abi.Status {
	return vm.fillOut(mod, uint32(len(data)), func(dst []byte) { copy(dst, data) }, ptrPtr, sizePtr)
}

// fillOut is copyOut for data written straight into the guest's buffer by
// fill, as Envoy serializes header maps in place.
func (vm *VM) fillOut(mod api.Module, size uint32, fill func(dst []byte), ptrPtr, sizePtr uint32) abi.Status {
	var ptr uint32
	if size > 0 {
		p, ok := vm.alloc(mod, size)
		if !ok {
			return abi.StatusInvalidMemoryAccess
		}
		dst, _ := mod.Memory().Read(p, size) // alloc checked the range
		fill(dst)
		ptr = p
	}
	mem := mod.Memory()
	if !mem.WriteUint32Le(ptrPtr, ptr) || !mem.WriteUint32Le(sizePtr, size) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}
