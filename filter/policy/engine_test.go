package policy

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/filter/policy/dn"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

var now = time.Now()

func must[T any](v T, err error) T { return testpki.Must(v, err) }

func TestAllowWritesIdentityHeaders(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{
		CommonName: "client-1", DNSNames: []string{"a.example", "b.example"}, URIs: []string{"spiffe://example/client-1"},
		Serial: big.NewInt(0x0a1b2c),
	}))
	e := newEngine(t, "", []*testpki.Cert{ch.Root})
	r := e.Evaluate(xfccReq(chainXFCC(ch), now))
	expect(t, r, DecisionAllow, "")
	subject := must(dn.Format(ch.Leaf.Cert.RawSubject))
	want := map[string]string{
		"x-mtls-subject":             subject,
		"x-mtls-issuer":              must(dn.Format(ch.Leaf.Cert.RawIssuer)),
		"x-user-sub":                 subject,
		"x-mtls-verification-status": "SUCCESS",
		"x-mtls-serial":              "0A1B2C",
		"x-mtls-san-dns":             "a.example,b.example",
		"x-mtls-san-uri":             "spiffe://example/client-1",
		"x-mtls-not-before":          ch.Leaf.Cert.NotBefore.UTC().Format("2006-01-02T15:04:05Z"),
		"x-mtls-not-after":           ch.Leaf.Cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"),
		"client-cert":                ":" + base64.StdEncoding.EncodeToString(ch.Leaf.DER) + ":",
		"client-cert-chain":          ":" + base64.StdEncoding.EncodeToString(ch.Intermediates[0].DER) + ":",
	}
	for k, v := range want {
		if got, _ := header(r.SetHeaders, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if subject != "CN=client-1" {
		t.Errorf("subject = %q", subject)
	}
	sum := sha256.Sum256(ch.Leaf.DER)
	fp, _ := header(r.SetHeaders, "x-mtls-sha256-fingerprint")
	if len(fp) != 95 || strings.ToUpper(fp) != fp || strings.ReplaceAll(fp, ":", "") != strings.ToUpper(hexOf(sum[:])) {
		t.Errorf("fingerprint %q", fp)
	}
	if _, ok := header(r.SetHeaders, "x-mtls-verification-reason"); ok {
		t.Error("clean success carries a reason header")
	}
	if r.Policy != "p" || r.Metrics[0] != "mtlsgate.decision.allow" {
		t.Errorf("policy %q metrics %v", r.Policy, r.Metrics)
	}
}

func hexOf(b []byte) string {
	s := ""
	for _, c := range b {
		s += string(hexDigits[c>>4]) + string(hexDigits[c&15])
	}
	return s
}

func TestKeyTypesAndDepths(t *testing.T) {
	for _, k := range []testpki.KeyType{testpki.P256, testpki.RSA2048, testpki.RSA4096} {
		for _, depth := range []int{2, 3} {
			if k == testpki.RSA4096 && depth == 3 && testing.Short() {
				continue
			}
			ch := must(testpki.NewChain(k, depth, testpki.Options{}))
			e := newEngine(t, "", []*testpki.Cert{ch.Root})
			r := e.Evaluate(xfccReq(chainXFCC(ch), now))
			if r.Decision != DecisionAllow {
				t.Errorf("%s depth %d: %s %s %s", k, depth, r.Decision, r.Reason, r.Detail())
			}
			other := must(testpki.NewChain(k, depth, testpki.Options{}))
			if r := e.Evaluate(xfccReq(chainXFCC(other), now)); r.Reason != ReasonUntrustedChain {
				t.Errorf("%s depth %d other CA: %s %s", k, depth, r.Decision, r.Reason)
			}
		}
	}
}

func TestReasons(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Root CA", Subject: pkix.Name{Organization: []string{"Example"}, Country: []string{"US"}}}))
	inter := must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing CA", Subject: pkix.Name{Organization: []string{"Example"}, Country: []string{"US"}}}))
	good := must(inter.Issue(testpki.Options{CommonName: "good"}))
	chainOf := func(l *testpki.Cert) string { return xfccFor(l, testpki.PEM(l, inter)) }
	expired := must(inter.Issue(testpki.Options{NotBefore: now.Add(-50 * time.Minute), NotAfter: now.Add(-10 * time.Minute)}))
	future := must(inter.Issue(testpki.Options{NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)}))
	serverOnly := must(inter.Issue(testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	big := must(inter.Issue(testpki.Options{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, 20000)}}}))
	otherRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Root CA", Subject: pkix.Name{Organization: []string{"Example"}, Country: []string{"US"}}}))
	otherInter := must(otherRoot.Issue(testpki.Options{CA: true, CommonName: "Issuing CA", Subject: pkix.Name{Organization: []string{"Example"}, Country: []string{"US"}}}))
	otherLeaf := must(otherInter.Issue(testpki.Options{}))

	e := newEngine(t, "", []*testpki.Cert{root})
	cases := []struct {
		name   string
		xfcc   string
		reason Reason
	}{
		{"no header", "", ReasonNoCertificate},
		{"element without cert", `Hash=abc;Subject="CN=x";URI=`, ReasonNoCertificate},
		{"garbage cert", `Cert="not-a-pem"`, ReasonMalformedCertificate},
		{"bad der", `Cert="` + url.PathEscape("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") + `"`, ReasonMalformedCertificate},
		{"truncated pem", `Cert="` + url.PathEscape(string(good.PEM()[:300])) + `"`, ReasonMalformedCertificate},
		{"unterminated quote", `Cert="abc`, ReasonMalformedCertificate},
		{"missing intermediate", xfccFor(good, nil), ReasonUntrustedChain},
		{"other CA same names", xfccFor(otherLeaf, testpki.PEM(otherLeaf, otherInter)), ReasonUntrustedChain},
		{"expired leaf", chainOf(expired), ReasonExpired},
		{"not yet valid", chainOf(future), ReasonNotYetValid},
		{"serverAuth only", chainOf(serverOnly), ReasonWrongKeyUsage},
		{"too large", chainOf(big), ReasonCertificateTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expect(t, e.Evaluate(xfccReq(c.xfcc, now)), DecisionDeny, c.reason)
		})
	}
	expect(t, e.Evaluate(xfccReq(chainOf(good), now)), DecisionAllow, "")

	t.Run("allowExpired tolerates the leaf only", func(t *testing.T) {
		ea := newEngine(t, `{"allowExpiredCertificates":true}`, []*testpki.Cert{root})
		r := ea.Evaluate(xfccReq(chainOf(expired), now))
		expect(t, r, DecisionAllow, ReasonExpired)
		if v, _ := header(r.SetHeaders, "x-mtls-verification-reason"); v != "EXPIRED" {
			t.Errorf("reason header %q", v)
		}
		if _, ok := header(r.SetHeaders, "x-user-sub"); !ok {
			t.Error("accepted expired certificate lost its identity")
		}
		// An expired intermediate must fail even with allowExpiredCertificates.
		oldInter := must(root.Issue(testpki.Options{CA: true, NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)}))
		leaf := must(oldInter.Issue(testpki.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(24 * time.Hour)}))
		expect(t, ea.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, oldInter)), now)), DecisionDeny, ReasonExpired)
		// ...and an expired leaf under an expired intermediate too.
		leaf2 := must(oldInter.Issue(testpki.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-2 * time.Hour)}))
		expect(t, ea.Evaluate(xfccReq(xfccFor(leaf2, testpki.PEM(leaf2, oldInter)), now)), DecisionDeny, ReasonExpired)
		// An expired root as well.
		oldRoot := must(testpki.NewRoot(testpki.Options{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)}))
		leaf3 := must(oldRoot.Issue(testpki.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-2 * time.Hour)}))
		er := newEngine(t, `{"allowExpiredCertificates":true}`, []*testpki.Cert{oldRoot})
		expect(t, er.Evaluate(xfccReq(xfccFor(leaf3, nil), now)), DecisionDeny, ReasonExpired)
		// Not-yet-valid is not expired.
		expect(t, ea.Evaluate(xfccReq(chainOf(future), now)), DecisionDeny, ReasonNotYetValid)
	})
	t.Run("requireClientAuthUsage false", func(t *testing.T) {
		en := newEngine(t, `{"requireClientAuthUsage":false}`, []*testpki.Cert{root})
		expect(t, en.Evaluate(xfccReq(chainOf(serverOnly), now)), DecisionAllow, "")
	})
	t.Run("maxCertificateBytes", func(t *testing.T) {
		en := newEngine(t, `{"maxCertificateBytes":32768}`, []*testpki.Cert{root})
		expect(t, en.Evaluate(xfccReq(chainOf(big), now)), DecisionAllow, "")
		en = newEngine(t, `{"maxCertificateBytes":300}`, []*testpki.Cert{root})
		expect(t, en.Evaluate(xfccReq(chainOf(good), now)), DecisionDeny, ReasonCertificateTooLarge)
	})
	t.Run("certIssuerDN", func(t *testing.T) {
		ok := newEngine(t, `{"certIssuerDN":"cn=issuing ca,  O=EXAMPLE, C=us"}`, []*testpki.Cert{root})
		expect(t, ok.Evaluate(xfccReq(chainOf(good), now)), DecisionAllow, "")
		bad := newEngine(t, `{"certIssuerDN":"CN=Root CA,O=Example,C=US"}`, []*testpki.Cert{root})
		expect(t, bad.Evaluate(xfccReq(chainOf(good), now)), DecisionDeny, ReasonIssuerDNMismatch)
		order := newEngine(t, `{"certIssuerDN":"C=US,O=Example,CN=Issuing CA"}`, []*testpki.Cert{root})
		expect(t, order.Evaluate(xfccReq(chainOf(good), now)), DecisionDeny, ReasonIssuerDNMismatch)
		// A list, for a rotation that renames the issuing CA: any of them.
		either := newEngine(t, `{"certIssuerDN":["CN=Issuing CA 2027,O=Example,C=US","cn=issuing ca,O=Example,C=US"]}`, []*testpki.Cert{root})
		r := either.Evaluate(xfccReq(chainOf(good), now))
		expect(t, r, DecisionAllow, "")
		if sub, _ := header(r.SetHeaders, "x-user-sub"); sub == "" {
			t.Error("a client of either issuer keeps its identity")
		}
		neither := newEngine(t, `{"certIssuerDN":["CN=Issuing CA 2027,O=Example,C=US","CN=Root CA,O=Example,C=US"]}`, []*testpki.Cert{root})
		r = neither.Evaluate(xfccReq(chainOf(good), now))
		expect(t, r, DecisionDeny, ReasonIssuerDNMismatch)
		if !strings.Contains(r.LogLine(), "any of 2") || !strings.Contains(r.LogLine(), "certificate issuer CN=Issuing CA,O=Example,C=US does not match") {
			t.Errorf("mismatch log line does not say a list was compared: %s", r.LogLine())
		}
	})
	t.Run("intermediate as the only anchor", func(t *testing.T) {
		ei := newEngine(t, "", []*testpki.Cert{inter})
		expect(t, ei.Evaluate(xfccReq(xfccFor(good, nil), now)), DecisionAllow, "")
		expect(t, ei.Evaluate(xfccReq(chainOf(good), now)), DecisionAllow, "")
		r := ei.Evaluate(xfccReq(chainOf(good), now))
		if _, ok := header(r.SetHeaders, "client-cert-chain"); ok {
			t.Error("the anchor itself must not be reported as a presented intermediate")
		}
		if v, _ := header(r.SetHeaders, "x-mtls-issuer"); v != "CN=Issuing CA,O=Example,C=US" {
			t.Errorf("issuer = %q", v)
		}
	})
	t.Run("envoy mode skips chain checks only", func(t *testing.T) {
		cfg := must(ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{"chainVerification":"envoy","revocationCheck":"off","certIssuerDN":"CN=Issuing CA,O=Example,C=US"}`) + `]}`)))
		ee := NewEngine(cfg)
		expect(t, ee.Evaluate(xfccReq(xfccFor(good, nil), now)), DecisionAllow, "")
		expect(t, ee.Evaluate(xfccReq(xfccFor(otherLeaf, nil), now)), DecisionAllow, "") // Envoy vouched for the chain
		expect(t, ee.Evaluate(xfccReq(chainOf(expired), now)), DecisionDeny, ReasonExpired)
		expect(t, ee.Evaluate(xfccReq(chainOf(big), now)), DecisionDeny, ReasonCertificateTooLarge)
		expect(t, ee.Evaluate(xfccReq(chainOf(serverOnly), now)), DecisionDeny, ReasonWrongKeyUsage)
		wrongIssuer := must(root.Issue(testpki.Options{}))
		expect(t, ee.Evaluate(xfccReq(xfccFor(wrongIssuer, nil), now)), DecisionDeny, ReasonIssuerDNMismatch)
	})
}

func TestRevocation(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	inter := must(root.Issue(testpki.Options{CA: true}))
	good := must(inter.Issue(testpki.Options{}))
	revoked := must(inter.Issue(testpki.Options{}))
	x := func(l *testpki.Cert, i *testpki.Cert) string { return xfccFor(l, testpki.PEM(l, i)) }
	freshCRL := must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	rootCRL := must(root.CRL(testpki.CRLOptions{}))
	staleCRL := must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}, ThisUpdate: now.Add(-48 * time.Hour), NextUpdate: now.Add(-time.Hour)}))

	e := newEngine(t, "", []*testpki.Cert{root}, freshCRL, rootCRL)
	expect(t, e.Evaluate(xfccReq(x(good, inter), now)), DecisionAllow, "")
	expect(t, e.Evaluate(xfccReq(x(revoked, inter), now)), DecisionDeny, ReasonRevoked)

	t.Run("revoked intermediate", func(t *testing.T) {
		inter2 := must(root.Issue(testpki.Options{CA: true}))
		leaf := must(inter2.Issue(testpki.Options{}))
		crl := must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{inter2}, Number: big.NewInt(2)}))
		er := newEngine(t, `{"allowRevokedCertificates":true}`, []*testpki.Cert{root}, crl, freshCRL)
		// allowRevokedCertificates covers the client's certificate, not a CA.
		expect(t, er.Evaluate(xfccReq(x(leaf, inter2), now)), DecisionDeny, ReasonRevoked)
		r := er.Evaluate(xfccReq(x(revoked, inter), now))
		expect(t, r, DecisionAllow, ReasonRevoked)
		if v, _ := header(r.SetHeaders, "x-mtls-verification-reason"); v != "REVOKED" {
			t.Errorf("reason header %q", v)
		}
		if _, ok := header(r.SetHeaders, "x-user-sub"); !ok {
			t.Error("allowRevokedCertificates: identity missing")
		}
	})
	t.Run("stale CRL strict", func(t *testing.T) {
		es := newEngine(t, `{"revocationCheck":"strict"}`, []*testpki.Cert{root}, staleCRL)
		expect(t, es.Evaluate(xfccReq(x(good, inter), now)), DecisionDeny, ReasonRevocationUnknown)
		expect(t, es.Evaluate(xfccReq(x(revoked, inter), now)), DecisionDeny, ReasonRevoked)
		// The default is strict.
		ed := newEngine(t, "", []*testpki.Cert{root}, staleCRL)
		expect(t, ed.Evaluate(xfccReq(x(good, inter), now)), DecisionDeny, ReasonRevocationUnknown)
	})
	t.Run("stale CRL best-effort", func(t *testing.T) {
		eb := newEngine(t, `{"revocationCheck":"best-effort"}`, []*testpki.Cert{root}, staleCRL)
		r := eb.Evaluate(xfccReq(x(good, inter), now))
		expect(t, r, DecisionAllow, ReasonRevocationUnknown)
		if v, _ := header(r.SetHeaders, "x-mtls-verification-status"); v != "SUCCESS" {
			t.Errorf("status %q", v)
		}
		expect(t, eb.Evaluate(xfccReq(x(revoked, inter), now)), DecisionDeny, ReasonRevoked)
	})
	t.Run("stale flag from the sidecar", func(t *testing.T) {
		b := mustBundle(t, []*testpki.Cert{root}, freshCRL)
		b.CRLs[0].Stale = true
		es := newEngine(t, "", []*testpki.Cert{root})
		if err := es.SetBundle(b); err != nil {
			t.Fatal(err)
		}
		expect(t, es.Evaluate(xfccReq(x(good, inter), now)), DecisionDeny, ReasonRevocationUnknown)
	})
	t.Run("off", func(t *testing.T) {
		eo := newEngine(t, `{"revocationCheck":"off"}`, []*testpki.Cert{root}, freshCRL)
		expect(t, eo.Evaluate(xfccReq(x(revoked, inter), now)), DecisionAllow, "")
	})
	t.Run("requireCRL", func(t *testing.T) {
		eq := newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, freshCRL)
		expect(t, eq.Evaluate(xfccReq(x(good, inter), now)), DecisionDeny, ReasonRevocationUnknown) // root published none
		eq = newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, freshCRL, rootCRL)
		expect(t, eq.Evaluate(xfccReq(x(good, inter), now)), DecisionAllow, "")
	})
	t.Run("CRL signed by another key is ignored", func(t *testing.T) {
		impostor := must(testpki.NewRoot(testpki.Options{RawSubject: inter.Cert.RawSubject}))
		forged := must(impostor.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{good}}))
		ef := newEngine(t, "", []*testpki.Cert{root}, forged)
		expect(t, ef.Evaluate(xfccReq(x(good, inter), now)), DecisionAllow, "")
		ef = newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, forged, rootCRL)
		expect(t, ef.Evaluate(xfccReq(x(good, inter), now)), DecisionDeny, ReasonRevocationUnknown)
	})
	t.Run("CRL of an anchor with a bad signature rejects the bundle", func(t *testing.T) {
		impostor := must(testpki.NewRoot(testpki.Options{RawSubject: root.Cert.RawSubject}))
		es := newEngine(t, "", []*testpki.Cert{root})
		if err := es.SetBundle(mustBundle(t, []*testpki.Cert{root}, must(impostor.CRL(testpki.CRLOptions{})))); err == nil {
			t.Fatal("bundle with a forged anchor CRL accepted")
		}
		if !es.HasBundle() {
			t.Fatal("last good bundle dropped")
		}
	})
}

func TestUnauthenticatedMode(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "c"}))
	other := must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "intruder"}))
	e := newEngine(t, `{"allowUnauthenticatedRequests":true}`, []*testpki.Cert{ch.Root})

	r := e.Evaluate(xfccReq("", now))
	expect(t, r, DecisionAllowUnauthenticated, ReasonNoCertificate)
	if v, _ := header(r.SetHeaders, "x-mtls-verification-status"); v != "NONE" {
		t.Errorf("status %q", v)
	}
	r = e.Evaluate(xfccReq(chainXFCC(other), now))
	expect(t, r, DecisionAllowUnauthenticated, ReasonUntrustedChain)
	if v, _ := header(r.SetHeaders, "x-mtls-verification-status"); v != "FAILED" {
		t.Errorf("status %q", v)
	}
	if v, _ := header(r.SetHeaders, "x-mtls-verification-reason"); v != "UNTRUSTED_CHAIN" {
		t.Errorf("reason %q", v)
	}
	if v, _ := header(r.SetHeaders, "x-mtls-subject"); v != "CN=intruder" {
		t.Errorf("metadata subject %q", v)
	}
	for _, k := range []string{"x-user-sub", "client-cert", "client-cert-chain"} {
		if _, ok := header(r.SetHeaders, k); ok {
			t.Errorf("unverified certificate got %s", k)
		}
	}
	r = e.Evaluate(xfccReq(chainXFCC(ch), now))
	expect(t, r, DecisionAllow, "")
	if v, _ := header(r.SetHeaders, "x-user-sub"); v != "CN=c" {
		t.Errorf("x-user-sub %q", v)
	}
}

func TestSpoofedHeadersStripped(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	e := newEngine(t, `{"headerNames":{"userSub":"x-consumer-id","subject":"x-client-dn"}}`, []*testpki.Cert{ch.Root})
	spoof := []Header{{"x-user-sub", "admin"}, {"x-consumer-id", "admin"}, {"x-client-dn", "CN=admin"}, {"x-mtls-anything", "1"},
		{"x-mtls-verification-status", "SUCCESS"}, {"client-cert", ":AAAA:"}, {"client-cert-chain", ":AAAA:"}, {"x-mtls-anything", "2"}}
	for _, xfcc := range []string{"", chainXFCC(ch)} {
		r := e.Evaluate(xfccReq(xfcc, now, spoof...))
		want := []string{"x-user-sub", "x-consumer-id", "x-client-dn", "x-mtls-anything", "x-mtls-verification-status", "client-cert", "client-cert-chain"}
		if strings.Join(r.RemoveHeaders, " ") != strings.Join(want, " ") {
			t.Errorf("RemoveHeaders = %v, want %v", r.RemoveHeaders, want)
		}
		for _, h := range r.RemoveHeaders {
			if h == "x-forwarded-client-cert" || h == "user-agent" {
				t.Errorf("removed %s", h)
			}
		}
	}
	r := e.Evaluate(xfccReq(chainXFCC(ch), now))
	if v, _ := header(r.SetHeaders, "x-consumer-id"); v == "" {
		t.Error("renamed identity header not written")
	}
	if _, ok := header(r.SetHeaders, "x-user-sub"); ok {
		t.Error("default name written despite rename")
	}
	strip := strings.Join(e.StripHeaders(), " ")
	for _, k := range []string{"x-consumer-id", "x-client-dn", "x-user-sub", "x-mtls-subject", "client-cert"} {
		if !strings.Contains(strip, k) {
			t.Errorf("StripHeaders lacks %s", k)
		}
	}
	// Passthrough routes strip too.
	cfg := must(ParseConfig([]byte(`{"policies":[` + policyJSON("p", "") + `],"routes":[{"pathPrefix":"/secure","policy":"p"}],"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`)))
	r = NewEngine(cfg).Evaluate(xfccReq("", now, Header{"x-user-sub", "admin"}))
	if r.Decision != DecisionPassthrough || len(r.RemoveHeaders) != 1 {
		t.Errorf("passthrough: %s %v", r.Decision, r.RemoveHeaders)
	}
}

func TestSources(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{}))
	cas := []*testpki.Cert{ch.Root}
	leafB64 := base64.StdEncoding.EncodeToString(ch.Leaf.DER)
	interB64 := base64.StdEncoding.EncodeToString(ch.Intermediates[0].DER)
	req := func(src string, hs ...Header) *Request {
		return &Request{Method: "GET", Path: "/", Headers: hs, SourceAddress: src, Now: now}
	}
	t.Run("rfc9440", func(t *testing.T) {
		e := newEngine(t, `{"certificateSource":"rfc9440","trustedSourceCIDRs":["10.0.0.0/8","2001:db8::/32"]}`, cas)
		r := e.Evaluate(req("10.1.2.3:443", Header{"client-cert", ":" + leafB64 + ":"}, Header{"client-cert-chain", ":" + interB64 + ":"}))
		expect(t, r, DecisionAllow, "")
		if !contains(r.RemoveHeaders, "client-cert") {
			t.Error("input client-cert must be replaced by the verified one")
		}
		expect(t, e.Evaluate(req("[2001:db8::1]:443", Header{"client-cert", ":" + leafB64 + ":"}, Header{"client-cert-chain", ":" + interB64 + ":;x=1 , :" + interB64 + ":"})), DecisionAllow, "")
		expect(t, e.Evaluate(req("10.1.2.3:443", Header{"client-cert", ":" + leafB64 + ":"})), DecisionDeny, ReasonUntrustedChain)
		expect(t, e.Evaluate(req("10.1.2.3:443", Header{"client-cert", ":" + leafB64 + ":"}, Header{"client-cert", ":" + leafB64 + ":"})), DecisionDeny, ReasonMalformedCertificate)
		expect(t, e.Evaluate(req("10.1.2.3:443", Header{"client-cert", leafB64})), DecisionDeny, ReasonMalformedCertificate)
		expect(t, e.Evaluate(req("10.1.2.3:443")), DecisionDeny, ReasonNoCertificate)
		r = e.Evaluate(req("198.51.100.7:443", Header{"client-cert", ":" + leafB64 + ":"}, Header{"client-cert-chain", ":" + interB64 + ":"}))
		expect(t, r, DecisionDeny, ReasonUntrustedSource)
		if !contains(r.RemoveHeaders, "client-cert") || !contains(r.RemoveHeaders, "client-cert-chain") {
			t.Errorf("untrusted certificate headers kept: %v", r.RemoveHeaders)
		}
		expect(t, e.Evaluate(req("garbage", Header{"client-cert", ":" + leafB64 + ":"})), DecisionDeny, ReasonUntrustedSource)
		expect(t, e.Evaluate(req("[::ffff:10.0.0.1]:80", Header{"client-cert", ":" + leafB64 + ":"}, Header{"client-cert-chain", ":" + interB64 + ":"})), DecisionAllow, "")
	})
	t.Run("header formats", func(t *testing.T) {
		pemChain := string(ch.Presented())
		for _, c := range []struct{ format, value string }{
			{"url-encoded-pem", envoyURLEncode(pemChain)},
			{"url-encoded-pem", url.PathEscape(pemChain)}, // AWS ALB keeps +=/ literal
			{"pem", strings.ReplaceAll(pemChain, "\n", " ")},
			{"pem", strings.ReplaceAll(pemChain, "\n", "\t")},
			{"base64-der", leafB64 + "," + interB64},
		} {
			e := newEngine(t, `{"certificateSource":"header","certificateHeader":"X-Amzn-Mtls-Clientcert","certificateHeaderFormat":"`+c.format+`","trustedSourceCIDRs":["192.0.2.0/24"]}`, cas)
			expect(t, e.Evaluate(req("192.0.2.10:1", Header{"x-amzn-mtls-clientcert", c.value})), DecisionAllow, "")
			r := e.Evaluate(req("192.0.2.10:1"))
			expect(t, r, DecisionDeny, ReasonNoCertificate)
			r = e.Evaluate(req("203.0.113.1:1", Header{"x-amzn-mtls-clientcert", c.value}))
			expect(t, r, DecisionDeny, ReasonUntrustedSource)
			if !contains(r.RemoveHeaders, "x-amzn-mtls-clientcert") {
				t.Errorf("%s: spoofed certificate header kept", c.format)
			}
			expect(t, e.Evaluate(req("192.0.2.10:1", Header{"x-amzn-mtls-clientcert", "%%%garbage"})), DecisionDeny, ReasonMalformedCertificate)
			expect(t, e.Evaluate(req("192.0.2.10:1", Header{"x-amzn-mtls-clientcert", c.value}, Header{"x-amzn-mtls-clientcert", c.value})), DecisionDeny, ReasonMalformedCertificate)
		}
	})
	t.Run("xfcc element selection", func(t *testing.T) {
		other := must(testpki.NewChain(testpki.P256, 3, testpki.Options{}))
		appended := chainXFCC(other) + "," + chainXFCC(ch)
		e := newEngine(t, "", cas)
		expect(t, e.Evaluate(xfccReq(appended, now)), DecisionAllow, "")
		ef := newEngine(t, `{"xfccElement":"first","trustedSourceCIDRs":["192.0.2.0/24"]}`, cas)
		fromProxy := xfccReq(appended, now)
		fromProxy.SourceAddress = "192.0.2.7:443"
		expect(t, ef.Evaluate(fromProxy), DecisionDeny, ReasonUntrustedChain)
		// From anyone but the proxy in front, the first element is the
		// client's own: not read, and not passed on.
		direct := xfccReq(chainXFCC(ch)+","+chainXFCC(other), now)
		direct.SourceAddress = "198.51.100.7:443"
		r0 := ef.Evaluate(direct)
		expect(t, r0, DecisionDeny, ReasonUntrustedSource)
		if !contains(r0.RemoveHeaders, "x-forwarded-client-cert") {
			t.Errorf("xfcc from an untrusted peer kept: remove %v", r0.RemoveHeaders)
		}
		// Two header lines are one comma-joined list.
		r := e.Evaluate(&Request{Headers: []Header{{"x-forwarded-client-cert", chainXFCC(other)}, {"x-forwarded-client-cert", chainXFCC(ch)}}, Now: now})
		expect(t, r, DecisionAllow, "")
		// Cert= and Chain= disagreeing is malformed.
		mixed := xfccFor(other.Leaf, ch.Presented())
		expect(t, e.Evaluate(xfccReq(mixed, now)), DecisionDeny, ReasonMalformedCertificate)
		dupCert := chainXFCC(ch) + `;Cert="x"`
		expect(t, e.Evaluate(xfccReq(dupCert, now)), DecisionDeny, ReasonMalformedCertificate)
	})
}

