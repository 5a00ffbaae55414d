package filtertest

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// FuzzFilter drives the compiled filter in the host with arbitrary request
// headers and an arbitrary source.address property, under each certificate
// source. A trap would fail every later request on that Envoy worker, so the
// VM must never trap, and every request must end in a decision: forwarded,
// or answered locally with a problem. Identity is only ever forwarded with a
// successful verification. The VMs are reused across inputs, as a worker's
// VM is across requests, so state one input leaves behind is exercised too.
func FuzzFilter(f *testing.F) {
	p := thePKI(f)
	sf := func(der []byte) string { return ":" + base64.StdEncoding.EncodeToString(der) + ":" }
	f.Add(uint8(0), "/v1/orders", "x-forwarded-client-cert: "+p.chainOf(p.good), "10.1.2.3:5555")
	f.Add(uint8(0), "/v1/orders", "x-forwarded-client-cert: "+p.chainOf(p.good)+"\nx-user-sub: CN=admin\nX-MTLS-Subject: CN=admin", "")
	f.Add(uint8(1), "/v1/x?y", "client-cert: "+sf(p.good.DER)+"\nclient-cert-chain: "+sf(p.inter.DER), "10.1.2.3:5555")
	f.Add(uint8(1), "/v1/x", "client-cert: "+sf(p.good.DER)+"\nclient-cert: "+sf(p.good.DER), "10.1.2.3")
	f.Add(uint8(2), "/v1/", "x-ssl-client-cert: "+envoyPEMEscaper.Replace(string(p.good.PEM())+string(p.inter.PEM())), "[::ffff:10.1.2.3]:1")
	f.Add(uint8(3), "/public", "x-forwarded-client-cert: "+p.chainOf(p.expired)+",By=x;Cert=\"%%\"", "not an address")
	f.Add(uint8(4), "/v1/orders", "x-forwarded-client-cert: "+p.chainOf(p.good)+"\nx-profile-id: partner-prod\nX-Profile-Id: ,partner-prod ,", "10.1.2.3:5555")
	// Path spellings that reach /v1/ only once escapes are decoded, and
	// literal percents.
	f.Add(uint8(3), "/v1%00/orders", "", "10.1.2.3:5555")
	f.Add(uint8(3), "/v1%3Bx/orders", "", "10.1.2.3:5555")
	f.Add(uint8(3), "/%25761/orders", "", "10.1.2.3:5555")
	f.Add(uint8(3), "/%C5%BF/../v1/orders", "", "10.1.2.3:5555")
	f.Add(uint8(0), "/files/100%25/"+strings.Repeat("%2525", 512), "", "10.1.2.3:5555")
	f.Add(uint8(2), "/public", "trailer x-user-sub: CN=admin\ntrailer x_mtls_subject: CN=admin\ntrailer x-ssl-client-cert: x\ntrailer x-checksum: 1", "10.1.2.3:5555")
	// Compile the module and start every VM before fuzzing: in a fuzz
	// worker each input must finish within 10 s or the worker is killed as
	// deadlocked, and compiling the filter in a coverage-instrumented
	// worker, two at once on a small machine, can take about that long.
	for i := range fuzzConfigs {
		fuzzVM(f, i)
	}
	f.Fuzz(func(t *testing.T, mode uint8, path, rawHeaders, source string) {
		vm := fuzzVM(t, int(mode)%len(fuzzConfigs))
		hs := []abi.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/" + strings.TrimLeft(validValue(path), "/")},
			{Key: ":authority", Value: "api.example.com"}, {Key: ":scheme", Value: "https"}}
		// A line starting "trailer " is a request trailer.
		var ts []abi.Header
		for _, line := range strings.Split(rawHeaders, "\n") {
			line, trailer := strings.CutPrefix(line, "trailer ")
			k, v, ok := strings.Cut(line, ":")
			if !ok || !validToken(k) {
				continue
			}
			h := abi.Header{Key: k, Value: validValue(strings.TrimLeft(v, " "))}
			if trailer {
				ts = append(ts, h)
			} else {
				hs = append(hs, h)
			}
		}
		req := request("/", "10.1.2.3:5555")
		req.Headers = hs
		if len(ts) > 0 {
			req.Body, req.Trailers = []byte("{}"), ts
		}
		req.Properties = map[string][]byte{"source.address": []byte(source)}
		// A request the filter leaves paused never finishes: in Envoy it
		// would hang the client until the stream timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := vm.Do(ctx, req)
		if err != nil || vm.Err() != nil {
			t.Fatalf("request failed: %v (VM: %v)", err, vm.Err())
		}
		switch {
		case res.Forwarded == nil && res.LocalResponse == nil:
			t.Fatal("neither forwarded nor answered")
		case res.LocalResponse != nil:
			if s := res.LocalResponse.Status; s < 400 || s > 599 {
				t.Fatalf("local response status %d", s)
			}
			problem(t, res)
		default:
			st, _ := header(res.Forwarded.Headers, "x-mtls-verification-status")
			if sub, ok := header(res.Forwarded.Headers, "x-user-sub"); ok && st != "SUCCESS" {
				t.Fatalf("x-user-sub %q forwarded with verification status %q", sub, st)
			}
			// Envoy-aware upstreams read XFCC as identity: only a verified one goes on.
			if x, ok := header(res.Forwarded.Headers, "x-forwarded-client-cert"); ok && st != "SUCCESS" {
				t.Fatalf("x-forwarded-client-cert %.60q forwarded with verification status %q", x, st)
			}
			// Identity never travels in a trailer, nor does the certificate
			// input of the configuration's policy (x-ssl-client-cert is
			// one only where a policy reads it).
			for _, h := range res.Forwarded.Trailers {
				k := strings.ReplaceAll(strings.ToLower(h.Key), "_", "-")
				if strings.HasPrefix(k, "x-mtls-") || k == "x-user-sub" || k == "x-forwarded-client-cert" || k == "client-cert" ||
					k == "x-ssl-client-cert" && fuzzConfigs[int(mode)%len(fuzzConfigs)]["certificateHeader"] == "x-ssl-client-cert" {
					t.Fatalf("trailer %s=%.60q reached the upstream", h.Key, h.Value)
				}
			}
		}
	})
}

