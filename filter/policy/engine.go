// Package policy is the mtls-auth-inbound policy engine of the mtlsgate
// filter: configuration parsing, certificate extraction, chain verification,
// the verdict cache and the headers and problem responses the filter
// produces. It is plain Go with no proxy-wasm imports so that it builds
// natively (tests, benchmarks, `mtlsgate verify`) and for wasip1; the filter's
// thin ABI glue calls NewEngine, SetBundle and Evaluate.
package policy

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"iter"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mtlsgate/mtlsgate/filter/policy/certsrc"
	"github.com/mtlsgate/mtlsgate/filter/policy/dn"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
)

// Header is one HTTP header; keys are lowercase as Envoy hands them over.
type Header struct{ Key, Value string }

// Request is what the glue hands over for one request.
type Request struct {
	Method string // :method
	Path   string // :path, query included
	// Headers are all request headers, as one proxy_get_header_map_pairs
	// call returns them.
	Headers []Header
	// SourceAddress is Envoy's source.address property, "ip:port". When it
	// is empty and Source is set, the engine asks Source the first time a
	// decision depends on the address.
	SourceAddress string
	Source        AddressSource
	// PeerCertificateDigest is Envoy's connection.sha256_peer_certificate_digest
	// (hex SHA-256 of the certificate the downstream connection presented),
	// "" for none. When it is empty and Peer is set, the engine asks Peer
	// the first time it verifies an XFCC element (never on a cached verdict).
	PeerCertificateDigest string
	Peer                  PeerCertificateSource
	Now                   time.Time
}

// PeerCertificateSource supplies the connection's certificate digest on
// demand.
type PeerCertificateSource interface {
	PeerCertificateDigest() string
}

// peerDigest returns the connection's certificate digest, fetching it once
// from req.Peer. It is copied: the host's buffer is reused by the next
// property read.
func (req *Request) peerDigest() string {
	if req.PeerCertificateDigest == "" && req.Peer != nil {
		req.PeerCertificateDigest = strings.Clone(req.Peer.PeerCertificateDigest())
		req.Peer = nil
	}
	return req.PeerCertificateDigest
}

// AddressSource supplies the source address on demand. A cached verdict on
// an XFCC route never depends on it, and reading it from the host is a host
// call plus a call back into the guest for the buffer; the filter reads it
// only for the requests that need it. The string must stay unchanged until
// the request is decided and logged, whatever else is read from the host
// meanwhile.
type AddressSource interface {
	SourceAddress() string
}

// source returns the source address, fetching it once from req.Source.
func (req *Request) source() string {
	if req.SourceAddress == "" && req.Source != nil {
		req.SourceAddress = req.Source.SourceAddress()
		req.Source = nil
	}
	return req.SourceAddress
}

// Action is what the glue does with the request.
type Action int

const (
	// Continue: remove RemoveHeaders, set SetHeaders, let the request proceed.
	Continue Action = iota
	// Respond: remove RemoveHeaders and send a local response with Status,
	// ResponseHeaders and Body (proxy_send_local_response).
	Respond
)

// LogLevel uses the proxy-wasm log level numbering.
type LogLevel int

const (
	LogTrace LogLevel = 0
	LogDebug LogLevel = 1
	LogInfo  LogLevel = 2
	LogWarn  LogLevel = 3
)

// Decision values, also the suffix of the decision metric.
const (
	DecisionAllow                = "allow"
	DecisionDeny                 = "deny"
	DecisionAllowUnauthenticated = "allow_unauthenticated"
	DecisionPassthrough          = "passthrough"
)

// Result tells the glue what to do. Slices may be shared between results and
// must not be modified.
type Result struct {
	Action Action
	// Status, ResponseHeaders and Body form the local response (Respond only).
	Status          int
	ResponseHeaders []Header
	Body            []byte
	// RemoveHeaders lists request headers present on this request that the
	// filter owns and must remove before anything else, whatever the
	// decision: spoofed identity headers, and a certificate header from a
	// source outside trustedSourceCIDRs.
	RemoveHeaders []string
	// SetHeaders are request headers to set (replace) before forwarding
	// (Continue only).
	SetHeaders []Header

	Decision string // DecisionAllow, DecisionDeny, ...
	Reason   Reason // empty on a clean success
	Policy   string // empty on passthrough
	Route    string
	// Metrics are counter names to increment by one (flat Envoy stat names).
	Metrics []string
	// LogLevel is the level LogLine should be written at: Info for denials
	// and unauthenticated pass-through, Debug for everything else.
	LogLevel LogLevel
	CacheHit bool

	// The request and the state in force, for the decision record.
	Time             time.Time
	Method           string
	SourceAddress    string
	ClientID         string // from clientIdField of a verified certificate
	ProfileID        string // from profileIdField of a verified certificate
	RequestedProfile string // what the request named in requestedProfileHeader (clipped)
	ConfigVersion    string
	BundleVersion    string
	ProfilesVersion  string

	// src supplies SourceAddress when the decision did not need it and the
	// result is logged after all (LogLine).
	src    AddressSource
	e      *entry
	detail string // overrides the verdict's detail (authorization denials)

	// Scratch space a reused Result carries from one request to the next,
	// so that a cached request through EvaluateInto allocates nothing in
	// Go wasm: the names to remove, and the rate limiter's key. A copy of
	// a Result shares them: evaluate into one Result per goroutine, and
	// copy what must outlive the next evaluation (RemoveHeaders) element by
	// element.
	removeBuf []string
	keyBuf    []byte
}

// entry is a rendered verdict for one presented chain under one policy; the
// verdict cache stores these so a hit only copies a struct.
type entry struct {
	action          Action
	status          int
	body            []byte
	responseHeaders []Header
	setHeaders      []Header
	decision        string
	reason          Reason
	detail          string
	subject, issuer string
	fingerprint     string
	// clientID and profileID are read from a verified leaf only.
	clientID, profileID string
	metricsHit          []string
	metricsMiss         []string
	logLevel            LogLevel

	raw       string
	untilUnix int64
	size      int // footprint while cached
	// replacesXFCC: setHeaders carries the verified XFCC element, which
	// replaces the header Envoy wrote.
	replacesXFCC bool
	prev, next   *entry
}

type compiledRoute struct {
	Route
	policy *compiledPolicy
}

type compiledPolicy struct {
	name        string
	opts        Options
	needsBundle bool
	cache       *verdictCache
	noCert      *entry // the static verdict for a request without a certificate
	untrusted   *entry // ...for a request from outside trustedSourceCIDRs
	// sourceHeaders are the lowercase input header names this policy reads.
	sourceHeaders []string
	// inputs are sourceHeaders and XFCC: what an unverified request loses.
	inputs []string
}

