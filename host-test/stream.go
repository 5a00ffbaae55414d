package hosttest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// Connection describes the downstream connection a request arrived on; it
// feeds the source.*, destination.* and connection.* properties.
type Connection struct {
	ID          uint64
	Source      netip.AddrPort
	Destination netip.AddrPort
	// TLS is nil for a plaintext connection.
	TLS *TLSInfo
	// RequestedServerName is the SNI.
	RequestedServerName string
}

// TLSInfo is the downstream TLS session as Envoy's Ssl::ConnectionInfo shows it.
type TLSInfo struct {
	// Version as SSL_get_version names it: "TLSv1.2", "TLSv1.3".
	Version string
	// PeerCertificate is the client certificate, nil when none was presented.
	PeerCertificate *x509.Certificate
	// LocalCertificate is the certificate the proxy presented, if known.
	LocalCertificate *x509.Certificate
}

// Request is one downstream request to run through the filter.
type Request struct {
	Headers  []abi.Header
	Body     []byte
	Trailers []abi.Header
	Conn     *Connection
	// Properties adds or overrides properties by dotted path
	// ("node.metadata.x"); values are returned as given.
	Properties map[string][]byte
	// Upstream answers the request the filter forwards. When nil, Response
	// (or a bare 200) is used.
	Upstream func(ctx context.Context, forwarded *Forwarded) (*Response, error)
	Response *Response
}

// Forwarded is the request as the filter lets it through to the upstream.
type Forwarded struct {
	Headers  []abi.Header
	Body     []byte
	Trailers []abi.Header
}

// Response is an upstream response. Headers should include ":status".
type Response struct {
	Headers  []abi.Header
	Body     []byte
	Trailers []abi.Header
}

// LocalResponse is what proxy_send_local_response asked Envoy to send.
type LocalResponse struct {
	Status     int
	Details    string
	Body       []byte
	Headers    []abi.Header
	GrpcStatus int32
}

// Callback is one stream callback the host invoked and what it returned.
type Callback struct {
	Name   string
	Action abi.Action
}

// Result is everything observable about one request run with Do.
type Result struct {
	Callbacks []Callback
	// Forwarded is the request as sent upstream; nil when the filter answered
	// with a local response before that.
	Forwarded *Forwarded
	// LocalResponse is set when the filter sent one.
	LocalResponse *LocalResponse
	// Status, ResponseHeaders, ResponseBody and ResponseTrailers are the
	// response as it leaves the filter towards the client.
	Status           int
	ResponseHeaders  []abi.Header
	ResponseBody     []byte
	ResponseTrailers []abi.Header
	// Logs are the log lines the VM emitted while the request ran.
	Logs []LogEntry
}

// Action returns the action of the named callback ("proxy_on_request_headers").
func (r *Result) Action(name string) (abi.Action, bool) {
	for _, c := range r.Callbacks {
		if c.Name == name {
			return c.Action, true
		}
	}
	return 0, false
}

// Stream is one HTTP stream context. Its methods call the guest callbacks one
// at a time, for callers that drive a request step by step (the dev gateway);
// Do drives a whole request.
type Stream struct {
	vm   *VM
	id   uint32
	conn *Connection
	prop map[string][]byte
	// state from proxy_set_property (Envoy keeps it as filter state "wasm.<path>").
	setProps map[string][]byte

	reqH, reqT, respH, respT *headerMap
	reqBody, respBody        []byte
	// reqOut and respOut hold body bytes the filter has let through (a
	// Continue, or proxy_continue_stream after a stop). Envoy passes those on
	// and the next body callback sees only newly buffered data.
	reqOut, respOut []byte
	// live flags: whether Envoy would currently hand the map or buffer to the
	// filter (it drops them once a callback continues; see Context::decodeHeaders).
	reqHLive, reqTLive, respHLive, respTLive bool
	reqBodyLive, respBodyLive                bool
	accessLog                                bool
	inReqBodyEOS, inRespBodyEOS              bool

	reqPaused, respPaused bool
	resume                chan struct{}
	local                 *LocalResponse
	localPhase            int // 1 request, 2 response
	failed                bool
	finished              bool
	callbacks             []Callback
}

