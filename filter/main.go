//go:build wasip1

// Command filter is mtlsgate's proxy-wasm HTTP filter, built to
// build/mtlsgate.wasm. It is the glue between the ABI layer (filter/proxywasm)
// and the policy engine (filter/policy): it hands each request's headers to the
// engine and carries out the verdict, and it keeps the engine's trust bundle
// current, either from the plugin configuration or from the sidecar.
package main

import (
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/mtlsgate/mtlsgate/filter/policy"
	"github.com/mtlsgate/mtlsgate/filter/proxywasm"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
)

func main() {}

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext {
		return &root{metrics: map[string]proxywasm.Metric{}}
	})
}

// Shared-data key prefixes. Envoy keeps shared data per vm_id for the whole
// process, across every filter configuration with that vm_id and across
// configuration reloads, so each key names what it belongs to: the bundle
// and its fetch lease the source they come from (one VM's fetch serves every
// worker, and every filter reading that source; the sidecar sees one poll
// per period), rate-limit counters the plugin that counts them.
const (
	sharedBundlePrefix = "mtlsgate.bundle/"
	sharedLeasePrefix  = "mtlsgate.bundle.lease/"
	sharedLimitPrefix  = "mtlsgate.rl/"
)

var pluginName = abi.PropertyPath("plugin_name")

const (
	// While no bundle is loaded, protected routes answer 503; look for one
	// often. Once loaded, the tick only checks shared data and the lease.
	tickStarting = 200 * time.Millisecond
	tickSteady   = time.Second
	// retryEmpty is how soon a failed first fetch is retried.
	retryEmpty   = 2 * time.Second
	fetchTimeout = 5000 // ms
)

type root struct {
	proxywasm.DefaultRootContext
	engine *policy.Engine
	source *policy.SidecarSource
	// bundleKey and leaseKey are the shared-data keys of source's bundle.
	bundleKey, leaseKey string
	metrics             map[string]proxywasm.Metric
	// sharedCAS is the CAS version of the shared bundle this VM last loaded, so
	// an unchanged bundle is not parsed again on every tick.
	sharedCAS uint32
	fetching  bool
	steady    bool
	// recent holds the first metrics defined, for count's fast path.
	recent []namedMetric
	// stream is the one value NewHTTPContext hands every request.
	stream *stream
	// result is the verdict of the request being handled, reused likewise.
	result policy.Result
	// trailerNames are the trailer names being stripped, reused likewise.
	trailerNames []string
	// sourceBuf holds the request's source address: the host's property
	// buffer is rewritten by the next property read (the certificate
	// digest's), and the engine keeps the address for the whole request.
	sourceBuf []byte
	// logLevel is the host's log level as read at logLevelAt (unix ns).
	logLevel   abi.LogLevel
	logLevelAt int64
}

// logLevelTTL is how long a log level read from the host is used. Most
// decisions log at debug, and asking the host on every request was one host
// call per request to learn that debug is off; a level changed on Envoy's
// admin endpoint is followed within this time.
const logLevelTTL = time.Second

// logs reports whether the host logs at level l at time now, as of the last
// logLevelTTL.
func (r *root) logs(l abi.LogLevel, now time.Time) bool {
	t := now.UnixNano()
	if r.logLevelAt == 0 || t-r.logLevelAt >= int64(logLevelTTL) || t < r.logLevelAt {
		lvl, err := proxywasm.GetLogLevel()
		if err != nil {
			// Unknown: let the host's own filter decide.
			return true
		}
		r.logLevel, r.logLevelAt = lvl, t
	}
	return r.logLevel <= l
}

var (
	sourceAddress = abi.PropertyPath("source", "address")
	peerDigest    = abi.PropertyPath("connection", "sha256_peer_certificate_digest")
)

// The request's header list goes to the engine without a copy (see
// OnHTTPRequestHeaders); this conversion stops compiling if the two header
// types ever stop sharing their underlying type, and so their layout.
var _ = policy.Header(proxywasm.Header{})

