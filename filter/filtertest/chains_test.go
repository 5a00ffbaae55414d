package filtertest

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestKeyTypesAndDepths verifies real chains of each key type and depth in
// the compiled filter.
func TestKeyTypesAndDepths(t *testing.T) {
	for _, k := range []testpki.KeyType{testpki.RSA2048, testpki.RSA4096, testpki.P256} {
		for _, depth := range []int{2, 3} {
			t.Run(k.String()+"/depth"+string(rune('0'+depth)), func(t *testing.T) {
				ch := testpki.Must(testpki.NewChain(k, depth, testpki.Options{CommonName: "client"}))
				cfg := map[string]any{"policies": []any{policyDoc("mtls", nil)}, "trustBundle": inlineBundle([]*testpki.Cert{ch.Root})}
				_, vm := newPlugin(t, cfg, nil)
				res := do(t, vm, request("/", "", xfccHeader(xfccChain(ch))))
				if res.Forwarded == nil {
					t.Fatalf("denied: %s", res.LocalResponse.Body)
				}
				if v, _ := header(res.Forwarded.Headers, "x-mtls-subject"); v != "CN=client" {
					t.Errorf("subject %q", v)
				}
			})
		}
	}
}

// TestAnchorsAndExpiry: an intermediate uploaded as the only anchor verifies
// its leaves; allowExpiredCertificates tolerates an expired leaf but never an
// expired intermediate.
func TestAnchorsAndExpiry(t *testing.T) {
	p := thePKI(t)
	t.Run("intermediate as the only anchor", func(t *testing.T) {
		cfg := map[string]any{"policies": []any{policyDoc("mtls", nil)}, "trustBundle": inlineBundle([]*testpki.Cert{p.inter})}
		_, vm := newPlugin(t, cfg, nil)
		if res := do(t, vm, request("/", "", xfccHeader(xfcc(p.good, p.good.PEM())))); res.Forwarded == nil {
			t.Fatalf("leaf of the anchoring intermediate denied: %s", res.LocalResponse.Body)
		}
		if res := do(t, vm, request("/", "", xfccHeader(p.chainOf(p.foreign)))); res.Forwarded != nil {
			t.Fatal("foreign leaf allowed")
		}
	})

	now := time.Now()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "root"}))
	oldInter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "old intermediate",
		NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)}))
	leaf := testpki.Must(oldInter.Issue(testpki.Options{CommonName: "leaf", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-2 * time.Hour)}))
	expiredLeaf := p.expired
	cfg := map[string]any{"policies": []any{policyDoc("lenient", map[string]any{"allowExpiredCertificates": true})},
		"trustBundle": inlineBundle([]*testpki.Cert{root, p.root})}
	_, vm := newPlugin(t, cfg, nil)
	res := do(t, vm, request("/", "", xfccHeader(p.chainOf(expiredLeaf))))
	if res.Forwarded == nil {
		t.Fatalf("allowExpiredCertificates refused an expired leaf: %s", res.LocalResponse.Body)
	}
	if v, _ := header(res.Forwarded.Headers, "x-mtls-verification-reason"); v != "EXPIRED" {
		t.Errorf("accepted expired leaf not labelled: reason %q", v)
	}
	res = do(t, vm, request("/", "", xfccHeader(xfcc(leaf, append(leaf.PEM(), oldInter.PEM()...)))))
	if res.Forwarded != nil {
		t.Fatal("allowExpiredCertificates let an expired intermediate through")
	}
	if pr := problem(t, res); pr["reason"] != "EXPIRED" {
		t.Errorf("expired intermediate: reason %v", pr["reason"])
	}
}

