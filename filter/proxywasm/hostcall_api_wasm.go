//go:build wasip1

package proxywasm

import (
	"encoding/binary"
	"time"
	"unsafe"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// Typed wrappers over the raw imports. Errors are abi.Status values, so callers
// compare with errors.Is(err, abi.StatusNotFound).

// Log writes one line to the host's log at level.
func Log(level abi.LogLevel, msg string) {
	proxyLog(uint32(level), strPtr(msg), uint32(len(msg)))
}

func LogTrace(msg string)    { Log(abi.LogTrace, msg) }
func LogDebug(msg string)    { Log(abi.LogDebug, msg) }
func LogInfo(msg string)     { Log(abi.LogInfo, msg) }
func LogWarn(msg string)     { Log(abi.LogWarn, msg) }
func LogError(msg string)    { Log(abi.LogError, msg) }
func LogCritical(msg string) { Log(abi.LogCritical, msg) }

// GetLogLevel returns the host's current log level, so costly debug lines can be
// skipped before they are built.
func GetLogLevel() (abi.LogLevel, error) {
	v, err := oneResult(proxyGetLogLevel)
	return abi.LogLevel(uint32(v)), err
}

// GetCurrentTime is the host's wall clock (Envoy's dispatcher time).
func GetCurrentTime() (time.Time, error) {
	ns, err := oneResult(proxyGetCurrentTimeNanoseconds)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, int64(ns)), nil
}

// oneResult runs a host call whose only argument is where it writes its
// result (a 32-bit result lands in the low half: wasm is little-endian).
func oneResult(call func(ret unsafe.Pointer) uint32) (uint64, error) {
	r := pushRet()
	st := call(unsafe.Pointer(&r.v))
	v := r.v
	popRet(r)
	return v, statusErr(st)
}

// SetTickPeriodMilliSeconds asks for OnTick every period; 0 stops the timer.
func SetTickPeriodMilliSeconds(period uint32) error {
	return statusErr(proxySetTickPeriodMilliseconds(period))
}

func getBuffer(bt abi.BufferType, start, maxSize int) ([]byte, error) {
	r := pushRet()
	st := proxyGetBufferBytes(uint32(bt), uint32(start), uint32(maxSize), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, err
	}
	return take(addr, size), nil
}

// GetVMConfiguration returns the VM configuration bytes (valid in OnVMStart).
func GetVMConfiguration() ([]byte, error) {
	return getBuffer(abi.BufferVMConfiguration, 0, 1<<31-1)
}

// GetPluginConfiguration returns the plugin configuration bytes (valid in
// OnPluginStart).
func GetPluginConfiguration() ([]byte, error) {
	return getBuffer(abi.BufferPluginConfiguration, 0, 1<<31-1)
}

// GetHTTPRequestBody returns up to maxSize bytes of the buffered request body.
func GetHTTPRequestBody(start, maxSize int) ([]byte, error) {
	return getBuffer(abi.BufferRequestBody, start, maxSize)
}

// GetHTTPResponseBody returns up to maxSize bytes of the buffered response body.
func GetHTTPResponseBody(start, maxSize int) ([]byte, error) {
	return getBuffer(abi.BufferResponseBody, start, maxSize)
}

// GetHTTPCallResponseBody returns the callout response body (valid in the
// callout's callback).
func GetHTTPCallResponseBody(start, maxSize int) ([]byte, error) {
	return getBuffer(abi.BufferHTTPCallResponse, start, maxSize)
}

// ReplaceHTTPRequestBody replaces the buffered request body.
func ReplaceHTTPRequestBody(body []byte) error {
	return statusErr(proxySetBufferBytes(uint32(abi.BufferRequestBody), 0, 1<<31-1, bytesPtr(body), uint32(len(body))))
}

// ReplaceHTTPResponseBody replaces the buffered response body.
func ReplaceHTTPResponseBody(body []byte) error {
	return statusErr(proxySetBufferBytes(uint32(abi.BufferResponseBody), 0, 1<<31-1, bytesPtr(body), uint32(len(body))))
}

func getMap(mt abi.MapType) ([]Header, error) {
	r := pushRet()
	st := proxyGetHeaderMapPairs(uint32(mt), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, err
	}
	return decodeHeaders(take(addr, size))
}