func (r *root) OnPluginStart(int) bool {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogCriticalf("mtlsgate: cannot read the plugin configuration: %v", err)
		return false
	}
	cfg, err := policy.ParseConfig(data)
	if err != nil {
		// Returning false makes Envoy reject this configuration; the previous
		// one, if any, keeps serving. Never start open.
		proxywasm.LogCriticalf("mtlsgate: configuration rejected: %v", err)
		return false
	}
	for _, w := range cfg.Warnings {
		proxywasm.LogWarnf("mtlsgate: configuration accepted with a warning: %s", w)
	}
	r.engine = policy.NewEngine(cfg)
	// Another filter with this vm_id (another listener, another team's
	// configuration) must not spend this one's budgets.
	name, _ := proxywasm.ReadPropertyString(pluginName)
	r.engine.SetLimiter(&policy.CASLimiter{Store: &sharedDataStore{prefix: sharedLimitPrefix + strings.Clone(name) + "/"}, OnError: r.limiterFailed})
	r.source = cfg.TrustBundle.Sidecar
	if r.source != nil {
		src := r.source.Cluster + r.source.Path
		if r.source.KeySetID != "" {
			// A bundle in shared data was checked by the VM that fetched it,
			// against that VM's keys: a filter with other keys, or none (one
			// with this vm_id on another listener, or the configuration
			// before this one, whose shared data Envoy keeps), must not
			// hand this one a bundle it would refuse.
			src += "#keys=" + r.source.KeySetID
		}
		r.bundleKey, r.leaseKey = sharedBundlePrefix+src, sharedLeasePrefix+src
		if err := proxywasm.SetTickPeriodMilliSeconds(uint32(tickStarting / time.Millisecond)); err != nil {
			proxywasm.LogCriticalf("mtlsgate: cannot start the bundle refresh timer: %v", err)
			return false
		}
	}
	proxywasm.LogInfof("mtlsgate: started with %d policies, %d routes, bundle %s, profiles %s, configuration %s",
		len(cfg.Policies), len(cfg.Routes), bundleDesc(r.engine, r.source), r.engine.ProfilesVersion(), cfg.Version)
	return true
}

func bundleDesc(e *policy.Engine, src *policy.SidecarSource) string {
	if src != nil {
		d := "from cluster " + strconv.Quote(src.Cluster) + " path " + src.Path
		if n := len(src.PublicKeys); n > 0 {
			return d + " signed by one of " + strconv.Itoa(n) + " public keys (set " + src.KeySetID + ")"
		}
		return d + " unsigned"
	}
	if e.HasBundle() {
		return "inline version " + e.BundleVersion()
	}
	return "none"
}

// sharedDataStore runs the engine's rate limiter on proxy-wasm shared data, which
// Envoy shares between the VMs of every worker thread: one budget per client
// for the whole proxy, not per worker. Keys are the engine's with prefix
// ("mtlsgate.rl/<plugin name>/") in front, built in buf: a concatenation
// would allocate on every rate-limited request.
type sharedDataStore struct {
	prefix string
	buf    []byte
}

func (s *sharedDataStore) key(k string) string {
	s.buf = append(append(s.buf[:0], s.prefix...), k...)
	return unsafe.String(unsafe.SliceData(s.buf), len(s.buf))
}