// fuzzConfigs are the certificate sources the fuzzer switches between.
var fuzzConfigs = []map[string]any{
	{},
	{"certificateSource": "rfc9440", "trustedSourceCIDRs": []string{"10.1.0.0/16"}},
	{"certificateSource": "header", "certificateHeader": "x-ssl-client-cert", "certificateHeaderFormat": "url-encoded-pem", "trustedSourceCIDRs": []string{"10.1.0.0/16"}},
	{"allowUnauthenticatedRequests": true, "cacheSize": 4},
	// Profile rules and a small rate limit run after every verification.
	{"profileAuthorization": "enforce"},
}

// fuzzProfiles bind the shared good leaf (CN=acme-mobile, OU=partner-prod),
// with a limit low enough that the fuzzer reaches 429 too.
var fuzzProfiles = []map[string]any{
	{"id": "partner-prod", "clients": []string{"acme-*"}, "methods": []string{"GET"}, "sourceCIDRs": []string{"10.1.0.0/16"},
		"rateLimit": map[string]any{"requests": 5, "per": "second"}},
}

var (
	fuzzMu  sync.Mutex
	fuzzVMs = map[int]*hosttest.VM{}
)

func fuzzVM(t testing.TB, i int) *hosttest.VM {
	fuzzMu.Lock()
	defer fuzzMu.Unlock()
	if vm := fuzzVMs[i]; vm != nil && vm.Err() == nil {
		return vm
	}
	p := thePKI(t)
	cfg := map[string]any{
		"policies":    []any{policyDoc("mtls", fuzzConfigs[i])},
		"routes":      []any{map[string]any{"pathPrefix": "/v1/", "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}, p.crl),
	}
	if fuzzConfigs[i]["profileAuthorization"] == "enforce" {
		cfg["profiles"] = fuzzProfiles
	}
	plugin := filterModule(t).NewPlugin(hostConfig(mustJSON(t, cfg)))
	vm, err := plugin.NewVM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Shared by every input of this process; Envoy keeps a VM as long.
	fuzzVMs[i] = vm
	return vm
}

// validToken keeps header names Envoy's codecs accept (RFC 9110 tokens).
func validToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// validValue drops the bytes Envoy's codecs refuse in a header value.
func validValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r == 0 || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
