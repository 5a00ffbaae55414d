// Package abi holds the numbers and the one wire format of the proxy-wasm ABI
// 0.2.1 that both sides of this project need: the filter's guest layer and the
// host in host-test. It has no imports beyond encoding/binary so it compiles for
// wasip1 and natively alike.
//
// Values follow the ABI spec (proxy-wasm/spec, abi-versions/v0.2.1) and Envoy's
// enums in proxy-wasm-cpp-host include/proxy-wasm/wasm_api_impl.h and
// include/proxy-wasm/context_interface.h.
package abi

import (
	"encoding/binary"
	"errors"
)

// Status is a host call's result (WasmResult).
type Status uint32

const (
	StatusOK                   Status = 0
	StatusNotFound             Status = 1
	StatusBadArgument          Status = 2
	StatusSerializationFailure Status = 3
	StatusParseFailure         Status = 4
	StatusBadExpression        Status = 5
	StatusInvalidMemoryAccess  Status = 6
	StatusEmpty                Status = 7
	StatusCasMismatch          Status = 8
	StatusResultMismatch       Status = 9
	StatusInternalFailure      Status = 10
	StatusBrokenConnection     Status = 11
	StatusUnimplemented        Status = 12
)

var statusNames = [...]string{"OK", "NotFound", "BadArgument", "SerializationFailure", "ParseFailure",
	"BadExpression", "InvalidMemoryAccess", "Empty", "CasMismatch", "ResultMismatch", "InternalFailure",
	"BrokenConnection", "Unimplemented"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "Status(" + itoa(int(s)) + ")"
}

// Action is what a stream callback returns to the host.
type Action uint32

const (
	// ActionContinue lets the stream proceed to the next filter.
	ActionContinue Action = 0
	// ActionPause stops iteration (FilterHeadersStatus::StopIteration for headers,
	// StopIterationAndBuffer for data) until proxy_continue_stream.
	ActionPause Action = 1
	// ActionStopAllIterationAndBuffer is the value Envoy maps to
	// FilterHeadersStatus::StopAllIterationAndBuffer.
	ActionStopAllIterationAndBuffer Action = 3
	// ActionStopAllIterationAndWatermark is the value Envoy maps to
	// FilterHeadersStatus::StopAllIterationAndWatermark.
	ActionStopAllIterationAndWatermark Action = 4
)

// MapType selects a header map.
type MapType uint32

const (
	MapRequestHeaders           MapType = 0
	MapRequestTrailers          MapType = 1
	MapResponseHeaders          MapType = 2
	MapResponseTrailers         MapType = 3
	MapGrpcReceiveInitialMeta   MapType = 4
	MapGrpcReceiveTrailingMeta  MapType = 5
	MapHTTPCallResponseHeaders  MapType = 6
	MapHTTPCallResponseTrailers MapType = 7
)

// BufferType selects a byte buffer.
type BufferType uint32

const (
	BufferRequestBody         BufferType = 0
	BufferResponseBody        BufferType = 1
	BufferDownstreamData      BufferType = 2
	BufferUpstreamData        BufferType = 3
	BufferHTTPCallResponse    BufferType = 4
	BufferGrpcReceive         BufferType = 5
	BufferVMConfiguration     BufferType = 6
	BufferPluginConfiguration BufferType = 7
	BufferCallData            BufferType = 8
)

// LogLevel is proxy_log's level.
type LogLevel uint32

const (
	LogTrace    LogLevel = 0
	LogDebug    LogLevel = 1
	LogInfo     LogLevel = 2
	LogWarn     LogLevel = 3
	LogError    LogLevel = 4
	LogCritical LogLevel = 5
)

var levelNames = [...]string{"trace", "debug", "info", "warn", "error", "critical"}

func (l LogLevel) String() string {
	if int(l) < len(levelNames) {
		return levelNames[l]
	}
	return "level(" + itoa(int(l)) + ")"
}

// MetricType is proxy_define_metric's type.
type MetricType uint32

const (
	MetricCounter   MetricType = 0
	MetricGauge     MetricType = 1
	MetricHistogram MetricType = 2
)

// StreamType is proxy_continue_stream's and proxy_close_stream's argument.
type StreamType uint32

const (
	StreamRequest    StreamType = 0
	StreamResponse   StreamType = 1
	StreamDownstream StreamType = 2
	StreamUpstream   StreamType = 3
)

// Header is one header map entry. Order is kept: Envoy serializes maps in
// insertion order and repeated keys stay separate entries.
type Header struct {
	Key, Value string
}

// EncodeHeaders serializes a header map the way Envoy does
// (proxy-wasm-cpp-host src/pairs_util.cc, PairsUtil::marshalPairs): a u32 pair
// count, then a u32 key size and u32 value size per pair, then each key and value
// followed by a NUL byte. All integers little-endian.
func EncodeHeaders(hs []Header) []byte {
	out := make([]byte, EncodedHeadersSize(hs))
	PutHeaders(out, hs)
	return out
}

// EncodedHeadersSize is the length of hs serialized.
func EncodedHeadersSize(hs []Header) int {
	size := 4 + 8*len(hs)
	for _, h := range hs {
		size += len(h.Key) + len(h.Value) + 2
	}
	return size
}

// PutHeaders serializes hs into out, which must be EncodedHeadersSize(hs)
// long: a host can write straight into guest memory.
func PutHeaders(out []byte, hs []Header) {
	binary.LittleEndian.PutUint32(out, uint32(len(hs)))
	p := 4
	for _, h := range hs {
		binary.LittleEndian.PutUint32(out[p:], uint32(len(h.Key)))
		binary.LittleEndian.PutUint32(out[p+4:], uint32(len(h.Value)))
		p += 8
	}
	for _, h := range hs {
		p += copy(out[p:], h.Key)
		out[p] = 0
		p++
		p += copy(out[p:], h.Value)
		out[p] = 0
		p++
	}
}

// ErrBadHeaderMap reports a serialized header map that is truncated or whose
// sizes do not add up.
var ErrBadHeaderMap = errors.New("malformed serialized header map")

// DecodeHeaders parses EncodeHeaders' format. It never panics on hostile input.
func DecodeHeaders(b []byte) ([]Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, ErrBadHeaderMap
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n)*8 > uint64(len(b)-4) {
		return nil, ErrBadHeaderMap
	}
	sizes := b[4 : 4+8*int(n)]
	p := 4 + 8*int(n)
	out := make([]Header, 0, n)
	for i := 0; i < int(n); i++ {
		kl := int(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if kl < 0 || vl < 0 || kl+vl+2 > len(b)-p || kl+vl+2 < 0 {
			return nil, ErrBadHeaderMap
		}
		k := string(b[p : p+kl])
		p += kl + 1
		v := string(b[p : p+vl])
		p += vl + 1
		out = append(out, Header{Key: k, Value: v})
	}
	return out, nil
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return string(buf[i:])
}

// PropertyPath joins attribute path segments the way proxy_get_property expects
// them: segments separated by NUL bytes, with no trailing NUL
// (Envoy: source/extensions/common/wasm/context.cc, Context::getProperty).
func PropertyPath(segments ...string) []byte {
	n := 0
	for _, s := range segments {
		n += len(s) + 1
	}
	out := make([]byte, 0, n)
	for i, s := range segments {
		if i > 0 {
			out = append(out, 0)
		}
		out = append(out, s...)
	}
	return out
}

// Error makes a non-OK status usable as a Go error, so callers can test
// errors.Is(err, abi.StatusNotFound).
func (s Status) Error() string { return "proxy-wasm status " + s.String() }
