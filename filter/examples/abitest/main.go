//go:build wasip1

// Command abitest is a proxy-wasm plugin that walks every ABI path mtlsgate's
// filter relies on, driven by its JSON configuration, so the host's tests can
// assert each one against a real compiled module:
//
//	{"reject": true}                    refuse the configuration
//	{"localResponsePath": "/deny"}      answer 403 locally for that path
//	{"panicPath": "/panic"}             panic inside on_request_headers
//	{"pausePath": "/pause", "cluster": "c"}
//	                                    pause, call cluster c, resume with its answer
//	{"printPath": "/print"}             write one line each to stdout and stderr
//	{"cluster": "c", "calloutPath": "/x", "tickMs": 100}
//	                                    call c on every tick; store the body in shared data
//	{"queue": "q"}                      register queue q; a request to /enqueue/<v> (on
//	                                    any VM) enqueues v; on_queue_ready appends what it
//	                                    dequeues to shared data "abitest.queue"
//
// Every request gets x-abitest-* headers describing what the filter saw. A
// response carrying x-abitest-hold-body has its body held (buffered) until the
// stream ends; request and response trailers get x-abitest-trailers with
// their count.
package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/mtlsgate/mtlsgate/filter/proxywasm"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

func main() {}

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

const sharedKey = "abitest.callout"

type root struct {
	proxywasm.DefaultRootContext
	vmConfig  string
	cfg       gjson.Result
	requests  proxywasm.Metric
	callouts  proxywasm.Metric
	lastToken uint32
	queueID   uint32
}

const queueKey = "abitest.queue"

func (r *root) OnQueueReady(queueID uint32) {
	for {
		v, err := proxywasm.DequeueSharedQueue(queueID)
		if err != nil {
			if err != abi.StatusEmpty {
				proxywasm.LogErrorf("abitest: dequeue: %v", err)
			}
			return
		}
		old, cas, err := proxywasm.GetSharedData(queueKey)
		if err != nil && err != abi.StatusNotFound {
			proxywasm.LogErrorf("abitest: queue shared data: %v", err)
			return
		}
		if err := proxywasm.SetSharedData(queueKey, append(append(old, v...), ' '), cas); err != nil {
			proxywasm.LogErrorf("abitest: queue shared data: %v", err)
		}
	}
}

func (r *root) OnVMStart(int) bool {
	b, err := proxywasm.GetVMConfiguration()
	if err != nil && err != abi.StatusNotFound {
		proxywasm.LogErrorf("abitest: vm configuration: %v", err)
		return false
	}
	r.vmConfig = string(b)
	return true
}

func (r *root) OnPluginStart(int) bool {
	b, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogErrorf("abitest: plugin configuration: %v", err)
		return false
	}
	if !gjson.ValidBytes(b) {
		proxywasm.LogError("abitest: configuration is not valid JSON")
		return false
	}
	r.cfg = gjson.ParseBytes(b)
	if r.cfg.Get("reject").Bool() {
		proxywasm.LogError("abitest: configuration rejected: reject is true")
		return false
	}
	if r.requests, err = proxywasm.DefineMetric(abi.MetricCounter, "abitest.requests"); err != nil {
		return false
	}
	if r.callouts, err = proxywasm.DefineMetric(abi.MetricCounter, "abitest.callouts"); err != nil {
		return false
	}
	if q := r.cfg.Get("queue").String(); q != "" {
		if r.queueID, err = proxywasm.RegisterSharedQueue(q); err != nil {
			proxywasm.LogErrorf("abitest: register queue: %v", err)
			return false
		}
	}
	if ms := r.cfg.Get("tickMs").Uint(); ms > 0 {
		if err := proxywasm.SetTickPeriodMilliSeconds(uint32(ms)); err != nil {
			proxywasm.LogErrorf("abitest: tick: %v", err)
			return false
		}
	}
	proxywasm.LogInfo("abitest: started; vm configuration " + strconv.Quote(r.vmConfig))
	return true
}