// Engine evaluates requests against a parsed configuration. It is safe for
// concurrent use; in the filter one engine lives per VM.
type Engine struct {
	cfg      *Config
	policies []*compiledPolicy
	routes   []compiledRoute
	// methodRoutes is set when a route names methods: only then can a
	// method-override header reach another route.
	methodRoutes bool
	// foldRoutes is set when a route's path has capitals (or non-ASCII):
	// then even a lowercase request path has a case-folded reading that
	// can reach another route.
	foldRoutes bool
	strip      []string
	// stripLens has bit n set when a name in strip is n bytes long (n < 64;
	// bit 63 stands for every longer name). Most request headers are not
	// ours, and a length test rejects them without hashing: string-keyed map
	// lookups hash byte by byte in Go wasm and cost a µs each.
	stripLens uint64
	// headerSourced counts the policies that read a certificate header
	// (rfc9440, header); with none, no request needs the source address
	// to decide what to strip.
	headerSourced int
	// ambiguous answers a path whose raw and normalized readings reach
	// different policies; refusals the paths resolvePath refuses to read,
	// by the reason it gives.
	ambiguous *entry
	refusals  [refuseDeep + 1]*entry
	// inputs are every policy's certificate input header names.
	inputs    []string
	inputLens uint64

	trust atomic.Pointer[trust]
	gen   atomic.Uint64
	mu    sync.Mutex // serialises SetBundle

	// profiles is the set in force: the sidecar's when its bundle carries
	// one, else configProfiles.
	profiles       atomic.Pointer[profileSet]
	configProfiles *profileSet
	limiter        Limiter
}

// NewEngine compiles cfg (which must come from ParseConfig). An inline trust
// bundle is loaded immediately; a sidecar-sourced one arrives via SetBundle.
func NewEngine(cfg *Config) *Engine {
	e := &Engine{cfg: cfg, limiter: NewMemoryLimiter(),
		ambiguous: ambiguousPath("the path reaches one route as written and another once resolved (dot segments, repeated slashes, escapes or letter case)"),
		refusals: [...]*entry{
			refuseNUL:      ambiguousPath("the path carries a NUL byte (raw, %00 or %2500), which upstreams cut the path at, drop or refuse"),
			refuseOverlong: ambiguousPath("the path carries an overlong UTF-8 sequence (raw or escaped, such as %C0%AE or %C0%AF), which old servers decode as '.' or '/' and no client sends"),
			refuseDeep:     ambiguousPath("the path still has a percent-escape after " + strconv.Itoa(maxDecodes) + " rounds of decoding, more layers of encoding than any client sends"),
		}}
	if cfg.ProfilesDefined {
		e.configProfiles = compileProfiles(cfg.Profiles, ProfilesFromConfig, 0)
		e.profiles.Store(e.configProfiles)
	}
	byName := map[string]*compiledPolicy{}
	// Envoy writes XFCC whatever the policies read, so its underscore
	// spelling is always the client's.
	e.inputs, e.inputLens = []string{xfccHeader}, lenBit(xfccHeader)
	for _, p := range cfg.Policies {
		cp := &compiledPolicy{name: p.Name, opts: p.Options, needsBundle: p.Options.ChainVerification == "filter" || p.Options.RevocationCheck != RevocationOff,
			cache: newVerdictCache(p.Options.CacheSize, cacheBytesTotal/len(cfg.Policies))}
		switch p.Options.CertificateSource {
		case SourceXFCC:
			cp.sourceHeaders = []string{"x-forwarded-client-cert"}
		case SourceRFC9440:
			cp.sourceHeaders = []string{"client-cert", "client-cert-chain"}
			e.headerSourced++
		case SourceHeader:
			cp.sourceHeaders = []string{p.Options.CertificateHeader}
			e.headerSourced++
		}
		cp.inputs = cp.sourceHeaders
		if !contains(cp.inputs, xfccHeader) {
			cp.inputs = append(slices.Clip(cp.sourceHeaders), xfccHeader)
		}
		for _, h := range cp.sourceHeaders {
			if !contains(e.inputs, h) {
				e.inputs = append(e.inputs, h)
				e.inputLens |= lenBit(h)
			}
		}
		cp.noCert = cp.render(&outcome{hard: ReasonNoCertificate, detail: "the request carries no client certificate"})
		cp.untrusted = cp.render(&outcome{hard: ReasonUntrustedSource, detail: "certificate headers are only read from trustedSourceCIDRs"})
		e.policies = append(e.policies, cp)
		byName[p.Name] = cp
		for _, f := range p.Options.Headers.fields() {
			e.addStrip(*f.ptr)
		}
		// The named profile is the client's claim; upstream sees only the
		// profile the filter bound (headerNames.profileId).
		e.addStrip(p.Options.RequestedProfileHeader)
	}
	for _, f := range DefaultHeaderNames.fields() {
		e.addStrip(*f.ptr)
	}
	for _, r := range cfg.Routes {
		e.routes = append(e.routes, compiledRoute{Route: r, policy: byName[r.Policy]})
		e.foldRoutes = e.foldRoutes || hasFoldable(r.Path) || hasFoldable(r.PathPrefix)
		e.methodRoutes = e.methodRoutes || len(r.Methods) > 0
	}
	if cfg.TrustBundle.Inline != nil {
		// ParseConfig compiled it already; an error here cannot happen for
		// a configuration it accepted, and would leave protected routes at 503.
		_ = e.SetBundle(cfg.TrustBundle.Inline)
	}
	return e
}

func (e *Engine) addStrip(name string) {
	if name == "" || contains(e.strip, name) {
		return
	}
	e.strip = append(e.strip, name)
	e.stripLens |= lenBit(name)
}

func lenBit(s string) uint64 { return 1 << min(len(s), 63) }

// isInputSpelling reports whether k is a certificate input header (any
// policy's, XFCC included) spelled with underscores. The dashed spelling is
// what Envoy or a trusted proxy writes, and each policy decides on it; an
// underscore spelling only ever comes from the client, and a CGI-style
// upstream would read it as the real one.
func (e *Engine) isInputSpelling(k string) bool {
	if e.inputLens&lenBit(k) == 0 {
		return false
	}
	for _, v := range e.inputs {
		if len(v) == len(k) && v != k && sameButUnderscores(v, k) {
			return true
		}
	}
	return false
}

// TrailersToRemove appends to out the request trailer names that must not
// reach the upstream: the filter's output namespace and every certificate
// input header, in any spelling, whoever sent them. The decision is made on
// headers alone and no client has a reason to send these as trailers, but
// gRPC servers read trailers as metadata beside the headers and some
// frameworks merge the two, so one left in place would be read as identity.
func (e *Engine) TrailersToRemove(out []string, trailers []Header) []string {
	return e.toRemove(out, trailers, e.inputs)
}

// isStripped reports whether name is one of e.strip.
func (e *Engine) isStripped(name string) bool {
	return e.stripLens&lenBit(name) != 0 && containsName(e.strip, name)
}

// StripHeaders returns the exact header names in the filter's output
// namespace. Every request header with one of these names, or starting with
// "x-mtls-", is client-supplied and must go; Evaluate reports the ones present
// in Result.RemoveHeaders.
func (e *Engine) StripHeaders() []string { return e.strip }

// HasBundle reports whether trust material is loaded.
func (e *Engine) HasBundle() bool { return e.trust.Load() != nil }

// BundleVersion returns the loaded bundle's version, or "".
func (e *Engine) BundleVersion() string {
	if t := e.trust.Load(); t != nil {
		return t.version
	}
	return ""
}

