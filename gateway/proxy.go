package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// connState is what the gateway knows about one downstream connection.
type connState struct {
	id    uint64
	conn  net.Conn
	once  sync.Once
	hconn *hosttest.Connection
	peer  PeerInfo
	props map[string][]byte
}

type connKey struct{}

func (g *Gateway) connContext(ctx context.Context, c net.Conn) context.Context {
	// Envoy numbers connections from a process-wide counter; connection.id is
	// that number.
	return context.WithValue(ctx, connKey{}, &connState{id: g.connIDs.Add(1), conn: c})
}

// connection builds the host's view of the connection on its first request:
// the handshake is complete by then, and every later request (HTTP/2 streams,
// HTTP/1.1 keep-alive) reuses it, as Envoy caches Ssl::ConnectionInfo.
func (g *Gateway) connection(r *http.Request) (*hosttest.Connection, *PeerInfo, map[string][]byte) {
	cs, _ := r.Context().Value(connKey{}).(*connState)
	if cs == nil {
		cs = &connState{id: g.connIDs.Add(1)}
	}
	cs.once.Do(func() {
		hc := &hosttest.Connection{ID: cs.id}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			hc.Source = unmap(ap)
		}
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if ap, err := netip.ParseAddrPort(la.String()); err == nil {
				hc.Destination = unmap(ap)
			}
		}
		var local *x509.Certificate
		if len(g.cfg.Certificate.Certificate) > 0 {
			local = g.cfg.Certificate.Leaf
			if local == nil {
				local, _ = x509.ParseCertificate(g.cfg.Certificate.Certificate[0])
			}
		}
		if r.TLS != nil {
			hc.RequestedServerName = r.TLS.ServerName
			hc.TLS = &hosttest.TLSInfo{Version: tlsVersionName(r.TLS.Version)}
			peer := r.TLS.PeerCertificates
			if len(peer) > 0 && !envoyVerifiable(peer[0]) {
				g.logf("connection %d: client certificate %q has an Ed25519 key, which Envoy's default signature algorithms do not verify; treated as none",
					cs.id, rfc2253(peer[0]))
				peer = nil
			}
			if len(peer) > 0 {
				hc.TLS.PeerCertificate = peer[0]
			}
			cs.peer = newPeerInfo(peer, local)
			cs.props = connectionProps(&cs.peer, local)
		}
		cs.hconn = hc
	})
	return cs.hconn, &cs.peer, cs.props
}

// envoyVerifiable reports whether an Envoy listener with the default TLS
// parameters (envoy.yaml sets no tls_params) can complete a handshake in
// which the client proves possession of leaf's key. BoringSSL's default
// verify list omits ed25519, so Envoy's CertificateRequest does not offer
// it: curl and other OpenSSL clients then send no certificate (the filter
// answers NO_CERTIFICATE), a client that signs with it anyway fails the
// handshake. Go's server offers and accepts it, and cannot be told not to.
func envoyVerifiable(leaf *x509.Certificate) bool {
	return leaf.PublicKeyAlgorithm != x509.Ed25519
}

// connectionProps supplies the connection.* attributes Envoy derives from
// Ssl::ConnectionInfo in the forms Envoy uses
// (source/extensions/filters/common/expr/context.cc, ConnectionWrapper): the
// subjects in openssl's RFC 2253 form, which pkix.Name.String does not
// produce, and the local certificate's attributes.
func connectionProps(peer *PeerInfo, local *x509.Certificate) map[string][]byte {
	m := map[string][]byte{}
	if peer.Presented {
		m["connection.subject_peer_certificate"] = []byte(peer.Subject)
	}
	if local != nil {
		m["connection.subject_local_certificate"] = []byte(peer.LocalSubject)
		if len(peer.LocalURISANs) > 0 {
			m["connection.uri_san_local_certificate"] = []byte(peer.LocalURISANs[0])
		}
		if len(local.DNSNames) > 0 {
			m["connection.dns_san_local_certificate"] = []byte(local.DNSNames[0])
		}
	}
	return m
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// tlsVersionName is SSL_get_version's spelling, which Envoy reports as
// connection.tls_version.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "unknown"
}

