//go:build !wasip1

package filtertest

// More requests crafted against the compiled filter, each from a defect found
// by probing it: what an upstream would read differently from the filter.

import (
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func digestOf(c *testpki.Cert) string {
	s := sha256.Sum256(c.Cert.Raw)
	return hex.EncodeToString(s[:])
}

// envoyElement is the element Envoy's SANITIZE_SET writes with Istio's
// default details (cert, chain, subject, uri, dns): URI= and DNS= unquoted.
func envoyElement(leaf *testpki.Cert, chain []byte) string {
	parts := []string{"Hash=" + digestOf(leaf), `Cert="` + envoyPEMEscaper.Replace(string(leaf.PEM())) + `"`}
	if chain != nil {
		parts = append(parts, `Chain="`+envoyPEMEscaper.Replace(string(chain))+`"`)
	}
	parts = append(parts, `Subject="CN=`+leaf.Cert.Subject.CommonName+`"`)
	if len(leaf.Cert.URIs) == 0 {
		parts = append(parts, "URI=")
	}
	for _, u := range leaf.Cert.URIs {
		parts = append(parts, "URI="+u.String())
	}
	for _, d := range leaf.Cert.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ";")
}

// TestVerifiedXFCCElementOnly: with uri/dns in XFCC (Istio's defaults), a
// CA-issued certificate whose SAN carries XFCC syntax splits Envoy's element
// in two. The filter verifies the element bound to the connection; the
// upstream must get that element alone, not the injected one naming another
// certificate and subject.
func TestVerifiedXFCCElementOnly(t *testing.T) {
	p := thePKI(t)
	victim := p.good // CN=acme-mobile
	injected := "x,Hash=" + digestOf(victim) + `;Cert="` + envoyPEMEscaper.Replace(string(victim.PEM())) + `";Subject="CN=acme-mobile,OU=partner-prod,O=ExampleCorp";URI=spiffe://example.org/acme`
	attacker := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "mallory"}, DNSNames: []string{injected}}))
	cfg := map[string]any{"policies": []any{policyDoc("mtls", nil)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	x := envoyElement(attacker, append(attacker.PEM(), p.inter.PEM()...))
	res := do(t, vm, withPeer(request("/api/orders", "", xfccHeader(x)), attacker))
	if res.Forwarded == nil {
		t.Fatalf("attacker refused: %s", res.LocalResponse.Body)
	}
	if v, _ := header(res.Forwarded.Headers, "x-user-sub"); v != "CN=mallory" {
		t.Fatalf("x-user-sub %q, want CN=mallory (the filter read the right element)", v)
	}
	if v, ok := header(res.Forwarded.Headers, "x-forwarded-client-cert"); ok && strings.Contains(v, "Hash="+digestOf(victim)) {
		t.Errorf("upstream receives an x-forwarded-client-cert whose last element names the victim's certificate (Hash=%s..., Subject CN=acme-mobile), which the filter never verified for this connection", digestOf(victim)[:16])
	}
}

// TestTrailingSlashRoutes: a route written with a trailing slash covers the
// slashless form, which Express (non-strict routing) and ASP.NET serve from
// the same handlers.
func TestTrailingSlashRoutes(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("mtls", nil)},
		"routes": []any{map[string]any{"pathPrefix": "/admin/", "policy": "mtls"},
			map[string]any{"path": "/settings/", "policy": "mtls"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	for _, path := range []string{"/admin", "/admin?x=1", "/settings", "/settings;x", "/Settings"} {
		if res := do(t, vm, request(path, "")); res.Forwarded != nil {
			t.Errorf("%q reaches the upstream without a certificate (route written with a trailing slash)", path)
		}
	}
}

// TestMethodOverride: Rails, Laravel, Symfony, Spring and Express's
// method-override act on x-http-method-override: the method it names must
// meet its route's policy and the profile's methods.
func TestMethodOverride(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("mtls", nil), policyDoc("prof", map[string]any{"profileAuthorization": "enforce"})},
		"routes": []any{map[string]any{"pathPrefix": "/api/", "methods": []string{"DELETE", "PUT"}, "policy": "mtls"},
			map[string]any{"pathPrefix": "/orders/", "policy": "prof"}},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"*"}, "methods": []string{"GET", "POST"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	if res := do(t, vm, methodRequest("DELETE", "/api/users/7", "")); res.Forwarded != nil {
		t.Fatal("DELETE without a certificate reached the upstream")
	}
	ov := abi.Header{Key: "x-http-method-override", Value: "DELETE"}
	if res := do(t, vm, methodRequest("POST", "/api/users/7", "", ov)); res.Forwarded != nil {
		v, _ := header(res.Forwarded.Headers, "x-http-method-override")
		t.Errorf("POST /api/users/7 with x-http-method-override: DELETE, no certificate: forwarded (override header upstream: %q)", v)
	}
	if res := do(t, vm, withPeer(methodRequest("DELETE", "/orders/7", "", xfccHeader(p.chainOf(p.good))), p.good)); res.Forwarded != nil {
		t.Fatal("profile methods GET, POST: DELETE allowed")
	}
	if res := do(t, vm, withPeer(methodRequest("POST", "/orders/7?_method=DELETE", "", xfccHeader(p.chainOf(p.good)), ov), p.good)); res.Forwarded != nil {
		t.Errorf("profile methods GET, POST: POST with x-http-method-override: DELETE (and ?_method=DELETE) allowed through to the upstream")
	}
}

// TestClientIDUnicodeSpaces: only the whitespace HTTP drops around a value
// (spaces, tabs) is trimmed from an ID; a no-break space is part of it, to the
// upstream and to the profile rules.
func TestClientIDUnicodeSpaces(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"profileAuthorization": "enforce"})},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"admin"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	for _, cn := range []string{"admin\u00a0", "\u3000admin", "admin\u2003"} {
		leaf := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{"partner-prod"}}}))
		res := do(t, vm, withPeer(request("/", "", xfccHeader(p.chainOf(leaf))), leaf))
		if res.Forwarded == nil {
			continue // refused: as expected for a client not named "admin"
		}
		id, _ := header(res.Forwarded.Headers, "x-client-id")
		sub, _ := header(res.Forwarded.Headers, "x-user-sub")
		t.Errorf("CN %q: authorized as profile client \"admin\"; upstream sees x-client-id %q (x-user-sub %q)", cn, id, sub)
	}
}

