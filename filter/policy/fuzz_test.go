package policy

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// The fuzz targets drive the whole engine with attacker-controlled header
// values: nothing may panic (a trap in Envoy kills the VM for every later
// request) and every result must be one of the documented shapes.

type fuzzEnv struct {
	ch                  *testpki.Chain
	xfcc, rfc, hdr, b64 *Engine
}

var (
	fuzzOnce sync.Once
	fuzzE    fuzzEnv
)

func env() *fuzzEnv {
	fuzzOnce.Do(func() {
		ch := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{DNSNames: []string{"c.example"}}))
		crl := testpki.Must(ch.Intermediates[0].CRL(testpki.CRLOptions{}))
		mk := func(opts string) *Engine {
			cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", opts) + `],"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}, crl) + `}`))
			if err != nil {
				panic(err)
			}
			return NewEngine(cfg)
		}
		fuzzE = fuzzEnv{ch: ch,
			xfcc: mk(`{"cacheSize":16}`),
			rfc:  mk(`{"certificateSource":"rfc9440","trustedSourceCIDRs":["10.0.0.0/8","192.0.2.0/24"],"cacheSize":16}`),
			hdr:  mk(`{"certificateSource":"header","certificateHeader":"x-cert","certificateHeaderFormat":"url-encoded-pem","trustedSourceCIDRs":["10.0.0.0/8","192.0.2.0/24"],"allowUnauthenticatedRequests":true}`),
			b64:  mk(`{"certificateSource":"header","certificateHeader":"x-cert","certificateHeaderFormat":"base64-der","trustedSourceCIDRs":["10.0.0.0/8","192.0.2.0/24"]}`),
		}
	})
	return &fuzzE
}

var knownReasons = map[Reason]bool{"": true, ReasonNoCertificate: true, ReasonMalformedCertificate: true, ReasonUntrustedChain: true,
	ReasonExpired: true, ReasonNotYetValid: true, ReasonRevoked: true, ReasonRevocationUnknown: true, ReasonIssuerDNMismatch: true,
	ReasonWrongKeyUsage: true, ReasonCertificateTooLarge: true, ReasonUntrustedSource: true}

func checkResult(t *testing.T, r *Result) {
	t.Helper()
	if !knownReasons[r.Reason] {
		t.Fatalf("unknown reason %q", r.Reason)
	}
	switch r.Decision {
	case DecisionAllow:
		if _, ok := header(r.SetHeaders, "x-user-sub"); !ok {
			t.Fatal("allow without identity")
		}
	case DecisionDeny:
		if !json.Valid(r.Body) || r.Status != 401 {
			t.Fatalf("bad denial %d %s", r.Status, r.Body)
		}
	case DecisionAllowUnauthenticated:
		if _, ok := header(r.SetHeaders, "x-user-sub"); ok {
			t.Fatal("unauthenticated request got an identity")
		}
	default:
		t.Fatalf("decision %q", r.Decision)
	}
	if !json.Valid([]byte(r.LogLine())) {
		t.Fatalf("log line not JSON: %s", r.LogLine())
	}
	for _, h := range r.SetHeaders {
		for i := 0; i < len(h.Value); i++ {
			if h.Value[i] < 0x20 || h.Value[i] == 0x7f {
				t.Fatalf("header %s carries control byte: %q", h.Key, h.Value)
			}
		}
	}
}

func FuzzXFCC(f *testing.F) {
	e := env()
	f.Add(chainXFCC(e.ch))
	f.Add(chainXFCC(e.ch) + "," + xfccFor(e.ch.Leaf, nil))
	f.Add(`By=spiffe://x;Hash=00;Subject="CN=a,O=b";URI=;DNS=a;DNS=b`)
	f.Fuzz(func(t *testing.T, v string) {
		r := e.xfcc.Evaluate(&Request{Headers: []Header{{"x-forwarded-client-cert", v}, {"x-mtls-subject", v}}, Now: time.Now()})
		checkResult(t, r)
		if len(r.RemoveHeaders) != 1 {
			t.Fatalf("spoofed header not removed: %v", r.RemoveHeaders)
		}
	})
}

func FuzzRFC9440(f *testing.F) {
	e := env()
	f.Add(":"+base64.StdEncoding.EncodeToString(e.ch.Leaf.DER)+":", ":"+base64.StdEncoding.EncodeToString(e.ch.Intermediates[0].DER)+":")
	f.Add(":AAAA:", ":AAAA:;a=1, :BBBB:")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, cert, chain string) {
		checkResult(t, e.rfc.Evaluate(&Request{Headers: []Header{{"client-cert", cert}, {"client-cert-chain", chain}, {"client-cert-chain", chain}}, SourceAddress: "10.0.0.1:1", Now: time.Now()}))
	})
}

func FuzzHeaderFormat(f *testing.F) {
	e := env()
	f.Add(envoyURLEncode(string(e.ch.Presented())))
	f.Add(base64.StdEncoding.EncodeToString(e.ch.Leaf.DER) + "," + base64.StdEncoding.EncodeToString(e.ch.Intermediates[0].DER))
	f.Add("-----BEGIN CERTIFICATE----- AAAA -----END CERTIFICATE-----")
	f.Fuzz(func(t *testing.T, v string) {
		for _, eng := range []*Engine{e.hdr, e.b64} {
			checkResult(t, eng.Evaluate(&Request{Headers: []Header{{"x-cert", v}}, SourceAddress: "192.0.2.1:9", Now: time.Now()}))
		}
	})
}