// isUpgrade reports an HTTP/1.1 protocol upgrade request (WebSocket, say):
// an Upgrade header named in Connection. Envoy's HTTP/1 codec serves an h2c
// upgrade as a plain request, with its upgrade headers removed (isH2c).
func isUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Header.Get("Upgrade") != "" && connectionTokens(r.Header)["upgrade"] && !isH2c(r.Header)
}

// isH2c reports an HTTP/1.1 upgrade to cleartext HTTP/2, which Envoy's codec
// ignores: it drops Upgrade, the upgrade and http2-settings tokens of
// Connection and HTTP2-Settings, and the request goes on as HTTP/1.1.
func isH2c(h http.Header) bool {
	return strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "h2c") && connectionTokens(h)["upgrade"]
}

// hopByHop are the connection-specific headers Envoy's codecs drop before a
// request reaches the filter chain or the upstream (RFC 9110 section 7.6.1).
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "te": true,
	"transfer-encoding": true, "upgrade": true,
}

func isHopByHop(k string, connTokens map[string]bool) bool {
	return hopByHop[k] || connTokens[k]
}

func connectionTokens(h http.Header) map[string]bool {
	var m map[string]bool
	for _, v := range h.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if t = strings.ToLower(strings.TrimSpace(t)); t != "" {
				if m == nil {
					m = map[string]bool{}
				}
				m[t] = true
			}
		}
	}
	return m
}

// Envoy's defaults for the size of a request's headers.
const (
	maxRequestHeadersKB = 60
	maxHeadersCount     = 100
)

// headerCount counts header lines as Envoy does, the host included.
func headerCount(r *http.Request) int {
	n := 1
	for _, v := range r.Header {
		n += len(v)
	}
	return n
}

// requestPath is the :path Envoy's codec makes of the request target: an
// absolute-form target (GET https://host/p HTTP/1.1) becomes /p
// (allow_absolute_url); passed on whole, it would match no route prefix.
func requestPath(r *http.Request) string {
	if r.URL.IsAbs() {
		return r.URL.RequestURI()
	}
	return r.RequestURI
}