func (r *root) OnTick() {
	cluster := r.cfg.Get("cluster").String()
	hs := []proxywasm.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: r.cfg.Get("calloutPath").String()},
		{Key: ":authority", Value: cluster}}
	tok, err := proxywasm.DispatchHTTPCall(cluster, hs, nil, nil, uint32(r.cfg.Get("timeoutMs").Uint()+1000*b2i(!r.cfg.Get("timeoutMs").Exists())),
		func(numHeaders, bodySize, _ int) {
			_ = r.callouts.Increment(1)
			status := "failed"
			if numHeaders > 0 {
				status, _ = proxywasm.GetHTTPCallResponseHeader(":status")
			}
			body, _ := proxywasm.GetHTTPCallResponseBody(0, bodySize)
			_, cas, err := proxywasm.GetSharedData(sharedKey)
			if err != nil && err != abi.StatusNotFound {
				proxywasm.LogErrorf("abitest: shared data: %v", err)
			}
			if err := proxywasm.SetSharedData(sharedKey, []byte(status+" "+string(body)), cas); err != nil {
				proxywasm.LogErrorf("abitest: set shared data: %v", err)
			}
		})
	if err != nil {
		proxywasm.LogErrorf("abitest: http call: %v", err)
		return
	}
	r.lastToken = tok
}

