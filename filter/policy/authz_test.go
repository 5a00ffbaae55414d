package policy

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// authzPKI: one root and an intermediate, and leaves of the shapes the
// identity and profile tests need.
type authzPKI struct {
	root, inter                       *testpki.Cert
	acme, other, noOU, spiffe, oidSub *testpki.Cert
}

var (
	authzOnce sync.Once
	authzP    *authzPKI
)

func theAuthzPKI() *authzPKI {
	authzOnce.Do(func() {
		m := testpki.Must[*testpki.Cert]
		p := &authzPKI{}
		p.root = m(testpki.NewRoot(testpki.Options{Key: testpki.P256, CommonName: "Authz Root"}))
		p.inter = m(p.root.Issue(testpki.Options{Key: testpki.P256, CA: true, CommonName: "authz-ca"}))
		leaf := func(o testpki.Options) *testpki.Cert { o.Key = testpki.P256; return m(p.inter.Issue(o)) }
		p.acme = leaf(testpki.Options{Subject: pkix.Name{CommonName: "acme-mobile", OrganizationalUnit: []string{"partner-prod"}, Organization: []string{"ExampleCorp"}},
			DNSNames: []string{"acme.example.org", "alt.example.org"}, URIs: []string{"https://acme.example.org/app", "spiffe://example.org/ns/acme"}})
		p.other = leaf(testpki.Options{Subject: pkix.Name{CommonName: "intruder", OrganizationalUnit: []string{"partner-prod"}}})
		p.noOU = leaf(testpki.Options{Subject: pkix.Name{CommonName: "no-profile"}})
		p.spiffe = leaf(testpki.Options{Subject: pkix.Name{CommonName: "svc"}, URIs: []string{"spiffe://evil.org/ns/x", "spiffe://prod.example.org/ns/orders"}})
		p.oidSub = leaf(testpki.Options{Subject: pkix.Name{CommonName: "device", ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 5}, Value: "SN-4711"}}}})
		authzP = p
	})
	return authzP
}

func (p *authzPKI) xfcc(leaf *testpki.Cert) string { return xfccFor(leaf, testpki.PEM(leaf, p.inter)) }

const partnerProfiles = `[
 {"id":"partner-prod","clients":["acme-mobile","globex-*"],"methods":["GET","POST"],"sourceCIDRs":["203.0.113.0/24","2001:db8::/32"]},
 {"id":"partner-staging","clients":["*"]},
 {"id":"metered","clients":["acme-?obile"],"rateLimit":{"requests":3,"per":"minute"}}
]`

func authzEngine(t testing.TB, options, profiles string) *Engine {
	t.Helper()
	p := theAuthzPKI()
	doc := `{"policies":[` + policyJSON("partners", options) + `],"trustBundle":` + inlineBundle([]*testpki.Cert{p.root})
	if profiles != "" {
		doc += `,"profiles":` + profiles
	}
	cfg, err := ParseConfig([]byte(doc + `}`))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return NewEngine(cfg)
}

func authzReq(method, xfcc, source string, extra ...Header) *Request {
	h := []Header{{":method", method}, {":path", "/orders/123"}}
	if xfcc != "" {
		h = append(h, Header{"x-forwarded-client-cert", xfcc})
	}
	return &Request{Method: method, Path: "/orders/123", Headers: append(h, extra...), SourceAddress: source, Now: time.Now()}
}

func logRecord(t *testing.T, r *Result) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.LogLine()), &m); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, r.LogLine())
	}
	return m
}