// requestHeaders is the header map Envoy's HTTP connection manager hands the
// filter chain: pseudo-headers first (as the HTTP/1 codec synthesises them
// and HTTP/2 carries them), keys lowercased, connection-specific headers
// removed, x-forwarded-proto and x-request-id set, and x-forwarded-client-cert
// replaced per SANITIZE_SET.
func requestHeaders(r *http.Request, peer *PeerInfo) []abi.Header {
	hs := []abi.Header{
		{Key: ":authority", Value: r.Host},
		{Key: ":path", Value: requestPath(r)},
		{Key: ":method", Value: r.Method},
		{Key: ":scheme", Value: "https"},
	}
	tokens := connectionTokens(r.Header)
	h2c := isH2c(r.Header)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	hasRequestID := false
	for _, k := range keys {
		lk := strings.ToLower(k)
		if isHopByHop(lk, tokens) || lk == XFCCHeader || lk == "x-forwarded-proto" || lk == "host" || (h2c && lk == "http2-settings") {
			continue
		}
		if lk == "x-request-id" {
			hasRequestID = true
		}
		if lk == "expect" && len(r.Header[k]) == 1 && strings.EqualFold(r.Header[k][0], "100-continue") {
			// Envoy's connection manager (proxy_100_continue off, the
			// default) answers 100-continue itself and removes the header
			// before the filter chain; net/http sends the 100 when the body
			// is first read, once the filter has let the request through.
			continue
		}
		for _, v := range r.Header[k] {
			hs = append(hs, abi.Header{Key: lk, Value: v})
		}
	}
	// Envoy with use_remote_address false trusts neither side of
	// x-forwarded-proto from a TLS listener: it sets it to the listener's
	// scheme (ConnectionManagerUtility::mutateRequestHeaders).
	hs = append(hs, abi.Header{Key: "x-forwarded-proto", Value: "https"})
	if !hasRequestID {
		hs = append(hs, abi.Header{Key: "x-request-id", Value: uuid4()})
	}
	if x := peer.XFCC(); x != "" {
		hs = append(hs, abi.Header{Key: XFCCHeader, Value: x})
	}
	return hs
}

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// acquire takes a free VM. A request holds it while the filter decides (the
// request headers phase, where verification runs); later callbacks of the
// same stream run on that VM without holding it, since a VM serialises its
// own calls, so a slow upstream does not keep other requests from a worker.
func (g *Gateway) acquire(ctx context.Context) (*hosttest.VM, error) {
	select {
	case vm := <-g.pool:
		return vm, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *Gateway) release(vm *hosttest.VM) { g.pool <- vm }

type accessEntry struct {
	method, path, proto string
	status              int
	reason              string
	upstreamErr         error
}

func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ae := &accessEntry{method: r.Method, path: r.URL.RequestURI(), proto: r.Proto}
	defer func() { g.access(ae, time.Since(start)) }()

	if n := headerCount(r); n > maxHeadersCount {
		// Envoy's max_headers_count default; the filter never sees the
		// request (and thousands of lines would each be matched against
		// the names it strips).
		ae.status, ae.reason = http.StatusRequestHeaderFieldsTooLarge, "header_overflow"
		w.Header().Set("content-length", "0")
		w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		// Envoy's HTTP/1 codec answers HTTP/1.0 426 and closes unless
		// accept_http_10 is on; envoy.yaml leaves it off.
		ae.status, ae.reason = http.StatusUpgradeRequired, "low_version"
		w.Header().Set("content-length", "0")
		w.Header().Set("connection", "close")
		w.WriteHeader(http.StatusUpgradeRequired)
		return
	}
	if isUpgrade(r) || r.Method == http.MethodConnect {
		// envoy.yaml configures no upgrade_configs (CONNECT is one to
		// Envoy), so its connection manager refuses upgrades before the
		// filter chain exists.
		ae.status, ae.reason = http.StatusForbidden, "upgrade_failed"
		w.Header().Set("content-length", "0")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if p := requestPath(r); p == "" || p[0] != '/' {
		// Envoy's connection manager answers a target that is not a path
		// (OPTIONS *, an authority) 404 before any filter runs.
		ae.status, ae.reason = http.StatusNotFound, "non_relative_path"
		w.Header().Set("content-length", "0")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if strings.IndexByte(requestPath(r), '#') >= 0 {
		// Envoy's connection manager refuses a path carrying a fragment
		// (http_reject_path_with_fragment, on by default) before any filter
		// runs. Passed on, the fragment reached the filter as part of :path
		// but not the upstream, which got the path cut at '#'.
		ae.status, ae.reason = http.StatusBadRequest, "path_normalization_failed"
		w.Header().Set("content-length", "0")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	hconn, peer, props := g.connection(r)
	ctx := r.Context()
	vm, err := g.acquire(ctx)
	if err != nil {
		ae.status = 0
		ae.reason = "client went away waiting for a worker"
		return
	}
	s, err := vm.NewStream(hconn, props)
	if err != nil {
		g.release(vm)
		ae.status = http.StatusServiceUnavailable
		ae.reason = "filter unavailable: " + err.Error()
		http.Error(w, "filter unavailable", http.StatusServiceUnavailable)
		return
	}
	defer s.Finish()

	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	s.RequestHeaders(requestHeaders(r, peer), !hasBody)
	err = s.Wait(ctx)
	g.release(vm)
	if err != nil {
		ae.reason = "client went away while the filter paused: " + err.Error()
		return
	}
	if l := s.LocalResponse(); l != nil {
		g.sendLocal(w, s, l, ae)
		return
	}
	fwd := s.RequestHeadersNow()
	// The decision as the filter told the upstream: the reason of a
	// non-success, else the verification status (SUCCESS).
	ae.reason, _ = hosttest.Get(fwd, "x-mtls-verification-reason")
	if ae.reason == "" {
		ae.reason, _ = hosttest.Get(fwd, "x-mtls-verification-status")
	}

	// The route timeout runs from the end of the client's request: now when
	// there is no body, else from the body's last byte (filteredBody).
	uctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rt := &routeTimer{d: g.cfg.RouteTimeout, cancel: cancel}
	defer rt.stop()
	if !hasBody {
		rt.start()
	}
	ctx = uctx
	out, err := g.upstreamRequest(ctx, fwd, r, s, hasBody, rt)
	if err != nil {
		g.sendLocal(w, s, &hosttest.LocalResponse{Status: http.StatusBadRequest, Body: []byte(err.Error() + "\n"), Details: "invalid_request"}, ae)
		return
	}
	resp, err := g.transport.Load().RoundTrip(out)
	if err != nil {
		if l := s.LocalResponse(); l != nil {
			// The filter answered while the body streamed: Envoy resets the
			// upstream request and sends the local reply.
			g.sendLocal(w, s, l, ae)
			return
		}
		ae.upstreamErr = err
		if errors.Is(context.Cause(ctx), errRouteTimeout) {
			// Router::Filter::onResponseTimeout: 504, this body, flag UT.
			g.sendLocal(w, s, &hosttest.LocalResponse{Status: http.StatusGatewayTimeout,
				Body: []byte("upstream request timeout"), Details: "upstream_response_timeout"}, ae)
			return
		}
		// Envoy's router answers 503 with this body when it cannot reach
		// the upstream (Router::Filter::onUpstreamReset).
		g.sendLocal(w, s, &hosttest.LocalResponse{Status: http.StatusServiceUnavailable,
			Body: []byte("upstream connect error or disconnect/reset before headers. reset reason: connection failure"), Details: "upstream_reset_before_response_started"}, ae)
		return
	}
	defer resp.Body.Close()
	g.relayResponse(ctx, w, s, resp, ae)
}

// upstreamRequest builds the request the router sends: method, path and
// authority from the filter's final pseudo-headers, the other headers as the
// filter left them, and the body streamed through proxy_on_request_body.
func (g *Gateway) upstreamRequest(ctx context.Context, fwd []abi.Header, r *http.Request, s *hosttest.Stream, hasBody bool, rt *routeTimer) (*http.Request, error) {
	method, _ := hosttest.Get(fwd, ":method")
	path, _ := hosttest.Get(fwd, ":path")
	authority, _ := hosttest.Get(fwd, ":authority")
	if path == "" || !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := *g.cfg.Upstream
	base := strings.TrimRight(u.Path, "/")
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	u.Path, u.RawPath, u.RawQuery, u.Fragment = "", "", "", ""
	var body io.Reader = http.NoBody
	var fb *filteredBody
	if hasBody {
		fb = &filteredBody{ctx: ctx, src: r.Body, s: s, done: rt.start}
		body = fb
	}
	out, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	setUpstreamPath(out.URL, base+rawPath, rawQuery)
	if fb != nil && len(r.Trailer) > 0 {
		// Declared now (HTTP/1.1 announces them before the body); the
		// values, as the filter leaves them, are filled in at the body's end.
		out.Trailer = make(http.Header, len(r.Trailer))
		for k := range r.Trailer {
			out.Trailer[strings.ToLower(k)] = nil
		}
		fb.inTrailer, fb.outTrailer = r.Trailer, out.Trailer
	}
	out.Host = authority
	// One map sized for the request and one array behind every single-valued
	// entry, as net/textproto reads headers: the filter's identity headers
	// would otherwise cost an allocation each.
	out.Header = make(http.Header, len(fwd))
	vals := make([]string, 0, len(fwd))
	for _, h := range fwd {
		if strings.HasPrefix(h.Key, ":") || hopByHop[h.Key] || h.Key == "host" {
			continue
		}
		// Envoy's HTTP/1 codec sends header names lowercase, and so do we:
		// http.Transport writes map keys verbatim. The few it handles itself
		// go in canonical form, or it would add its own beside ours.
		k := h.Key
		if c, ok := transportKeys[k]; ok {
			k = c
		}
		if prev, ok := out.Header[k]; ok {
			out.Header[k] = append(prev[:len(prev):len(prev)], h.Value)
			continue
		}
		vals = append(vals, h.Value)
		out.Header[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		// Envoy adds no user-agent; without this the transport would.
		out.Header["User-Agent"] = nil
	}
	if hasBody {
		out.ContentLength = -1
		if cl, ok := hosttest.Get(fwd, "content-length"); ok {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n == r.ContentLength {
				out.ContentLength = n
			}
		}
		out.Header.Del("Content-Length")
	}
	return out, nil
}

// setUpstreamPath makes u's request target the path and query exactly as
// the filter left them in :path, as Envoy's router sends :path. Parsing the
// path into a URL instead re-encoded it: '"', '{', non-ASCII bytes and the
// like were escaped, and then every escape in the path was decoded and
// encoded anew, so an upstream could get "/a/b" for the "/a%2Fb" the filter
// decided on.
func setUpstreamPath(u *url.URL, path, query string) {
	u.RawQuery = escapeTarget(query)
	target := escapeTarget(path)
	if p, err := url.ParseRequestURI(path); err == nil && p.RawQuery == "" {
		u.Path, u.RawPath = p.Path, p.RawPath
		if u.EscapedPath() == target {
			return
		}
	}
	// Only Opaque is written verbatim. One starting with "//" would be read
	// as scheme-relative (a request to another host), so it goes in the
	// absolute form, which every HTTP/1.1 server accepts (RFC 9112 3.2.2) and
	// the HTTP/2 transport turns back into this :path.
	u.Path, u.RawPath = "", ""
	u.Opaque = target
	if strings.HasPrefix(u.Opaque, "//") {
		u.Opaque = "//" + u.Host + u.Opaque
	}
}

// escapeTarget percent-encodes the bytes a request target cannot carry
// (controls, space, non-ASCII and the delimiters RFC 3986 excludes), which
// Go's HTTP/2 server lets into :path; everything else, '%' included, is kept.
func escapeTarget(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > ' ' && c < 0x7f && !strings.ContainsRune("\"<>\\^`{|}", rune(c)) {
			if b.Len() > 0 {
				b.WriteByte(c)
			}
			continue
		}
		if b.Len() == 0 {
			b.Grow(len(s) + 8)
			b.WriteString(s[:i])
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	if b.Len() == 0 {
		return s
	}
	return b.String()
}

// transportKeys are the request headers http.Transport looks up by their
// canonical name (to write them itself or to act on them).
var transportKeys = map[string]string{
	"user-agent": "User-Agent", "content-length": "Content-Length", "expect": "Expect",
	"trailer": "Trailer", "transfer-encoding": "Transfer-Encoding",
}

// filteredBody streams the request body through proxy_on_request_body: a
// chunk the filter continues on goes upstream at once; chunks it stops on
// are held until it continues or the body ends (Envoy buffers them).
type filteredBody struct {
	ctx  context.Context
	src  io.Reader
	s    *hosttest.Stream
	done func() // the client's request is complete
	// inTrailer is the client's request trailers (complete once src is at
	// EOF); outTrailer the upstream request's, filled from the filter's.
	inTrailer, outTrailer http.Header
	out                   []byte
	eof                   bool
	buf                   [32 << 10]byte
}

var errRouteTimeout = errors.New("route timeout")

// routeTimer cancels the upstream exchange when the route timeout passes.
type routeTimer struct {
	d      time.Duration
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	t      *time.Timer
	done   bool
}

func (rt *routeTimer) start() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.d <= 0 || rt.t != nil || rt.done {
		return
	}
	rt.t = time.AfterFunc(rt.d, func() { rt.cancel(errRouteTimeout) })
}

func (rt *routeTimer) stop() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.done = true
	if rt.t != nil {
		rt.t.Stop()
	}
}

var errLocalReply = errors.New("filter sent a local reply")

func (b *filteredBody) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		n, err := b.src.Read(b.buf[:])
		end := errors.Is(err, io.EOF)
		if err != nil && !end {
			return 0, fmt.Errorf("read request body: %w", err)
		}
		if n == 0 && !end {
			continue
		}
		// Trailers, when the client sent any, end the stream instead of
		// the body's last chunk, after their own callback (as in Envoy).
		var trailers []abi.Header
		if end && b.inTrailer != nil {
			trailers = trailerList(b.inTrailer)
		}
		a := b.s.RequestBody(b.buf[:n], end && trailers == nil)
		if b.s.LocalResponse() != nil {
			return 0, errLocalReply
		}
		if trailers != nil {
			if a = b.s.RequestTrailers(trailers); b.s.LocalResponse() != nil {
				return 0, errLocalReply
			}
		}
		if end {
			b.eof = true
			b.done()
			if a != abi.ActionContinue {
				if err := b.s.Wait(b.ctx); err != nil {
					return 0, err
				}
				if b.s.LocalResponse() != nil {
					return 0, errLocalReply
				}
			}
			if b.outTrailer != nil {
				clear(b.outTrailer)
				for _, t := range b.s.RequestTrailersNow() {
					b.outTrailer[t.Key] = append(b.outTrailer[t.Key], t.Value)
				}
			}
		}
		// What the filter let through, as it left it; chunks it stopped on
		// stay buffered in the stream until it continues.
		b.out = b.s.TakeRequestBody()
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// relayResponse runs the upstream response through the filter's response
// callbacks and streams it to the client.
func (g *Gateway) relayResponse(ctx context.Context, w http.ResponseWriter, s *hosttest.Stream, resp *http.Response, ae *accessEntry) {
	hs := []abi.Header{{Key: ":status", Value: strconv.Itoa(resp.StatusCode)}}
	tokens := connectionTokens(resp.Header)
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if isHopByHop(lk, tokens) {
			continue
		}
		for _, v := range resp.Header[k] {
			hs = append(hs, abi.Header{Key: lk, Value: v})
		}
	}
	noBody := resp.ContentLength == 0 || resp.Body == http.NoBody
	s.ResponseHeaders(hs, noBody)
	if err := s.Wait(ctx); err != nil {
		ae.reason = "client went away while the filter paused the response"
		return
	}
	if l := s.LocalResponse(); l != nil {
		// A local reply from the response path replaces the upstream
		// response before anything reached the client.
		ae.status = writeHeaders(w, localReplyHeaders(l), l.Status)
		ae.reason = localReason(nil, l)
		_, _ = w.Write(l.Body)
		return
	}
	final := s.ResponseHeadersNow()
	status := writeHeaders(w, final, resp.StatusCode)
	ae.status = status
	if noBody {
		return
	}
	flusher, _ := w.(http.Flusher)
	bp := bodyBufs.Get().(*[32 << 10]byte)
	defer bodyBufs.Put(bp)
	buf := bp[:]
	for {
		n, err := resp.Body.Read(buf)
		end := errors.Is(err, io.EOF)
		if err != nil && !end {
			ae.upstreamErr = fmt.Errorf("read upstream body: %w", err)
			if errors.Is(context.Cause(ctx), errRouteTimeout) {
				ae.reason = "upstream_response_timeout"
			}
			// Envoy resets the client's stream when the upstream's ends
			// early; finishing the response normally would hand the
			// client a truncated body as if it were whole. The server
			// closes the connection (HTTP/1.1) or resets the stream (HTTP/2).
			panic(http.ErrAbortHandler)
		}
		if n == 0 && !end {
			continue
		}
		// With trailers (gRPC's status, for one) the body does not end the
		// stream; the trailers do, after their own callback, as in Envoy.
		var trailers []abi.Header
		if end {
			trailers = trailerList(resp.Trailer)
		}
		a := s.ResponseBody(buf[:n], end && trailers == nil)
		if trailers != nil {
			a = s.ResponseTrailers(trailers)
		}
		if end && a != abi.ActionContinue {
			if err := s.Wait(ctx); err != nil {
				return
			}
		}
		if out := s.TakeResponseBody(); len(out) > 0 {
			if _, err := w.Write(out); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if end {
			if trailers != nil {
				h := w.Header()
				for _, t := range s.ResponseTrailersNow() {
					h.Add(http.TrailerPrefix+t.Key, t.Value)
				}
			}
			return
		}
	}
}

// trailerList is the upstream's trailers as the filter sees them: names
// lowercase, in a stable order; nil when there are none.
func trailerList(t http.Header) []abi.Header {
	var keys []string
	for k, vs := range t {
		if len(vs) > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	var out []abi.Header
	for _, k := range keys {
		for _, v := range t[k] {
			out = append(out, abi.Header{Key: strings.ToLower(k), Value: v})
		}
	}
	return out
}

// bodyBufs recycles response-body buffers: a fresh 32 KB per response was
// the gateway's largest allocation.
var bodyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// sendLocal answers with a local reply. As in Envoy, the reply is encoded
// through the filter's own response callbacks before it reaches the client
// (Utility::sendLocalReply goes through the filter manager's encode path).
func (g *Gateway) sendLocal(w http.ResponseWriter, s *hosttest.Stream, l *hosttest.LocalResponse, ae *accessEntry) {
	hs := localReplyHeaders(l)
	s.ResponseHeaders(hs, len(l.Body) == 0)
	if len(l.Body) > 0 {
		s.ResponseBody(l.Body, true)
	}
	final := s.ResponseHeadersNow()
	ae.status = writeHeaders(w, final, l.Status)
	if ae.reason == "" {
		ae.reason = localReason(final, l)
	}
	_, _ = w.Write(l.Body)
}

// localReason is the decision reason of a local reply: the filter's
// x-mtls-verification-reason header, else the problem document's reason,
// else the response details Envoy would log (%RESPONSE_CODE_DETAILS%).
func localReason(hs []abi.Header, l *hosttest.LocalResponse) string {
	if v, ok := hosttest.Get(hs, "x-mtls-verification-reason"); ok {
		return v
	}
	var p struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(l.Body, &p) == nil && p.Reason != "" {
		return p.Reason
	}
	return l.Details
}

// localReplyHeaders are the headers Utility::sendLocalReply encodes
// (source/common/http/utility.cc): :status, the filter's headers, then
// content-length and a text/plain content-type when there is a body and the
// filter gave none.
func localReplyHeaders(l *hosttest.LocalResponse) []abi.Header {
	hs := []abi.Header{{Key: ":status", Value: strconv.Itoa(l.Status)}}
	for _, h := range l.Headers {
		hs = append(hs, abi.Header{Key: strings.ToLower(h.Key), Value: h.Value})
	}
	if len(l.Body) > 0 {
		hs = setHeader(hs, "content-length", strconv.Itoa(len(l.Body)))
		if _, ok := hosttest.Get(hs, "content-type"); !ok {
			hs = append(hs, abi.Header{Key: "content-type", Value: "text/plain"})
		}
	}
	return hs
}

func setHeader(hs []abi.Header, k, v string) []abi.Header {
	out := hs[:0]
	for _, h := range hs {
		if h.Key != k {
			out = append(out, h)
		}
	}
	return append(out, abi.Header{Key: k, Value: v})
}

// writeHeaders writes the filter's final response headers and returns the
// status sent.
func writeHeaders(w http.ResponseWriter, hs []abi.Header, fallback int) int {
	status := fallback
	if v, ok := hosttest.Get(hs, ":status"); ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 100 && n <= 999 {
			status = n
		}
	}
	h := w.Header()
	for _, x := range hs {
		if strings.HasPrefix(x.Key, ":") || hopByHop[x.Key] {
			continue
		}
		h.Add(x.Key, x.Value)
	}
	w.WriteHeader(status)
	return status
}

func (g *Gateway) access(ae *accessEntry, d time.Duration) {
	if g.cfg.AccessLogJSON {
		rec := map[string]any{"time": time.Now().Format(time.RFC3339Nano), "method": ae.method, "path": ae.path,
			"protocol": ae.proto, "status": ae.status, "reason": ae.reason, "durationMs": float64(d.Microseconds()) / 1000}
		if ae.upstreamErr != nil {
			rec["upstreamError"] = ae.upstreamErr.Error()
			rec["responseFlags"] = upstreamFlag(ae.status)
		}
		b, _ := json.Marshal(rec)
		g.logMu.Lock()
		fmt.Fprintln(g.accessw, string(b))
		g.logMu.Unlock()
		return
	}
	reason := ae.reason
	if reason == "" {
		reason = "-"
	}
	line := fmt.Sprintf("%s %s %q %s %d reason=%s duration=%s", time.Now().Format(time.RFC3339), ae.method, ae.path, ae.proto, ae.status, reason, d.Round(time.Microsecond))
	if ae.upstreamErr != nil {
		// reason is the filter's verdict; the response flag, as in Envoy's
		// access log, says the status came from the upstream leg.
		line += fmt.Sprintf(" flags=%s upstream_error=%q", upstreamFlag(ae.status), ae.upstreamErr.Error())
	}
	g.logMu.Lock()
	fmt.Fprintln(g.accessw, line)
	g.logMu.Unlock()
}

// upstreamFlag is Envoy's response flag for a failed upstream leg: UT for
// the route timeout (504), UF for anything else (no connection, a reset).
func upstreamFlag(status int) string {
	if status == http.StatusGatewayTimeout {
		return "UT"
	}
	return "UF"
}