// NeedsBundle reports whether any policy verifies chains or checks
// revocation in the filter (and so answers 503 until SetBundle succeeds).
func (e *Engine) NeedsBundle() bool {
	for _, p := range e.policies {
		if p.needsBundle {
			return true
		}
	}
	return false
}

// SetBundle compiles b and swaps it in. On error the previous bundle stays
// in use. A new version drops every cached verdict.
func (e *Engine) SetBundle(b *bundle.Bundle) error {
	t, err := compileBundle(b)
	if err != nil {
		return errors.New("trust bundle " + versionOf(b) + " rejected, keeping the previous one: " + err.Error())
	}
	// A profile set the sidecar accepted parses here too (same code); an
	// error means version skew, and applying the CAs without the bindings
	// they came with would be a half-applied change.
	ps, err := profilesFromBundle(b)
	if err != nil {
		return errors.New("trust bundle " + versionOf(b) + " rejected, keeping the previous one: " + err.Error())
	}
	if ps == nil {
		ps = e.configProfiles
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.trust.Load(); old != nil && old.version == t.version && t.version != "" {
		return nil
	}
	e.trust.Store(t)
	e.profiles.Store(ps)
	e.gen.Add(1)
	return nil
}

func versionOf(b *bundle.Bundle) string {
	if b == nil {
		return "(nil)"
	}
	return strconv.Quote(b.Version)
}

// route returns the route the readings of method and path reach (policy
// nil: none), or the answer that refuses the request.
func (e *Engine) route(method, path string) (r reach, refuse *entry) {
	if len(e.routes) == 0 {
		return reach{policy: e.policies[0]}, nil
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	// The readings of the path: as written (Envoy routes on it, and a
	// literal upstream serves /admin/../x from the admin tree), as
	// upstreams resolve it (see resolvePath: //admin/x, /%61dmin/x and
	// /%2561dmin/x are /admin/x there), and each again with letter case
	// folded, as a case-insensitive upstream (ASP.NET Core, IIS) reads
	// /ADMIN/x. A route any reading reaches protects the request; readings
	// that reach different policies are settled by reach.merge, since which
	// one the upstream acts on is unknown. A path with nothing to resolve
	// has the one reading, and its case-folded one.
	r = e.matchRoute(method, path, false)
	if plainPath(path) {
		if e.foldRoutes || hasFoldable(path) {
			// Raw overlong bytes need no escape, so a plain path is not
			// exempt (see resolvePath). Without a byte hasFoldable finds
			// (any non-ASCII one) it has none, and an ASCII path pays
			// nothing more.
			if overlong(path) {
				return reach{}, e.refusals[refuseOverlong]
			}
			var amb bool
			if r, amb = r.merge(e.matchRoute(method, path, true)); amb {
				return reach{}, e.ambiguous
			}
		}
		return r, nil
	}
	rs, why := resolvePath(path)
	if why != refuseNone {
		return reach{}, e.refusals[why]
	}
	fold := e.foldRoutes || hasFoldable(path)
	var amb bool
	for _, s := range rs.list() {
		if r, amb = r.merge(e.matchRoute(method, s, false)); amb {
			return reach{}, e.ambiguous
		}
		fold = fold || hasFoldable(s)
	}
	if fold {
		if r, amb = r.merge(e.matchRoute(method, path, true)); amb {
			return reach{}, e.ambiguous
		}
		for _, s := range rs.list() {
			if r, amb = r.merge(e.matchRoute(method, s, true)); amb {
				return reach{}, e.ambiguous
			}
		}
	}
	return r, nil
}

// reach is the route one reading of a path reaches (policy nil: none).
type reach struct {
	policy *compiledPolicy
	name   string
}

// merge combines the routes two readings reached: either alone, or the
// first when both reach one policy. Of two policies where only one lets
// unauthenticated requests through, the other applies: whichever reading the
// upstream takes, a request that passes it passes both (a servlet's
// /login;jsessionid=… under a strict catch-all, a method override onto an
// open GET route). Any other two are ambiguous.
func (a reach) merge(b reach) (reach, bool) {
	switch {
	case b.policy == nil || a.policy == b.policy:
		return a, false
	case a.policy == nil:
		return b, false
	}
	aOpen, bOpen := a.policy.opts.AllowUnauthenticatedRequests, b.policy.opts.AllowUnauthenticatedRequests
	switch {
	case aOpen && !bOpen:
		return b, false
	case bOpen && !aOpen:
		return a, false
	}
	return a, true
}

// samePath reports whether path is the exact route path want: as written,
// with or without one trailing slash (Express, and Spring before 6, serve
// /login/ as /login and the other way round), and ignoring case when fold is
// set.
func samePath(path, want string, fold bool) bool {
	path, want = strings.TrimSuffix(path, "/"), strings.TrimSuffix(want, "/")
	return path == want || fold && strings.EqualFold(path, want)
}

// underPrefix reports whether path is under the route prefix: a prefix
// ending in a slash also covers the directory itself without it (/admin for
// /admin/), which Express and ASP.NET serve from the same handlers.
func underPrefix(path, prefix string, fold bool) bool {
	if strings.HasPrefix(path, prefix) || fold && hasPrefixFold(path, prefix) {
		return true
	}
	if dir, ok := strings.CutSuffix(prefix, "/"); ok && dir != "" {
		return path == dir || fold && strings.EqualFold(path, dir)
	}
	return false
}

// hasPrefixFold is strings.HasPrefix under Unicode case folding, rune by
// rune: "ſ" (two bytes) folds to "s" (one), as .NET's OrdinalIgnoreCase
// reads it, so byte lengths do not line up.
func hasPrefixFold(s, prefix string) bool {
	for prefix != "" {
		if s == "" {
			return false
		}
		r1, n1 := utf8.DecodeRuneInString(s)
		r2, n2 := utf8.DecodeRuneInString(prefix)
		if r1 != r2 && !equalFoldRune(r1, r2) {
			return false
		}
		s, prefix = s[n1:], prefix[n2:]
	}
	return true
}

func equalFoldRune(a, b rune) bool {
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// hasFoldable reports whether s has a byte case folding could change: an
// ASCII capital or any non-ASCII byte.
func hasFoldable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return true
		}
	}
	return false
}

