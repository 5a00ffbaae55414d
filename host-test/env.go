package hosttest

import (
	"context"
	"encoding/binary"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

type hostFunc struct {
	name   string
	params []api.ValueType
	fn     func(vm *VM, mod api.Module, stack []uint64) abi.Status
}

func params(n int) []api.ValueType {
	p := make([]api.ValueType, n)
	for i := range p {
		p[i] = i32
	}
	return p
}

// envFuncs are the env imports Envoy provides, with Envoy's signatures
// (proxy-wasm-cpp-host include/proxy-wasm/exports.h).
var envFuncs = []hostFunc{
	{"proxy_log", params(3), hLog},
	{"proxy_get_log_level", params(1), hGetLogLevel},
	{"proxy_set_tick_period_milliseconds", params(1), hSetTickPeriod},
	{"proxy_get_current_time_nanoseconds", params(1), hGetTime},
	{"proxy_get_status", params(3), hGetStatus},
	{"proxy_get_buffer_bytes", params(5), hGetBufferBytes},
	{"proxy_get_buffer_status", params(3), hGetBufferStatus},
	{"proxy_set_buffer_bytes", params(5), hSetBufferBytes},
	{"proxy_get_header_map_pairs", params(3), hGetHeaderMapPairs},
	{"proxy_set_header_map_pairs", params(3), hSetHeaderMapPairs},
	{"proxy_get_header_map_value", params(5), hGetHeaderMapValue},
	{"proxy_add_header_map_value", params(5), hAddHeaderMapValue},
	{"proxy_replace_header_map_value", params(5), hReplaceHeaderMapValue},
	{"proxy_remove_header_map_value", params(3), hRemoveHeaderMapValue},
	{"proxy_get_header_map_size", params(2), hGetHeaderMapSize},
	{"proxy_get_property", params(4), hGetProperty},
	{"proxy_set_property", params(4), hSetProperty},
	{"proxy_send_local_response", params(8), hSendLocalResponse},
	{"proxy_http_call", params(10), hHTTPCall},
	{"proxy_continue_stream", params(1), hContinueStream},
	{"proxy_close_stream", params(1), hCloseStream},
	{"proxy_continue_request", params(0), func(vm *VM, _ api.Module, _ []uint64) abi.Status {
		return vm.continueStream(abi.StreamRequest)
	}},
	{"proxy_continue_response", params(0), func(vm *VM, _ api.Module, _ []uint64) abi.Status {
		return vm.continueStream(abi.StreamResponse)
	}},
	{"proxy_get_shared_data", params(5), hGetSharedData},
	{"proxy_set_shared_data", params(5), hSetSharedData},
	{"proxy_register_shared_queue", params(3), hRegisterQueue},
	{"proxy_resolve_shared_queue", params(5), hResolveQueue},
	{"proxy_enqueue_shared_queue", params(3), hEnqueue},
	{"proxy_dequeue_shared_queue", params(3), hDequeue},
	{"proxy_define_metric", params(4), hDefineMetric},
	{"proxy_increment_metric", []api.ValueType{i32, i64}, hIncrementMetric},
	{"proxy_record_metric", []api.ValueType{i32, i64}, hRecordMetric},
	{"proxy_get_metric", params(2), hGetMetric},
	{"proxy_set_effective_context", params(1), hSetEffectiveContext},
	{"proxy_done", params(0), hDone},
	{"proxy_call_foreign_function", params(6), hCallForeign},
	// Envoy links these; this host has no gRPC upstreams, so a filter using
	// them loads here as in Envoy but its calls report Unimplemented.
	{"proxy_grpc_call", params(13), unimplemented},
	{"proxy_grpc_stream", params(10), unimplemented},
	{"proxy_grpc_send", params(4), unimplemented},
	{"proxy_grpc_cancel", params(1), unimplemented},
	{"proxy_grpc_close", params(1), unimplemented},
	{"proxy_get_configuration", params(2), hGetConfiguration},
	{"proxy_clear_route_cache", params(0), func(*VM, api.Module, []uint64) abi.Status { return abi.StatusOK }},
}

func unimplemented(*VM, api.Module, []uint64) abi.Status { return abi.StatusUnimplemented }

// abiSpecific lists the env functions Envoy registers only for some ABI
// versions (proxy-wasm-cpp-host src/wasm.cc, WasmBase::registerCallbacks).
var abiSpecific = map[string][]string{
	"proxy_get_configuration": {"0_1_0"},
	"proxy_continue_request":  {"0_1_0"},
	"proxy_continue_response": {"0_1_0"},
	"proxy_clear_route_cache": {"0_1_0"},
	"proxy_continue_stream":   {"0_2_0", "0_2_1"},
	"proxy_close_stream":      {"0_2_0", "0_2_1"},
	"proxy_get_log_level":     {"0_2_1"},
}

func envAllowed(name, ver string) bool {
	if vs, ok := abiSpecific[name]; ok {
		for _, v := range vs {
			if v == ver {
				return true
			}
		}
		return false
	}
	for _, f := range envFuncs {
		if f.name == name {
			return true
		}
	}
	return false
}

func vmFrom(ctx context.Context) *VM {
	vm, _ := ctx.Value(vmKey{}).(*VM)
	return vm
}

func instantiateHostModules(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder("env")
	for _, f := range envFuncs {
		fn := f.fn
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			vm := vmFrom(ctx)
			if vm == nil {
				stack[0] = uint64(abi.StatusInternalFailure)
				return
			}
			stack[0] = uint64(fn(vm, mod, stack))
		}), f.params, []api.ValueType{i32}).Export(f.name)
	}
	if _, err := b.Instantiate(ctx); err != nil {
		return err
	}
	return instantiateWASI(ctx, rt)
}