// NewStream creates an HTTP context: proxy_on_context_create(id, root).
func (vm *VM) NewStream(conn *Connection, props map[string][]byte) (*Stream, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil, errors.New("vm closed")
	}
	s := &Stream{vm: vm, conn: conn, prop: props}
	s.id = vm.nextID
	vm.nextID++
	vm.streams[s.id] = s
	if vm.failed != nil {
		s.failStream()
		return s, nil
	}
	if _, _, err := vm.call("proxy_on_context_create", uint64(s.id), uint64(vm.rootID)); err != nil {
		s.failStream()
	}
	return s, nil
}

// ID is the stream's context id.
func (s *Stream) ID() uint32 { return s.id }

// failStream mirrors Context::failStream for a failed VM with fail_open off:
// a 503 local reply with details "wasm_fail_stream".
func (s *Stream) failStream() {
	if s.local != nil {
		return
	}
	s.failed = true
	s.local = &LocalResponse{Status: 503, Details: "wasm_fail_stream", GrpcStatus: 14}
	s.localPhase = 1
	s.wake()
}

func (s *Stream) wake() {
	if s.resume != nil {
		close(s.resume)
		s.resume = nil
	}
}

// stopped reports whether the stream has ended its request path (local reply).
func (s *Stream) stopped() bool { return s.local != nil }

func (s *Stream) invoke(name string, args ...uint64) abi.Action {
	if s.failed {
		return abi.ActionContinue
	}
	r, ok, err := s.vm.call(name, args...)
	if err != nil {
		s.failStream()
		return abi.ActionContinue
	}
	if !ok {
		return abi.ActionContinue
	}
	a := abi.Action(r)
	if strings.Contains(name, "_request_") || strings.Contains(name, "_response_") {
		s.callbacks = append(s.callbacks, Callback{name, a})
	}
	return a
}

// RequestHeaders runs proxy_on_request_headers.
func (s *Stream) RequestHeaders(h []abi.Header, endOfStream bool) abi.Action {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	s.reqH = newHeaderMap(h)
	if s.stopped() {
		return abi.ActionContinue
	}
	s.reqHLive = true
	a := s.invoke("proxy_on_request_headers", uint64(s.id), uint64(len(s.reqH.h)), b2u(endOfStream))
	s.afterRequest(a, &s.reqHLive)
	return a
}

// RequestBody runs proxy_on_request_body with the chunk appended to whatever
// the filter asked to buffer before.
func (s *Stream) RequestBody(chunk []byte, endOfStream bool) abi.Action {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	s.reqBody = append(s.reqBody, chunk...)
	if s.stopped() {
		return abi.ActionContinue
	}
	s.reqBodyLive = true
	s.inReqBodyEOS = endOfStream
	a := s.invoke("proxy_on_request_body", uint64(s.id), uint64(len(s.reqBody)), b2u(endOfStream))
	s.inReqBodyEOS = false
	if a == abi.ActionContinue {
		s.reqBodyLive = false
		s.releaseRequestBody()
	} else if endOfStream && !s.stopped() {
		s.reqPaused = true
	}
	return a
}

// RequestTrailers runs proxy_on_request_trailers.
func (s *Stream) RequestTrailers(t []abi.Header) abi.Action {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	s.reqT = newHeaderMap(t)
	if s.stopped() {
		return abi.ActionContinue
	}
	s.reqTLive = true
	a := s.invoke("proxy_on_request_trailers", uint64(s.id), uint64(len(s.reqT.h)))
	s.afterRequest(a, &s.reqTLive)
	if a == abi.ActionContinue {
		s.releaseRequestBody() // as for the response's trailers
	}
	return a
}

