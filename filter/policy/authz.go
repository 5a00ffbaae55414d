package policy

import (
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/tidwall/gjson"
)

// Authorization reasons: what stopped a request whose certificate verified.
const (
	ReasonProfileMismatch  Reason = "PROFILE_MISMATCH"
	ReasonProfileUnknown   Reason = "PROFILE_UNKNOWN"
	ReasonClientNotAllowed Reason = "CLIENT_NOT_ALLOWED"
	ReasonIPNotAllowed     Reason = "IP_NOT_ALLOWED"
	ReasonMethodNotAllowed Reason = "METHOD_NOT_ALLOWED"
	ReasonRateLimited      Reason = "RATE_LIMITED"
	// ReasonProfileNotAllowed: the bound profile is not among the policy's
	// allowedProfiles.
	ReasonProfileNotAllowed Reason = "PROFILE_NOT_ALLOWED"
	// ReasonAmbiguousPath: the path reaches different policies as written
	// and once resolved, or carries a NUL byte.
	ReasonAmbiguousPath Reason = "AMBIGUOUS_PATH"
)

// Profile sources as decision records name them.
const (
	ProfilesFromConfig  = "config"
	ProfilesFromSidecar = "sidecar"
)

// profileSet is an immutable compiled set of profiles; SetBundle swaps it.
type profileSet struct {
	source  string // ProfilesFromConfig or ProfilesFromSidecar
	version int    // the sidecar's profilesVersion; 0 for config
	byID    map[string]*compiledProfile
	// desc is describe's answer, built once: every request records it.
	desc string
}

func (s *profileSet) describe() string {
	if s == nil {
		return "none"
	}
	return s.desc
}

type compiledProfile struct {
	bundle.Profile
	anyClient bool
	exact     map[string]struct{}
	globs     []string
	allow     string // the Allow header of a 405
	window    time.Duration
	// limitKey prefixes the limiter key of each client: the window length is
	// part of it, so changing a limit from per-second to per-minute never
	// reads a counter kept in the other unit.
	limitKey string
}

func compileProfiles(list []bundle.Profile, source string, version int) *profileSet {
	s := &profileSet{source: source, version: version, byID: make(map[string]*compiledProfile, len(list)), desc: source}
	if source == ProfilesFromSidecar {
		s.desc = "sidecar:" + strconv.Itoa(version)
	}
	for _, p := range list {
		cp := &compiledProfile{Profile: p, exact: map[string]struct{}{}}
		for _, c := range p.Clients {
			switch {
			case c == "*":
				cp.anyClient = true
			case strings.ContainsAny(c, "*?"):
				cp.globs = append(cp.globs, c)
			default:
				cp.exact[c] = struct{}{}
			}
		}
		cp.allow = strings.Join(p.Methods, ", ")
		if p.RateLimit != nil {
			w := p.RateLimit.WindowSeconds()
			cp.window = time.Duration(w) * time.Second
			// The profile ID's length makes the key unambiguous: IDs may
			// hold "/", and profile "a/b" with client "c" must not share
			// the budget of profile "a" with client "b/c".
			cp.limitKey = strconv.Itoa(w) + "/" + strconv.Itoa(len(p.ID)) + ":" + p.ID + "/"
		}
		s.byID[p.ID] = cp
	}
	return s
}

// profilesFromBundle compiles the profiles a sidecar bundle carries; nil when
// it carries none (the configuration's own profiles then stay in force).
func profilesFromBundle(b *bundle.Bundle) (*profileSet, error) {
	if len(b.Profiles) == 0 {
		return nil, nil
	}
	if !gjson.ValidBytes(b.Profiles) {
		return nil, errors.New("profiles: not valid JSON")
	}
	list, err := bundle.ParseProfiles(gjson.ParseBytes(b.Profiles), "profiles")
	if err != nil {
		return nil, err
	}
	return compileProfiles(list, ProfilesFromSidecar, b.ProfilesVersion), nil
}

func (p *compiledProfile) allowsClient(id string) bool {
	if p.anyClient {
		return true
	}
	if _, ok := p.exact[id]; ok {
		return true
	}
	for _, g := range p.globs {
		if globMatch(g, id) {
			return true
		}
	}
	return false
}