func TestIdentityFields(t *testing.T) {
	p := theAuthzPKI()
	fp := fingerprint(p.acme.DER)
	cases := []struct {
		field   string
		extra   string
		leaf    *testpki.Cert
		want    string
		present bool
	}{
		{"CN", "", p.acme, "acme-mobile", true},
		{"cn", "", p.acme, "acme-mobile", true},
		{"OU", "", p.acme, "partner-prod", true},
		{"O", "", p.acme, "ExampleCorp", true},
		{"serial", "", p.acme, serialHex(p.acme.Cert), true},
		{"sha256Fingerprint", "", p.acme, fp, true},
		{"dnsSan", "", p.acme, "acme.example.org", true},
		{"uriSan", "", p.acme, "https://acme.example.org/app", true},
		{"spiffeId", "", p.acme, "spiffe://example.org/ns/acme", true},
		{"spiffeId", `,"spiffeTrustDomains":["prod.example.org"]`, p.spiffe, "spiffe://prod.example.org/ns/orders", true},
		{"spiffeId", `,"spiffeTrustDomains":["prod.example.org"]`, p.acme, "", false},
		{"oid:2.5.4.5", "", p.oidSub, "SN-4711", true},
		{"OU", "", p.noOU, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.field+"/"+tc.leaf.Cert.Subject.CommonName, func(t *testing.T) {
			e := authzEngine(t, `{"clientIdField":"`+tc.field+`"`+tc.extra+`}`, "")
			r := e.Evaluate(authzReq("GET", p.xfcc(tc.leaf), "203.0.113.9:1"))
			expect(t, r, DecisionAllow, "")
			got, ok := header(r.SetHeaders, "x-client-id")
			if ok != tc.present || got != tc.want || r.ClientID != tc.want {
				t.Fatalf("x-client-id = %q (present %v, result %q), want %q (present %v)", got, ok, r.ClientID, tc.want, tc.present)
			}
		})
	}
}

// TestSPIFFEPathChecked: a URI SAN whose path the SPIFFE ID specification
// refuses (dot segments, empty segments, percent-escapes, a trailing slash)
// is no SPIFFE ID, so a client glob spiffe://td/ns/prod/* cannot match
// spiffe://td/ns/prod/../admin; the next URI SAN that is one is taken.
func TestSPIFFEPathChecked(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"clientIdField":"spiffeId"}`, "")
	const ok = "spiffe://example.org/ns/prod/Svc_1.a-b"
	for _, bad := range []string{"/ns/prod/../admin", "/ns/prod/./x", "/ns/prod//x", "/ns/prod/x/", "/ns/prod/%61dmin",
		"/ns/prod/a%2F..%2Fadmin", "/ns/prod/.."} {
		leaf := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "svc"},
			URIs: []string{"spiffe://example.org" + bad, ok}}))
		r := e.Evaluate(authzReq("GET", p.xfcc(leaf), "203.0.113.9:1"))
		if r.ClientID != ok {
			t.Errorf("SANs %s, %s: client ID %q, want %q", bad, ok, r.ClientID, ok)
		}
	}
}

func TestIdentityHeadersRenamedAndSpoofStripped(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"headerNames":{"clientId":"x-partner","profileId":""},"requestedProfileHeader":"x-want-profile"}`, "")
	spoof := []Header{{"x-client-id", "admin"}, {"x-profile-id", "internal"}, {"x-partner", "admin"}, {"x-want-profile", "partner-prod"}}
	for i := 0; i < 2; i++ { // miss, then cached verdict
		r := e.Evaluate(authzReq("GET", p.xfcc(p.acme), "203.0.113.9:1", spoof...))
		expect(t, r, DecisionAllow, "")
		for _, k := range []string{"x-client-id", "x-profile-id", "x-partner", "x-want-profile"} {
			if !contains(r.RemoveHeaders, k) {
				t.Errorf("request %d: client-sent %s not removed (%v)", i, k, r.RemoveHeaders)
			}
		}
		if v, _ := header(r.SetHeaders, "x-partner"); v != "acme-mobile" {
			t.Errorf("x-partner = %q", v)
		}
		if _, ok := header(r.SetHeaders, "x-profile-id"); ok {
			t.Error("profileId header set although renamed to \"\"")
		}
	}
}

