package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func TestParseConfigDefaults(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{"allowExpiredCertificates":false,"allowRevokedCertificates":false,"allowUnauthenticatedRequests":false}`) + `],"trustBundle":` + inlineBundle([]*testpki.Cert{root}) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Policies[0].Options
	d := DefaultOptions()
	if o.CertificateSource != SourceXFCC || !o.XFCCElementLast || o.ChainVerification != "filter" || !o.RequireClientAuthUsage ||
		o.MaxCertificateBytes != 16384 || o.RevocationCheck != RevocationStrict || o.CacheSize != 1024 || o.Headers != DefaultHeaderNames ||
		o.AllowUnauthenticatedRequests || o.AllowExpiredCertificates || o.AllowRevokedCertificates || o.CertIssuerDN != nil {
		t.Fatalf("defaults: %+v", o)
	}
	if d.Headers.UserSub != "x-user-sub" || d.Headers.ClientCert != "client-cert" {
		t.Fatal("default header names changed")
	}
}

func TestParseConfigErrors(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	tb := `,"trustBundle":` + inlineBundle([]*testpki.Cert{root})
	pol := func(opts string) string { return `{"policies":[` + policyJSON("p", opts) + `]` + tb + `}` }
	route := func(routes string) string {
		return `{"policies":[` + policyJSON("a", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],"routes":[` + routes + `,{"pathPrefix":"/zz/","policy":"open"}]` + tb + `}`
	}
	for _, c := range []struct{ json, path string }{
		{`not json`, "$"},
		{`[]`, "$"},
		{`{"policies":[]}`, "policies"},
		{`{"policies":[` + policyJSON("p", "") + `],"extra":1` + tb + `}`, "extra"},
		{`{"policies":[{"name":"p","policyType":"jwt-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)"}}]` + tb + `}`, "policies[0].policyType"},
		{`{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"Other","module":"$import(@zuplo/runtime)"}}]` + tb + `}`, "policies[0].handler.export"},
		{`{"policies":[{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"x"}}]` + tb + `}`, "policies[0].handler.module"},
		{`{"policies":[{"policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)"}}]` + tb + `}`, "policies[0].name"},
		{pol(`{"allowUnauthenticatedRequests":"false"}`), "policies[0].handler.options.allowUnauthenticatedRequests"},
		{pol(`{"allowExpiredCertificates":1}`), "policies[0].handler.options.allowExpiredCertificates"},
		{pol(`{"allowUnauthenticatedRequest":true}`), "policies[0].handler.options.allowUnauthenticatedRequest"},
		{pol(`{"allowRevokedCertificates":false,"allowRevokedCertificates":true}`), "policies[0].handler.options.allowRevokedCertificates"},
		{pol(`{"certIssuerDN":"nonsense"}`), "policies[0].handler.options.certIssuerDN"},
		{pol(`{"certIssuerDN":5}`), "policies[0].handler.options.certIssuerDN"},
		{pol(`{"certIssuerDN":[]}`), "policies[0].handler.options.certIssuerDN"},
		{pol(`{"allowedProfiles":["a"]}`), "policies[0].handler.options.allowedProfiles"},
		{pol(`{"profileAuthorization":"enforce","allowedProfiles":[]}`), "policies[0].handler.options.allowedProfiles"},
		{pol(`{"profileAuthorization":"enforce","allowedProfiles":["a",""]}`), "policies[0].handler.options.allowedProfiles[1]"},
		{pol(`{"certIssuerDN":["CN=a",5]}`), "policies[0].handler.options.certIssuerDN[1]"},
		{pol(`{"certIssuerDN":["CN=a","nonsense"]}`), "policies[0].handler.options.certIssuerDN[1]"},
		{pol(`{"certificateSource":"tls"}`), "policies[0].handler.options.certificateSource"},
		{pol(`{"certificateSource":"header","trustedSourceCIDRs":["10.0.0.0/8"]}`), "policies[0].handler.options.certificateHeader"},
		{pol(`{"certificateSource":"rfc9440"}`), "policies[0].handler.options.trustedSourceCIDRs"},
		{pol(`{"certificateSource":"rfc9440","trustedSourceCIDRs":["10.0.0.0/33"]}`), "policies[0].handler.options.trustedSourceCIDRs[0]"},
		{pol(`{"certificateSource":"rfc9440","trustedSourceCIDRs":"10.0.0.0/8"}`), "policies[0].handler.options.trustedSourceCIDRs"},
		{pol(`{"trustedSourceCIDRs":["10.0.0.0/8"]}`), "policies[0].handler.options.trustedSourceCIDRs"},
		{pol(`{"xfccElement":"first"}`), "policies[0].handler.options.trustedSourceCIDRs"},
		// Envoy verified only its own connection's certificate.
		{pol(`{"chainVerification":"envoy","certificateSource":"header","certificateHeader":"x-cert","trustedSourceCIDRs":["10.0.0.0/8"]}`), "policies[0].handler.options.chainVerification"},
		{pol(`{"chainVerification":"envoy","certificateSource":"rfc9440","trustedSourceCIDRs":["10.0.0.0/8"]}`), "policies[0].handler.options.chainVerification"},
		{pol(`{"chainVerification":"envoy","xfccElement":"first","trustedSourceCIDRs":["10.0.0.0/8"]}`), "policies[0].handler.options.chainVerification"},
		{pol(`{"certificateHeader":"x-cert"}`), "policies[0].handler.options.certificateHeader"},
		{pol(`{"certificateHeaderFormat":"der"}`), "policies[0].handler.options.certificateHeaderFormat"},
		{pol(`{"xfccElement":"middle"}`), "policies[0].handler.options.xfccElement"},
		{pol(`{"chainVerification":"none"}`), "policies[0].handler.options.chainVerification"},
		{pol(`{"revocationCheck":"soft"}`), "policies[0].handler.options.revocationCheck"},
		{pol(`{"maxCertificateBytes":1.5}`), "policies[0].handler.options.maxCertificateBytes"},
		{pol(`{"maxCertificateBytes":"16384"}`), "policies[0].handler.options.maxCertificateBytes"},
		{pol(`{"cacheSize":-1}`), "policies[0].handler.options.cacheSize"},
		{pol(`{"headerNames":{"subject":"x-mtls-issuer"}}`), "policies[0].handler.options.headerNames.issuer"},
		{pol(`{"headerNames":{"verificationStatus":""}}`), "policies[0].handler.options.headerNames.verificationStatus"},
		{pol(`{"headerNames":{"subjekt":"x"}}`), "policies[0].handler.options.headerNames.subjekt"},
		{pol(`{"headerNames":{"subject":"bad header"}}`), "policies[0].handler.options.headerNames.subject"},
		{`{"policies":[` + policyJSON("a", "") + `,` + policyJSON("b", "") + `]` + tb + `}`, "routes"},
		{`{"policies":[` + policyJSON("a", "") + `,` + policyJSON("a", "") + `]` + tb + `}`, "policies[1].name"},
		{`{"policies":[` + policyJSON("a", "") + `],"routes":[{"pathPrefix":"/x","policy":"b"}]` + tb + `}`, "routes[0].policy"},
		{`{"policies":[` + policyJSON("a", "") + `],"routes":[{"path":"/x","pathPrefix":"/x","policy":"a"}]` + tb + `}`, "routes[0]"},
		{`{"policies":[` + policyJSON("a", "") + `],"routes":[{"pathPrefix":"x","policy":"a"}]` + tb + `}`, "routes[0].pathPrefix"},
		{`{"policies":[` + policyJSON("a", "") + `],"routes":[{"pathPrefix":"/x","policy":"a","method":"GET"}]` + tb + `}`, "routes[0].method"},
		{`{"policies":[` + policyJSON("a", "") + `]}`, "trustBundle"},
		{`{"policies":[` + policyJSON("a", "") + `],"trustBundle":{"cluster":""}}`, "trustBundle.cluster"},
		{`{"policies":[` + policyJSON("a", "") + `],"trustBundle":{"cluster":"s","caCertificates":[]}}`, "trustBundle"},
		{`{"policies":[` + policyJSON("a", "") + `],"trustBundle":{"cluster":"s","refreshSeconds":0}}`, "trustBundle.refreshSeconds"},
		{`{"policies":[` + policyJSON("a", "") + `],"trustBundle":{"caCertificates":[]}}`, "trustBundle.caCertificates"},
		{`{"policies":[` + policyJSON("a", "") + `],"trustBundle":{"caCertificates":["not pem"]}}`, "trustBundle"},
		{`{"policies":[` + policyJSON("a", "") + `],"trustBundle":{"caCertificates":["` + strings.ReplaceAll(string(must(root.Issue(testpki.Options{})).PEM()), "\n", `\n`) + `"]}}`, "trustBundle"},
		// Accepted before, and weaker than they read: a route no ordinary
		// request reaches, a route behind one that takes all its requests,
		// a method list that is no method, a trusted range that is everyone.
		{route(`{"pathPrefix":"/admin?x","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"path":"/admin#top","policy":"a"}`), "routes[0].path"},
		{route(`{"pathPrefix":"/%61dmin/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/api//admin/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/api/../admin/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/admin;v=1/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/admin%2Fx/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/admin\\x/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/admin\tx/","policy":"a"}`), "routes[0].pathPrefix"},
		{route(`{"pathPrefix":"/","policy":"open"},{"pathPrefix":"/admin/","policy":"a"}`), "routes[1]"},
		{route(`{"pathPrefix":"/admin","policy":"open"},{"path":"/admin/users","policy":"a"}`), "routes[1]"},
		{route(`{"pathPrefix":"/admin/","policy":"open"},{"path":"/admin","policy":"a"}`), "routes[1]"},
		{route(`{"path":"/login/","policy":"open"},{"path":"/login","methods":["POST"],"policy":"a"}`), "routes[1]"},
		{route(`{"pathPrefix":"/api/","methods":["GET"],"policy":"open"},{"pathPrefix":"/api/admin/","methods":["head","get"],"policy":"a"}`), "routes[1]"},
		{route(`{"pathPrefix":"/admin/","methods":[],"policy":"a"}`), "routes[0].methods"},
		{route(`{"pathPrefix":"/admin/","methods":["*"],"policy":"a"}`), "routes[0].methods[0]"},
		{route(`{"pathPrefix":"/admin/","methods":["GET","GET, POST"],"policy":"a"}`), "routes[0].methods[1]"},
		{pol(`{"certificateSource":"rfc9440","trustedSourceCIDRs":["0.0.0.0/0"]}`), "policies[0].handler.options.trustedSourceCIDRs[0]"},
		{pol(`{"certificateSource":"rfc9440","trustedSourceCIDRs":["10.0.0.0/8","::/0"]}`), "policies[0].handler.options.trustedSourceCIDRs[1]"},
		{pol(`{"certificateSource":"rfc9440","trustedSourceCIDRs":["10.1.2.3/8"]}`), "policies[0].handler.options.trustedSourceCIDRs[0]"},
		{pol(`{"spiffeTrustDomains":[],"clientIdField":"spiffeId"}`), "policies[0].handler.options.spiffeTrustDomains"},
		{pol(`{"spiffeTrustDomains":["example.org"]}`), "policies[0].handler.options.spiffeTrustDomains"},
		{pol(`{"revocationCheck":"off","requireCRL":true}`), "policies[0].handler.options.requireCRL"},
		{pol(`{"headerNames":{"subject":"X-Forwarded-Client-Cert"}}`), "policies[0].handler.options.headerNames.subject"},
		{pol(`{"headerNames":{"userSub":"host"}}`), "policies[0].handler.options.headerNames.userSub"},
		{pol(`{"requestedProfileHeader":"x-forwarded-client-cert"}`), "policies[0].handler.options.requestedProfileHeader"},
		{`{"policies":[` + policyJSON("a", "") + `],"profiles":[{"id":"p","clients":["c"]}]` + tb + `}`, "profiles"},
	} {
		_, err := ParseConfig([]byte(c.json))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want a ConfigError", c.json, err)
			continue
		}
		if ce.Path != c.path {
			t.Errorf("%s: error path %q, want %q (%v)", c.json, ce.Path, c.path, err)
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("message does not name the field: %v", err)
		}
	}
}