func (s *Stream) afterRequest(a abi.Action, live *bool) {
	if a == abi.ActionContinue || s.stopped() {
		*live = false
		return
	}
	// Any stop keeps the stream paused until proxy_continue_stream. Envoy
	// turns a headers StopIteration into StopAllIterationAndWatermark for ABI
	// 0.2.x (proxy-wasm-cpp-host context.cc, allow_on_headers_stop_iteration
	// defaults to false), so the body waits too.
	s.reqPaused = true
}

// ResponseHeaders runs proxy_on_response_headers.
func (s *Stream) ResponseHeaders(h []abi.Header, endOfStream bool) abi.Action {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.responseHeaders(h, endOfStream)
}

func (s *Stream) responseHeaders(h []abi.Header, endOfStream bool) abi.Action {
	s.respH = newHeaderMap(h)
	if s.failed || s.localPhase == 2 {
		return abi.ActionContinue
	}
	s.respHLive = true
	a := s.invoke("proxy_on_response_headers", uint64(s.id), uint64(len(s.respH.h)), b2u(endOfStream))
	s.afterResponse(a, &s.respHLive)
	return a
}

// ResponseBody runs proxy_on_response_body.
func (s *Stream) ResponseBody(chunk []byte, endOfStream bool) abi.Action {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.responseBody(chunk, endOfStream)
}

func (s *Stream) responseBody(chunk []byte, endOfStream bool) abi.Action {
	s.respBody = append(s.respBody, chunk...)
	if s.failed || s.localPhase == 2 {
		return abi.ActionContinue
	}
	s.respBodyLive = true
	s.inRespBodyEOS = endOfStream
	a := s.invoke("proxy_on_response_body", uint64(s.id), uint64(len(s.respBody)), b2u(endOfStream))
	s.inRespBodyEOS = false
	if a == abi.ActionContinue {
		s.respBodyLive = false
		s.releaseResponseBody()
	} else if endOfStream && s.localPhase != 2 {
		s.respPaused = true
	}
	return a
}

// ResponseTrailers runs proxy_on_response_trailers.
func (s *Stream) ResponseTrailers(t []abi.Header) abi.Action {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	s.respT = newHeaderMap(t)
	if s.failed || s.localPhase == 2 {
		return abi.ActionContinue
	}
	s.respTLive = true
	a := s.invoke("proxy_on_response_trailers", uint64(s.id), uint64(len(s.respT.h)))
	s.afterResponse(a, &s.respTLive)
	if a == abi.ActionContinue {
		// Continuing on the trailers ends the stream: Envoy's filter
		// manager sends whatever body the filter had been buffering.
		s.releaseResponseBody()
	}
	return a
}

func (s *Stream) afterResponse(a abi.Action, live *bool) {
	if a == abi.ActionContinue || s.localPhase == 2 {
		*live = false
		return
	}
	s.respPaused = true
}

// Paused reports whether the request or response path waits for
// proxy_continue_stream.
func (s *Stream) Paused() bool {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return (s.reqPaused || s.respPaused) && !s.stopped()
}

// Wait blocks while the stream is paused. Without a running pump it delivers
// http call responses and queue notifications itself as they complete.
func (s *Stream) Wait(ctx context.Context) error {
	for {
		s.vm.mu.Lock()
		if !(s.reqPaused || s.respPaused) || s.stopped() || s.vm.closed {
			s.vm.mu.Unlock()
			return nil
		}
		if s.resume == nil {
			s.resume = make(chan struct{})
		}
		resume := s.resume
		s.vm.mu.Unlock()
		if s.vm.pumpRunning() {
			select {
			case <-resume:
			case <-ctx.Done():
				return fmt.Errorf("stream %d paused: %w", s.id, ctx.Err())
			}
			continue
		}
		if _, err := s.vm.DeliverPending(); err != nil {
			return err
		}
		select {
		case <-resume:
		case <-s.vm.notify:
			if _, err := s.vm.DeliverPending(); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("stream %d paused: %w", s.id, ctx.Err())
		}
	}
}