// TestDuplicateCertificateHeaders: two certificate headers from a front proxy
// are ambiguous and refused, not resolved by guessing.
func TestDuplicateCertificateHeaders(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{"policies": []any{policyDoc("edge", map[string]any{"certificateSource": "rfc9440", "trustedSourceCIDRs": []string{"10.0.0.0/8"}})},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	sf := func(c *testpki.Cert) abi.Header {
		return abi.Header{Key: "client-cert", Value: ":" + base64.StdEncoding.EncodeToString(c.DER) + ":"}
	}
	res := do(t, vm, request("/", "10.0.0.5:443", sf(p.foreign), sf(p.good),
		abi.Header{Key: "client-cert-chain", Value: ":" + base64.StdEncoding.EncodeToString(p.inter.DER) + ":"}))
	if res.Forwarded != nil {
		t.Fatal("duplicate client-cert headers were accepted")
	}
	if pr := problem(t, res); pr["reason"] != "MALFORMED_CERTIFICATE" {
		t.Errorf("reason %v, want MALFORMED_CERTIFICATE", pr["reason"])
	}
}

// TestChainLengthLimit: in the compiled filter, a presented chain one longer
// than the eight certificates read is refused CERTIFICATE_TOO_LARGE, naming
// the limit, from each certificate source; eight verify.
func TestChainLengthLimit(t *testing.T) {
	p := thePKI(t)
	chain := func(n int) []*testpki.Cert {
		out := []*testpki.Cert{p.good}
		for len(out) < n {
			out = append(out, p.inter)
		}
		return out
	}
	pemOf := func(cs []*testpki.Cert) []byte {
		var b []byte
		for _, c := range cs {
			b = append(b, c.PEM()...)
		}
		return b
	}
	sf := func(c *testpki.Cert) string { return ":" + base64.StdEncoding.EncodeToString(c.DER) + ":" }
	for _, c := range []struct {
		name    string
		options map[string]any
		headers func(cs []*testpki.Cert) []abi.Header
	}{
		{"xfcc", nil, func(cs []*testpki.Cert) []abi.Header {
			return []abi.Header{xfccHeader(xfcc(cs[0], pemOf(cs)))}
		}},
		{"rfc9440", map[string]any{"certificateSource": "rfc9440", "trustedSourceCIDRs": []string{"10.0.0.0/8"}}, func(cs []*testpki.Cert) []abi.Header {
			hs := []abi.Header{{Key: "client-cert", Value: sf(cs[0])}}
			for _, c := range cs[1:] {
				hs = append(hs, abi.Header{Key: "client-cert-chain", Value: sf(c)})
			}
			return hs
		}},
		{"header base64-der", map[string]any{"certificateSource": "header", "certificateHeader": "x-cert", "certificateHeaderFormat": "base64-der", "trustedSourceCIDRs": []string{"10.0.0.0/8"}}, func(cs []*testpki.Cert) []abi.Header {
			v := ""
			for i, c := range cs {
				if i > 0 {
					v += ","
				}
				v += base64.StdEncoding.EncodeToString(c.DER)
			}
			return []abi.Header{{Key: "x-cert", Value: v}}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := map[string]any{"policies": []any{policyDoc("mtls", c.options)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}
			_, vm := newPlugin(t, cfg, nil)
			if res := do(t, vm, request("/", "10.0.0.5:443", c.headers(chain(8))...)); res.Forwarded == nil {
				t.Fatalf("chain of 8 denied: %s", res.LocalResponse.Body)
			}
			res := do(t, vm, request("/", "10.0.0.5:443", c.headers(chain(9))...))
			pr := problem(t, res)
			if pr["reason"] != "CERTIFICATE_TOO_LARGE" || res.LocalResponse.Status != 401 {
				t.Fatalf("chain of 9: %d %v, want 401 CERTIFICATE_TOO_LARGE", res.LocalResponse.Status, pr)
			}
			if d, _ := pr["detail"].(string); !strings.Contains(d, "at most 8 certificates") {
				t.Errorf("problem detail does not name the limit: %q", d)
			}
			recs := decisionRecords(t, res.Logs)
			if len(recs) != 1 {
				t.Fatalf("%d decision records", len(recs))
			}
			if d, _ := recs[0]["detail"].(string); !strings.Contains(d, "more than 8 certificates") {
				t.Errorf("decision log detail does not name the limit: %v", recs[0])
			}
		})
	}
}