var (
	reqHeaderBuf  scratch
	reqHeaderList []Header
	propertyBuf   scratch
	sharedBuf     scratch
)

// ReadHTTPRequestHeaders is GetHTTPRequestHeaders without allocating: the
// slice and every key and value share buffers that the next
// ReadHTTPRequestHeaders call overwrites. Use it where nothing read is kept
// past the callback (or is copied first); it exists because the request
// header map is the largest thing a filter reads on every request.
func ReadHTTPRequestHeaders() ([]Header, error) {
	r := pushRet()
	st := reqHeaderBuf.call(func() uint32 {
		return proxyGetHeaderMapPairs(uint32(abi.MapRequestHeaders), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	})
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, err
	}
	hs, err := decodeHeadersInto(reqHeaderList[:0], reqHeaderBuf.take(addr, size))
	if cap(hs) > cap(reqHeaderList) {
		reqHeaderList = hs
	}
	return hs, err
}

// ReadPropertyString is GetPropertyString for a path already built with
// abi.PropertyPath, without allocating: the string shares a buffer that the
// next ReadPropertyString call overwrites, so copy it to keep it.
func ReadPropertyString(path []byte) (string, error) {
	r := pushRet()
	st := propertyBuf.call(func() uint32 {
		return proxyGetProperty(bytesPtr(path), uint32(len(path)), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	})
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return "", err
	}
	return bytesString(propertyBuf.take(addr, size)), nil
}

func setMap(mt abi.MapType, hs []Header) error {
	b := abi.EncodeHeaders(hs)
	return statusErr(proxySetHeaderMapPairs(uint32(mt), bytesPtr(b), uint32(len(b))))
}

func getMapValue(mt abi.MapType, key string) (string, error) {
	r := pushRet()
	st := proxyGetHeaderMapValue(uint32(mt), strPtr(key), uint32(len(key)), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return "", err
	}
	return bytesString(take(addr, size)), nil
}

func addMapValue(mt abi.MapType, key, value string) error {
	return statusErr(proxyAddHeaderMapValue(uint32(mt), strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value))))
}

func replaceMapValue(mt abi.MapType, key, value string) error {
	return statusErr(proxyReplaceHeaderMapValue(uint32(mt), strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value))))
}

func removeMapValue(mt abi.MapType, key string) error {
	return statusErr(proxyRemoveHeaderMapValue(uint32(mt), strPtr(key), uint32(len(key))))
}

// Request headers (valid from OnHTTPRequestHeaders until the request is sent).
func GetHTTPRequestHeaders() ([]Header, error)        { return getMap(abi.MapRequestHeaders) }
func SetHTTPRequestHeaders(hs []Header) error         { return setMap(abi.MapRequestHeaders, hs) }
func GetHTTPRequestHeader(key string) (string, error) { return getMapValue(abi.MapRequestHeaders, key) }
func AddHTTPRequestHeader(key, value string) error {
	return addMapValue(abi.MapRequestHeaders, key, value)
}

// AddHTTPRequestHeaders adds hs in order: one host call each, as the ABI
// has no batched add, but without Go calls per header around it (a call is
// not cheap in Go's wasm port). It stops at the first failure, returning its
// status; the headers before it were added.
func AddHTTPRequestHeaders(hs []Header) error {
	for i := range hs {
		h := &hs[i]
		if st := proxyAddHeaderMapValue(uint32(abi.MapRequestHeaders), strPtr(h.Key), uint32(len(h.Key)), strPtr(h.Value), uint32(len(h.Value))); st != 0 {
			return abi.Status(st)
		}
	}
	return nil
}

