package gateway_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// Authorization through the dev gateway: policies/profiles.json as the plugin
// configuration, profile sets served by a real sidecar and changed with the
// real CLI, real TLS clients whose certificates bind client (CN) and profile
// (OU), and the compiled filter on two workers.

// authzCerts are leaves of the client intermediate, named for the binding
// they carry.
type authzCerts struct {
	acme     *tls.Certificate // acme-mobile in partner-prod: listed, but only from 203.0.113.0/24
	intruder *tls.Certificate // intruder in partner-prod: not listed
	staging  *tls.Certificate // qa-bot in partner-staging: any client, GET only
	teamX    *tls.Certificate // acme-mobile in team-x: no such profile
	meter    *tls.Certificate // meter-1 in loopback-metered (added by the outcome test)
	stranger *tls.Certificate // another CA: fails before authorization
}

func newAuthzCerts(t *testing.T, cp clientPKI) authzCerts {
	leaf := func(cn, ou string) *tls.Certificate {
		c := testpki.Must(cp.inter.Issue(testpki.Options{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}}}))
		return keyPair(t, c, cp.inter)
	}
	return authzCerts{
		acme: leaf("acme-mobile", "partner-prod"), intruder: leaf("intruder", "partner-prod"),
		staging: leaf("qa-bot", "partner-staging"), teamX: leaf("acme-mobile", "team-x"),
		meter: leaf("meter-1", "loopback-metered"), stranger: keyPair(t, cp.stranger),
	}
}

type authzEnv struct {
	sc    *sidecar
	g     *gateway.Gateway
	sp    serverPKI
	up    *upstream
	certs authzCerts
	flog  *syncbuf.Buffer // the filter's log lines (decision records)
}