func TestProfileDecisions(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"profileAuthorization":"enforce"}`, partnerProfiles)
	src := "203.0.113.9:4000"
	cases := []struct {
		name   string
		req    *Request
		status int
		reason Reason
	}{
		{"bound profile, allowed client", authzReq("GET", p.xfcc(p.acme), src), 0, ""},
		{"names its own profile", authzReq("POST", p.xfcc(p.acme), src, Header{"x-profile-id", "partner-prod"}), 0, ""},
		{"ipv6 source in range", authzReq("GET", p.xfcc(p.acme), "[2001:db8::7]:443"), 0, ""},
		{"names another profile", authzReq("GET", p.xfcc(p.acme), src, Header{"x-profile-id", "partner-staging"}), 403, ReasonProfileMismatch},
		{"names two profiles", authzReq("GET", p.xfcc(p.acme), src, Header{"x-profile-id", "partner-prod, partner-staging"}), 403, ReasonProfileMismatch},
		{"names its own profile on two lines", authzReq("GET", p.xfcc(p.acme), src, Header{"x-profile-id", "partner-prod"}, Header{"x-profile-id", " partner-prod "}), 0, ""},
		{"second line names another", authzReq("GET", p.xfcc(p.acme), src, Header{"x-profile-id", "partner-prod"}, Header{"x-profile-id", "partner-staging"}), 403, ReasonProfileMismatch},
		{"names an empty profile", authzReq("GET", p.xfcc(p.acme), src, Header{"x-profile-id", ""}), 403, ReasonProfileMismatch},
		{"client not bound", authzReq("GET", p.xfcc(p.other), src), 403, ReasonClientNotAllowed},
		{"no OU", authzReq("GET", p.xfcc(p.noOU), src), 403, ReasonProfileUnknown},
		{"source outside", authzReq("GET", p.xfcc(p.acme), "198.51.100.1:4000"), 403, ReasonIPNotAllowed},
		{"unparseable source", authzReq("GET", p.xfcc(p.acme), "garbage"), 403, ReasonIPNotAllowed},
		{"method", authzReq("DELETE", p.xfcc(p.acme), src), 405, ReasonMethodNotAllowed},
		{"no certificate stays 401", authzReq("GET", "", src), 401, ReasonNoCertificate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Evaluate(tc.req)
			if tc.status == 0 {
				expect(t, r, DecisionAllow, "")
				if v, _ := header(r.SetHeaders, "x-profile-id"); v != "partner-prod" {
					t.Fatalf("x-profile-id = %q", v)
				}
				return
			}
			expect(t, r, DecisionDeny, tc.reason)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d", r.Status, tc.status)
			}
			if len(r.SetHeaders) != 0 {
				t.Fatalf("denial carries upstream headers %v", r.SetHeaders)
			}
			if tc.reason == ReasonMethodNotAllowed {
				if a, _ := header(r.ResponseHeaders, "allow"); a != "GET, POST" {
					t.Fatalf("Allow = %q", a)
				}
			}
			rec := logRecord(t, r)
			if rec["reason"] != string(tc.reason) || rec["status"] != float64(tc.status) || rec["detail"] == nil || rec["time"] == nil {
				t.Fatalf("decision record %s", r.LogLine())
			}
			found := false
			for _, m := range r.Metrics {
				found = found || m == "mtlsgate.reason."+strings.ToLower(string(tc.reason))
			}
			if !found {
				t.Fatalf("metrics %v do not count the reason", r.Metrics)
			}
		})
	}
}

// TestAllowedProfiles: a policy's allowedProfiles keep the other profiles
// off its routes (403 PROFILE_NOT_ALLOWED), after the profile is known and
// before the profile's own rules; routes of a policy without the option
// take every profile.
func TestAllowedProfiles(t *testing.T) {
	p := theAuthzPKI()
	staging := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "tester", OrganizationalUnit: []string{"partner-staging"}}}))
	cfg, err := ParseConfig([]byte(`{"policies":[` +
		policyJSON("orders", `{"profileAuthorization":"enforce","allowedProfiles":["partner-prod","metered"]}`) + `,` +
		policyJSON("sandbox", `{"profileAuthorization":"enforce"}`) + `],
	"routes":[{"pathPrefix":"/orders/","policy":"orders"},{"pathPrefix":"/sandbox/","policy":"sandbox"}],
	"trustBundle":` + inlineBundle([]*testpki.Cert{p.root}) + `,"profiles":` + partnerProfiles + `}`))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg)
	src := "203.0.113.9:4000"
	at := func(path string, leaf *testpki.Cert) *Request {
		r := authzReq("GET", p.xfcc(leaf), src)
		r.Path = path
		return r
	}
	expect(t, e.Evaluate(at("/orders/1", p.acme)), DecisionAllow, "")
	r := e.Evaluate(at("/orders/1", staging))
	expect(t, r, DecisionDeny, ReasonProfileNotAllowed)
	if r.Status != 403 || !strings.Contains(string(r.Body), "profile-not-allowed") || !strings.Contains(r.Detail(), `"partner-staging"`) {
		t.Fatalf("denial %d %s (%s)", r.Status, r.Body, r.Detail())
	}
	expect(t, e.Evaluate(at("/sandbox/1", staging)), DecisionAllow, "")
	// An unknown profile is still PROFILE_UNKNOWN, not "not allowed".
	expect(t, e.Evaluate(at("/orders/1", p.noOU)), DecisionDeny, ReasonProfileUnknown)
}

// TestRequestedProfileRecord: the decision record shows the named profiles
// normalized (one comma between names, no spaces), every line included,
// and clipped like every client-supplied value, however many lines come.
func TestRequestedProfileRecord(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"profileAuthorization":"enforce"}`, partnerProfiles)
	src := "203.0.113.9:4000"
	rec := func(extra ...Header) any {
		return logRecord(t, e.Evaluate(authzReq("GET", p.xfcc(p.acme), src, extra...)))["requestedProfile"]
	}
	if got := rec(Header{"x-profile-id", " partner-prod , partner-staging "}); got != "partner-prod,partner-staging" {
		t.Errorf("one line: %v", got)
	}
	if got := rec(Header{"x-profile-id", "partner-prod"}, Header{"x-profile-id", "a, b"}); got != "partner-prod,a,b" {
		t.Errorf("two lines: %v", got)
	}
	var many []Header
	for i := 0; i < 95; i++ {
		many = append(many, Header{"x-profile-id", strings.Repeat("p", 500)})
	}
	if got, _ := rec(many...).(string); len(got) != maxLoggedValue+3 || !strings.HasSuffix(got, "...") {
		t.Errorf("95 long lines recorded as %d bytes: %.40q", len(got), got)
	}
}