// FuzzRoutePath: no path traps the engine or makes it do unbounded work,
// and no path that a model upstream reads as under the protected /admin/
// (escapes decoded with net/url as many times as they keep decoding, dot
// segments and slashes resolved by path.Clean, ASCII case folded: an
// implementation independent of routePath) gets past it to the open
// catch-all unauthenticated. The engine reads four rounds of decoding and
// refuses a path with an escape left, so a model that decodes without that
// bound still finds every reading it misses. The model leaves ";" and "\\"
// alone; paths with either are only run.
func FuzzRoutePath(f *testing.F) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],
	"routes":[{"pathPrefix":"/admin/","policy":"strict"},{"pathPrefix":"/","policy":"open"}],"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		f.Fatal(err)
	}
	e := NewEngine(cfg)
	for _, p := range []string{"/admin/x", "//admin/x", "/%61dmin/x", "/public/../admin/x", "/ADMIN/x", "/admin;x/y", `/admin\x`,
		"/%2561dmin/x", "/%25%36%31dmin/x", "/admin%00/x", "/adm%00in/x", "/admin%3Bfoo/x", "/%C5%BFdmin/x", "/public/%252e%252e/admin/x",
		"/files/100%25", "/files/50%25off", "/%", "/%%", "/%2", "/%252525", "/admin?%00", strings.Repeat("%25", 64) + "/admin",
		"/%252561dmin/x", "/%25252561dmin/x", "/%2525252561dmin/x", "/%C0%AE%C0%AE/admin/x", "/%" + strings.Repeat("25", 64) + "61dmin/x"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		p = "/" + strings.TrimPrefix(p, "/")
		r := e.Evaluate(&Request{Method: "GET", Path: p, Now: time.Now()})
		if r.Reason == ReasonAmbiguousPath {
			if r.Status != 400 || !json.Valid(r.Body) || !json.Valid([]byte(r.LogLine())) {
				t.Fatalf("bad refusal %d %s", r.Status, r.Body)
			}
			return
		}
		checkResult(t, r)
		if r.Decision == DecisionAllowUnauthenticated && modelReadsAdmin(p) {
			t.Fatalf("%q passes unauthenticated; an upstream reads it under /admin/", p)
		}
	})
}

// modelReadsAdmin reports whether p, decoded any number of times and
// cleaned, is /admin or under /admin/ ignoring ASCII case (see
// FuzzRoutePath).
func modelReadsAdmin(p string) bool {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	// Each decode that changes p shortens it, so len(p) rounds reach the
	// fixed point.
	for range len(p) + 1 {
		if strings.ContainsAny(p, ";\\") {
			return false
		}
		c := []byte(path.Clean(p))
		for i, b := range c {
			if b >= 'A' && b <= 'Z' {
				c[i] = b + 'a' - 'A'
			}
		}
		if s := string(c); s == "/admin" || strings.HasPrefix(s, "/admin/") {
			return true
		}
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			return false
		}
		p = d
	}
	return false
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"policies":[` + policyJSON("p", `{"allowUnauthenticatedRequests":true,"certIssuerDN":"CN=a"}`) + `],"trustBundle":{"cluster":"s"}}`))
	f.Add([]byte(`{"policies":[` + policyJSON("p", "") + `],"routes":[{"pathPrefix":"/","policy":"p"}],"trustBundle":{"cluster":"s","path":"/v1/bundle","refreshSeconds":5}}`))
	f.Add([]byte(`{"policies":[{"name":"p"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if len(cfg.Policies) == 0 || (len(cfg.Policies) > 1 && len(cfg.Routes) == 0) {
			t.Fatalf("accepted a configuration that leaves routes ambiguous: %s", data)
		}
		e := NewEngine(cfg)
		r := e.Evaluate(&Request{Method: "GET", Path: "/", Now: time.Now()})
		if r.Decision == DecisionAllow {
			t.Fatalf("request without a certificate allowed by %s", data)
		}
	})
}

func FuzzBundle(f *testing.F) {
	e := env()
	f.Add([]byte(inlineBundle([]*testpki.Cert{e.ch.Root}, testpki.Must(e.ch.Root.CRL(testpki.CRLOptions{})))))
	f.Add([]byte(`{"format":1,"version":"v","caCertificates":[{"id":"a","pem":"x"}],"crls":[{"pem":"y","stale":true}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bundle.Parse(data)
		if err != nil {
			return
		}
		cfg, _ := ParseConfig([]byte(`{"policies":[` + policyJSON("p", "") + `],"trustBundle":{"cluster":"s"}}`))
		eng := NewEngine(cfg)
		if err := eng.SetBundle(b); err != nil {
			if eng.HasBundle() {
				t.Fatal("rejected bundle installed")
			}
			return
		}
		checkResult(t, eng.Evaluate(&Request{Headers: []Header{{"x-forwarded-client-cert", chainXFCC(e.ch)}}, Now: time.Now()}))
	})
}
