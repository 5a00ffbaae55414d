package hosttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// The serialized map layout from the ABI spec, built by hand: count, then
// key/value sizes, then NUL-terminated keys and values.
func TestHeaderCodecMatchesSpecBytes(t *testing.T) {
	want := []byte{
		2, 0, 0, 0,
		5, 0, 0, 0, 3, 0, 0, 0,
		1, 0, 0, 0, 0, 0, 0, 0,
		':', 'p', 'a', 't', 'h', 0, '/', 'a', 'b', 0,
		'x', 0, 0,
	}
	hs := []abi.Header{{Key: ":path", Value: "/ab"}, {Key: "x", Value: ""}}
	if got := abi.EncodeHeaders(hs); !bytes.Equal(got, want) {
		t.Fatalf("encode = %v\nwant     %v", got, want)
	}
	if got := decodePairs(want); len(got) != 2 || got[0] != hs[0] || got[1] != hs[1] {
		t.Fatalf("decode = %v", got)
	}
	// Envoy's toPairs yields nothing for a count the buffer cannot hold.
	bad := append([]byte(nil), want...)
	binary.LittleEndian.PutUint32(bad, 1000)
	if got := decodePairs(bad); got != nil {
		t.Fatalf("oversized count decoded to %v", got)
	}
	if got := decodePairs(want[:len(want)-2]); got != nil {
		t.Fatalf("truncated strings decoded to %v", got)
	}
}

func TestHeaderMapSemantics(t *testing.T) {
	m := newHeaderMap([]abi.Header{{Key: ":method", Value: "GET"}, {Key: "X-A", Value: "1"}, {Key: "x-a", Value: "2"}})
	if v, _ := m.get("X-a"); v != "1" {
		t.Errorf("repeated key get = %q, Envoy returns the first", v)
	}
	m.add(":path", "/")
	if m.h[1].Key != ":path" {
		t.Errorf("pseudo-header not kept in front: %v", m.h)
	}
	m.replace("x-a", "3")
	if vs := Values(m.h, "x-a"); len(vs) != 1 || vs[0] != "3" {
		t.Errorf("replace = %v", vs)
	}
	if m.byteSize() != uint32(len(":method")+3+len(":path")+1+len("x-a")+1) {
		t.Errorf("byteSize = %d", m.byteSize())
	}
	m.remove("X-A")
	if _, ok := m.get("x-a"); ok {
		t.Error("remove left the key")
	}
}

func TestPropertyEncodings(t *testing.T) {
	if b := propInt64(443); len(b) != 8 || binary.LittleEndian.Uint64(b) != 443 {
		t.Errorf("int64 = %v", b)
	}
	if !bytes.Equal(propBool(true), []byte{1}) || !bytes.Equal(propBool(false), []byte{0}) {
		t.Error("bool encoding")
	}
}

func noopVM(t *testing.T) *VM {
	t.Helper()
	path, err := BuildWasm("github.com/mtlsgate/mtlsgate/filter/examples/noop")
	if err != nil {
		t.Fatal(err)
	}
	m, err := CompileFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	vm, err := m.NewPlugin(PluginConfig{}).NewVM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// Guest pointers outside memory are InvalidMemoryAccess, never a host panic.
func TestOutOfRangePointers(t *testing.T) {
	vm := noopVM(t)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	size := vm.mod.Memory().Size()
	far := uint64(size - 4)
	name := []byte("plugin_name")
	namePtr, ok := vm.alloc(vm.mod, uint32(len(name)))
	if !ok {
		t.Fatal("guest allocation failed")
	}
	vm.mod.Memory().Write(namePtr, name)
	huge := uint64(0xFFFFFFF0)
	cases := map[string]func() abi.Status{
		"log":            func() abi.Status { return hLog(vm, vm.mod, []uint64{2, huge, 100}) },
		"log straddling": func() abi.Status { return hLog(vm, vm.mod, []uint64{2, far, 100}) },
		"get_log_level":  func() abi.Status { return hGetLogLevel(vm, vm.mod, []uint64{huge}) },
		"time":           func() abi.Status { return hGetTime(vm, vm.mod, []uint64{far}) },
		"property path":  func() abi.Status { return hGetProperty(vm, vm.mod, []uint64{huge, 10, 0, 0}) },
		"property result": func() abi.Status {
			return hGetProperty(vm, vm.mod, []uint64{uint64(namePtr), uint64(len(name)), huge, huge})
		},
		"shared data key":  func() abi.Status { return hSetSharedData(vm, vm.mod, []uint64{huge, 5, 0, 0, 0}) },
		"local response":   func() abi.Status { return hSendLocalResponse(vm, vm.mod, []uint64{403, 0, 0, huge, 9, 0, 0, 0}) },
		"http_call":        func() abi.Status { return hHTTPCall(vm, vm.mod, []uint64{huge, 3, 0, 0, 0, 0, 0, 0, 0, 0}) },
		"define_metric":    func() abi.Status { return hDefineMetric(vm, vm.mod, []uint64{0, huge, 4, 0}) },
		"header map value": func() abi.Status { return hGetHeaderMapValue(vm, vm.mod, []uint64{0, huge, 4, 0, 0}) },
	}
	for name, f := range cases {
		if st := f(); st != abi.StatusInvalidMemoryAccess {
			t.Errorf("%s: %v, want InvalidMemoryAccess", name, st)
		}
	}
	// Arguments arrive with undefined upper bits; they must be ignored.
	if st := hLog(vm, vm.mod, []uint64{0xdead_0000_0000 | 2, 0, 0}); st != abi.StatusOK {
		t.Errorf("log with dirty upper bits: %v", st)
	}
	if st := hLog(vm, vm.mod, []uint64{6, 0, 0}); st != abi.StatusBadArgument {
		t.Errorf("log level 6: %v", st)
	}
}

func TestRootContextHostCalls(t *testing.T) {
	vm := noopVM(t)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	// On the root context there is no stream: maps are BadArgument, pairs
	// are empty, properties of the connection are absent.
	if st := hGetHeaderMapSize(vm, vm.mod, []uint64{0, 0}); st != abi.StatusBadArgument {
		t.Errorf("map size on root: %v", st)
	}
	if st := hSetProperty(vm, vm.mod, []uint64{0, 0, 0, 0}); st != abi.StatusNotFound {
		t.Errorf("set_property on root: %v", st)
	}
	if _, st := vm.property(nil, abi.PropertyPath("source", "address")); st != abi.StatusNotFound {
		t.Errorf("source.address on root: %v", st)
	}
	if st := hSetEffectiveContext(vm, vm.mod, []uint64{999}); st != abi.StatusBadArgument {
		t.Errorf("unknown effective context: %v", st)
	}
	if st := hCallForeign(vm, vm.mod, []uint64{0, 0, 0, 0, 0, 0}); st != abi.StatusNotFound {
		t.Errorf("unknown foreign function: %v", st)
	}
	if st := hGetMetric(vm, vm.mod, []uint64{4, 0}); st != abi.StatusNotFound {
		t.Errorf("undefined metric: %v", st)
	}
	if st := hIncrementMetric(vm, vm.mod, []uint64{2, 1}); st != abi.StatusBadArgument {
		t.Errorf("increment histogram id: %v", st)
	}
	if st := hDone(vm, vm.mod, nil); st != abi.StatusNotFound {
		t.Errorf("proxy_done outside shutdown: %v", st)
	}
}