func ReplaceHTTPRequestHeader(key, value string) error {
	return replaceMapValue(abi.MapRequestHeaders, key, value)
}
func RemoveHTTPRequestHeader(key string) error  { return removeMapValue(abi.MapRequestHeaders, key) }
func GetHTTPRequestTrailers() ([]Header, error) { return getMap(abi.MapRequestTrailers) }
func AddHTTPRequestTrailer(key, value string) error {
	return addMapValue(abi.MapRequestTrailers, key, value)
}
func RemoveHTTPRequestTrailer(key string) error { return removeMapValue(abi.MapRequestTrailers, key) }
func GetHTTPResponseHeaders() ([]Header, error) { return getMap(abi.MapResponseHeaders) }
func SetHTTPResponseHeaders(hs []Header) error  { return setMap(abi.MapResponseHeaders, hs) }
func GetHTTPResponseHeader(key string) (string, error) {
	return getMapValue(abi.MapResponseHeaders, key)
}
func AddHTTPResponseHeader(key, value string) error {
	return addMapValue(abi.MapResponseHeaders, key, value)
}
func ReplaceHTTPResponseHeader(key, value string) error {
	return replaceMapValue(abi.MapResponseHeaders, key, value)
}
func RemoveHTTPResponseHeader(key string) error  { return removeMapValue(abi.MapResponseHeaders, key) }
func GetHTTPResponseTrailers() ([]Header, error) { return getMap(abi.MapResponseTrailers) }
func AddHTTPResponseTrailer(key, value string) error {
	return addMapValue(abi.MapResponseTrailers, key, value)
}
func GetHTTPCallResponseHeaders() ([]Header, error) { return getMap(abi.MapHTTPCallResponseHeaders) }
func GetHTTPCallResponseHeader(key string) (string, error) {
	return getMapValue(abi.MapHTTPCallResponseHeaders, key)
}
func GetHTTPCallResponseTrailers() ([]Header, error) { return getMap(abi.MapHTTPCallResponseTrailers) }

// GetProperty reads an attribute by its path segments, e.g. ("source",
// "address"). Missing attributes are abi.StatusNotFound.
func GetProperty(path ...string) ([]byte, error) {
	p := abi.PropertyPath(path...)
	r := pushRet()
	st := proxyGetProperty(bytesPtr(p), uint32(len(p)), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, err
	}
	return take(addr, size), nil
}

// GetPropertyString reads a string attribute.
func GetPropertyString(path ...string) (string, error) {
	b, err := GetProperty(path...)
	return string(b), err
}

// GetPropertyUint64 reads an integer attribute (8 bytes, little-endian).
func GetPropertyUint64(path ...string) (uint64, error) {
	b, err := GetProperty(path...)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, abi.StatusSerializationFailure
	}
	return binary.LittleEndian.Uint64(b), nil
}

// GetPropertyBool reads a boolean attribute (one byte).
func GetPropertyBool(path ...string) (bool, error) {
	b, err := GetProperty(path...)
	if err != nil {
		return false, err
	}
	if len(b) != 1 {
		return false, abi.StatusSerializationFailure
	}
	return b[0] != 0, nil
}

// SetProperty writes a filter-state attribute.
func SetProperty(value []byte, path ...string) error {
	p := abi.PropertyPath(path...)
	return statusErr(proxySetProperty(bytesPtr(p), uint32(len(p)), bytesPtr(value), uint32(len(value))))
}

// SendHTTPResponse answers the current request locally; the request goes no
// further upstream. details becomes Envoy's response code details.
func SendHTTPResponse(status uint32, headers []Header, body []byte, details string) error {
	hb := abi.EncodeHeaders(headers)
	return statusErr(proxySendLocalResponse(status, strPtr(details), uint32(len(details)),
		bytesPtr(body), uint32(len(body)), bytesPtr(hb), uint32(len(hb)), -1))
}

// ResumeHTTPRequest continues a request paused by ActionPause.
func ResumeHTTPRequest() error { return statusErr(proxyContinueStream(uint32(abi.StreamRequest))) }

// ResumeHTTPResponse continues a response paused by ActionPause.
func ResumeHTTPResponse() error { return statusErr(proxyContinueStream(uint32(abi.StreamResponse))) }

// DispatchHTTPCall sends a request to cluster; cb runs when the response (or the
// failure) arrives, on a later host callback. headers must include :method,
// :path and :authority.
func DispatchHTTPCall(cluster string, headers []Header, body []byte, trailers []Header, timeoutMs uint32, cb HTTPCallCallback) (uint32, error) {
	hb := abi.EncodeHeaders(headers)
	tb := abi.EncodeHeaders(trailers)
	r := pushRet()
	st := proxyHTTPCall(strPtr(cluster), uint32(len(cluster)), bytesPtr(hb), uint32(len(hb)),
		bytesPtr(body), uint32(len(body)), bytesPtr(tb), uint32(len(tb)), timeoutMs, unsafe.Pointer(&r.a))
	token := r.a
	popRet(r)
	if err := statusErr(st); err != nil {
		return 0, err
	}
	httpCalls[token] = pendingCall{cb: cb, contextID: current}
	return token, nil
}