// TestSANListUnambiguous: SAN headers join the names with commas, so a
// comma inside one name is escaped: one SAN "a,b" must not read as two.
func TestSANListUnambiguous(t *testing.T) {
	p := thePKI(t)
	one := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, CommonName: "one", DNSNames: []string{"a.example.org,admin.example.org"}}))
	two := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, CommonName: "two", DNSNames: []string{"a.example.org", "admin.example.org"}}))
	cfg := map[string]any{"policies": []any{policyDoc("mtls", nil)}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	var got [2]string
	for i, c := range []*testpki.Cert{one, two} {
		res := do(t, vm, withPeer(request("/", "", xfccHeader(p.chainOf(c))), c))
		if res.Forwarded == nil {
			t.Fatalf("%s refused", c.Cert.Subject.CommonName)
		}
		got[i], _ = header(res.Forwarded.Headers, "x-mtls-san-dns")
	}
	if got[0] == got[1] {
		t.Errorf("one SAN %q and two SANs render the same x-mtls-san-dns %q", one.Cert.DNSNames[0], got[0])
	}
}

// TestVerifiedXFCCElementOnlyAppended: under APPEND_FORWARD the header
// starts with whatever the client sent; the upstream gets the verified
// element alone.
func TestVerifiedXFCCElementOnlyAppended(t *testing.T) {
	p := thePKI(t)
	victim := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, CommonName: "admin"}))
	mallory := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, CommonName: "mallory"}))
	cfg := map[string]any{
		"policies": []any{policyDoc("direct", nil),
			policyDoc("behind-cdn", map[string]any{"xfccElement": "first", "trustedSourceCIDRs": []string{"192.0.2.0/24"}})},
		"routes": []any{map[string]any{"pathPrefix": "/partner/", "policy": "behind-cdn"},
			map[string]any{"pathPrefix": "/", "policy": "direct"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	forged := "Hash=" + digestOf(victim) + `;Cert="` + envoyPEMEscaper.Replace(string(victim.PEM())) + `";Subject="CN=admin"`
	x := forged + "," + envoyElement(mallory, append(mallory.PEM(), p.inter.PEM()...))
	res := do(t, vm, withPeer(request("/api/orders", "198.51.100.9:4000", xfccHeader(x)), mallory))
	if res.Forwarded == nil {
		t.Fatalf("mallory refused: %s", res.LocalResponse.Body)
	}
	if v, ok := header(res.Forwarded.Headers, "x-forwarded-client-cert"); ok && strings.HasPrefix(v, "Hash="+digestOf(victim)) {
		t.Errorf("upstream XFCC starts with the client-written element naming CN=admin (x-user-sub is %q)", func() string { s, _ := header(res.Forwarded.Headers, "x-user-sub"); return s }())
	}
}

// TestHeaderSourceUnverifiedNotForwarded: a load balancer's certificate
// header goes upstream only with a certificate the filter verified from it,
// as XFCC does: not with status FAILED under allowUnauthenticatedRequests.
func TestHeaderSourceUnverifiedNotForwarded(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("alb", map[string]any{"certificateSource": "header", "certificateHeader": "x-amzn-mtls-clientcert",
			"trustedSourceCIDRs": []string{"10.0.0.0/8"}, "allowUnauthenticatedRequests": true})},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	forged := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.P256, CommonName: "admin"}))
	enc := strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(string(forged.PEM()))
	res := do(t, vm, request("/api", "10.1.2.3:5000", abi.Header{Key: "x-amzn-mtls-clientcert", Value: enc}))
	if res.Forwarded == nil {
		t.Fatalf("refused")
	}
	st, _ := header(res.Forwarded.Headers, "x-mtls-verification-status")
	if _, ok := header(res.Forwarded.Headers, "x-amzn-mtls-clientcert"); ok {
		t.Errorf("status %s: the unverified certificate (CN=admin, self-signed) reaches the upstream in x-amzn-mtls-clientcert", st)
	}
}