func TestBundleLifecycleAndCache(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{NotAfter: now.Add(time.Hour)}))
	cfg := must(ParseConfig([]byte(`{"policies":[` + policyJSON("p", "") + `],"trustBundle":{"cluster":"mtlsgate-sidecar"}}`)))
	if cfg.TrustBundle.Sidecar.Path != "/v1/bundle" || cfg.TrustBundle.Sidecar.Refresh != 30*time.Second {
		t.Fatalf("sidecar defaults: %+v", cfg.TrustBundle.Sidecar)
	}
	e := NewEngine(cfg)
	if e.HasBundle() {
		t.Fatal("bundle before SetBundle")
	}
	r := e.Evaluate(xfccReq(chainXFCC(ch), now))
	expect(t, r, DecisionDeny, ReasonTrustBundleUnavailable)
	if r.Status != 503 {
		t.Fatalf("status %d", r.Status)
	}
	if err := e.SetBundle(mustBundle(t, []*testpki.Cert{ch.Root})); err != nil {
		t.Fatal(err)
	}
	r = e.Evaluate(xfccReq(chainXFCC(ch), now))
	expect(t, r, DecisionAllow, "")
	if r.CacheHit {
		t.Fatal("first evaluation reported as cached")
	}
	r = e.Evaluate(xfccReq(chainXFCC(ch), now))
	if !r.CacheHit || r.Decision != DecisionAllow || r.Metrics[len(r.Metrics)-1] != "mtlsgate.cache.hit" {
		t.Fatalf("repeat not served from cache: %+v", r)
	}
	// A bad bundle keeps the last good one and its cache.
	if err := e.SetBundle(&bundleWithGarbage); err == nil {
		t.Fatal("garbage bundle accepted")
	}
	if r = e.Evaluate(xfccReq(chainXFCC(ch), now)); !r.CacheHit || r.Decision != DecisionAllow {
		t.Fatalf("failed SetBundle disturbed the engine: %s %v", r.Decision, r.CacheHit)
	}
	// The cached verdict ends at the leaf's notAfter.
	r = e.Evaluate(xfccReq(chainXFCC(ch), now.Add(2*time.Hour)))
	expect(t, r, DecisionDeny, ReasonExpired)
	if r.CacheHit {
		t.Fatal("expired certificate served a cached allow")
	}
	// A new bundle without the root drops the cache: the same chain is now untrusted.
	other := must(testpki.NewRoot(testpki.Options{}))
	if err := e.SetBundle(mustBundle(t, []*testpki.Cert{other})); err != nil {
		t.Fatal(err)
	}
	r = e.Evaluate(xfccReq(chainXFCC(ch), now))
	expect(t, r, DecisionDeny, ReasonUntrustedChain)
	if r.CacheHit {
		t.Fatal("verdict survived a bundle change")
	}
}

