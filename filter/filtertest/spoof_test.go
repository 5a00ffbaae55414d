package filtertest

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// namespace is every request header name the filter owns: whatever a client
// sends under these names must never reach the upstream, and x-user-sub must
// only ever carry a verified identity. x-mtls-* is owned as a prefix.
var namespace = []string{
	"x-mtls-subject", "x-mtls-issuer", "x-mtls-verification-status", "x-mtls-verification-reason",
	"x-mtls-sha256-fingerprint", "x-mtls-forged-extra", "x-user-sub", "client-cert", "client-cert-chain",
	"x-client-id", "x-profile-id",
}

func owned(k string) bool {
	k = cgiName(k)
	if strings.HasPrefix(k, "x-mtls-") {
		return true
	}
	for _, n := range namespace {
		if n == k {
			return true
		}
	}
	return false
}

// cgiName is the name as a CGI-style upstream reads it: case and the
// difference between underscore and dash gone.
func cgiName(k string) string { return strings.ReplaceAll(strings.ToLower(k), "_", "-") }

// spoofCasings are the ways a client spells the headers: Envoy lowercases
// header names before filters run (HTTP/2 requires it; the HTTP/1 codec
// normalizes), which the host mirrors, so every spelling must be caught;
// underscores pass Envoy unless it is told to reject them, and CGI-style
// upstreams read them as dashes.
var spoofCasings = []struct {
	name string
	key  func(string) string
	dup  bool
}{
	{"underscore-dup", func(s string) string { return strings.ReplaceAll(s, "-", "_") }, true},
	{"lower", func(s string) string { return s }, false},
	{"upper-dup", strings.ToUpper, true},
	{"mixed-dup", func(s string) string {
		b := []byte(s)
		for i := 0; i < len(b); i += 2 {
			if b[i] >= 'a' && b[i] <= 'z' {
				b[i] -= 'a' - 'A'
			}
		}
		return string(b)
	}, true},
}