// GetSharedData reads a key shared by every VM of this plugin on the host, with
// its CAS version.
func GetSharedData(key string) ([]byte, uint32, error) {
	r := pushRet()
	st := proxyGetSharedData(strPtr(key), uint32(len(key)), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b), unsafe.Pointer(&r.c))
	addr, size, cas := r.a, r.b, r.c
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, 0, err
	}
	return take(addr, size), cas, nil
}

// ReadSharedData is GetSharedData without allocating: the value shares a
// buffer that the next ReadSharedData call overwrites, so copy it to keep
// it. The rate limiter reads its counter this way on every request.
func ReadSharedData(key string) ([]byte, uint32, error) {
	r := pushRet()
	st := sharedBuf.call(func() uint32 {
		return proxyGetSharedData(strPtr(key), uint32(len(key)), unsafe.Pointer(&r.a), unsafe.Pointer(&r.b), unsafe.Pointer(&r.c))
	})
	addr, size, cas := r.a, r.b, r.c
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, 0, err
	}
	return sharedBuf.take(addr, size), cas, nil
}

// SetSharedData writes key if its CAS version is still cas (0: unconditionally);
// a lost race is abi.StatusCasMismatch.
func SetSharedData(key string, value []byte, cas uint32) error {
	return statusErr(proxySetSharedData(strPtr(key), uint32(len(key)), bytesPtr(value), uint32(len(value)), cas))
}

// RegisterSharedQueue creates (or finds) a queue owned by this VM's root context.
func RegisterSharedQueue(name string) (uint32, error) {
	r := pushRet()
	err := statusErr(proxyRegisterSharedQueue(strPtr(name), uint32(len(name)), unsafe.Pointer(&r.a)))
	id := r.a
	popRet(r)
	return id, err
}

// ResolveSharedQueue finds a queue registered by vmID.
func ResolveSharedQueue(vmID, name string) (uint32, error) {
	r := pushRet()
	err := statusErr(proxyResolveSharedQueue(strPtr(vmID), uint32(len(vmID)), strPtr(name), uint32(len(name)), unsafe.Pointer(&r.a)))
	id := r.a
	popRet(r)
	return id, err
}

// EnqueueSharedQueue appends value to a queue.
func EnqueueSharedQueue(id uint32, value []byte) error {
	return statusErr(proxyEnqueueSharedQueue(id, bytesPtr(value), uint32(len(value))))
}

// DequeueSharedQueue pops the oldest value; an empty queue is abi.StatusEmpty.
func DequeueSharedQueue(id uint32) ([]byte, error) {
	r := pushRet()
	st := proxyDequeueSharedQueue(id, unsafe.Pointer(&r.a), unsafe.Pointer(&r.b))
	addr, size := r.a, r.b
	popRet(r)
	if err := statusErr(st); err != nil {
		return nil, err
	}
	return take(addr, size), nil
}

// Metric is a host metric. Counters are incremented, gauges added to or
// recorded, histograms recorded.
type Metric uint32

// DefineMetric defines (or finds) a metric by name.
func DefineMetric(t abi.MetricType, name string) (Metric, error) {
	r := pushRet()
	err := statusErr(proxyDefineMetric(uint32(t), strPtr(name), uint32(len(name)), unsafe.Pointer(&r.a)))
	id := r.a
	popRet(r)
	return Metric(id), err
}

// Increment adds offset (negative allowed for gauges).
func (m Metric) Increment(offset int64) error {
	return statusErr(proxyIncrementMetric(uint32(m), offset))
}

// Record sets a gauge or records a histogram value.
func (m Metric) Record(value uint64) error { return statusErr(proxyRecordMetric(uint32(m), value)) }

// Value reads the metric's current value.
func (m Metric) Value() (uint64, error) {
	r := pushRet()
	err := statusErr(proxyGetMetric(uint32(m), unsafe.Pointer(&r.v)))
	v := r.v
	popRet(r)
	return v, err
}