func TestCacheBounded(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	e := newEngine(t, `{"cacheSize":3}`, []*testpki.Cert{root})
	var leaves []*testpki.Cert
	for i := 0; i < 5; i++ {
		l := must(root.Issue(testpki.Options{}))
		leaves = append(leaves, l)
		e.Evaluate(xfccReq(xfccFor(l, nil), now))
	}
	if n := e.policies[0].cache.len(); n != 3 {
		t.Fatalf("cache holds %d entries, want 3", n)
	}
	if r := e.Evaluate(xfccReq(xfccFor(leaves[0], nil), now)); r.CacheHit {
		t.Fatal("least recently used entry not evicted")
	}
	if r := e.Evaluate(xfccReq(xfccFor(leaves[4], nil), now)); !r.CacheHit {
		t.Fatal("recent entry evicted")
	}
	e0 := newEngine(t, `{"cacheSize":0}`, []*testpki.Cert{root})
	e0.Evaluate(xfccReq(xfccFor(leaves[0], nil), now))
	if r := e0.Evaluate(xfccReq(xfccFor(leaves[0], nil), now)); r.CacheHit || r.Decision != DecisionAllow {
		t.Fatal("cacheSize 0 still caches")
	}
}

func TestRoutes(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg := must(ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("soft", `{"allowUnauthenticatedRequests":true}`) + `],
	"routes":[{"path":"/admin","methods":["post"],"policy":"strict","name":"admin-write"},{"pathPrefix":"/api/","policy":"soft"},{"pathPrefix":"/admin","policy":"strict"}],
	"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`)))
	e := NewEngine(cfg)
	for _, c := range []struct {
		method, path, decision, policy, route string
	}{
		{"POST", "/admin?x=1", DecisionDeny, "strict", "admin-write"},
		{"GET", "/admin", DecisionDeny, "strict", "/admin"},
		{"GET", "/admin/users", DecisionDeny, "strict", "/admin"},
		{"GET", "/api/v1", DecisionAllowUnauthenticated, "soft", "/api/"},
		{"GET", "/public", DecisionPassthrough, "", ""},
	} {
		r := e.Evaluate(&Request{Method: c.method, Path: c.path, Now: now})
		if r.Decision != c.decision || r.Policy != c.policy || r.Route != c.route {
			t.Errorf("%s %s: %s %s %s, want %s %s %s", c.method, c.path, r.Decision, r.Policy, r.Route, c.decision, c.policy, c.route)
		}
	}
}