func u32(v uint64) uint32 { return uint32(v) }

// stream returns the stream of the current (or effective) context, nil for
// the root context.
func (vm *VM) stream() *Stream {
	id := vm.current
	if vm.effective != 0 {
		id = vm.effective
	}
	return vm.streams[id]
}

func hLog(vm *VM, mod api.Module, st []uint64) abi.Status {
	level := u32(st[0])
	if level > uint32(abi.LogCritical) {
		return abi.StatusBadArgument
	}
	msg, ok := readGuestString(mod, u32(st[1]), u32(st[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	vm.log(abi.LogLevel(level), msg)
	return abi.StatusOK
}

func hGetLogLevel(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mod.Memory().WriteUint32Le(u32(st[0]), uint32(vm.p.LogLevel())) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hSetTickPeriod(vm *VM, _ api.Module, st []uint64) abi.Status {
	vm.tickPeriod.Store(int64(time.Duration(u32(st[0])) * time.Millisecond))
	select {
	case vm.tickChanged <- struct{}{}:
	default:
	}
	return abi.StatusOK
}

func hGetTime(_ *VM, mod api.Module, st []uint64) abi.Status {
	if !mod.Memory().WriteUint64Le(u32(st[0]), uint64(time.Now().UnixNano())) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hGetStatus(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mod.Memory().WriteUint32Le(u32(st[0]), vm.statusCode) {
		return abi.StatusInvalidMemoryAccess
	}
	return vm.copyOut(mod, []byte(vm.statusMsg), u32(st[1]), u32(st[2]))
}

func hGetConfiguration(vm *VM, mod api.Module, st []uint64) abi.Status {
	cfg := vm.p.cfg.VMConfig
	if vm.configuring {
		cfg = vm.p.cfg.Configuration
	}
	return vm.copyOut(mod, cfg, u32(st[0]), u32(st[1]))
}

// buffer returns the buffer Envoy's Context::getBuffer would: nil with
// NotFound when Envoy returns no buffer at all, or the bytes (maybe empty)
// and a setter when it returns one.
func (vm *VM) buffer(t abi.BufferType) (data []byte, set func([]byte), st abi.Status) {
	s := vm.stream()
	switch t {
	case abi.BufferVMConfiguration:
		return vm.p.cfg.VMConfig, nil, abi.StatusOK
	case abi.BufferPluginConfiguration:
		if vm.configuring {
			return vm.p.cfg.Configuration, nil, abi.StatusOK
		}
		return nil, nil, abi.StatusNotFound
	case abi.BufferRequestBody:
		if s != nil && s.reqBodyLive {
			return s.reqBody, func(b []byte) { s.reqBody = b }, abi.StatusOK
		}
		return nil, nil, abi.StatusOK
	case abi.BufferResponseBody:
		if s != nil && s.respBodyLive {
			return s.respBody, func(b []byte) { s.respBody = b }, abi.StatusOK
		}
		return nil, nil, abi.StatusOK
	case abi.BufferHTTPCallResponse:
		if vm.httpResp != nil {
			return vm.httpResp.body, nil, abi.StatusOK
		}
		return nil, nil, abi.StatusNotFound
	case abi.BufferDownstreamData, abi.BufferUpstreamData, abi.BufferGrpcReceive, abi.BufferCallData:
		return nil, nil, abi.StatusOK
	}
	return nil, nil, abi.StatusNotFound
}

// hGetBufferBytes mirrors exports.cc get_buffer_bytes: the length is clipped
// to the buffer, and a zero length returns Ok without touching the result
// pointers.
func hGetBufferBytes(vm *VM, mod api.Module, st []uint64) abi.Status {
	t := abi.BufferType(u32(st[0]))
	if t > abi.BufferCallData {
		return abi.StatusBadArgument
	}
	start, length := uint64(u32(st[1])), uint64(u32(st[2]))
	data, _, s := vm.buffer(t)
	if s != abi.StatusOK {
		return s
	}
	if start > uint64(len(data)) {
		return abi.StatusBadArgument
	}
	if start+length > uint64(len(data)) {
		length = uint64(len(data)) - start
	}
	if length == 0 {
		return abi.StatusOK
	}
	return vm.copyOut(mod, data[start:start+length], u32(st[3]), u32(st[4]))
}

func hGetBufferStatus(vm *VM, mod api.Module, st []uint64) abi.Status {
	t := abi.BufferType(u32(st[0]))
	if t > abi.BufferCallData {
		return abi.StatusBadArgument
	}
	data, _, s := vm.buffer(t)
	if s != abi.StatusOK {
		return s
	}
	if !mod.Memory().WriteUint32Le(u32(st[1]), uint32(len(data))) || !mod.Memory().WriteUint32Le(u32(st[2]), 0) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

// hSetBufferBytes mirrors Envoy's Buffer::copyFrom: start 0 replaces the first
// length bytes with the data, start at or past the end appends, anything in
// between is BadArgument; read-only buffers are BadArgument.
func hSetBufferBytes(vm *VM, mod api.Module, st []uint64) abi.Status {
	t := abi.BufferType(u32(st[0]))
	if t > abi.BufferCallData {
		return abi.StatusBadArgument
	}
	cur, set, s := vm.buffer(t)
	if s != abi.StatusOK {
		return s
	}
	data, ok := readGuest(mod, u32(st[3]), u32(st[4]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	if set == nil {
		if t == abi.BufferRequestBody || t == abi.BufferResponseBody {
			return abi.StatusOK // no buffer in flight: Envoy writes to a scratch buffer
		}
		return abi.StatusBadArgument
	}
	start, length := uint64(u32(st[1])), uint64(u32(st[2]))
	switch {
	case start == 0:
		if length > uint64(len(cur)) {
			length = uint64(len(cur))
		}
		set(append(append([]byte(nil), data...), cur[length:]...))
	case start >= uint64(len(cur)):
		set(append(append([]byte(nil), cur...), data...))
	default:
		return abi.StatusBadArgument
	}
	return abi.StatusOK
}

// headerMapFor is Context::getMap (write=true) / getConstMap.
func (vm *VM) headerMapFor(t abi.MapType, write bool) *headerMap {
	if t == abi.MapHTTPCallResponseHeaders || t == abi.MapHTTPCallResponseTrailers {
		if write || vm.httpResp == nil {
			return nil
		}
		if t == abi.MapHTTPCallResponseHeaders {
			return vm.httpResp.headers
		}
		return vm.httpResp.trailers
	}
	s := vm.stream()
	if s == nil {
		return nil
	}
	readable := func(m *headerMap, live bool) *headerMap {
		if live || (s.accessLog && !write) {
			return m
		}
		return nil
	}
	switch t {
	case abi.MapRequestHeaders:
		return readable(s.reqH, s.reqHLive)
	case abi.MapRequestTrailers:
		if s.accessLog {
			return nil
		}
		// Envoy adds request trailers when asked for them in the last body
		// callback (decoder_callbacks_->addDecodedTrailers()).
		if write && s.reqT == nil && s.inReqBodyEOS {
			s.reqT, s.reqTLive = newHeaderMap(nil), true
		}
		return readable(s.reqT, s.reqTLive)
	case abi.MapResponseHeaders:
		return readable(s.respH, s.respHLive)
	case abi.MapResponseTrailers:
		if write && s.respT == nil && s.inRespBodyEOS {
			s.respT, s.respTLive = newHeaderMap(nil), true
		}
		return readable(s.respT, s.respTLive)
	}
	return nil
}

// i32 arguments arrive in uint64 stack slots whose upper bits are undefined,
// so every argument is truncated before use.
func mapTypeOK(v uint64) bool { return u32(v) <= uint32(abi.MapHTTPCallResponseTrailers) }

func hGetHeaderMapPairs(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mapTypeOK(st[0]) {
		return abi.StatusBadArgument
	}
	m := vm.headerMapFor(abi.MapType(u32(st[0])), false)
	if m == nil || len(m.h) == 0 {
		return vm.copyOut(mod, nil, u32(st[1]), u32(st[2]))
	}
	// Serialized straight into the guest's buffer, as Envoy's exports.cc
	// does, rather than through a host-side copy.
	return vm.fillOut(mod, uint32(abi.EncodedHeadersSize(m.h)), func(dst []byte) { abi.PutHeaders(dst, m.h) }, u32(st[1]), u32(st[2]))
}

// decodePairs is exports.cc toPairs: a buffer too short for its declared
// count yields no pairs rather than an error.
func decodePairs(b []byte) []abi.Header {
	if len(b) < 4 {
		return nil
	}
	n := binary.LittleEndian.Uint32(b)
	if 4+uint64(n)*8 > uint64(len(b)) {
		return nil
	}
	hs, err := abi.DecodeHeaders(b)
	if err != nil {
		return nil
	}
	return hs
}

func hSetHeaderMapPairs(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mapTypeOK(st[0]) {
		return abi.StatusBadArgument
	}
	data, ok := readGuest(mod, u32(st[1]), u32(st[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	m := vm.headerMapFor(abi.MapType(u32(st[0])), true)
	if m == nil {
		return abi.StatusBadArgument
	}
	m.set(decodePairs(data))
	return abi.StatusOK
}

func hGetHeaderMapValue(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mapTypeOK(st[0]) {
		return abi.StatusBadArgument
	}
	key, ok := readGuestString(mod, u32(st[1]), u32(st[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	s := vm.stream()
	m := vm.headerMapFor(abi.MapType(u32(st[0])), false)
	if m == nil {
		if s != nil && s.accessLog {
			return abi.StatusNotFound
		}
		return abi.StatusBadArgument
	}
	v, found := m.get(key)
	if !found {
		return abi.StatusNotFound
	}
	return vm.copyOut(mod, []byte(v), u32(st[3]), u32(st[4]))
}

func headerKV(vm *VM, mod api.Module, st []uint64) (string, string, bool) {
	kb, ok1 := readGuest(mod, u32(st[1]), u32(st[2]))
	v, ok2 := readGuestString(mod, u32(st[3]), u32(st[4]))
	return vm.internKey(kb), v, ok1 && ok2
}

func hAddHeaderMapValue(vm *VM, mod api.Module, st []uint64) abi.Status {
	return writeHeaderKV(vm, mod, st, (*headerMap).add)
}

func hReplaceHeaderMapValue(vm *VM, mod api.Module, st []uint64) abi.Status {
	return writeHeaderKV(vm, mod, st, (*headerMap).replace)
}

// writeHeaderKV is the shared body of the add and replace calls: the same
// argument checks and status codes, a different edit.
func writeHeaderKV(vm *VM, mod api.Module, st []uint64, edit func(m *headerMap, k, v string)) abi.Status {
	if !mapTypeOK(st[0]) {
		return abi.StatusBadArgument
	}
	k, v, ok := headerKV(vm, mod, st)
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	m := vm.headerMapFor(abi.MapType(u32(st[0])), true)
	if m == nil {
		return abi.StatusBadArgument
	}
	edit(m, k, v)
	return abi.StatusOK
}

func hRemoveHeaderMapValue(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mapTypeOK(st[0]) {
		return abi.StatusBadArgument
	}
	k, ok := readGuestString(mod, u32(st[1]), u32(st[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	m := vm.headerMapFor(abi.MapType(u32(st[0])), true)
	if m == nil {
		return abi.StatusBadArgument
	}
	m.remove(k)
	return abi.StatusOK
}

func hGetHeaderMapSize(vm *VM, mod api.Module, st []uint64) abi.Status {
	if !mapTypeOK(st[0]) {
		return abi.StatusBadArgument
	}
	m := vm.headerMapFor(abi.MapType(u32(st[0])), true)
	if m == nil {
		return abi.StatusBadArgument
	}
	if !mod.Memory().WriteUint32Le(u32(st[1]), m.byteSize()) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hGetProperty(vm *VM, mod api.Module, st []uint64) abi.Status {
	path, ok := readGuest(mod, u32(st[0]), u32(st[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	v, s := vm.property(vm.stream(), path)
	if s != abi.StatusOK {
		return s
	}
	return vm.copyOut(mod, v, u32(st[2]), u32(st[3]))
}

// hSetProperty mirrors Context::setProperty: the value lands in the stream's
// filter state under "wasm.<path>"; without a stream there is nowhere to put
// it (NotFound).
func hSetProperty(vm *VM, mod api.Module, st []uint64) abi.Status {
	k, ok1 := readGuest(mod, u32(st[0]), u32(st[1]))
	v, ok2 := readGuest(mod, u32(st[2]), u32(st[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	s := vm.stream()
	if s == nil {
		return abi.StatusNotFound
	}
	if s.setProps == nil {
		s.setProps = map[string][]byte{}
	}
	s.setProps[string(k)] = append([]byte(nil), v...)
	return abi.StatusOK
}

func hSendLocalResponse(vm *VM, mod api.Module, st []uint64) abi.Status {
	details, ok1 := readGuestString(mod, u32(st[1]), u32(st[2]))
	body, ok2 := readGuest(mod, u32(st[3]), u32(st[4]))
	hdrs, ok3 := readGuest(mod, u32(st[5]), u32(st[6]))
	if !ok1 || !ok2 || !ok3 {
		return abi.StatusInvalidMemoryAccess
	}
	s := vm.stream()
	if s == nil || s.local != nil {
		// Envoy only acts with decoder callbacks (a stream), and a second
		// local reply on a stream is ignored.
		return abi.StatusOK
	}
	var hs []abi.Header
	for _, h := range decodePairs(hdrs) {
		hs = append(hs, abi.Header{Key: lower(h.Key), Value: h.Value})
	}
	s.local = &LocalResponse{
		Status: int(u32(st[0])),
		// Envoy replaces whitespace in details with underscores
		// (StringUtil::replaceAllEmptySpace).
		Details:    strings.Map(func(r rune) rune { return mapSpace(r) }, details),
		Body:       append([]byte(nil), body...),
		Headers:    hs,
		GrpcStatus: int32(u32(st[7])),
	}
	s.localPhase = 1
	if s.respHLive || s.respBodyLive || s.respTLive || s.respH != nil {
		s.localPhase = 2
	}
	s.reqPaused, s.respPaused = false, false
	s.wake()
	return abi.StatusOK
}

func mapSpace(r rune) rune {
	switch r {
	case ' ', '\t', '\n', '\r', '\f', '\v':
		return '_'
	}
	return r
}

func (vm *VM) continueStream(t abi.StreamType) abi.Status {
	s := vm.stream()
	if s == nil {
		// No decoder/encoder callbacks on a root context: Envoy does nothing.
		if t > abi.StreamUpstream {
			return abi.StatusBadArgument
		}
		if t == abi.StreamUpstream {
			return abi.StatusUnimplemented
		}
		return abi.StatusOK
	}
	return s.continueStream(t)
}

func hContinueStream(vm *VM, _ api.Module, st []uint64) abi.Status {
	if u32(st[0]) > uint32(abi.StreamUpstream) {
		return abi.StatusBadArgument
	}
	return vm.continueStream(abi.StreamType(u32(st[0])))
}

// hCloseStream mirrors Context::closeStream: the stream is reset; there is no
// response to the client.
func hCloseStream(vm *VM, _ api.Module, st []uint64) abi.Status {
	if u32(st[0]) > uint32(abi.StreamUpstream) {
		return abi.StatusBadArgument
	}
	s := vm.stream()
	if s != nil && (abi.StreamType(u32(st[0])) == abi.StreamRequest || abi.StreamType(u32(st[0])) == abi.StreamResponse) && s.local == nil {
		s.local = &LocalResponse{Status: 0, Details: "wasm_close_stream"}
		s.localPhase = 2 // a reset: nothing more goes through the filter
		s.wake()
	}
	return abi.StatusOK
}

func hGetSharedData(vm *VM, mod api.Module, st []uint64) abi.Status {
	key, ok := readGuestString(mod, u32(st[0]), u32(st[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	v, cas, s := vm.p.store.Get(key)
	if s != abi.StatusOK {
		return s
	}
	if s := vm.copyOut(mod, v, u32(st[2]), u32(st[3])); s != abi.StatusOK {
		return s
	}
	if !mod.Memory().WriteUint32Le(u32(st[4]), cas) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hSetSharedData(vm *VM, mod api.Module, st []uint64) abi.Status {
	key, ok1 := readGuestString(mod, u32(st[0]), u32(st[1]))
	v, ok2 := readGuest(mod, u32(st[2]), u32(st[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	return vm.p.store.Set(key, v, u32(st[4]))
}

func hRegisterQueue(vm *VM, mod api.Module, st []uint64) abi.Status {
	name, ok := readGuestString(mod, u32(st[0]), u32(st[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	ctxID := vm.current
	if vm.effective != 0 {
		ctxID = vm.effective
	}
	tok := vm.p.store.RegisterQueue(vm.p.cfg.VMID, name, vm, ctxID)
	if !mod.Memory().WriteUint32Le(u32(st[2]), tok) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hResolveQueue(vm *VM, mod api.Module, st []uint64) abi.Status {
	vmID, ok1 := readGuestString(mod, u32(st[0]), u32(st[1]))
	name, ok2 := readGuestString(mod, u32(st[2]), u32(st[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	tok, s := vm.p.store.ResolveQueue(vmID, name)
	if s != abi.StatusOK {
		return s
	}
	if !mod.Memory().WriteUint32Le(u32(st[4]), tok) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hEnqueue(vm *VM, mod api.Module, st []uint64) abi.Status {
	data, ok := readGuest(mod, u32(st[1]), u32(st[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	return vm.p.store.Enqueue(u32(st[0]), data)
}

func hDequeue(vm *VM, mod api.Module, st []uint64) abi.Status {
	data, s := vm.p.store.Dequeue(u32(st[0]))
	if s != abi.StatusOK {
		return s
	}
	return vm.copyOut(mod, data, u32(st[1]), u32(st[2]))
}

const metricTypeMask = 0x3

func hDefineMetric(vm *VM, mod api.Module, st []uint64) abi.Status {
	t := u32(st[0])
	if t > uint32(abi.MetricHistogram) {
		return abi.StatusBadArgument
	}
	name, ok := readGuestString(mod, u32(st[1]), u32(st[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	vm.nextMetric[t] += 4
	id := vm.nextMetric[t]
	vm.metricIDs[id] = vm.p.store.Metrics().Define(abi.MetricType(t), name)
	if !mod.Memory().WriteUint32Le(u32(st[3]), id) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

// hIncrementMetric mirrors Context::incrementMetric: counters take only
// positive offsets, gauges either sign, histograms none.
func hIncrementMetric(vm *VM, _ api.Module, st []uint64) abi.Status {
	id, off := u32(st[0]), int64(st[1])
	switch abi.MetricType(id & metricTypeMask) {
	case abi.MetricCounter:
		m, ok := vm.metricIDs[id]
		if !ok {
			return abi.StatusNotFound
		}
		if off <= 0 {
			return abi.StatusBadArgument
		}
		vm.p.store.Metrics().Add(m, off)
		return abi.StatusOK
	case abi.MetricGauge:
		m, ok := vm.metricIDs[id]
		if !ok {
			return abi.StatusNotFound
		}
		vm.p.store.Metrics().Add(m, off)
		return abi.StatusOK
	}
	return abi.StatusBadArgument
}

// hRecordMetric mirrors Context::recordMetric: a counter adds, a gauge sets,
// a histogram records.
func hRecordMetric(vm *VM, _ api.Module, st []uint64) abi.Status {
	id, v := u32(st[0]), st[1]
	m, ok := vm.metricIDs[id]
	if !ok {
		return abi.StatusNotFound
	}
	switch abi.MetricType(id & metricTypeMask) {
	case abi.MetricCounter:
		vm.p.store.Metrics().Add(m, int64(v))
	case abi.MetricGauge:
		vm.p.store.Metrics().Set(m, v)
	default:
		vm.p.store.Metrics().Record(m, v)
	}
	return abi.StatusOK
}

func hGetMetric(vm *VM, mod api.Module, st []uint64) abi.Status {
	id := u32(st[0])
	switch abi.MetricType(id & metricTypeMask) {
	case abi.MetricCounter, abi.MetricGauge:
		m, ok := vm.metricIDs[id]
		if !ok {
			return abi.StatusNotFound
		}
		if !mod.Memory().WriteUint64Le(u32(st[1]), vm.p.store.Metrics().Value(m)) {
			return abi.StatusInvalidMemoryAccess
		}
		return abi.StatusOK
	}
	return abi.StatusBadArgument
}

func hSetEffectiveContext(vm *VM, _ api.Module, st []uint64) abi.Status {
	id := u32(st[0])
	if id != vm.rootID && vm.streams[id] == nil {
		return abi.StatusBadArgument
	}
	vm.effective = id
	return abi.StatusOK
}

// hDone mirrors WasmBase::done: only a root context that is shutting down and
// returned false from proxy_on_done may call it; otherwise NotFound.
func hDone(vm *VM, _ api.Module, _ []uint64) abi.Status {
	if vm.doneCalled {
		return abi.StatusOK
	}
	return abi.StatusNotFound
}

func hCallForeign(vm *VM, mod api.Module, st []uint64) abi.Status {
	name, ok1 := readGuestString(mod, u32(st[0]), u32(st[1]))
	args, ok2 := readGuest(mod, u32(st[2]), u32(st[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	f := vm.p.cfg.ForeignFunctions[name]
	if f == nil {
		return abi.StatusNotFound
	}
	out, s := f(append([]byte(nil), args...))
	if u32(st[4]) != 0 {
		if cs := vm.copyOut(mod, out, u32(st[4]), u32(st[5])); cs != abi.StatusOK {
			return cs
		}
	}
	return s
}