func b2i(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func (r *root) NewHTTPContext(uint32) proxywasm.HTTPContext { return &stream{root: r} }

type stream struct {
	proxywasm.DefaultHTTPContext
	root     *root
	holdBody bool
}

func (s *stream) OnHTTPRequestHeaders(numHeaders int, endOfStream bool) proxywasm.Action {
	_ = s.root.requests.Increment(1)
	cfg := s.root.cfg
	hs, err := proxywasm.GetHTTPRequestHeaders()
	if err != nil {
		proxywasm.LogErrorf("abitest: headers: %v", err)
	}
	path, _ := proxywasm.GetHTTPRequestHeader(":path")
	set := func(k, v string) { _ = proxywasm.ReplaceHTTPRequestHeader(k, v) }
	set("x-abitest-count", strconv.Itoa(len(hs))+"/"+strconv.Itoa(numHeaders)+"/"+strconv.FormatBool(endOfStream))
	for _, p := range [][]string{{"source", "address"}, {"destination", "address"}, {"request", "path"},
		{"request", "method"}, {"request", "host"}, {"connection", "subject_peer_certificate"}, {"plugin_name"}} {
		v, err := proxywasm.GetPropertyString(p...)
		if err != nil {
			v = "error:" + err.Error()
		}
		set("x-abitest-prop-"+joinDash(p), v)
	}
	if id, err := proxywasm.GetPropertyUint64("connection", "id"); err == nil {
		set("x-abitest-prop-connection-id", strconv.FormatUint(id, 10))
	}
	if port, err := proxywasm.GetPropertyUint64("source", "port"); err == nil {
		set("x-abitest-prop-source-port", strconv.FormatUint(port, 10))
	}
	if mtls, err := proxywasm.GetPropertyBool("connection", "mtls"); err == nil {
		set("x-abitest-prop-connection-mtls", strconv.FormatBool(mtls))
	}
	if _, err := proxywasm.GetProperty("no", "such", "attribute"); err == abi.StatusNotFound {
		set("x-abitest-missing-property", "NotFound")
	}
	_ = proxywasm.RemoveHTTPRequestHeader("x-remove-me")
	if _, err := proxywasm.GetHTTPRequestHeader("x-replace-me"); err == nil {
		set("x-replace-me", "replaced")
	}
	_ = proxywasm.AddHTTPRequestHeader("x-added", "one")
	_ = proxywasm.AddHTTPRequestHeader("x-added", "two")
	if v, _, err := proxywasm.GetSharedData(sharedKey); err == nil {
		set("x-abitest-shared", string(v))
	}
	if lvl, err := proxywasm.GetLogLevel(); err == nil {
		set("x-abitest-log-level", lvl.String())
	}
	if q := cfg.Get("queue").String(); q != "" && strings.HasPrefix(path, "/enqueue/") {
		id, err := proxywasm.ResolveSharedQueue(cfg.Get("vmId").String(), q)
		if err == nil {
			err = proxywasm.EnqueueSharedQueue(id, []byte(strings.TrimPrefix(path, "/enqueue/")))
		}
		set("x-abitest-enqueue", statusText(err))
	}
	switch path {
	case cfg.Get("localResponsePath").String():
		if path == "" {
			break
		}
		err := proxywasm.SendHTTPResponse(403, []proxywasm.Header{{Key: "content-type", Value: "text/plain"},
			{Key: "x-local", Value: "yes"}}, []byte("denied by abitest\n"), "abitest_denied")
		if err != nil {
			proxywasm.LogErrorf("abitest: local response: %v", err)
		}
		return proxywasm.ActionPause
	case cfg.Get("printPath").String():
		if path == "" {
			break
		}
		// Envoy logs the module's stdout at info and stderr at error.
		os.Stdout.WriteString("abitest stdout\n")
		os.Stderr.WriteString("abitest stderr\n")
	case cfg.Get("panicPath").String():
		if path == "" {
			break
		}
		var m map[string]int
		m["boom"]++ // a nil-map write: a runtime panic, as a real bug would cause
	case cfg.Get("pausePath").String():
		if path == "" {
			break
		}
		cluster := cfg.Get("cluster").String()
		_, err := proxywasm.DispatchHTTPCall(cluster, []proxywasm.Header{{Key: ":method", Value: "GET"},
			{Key: ":path", Value: "/pause"}, {Key: ":authority", Value: cluster}}, nil, nil, 5000,
			func(numHeaders, bodySize, _ int) {
				body, _ := proxywasm.GetHTTPCallResponseBody(0, bodySize)
				_ = proxywasm.ReplaceHTTPRequestHeader("x-abitest-paused-callout", string(body))
				_ = proxywasm.ResumeHTTPRequest()
			})
		if err != nil {
			proxywasm.LogErrorf("abitest: pause callout: %v", err)
			return proxywasm.ActionContinue
		}
		return proxywasm.ActionPause
	}
	proxywasm.LogDebug("abitest: request " + path)
	return proxywasm.ActionContinue
}

// OnHTTPRequestBody records each callback's buffered size in shared data
// "abitest.bodysizes", so tests can check what the host hands over.
func (s *stream) OnHTTPRequestBody(bodySize int, endOfStream bool) proxywasm.Action {
	old, cas, _ := proxywasm.GetSharedData("abitest.bodysizes")
	_ = proxywasm.SetSharedData("abitest.bodysizes", append(old, strconv.Itoa(bodySize)+" "...), cas)
	return proxywasm.ActionContinue
}

// OnHTTPResponseBody holds every chunk before the end of the stream when the
// upstream asked for it: Envoy buffers what a body callback stops on.
func (s *stream) OnHTTPResponseBody(_ int, endOfStream bool) proxywasm.Action {
	if s.holdBody && !endOfStream {
		return proxywasm.ActionPause
	}
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPRequestTrailers(numTrailers int) proxywasm.Action {
	_ = proxywasm.AddHTTPRequestTrailer("x-abitest-trailers", strconv.Itoa(numTrailers))
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPResponseTrailers(numTrailers int) proxywasm.Action {
	_ = proxywasm.AddHTTPResponseTrailer("x-abitest-trailers", strconv.Itoa(numTrailers))
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPResponseHeaders(int, bool) proxywasm.Action {
	if v, _ := proxywasm.GetHTTPResponseHeader("x-abitest-hold-body"); v != "" {
		s.holdBody = true
	}
	status, _ := proxywasm.GetHTTPResponseHeader(":status")
	_ = proxywasm.AddHTTPResponseHeader("x-abitest-response", "seen "+status)
	_ = proxywasm.RemoveHTTPResponseHeader("x-upstream-secret")
	return proxywasm.ActionContinue
}

func statusText(err error) string {
	if err == nil {
		return "OK"
	}
	return err.Error()
}

func joinDash(p []string) string {
	out := ""
	for i, s := range p {
		if i > 0 {
			out += "-"
		}
		out += s
	}
	return out
}