func TestEvaluateChain(t *testing.T) {
	ch := must(testpki.NewChain(testpki.RSA2048, 3, testpki.Options{}))
	e := newEngine(t, "", []*testpki.Cert{ch.Root})
	r, err := e.EvaluateChain("p", [][]byte{ch.Leaf.DER, ch.Intermediates[0].DER}, &Request{Now: now})
	if err != nil || r.Decision != DecisionAllow {
		t.Fatalf("%v %+v", err, r)
	}
	r, _ = e.EvaluateChain("", [][]byte{ch.Leaf.DER}, &Request{Now: now})
	if r.Reason != ReasonUntrustedChain {
		t.Fatalf("reason %s", r.Reason)
	}
	if _, err := e.EvaluateChain("nope", nil, &Request{Now: now}); err == nil {
		t.Fatal("unknown policy accepted")
	}
}

func TestInMTLSNamespace(t *testing.T) {
	for _, k := range []string{"", "x", "x-mtls", "x-mtls-", "x-mtls-subject", "x-mtlsa", "y-mtls-a", "x-mtl-s", "x-user-sub", "X-MTLS-A"} {
		if got, want := inMTLSNamespace(k), strings.HasPrefix(k, "x-mtls-"); got != want {
			t.Errorf("inMTLSNamespace(%q) = %v, want %v", k, got, want)
		}
	}
}