// TestEnvoyModeNoClientCertChain: with chainVerification "envoy" the filter
// does not know which presented CAs Envoy chained through, so none goes
// upstream as a verified intermediate (client-cert-chain).
func TestEnvoyModeNoClientCertChain(t *testing.T) {
	p := thePKI(t)
	fake := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "example-ca", Organization: []string{"Example"}, Country: []string{"US"}}}))
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"chainVerification": "envoy"})}, "trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	x := envoyElement(p.good, append(append(p.good.PEM(), fake.PEM()...), p.inter.PEM()...))
	res := do(t, vm, withPeer(request("/", "", xfccHeader(x)), p.good))
	if res.Forwarded == nil {
		t.Fatalf("refused: %s", res.LocalResponse.Body)
	}
	v, _ := header(res.Forwarded.Headers, "client-cert-chain")
	if strings.Contains(v, sfb(fake.Cert.Raw)) {
		t.Errorf("client-cert-chain carries the client-supplied, unverified self-signed \"example-ca\" (%d bytes of chain)", len(v))
	}
}

func sfb(der []byte) string { return ":" + base64.StdEncoding.EncodeToString(der) + ":" }

// TestFirstElementIsTheProxysOwn: with xfccElement "first" behind a proxy
// that uses mTLS to Envoy, a client without a certificate leaves only the
// element Envoy wrote about the proxy: that is no client certificate, not
// the proxy authenticated as the client.
func TestFirstElementIsTheProxysOwn(t *testing.T) {
	p := thePKI(t)
	proxy := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "edge-proxy", OrganizationalUnit: []string{"infra"}}}))
	cfg := map[string]any{
		"policies":    []any{policyDoc("behind-edge", map[string]any{"xfccElement": "first", "trustedSourceCIDRs": []string{"192.0.2.0/24"}})},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	// Envoy with APPEND_FORWARD and nothing arriving: its own element only.
	x := envoyElement(proxy, append(proxy.PEM(), p.inter.PEM()...))
	res := do(t, vm, withPeer(request("/api/orders", "192.0.2.10:40000", xfccHeader(x)), proxy))
	if res.Forwarded != nil {
		sub, _ := header(res.Forwarded.Headers, "x-user-sub")
		st, _ := header(res.Forwarded.Headers, "x-mtls-verification-status")
		t.Errorf("a client without a certificate, behind the edge proxy, is forwarded as %s x-user-sub %q (the proxy's own certificate)", st, sub)
	}
}

// TestUnderscoreXFCCAlwaysStripped: x_forwarded_client_cert is always the
// client's (Envoy writes the dashed name), and a CGI-style upstream reads it
// as XFCC: it is removed even where no policy reads XFCC.
func TestUnderscoreXFCCAlwaysStripped(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("cdn", map[string]any{"certificateSource": "rfc9440", "trustedSourceCIDRs": []string{"10.0.0.0/8"},
			"allowUnauthenticatedRequests": true})},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	forged := `Hash=00;Cert="` + envoyPEMEscaper.Replace(string(p.good.PEM())) + `";Subject="CN=acme-mobile"`
	for _, src := range []string{"10.1.2.3:5000", "203.0.113.9:5000"} {
		res := do(t, vm, request("/api", src, abi.Header{Key: "x-forwarded-client-cert", Value: forged}, abi.Header{Key: "x_forwarded_client_cert", Value: forged}))
		if res.Forwarded == nil {
			t.Fatalf("refused")
		}
		_, dashed := header(res.Forwarded.Headers, "x-forwarded-client-cert")
		if _, ok := header(res.Forwarded.Headers, "x_forwarded_client_cert"); ok {
			t.Errorf("from %s: x_forwarded_client_cert (forged, CN=acme-mobile) reaches the upstream (dashed spelling forwarded: %v)", src, dashed)
		}
	}
}

