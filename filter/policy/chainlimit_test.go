package policy

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/filter/policy/certsrc"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestChainLengthLimit: a chain of certsrc.MaxChain certificates verifies
// from every source, and one more is CERTIFICATE_TOO_LARGE, a size limit
// like maxCertificateBytes, with a detail naming the limit; not
// MALFORMED_CERTIFICATE, which tells the operator to look at the proxy.
func TestChainLengthLimit(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{}))
	cas := []*testpki.Cert{ch.Root}
	inter := ch.Intermediates[0]
	// n certificates: the leaf, then the intermediate repeated, which
	// verifies as the two-certificate chain does.
	certs := func(n int) []*testpki.Cert {
		out := []*testpki.Cert{ch.Leaf}
		for len(out) < n {
			out = append(out, inter)
		}
		return out
	}
	pemOf := func(cs []*testpki.Cert) string {
		var b strings.Builder
		for _, c := range cs {
			b.Write(c.PEM())
		}
		return b.String()
	}
	b64 := func(c *testpki.Cert) string { return base64.StdEncoding.EncodeToString(c.DER) }
	req := func(src string, hs ...Header) *Request {
		return &Request{Method: "GET", Path: "/", Headers: hs, SourceAddress: src, Now: now}
	}
	limit := strconv.Itoa(certsrc.MaxChain)
	for _, c := range []struct {
		name, options string
		request       func(cs []*testpki.Cert) *Request
	}{
		{"xfcc Cert and Chain", "", func(cs []*testpki.Cert) *Request {
			return xfccReq(xfccFor(ch.Leaf, []byte(pemOf(cs))), now)
		}},
		{"xfcc Chain only", "", func(cs []*testpki.Cert) *Request {
			v := `Hash=00;Chain="` + envoyURLEncode(pemOf(cs)) + `";Subject="CN=x"`
			return xfccReq(v, now)
		}},
		{"rfc9440", `{"certificateSource":"rfc9440","trustedSourceCIDRs":["10.0.0.0/8"]}`, func(cs []*testpki.Cert) *Request {
			var chain []string
			for _, c := range cs[1:] {
				chain = append(chain, ":"+b64(c)+":")
			}
			// Split over two header lines: the limit counts the whole chain.
			half := len(chain) / 2
			return req("10.0.0.1:443", Header{"client-cert", ":" + b64(cs[0]) + ":"},
				Header{"client-cert-chain", strings.Join(chain[:half], ", ")}, Header{"client-cert-chain", strings.Join(chain[half:], ", ")})
		}},
		{"header url-encoded-pem", `{"certificateSource":"header","certificateHeader":"x-cert","certificateHeaderFormat":"url-encoded-pem","trustedSourceCIDRs":["10.0.0.0/8"]}`, func(cs []*testpki.Cert) *Request {
			return req("10.0.0.1:443", Header{"x-cert", envoyURLEncode(pemOf(cs))})
		}},
		{"header pem", `{"certificateSource":"header","certificateHeader":"x-cert","certificateHeaderFormat":"pem","trustedSourceCIDRs":["10.0.0.0/8"]}`, func(cs []*testpki.Cert) *Request {
			return req("10.0.0.1:443", Header{"x-cert", strings.ReplaceAll(pemOf(cs), "\n", " ")})
		}},
		{"header base64-der", `{"certificateSource":"header","certificateHeader":"x-cert","certificateHeaderFormat":"base64-der","trustedSourceCIDRs":["10.0.0.0/8"]}`, func(cs []*testpki.Cert) *Request {
			var parts []string
			for _, c := range cs {
				parts = append(parts, b64(c))
			}
			return req("10.0.0.1:443", Header{"x-cert", strings.Join(parts, ",")})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(t, c.options, cas)
			expect(t, e.Evaluate(c.request(certs(certsrc.MaxChain))), DecisionAllow, "")
			r := e.Evaluate(c.request(certs(certsrc.MaxChain + 1)))
			expect(t, r, DecisionDeny, ReasonCertificateTooLarge)
			if !strings.Contains(r.Detail(), "more than "+limit+" certificates") {
				t.Errorf("detail does not name the limit: %s", r.Detail())
			}
			// Cached: the second answer is the same verdict.
			expect(t, e.Evaluate(c.request(certs(certsrc.MaxChain+1))), DecisionDeny, ReasonCertificateTooLarge)
		})
	}
}