// countingSource is an AddressSource that records how often it was asked.
type countingSource struct {
	addr  string
	asked int
}

func (c *countingSource) SourceAddress() string { c.asked++; return c.addr }

// TestSourceAddressOnDemand: the address is read only when a decision or a
// log line needs it, at most once per request, and then decides exactly as
// an address handed over up front.
func TestSourceAddressOnDemand(t *testing.T) {
	ch := must(testpki.NewChain(testpki.P256, 3, testpki.Options{}))
	cas := []*testpki.Cert{ch.Root}
	lazy := func(r *Request, addr string) (*Request, *countingSource) {
		src := &countingSource{addr: addr}
		r.SourceAddress, r.Source = "", src
		return r, src
	}

	t.Run("xfcc verdict does not need it", func(t *testing.T) {
		e := newEngine(t, "", cas)
		for i := 0; i < 2; i++ { // a miss, then a cached hit
			req, src := lazy(xfccReq(chainXFCC(ch), now), "203.0.113.9:51000")
			r := e.Evaluate(req)
			if r.Decision != DecisionAllow || src.asked != 0 {
				t.Fatalf("request %d: %s, source read %d times", i, r.Decision, src.asked)
			}
			// A log line still carries it, read then.
			if !strings.Contains(r.LogLine(), `"source":"203.0.113.9:51000"`) || src.asked != 1 {
				t.Fatalf("log line %s after %d reads", r.LogLine(), src.asked)
			}
			r.LogLine()
			if src.asked != 1 {
				t.Fatalf("source read %d times for two log lines", src.asked)
			}
		}
	})

	t.Run("unprotected route of an xfcc-only config does not need it", func(t *testing.T) {
		cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", "") + `],"routes":[{"pathPrefix":"/api","policy":"p"}],"trustBundle":` + inlineBundle(cas) + `}`))
		if err != nil {
			t.Fatal(err)
		}
		e := NewEngine(cfg)
		req, src := lazy(&Request{Method: "GET", Path: "/health", Headers: []Header{{"x-user-sub", "forged"}}, Now: now}, "203.0.113.9:51000")
		r := e.Evaluate(req)
		if r.Decision != DecisionPassthrough || !contains(r.RemoveHeaders, "x-user-sub") || src.asked != 0 {
			t.Fatalf("%s, removes %v, source read %d times", r.Decision, r.RemoveHeaders, src.asked)
		}
	})

	t.Run("header source asks once and decides by it", func(t *testing.T) {
		e := newEngine(t, `{"certificateSource":"header","certificateHeader":"x-cert","trustedSourceCIDRs":["10.0.0.0/8"]}`, cas)
		cert := Header{"x-cert", envoyURLEncode(string(ch.Leaf.PEM()) + string(ch.Presented()))}
		for _, c := range []struct {
			addr   string
			reason Reason
		}{{"10.1.2.3:443", ""}, {"198.51.100.7:443", ReasonUntrustedSource}} {
			req, src := lazy(&Request{Method: "GET", Path: "/", Headers: []Header{cert}, Now: now}, c.addr)
			r := e.Evaluate(req)
			if r.Reason != c.reason || src.asked != 1 {
				t.Fatalf("%s: reason %q (want %q), source read %d times", c.addr, r.Reason, c.reason, src.asked)
			}
			r.LogLine()
			if src.asked != 1 {
				t.Fatalf("%s: source read again for the log line", c.addr)
			}
		}
	})
}