// newAuthzEnv stores profileFile in the sidecar as its first profile set, then
// starts the gateway on policies/profiles.json with a one-second refresh.
func newAuthzEnv(t *testing.T, profileFile string) *authzEnv {
	t.Helper()
	cp := newClientPKI(t)
	e := &authzEnv{sc: startSidecar(t), sp: newServerPKI(t), certs: newAuthzCerts(t, cp), flog: &syncbuf.Buffer{}}
	e.sc.addCA("client_root", cp.root)
	var set struct{ Version int }
	e.sc.cli(&set, "profile", "set", "--file", profileFile)
	if set.Version != 1 {
		t.Fatalf("first profile set stored as version %d", set.Version)
	}
	b, err := os.ReadFile("../policies/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	// The example polls every 30 s; a test waits for one refresh per change.
	cfg["trustBundle"].(map[string]any)["refreshSeconds"] = 1
	pc, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.up = newEchoUpstream(t, nil)
	e.g, _ = startGateway(t, gateway.Config{
		Wasm: filterWasm(t), PluginConfig: pc, Workers: 2,
		Certificate: e.sp.cert, Upstream: mustURL(t, e.up.srv.URL),
		Clusters: map[string]string{"mtlsgate_sidecar": "http://" + e.sc.addrs.Bundle},
		Log:      io.MultiWriter(e.flog, testWriter{t}),
	})
	return e
}

// req sends one request. A 503 TRUST_BUNDLE_UNAVAILABLE is retried: a worker
// that has not loaded its first bundle answers it before any authorization,
// so it says nothing about the profiles and spends no rate-limit budget.
func (e *authzEnv) req(t *testing.T, cert *tls.Certificate, method string, hdr map[string]string, h2 bool) reply {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := do(t, client(e.sp, cert, h2), method, gwURL(e.g, "/orders"), hdr, nil)
		if r.status != 503 || !strings.Contains(string(r.body), "TRUST_BUNDLE_UNAVAILABLE") {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trust bundle in the filter within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decisions returns the decision records the filter has logged so far.
func (e *authzEnv) decisions(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(e.flog.String(), "\n") {
		i := strings.Index(line, `{"msg":"mtls decision"`)
		if i < 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line[i:]), &m); err != nil {
			t.Fatalf("decision record is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// waitDecision waits for a decision record with every field of want (the
// gateway drains filter logs on a short tick).
func (e *authzEnv) waitDecision(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 10*time.Second, fmt.Sprintf("decision record %v", want), func() (bool, string) {
		recs := e.decisions(t)
		for _, m := range recs {
			ok := true
			for k, v := range want {
				ok = ok && fmt.Sprint(m[k]) == fmt.Sprint(v)
			}
			if ok {
				found = m
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d records", len(recs))
	})
	return found
}

func checkDenied(t *testing.T, r reply, status int, reason string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d %s; body %s", r.status, status, reason, r.body)
	}
	if p := r.problem(t); p.Reason != reason || p.Status != status || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want status %d reason %s with type, title and detail", p, status, reason)
	}
}

// profilesWithMeter is the shipped policies/profiles/profiles.json plus one
// profile a loopback client can reach with a small rate limit: the shipped
// rate-limited profile only admits 203.0.113.0/24 and 2001:db8::/32.
func profilesWithMeter(t *testing.T, limit int) string {
	t.Helper()
	b, err := os.ReadFile("../policies/profiles/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Profiles []any `json:"profiles"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	doc.Profiles = append(doc.Profiles, map[string]any{"id": "loopback-metered", "clients": []string{"meter-*"},
		"sourceCIDRs": []string{"127.0.0.0/8", "::1/128"}, "rateLimit": map[string]any{"requests": limit, "per": "minute"}})
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "profiles.json")
	if err := writeFile(f, out); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAuthorizationOutcomesThroughGateway drives every authorization outcome
// with real TLS clients over HTTP/1.1 and HTTP/2.
func TestAuthorizationOutcomesThroughGateway(t *testing.T) {
	const limit = 3
	e := newAuthzEnv(t, profilesWithMeter(t, limit))
	c := e.certs
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			hits := e.up.count()

			// Allowed, with forged identity headers: the upstream gets the
			// certificate's client and profile, once.
			r := e.req(t, c.staging, "GET", map[string]string{"X-Client-Id": "acme-mobile", "X-Profile-Id": "partner-staging"}, h2)
			if r.status != 200 || r.echo == nil {
				t.Fatalf("qa-bot GET in partner-staging: %d %s", r.status, r.body)
			}
			if h2 && r.proto != "HTTP/2.0" {
				t.Fatalf("proto %s, want HTTP/2.0", r.proto)
			}
			if v := r.echo.Headers["X-Client-Id"]; len(v) != 1 || v[0] != "qa-bot" {
				t.Errorf("upstream x-client-id %q, want only the certificate's qa-bot", v)
			}
			if v := r.echo.Headers["X-Profile-Id"]; len(v) != 1 || v[0] != "partner-staging" {
				t.Errorf("upstream x-profile-id %q, want only the certificate's partner-staging", v)
			}

			for _, tc := range []struct {
				name   string
				cert   *tls.Certificate
				method string
				hdr    map[string]string
				status int
				reason string
			}{
				{"request names a profile its client is not bound to", c.staging, "GET", map[string]string{"X-Profile-Id": "partner-prod", "X-Client-Id": "acme-mobile"}, 403, "PROFILE_MISMATCH"},
				{"certificate binds no defined profile", c.teamX, "GET", map[string]string{"X-Profile-Id": "team-x"}, 403, "PROFILE_UNKNOWN"},
				{"client not in its profile", c.intruder, "GET", map[string]string{"X-Client-Id": "acme-mobile"}, 403, "CLIENT_NOT_ALLOWED"},
				{"source outside the profile's ranges", c.acme, "GET", nil, 403, "IP_NOT_ALLOWED"},
				{"method outside the profile's", c.staging, "POST", nil, 405, "METHOD_NOT_ALLOWED"},
				{"certificate failures stay 401", c.stranger, "GET", map[string]string{"X-Profile-Id": "partner-staging"}, 401, "UNTRUSTED_CHAIN"},
			} {
				r := e.req(t, tc.cert, tc.method, tc.hdr, h2)
				checkDenied(t, r, tc.status, tc.reason)
				if tc.status == 405 {
					if got := r.header.Get("Allow"); got != "GET" {
						t.Errorf("%s: Allow %q, want GET", tc.name, got)
					}
				}
			}
			if got := e.up.count() - hits; got != 1 {
				t.Errorf("upstream saw %d requests, want only the allowed one", got)
			}
		})
	}

	// The decision records say who was refused, for which profile, and under
	// which profile set.
	mismatch := e.waitDecision(t, map[string]any{"reason": "PROFILE_MISMATCH", "clientId": "qa-bot", "profileId": "partner-staging"})
	for k, want := range map[string]any{"decision": "deny", "status": 403, "requestedProfile": "partner-prod",
		"policy": "partner-profiles", "profilesVersion": "sidecar:1", "subject": "CN=qa-bot,OU=partner-staging"} {
		if fmt.Sprint(mismatch[k]) != fmt.Sprint(want) {
			t.Errorf("mismatch record %s = %v, want %v (record %v)", k, mismatch[k], want, mismatch)
		}
	}
	notAllowed := e.waitDecision(t, map[string]any{"reason": "CLIENT_NOT_ALLOWED", "clientId": "intruder", "profileId": "partner-prod", "status": 403})
	if d, _ := notAllowed["detail"].(string); !strings.Contains(d, "intruder") {
		t.Errorf("CLIENT_NOT_ALLOWED record does not name the client in its detail: %v", notAllowed)
	}
	ipRec := e.waitDecision(t, map[string]any{"reason": "IP_NOT_ALLOWED", "clientId": "acme-mobile", "profileId": "partner-prod"})
	if src, _ := ipRec["source"].(string); !strings.HasPrefix(src, "127.0.0.1:") {
		t.Errorf("IP_NOT_ALLOWED record source %q, want the client's loopback address", src)
	}

	// Rate limit: shared by both workers (sequential requests alternate
	// between them). Within one minute exactly the limit; a run that crosses
	// a minute boundary may see a little more (the old minute's count weighs
	// in by the share of it left), never twice.
	t.Run("rate limit", func(t *testing.T) {
		start := time.Now()
		allowed := 0
		var limited reply
		for i := 0; i < 2*limit+1 && limited.status == 0; i++ {
			switch r := e.req(t, c.meter, "GET", nil, false); r.status {
			case 200:
				allowed++
			case 429:
				limited = r
			default:
				t.Fatalf("request %d: %d %s", i+1, r.status, r.body)
			}
		}
		end := time.Now()
		if limited.status == 0 {
			t.Fatalf("%d requests allowed and none refused, limit %d per minute", allowed, limit)
		}
		checkDenied(t, limited, 429, "RATE_LIMITED")
		sameWindow := start.Unix()/60 == end.Unix()/60
		if (sameWindow && allowed != limit) || allowed < limit || allowed >= 2*limit {
			t.Errorf("%d requests allowed before the 429 (limit %d, one window: %v)", allowed, limit, sameWindow)
		}
		// The whole budget spent in this minute: one request fits again a
		// third of the next minute in (3 × (1 − e/60) ≤ 2).
		ra, err := strconv.Atoi(limited.header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 81 || (sameWindow && ra < 20) {
			t.Errorf("Retry-After %q, want the seconds to the end of the minute plus 20", limited.header.Get("Retry-After"))
		}
		e.waitDecision(t, map[string]any{"reason": "RATE_LIMITED", "clientId": "meter-1", "profileId": "loopback-metered", "status": 429})
	})
}

// TestProfileRollbackThroughGateway: a bad binding change pushed with
// `profile set` takes effect in the running gateway, and `profile rollback
// --to-version 1` restores the earlier behaviour, without a restart or an
// Envoy configuration change.
func TestProfileRollbackThroughGateway(t *testing.T) {
	e := newAuthzEnv(t, "../policies/profiles/profiles.json")
	c := e.certs
	state := func() (staging, acme reply) {
		return e.req(t, c.staging, "GET", nil, false), e.req(t, c.acme, "GET", nil, false)
	}
	reasonOf := func(r reply) string {
		var p problemDoc
		_ = json.Unmarshal(r.body, &p)
		return fmt.Sprintf("%d %s", r.status, p.Reason)
	}
	staging, acme := state()
	if staging.status != 200 || reasonOf(acme) != "403 IP_NOT_ALLOWED" {
		t.Fatalf("version 1: qa-bot %s, acme-mobile %s", reasonOf(staging), reasonOf(acme))
	}

	// The mistake: partner-prod opened to loopback, partner-staging dropped.
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := writeFile(bad, []byte(`{"profiles":[{"id":"partner-prod","clients":["acme-mobile"],"methods":["GET"],"sourceCIDRs":["127.0.0.0/8"]}]}`)); err != nil {
		t.Fatal(err)
	}
	var set struct{ Version int }
	e.sc.cli(&set, "profile", "set", "--file", bad)
	if set.Version != 2 {
		t.Fatalf("bad set stored as version %d", set.Version)
	}
	eventually(t, 20*time.Second, "version 2 in force", func() (bool, string) {
		s, a := state()
		return reasonOf(s) == "403 PROFILE_UNKNOWN" && a.status == 200, "qa-bot " + reasonOf(s) + ", acme-mobile " + reasonOf(a)
	})
	e.waitDecision(t, map[string]any{"reason": "PROFILE_UNKNOWN", "clientId": "qa-bot", "profilesVersion": "sidecar:2"})

	var rb struct{ Version, RollbackOf int }
	e.sc.cli(&rb, "profile", "rollback", "--to-version", "1")
	if rb.Version != 3 || rb.RollbackOf != 1 {
		t.Fatalf("rollback answered %+v, want version 3 restoring 1", rb)
	}
	eventually(t, 20*time.Second, "version 1 behaviour restored", func() (bool, string) {
		s, a := state()
		return s.status == 200 && reasonOf(a) == "403 IP_NOT_ALLOWED", "qa-bot " + reasonOf(s) + ", acme-mobile " + reasonOf(a)
	})
	e.waitDecision(t, map[string]any{"reason": "IP_NOT_ALLOWED", "clientId": "acme-mobile", "profilesVersion": "sidecar:3"})
	var hist []struct {
		Version int
		Action  string
		Active  bool
	}
	e.sc.cli(&hist, "profile", "history")
	if len(hist) != 3 || hist[2].Action != "rollback" || !hist[2].Active {
		t.Errorf("history after rollback: %+v", hist)
	}
}