// TestMismatchRecord: a valid certificate whose client is bound to one
// profile, naming another, is refused and the record says who and what.
func TestMismatchRecord(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"profileAuthorization":"enforce"}`, partnerProfiles)
	r := e.Evaluate(authzReq("GET", p.xfcc(p.acme), "203.0.113.9:4000", Header{"x-profile-id", "partner-staging"}))
	expect(t, r, DecisionDeny, ReasonProfileMismatch)
	rec := logRecord(t, r)
	want := map[string]any{"decision": "deny", "status": float64(403), "reason": "PROFILE_MISMATCH", "clientId": "acme-mobile",
		"profileId": "partner-prod", "requestedProfile": "partner-staging", "policy": "partners", "method": "GET",
		"source": "203.0.113.9:4000", "fingerprint": fingerprint(p.acme.DER), "profilesVersion": "config", "bundleVersion": e.BundleVersion(),
		"configVersion": e.cfg.Version}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("record %s = %v, want %v", k, rec[k], v)
		}
	}
	if !strings.Contains(rec["detail"].(string), `"partner-staging"`) {
		t.Errorf("detail %q does not name the requested profile", rec["detail"])
	}
}

func TestUnknownProfileAndNoProfiles(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"profileAuthorization":"enforce"}`, `[{"id":"someone-else","clients":["*"]}]`)
	r := e.Evaluate(authzReq("GET", p.xfcc(p.acme), "203.0.113.9:1"))
	expect(t, r, DecisionDeny, ReasonProfileUnknown)
	if !strings.Contains(r.Detail(), `"partner-prod" is not defined`) {
		t.Fatalf("detail %q", r.Detail())
	}
}