// TestEnvoyModeBundle: in envoy mode the filter still checks revocation, so
// it needs the bundle's CRLs, unless revocationCheck is off.
func TestEnvoyModeBundle(t *testing.T) {
	for _, opts := range []string{`{"chainVerification":"envoy"}`, `{"chainVerification":"envoy","revocationCheck":"best-effort"}`, `{"chainVerification":"envoy","requireCRL":true}`} {
		_, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", opts) + `]}`))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Path != "trustBundle" || !strings.Contains(err.Error(), `revocationCheck "off"`) {
			t.Errorf("%s without a trustBundle: err = %v, want a trustBundle error naming revocationCheck", opts, err)
		}
	}
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{"chainVerification":"envoy","revocationCheck":"off"}`) + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "VERIFY_TRUST_CHAIN") {
		t.Errorf("warnings %q, want one saying the listener must verify", cfg.Warnings)
	}
	if e := NewEngine(cfg); e.NeedsBundle() || e.HasBundle() {
		t.Fatal("envoy-mode engine with revocationCheck off waits for a bundle")
	}
	root := must(testpki.NewRoot(testpki.Options{}))
	cfg = must(ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{"chainVerification":"envoy","allowRevokedCertificates":true}`) + `],"trustBundle":` + inlineBundle([]*testpki.Cert{root}) + `}`)))
	if !NewEngine(cfg).NeedsBundle() {
		t.Fatal("envoy-mode engine checking revocation does not wait for its bundle")
	}
}

