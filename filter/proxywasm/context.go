//go:build wasip1

// Package proxywasm is mtlsgate's proxy-wasm ABI 0.2.1 layer for the standard Go
// toolchain (GOOS=wasip1, -buildmode=c-shared). It is deliberately thin: the raw
// imports and exports, a registry of contexts, and the hand-off of host memory.
// Plugin code implements RootContext and HTTPContext and calls the typed helpers
// in this package; it never sees a guest address.
//
// Every export recovers panics. A panic in an HTTP callback fails that request
// closed with a 500 problem+json local response; the VM keeps serving. In Envoy
// a trapped VM fails every later request on its worker, so a trap is the one
// outcome this layer exists to prevent.
package proxywasm

import "github.com/mtlsgate/mtlsgate/internal/abi"

// Action is what a stream callback tells the host to do next.
type Action = abi.Action

const (
	ActionContinue = abi.ActionContinue
	ActionPause    = abi.ActionPause
)

// Header is one header map entry.
type Header = abi.Header

// RootContext is the plugin instance: configuration, timers, http callouts and
// the factory for per-request contexts.
type RootContext interface {
	// OnVMStart receives the VM configuration; returning false fails the VM.
	OnVMStart(vmConfigurationSize int) bool
	// OnPluginStart receives the plugin configuration; returning false makes the
	// host reject it (Envoy refuses the listener update).
	OnPluginStart(pluginConfigurationSize int) bool
	OnTick()
	OnQueueReady(queueID uint32)
	// NewHTTPContext creates the context for one HTTP stream.
	NewHTTPContext(contextID uint32) HTTPContext
	OnPluginDone() bool
}

// HTTPContext handles one HTTP stream.
type HTTPContext interface {
	OnHTTPRequestHeaders(numHeaders int, endOfStream bool) Action
	OnHTTPRequestBody(bodySize int, endOfStream bool) Action
	OnHTTPRequestTrailers(numTrailers int) Action
	OnHTTPResponseHeaders(numHeaders int, endOfStream bool) Action
	OnHTTPResponseBody(bodySize int, endOfStream bool) Action
	OnHTTPResponseTrailers(numTrailers int) Action
	// OnHTTPStreamDone runs once the stream is finished (proxy_on_log).
	OnHTTPStreamDone()
}

// DefaultRootContext implements RootContext with no-ops, for embedding.
type DefaultRootContext struct{}

func (DefaultRootContext) OnVMStart(int) bool                { return true }
func (DefaultRootContext) OnPluginStart(int) bool            { return true }
func (DefaultRootContext) OnTick()                           {}
func (DefaultRootContext) OnQueueReady(uint32)               {}
func (DefaultRootContext) NewHTTPContext(uint32) HTTPContext { return nil }
func (DefaultRootContext) OnPluginDone() bool                { return true }

// DefaultHTTPContext implements HTTPContext by continuing everything.
type DefaultHTTPContext struct{}

func (DefaultHTTPContext) OnHTTPRequestHeaders(int, bool) Action  { return ActionContinue }
func (DefaultHTTPContext) OnHTTPRequestBody(int, bool) Action     { return ActionContinue }
func (DefaultHTTPContext) OnHTTPRequestTrailers(int) Action       { return ActionContinue }
func (DefaultHTTPContext) OnHTTPResponseHeaders(int, bool) Action { return ActionContinue }
func (DefaultHTTPContext) OnHTTPResponseBody(int, bool) Action    { return ActionContinue }
func (DefaultHTTPContext) OnHTTPResponseTrailers(int) Action      { return ActionContinue }
func (DefaultHTTPContext) OnHTTPStreamDone()                      {}

// HTTPCallCallback receives an http callout's response; the headers, body and
// trailers are readable with GetHTTPCallResponse* during the call only. A
// callout that timed out arrives as Envoy's 504 and one that could not connect
// as 503, both with headers; a reset arrives with no headers at all.
type HTTPCallCallback func(numHeaders, bodySize, numTrailers int)

var (
	newRoot   func(contextID uint32) RootContext
	roots     = map[uint32]RootContext{}
	streams   ctxTable[stream]
	httpCalls = map[uint32]pendingCall{}
	// current is the context whose callback is running, so a callout made
	// while a request is paused can be answered on that request.
	current      uint32
	panicHandler = defaultPanicHandler
)

type pendingCall struct {
	cb        HTTPCallCallback
	contextID uint32
}

type stream struct {
	ctx    HTTPContext
	rootID uint32
	// failed is set once a panic has answered the request, so later callbacks
	// on the same stream do not run plugin code against a half-done state.
	failed bool
}

// Stream records are recycled: a request creates and deletes one, and an
// allocation per request is a measurable share of the hot path in Go wasm.
// The list holds at most what was live at once, so it is bounded by the
// host's concurrency on this worker.
var freeStreams []*stream

func newStream() *stream {
	if n := len(freeStreams); n > 0 {
		s := freeStreams[n-1]
		freeStreams = freeStreams[:n-1]
		return s
	}
	return new(stream)
}

func freeStream(s *stream) {
	*s = stream{}
	freeStreams = append(freeStreams, s)
}

// SetNewRootContext registers the plugin. Call it from init: a c-shared module's
// _initialize runs package initializers, never main.
func SetNewRootContext(f func(contextID uint32) RootContext) { newRoot = f }