func TestRateLimitPerClient(t *testing.T) {
	p := theAuthzPKI()
	for attempt := 0; ; attempt++ {
		e := authzEngine(t, `{"profileAuthorization":"enforce","profileIdField":"O","clientIdField":"CN"}`,
			`[{"id":"ExampleCorp","clients":["acme-?obile"],"rateLimit":{"requests":3,"per":"minute"}}]`)
		start := time.Now()
		var allowed, limited int
		var last *Result
		for i := 0; i < 7; i++ {
			r := e.Evaluate(authzReq("GET", p.xfcc(p.acme), "203.0.113.9:1"))
			switch r.Decision {
			case DecisionAllow:
				allowed++
			default:
				limited++
				last = r
			}
		}
		if start.Unix()/60 != time.Now().Unix()/60 && attempt < 3 {
			continue // the minute turned over mid-run: counts span two windows
		}
		if allowed != 3 || limited != 4 {
			t.Fatalf("allowed %d limited %d, want 3 and 4", allowed, limited)
		}
		expect(t, last, DecisionDeny, ReasonRateLimited)
		ra, _ := header(last.ResponseHeaders, "retry-after")
		if last.Status != 429 || ra == "" || ra == "0" || len(ra) > 2 {
			t.Fatalf("status %d Retry-After %q", last.Status, ra)
		}
		return
	}
}

