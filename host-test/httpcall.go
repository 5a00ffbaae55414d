package hosttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

type httpResult struct {
	headers, trailers *headerMap
	body              []byte
	failed            bool
}

// hHTTPCall mirrors exports.cc http_call and Context::httpCall: the call
// belongs to the root context; an unknown cluster or a missing :path,
// :method or :authority is BadArgument; timeout 0 means none.
func hHTTPCall(vm *VM, mod api.Module, st []uint64) abi.Status {
	cluster, ok1 := readGuestString(mod, u32(st[0]), u32(st[1]))
	hb, ok2 := readGuest(mod, u32(st[2]), u32(st[3]))
	body, ok3 := readGuest(mod, u32(st[4]), u32(st[5]))
	tb, ok4 := readGuest(mod, u32(st[6]), u32(st[7]))
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return abi.StatusInvalidMemoryAccess
	}
	tokenPtr := u32(st[9])
	// Envoy writes the token slot first to check the memory.
	if !mod.Memory().WriteUint32Le(tokenPtr, 0) {
		return abi.StatusInvalidMemoryAccess
	}
	timeoutMS := int32(u32(st[8]))
	if timeoutMS < 0 {
		return abi.StatusBadArgument
	}
	up, ok := vm.p.cfg.Clusters[cluster]
	if !ok {
		return abi.StatusBadArgument
	}
	hm := newHeaderMap(decodePairs(hb))
	path, ok1 := hm.get(":path")
	method, ok2 := hm.get(":method")
	authority, ok3 := hm.get(":authority")
	if !ok1 || !ok2 || !ok3 {
		return abi.StatusBadArgument
	}
	var trailers []abi.Header
	if len(tb) > 0 {
		trailers = decodePairs(tb)
	}
	token := vm.nextToken
	vm.nextToken++
	vm.calls[token] = struct{}{}
	mod.Memory().WriteUint32Le(tokenPtr, token)

	req := outgoing{
		method: method, path: path, authority: authority,
		headers: hm.h, body: append([]byte(nil), body...), trailers: trailers,
	}
	var timeout time.Duration
	if timeoutMS > 0 {
		timeout = time.Duration(timeoutMS) * time.Millisecond
	}
	go func() {
		r := vm.doHTTP(up, req, timeout)
		vm.post(event{kind: evHTTP, token: token, http: r})
	}()
	return abi.StatusOK
}

type outgoing struct {
	method, path, authority string
	headers, trailers       []abi.Header
	body                    []byte
}

// localReply is a response Envoy's router generates itself.
func localReply(status int, body string) *httpResult {
	return &httpResult{
		headers: newHeaderMap([]abi.Header{
			{Key: ":status", Value: strconv.Itoa(status)},
			{Key: "content-length", Value: strconv.Itoa(len(body))},
			{Key: "content-type", Value: "text/plain"},
		}),
		body: []byte(body),
	}
}

func (vm *VM) doHTTP(up Upstream, o outgoing, timeout time.Duration) *httpResult {
	ctx := vm.ctx
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	base := up.URL
	if base == "" {
		base = "http://" + o.authority
	}
	req, err := http.NewRequestWithContext(ctx, o.method, strings.TrimSuffix(base, "/")+o.path, bytes.NewReader(o.body))
	if err != nil {
		return &httpResult{failed: true}
	}
	req.Host = o.authority
	for _, h := range o.headers {
		if !strings.HasPrefix(h.Key, ":") {
			req.Header.Add(h.Key, h.Value)
		}
	}
	if len(o.trailers) > 0 {
		req.Trailer = http.Header{}
		for _, h := range o.trailers {
			req.Trailer.Add(h.Key, h.Value)
		}
	}

	var (
		status  int
		hdr     http.Header
		trailer http.Header
		body    []byte
	)
	if up.Handler != nil {
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			up.Handler.ServeHTTP(rec, req)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			return timeoutOrReset(ctx)
		}
		res := rec.Result()
		status, hdr, trailer, body = res.StatusCode, res.Header, res.Trailer, rec.Body.Bytes()
		if hdr.Get("Content-Length") == "" && len(body) > 0 {
			hdr.Set("Content-Length", strconv.Itoa(len(body)))
		}
	} else {
		res, err := vm.p.cfg.HTTPClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return timeoutOrReset(ctx)
			}
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				// The router's local reply when no connection could be made.
				return localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
			}
			return &httpResult{failed: true}
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return timeoutOrReset(ctx)
			}
			// A reset after the headers: the async client reports a failure
			// (Context::onHttpCallFailure).
			return &httpResult{failed: true}
		}
		status, hdr, trailer, body = res.StatusCode, res.Header, res.Trailer, b
		if res.ContentLength >= 0 && hdr.Get("Content-Length") == "" {
			hdr.Set("Content-Length", strconv.FormatInt(res.ContentLength, 10))
		}
	}
	r := &httpResult{headers: newHeaderMap([]abi.Header{{Key: ":status", Value: strconv.Itoa(status)}}), body: body}
	addHeaders(r.headers, hdr)
	if len(trailer) > 0 {
		r.trailers = newHeaderMap(nil)
		addHeaders(r.trailers, trailer)
	}
	return r
}

// timeoutOrReset: when the call's own timeout fires, Envoy's router answers
// 504 "upstream request timeout" and the filter sees that response; a call
// cut short because the VM closed is a reset.
func timeoutOrReset(ctx context.Context) *httpResult {
	if ctx.Err() == context.DeadlineExceeded {
		return localReply(504, "upstream request timeout")
	}
	return &httpResult{failed: true}
}

func addHeaders(m *headerMap, h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			m.add(k, v)
		}
	}
}