func (s *sharedDataStore) Get(key string) ([]byte, uint32, bool, error) {
	v, cas, err := proxywasm.ReadSharedData(s.key(key))
	if errors.Is(err, abi.StatusNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	return v, cas, true, nil
}

func (s *sharedDataStore) Set(key string, value []byte, cas uint32) (bool, error) {
	err := proxywasm.SetSharedData(s.key(key), value, cas)
	if errors.Is(err, abi.StatusCasMismatch) {
		return true, nil
	}
	return false, err
}

func (r *root) limiterFailed(err error) {
	r.count("mtlsgate.ratelimit.error")
	proxywasm.LogWarnf("mtlsgate: rate limiter shared data failed (%v); request allowed", err)
}

func (r *root) count(name string) {
	// A short scan first: every request counts two or three names out of a
	// few dozen, and a string-keyed map lookup hashes byte by byte in Go
	// wasm. Names are compared in full; the map stays the complete record.
	for i := range r.recent {
		// Names come from the engine's static tables, so the same string
		// header recurs: comparing pointers first skips the byte loop.
		if n := r.recent[i].name; len(n) == len(name) && (unsafe.StringData(n) == unsafe.StringData(name) || n == name) {
			_ = r.recent[i].m.Increment(1)
			return
		}
	}
	m, ok := r.metrics[name]
	if !ok {
		var err error
		if m, err = proxywasm.DefineMetric(abi.MetricCounter, name); err != nil {
			return
		}
		r.metrics[name] = m
	}
	if len(r.recent) < maxRecentMetrics {
		r.recent = append(r.recent, namedMetric{name, m})
	}
	_ = m.Increment(1)
}

// maxRecentMetrics bounds root.recent: decisions times reasons times hit or
// miss stays well under it in practice, and the scan stays short.
const maxRecentMetrics = 32

type namedMetric struct {
	name string
	m    proxywasm.Metric
}

func (r *root) OnTick() {
	r.loadShared()
	if r.engine.HasBundle() && !r.steady {
		r.steady = true
		_ = proxywasm.SetTickPeriodMilliSeconds(uint32(tickSteady / time.Millisecond))
	}
	if r.fetching || !r.claimFetch() {
		return
	}
	r.fetch()
}

// loadShared picks up a bundle another VM (or this one) fetched.
func (r *root) loadShared() {
	data, cas, err := proxywasm.GetSharedData(r.bundleKey)
	if err != nil || cas == r.sharedCAS || len(data) == 0 {
		return
	}
	r.sharedCAS = cas
	if err := r.install(data); err != nil {
		proxywasm.LogErrorf("mtlsgate: shared trust bundle: %v", err)
	}
}

func (r *root) install(data []byte) error {
	b, err := bundle.Parse(data)
	if err != nil {
		return err
	}
	if b.Version != "" && b.Version == r.engine.BundleVersion() {
		return nil
	}
	if err := r.engine.SetBundle(b); err != nil {
		return err
	}
	proxywasm.LogInfof("mtlsgate: trust bundle %s loaded: %d CAs, %d CRLs, profiles %s", b.Version, len(b.CACertificates), len(b.CRLs), r.engine.ProfilesVersion())
	r.count("mtlsgate.bundle.loaded")
	return nil
}

// claimFetch takes the fetch lease for this period through shared-data CAS, so
// across all workers exactly one VM polls the sidecar per refresh period.
func (r *root) claimFetch() bool {
	now := time.Now().UnixNano()
	v, cas, err := proxywasm.GetSharedData(r.leaseKey)
	if err != nil && !errors.Is(err, abi.StatusNotFound) {
		return false
	}
	if len(v) > 0 {
		if due, perr := strconv.ParseInt(string(v), 10, 64); perr == nil && now < due {
			return false
		}
	}
	next := r.source.Refresh
	if !r.engine.HasBundle() {
		next = min(next, retryEmpty)
	}
	return proxywasm.SetSharedData(r.leaseKey, []byte(strconv.FormatInt(now+int64(next), 10)), cas) == nil
}

func (r *root) fetch() {
	hs := []proxywasm.Header{
		{Key: ":method", Value: "GET"},
		{Key: ":path", Value: r.source.Path},
		{Key: ":authority", Value: r.source.Cluster},
		{Key: "accept", Value: "application/json"},
	}
	if v := r.engine.BundleVersion(); v != "" {
		hs = append(hs, proxywasm.Header{Key: "if-none-match", Value: strconv.Quote(v)})
	}
	_, err := proxywasm.DispatchHTTPCall(r.source.Cluster, hs, nil, nil, fetchTimeout, r.onBundle)
	if err != nil {
		r.count("mtlsgate.bundle.fetch_failed")
		kept := "keeping the last good bundle"
		if r.engine.BundleVersion() == "" {
			kept = "no bundle loaded yet, so protected routes answer 503"
		}
		proxywasm.LogWarnf("mtlsgate: cannot call cluster %q for the trust bundle (%v); %s. Define the cluster in Envoy (with mtlsgate dev: --cluster %s=http://127.0.0.1:9913)", r.source.Cluster, err, kept, r.source.Cluster)
		return
	}
	r.fetching = true
}

func (r *root) onBundle(numHeaders, bodySize, _ int) {
	r.fetching = false
	status := ""
	if numHeaders > 0 {
		status, _ = proxywasm.GetHTTPCallResponseHeader(":status")
	}
	switch status {
	case "304":
		return
	case "200":
		body, err := proxywasm.GetHTTPCallResponseBody(0, bodySize)
		if err == nil {
			err = r.checkSignature(body)
		}
		if err == nil {
			err = r.install(body)
		}
		if err != nil {
			r.count("mtlsgate.bundle.fetch_failed")
			kept := "keeping the last good one"
			if r.engine.BundleVersion() == "" {
				kept = "no bundle loaded yet, so protected routes answer 503"
			}
			proxywasm.LogErrorf("mtlsgate: trust bundle from cluster %q rejected, %s: %v", r.source.Cluster, kept, err)
			return
		}
		// Publish to the other VMs. Unconditional: every writer fetched the
		// same source, and the newest fetch is the one to keep.
		if err := proxywasm.SetSharedData(r.bundleKey, body, 0); err != nil {
			proxywasm.LogWarnf("mtlsgate: cannot share the trust bundle: %v", err)
		}
	default:
		if status == "" {
			status = "no response (connection failure or timeout)"
		}
		r.count("mtlsgate.bundle.fetch_failed")
		proxywasm.LogWarnf("mtlsgate: trust bundle fetch from cluster %q%s answered %s; keeping the last good bundle", r.source.Cluster, r.source.Path, status)
	}
}

// checkSignature refuses a fetched bundle that none of the configured public
// keys signed. It runs once per fetched body, never on the request path; a
// 304 carries no body and needs no signature.
func (r *root) checkSignature(body []byte) error {
	keys := r.source.PublicKeys
	if len(keys) == 0 {
		return nil
	}
	sig, _ := proxywasm.GetHTTPCallResponseHeader(bundle.SignatureHeader)
	err := bundle.VerifySignature(keys, body, sig)
	if err == nil {
		return nil
	}
	r.count("mtlsgate.bundle.signature_rejected")
	if errors.Is(err, bundle.ErrUnsigned) {
		return errors.New("the response carries no " + bundle.SignatureHeader + " header, and trustBundle.publicKeys requires one: " +
			"start mtlsgate serve with --bundle-signing-key (the key whose public key publicKeys lists), and check that nothing else holds the cluster's address")
	}
	return errors.New(err.Error() + ": the bundle was altered, or signed with a key publicKeys does not list; " +
		"compare `mtlsgate bundle-key public --key FILE` for serve's --bundle-signing-key with publicKeys, and check that nothing else holds the cluster's address")
}

// SourceAddress reads Envoy's source.address for the request being handled;
// the engine asks only when a decision or a log line needs it. The string
// lives in sourceBuf, valid until the next request's read.
func (r *root) SourceAddress() string {
	addr, _ := proxywasm.ReadPropertyString(sourceAddress)
	r.sourceBuf = append(r.sourceBuf[:0], addr...)
	return unsafe.String(unsafe.SliceData(r.sourceBuf), len(r.sourceBuf))
}

// PeerCertificateDigest reads Envoy's connection.sha256_peer_certificate_digest,
// "" when the connection presented no certificate. The engine asks only when
// it verifies an XFCC element, not for a cached verdict.
func (r *root) PeerCertificateDigest() string {
	d, _ := proxywasm.ReadPropertyString(peerDigest)
	return d
}

// NewHTTPContext hands every request the root's one stream value: it holds
// no per-request state (the request lives in OnHTTPRequestHeaders alone), and
// an allocation per request is a measurable share of the hot path in Go wasm.
func (r *root) NewHTTPContext(uint32) proxywasm.HTTPContext {
	if r.stream == nil {
		r.stream = &stream{root: r}
	}
	return r.stream
}

// stream must stay stateless: one value serves every request of its root.
type stream struct {
	proxywasm.DefaultHTTPContext
	root *root
}

// OnHTTPRequestTrailers strips the identity and certificate header names
// from request trailers, which the header callback never sees: Envoy passes
// a client's HTTP/2 trailers to an HTTP/2 upstream, and a gRPC server reads
// them as metadata. Envoy calls it only for requests that have trailers.
func (s *stream) OnHTTPRequestTrailers(int) proxywasm.Action {
	ts, err := proxywasm.GetHTTPRequestTrailers()
	if err != nil {
		panic("mtlsgate: cannot read request trailers: " + err.Error())
	}
	r := s.root
	r.trailerNames = r.engine.TrailersToRemove(r.trailerNames[:0], unsafe.Slice((*policy.Header)(unsafe.Pointer(unsafe.SliceData(ts))), len(ts)))
	for _, name := range r.trailerNames {
		if err := proxywasm.RemoveHTTPRequestTrailer(name); err != nil {
			panic("mtlsgate: cannot strip client-supplied trailer " + name + ": " + err.Error())
		}
	}
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPRequestHeaders(int, bool) proxywasm.Action {
	r := s.root
	if r.source != nil && !r.engine.HasBundle() {
		// Another worker may have fetched the bundle since this VM's last
		// tick; look before answering 503. Only until the first bundle loads.
		r.loadShared()
	}
	// The headers and the address share buffers the next request reuses
	// (allocating them was most of a cached request's cost). Nothing here
	// keeps them past this callback, and the engine copies what its cache
	// keeps.
	hs, err := proxywasm.ReadHTTPRequestHeaders()
	if err != nil {
		// Without the headers nothing can be stripped or verified: fail closed.
		panic("mtlsgate: cannot read request headers: " + err.Error())
	}
	// The host's clock: one call, where time.Now costs two WASI clock reads.
	now, err := proxywasm.GetCurrentTime()
	if err != nil {
		now = time.Now()
	}
	// policy.Header and proxywasm.Header have the same underlying type
	// (struct{ Key, Value string }), so the list is the engine's as it is:
	// no copy per request.
	req := policy.Request{Now: now, Headers: unsafe.Slice((*policy.Header)(unsafe.Pointer(unsafe.SliceData(hs))), len(hs))}
	for _, h := range hs {
		switch h.Key {
		case ":method":
			req.Method = h.Value
		case ":path":
			req.Path = h.Value
		}
	}
	req.Source, req.Peer = r, r
	res := &r.result
	r.engine.EvaluateInto(&req, res)

	for _, name := range res.RemoveHeaders {
		if err := proxywasm.RemoveHTTPRequestHeader(name); err != nil {
			panic("mtlsgate: cannot strip client-supplied header " + name + ": " + err.Error())
		}
	}
	for _, m := range res.Metrics {
		r.count(m)
	}
	switch res.LogLevel {
	case policy.LogInfo, policy.LogWarn:
		proxywasm.Log(abi.LogLevel(res.LogLevel), res.LogLine())
	default:
		if r.logs(abi.LogLevel(res.LogLevel), now) {
			proxywasm.Log(abi.LogLevel(res.LogLevel), res.LogLine())
		}
	}
	if res.Action == policy.Respond {
		out := make([]proxywasm.Header, len(res.ResponseHeaders))
		for i, h := range res.ResponseHeaders {
			out[i] = proxywasm.Header{Key: h.Key, Value: h.Value}
		}
		details := "mtlsgate_" + string(res.Reason)
		if err := proxywasm.SendHTTPResponse(uint32(res.Status), out, res.Body, details); err != nil {
			panic("mtlsgate: cannot send the denial: " + err.Error())
		}
		return proxywasm.ActionPause
	}
	// Every name in SetHeaders is in the stripped namespace and any copy the
	// client sent was removed above, so adding is replacing: Envoy appends
	// (addCopy) instead of scanning the map for entries to drop (setCopy).
	if err := proxywasm.AddHTTPRequestHeaders(unsafe.Slice((*proxywasm.Header)(unsafe.Pointer(unsafe.SliceData(res.SetHeaders))), len(res.SetHeaders))); err != nil {
		panic("mtlsgate: cannot set the identity headers: " + err.Error())
	}
	return proxywasm.ActionContinue
}