// TestCASLimiterConcurrent: goroutines sharing one store admit exactly the
// limit, as the filter's VMs sharing Envoy's shared data must.
func TestCASLimiterConcurrent(t *testing.T) {
	{
		l := NewMemoryLimiter()
		now := time.Now()
		const limit, workers, each = 50, 8, 20
		var mu sync.Mutex
		allowed := 0
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if ok, _ := l.Allow("k", limit, time.Minute, now); ok {
						mu.Lock()
						allowed++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if allowed != limit {
			t.Fatalf("allowed %d, want exactly %d", allowed, limit)
		}
		// Two windows on, the budget is whole again.
		for i := 0; i < limit; i++ {
			if ok, _ := l.Allow("k", limit, time.Minute, now.Add(2*time.Minute)); !ok {
				t.Fatalf("request %d two windows later refused", i+1)
			}
		}
	}
}

// TestSlidingWindow walks one client through window boundaries at fixed
// times: the budget spent at the end of one window is not there again at
// the start of the next, and comes back as the old window slides out; each
// refusal's wait is when the next request would fit.
func TestSlidingWindow(t *testing.T) {
	l := NewMemoryLimiter()
	t0 := time.Unix(1_800_000_000/60*60, 0) // a minute's start
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	take := func(sec float64, n int, wantWait time.Duration) {
		t.Helper()
		for i := 0; i < n; i++ {
			if ok, _ := l.Allow("k", 10, time.Minute, at(sec)); !ok {
				t.Fatalf("t=%vs: request %d of %d refused", sec, i+1, n)
			}
		}
		ok, wait := l.Allow("k", 10, time.Minute, at(sec))
		if ok {
			t.Fatalf("t=%vs: request %d allowed", sec, n+1)
		}
		if wait != wantWait {
			t.Fatalf("t=%vs: wait %v, want %v", sec, wait, wantWait)
		}
	}
	// The whole budget at the end of the first window. One request fits
	// again when 10 × (1 − e/60) ≤ 9, i.e. 6 s into the next window.
	take(50, 10, 16*time.Second)
	// A fixed window would admit ten more here.
	take(61, 0, 5*time.Second)
	take(66, 1, 6*time.Second) // 10 × 0.9 + 1 = 10; the next fits at 72 s (10 × 0.8 + 1 + 1)
	// Half the old window gone: 5 of it weigh in, with the one already
	// taken; the next fits when 10 × (1 − e/60) ≤ 4, at 96 s.
	take(90, 4, 6*time.Second)
	// Two windows after the burst, nothing of it is left; a full window's
	// budget makes the next wait for the window after, plus 6 s.
	take(185, 10, 61*time.Second)
}

// TestSlidingWindowStoredValues: values written by the fixed-window counter
// this one replaced ("<index> <count>") still count; values that are not a
// counter start afresh rather than refuse the client.
func TestSlidingWindowStoredValues(t *testing.T) {
	now := time.Unix(1_800_000_000/60*60+30, 0)
	idx := now.UnixNano() / int64(time.Minute)
	for _, c := range []struct {
		stored string
		allows int
	}{
		{itoa(idx) + " 7", 3},
		{itoa(idx) + " 4 7", 1},    // 4 × 0.5 + 7 = 9
		{itoa(idx-1) + " 9 8", 6},  // previous window's 8 weigh 4
		{itoa(idx-2) + " 9 8", 10}, // too old to count
		{itoa(idx+1) + " 0 9", 1},  // another worker's clock is ahead: its window
		{"garbage", 10},            // unreadable: fresh
		{itoa(idx) + " -3 1", 10},  // negative counts are not a counter
		{itoa(idx) + " 1 2 3", 10}, // too many fields
	} {
		s := &MemoryCAS{}
		_, _ = s.Set("k", []byte(c.stored), 0)
		l := &CASLimiter{Store: s}
		n := 0
		for n < 20 {
			if ok, _ := l.Allow("k", 10, time.Minute, now); !ok {
				break
			}
			n++
		}
		if n != c.allows {
			t.Errorf("stored %q: %d allowed, want %d", c.stored, n, c.allows)
		}
	}
}

// TestCASLimiterCreateRace: two writers that both saw the key missing must
// not both count from zero: the second create loses the CAS and recounts.
func TestCASLimiterCreateRace(t *testing.T) {
	s := &racingStore{MemoryCAS: &MemoryCAS{}}
	l := &CASLimiter{Store: s}
	now := time.Now()
	s.beforeFirstSet = func() {
		// Another VM creates the key between our get and our set.
		_, _ = s.MemoryCAS.Set("k", []byte(itoa(now.UnixNano()/int64(time.Minute))+" 0 1"), 0)
	}
	if ok, _ := l.Allow("k", 2, time.Minute, now); !ok {
		t.Fatal("first request refused")
	}
	v, _, _, _ := s.Get("k")
	if !strings.HasSuffix(string(v), " 2") {
		t.Fatalf("stored %q: the concurrent create was overwritten", v)
	}
	if ok, _ := l.Allow("k", 2, time.Minute, now); ok {
		t.Fatal("third request in the window allowed")
	}
}

// racingStore runs a hook once, just before the first Set reaches the store.
type racingStore struct {
	*MemoryCAS
	beforeFirstSet func()
}

func (r *racingStore) Set(k string, v []byte, cas uint32) (bool, error) {
	if f := r.beforeFirstSet; f != nil {
		r.beforeFirstSet = nil
		f()
	}
	return r.MemoryCAS.Set(k, v, cas)
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

type failingStore struct{}

func (failingStore) Get(string) ([]byte, uint32, bool, error) {
	return nil, 0, false, errors.New("boom")
}
func (failingStore) Set(string, []byte, uint32) (bool, error) { return false, errors.New("boom") }

func TestCASLimiterFailsOpen(t *testing.T) {
	var got error
	l := &CASLimiter{Store: failingStore{}, OnError: func(err error) { got = err }}
	if ok, _ := l.Allow("k", 1, time.Second, time.Now()); !ok || got == nil {
		t.Fatalf("store failure: ok=%v err=%v, want allowed and reported", ok, got)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"acme-*", "acme-mobile", true}, {"acme-*", "acme-", true}, {"acme-*", "acm", false},
		{"*-mobile", "acme-mobile", true}, {"a?me", "acme", true}, {"a?me", "ame", false},
		{"*a*b*c*", "xxaxxbxxcxx", true}, {"*a*b*c*", "xxaxxcxxbxx", false}, {"exact", "exact", true}, {"exact", "exact2", false},
		{strings.Repeat("*a", 50) + "b", strings.Repeat("a", 5000), false},
	} {
		if got := globMatch(tc.pat, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %.20q) = %v", tc.pat, tc.s, got)
		}
	}
}

