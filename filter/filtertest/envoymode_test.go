//go:build !wasip1

package filtertest

import (
	"time"

	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestEnvoyModeRevocation: with chainVerification "envoy" the compiled
// filter checks the client's revocation against the bundle's CRLs itself.
// Envoy is given no CRLs, so a CA without a list keeps its clients (where
// Envoy, given one CA's list, refused every other CA's clients at the
// handshake), and a revoked client is refused on its next request, not only
// at its next handshake.
func TestEnvoyModeRevocation(t *testing.T) {
	p := thePKI(t)
	for _, c := range []struct {
		name    string
		options map[string]any
		leaf    *testpki.Cert
		chain   []byte
		reason  string // "" for forwarded
	}{
		{"revoked", nil, p.revoked, testpki.PEM(p.revoked, p.inter), "REVOKED"},
		{"revoked, allowed by policy", map[string]any{"allowRevokedCertificates": true}, p.revoked, testpki.PEM(p.revoked, p.inter), ""},
		{"good", nil, p.good, testpki.PEM(p.good, p.inter), ""},
		{"CA without a CRL", nil, p.foreign, testpki.PEM(p.foreign), ""},
		{"CA without a CRL, requireCRL", map[string]any{"requireCRL": true}, p.foreign, testpki.PEM(p.foreign), "REVOCATION_UNKNOWN"},
		{"intermediate not sent", nil, p.revoked, testpki.PEM(p.revoked), "UNTRUSTED_CHAIN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := map[string]any{"chainVerification": "envoy"}
			for k, v := range c.options {
				opts[k] = v
			}
			cfg := map[string]any{
				"policies":    []any{policyDoc("mtls", opts)},
				"trustBundle": inlineBundle([]*testpki.Cert{p.root, p.otherRoot}, p.crl),
			}
			_, vm := newPlugin(t, cfg, nil)
			res := do(t, vm, withPeer(request("/", "", xfccHeader(envoyElement(c.leaf, c.chain))), c.leaf))
			if c.reason == "" {
				if res.Forwarded == nil {
					t.Fatalf("refused: %s", res.LocalResponse.Body)
				}
				if sub, _ := header(res.Forwarded.Headers, "x-user-sub"); sub == "" {
					t.Error("forwarded without x-user-sub")
				}
				return
			}
			if res.Forwarded != nil || res.LocalResponse.Status != 401 {
				t.Fatalf("forwarded or not 401: %+v", res.LocalResponse)
			}
			if got := problem(t, res)["reason"]; got != c.reason {
				t.Errorf("reason %v, want %s", got, c.reason)
			}
		})
	}
}

// TestEnvoyModeCraftedChain: the chain in XFCC is the client's choice. A
// revoked intermediate stays refused when the client presents its expired
// earlier certificate (same name and key) first, and a chain padded to the
// limit with CAs named like the issuer, with large keys, is decided without
// trapping the VM.
func TestEnvoyModeCraftedChain(t *testing.T) {
	p := thePKI(t)
	m := testpki.Must[*testpki.Cert]
	now := time.Now()
	oldInter := m(p.root.Issue(testpki.Options{CA: true, RawSubject: p.inter.Cert.RawSubject, Signer: p.inter.Key,
		NotBefore: now.Add(-3 * 365 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}))
	interRevoked := testpki.Must(p.root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{p.inter}}))
	var junk []*testpki.Cert
	for range 6 {
		junk = append(junk, m(testpki.NewRoot(testpki.Options{Key: testpki.RSA4096, CA: true, RawSubject: p.inter.Cert.RawSubject})))
	}
	for _, c := range []struct {
		name   string
		crls   [][]byte
		chain  []*testpki.Cert
		reason string
	}{
		{"expired earlier certificate of a revoked intermediate first", [][]byte{p.crl, interRevoked}, []*testpki.Cert{p.good, oldInter, p.inter}, "REVOKED"},
		{"revoked leaf behind junk", [][]byte{p.crl}, append(append([]*testpki.Cert{p.revoked}, junk...), p.inter), "REVOKED"},
		{"good leaf behind junk", [][]byte{p.crl}, append(append([]*testpki.Cert{p.good}, junk...), p.inter), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := map[string]any{
				"policies":    []any{policyDoc("mtls", map[string]any{"chainVerification": "envoy"})},
				"trustBundle": inlineBundle([]*testpki.Cert{p.root}, c.crls...),
			}
			_, vm := newPlugin(t, cfg, nil)
			start := time.Now()
			res := do(t, vm, withPeer(request("/", "", xfccHeader(envoyElement(c.chain[0], testpki.PEM(c.chain...)))), c.chain[0]))
			t.Logf("decided in %s", time.Since(start))
			if c.reason == "" {
				if res.Forwarded == nil {
					t.Fatalf("refused: %s", res.LocalResponse.Body)
				}
				return
			}
			if res.Forwarded != nil {
				t.Fatal("forwarded")
			}
			if got := problem(t, res)["reason"]; got != c.reason {
				t.Errorf("reason %v, want %s", got, c.reason)
			}
		})
	}
}
