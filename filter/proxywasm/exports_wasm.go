//go:build wasip1

package proxywasm

import (
	"fmt"
	"runtime/debug"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// The exports the host calls. Each is a small switchboard: find the context,
// run the plugin's method under recover, translate the result. Envoy calls them
// from one thread per VM, so the registry needs no locking.

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion021() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_context_create", 0, p)
		}
	}()
	if parentID == 0 {
		if newRoot == nil {
			LogCritical("proxywasm: no root context registered; call proxywasm.SetNewRootContext in init")
			return
		}
		roots[contextID] = newRoot(contextID)
		return
	}
	root, ok := roots[parentID]
	if !ok {
		LogErrorf("proxywasm: context %d created under unknown root %d", contextID, parentID)
		return
	}
	s := newStream()
	s.rootID = parentID
	streams.put(contextID, s)
	s.ctx = root.NewHTTPContext(contextID)
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, vmConfigSize uint32) (ok uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_vm_start", 0, p)
			ok = 0
		}
	}()
	r, found := roots[rootID]
	if !found {
		return 0
	}
	current = rootID
	return b2u(r.OnVMStart(int(vmConfigSize)))
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) (ok uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_configure", 0, p)
			ok = 0
		}
	}()
	r, found := roots[rootID]
	if !found {
		return 0
	}
	current = rootID
	return b2u(r.OnPluginStart(int(pluginConfigSize)))
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_tick", 0, p)
		}
	}()
	if r, ok := roots[rootID]; ok {
		current = rootID
		r.OnTick()
	}
}

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(rootID, queueID uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_queue_ready", 0, p)
		}
	}()
	if r, ok := roots[rootID]; ok {
		current = rootID
		r.OnQueueReady(queueID)
	}
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(rootID, token, numHeaders, bodySize, numTrailers uint32) {
	// Envoy makes every callout on the root context and answers it there
	// (proxy-wasm-cpp-host src/exports.cc, http_call uses root_context()). A
	// callout made by a paused request must act on that request, so switch the
	// host's effective context back to it first, as the Rust SDK does.
	call, ok := httpCalls[token]
	if !ok {
		return
	}
	delete(httpCalls, token)
	ctx := rootID
	if streams.get(call.contextID) != nil {
		ctx = call.contextID
		proxySetEffectiveContext(ctx)
	} else if call.contextID != rootID {
		// The request it was made for is gone (client went away); nothing to
		// resume.
		return
	}
	current = ctx
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_http_call_response", ctx, p)
		}
	}()
	call.cb(int(numHeaders), int(bodySize), int(numTrailers))
}

// onStream runs one stream callback: unknown or failed streams continue
// untouched, a panic answers the request 500 and pauses it.
func onStream(where string, contextID, a, b uint32, call func(c HTTPContext, a, b uint32) Action) (action uint32) {
	s := streams.get(contextID)
	if s == nil || s.ctx == nil || s.failed {
		return uint32(ActionContinue)
	}
	current = contextID
	defer func() {
		if p := recover(); p != nil {
			contain(where, contextID, p)
			action = uint32(ActionPause)
		}
	}()
	return uint32(call(s.ctx, a, b))
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	return onStream("proxy_on_request_headers", contextID, numHeaders, endOfStream, func(c HTTPContext, n, eos uint32) Action {
		return c.OnHTTPRequestHeaders(int(n), eos != 0)
	})
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, bodySize, endOfStream uint32) uint32 {
	return onStream("proxy_on_request_body", contextID, bodySize, endOfStream, func(c HTTPContext, n, eos uint32) Action {
		return c.OnHTTPRequestBody(int(n), eos != 0)
	})
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(contextID, numTrailers uint32) uint32 {
	return onStream("proxy_on_request_trailers", contextID, numTrailers, 0, func(c HTTPContext, n, _ uint32) Action {
		return c.OnHTTPRequestTrailers(int(n))
	})
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	return onStream("proxy_on_response_headers", contextID, numHeaders, endOfStream, func(c HTTPContext, n, eos uint32) Action {
		return c.OnHTTPResponseHeaders(int(n), eos != 0)
	})
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, bodySize, endOfStream uint32) uint32 {
	return onStream("proxy_on_response_body", contextID, bodySize, endOfStream, func(c HTTPContext, n, eos uint32) Action {
		return c.OnHTTPResponseBody(int(n), eos != 0)
	})
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(contextID, numTrailers uint32) uint32 {
	return onStream("proxy_on_response_trailers", contextID, numTrailers, 0, func(c HTTPContext, n, _ uint32) Action {
		return c.OnHTTPResponseTrailers(int(n))
	})
}

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_log", 0, p)
		}
	}()
	if s := streams.get(contextID); s != nil && s.ctx != nil {
		s.ctx.OnHTTPStreamDone()
	}
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) (done uint32) {
	defer func() {
		if p := recover(); p != nil {
			contain("proxy_on_done", 0, p)
			done = 1
		}
	}()
	// Streams are done at once; only a root has anything to finish, and
	// looking streams up first spares the map lookup on every request.
	if streams.get(contextID) != nil {
		return 1
	}
	if r, ok := roots[contextID]; ok {
		return b2u(r.OnPluginDone())
	}
	return 1
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	// Nearly every delete is a stream's; the roots map is only consulted
	// when it is not (a map operation costs about a µs in Go wasm).
	if s := streams.del(contextID); s != nil {
		freeStream(s)
		return
	}
	delete(roots, contextID)
}

// contain turns a panic recovered in an export into a logged, contained
// failure. For an HTTP stream it answers the request 500 so the request fails
// closed. Each export recovers in its own deferred literal (recover only works
// there) and fixes its own return value; a shared helper taking closures would
// allocate on every call of the hot path.
func contain(where string, contextID uint32, p any) {
	LogCriticalf("%s: recovered panic: %v\n%s", where, p, debug.Stack())
	if s := streams.get(contextID); contextID != 0 && s != nil {
		s.failed = true
		panicHandler(contextID, p)
	}
}

// defaultPanicHandler fails the request closed. A failure to send is only logged:
// the stream then continues to the host's own error handling, and Envoy's wasm
// filter with fail_open=false still refuses it.
func defaultPanicHandler(contextID uint32, p any) {
	body := []byte(`{"type":"about:blank","title":"Internal Server Error","status":500,` +
		`"detail":"the authentication filter failed on this request; it has been logged","reason":"INTERNAL_ERROR"}`)
	err := SendHTTPResponse(500, []Header{{Key: "content-type", Value: "application/problem+json"}}, body, "mtlsgate_internal_error")
	if err != nil {
		LogCriticalf("proxywasm: could not send 500 for context %d: %v", contextID, err)
	}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// LogCriticalf and LogErrorf are the formatted forms, for rare paths only: fmt
// costs more than the plain calls.
func LogCriticalf(format string, args ...any) { logf(abi.LogCritical, format, args...) }
func LogErrorf(format string, args ...any)    { logf(abi.LogError, format, args...) }
func LogWarnf(format string, args ...any)     { logf(abi.LogWarn, format, args...) }
func LogInfof(format string, args ...any)     { logf(abi.LogInfo, format, args...) }
func LogDebugf(format string, args ...any)    { logf(abi.LogDebug, format, args...) }

func logf(level abi.LogLevel, format string, args ...any) {
	Log(level, fmt.Sprintf(format, args...))
}