// TestSpoofingMatrix crosses certificate source × source address trust ×
// the client's own TLS certificate × spoofed headers in several spellings ×
// protected or unprotected route × allowUnauthenticatedRequests, and checks
// for every request that no client-sent value in the filter's namespace
// reaches the upstream and that x-user-sub appears exactly when a verified
// certificate came through the configured, trusted channel.
func TestSpoofingMatrix(t *testing.T) {
	p := thePKI(t)
	sf := func(der []byte) string { return ":" + base64.StdEncoding.EncodeToString(der) + ":" }
	goodSubject := "CN=acme-mobile,OU=partner-prod,O=ExampleCorp"
	trustedAddr, untrustedAddr := "10.1.2.3:5555", "198.51.100.9:4000"

	type source struct {
		name    string
		options map[string]any
		// carry puts the presented certificate where this source reads it
		// (nil cert: the client presented none).
		carry func(cert *testpki.Cert) []abi.Header
		// carriers are the header names the source reads; a client may not
		// spoof them (for xfcc Envoy replaces the header itself).
		carriers []string
	}
	sources := []source{
		{"xfcc", map[string]any{}, func(c *testpki.Cert) []abi.Header {
			if c == nil {
				return nil
			}
			return []abi.Header{xfccHeader(p.chainOf(c))}
		}, []string{"x-forwarded-client-cert"}},
		{"rfc9440", map[string]any{"certificateSource": "rfc9440"}, func(c *testpki.Cert) []abi.Header {
			if c == nil {
				return nil
			}
			hs := []abi.Header{{Key: "client-cert", Value: sf(c.DER)}}
			if c.Issuer == p.inter {
				hs = append(hs, abi.Header{Key: "client-cert-chain", Value: sf(p.inter.DER)})
			}
			return hs
		}, []string{"client-cert", "client-cert-chain"}},
		{"header", map[string]any{"certificateSource": "header", "certificateHeader": "x-ssl-client-cert", "certificateHeaderFormat": "url-encoded-pem"},
			func(c *testpki.Cert) []abi.Header {
				if c == nil {
					return nil
				}
				pemChain := string(c.PEM())
				if c.Issuer == p.inter {
					pemChain += string(p.inter.PEM())
				}
				return []abi.Header{{Key: "x-ssl-client-cert", Value: envoyPEMEscaper.Replace(pemChain)}}
			}, []string{"x-ssl-client-cert"}},
	}
	certs := []struct {
		name     string
		cert     *testpki.Cert
		verified bool
	}{{"valid", p.good, true}, {"none", nil, false}, {"foreign", p.foreign, false}, {"expired", p.expired, false}}

	// spoofValue is what the client claims under name. Certificate-shaped
	// headers carry a *valid* certificate for CN=admin, so reading one from
	// the wrong channel would yield an identity and be caught.
	admin := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, CommonName: "admin"}))
	spoofValue := func(name string, i int) string {
		switch name {
		case "client-cert":
			return sf(admin.DER)
		case "client-cert-chain":
			// Valid, but spelled unlike anything the filter writes.
			return sf(p.inter.DER) + ", " + sf(p.inter.DER)
		case "x-forwarded-client-cert":
			return p.chainOf(admin)
		case "x-ssl-client-cert":
			return envoyPEMEscaper.Replace(string(admin.PEM()) + string(p.inter.PEM()))
		}
		return fmt.Sprintf("spoofed-%d-CN=admin", i)
	}

	n := 0
	for _, src := range sources {
		for _, trusted := range []bool{true, false} {
			for _, allowUnauth := range []bool{false, true} {
				opts := map[string]any{"allowUnauthenticatedRequests": allowUnauth}
				if src.name != "xfcc" {
					// XFCC comes from Envoy itself, never from a front proxy.
					opts["trustedSourceCIDRs"] = []string{"10.1.0.0/16"}
				}
				for k, v := range src.options {
					opts[k] = v
				}
				cfg := map[string]any{
					"policies":    []any{policyDoc("mtls", opts)},
					"routes":      []any{map[string]any{"pathPrefix": "/v1/", "policy": "mtls"}},
					"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
				}
				_, vm := newPlugin(t, cfg, nil)
				for _, cc := range certs {
					for _, casing := range spoofCasings {
						for _, path := range []string{"/v1/orders", "/public/info"} {
							name := fmt.Sprintf("%s/trusted=%v/allowUnauth=%v/%s/%s%s", src.name, trusted, allowUnauth, cc.name, casing.name, path)
							addr := untrustedAddr
							if trusted {
								addr = trustedAddr
							}
							// Client-sent headers, then what the trusted
							// channel carries: for xfcc Envoy's SANITIZE_SET
							// has already replaced any client XFCC.
							var hs, ts []abi.Header
							spoofed := map[string]bool{}
							spoofNames := append(append([]string{}, namespace...), "x-forwarded-client-cert")
							if src.name == "header" {
								spoofNames = append(spoofNames, src.carriers...)
							}
							underscored := casing.name == "underscore-dup"
							for i, k := range spoofNames {
								if contains(src.carriers, k) && (src.name == "xfcc" || trusted) && !underscored {
									continue // the trusted channel owns it (never its underscore spelling)
								}
								v := spoofValue(k, i)
								spoofed[v] = true
								hs = append(hs, abi.Header{Key: casing.key(k), Value: v})
								if casing.dup {
									hs = append(hs, abi.Header{Key: casing.key(k), Value: v + "-dup"})
									spoofed[v+"-dup"] = true
								}
							}
							// The same claims as trailers, where the
							// carriers are the client's on every channel.
							for i, k := range append(append([]string{}, spoofNames...), src.carriers...) {
								v := spoofValue(k, i) + "-trailer"
								ts = append(ts, abi.Header{Key: casing.key(k), Value: v})
							}
							if src.name == "xfcc" || trusted {
								hs = append(hs, src.carry(cc.cert)...)
							}
							req := request(path, addr, hs...)
							req.Body, req.Trailers = []byte("{}"), ts
							res := do(t, vm, req)
							n++
							if res.Forwarded != nil {
								for _, h := range res.Forwarded.Trailers {
									if strings.HasSuffix(h.Value, "-trailer") {
										t.Errorf("%s: client trailer %s=%.40q… reached the upstream", name, h.Key, h.Value)
									}
								}
							}
							protected := path == "/v1/orders"
							channelOK := src.name == "xfcc" || trusted
							// From an untrusted address the source's own
							// carrier headers are client-sent too; every
							// route drops them, protected or not.
							ownedHere := func(k string) bool {
								return owned(k) || ((!channelOK || strings.Contains(k, "_")) && contains(src.carriers, cgiName(k)))
							}
							checkSpoof(t, name, res.Forwarded != nil, forwardedHeaders(res), spoofed, ownedHere)
							wantIdentity := protected && channelOK && cc.verified
							sub, hasSub := header(forwardedHeaders(res), "x-user-sub")
							switch {
							case wantIdentity && (!hasSub || sub != goodSubject):
								t.Errorf("%s: verified client forwarded=%v x-user-sub=%q, want %q", name, res.Forwarded != nil, sub, goodSubject)
							case !wantIdentity && hasSub:
								t.Errorf("%s: x-user-sub %q without a verified certificate from a trusted channel", name, sub)
							}
							wantForward := !protected || wantIdentity || allowUnauth
							if (res.Forwarded != nil) != wantForward {
								t.Errorf("%s: forwarded=%v, want %v", name, res.Forwarded != nil, wantForward)
							}
							if !protected && res.Forwarded != nil {
								for _, h := range res.Forwarded.Headers {
									if owned(h.Key) {
										t.Errorf("%s: unprotected route forwarded %s=%q", name, h.Key, h.Value)
									}
								}
							}
						}
					}
				}
				if err := vm.Err(); err != nil {
					t.Fatalf("VM trapped: %v", err)
				}
			}
		}
	}
	if n != 3*2*2*4*4*2 {
		t.Fatalf("matrix ran %d requests", n)
	}
}

func forwardedHeaders(res *hosttest.Result) []abi.Header {
	if res.Forwarded == nil {
		return nil
	}
	return res.Forwarded.Headers
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkSpoof fails if any header the filter owns reached the upstream with a
// value the client sent.
func checkSpoof(t *testing.T, name string, forwarded bool, hs []abi.Header, spoofed map[string]bool, owned func(string) bool) {
	t.Helper()
	if !forwarded {
		return
	}
	for _, h := range hs {
		if owned(h.Key) && spoofed[h.Value] {
			t.Errorf("%s: client-sent %s=%.40q… reached the upstream", name, h.Key, h.Value)
		}
	}
}