func (p *compiledProfile) allowsMethod(m string) bool {
	if len(p.Methods) == 0 {
		return true
	}
	for _, a := range p.Methods {
		if a == m {
			return true
		}
	}
	return false
}

// globMatch matches '*' (any run, possibly empty) and '?' (one byte) with the
// linear backtracking-free algorithm: at most len(pattern)*len(s) steps, so a
// hostile client ID cannot make matching explode.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && (pattern[px] == '?' || pattern[px] == s[sx]):
			px++
			sx++
		case px < len(pattern) && pattern[px] == '*':
			starPx, starSx = px, sx
			px++
		case starPx >= 0:
			px = starPx + 1
			starSx++
			sx = starSx
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// requestedRecord is the decision record's value for a profile header sent
// on several lines: the lines' names joined by commas, built no further than
// clip keeps, so a client repeating the header cannot make it costly.
func requestedRecord(headers []Header, name string) string {
	var b []byte
	for _, hd := range headers {
		if hd.Key != name {
			continue
		}
		for rest, more := hd.Value, true; more && len(b) <= maxLoggedValue; {
			var r string
			r, rest, more = strings.Cut(rest, ",")
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, strings.TrimSpace(r)...)
		}
		if len(b) > maxLoggedValue {
			break
		}
	}
	return clip(string(b))
}

// normalizeList trims the spaces around each element of a comma-separated
// list, returning s itself when there is nothing to trim.
func normalizeList(s string) string {
	if !strings.Contains(s, ",") {
		return strings.TrimSpace(s)
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, ",")
}

// maxLoggedValue bounds client-supplied values copied into decision records.
const maxLoggedValue = 128

func clip(s string) string {
	if len(s) > maxLoggedValue {
		// Cut at a character boundary, not through a UTF-8 sequence.
		n := maxLoggedValue
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n] + "..."
	}
	return s
}

