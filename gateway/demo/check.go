package demo

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
)

// scenario is one documented request: the curl command a user can paste and
// what the gateway answers.
type scenario struct {
	name    string
	cert    string // demo certificate file, "" for none
	headers map[string]string
	status  int
	reason  string // problem reason of a denial
	expect  string // what the user should see, in words
	// verify checks the upstream's echo of an allowed request.
	verify func(e Echo) error
}

func scenarios() []scenario {
	subject := "CN=" + GoodClientCN + ",OU=engineering,O=" + demoOrg
	return []scenario{
		{name: "good certificate", cert: GoodCert, status: 200,
			headers: map[string]string{"x-user-sub": "admin", "x-mtls-subject": "CN=admin"},
			expect: "200 and the upstream's JSON echo: x-mtls-subject and x-user-sub are \"" + subject + "\" (the spoofed values sent with -H are replaced), " +
				"x-mtls-verification-status SUCCESS, and gatewayClientCertificate shows the outbound certificate the gateway presented",
			verify: func(e Echo) error {
				for k, want := range map[string]string{"X-Mtls-Subject": subject, "X-User-Sub": subject, "X-Mtls-Verification-Status": "SUCCESS"} {
					if got := strings.Join(e.Headers[k], ","); got != want {
						return fmt.Errorf("upstream got %s %q, want %q", k, got, want)
					}
				}
				if !strings.Contains(e.GatewayCert, "CN="+OutboundCN) {
					return fmt.Errorf("upstream saw gateway client certificate %q, want CN=%s", e.GatewayCert, OutboundCN)
				}
				return nil
			}},
		{name: "no certificate", status: 401, reason: "NO_CERTIFICATE",
			expect: "401 application/problem+json with \"reason\": \"NO_CERTIFICATE\""},
		{name: "certificate from another CA", cert: OtherCert, status: 401, reason: "UNTRUSTED_CHAIN",
			expect: "401 application/problem+json with \"reason\": \"UNTRUSTED_CHAIN\""},
		{name: "expired certificate", cert: ExpiredCert, status: 401, reason: "EXPIRED",
			expect: "401 application/problem+json with \"reason\": \"EXPIRED\""},
	}
}

func (d *demo) curl(s scenario) string {
	parts := []string{"curl -sS --cacert " + d.pki.Path(ServerCA)}
	if s.cert != "" {
		parts = append(parts, "--cert "+d.pki.Path(s.cert), "--key "+d.pki.Path(keyFor[s.cert]))
	}
	for _, k := range sortedKeys(s.headers) {
		parts = append(parts, fmt.Sprintf("-H '%s: %s'", k, s.headers[k]))
	}
	return strings.Join(parts, " ") + " " + d.url("/hello")
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (d *demo) printCurls() {
	d.say("Try it (from this directory):")
	for _, s := range scenarios() {
		d.say("")
		d.say("# %s -> %s", s.name, s.expect)
		d.say("%s", d.curl(s))
	}
	d.say("")
	d.say("curl speaks HTTP/2 to the gateway by itself (ALPN); add --http1.1 to any of them for HTTP/1.1, -v to see the TLS handshake.")
	d.say("Manage trust while it runs: %s ca-certificate list --server http://%s --admin-token-file %s", d.o.bin, d.addrs.Admin, d.addrs.TokenFile)
	d.say("")
}

// check runs every scenario over HTTP/1.1 and HTTP/2 with the same files the
// curl commands use.
func (d *demo) check(ctx context.Context) int {
	failed := 0
	results := map[string][]checkResult{}
	for _, s := range scenarios() {
		d.say("$ %s", d.curl(s))
		d.say("  expect: %s", s.expect)
		for _, h2 := range []bool{false, true} {
			proto := "HTTP/1.1"
			if h2 {
				proto = "HTTP/2"
			}
			got, err := d.runScenario(ctx, s, h2)
			if err != nil {
				failed++
				d.say("  FAIL %-8s %v", proto, err)
				results[s.name] = append(results[s.name], checkResult{Protocol: proto, Error: err.Error()})
				continue
			}
			d.say("  ok   %-8s %s", proto, got)
			results[s.name] = append(results[s.name], checkResult{Protocol: proto, OK: true, Got: got})
		}
	}
	d.say("")
	if d.o.json {
		d.report(results)
	}
	if failed > 0 {
		d.say("%d check(s) failed; logs are in %s", failed, d.o.state)
		return 1
	}
	d.say("All checks passed.")
	return 0
}

func (d *demo) runScenario(ctx context.Context, s scenario, h2 bool) (string, error) {
	c, err := d.client(s.cert)
	if err != nil {
		return "", err
	}
	if !h2 {
		c.Transport.(*http.Transport).ForceAttemptHTTP2 = false
		c.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url("/hello"), nil)
	if err != nil {
		return "", err
	}
	for k, v := range s.headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read response: %w", err)
	}
	wantProto := 1
	if h2 {
		wantProto = 2
	}
	if resp.ProtoMajor != wantProto {
		return "", fmt.Errorf("answered over %s", resp.Proto)
	}
	if resp.StatusCode != s.status {
		return "", fmt.Errorf("status %d, want %d: %s", resp.StatusCode, s.status, strings.TrimSpace(string(body)))
	}
	if s.reason != "" {
		var p struct {
			Reason string `json:"reason"`
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			return "", fmt.Errorf("content-type %q, want application/problem+json", ct)
		}
		if err := json.Unmarshal(body, &p); err != nil || p.Reason != s.reason {
			return "", fmt.Errorf("reason %q, want %s: %s", p.Reason, s.reason, strings.TrimSpace(string(body)))
		}
		return fmt.Sprintf("%d reason=%s", resp.StatusCode, p.Reason), nil
	}
	var e Echo
	if err := json.Unmarshal(body, &e); err != nil {
		return "", fmt.Errorf("upstream echo: %v: %s", err, body)
	}
	if s.verify != nil {
		if err := s.verify(e); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d x-mtls-subject=%q gateway-cert=%q", resp.StatusCode, strings.Join(e.Headers["X-Mtls-Subject"], ","), e.GatewayCert), nil
}

// checkResult is one scenario over one protocol, in --output json.
type checkResult struct {
	Protocol string `json:"protocol"`
	OK       bool   `json:"ok"`
	Got      string `json:"got,omitempty"`
	Error    string `json:"error,omitempty"`
}

// report writes --output json's one document: where everything listens, the
// requests to try and, after --check (results non-nil), how each went.
func (d *demo) report(results map[string][]checkResult) {
	type scenarioDoc struct {
		Name    string        `json:"name"`
		Expect  string        `json:"expect"`
		Curl    string        `json:"curl"`
		Results []checkResult `json:"results,omitempty"`
	}
	doc := struct {
		Gateway  string        `json:"gateway"`
		Upstream string        `json:"upstream"`
		Sidecar  sidecarAddrs  `json:"sidecar"`
		State    string        `json:"state"`
		Requests []scenarioDoc `json:"requests"`
		Passed   *bool         `json:"passed,omitempty"`
	}{Gateway: d.url(""), Upstream: "https://" + d.upstreamAddr, Sidecar: d.addrs, State: d.o.state}
	passed := true
	for _, s := range scenarios() {
		r := results[s.name]
		for _, x := range r {
			passed = passed && x.OK
		}
		doc.Requests = append(doc.Requests, scenarioDoc{Name: s.name, Expect: s.expect, Curl: d.curl(s), Results: r})
	}
	if results != nil {
		doc.Passed = &passed
	}
	enc := json.NewEncoder(d.stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}