// TestProfilesFromBundle: a bundle carrying profiles replaces the
// configuration's set; a bundle without keeps (or restores) it; a bundle
// whose profiles do not parse is refused whole.
func TestProfilesFromBundle(t *testing.T) {
	p := theAuthzPKI()
	e := authzEngine(t, `{"profileAuthorization":"enforce"}`, `[{"id":"partner-prod","clients":["*"]}]`)
	req := func() *Result { return e.Evaluate(authzReq("GET", p.xfcc(p.acme), "203.0.113.9:1")) }
	expect(t, req(), DecisionAllow, "")
	cas := []bundle.CA{{PEM: string(p.root.PEM())}}
	b := bundle.New(cas, nil, []byte(`[{"id":"partner-prod","clients":["someone-else"]}]`), 7, time.Now())
	if err := e.SetBundle(b); err != nil {
		t.Fatal(err)
	}
	r := req()
	expect(t, r, DecisionDeny, ReasonClientNotAllowed)
	if r.ProfilesVersion != "sidecar:7" || logRecord(t, r)["profilesVersion"] != "sidecar:7" {
		t.Fatalf("profiles version %q", r.ProfilesVersion)
	}
	bad := bundle.New(cas, nil, []byte(`[{"id":"partner-prod"}]`), 8, time.Now())
	if err := e.SetBundle(bad); err == nil || !strings.Contains(err.Error(), "clients") {
		t.Fatalf("bundle with invalid profiles: %v", err)
	}
	expect(t, req(), DecisionDeny, ReasonClientNotAllowed) // still version 7
	if err := e.SetBundle(bundle.New(cas, nil, nil, 0, time.Now())); err != nil {
		t.Fatal(err)
	}
	expect(t, req(), DecisionAllow, "")
	if e.ProfilesVersion() != "config" {
		t.Fatalf("profiles %q after a bundle without profiles", e.ProfilesVersion())
	}
}

func TestDecisionLogAll(t *testing.T) {
	p := theAuthzPKI()
	for _, tc := range []struct {
		opt  string
		want LogLevel
	}{{`{}`, LogDebug}, {`{"decisionLog":"denials"}`, LogDebug}, {`{"decisionLog":"all"}`, LogInfo}} {
		e := authzEngine(t, tc.opt, "")
		for i := 0; i < 2; i++ {
			if r := e.Evaluate(authzReq("GET", p.xfcc(p.acme), "203.0.113.9:1")); r.LogLevel != tc.want {
				t.Errorf("%s: allow logged at %d, want %d", tc.opt, r.LogLevel, tc.want)
			}
		}
		if r := e.Evaluate(authzReq("GET", "", "203.0.113.9:1")); r.LogLevel != LogInfo {
			t.Errorf("%s: denial logged at %d", tc.opt, r.LogLevel)
		}
	}
}