// matchRoute returns the first route for method and path. Methods compare
// without regard to case (an upstream that takes "get" for GET must get the
// GET route's policy), and HEAD matches a route for GET; paths compare
// without regard to case when fold is set.
func (e *Engine) matchRoute(method, path string, fold bool) reach {
	for i := range e.routes {
		r := &e.routes[i]
		if r.Path != "" && !samePath(path, r.Path, fold) {
			continue
		}
		if r.PathPrefix != "" && !underPrefix(path, r.PathPrefix, fold) {
			continue
		}
		if len(r.Methods) > 0 {
			ok := false
			for _, m := range r.Methods {
				// HEAD is GET without the body, and most frameworks answer it
				// with the GET handler: a GET route covers it.
				if m == method || strings.EqualFold(m, method) || m == "GET" && strings.EqualFold(method, "HEAD") {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		return reach{r.policy, r.Name}
	}
	return reach{}
}

// routePath is the path routes match against besides the raw one:
// unreserved characters percent-decoded, runs of slashes merged and dot
// segments removed (RFC 3986 §6.2.2, §5.2.4), as upstreams resolve it.
// Matching the raw path would let //admin, /./admin or /%61dmin past a
// protected /admin prefix to an upstream that reads them all as /admin;
// Envoy normalizes only when normalize_path and merge_slashes are on.
// Encoded slashes are decoded into separators too: Envoy keeps them
// encoded, but nginx, WSGI servers and gorilla/mux do not.
//
// Two server conventions count too: a backslash is a separator to IIS and
// ASP.NET, and ";params" end a segment for Tomcat, Jetty and Spring
// (/admin;jsessionid=1/x and /public/..;/admin are /admin/x there).
func routePath(p string) string {
	if plainPath(p) {
		return p
	}
	return normalizePath(decodeEscapes(p, false))
}

// plainPath reports whether p reads the same to every upstream, so that
// the raw reading is the only one: no escape, separator spelling, dot
// segment, path parameter, trailing dot or space, or NUL. It is the whole
// cost of the other readings for almost every request.
func plainPath(p string) bool {
	return !strings.Contains(p, "//") && !strings.Contains(p, "/.") && !strings.Contains(p, "./") && !strings.HasSuffix(p, ".") &&
		strings.IndexAny(p, "%;\\ \x00") < 0
}

// readings are a path's resolved readings other than the raw one, each
// distinct: the normalized one and four per round of decoding, so a route is
// matched at most 2×(2+4×maxDecodes) times.
type readings struct {
	s [1 + 4*maxDecodes]string
	n int
}

// maxDecodes is how many rounds of decoding resolvePath reads: one per layer
// that decodes in front of the upstream or in it. A path with an escape left
// after the last is refused rather than read, which keeps the work linear in
// the path's length (each round is a pass; %252525… loses one layer a round).
const maxDecodes = 4

// refusal is why resolvePath refuses to read a path.
type refusal uint8

const (
	refuseNone refusal = iota
	refuseNUL
	refuseOverlong
	refuseDeep
)

func (rs *readings) add(raw, s string) {
	if s == raw {
		return
	}
	for _, v := range rs.s[:rs.n] {
		if v == s {
			return
		}
	}
	rs.s[rs.n] = s
	rs.n++
}

func (rs *readings) list() []string { return rs.s[:rs.n] }

// resolvePath returns the readings of a path that is not plain besides the
// raw one, or why it refuses to read it:
//
//   - routePath: unreserved escapes decoded, as RFC 3986 normalizes;
//   - every escape decoded once, then resolved the same way: servers that
//     decode before cutting ";params" (/admin%3Bx/y is /admin/y there), and
//     frameworks that compare decoded non-ASCII letters ignoring case
//     (/%C5%BFecret/ is /ſecret/, which .NET's OrdinalIgnoreCase reads as
//     /secret/);
//   - every escape decoded again, as long as the decoded path still has
//     one, up to maxDecodes rounds: an upstream behind a proxy that decoded
//     already, or one that decodes again itself, reads /%2561dmin/x as
//     /admin/x, and each further layer that decodes takes one more round
//     (/%252561dmin/x). Every round is a reading of its own: an upstream
//     behind exactly three decoding layers reads the third round, not the
//     last;
//   - each decoded path also as it stands, unresolved: an upstream that
//     decodes but takes dot segments and ";" literally serves
//     /%61dmin/..;/x and /%61dmin/%2e%2e/x from the /admin/ tree;
//   - each decoded path cut at a decoded '?' or '#', as it stands and
//     resolved (see addDecoded).
//
// Some paths are refused instead of read. A NUL byte (raw, %00 or %2500):
// upstreams cut the path there, drop it or refuse the request. An overlong
// UTF-8 sequence (%C0%AE, %C0%AF, %E0%80%AE): invalid UTF-8 that modern
// servers refuse and old ones (unpatched IIS 4 and 5, Java's decoder
// before JDK 6u11) decode to the ASCII it spells, '.', '/' or any letter.
// An escape still there after maxDecodes rounds. No client sends any of
// them.
//
// Each step is linear in the path's length, and there are at most
// maxDecodes rounds.
func resolvePath(path string) (rs readings, refuse refusal) {
	if r := odd(path); r != refuseNone {
		return rs, r
	}
	rs.add(path, routePath(path))
	some, other := escapes(path)
	d := path
	for round := 0; some; round++ {
		if round == maxDecodes {
			return rs, refuseDeep
		}
		d = decodeEscapes(d, true)
		if r := odd(d); r != refuseNone {
			return rs, r
		}
		// The first round resolves only when it decoded what routePath
		// leaves encoded; otherwise its resolution is routePath's.
		rs.addDecoded(path, d, round > 0 || other)
		some, _ = escapes(d)
	}
	return rs, refuseNone
}

// odd reports why a path, raw or decoded, is refused: a NUL byte or an
// overlong UTF-8 sequence.
func odd(p string) refusal {
	if strings.IndexByte(p, 0) >= 0 {
		return refuseNUL
	}
	if overlong(p) {
		return refuseOverlong
	}
	return refuseNone
}

// overlong reports whether p holds the start of an overlong UTF-8 sequence:
// C0 or C1 then a continuation byte (a two-byte spelling of ASCII), E0 then
// 80–9F, or F0 then 80–8F. Other invalid bytes are left alone: a Latin-1
// path (caf%E9) is legitimate, and no decoder reads it as ASCII.
func overlong(p string) bool {
	for i := 0; i+1 < len(p); i++ {
		c := p[i]
		if c < 0xC0 {
			continue
		}
		n := p[i+1]
		switch {
		case c == 0xC0 || c == 0xC1:
			if n >= 0x80 && n <= 0xBF {
				return true
			}
		case c == 0xE0:
			if n >= 0x80 && n <= 0x9F {
				return true
			}
		case c == 0xF0:
			if n >= 0x80 && n <= 0x8F {
				return true
			}
		}
	}
	return false
}

// addDecoded adds the readings of a decoded path: as it stands, resolved
// (when resolve is set; otherwise it resolves as the raw path did), and both
// again cut at a decoded '?' or '#': an upstream that decodes the whole
// target before splitting off the query serves /admin%3F/../x as /admin.
func (rs *readings) addDecoded(raw, d string, resolve bool) {
	for {
		rs.add(raw, d)
		if resolve {
			rs.add(raw, normalizePath(d))
		}
		i := strings.IndexAny(d, "?#")
		if i < 0 {
			return
		}
		d, resolve = d[:i], true
	}
}

// decodeEscapes decodes the valid %XX escapes of p: every one when all is
// set, else those of unreserved characters, '/', '\\' and ' ' (what
// routePath resolves). Invalid escapes stay as written.
func decodeEscapes(p string, all bool) string {
	i := strings.IndexByte(p, '%')
	if i < 0 {
		return p
	}
	b := make([]byte, 0, len(p))
	b = append(b, p[:i]...)
	for ; i < len(p); i++ {
		if c := p[i]; c == '%' && i+2 < len(p) {
			if d, ok := unhex(p[i+1], p[i+2]); ok && (all || routeDecoded(d)) {
				b = append(b, d)
				i += 2
				continue
			}
		}
		b = append(b, p[i])
	}
	return string(b)
}

// routeDecoded reports whether routePath decodes an escape of c.
func routeDecoded(c byte) bool {
	return isUnreserved(c) || c == '/' || c == '\\' || c == ' '
}

// escapes reports whether p has a valid %XX escape, and whether one of them
// is of a byte routePath leaves encoded (%3B, %25, %00, non-ASCII bytes, ...).
func escapes(p string) (some, other bool) {
	for i := strings.IndexByte(p, '%'); i >= 0 && i+2 < len(p); {
		if d, ok := unhex(p[i+1], p[i+2]); ok {
			if !routeDecoded(d) {
				return true, true
			}
			some = true
		}
		j := strings.IndexByte(p[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return some, false
}

// normalizePath resolves a decoded path: backslashes are separators, runs
// of slashes merge, ";params" are cut from each segment, trailing dots and
// spaces leave a segment, and dot segments are removed. One pass, into one
// buffer the size of the path: a long path of segments costs no more than
// its length.
func normalizePath(q string) string {
	if strings.HasPrefix(q, "/") && !strings.Contains(q, "//") && !strings.Contains(q, "/.") && !strings.Contains(q, "./") &&
		!strings.HasSuffix(q, ".") && strings.IndexAny(q, ";\\ ") < 0 {
		return q
	}
	q = strings.ReplaceAll(q, "\\", "/")
	out := make([]byte, 0, len(q)+1)
	for rest := q; rest != ""; {
		s, r, _ := strings.Cut(rest, "/")
		rest = r
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
		if s != "." && s != ".." {
			// IIS drops a segment's trailing dots and spaces: /secret./x
			// and /secret%20/x are /secret/x there.
			s = strings.TrimRight(s, ". ")
		}
		switch s {
		case "", ".":
		case "..":
			// Each byte is dropped at most once, so popping stays linear.
			if i := bytes.LastIndexByte(out, '/'); i >= 0 {
				out = out[:i]
			}
		default:
			out = append(out, '/')
			out = append(out, s...)
		}
	}
	if len(out) == 0 {
		return "/"
	}
	// A trailing slash (or a trailing dot segment) keeps the path a
	// directory: /admin/ is still under /admin/.
	if strings.HasSuffix(q, "/") || strings.HasSuffix(q, "/.") || strings.HasSuffix(q, "/..") {
		out = append(out, '/')
	}
	return string(out)
}

func unhex(a, b byte) (byte, bool) {
	h, ok1 := hexVal(a)
	l, ok2 := hexVal(b)
	return h<<4 | l, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

var passthroughMetrics = []string{"mtlsgate.decision.passthrough"}

// Evaluate decides one request. It never panics on request input.
func (e *Engine) Evaluate(req *Request) *Result {
	res := new(Result)
	e.EvaluateInto(req, res)
	return res
}

// EvaluateInto is Evaluate writing into res, whatever res held before: a
// caller that evaluates one request at a time reuses one Result instead of
// allocating one per request (a measurable cost in Go wasm). The previous
// contents are gone; slices in the new result may share the engine's own
// memory and must not be modified.
func (e *Engine) EvaluateInto(req *Request, res *Result) {
	p := e.evaluate(req, res)
	if p != nil && res.Decision == DecisionAllow && res.e != nil {
		e.authorize(p, res.e, req, res)
	}
	if res.Action == Continue {
		if names := unverifiedInputs(p, res); names != nil {
			res.RemoveHeaders = appendPresent(res.RemoveHeaders, req.Headers, names)
			res.removeBuf = res.RemoveHeaders
		}
	}
	if p != nil && p.opts.DecisionLogAll && res.LogLevel < LogInfo {
		res.LogLevel = LogInfo
	}
	res.Time, res.Method, res.SourceAddress, res.src = req.Now, req.Method, req.SourceAddress, req.Source
	res.ConfigVersion = e.cfg.Version
	res.BundleVersion = e.BundleVersion()
	res.ProfilesVersion = e.profiles.Load().describe()
}

func (e *Engine) evaluate(req *Request, res *Result) *compiledPolicy {
	removeBuf, keyBuf := res.removeBuf[:0], res.keyBuf
	remove := e.toRemove(removeBuf, req.Headers, nil)
	r, refuse := e.route(req.Method, req.Path)
	if refuse == nil && e.methodRoutes {
		// The method an override names is a reading too.
		for ov := range methodOverrides(req.Headers, req.Path) {
			if ov == "" || strings.EqualFold(ov, req.Method) {
				continue
			}
			q, qrefuse := e.route(ov, req.Path)
			if refuse = qrefuse; refuse != nil {
				break
			}
			var amb bool
			if r, amb = r.merge(q); amb {
				refuse = e.ambiguous
				break
			}
		}
	}
	p, routeName, ok := r.policy, r.name, r.policy != nil
	if refuse != nil {
		*res = Result{RemoveHeaders: remove, removeBuf: remove, keyBuf: keyBuf}
		res.fill(refuse, false)
		return nil
	}
	if !ok {
		// Unprotected routes still must not pass on a certificate header from
		// a peer that is not allowed to send one: an upstream may read it.
		remove = e.toRemove(removeBuf, req.Headers, e.untrustedInputsFor(req, nil))
		*res = Result{Action: Continue, Decision: DecisionPassthrough, RemoveHeaders: remove, Metrics: passthroughMetrics, LogLevel: LogDebug,
			removeBuf: remove, keyBuf: keyBuf}
		return nil
	}
	// Other policies' certificate headers from a peer not allowed to send
	// them go too: an upstream behind this route may read them.
	var others []string
	if e.headerSourced > 0 {
		if others = e.untrustedInputsFor(req, p); len(others) > 0 {
			remove = e.toRemove(removeBuf, req.Headers, others)
		}
	}
	*res = Result{Policy: p.name, Route: routeName, removeBuf: remove, keyBuf: keyBuf}
	// The generation before the trust it goes with: SetBundle stores the
	// trust first, so a verdict reached with new trust may land under the
	// old generation (and be dropped), never one reached with old trust
	// under the new.
	gen := e.gen.Load()
	t := e.trust.Load()
	if p.needsBundle && t == nil {
		res.RemoveHeaders = remove
		res.fill(unavailable(p), false)
		return p
	}

	var raw string
	var chainLines []string // rfc9440 only
	dup := false
	switch p.opts.CertificateSource {
	case SourceXFCC:
		if !p.opts.XFCCElementLast && !trustedSource(p.opts.TrustedSourceCIDRs, req.source()) {
			res.RemoveHeaders = e.toRemove(remove[:0], req.Headers, append(others, p.sourceHeaders...))
			res.removeBuf = res.RemoveHeaders
			res.fill(p.untrusted, false)
			return p
		}
		raw, dup = joinHeader(req.Headers, "x-forwarded-client-cert", ",")
		dup = false // repeated lines are one comma-joined list
	case SourceRFC9440, SourceHeader:
		if !trustedSource(p.opts.TrustedSourceCIDRs, req.source()) {
			res.RemoveHeaders = e.toRemove(remove[:0], req.Headers, append(others, p.sourceHeaders...))
			res.removeBuf = res.RemoveHeaders
			res.fill(p.untrusted, false)
			return p
		}
		raw, dup = joinHeader(req.Headers, p.sourceHeaders[0], "\x00")
		if p.opts.CertificateSource == SourceRFC9440 {
			for _, h := range req.Headers {
				if h.Key == "client-cert-chain" {
					chainLines = append(chainLines, h.Value)
				}
			}
			if raw != "" && len(chainLines) > 0 {
				raw = raw + "\x01" + strings.Join(chainLines, "\x02")
			}
		}
	}
	res.RemoveHeaders = remove
	if strings.TrimSpace(raw) == "" {
		res.fill(p.noCert, false)
		return p
	}
	if ent := p.cache.get(gen, raw, req.Now.Unix()); ent != nil {
		res.fill(ent, true)
		return p
	}
	var o *outcome
	var el string // the XFCC element read
	if dup {
		o = (&outcome{}).fail(ReasonMalformedCertificate, "the certificate header "+p.sourceHeaders[0]+" appears more than once")
	} else {
		// The element this Envoy wrote describes this connection: when the
		// connection presented a certificate, the one read must be it. Not
		// checked on a cached verdict: the raw value carries the Hash= Envoy
		// wrote from the connection, so an equal value means an equal
		// certificate.
		var digest string
		if p.opts.CertificateSource == SourceXFCC {
			digest = req.peerDigest()
		}
		var ders [][]byte
		var err error
		ders, el, err = p.extract(req.Headers, raw, digest)
		switch {
		case errors.Is(err, certsrc.ErrNoCertificate):
			res.fill(p.noCert, false)
			return p
		case err == nil && !p.opts.XFCCElementLast && p.opts.CertificateSource == SourceXFCC && digest != "" && hasDigest(ders[0], digest):
			// The first element is the one this Envoy wrote about its peer,
			// the proxy in front: the proxy forwarded no client certificate,
			// and its own is not the client's.
			res.fill(p.noCert, false)
			return p
		case errors.Is(err, certsrc.ErrTooManyCertificates):
			o = (&outcome{}).fail(ReasonCertificateTooLarge, err.Error())
		case err != nil:
			o = (&outcome{}).fail(ReasonMalformedCertificate, err.Error())
		case digest != "" && p.opts.XFCCElementLast && !hasDigest(ders[0], digest):
			o = (&outcome{}).fail(ReasonMalformedCertificate, "the x-forwarded-client-cert element read is not the certificate this connection presented "+
				"(a certificate SAN carrying XFCC syntax, or an XFCC written by a proxy in front of this Envoy: read that one with xfccElement \"first\" and trustedSourceCIDRs naming that proxy)")
		default:
			o = verifyChain(&p.opts, t, ders, req.Now)
		}
	}
	ent := p.render(o)
	// The detail may quote the request's own bytes, which can share a buffer
	// the caller reuses; the cached verdict must not change under it.
	ent.detail = strings.Clone(ent.detail)
	if ent.decision == DecisionAllow && el != "" && el != raw {
		// The upstream gets the element that was verified, not the others:
		// a client's SAN may have split Envoy's element, or a client in
		// front of a proxy prepended its own.
		ent.setHeaders = append(ent.setHeaders, Header{xfccHeader, strings.Clone(el)})
		ent.replacesXFCC = true
	}
	if !o.until.IsZero() {
		ent.untilUnix = o.until.Unix()
	}
	p.cache.put(gen, raw, ent)
	res.fill(ent, false)
	return p
}

// EvaluateChain decides a chain (DER, leaf first) directly under the named
// policy, bypassing header extraction and the cache, and then, when the
// chain verified, the policy's profile rules for req (its method, source
// address and requested-profile header), as EvaluateInto does for a live
// request. `mtlsgate verify` uses it; the result carries no route and no
// RemoveHeaders.
func (e *Engine) EvaluateChain(policyName string, ders [][]byte, req *Request) (*Result, error) {
	var p *compiledPolicy
	for _, cp := range e.policies {
		if cp.name == policyName || policyName == "" {
			p = cp
			break
		}
	}
	if p == nil {
		return nil, errors.New("no policy named " + strconv.Quote(policyName))
	}
	res := &Result{Policy: p.name}
	t := e.trust.Load()
	if p.needsBundle && t == nil {
		res.fill(unavailable(p), false)
		return res, nil
	}
	res.fill(p.render(verifyChain(&p.opts, t, ders, req.Now)), false)
	if res.Decision == DecisionAllow {
		e.authorize(p, res.e, req, res)
	}
	res.Time, res.Method, res.SourceAddress = req.Now, req.Method, req.SourceAddress
	res.ConfigVersion, res.BundleVersion = e.cfg.Version, e.BundleVersion()
	res.ProfilesVersion = e.profiles.Load().describe()
	return res, nil
}

func (r *Result) fill(e *entry, hit bool) {
	r.Action, r.Status, r.Body, r.ResponseHeaders = e.action, e.status, e.body, e.responseHeaders
	r.SetHeaders, r.Decision, r.Reason, r.LogLevel = e.setHeaders, e.decision, e.reason, e.logLevel
	r.CacheHit = hit
	r.Metrics = e.metricsMiss
	if hit {
		r.Metrics = e.metricsHit
	}
	r.e = e
}

// hasDigest reports whether der's SHA-256 is digest (hex, either case,
// colons allowed).
func hasDigest(der []byte, digest string) bool {
	sum := sha256.Sum256(der)
	return strings.EqualFold(hex.EncodeToString(sum[:]), strings.ReplaceAll(digest, ":", ""))
}

// extract decodes the certificate chain from the request, and for XFCC the
// element it read. digest, when set, is the connection's certificate
// digest, which picks the element xfccElement "last" reads.
func (p *compiledPolicy) extract(headers []Header, raw, digest string) ([][]byte, string, error) {
	switch p.opts.CertificateSource {
	case SourceXFCC:
		var el string
		var err error
		if digest != "" && p.opts.XFCCElementLast {
			el, err = certsrc.SelectXFCCFor([]string{raw}, strings.ToLower(strings.ReplaceAll(digest, ":", "")))
		} else {
			el, err = certsrc.SelectXFCC([]string{raw}, p.opts.XFCCElementLast)
		}
		if err != nil {
			return nil, "", err
		}
		x, err := certsrc.ParseXFCCElement(el)
		if err != nil {
			return nil, "", err
		}
		ders, err := certsrc.XFCC(x)
		return ders, el, err
	case SourceRFC9440:
		var cert string
		var chain []string
		for _, h := range headers {
			switch h.Key {
			case "client-cert":
				cert = h.Value
			case "client-cert-chain":
				chain = append(chain, h.Value)
			}
		}
		ders, err := certsrc.RFC9440(cert, chain)
		return ders, "", err
	default:
		ders, err := certsrc.Header(raw, p.opts.CertificateHeaderFormat)
		return ders, "", err
	}
}

const xfccHeader = "x-forwarded-client-cert"

// methodOverrides yields each method a request names besides its own, as
// the frameworks that honour overrides read them: every
// x-http-method-override, x-http-method and x-method-override value (Rails,
// Spring, ASP.NET Web API, Google's clients) and every _method query
// parameter (Laravel, Symfony, Express's method-override). Which one an
// upstream acts on is its own choice, so each is a reading.
func methodOverrides(headers []Header, path string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, h := range headers {
			switch h.Key {
			case "x-http-method-override", "x-http-method", "x-method-override":
				if !yield(strings.TrimSpace(h.Value)) {
					return
				}
			}
		}
		_, query, ok := strings.Cut(path, "?")
		for ok && query != "" {
			kv := query
			if i := strings.IndexAny(query, "&;"); i >= 0 {
				kv, query = query[:i], query[i+1:]
			} else {
				query = ""
			}
			if k, v, _ := strings.Cut(kv, "="); isMethodParam(k) && !yield(queryValue(v)) {
				return
			}
		}
	}
}

// isMethodParam reports whether a raw query key reads as _method to some
// upstream's query parser: percent-escapes and "+" decoded, leading spaces
// dropped, and " " or "." read as "_" (PHP's variable names). ";" separates
// parameters too (older Rack, Python before 3.9.2). It does not allocate.
func isMethodParam(k string) bool {
	const want = "_method"
	n, lead := 0, true
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(k):
			if d, ok := unhex(k[i+1], k[i+2]); ok {
				c = d
				i += 2
			}
		}
		if c == ' ' && lead {
			continue
		}
		lead = false
		if c == ' ' || c == '.' {
			c = '_'
		}
		if n == len(want) || c != want[n] {
			return false
		}
		n++
	}
	return n == len(want)
}

// queryValue is a _method value as the upstream reads it: percent-escapes
// and "+" decoded, surrounding spaces dropped. A value with a broken escape
// stays as written.
func queryValue(v string) string {
	if strings.ContainsAny(v, "%+") {
		if d, err := url.QueryUnescape(v); err == nil {
			v = d
		}
	}
	return strings.TrimSpace(v)
}

// xfccOnly is unverifiedInputs' answer when only XFCC must go.
var xfccOnly = []string{xfccHeader}

// unverifiedInputs names the certificate headers a request going upstream
// must lose. Envoy writes XFCC for any certificate the listener took,
// verified or not (ACCEPT_UNTRUSTED), and a load balancer sends its header
// for whatever the client presented; Envoy-aware upstreams and those behind
// the balancer read them as identity. So they go on only with a certificate
// this filter verified from them, and XFCC then as the verified element
// alone (the entry sets it anew).
func unverifiedInputs(p *compiledPolicy, res *Result) []string {
	switch {
	case p == nil:
		return xfccOnly
	case res.Decision != DecisionAllow:
		return p.inputs
	case p.opts.CertificateSource != SourceXFCC, res.e != nil && res.e.replacesXFCC:
		return xfccOnly
	}
	return nil
}

// appendPresent appends to out each of names the request carries that out
// does not hold yet.
func appendPresent(out []string, headers []Header, names []string) []string {
	for _, h := range headers {
		if contains(names, h.Key) && !contains(out, h.Key) {
			out = append(out, h.Key)
		}
	}
	return out
}

// joinHeader returns the value of name, joining repeated lines with sep, and
// whether the header was repeated.
func joinHeader(headers []Header, name, sep string) (string, bool) {
	var v string
	n := 0
	for _, h := range headers {
		if h.Key != name {
			continue
		}
		if n == 0 {
			v = h.Value
		} else {
			v = v + sep + h.Value
		}
		n++
	}
	return v, n > 1
}

// toRemove appends to out (normally empty, with room kept from an earlier
// request) the names of the request headers present that the filter owns,
// plus extra ones: what must not reach the upstream.
func (e *Engine) toRemove(out []string, headers []Header, extra []string) []string {
	// Most headers differ in length from every name listed: the length bits
	// settle them without a call, which in Go wasm costs more than the test.
	lens := e.stripLens | e.inputLens
	for _, h := range headers {
		k := h.Key
		if !inMTLSNamespace(k) && (lens&lenBit(k) == 0 || !e.isStripped(k) && !e.isInputSpelling(k)) && (len(extra) == 0 || !containsName(extra, k)) {
			continue
		}
		if !contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// inMTLSNamespace is strings.HasPrefix(k, "x-mtls-") spelled out: it runs
// on every request header, and in Go wasm the library form is a runtime call
// comparing a byte at a time, most of a cached request's string work.
//
// An underscore stands for a dash: CGI-style upstreams (PHP, WSGI, Rack)
// read x_mtls_subject and x-mtls-subject as one variable, and Envoy passes
// underscores in names unless told to reject them.
func inMTLSNamespace(k string) bool {
	return len(k) >= 7 && k[0] == 'x' && (k[1] == '-' || k[1] == '_') && k[2] == 'm' && k[3] == 't' &&
		k[4] == 'l' && k[5] == 's' && (k[6] == '-' || k[6] == '_')
}

// containsName is contains, with an underscore in s matching a dash in the
// list (see inMTLSNamespace).
func containsName(list []string, s string) bool {
	for _, v := range list {
		if len(v) != len(s) || (len(s) > 0 && v[len(v)-1] != s[len(s)-1]) {
			continue
		}
		if v == s || sameButUnderscores(v, s) {
			return true
		}
	}
	return false
}

// sameButUnderscores reports whether s is name with dashes and underscores
// swapped in places (a configured name may have either).
func sameButUnderscores(name, s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != name[i] && !(s[i] == '_' && name[i] == '-') && !(s[i] == '-' && name[i] == '_') {
			return false
		}
	}
	return true
}

// untrustedInputsFor lists the certificate input headers of every header-
// or RFC 9440-sourced policy other than except that this source address may
// not send, leaving out the headers except reads itself (it decides on
// those).
func (e *Engine) untrustedInputsFor(req *Request, except *compiledPolicy) []string {
	var out []string
	for _, p := range e.policies {
		// XFCC first: an XFCC-only configuration never needs the address.
		if p == except || p.opts.CertificateSource == SourceXFCC || trustedSource(p.opts.TrustedSourceCIDRs, req.source()) {
			continue
		}
		for _, h := range p.sourceHeaders {
			if except == nil || !contains(except.sourceHeaders, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		// Length and last byte before the full comparison: it runs for
		// every request header against the stripped names, equal lengths
		// are common (user-agent, x-user-sub), and in Go wasm == on strings
		// is a runtime call comparing a byte at a time.
		if len(v) == len(s) && (len(s) == 0 || v[len(v)-1] == s[len(s)-1]) && v == s {
			return true
		}
	}
	return false
}

func trustedSource(cidrs []netip.Prefix, addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	var ip netip.Addr
	if err == nil {
		ip = ap.Addr()
	} else if ip, err = netip.ParseAddr(addr); err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, c := range cidrs {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// ambiguousPath is the 400 for a path whose readings reach different
// policies, or that upstreams read in ways the filter does not follow (see
// route).
func ambiguousPath(detail string) *entry {
	ent := &entry{action: Respond, status: 400, decision: DecisionDeny, reason: ReasonAmbiguousPath, logLevel: LogInfo,
		detail:          detail,
		body:            problemBody(ReasonAmbiguousPath, 400),
		responseHeaders: []Header{{"content-type", "application/problem+json"}, {DefaultHeaderNames.Reason, string(ReasonAmbiguousPath)}}}
	ent.metricsMiss = metricNames(ent.decision, ent.reason, "mtlsgate.cache.miss")
	ent.metricsHit = ent.metricsMiss
	return ent
}

// unavailable is the verdict while no bundle is loaded. It is not cached.
func unavailable(p *compiledPolicy) *entry {
	return p.render(&outcome{hard: ReasonTrustBundleUnavailable, detail: "the filter has not loaded a trust bundle yet"})
}

// render turns an outcome into the headers, response and metrics of a
// verdict under this policy.
func (p *compiledPolicy) render(o *outcome) *entry {
	h := &p.opts.Headers
	ent := &entry{detail: o.detail}
	var meta []Header
	if o.leaf != nil {
		meta, ent.subject, ent.issuer = metadata(h, o)
		ent.fingerprint = fingerprint(o.leaf.Raw)
		if o.hard == "" {
			ent.clientID = extractID(p.opts.ClientIDField, o.leaf, p.opts.SPIFFETrustDomains)
			ent.profileID = extractID(p.opts.ProfileIDField, o.leaf, p.opts.SPIFFETrustDomains)
		}
	}
	add := func(k, v string) {
		if k != "" {
			ent.setHeaders = append(ent.setHeaders, Header{k, v})
		}
	}
	switch {
	case o.hard == "":
		ent.action, ent.decision, ent.reason, ent.logLevel = Continue, DecisionAllow, o.soft, LogDebug
		ent.setHeaders = append(ent.setHeaders, meta...)
		add(h.UserSub, ent.subject)
		add(h.Status, "SUCCESS")
		if o.soft != "" {
			add(h.Reason, string(o.soft))
		}
		if ent.clientID != "" {
			add(h.ClientID, ent.clientID)
		}
		if ent.profileID != "" {
			add(h.ProfileID, ent.profileID)
		}
		add(h.ClientCert, sfBinary(o.leaf.Raw))
		if len(o.chain) > 1 {
			var parts []string
			for _, c := range o.chain[1:] {
				parts = append(parts, sfBinary(c.Raw))
			}
			add(h.ClientCertChain, strings.Join(parts, ", "))
		}
	case p.opts.AllowUnauthenticatedRequests:
		// Unverified metadata is passed on for logging and staged rollouts,
		// but never the identity (x-user-sub) or the RFC 9440 certificate,
		// which upstreams treat as authenticated.
		ent.action, ent.decision, ent.reason, ent.logLevel = Continue, DecisionAllowUnauthenticated, o.hard, LogInfo
		ent.setHeaders = append(ent.setHeaders, meta...)
		status := "FAILED"
		if o.hard == ReasonNoCertificate || o.hard == ReasonUntrustedSource {
			status = "NONE"
		}
		add(h.Status, status)
		add(h.Reason, string(o.hard))
	default:
		ent.action, ent.decision, ent.reason, ent.logLevel = Respond, DecisionDeny, o.hard, LogInfo
		ent.status = 401
		if o.hard == ReasonTrustBundleUnavailable {
			ent.status = 503
		}
		ent.body = problemBody(o.hard, ent.status)
		ent.responseHeaders = []Header{{"content-type", "application/problem+json"}}
		if h.Reason != "" {
			ent.responseHeaders = append(ent.responseHeaders, Header{h.Reason, string(o.hard)})
		}
	}
	ent.metricsMiss = metricNames(ent.decision, ent.reason, "mtlsgate.cache.miss")
	ent.metricsHit = metricNames(ent.decision, ent.reason, "mtlsgate.cache.hit")
	return ent
}

func metricNames(decision string, reason Reason, cache string) []string {
	m := []string{"mtlsgate.decision." + decision}
	if reason != "" {
		m = append(m, "mtlsgate.reason."+strings.ToLower(string(reason)))
	}
	return append(m, cache)
}

// metadata renders the descriptive headers of o's leaf, and its subject and
// issuer DNs whether or not their headers are renamed away: x-user-sub and
// the decision log need the subject all the same.
func metadata(h *HeaderNames, o *outcome) (out []Header, subject, issuer string) {
	c := o.leaf
	add := func(k, v string) {
		if k != "" && v != "" {
			out = append(out, Header{k, headerSafe(v)})
		}
	}
	var err error
	if subject, err = dn.Format(c.RawSubject); err != nil {
		subject = c.Subject.String()
	}
	if issuer, err = dn.Format(c.RawIssuer); err != nil {
		issuer = c.Issuer.String()
	}
	add(h.Subject, subject)
	add(h.Issuer, issuer)
	add(h.NotBefore, isoTime(c.NotBefore))
	add(h.NotAfter, isoTime(c.NotAfter))
	add(h.Fingerprint, fingerprint(c.Raw))
	add(h.Serial, serialHex(c))
	// The lists are comma-joined, so a comma inside one SAN is escaped
	// (%2C): "a,b" must not read as two names.
	var uris, dns []string
	for _, u := range c.URIs {
		uris = append(uris, strings.ReplaceAll(u.String(), ",", "%2C"))
	}
	for _, d := range c.DNSNames {
		dns = append(dns, strings.ReplaceAll(d, ",", "%2C"))
	}
	add(h.SANURI, strings.Join(uris, ","))
	add(h.SANDNS, strings.Join(dns, ","))
	return out, headerSafe(subject), headerSafe(issuer)
}

// headerSafe replaces bytes a header value cannot carry. DNs are already
// escaped; SANs come from the certificate and are not trusted to be clean.
func headerSafe(v string) string {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			b := []byte(v)
			for j := i; j < len(b); j++ {
				if b[j] < 0x20 || b[j] == 0x7f {
					b[j] = '?'
				}
			}
			return string(b)
		}
	}
	return v
}

const hexDigits = "0123456789ABCDEF"

// fingerprint is the SHA-256 of the DER, uppercase hex, colon separated.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	b := make([]byte, 0, len(sum)*3-1)
	for i, c := range sum {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&15])
	}
	return string(b)
}

// serialHex prints the serial as `openssl x509 -serial` does: uppercase hex
// of the big-endian magnitude, an even number of digits, "-" when negative.
func serialHex(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	mag := c.SerialNumber.Bytes()
	if len(mag) == 0 {
		mag = []byte{0}
	}
	b := make([]byte, 0, len(mag)*2+1)
	if c.SerialNumber.Sign() < 0 {
		b = append(b, '-')
	}
	for _, v := range mag {
		b = append(b, hexDigits[v>>4], hexDigits[v&15])
	}
	return string(b)
}

// sfBinary renders DER as an RFC 8941 byte sequence, as RFC 9440 specifies.
func sfBinary(der []byte) string {
	return ":" + base64.StdEncoding.EncodeToString(der) + ":"
}