// continueStream is Context::continueStream: it resumes the stream and drops
// the maps and buffers of that direction from the filter's reach.
func (s *Stream) continueStream(t abi.StreamType) abi.Status {
	switch t {
	case abi.StreamRequest:
		s.reqPaused = false
		s.reqHLive, s.reqBodyLive, s.reqTLive = false, false, false
		s.releaseRequestBody()
	case abi.StreamResponse:
		s.respPaused = false
		s.respHLive, s.respBodyLive, s.respTLive = false, false, false
		s.releaseResponseBody()
	case abi.StreamDownstream:
		return abi.StatusOK
	case abi.StreamUpstream:
		return abi.StatusUnimplemented
	default:
		return abi.StatusBadArgument
	}
	s.wake()
	return abi.StatusOK
}

func (s *Stream) releaseRequestBody() {
	s.reqOut = append(s.reqOut, s.reqBody...)
	s.reqBody = nil
}

func (s *Stream) releaseResponseBody() {
	s.respOut = append(s.respOut, s.respBody...)
	s.respBody = nil
}

// TakeRequestBody returns the request body bytes the filter has let through
// since the last call (with any changes it made), for a caller that streams
// them upstream.
func (s *Stream) TakeRequestBody() []byte {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	out := s.reqOut
	s.reqOut = nil
	return out
}

// TakeResponseBody is TakeRequestBody for the response.
func (s *Stream) TakeResponseBody() []byte {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	out := s.respOut
	s.respOut = nil
	return out
}

// LocalResponse returns the local response the filter sent, if any.
func (s *Stream) LocalResponse() *LocalResponse {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.local
}

// RequestHeadersNow returns the request headers as they stand.
func (s *Stream) RequestHeadersNow() []abi.Header {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.reqH.clone()
}

// ResponseHeadersNow returns the response headers as they stand.
func (s *Stream) ResponseHeadersNow() []abi.Header {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.respH.clone()
}

// RequestTrailersNow returns the request trailers as they stand (nil
// before RequestTrailers).
func (s *Stream) RequestTrailersNow() []abi.Header {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.reqT.clone()
}

// ResponseTrailersNow returns the response trailers as they stand (nil
// before ResponseTrailers).
func (s *Stream) ResponseTrailersNow() []abi.Header {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.respT.clone()
}

// Callbacks returns the callbacks run so far.
func (s *Stream) Callbacks() []Callback {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return append([]Callback(nil), s.callbacks...)
}

// Finish ends the stream as Envoy does: proxy_on_log (access log phase, with
// the final headers readable), proxy_on_done, proxy_on_delete.
func (s *Stream) Finish() {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	if s.finished {
		return
	}
	s.finished = true
	if !s.failed {
		s.accessLog = true
		s.invoke("proxy_on_log", uint64(s.id))
		s.accessLog = false
		s.invoke("proxy_on_done", uint64(s.id))
		s.invoke("proxy_on_delete", uint64(s.id))
	}
	delete(s.vm.streams, s.id)
}