func TestAuthzConfigErrors(t *testing.T) {
	p := theAuthzPKI()
	tb := inlineBundle([]*testpki.Cert{p.root})
	for _, tc := range []struct{ name, doc, mention string }{
		{"bad field", `{"policies":[` + policyJSON("p", `{"clientIdField":"email"}`) + `],"trustBundle":` + tb + `}`, "clientIdField"},
		{"bad oid", `{"policies":[` + policyJSON("p", `{"profileIdField":"oid:x.y"}`) + `],"trustBundle":` + tb + `}`, "profileIdField"},
		{"bad trust domain", `{"policies":[` + policyJSON("p", `{"spiffeTrustDomains":["spiffe://x"]}`) + `],"trustBundle":` + tb + `}`, "spiffeTrustDomains[0]"},
		{"enforce without profiles", `{"policies":[` + policyJSON("p", `{"profileAuthorization":"enforce"}`) + `],"trustBundle":` + tb + `}`, "needs profiles"},
		{"enforce with unauthenticated", `{"policies":[` + policyJSON("p", `{"profileAuthorization":"enforce","allowUnauthenticatedRequests":true}`) + `],"trustBundle":` + tb + `,"profiles":[]}`, "allowUnauthenticatedRequests"},
		{"profile without clients", `{"policies":[` + policyJSON("p", "") + `],"trustBundle":` + tb + `,"profiles":[{"id":"a"}]}`, "profiles[0].clients"},
		{"duplicate profile", `{"policies":[` + policyJSON("p", "") + `],"trustBundle":` + tb + `,"profiles":[{"id":"a","clients":["*"]},{"id":"a","clients":["*"]}]}`, "profiles[1].id"},
		{"bad cidr", `{"policies":[` + policyJSON("p", "") + `],"trustBundle":` + tb + `,"profiles":[{"id":"a","clients":["*"],"sourceCIDRs":["10.0.0.0/33"]}]}`, "sourceCIDRs[0]"},
		{"bad limit", `{"policies":[` + policyJSON("p", "") + `],"trustBundle":` + tb + `,"profiles":[{"id":"a","clients":["*"],"rateLimit":{"requests":5,"per":"hour"}}]}`, "rateLimit.per"},
		{"unknown profile key", `{"policies":[` + policyJSON("p", "") + `],"trustBundle":` + tb + `,"profiles":[{"id":"a","clients":["*"],"method":["GET"]}]}`, "profiles[0].method"},
		{"header clash", `{"policies":[` + policyJSON("p", `{"headerNames":{"clientId":"x-mtls-subject"}}`) + `],"trustBundle":` + tb + `}`, "already used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc))
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %v, want a ConfigError mentioning %q", err, tc.mention)
			}
		})
	}
}

// TestProfilesExample loads policies/profiles.json and the sidecar file
// policies/profiles/profiles.json as shipped: the two define the same set,
// and the plugin configuration behaves as policies/README.md says.
func TestProfilesExample(t *testing.T) {
	p := theAuthzPKI()
	cfgData, err := os.ReadFile("../../policies/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(cfgData)
	if err != nil {
		t.Fatal(err)
	}
	fileData, err := os.ReadFile("../../policies/profiles/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := bundle.ParseProfileFile(fileData)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(cfg.Profiles)
	b, _ := json.Marshal(fromFile)
	if string(a) != string(b) {
		t.Fatalf("the example files define different profiles:\n%s\n%s", a, b)
	}
	e := NewEngine(cfg)
	if err := e.SetBundle(mustBundle(t, []*testpki.Cert{p.root})); err != nil {
		t.Fatal(err)
	}
	src := "203.0.113.9:1"
	expect(t, e.Evaluate(authzReq("POST", p.xfcc(p.acme), src)), DecisionAllow, "")
	expect(t, e.Evaluate(authzReq("GET", p.xfcc(p.acme), src, Header{"x-profile-id", "partner-staging"})), DecisionDeny, ReasonProfileMismatch)
	expect(t, e.Evaluate(authzReq("GET", p.xfcc(p.other), src)), DecisionDeny, ReasonClientNotAllowed)
	expect(t, e.Evaluate(authzReq("PUT", p.xfcc(p.acme), src)), DecisionDeny, ReasonMethodNotAllowed)
	expect(t, e.Evaluate(authzReq("GET", p.xfcc(p.acme), "192.0.2.1:1")), DecisionDeny, ReasonIPNotAllowed)
}