// TestTwoCommonNamesNoClientID: with two CN attributes there is no one
// client ID: x-user-sub prints the last first (RFC 2253 order), crypto/x509
// and CAs built on it keep the last, others the first. A client requesting
// "CN=admin, CN=mallory" from a CA that vets "mallory" must not be client
// "admin", so a certificate with two CNs has no client ID at all.
func TestTwoCommonNamesNoClientID(t *testing.T) {
	p := thePKI(t)
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	ou := asn1.ObjectIdentifier{2, 5, 4, 11}
	raw, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: ou, Value: "partner-prod"}},
		{{Type: cn, Value: "admin"}},
		{{Type: cn, Value: "mallory"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf := testpki.Must(p.inter.Issue(testpki.Options{Key: testpki.P256, RawSubject: raw}))
	cfg := map[string]any{"policies": []any{policyDoc("mtls", map[string]any{"profileAuthorization": "enforce"})},
		"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"admin"}}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root})}
	_, vm := newPlugin(t, cfg, nil)
	res := do(t, vm, withPeer(request("/", "", xfccHeader(p.chainOf(leaf))), leaf))
	if res.Forwarded != nil {
		id, _ := header(res.Forwarded.Headers, "x-client-id")
		t.Fatalf("a certificate with two CNs was authorized as profile client %q", id)
	}
	if pr := problem(t, res); pr["reason"] != "CLIENT_NOT_ALLOWED" {
		t.Fatalf("refused with %v, want CLIENT_NOT_ALLOWED (no client ID)", pr["reason"])
	}
}

// TestDecodedPathSpellings: spellings of a protected prefix that an upstream
// reads as it only once every escape is decoded, beside an open catch-all:
// a NUL (cut or dropped by upstreams) is refused, ";" decoded before path
// parameters are cut, a percent-encoded letter that folds to ASCII (ſ is s
// to .NET's OrdinalIgnoreCase) and a second round of decoding reach the
// protected route. A literal percent on the open route is served as before.
func TestDecodedPathSpellings(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("mtls", nil), policyDoc("open", map[string]any{"allowUnauthenticatedRequests": true})},
		"routes": []any{map[string]any{"pathPrefix": "/admin/", "policy": "mtls"}, map[string]any{"pathPrefix": "/secret/", "policy": "mtls"},
			map[string]any{"pathPrefix": "/", "policy": "open"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	for _, c := range []struct {
		path   string
		status int
		reason string
	}{
		{"/admin%00/x", 400, "AMBIGUOUS_PATH"}, {"/adm%00in/x", 400, "AMBIGUOUS_PATH"}, {"/admin\x00/x", 400, "AMBIGUOUS_PATH"},
		{"/%2500", 400, "AMBIGUOUS_PATH"}, {"/public/a%00.txt", 400, "AMBIGUOUS_PATH"},
		{"/admin%3Bfoo/x", 401, "NO_CERTIFICATE"}, {"/admin%3bfoo/x", 401, "NO_CERTIFICATE"}, {"/public/..%3B/admin/x", 401, "NO_CERTIFICATE"},
		{"/%C5%BFecret/", 401, "NO_CERTIFICATE"}, {"/%c5%bfecret/x", 401, "NO_CERTIFICATE"},
		{"/%2561dmin/x", 401, "NO_CERTIFICATE"}, {"/%25%36%31dmin/x", 401, "NO_CERTIFICATE"}, {"/public/%252e%252e/admin/x", 401, "NO_CERTIFICATE"},
		// Decoded, with dot segments and ";" taken literally.
		{"/%61dmin/..;/x", 401, "NO_CERTIFICATE"}, {"/%61dmin/%2e%2e/x", 401, "NO_CERTIFICATE"},
		// Decoded, then cut at a decoded '?' or '#'.
		{"/admin%3F/../public", 401, "NO_CERTIFICATE"}, {"/admin%23/../x", 401, "NO_CERTIFICATE"},
		// Decoded a third and a fourth time; an escape left after that is
		// refused. The third round is a reading of its own: three decoding
		// layers and a Tomcat-style ";params" cut read /admin.
		{"/%252561dmin/x", 401, "NO_CERTIFICATE"}, {"/%25252561dmin/x", 401, "NO_CERTIFICATE"},
		{"/admin%25253B%2525252F..%2525252F..%2525252Fpublic", 401, "NO_CERTIFICATE"},
		{"/%2525252561dmin/x", 400, "AMBIGUOUS_PATH"}, {"/public/%2525252525", 400, "AMBIGUOUS_PATH"},
		// Overlong UTF-8, which old servers decode as '.' and '/': refused.
		{"/%C0%AE%C0%AE/admin/x", 400, "AMBIGUOUS_PATH"}, {"/public/%C0%AE%C0%AE%C0%AFadmin/x", 400, "AMBIGUOUS_PATH"},
		{"/%E0%80%AE%E0%80%AE/admin/x", 400, "AMBIGUOUS_PATH"}, {"/%25c0%25ae%25c0%25ae/admin/x", 400, "AMBIGUOUS_PATH"},
		{"/\xC0\xAE\xC0\xAE/admin/x", 400, "AMBIGUOUS_PATH"},
	} {
		res := do(t, vm, request(c.path, "", abi.Header{Key: "x-user-sub", Value: "CN=admin"}))
		if res.Forwarded != nil {
			st, _ := header(res.Forwarded.Headers, "x-mtls-verification-status")
			t.Errorf("%q passes unauthenticated (status %q), want %d %s", c.path, st, c.status, c.reason)
			continue
		}
		pr := problem(t, res)
		h, _ := header(res.LocalResponse.Headers, "x-mtls-verification-reason")
		if res.LocalResponse.Status != c.status || pr["reason"] != c.reason || h != c.reason {
			t.Errorf("%q: %d %v (header %q), want %d %s", c.path, res.LocalResponse.Status, pr["reason"], h, c.status, c.reason)
		}
	}
	// A client with a certificate passes the protected route however it spells it.
	for _, path := range []string{"/%2561dmin/x", "/admin%3Bfoo/x", "/%C5%BFecret/"} {
		res := do(t, vm, withPeer(request(path, "", xfccHeader(p.chainOf(p.good))), p.good))
		if res.Forwarded == nil {
			t.Errorf("%q with a valid certificate refused: %s", path, res.LocalResponse.Body)
		}
	}
	// Long paths of escapes (Envoy's default header limit is 60 KiB): no
	// trap, and the same answers.
	long := strings.Repeat("%252e%252e/", 5000) + "%2561dmin/x"
	if res := do(t, vm, request("/"+long, "")); res.LocalResponse == nil || res.LocalResponse.Status != 401 {
		t.Errorf("%d bytes of double-encoded dot segments before /admin/x: not refused 401", len(long)+1)
	}
	// One percent before 30,000 "25"s loses one layer per round of
	// decoding: refused after the fourth, in linear time.
	if res := do(t, vm, request("/%"+strings.Repeat("25", 30000)+"61dmin/x", "")); res.LocalResponse == nil || res.LocalResponse.Status != 400 {
		t.Error("60 KB of nested escapes before /admin/x: not refused 400")
	}
	if err := vm.Err(); err != nil {
		t.Fatalf("VM: %v", err)
	}
	for _, path := range []string{"/files/100%25", "/files/50%25off", "/files/100%2541", "/files/caf%C3%A9", "/files/a%3Bb", "/search?q=%00",
		"/files/" + strings.Repeat("%25%3B%C5%BF", 5000),
		// A literal percent escaped three and four times, valid UTF-8 and
		// Latin-1 sharing the overlong lead bytes, and 60 KB of bare
		// percents.
		"/files/100%252541", "/files/%25252525", "/files/%E0%A4%85", "/files/%F0%9F%98%80", "/files/%C0%20propos", "/files/caf%E9",
		"/" + strings.Repeat("%", 60000)} {
		res := do(t, vm, request(path, ""))
		if res.Forwarded == nil {
			t.Errorf("%q refused: %d %s", path, res.LocalResponse.Status, res.LocalResponse.Body)
			continue
		}
		st, _ := header(res.Forwarded.Headers, "x-mtls-verification-status")
		fp, _ := header(res.Forwarded.Headers, ":path")
		if st != "NONE" || fp != path {
			t.Errorf("%q: forwarded as %q with status %q, want the path as sent and NONE", path, fp, st)
		}
	}
}