// localReplyHeaders builds the headers Envoy's sendLocalReply encodes
// (source/common/http/utility.cc, Utility::sendLocalReply): :status, the
// filter's additional headers, then content-length and a text/plain
// content-type when there is a body and no content-type was given.
func localReplyHeaders(l *LocalResponse) []abi.Header {
	m := newHeaderMap([]abi.Header{{Key: ":status", Value: strconv.Itoa(l.Status)}})
	for _, h := range l.Headers {
		m.add(h.Key, h.Value)
	}
	if len(l.Body) > 0 {
		m.replace("content-length", strconv.Itoa(len(l.Body)))
		if _, ok := m.get("content-type"); !ok {
			m.add("content-type", "text/plain")
		}
	}
	return m.h
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Do runs a whole request through the VM: request callbacks (waiting while
// the filter pauses, delivering its http callouts), the upstream, response
// callbacks, then proxy_on_log, proxy_on_done and proxy_on_delete.
//
// A local response sent while the request is processed ends the request path;
// as in Envoy, the local reply is then encoded through the filter's own
// response callbacks (the filter manager runs a local reply through every
// encoder filter, proxy-wasm spec PR #73 discussion).
func (vm *VM) Do(ctx context.Context, req *Request) (*Result, error) {
	logStart := vm.logCount()
	s, err := vm.NewStream(req.Conn, req.Properties)
	if err != nil {
		return nil, err
	}
	defer s.Finish()
	res := &Result{}

	hasBody, hasTrailers := len(req.Body) > 0, req.Trailers != nil
	s.RequestHeaders(req.Headers, !hasBody && !hasTrailers)
	if err := s.Wait(ctx); err != nil {
		return nil, err
	}
	if hasBody && !s.isStopped() {
		s.RequestBody(req.Body, !hasTrailers)
		if err := s.Wait(ctx); err != nil {
			return nil, err
		}
	} else if hasBody {
		s.vm.mu.Lock()
		s.reqBody = append(s.reqBody, req.Body...)
		s.vm.mu.Unlock()
	}
	if hasTrailers && !s.isStopped() {
		s.RequestTrailers(req.Trailers)
		if err := s.Wait(ctx); err != nil {
			return nil, err
		}
	}

	var resp *Response
	if !s.isStopped() {
		vm.mu.Lock()
		fwd := &Forwarded{Headers: s.reqH.clone(), Body: append(append([]byte(nil), s.reqOut...), s.reqBody...)}
		if s.reqT != nil {
			fwd.Trailers = s.reqT.clone()
		}
		vm.mu.Unlock()
		res.Forwarded = fwd
		switch {
		case req.Upstream != nil:
			resp, err = req.Upstream(ctx, fwd)
			if err != nil {
				return nil, fmt.Errorf("upstream: %w", err)
			}
		case req.Response != nil:
			resp = req.Response
		default:
			resp = &Response{Headers: []abi.Header{{Key: ":status", Value: "200"}}}
		}
	} else {
		vm.mu.Lock()
		l := s.local
		vm.mu.Unlock()
		resp = &Response{Headers: localReplyHeaders(l), Body: l.Body}
	}

	hasBody, hasTrailers = len(resp.Body) > 0, resp.Trailers != nil
	s.ResponseHeaders(resp.Headers, !hasBody && !hasTrailers)
	if err := s.Wait(ctx); err != nil {
		return nil, err
	}
	if hasBody {
		s.ResponseBody(resp.Body, !hasTrailers)
		if err := s.Wait(ctx); err != nil {
			return nil, err
		}
	}
	if hasTrailers {
		s.ResponseTrailers(resp.Trailers)
		if err := s.Wait(ctx); err != nil {
			return nil, err
		}
	}

	s.Finish()
	vm.mu.Lock()
	res.Callbacks = append([]Callback(nil), s.callbacks...)
	res.LocalResponse = s.local
	if s.local != nil && s.localPhase == 2 {
		// A local reply from a response callback replaces the response
		// before it reaches the client.
		res.ResponseHeaders = localReplyHeaders(s.local)
		res.ResponseBody = s.local.Body
	} else {
		res.ResponseHeaders = s.respH.clone()
		res.ResponseBody = append(append([]byte(nil), s.respOut...), s.respBody...)
		if s.respT != nil {
			res.ResponseTrailers = s.respT.clone()
		}
	}
	vm.mu.Unlock()
	if st, ok := Get(res.ResponseHeaders, ":status"); ok {
		res.Status, _ = strconv.Atoi(st)
	}
	res.Logs = vm.logsSince(logStart)
	return res, nil
}

func (s *Stream) isStopped() bool {
	s.vm.mu.Lock()
	defer s.vm.mu.Unlock()
	return s.stopped()
}