// TestRouteConfigAccepted: what the route checks must keep accepting.
func TestRouteConfigAccepted(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	tb := `,"trustBundle":` + inlineBundle([]*testpki.Cert{root})
	for _, c := range []struct{ routes, warn string }{
		{`{"pathPrefix":"/admin/","policy":"a"},{"pathPrefix":"/","policy":"open"}`, ""},
		{`{"pathPrefix":"/zz/","policy":"open"},{"pathPrefix":"/","policy":"a"},{"pathPrefix":"/admin/","policy":"a"}`, ""},
		{`{"pathPrefix":"/api/","methods":["GET"],"policy":"open"},{"pathPrefix":"/api/","policy":"a"}`, ""},
		{`{"path":"/admin","policy":"open"},{"pathPrefix":"/admin/","policy":"a"}`, ""},
		{`{"pathPrefix":"/files/100%25/","policy":"a"},{"pathPrefix":"/caf%C3%A9/","policy":"a"},{"pathPrefix":"/.well-known/","policy":"open"},{"pathPrefix":"/v1.0/Orders","methods":["get","PROPFIND"],"policy":"a"}`, ""},
		{`{"pathPrefix":"/admin/","methods":["GETT"],"policy":"a"},{"pathPrefix":"/","policy":"open"}`, `routes[0].methods[0]: "GETT" is not a registered HTTP method`},
		{`{"pathPrefix":"/admin/","policy":"a"}`, `policies[1]: no route names policy "open"`},
	} {
		cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("a", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],"routes":[` + c.routes + `]` + tb + `}`))
		if err != nil {
			t.Errorf("%s: %v", c.routes, err)
			continue
		}
		got := strings.Join(cfg.Warnings, "\n")
		if c.warn == "" && got != "" || !strings.Contains(got, c.warn) {
			t.Errorf("%s: warnings %q, want %q", c.routes, got, c.warn)
		}
	}
}

func TestProfilesKeptOffOnPurpose(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	if _, err := ParseConfig([]byte(`{"policies":[` + policyJSON("a", `{"profileAuthorization":"off"}`) + `],"profiles":[{"id":"p","clients":["c"]}],"trustBundle":` + inlineBundle([]*testpki.Cert{root}) + `}`)); err != nil {
		t.Fatal(err)
	}
}

// TestCertIssuerDNWrittenCountryFirst: `openssl x509 -issuer` without
// -nameopt RFC2253 prints the issuer country first ("C = US, O = Example,
// CN = Root"), and a certIssuerDN pasted from it matches no issuer, so every
// client is refused with ISSUER_DN_MISMATCH. It is accepted (a CA may encode
// its name that way round) with a warning naming the command to copy from.
func TestCertIssuerDNWrittenCountryFirst(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	tb := `,"trustBundle":` + inlineBundle([]*testpki.Cert{root})
	for dn, warn := range map[string]bool{
		`"C = US, O = Example, CN = Example Root"`:           true,
		`"issuer=DC=org, DC=example, CN=Issuing CA"`:         true,
		`["CN=New Root,O=Example,C=US", "C=US,O=Ex,CN=Old"]`: true,
		`"CN=Example Root,O=Example,C=US"`:                   false,
		`"C=US"`:                                             false,
		`"O=Example,CN=Example Root"`:                        false,
	} {
		cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("a", `{"certIssuerDN":`+dn+`}`) + `]` + tb + `}`))
		if err != nil {
			t.Errorf("%s: %v", dn, err)
			continue
		}
		got := strings.Join(cfg.Warnings, "\n")
		if has := strings.Contains(got, "certIssuerDN") && strings.Contains(got, "-nameopt RFC2253"); has != warn {
			t.Errorf("%s: warnings %q, want a country-first warning: %v", dn, got, warn)
		}
	}
}