// authorize applies the bound profile to a request whose certificate
// verified, turning res into a denial when a rule refuses it. It runs on
// every request, cached verdict or not: the source address, method, named
// profile and rate limit change per request, and the profile set changes
// with the bundle.
func (e *Engine) authorize(p *compiledPolicy, ent *entry, req *Request, res *Result) {
	res.ClientID, res.ProfileID = ent.clientID, ent.profileID
	// The profiles the request names: every line of the header, each a
	// comma-separated list. The usual single name is a substring of the
	// header value, recorded without a copy.
	h := p.opts.RequestedProfileHeader
	lines := 0
	if h != "" {
		for _, hd := range req.Headers {
			if hd.Key == h {
				lines++
				if lines == 1 {
					res.RequestedProfile = clip(normalizeList(hd.Value))
				}
			}
		}
	}
	if lines > 1 {
		res.RequestedProfile = requestedRecord(req.Headers, h)
	}
	if !p.opts.ProfileAuthorization {
		return
	}
	for i := 0; lines > 0 && i < len(req.Headers); i++ {
		if req.Headers[i].Key != h {
			continue
		}
		for rest, more := req.Headers[i].Value, true; more; {
			var r string
			r, rest, more = strings.Cut(rest, ",")
			if r = strings.TrimSpace(r); r != ent.profileID {
				e.deny(p, res, ReasonProfileMismatch, 403, "the request names profile "+strconv.Quote(clip(r))+
					" but the certificate is bound to "+strconv.Quote(ent.profileID)+" ("+p.opts.ProfileIDField.String()+")", nil)
				return
			}
		}
	}
	set := e.profiles.Load()
	if ent.profileID == "" {
		e.deny(p, res, ReasonProfileUnknown, 403, "the certificate has no "+p.opts.ProfileIDField.String()+" to bind a profile from", nil)
		return
	}
	var prof *compiledProfile
	if set != nil {
		prof = set.byID[ent.profileID]
	}
	if prof == nil {
		e.deny(p, res, ReasonProfileUnknown, 403, "profile "+strconv.Quote(ent.profileID)+" is not defined in profiles "+set.describe(), nil)
		return
	}
	if len(p.opts.AllowedProfiles) > 0 && !contains(p.opts.AllowedProfiles, prof.ID) {
		e.deny(p, res, ReasonProfileNotAllowed, 403, "profile "+strconv.Quote(prof.ID)+" may not use the routes of policy "+strconv.Quote(p.name)+
			" (allowedProfiles: "+clip(strings.Join(p.opts.AllowedProfiles, ", "))+")", nil)
		return
	}
	if ent.clientID == "" {
		e.deny(p, res, ReasonClientNotAllowed, 403, "the certificate has no "+p.opts.ClientIDField.String()+" to take the client ID from", nil)
		return
	}
	if !prof.allowsClient(ent.clientID) {
		e.deny(p, res, ReasonClientNotAllowed, 403, "client "+strconv.Quote(ent.clientID)+" is not bound to profile "+strconv.Quote(prof.ID), nil)
		return
	}
	if len(prof.Prefixes) > 0 && !trustedSource(prof.Prefixes, req.source()) {
		e.deny(p, res, ReasonIPNotAllowed, 403, "source "+strconv.Quote(req.source())+" is outside the sourceCIDRs of profile "+strconv.Quote(prof.ID), nil)
		return
	}
	method := req.Method
	if len(prof.Methods) > 0 && prof.allowsMethod(method) {
		// An override names a method the upstream may act on instead.
		for ov := range methodOverrides(req.Headers, req.Path) {
			if ov != "" && !prof.allowsMethod(ov) {
				method = ov
				break
			}
		}
	}
	if !prof.allowsMethod(method) {
		e.deny(p, res, ReasonMethodNotAllowed, 405, "method "+strconv.Quote(clip(method))+" is not allowed by profile "+strconv.Quote(prof.ID),
			[]Header{{"allow", prof.allow}})
		return
	}
	if rl := prof.RateLimit; rl != nil {
		// The key lives in the result's scratch buffer: Allow does not keep it.
		res.keyBuf = append(append(res.keyBuf[:0], prof.limitKey...), ent.clientID...)
		ok, wait := e.limiter.Allow(unsafe.String(unsafe.SliceData(res.keyBuf), len(res.keyBuf)), rl.Requests, prof.window, req.Now)
		if !ok {
			secs := int64((wait + time.Second - 1) / time.Second)
			if secs < 1 {
				secs = 1
			}
			e.deny(p, res, ReasonRateLimited, 429, "client "+strconv.Quote(ent.clientID)+" used its "+strconv.Itoa(rl.Requests)+
				" requests per "+rl.Per+" of profile "+strconv.Quote(prof.ID), []Header{{"retry-after", strconv.FormatInt(secs, 10)}})
			return
		}
	}
}

// deny turns res into an authorization refusal. Nothing of the certificate
// verdict's upstream headers survives: the request never reaches upstream.
func (e *Engine) deny(p *compiledPolicy, res *Result, reason Reason, status int, detail string, extra []Header) {
	res.Action, res.Status, res.Decision, res.Reason = Respond, status, DecisionDeny, reason
	res.Body = problemBody(reason, status)
	hs := make([]Header, 0, 2+len(extra))
	hs = append(hs, Header{"content-type", "application/problem+json"})
	if h := p.opts.Headers.Reason; h != "" {
		hs = append(hs, Header{h, string(reason)})
	}
	res.ResponseHeaders = append(hs, extra...)
	res.SetHeaders = nil
	res.LogLevel = LogInfo
	cache := "mtlsgate.cache.miss"
	if res.CacheHit {
		cache = "mtlsgate.cache.hit"
	}
	res.Metrics = metricNames(DecisionDeny, reason, cache)
	res.detail = detail
}

// SetLimiter replaces the rate limiter (the filter installs one over shared
// data so every worker VM counts against one budget). Call it before the
// engine serves requests.
func (e *Engine) SetLimiter(l Limiter) { e.limiter = l }

// ProfilesVersion describes the profile set in force: "sidecar:<version>",
// "config", or "none".
func (e *Engine) ProfilesVersion() string { return e.profiles.Load().describe() }
