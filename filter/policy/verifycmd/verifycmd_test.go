package verifycmd

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	ch := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "cli"}))
	ca := write(t, dir, "ca.pem", ch.Root.PEM())
	// A curl-style bundle: leaf, key, intermediate in one file.
	combined := append(append(ch.Leaf.PEM(), ch.Leaf.KeyPEM()...), ch.Intermediates[0].PEM()...)
	cert := write(t, dir, "client.pem", combined)
	leafOnly := write(t, dir, "leaf.pem", ch.Leaf.PEM())
	chain := write(t, dir, "chain.pem", ch.Intermediates[0].PEM())

	code, out, _ := run("--ca", ca, "--cert", cert, "--output", "json")
	if code != ExitAllowed {
		t.Fatalf("exit %d: %s", code, out)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Decision != "allow" || rep.Status != 200 || rep.Headers["x-user-sub"] != "CN=cli" || rep.Headers["x-mtls-verification-status"] != "SUCCESS" {
		t.Fatalf("%+v", rep)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Fatal("key material printed")
	}
	if code, out, _ := run("--ca", ca, "--cert", leafOnly, "--chain", chain); code != 0 || !strings.Contains(out, "decision: allow") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// Missing intermediate: refused with the reason.
	code, out, _ = run("--ca", ca, "--cert", leafOnly, "--output", "json")
	if code != ExitDenied || !strings.Contains(out, `"UNTRUSTED_CHAIN"`) || !strings.Contains(out, `"deny"`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	// --at after expiry.
	at := ch.Leaf.Cert.NotAfter.Add(time.Hour).Format(time.RFC3339)
	if code, out, _ := run("--ca", ca, "--cert", cert, "--at", at); code != ExitDenied || !strings.Contains(out, "EXPIRED") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// --policy options apply.
	pol := write(t, dir, "policy.json", []byte(`{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"certIssuerDN":"CN=someone else"}}}`))
	if code, out, _ := run("--ca", ca, "--cert", cert, "--policy", pol); code != ExitDenied || !strings.Contains(out, "ISSUER_DN_MISMATCH") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// Revocation via --crl.
	crl := write(t, dir, "crl.pem", testpki.Must(ch.Intermediates[0].CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{ch.Leaf}})))
	if code, out, _ := run("--ca", ca, "--cert", cert, "--crl", crl); code != ExitDenied || !strings.Contains(out, "REVOKED") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestVerifyBadInput(t *testing.T) {
	dir := t.TempDir()
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	ca := write(t, dir, "ca.pem", ch.Root.PEM())
	cert := write(t, dir, "c.pem", ch.Leaf.PEM())
	der := write(t, dir, "c.der", ch.Leaf.DER)
	badPolicy := write(t, dir, "p.json", []byte(`{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"allowEverything":true}}}`))
	for _, args := range [][]string{
		{},
		{"--cert", cert},
		{"--ca", filepath.Join(dir, "missing.pem"), "--cert", cert},
		{"--ca", ca, "--cert", der},
		{"--ca", cert, "--cert", cert},
		{"--ca", ca, "--cert", cert, "--at", "yesterday"},
		{"--ca", ca, "--cert", cert, "--policy", badPolicy},
		{"--ca", ca, "--cert", cert, "--output", "yaml"},
		{"--ca", ca, "--cert", cert, "--bogus"},
		{"--ca", ca, "--cert", cert, "--method", "get"},
		{"--ca", ca, "--cert", cert, "--source", "somewhere"},
		{"--ca", ca, "--cert", cert, "--profiles", badPolicy},
	} {
		code, _, errOut := run(args...)
		if code != ExitBadInput || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "mtlsgate verify: ") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestVerifyProfiles runs verify on the repository's own profile example:
// the plugin configuration policies/profiles.json and the sidecar's profile
// file policies/profiles/profiles.json.
func TestVerifyProfiles(t *testing.T) {
	dir := t.TempDir()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "partners CA"}))
	leaf := func(cn, ou string) string {
		c := testpki.Must(root.Issue(testpki.Options{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}}}))
		return write(t, dir, cn+"-"+ou+".pem", c.PEM())
	}
	ca := write(t, dir, "ca.pem", root.PEM())
	acme := leaf("acme-mobile", "partner-prod")
	config := filepath.Join("..", "..", "..", "policies", "profiles.json")
	profiles := filepath.Join("..", "..", "..", "policies", "profiles", "profiles.json")
	base := []string{"--ca", ca, "--policy", config, "--output", "json"}

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		status int
		reason string
	}{
		{"allowed from the profile's network", []string{"--cert", acme, "--source", "203.0.113.7:5000"}, ExitAllowed, 200, ""},
		{"the sidecar's profile file", []string{"--cert", acme, "--source", "203.0.113.7", "--profiles", profiles, "--method", "POST"}, ExitAllowed, 200, ""},
		{"method outside the profile", []string{"--cert", acme, "--source", "203.0.113.7", "--method", "DELETE"}, ExitDenied, 405, "METHOD_NOT_ALLOWED"},
		{"address outside the profile", []string{"--cert", acme, "--source", "198.51.100.1"}, ExitDenied, 403, "IP_NOT_ALLOWED"},
		{"names another profile", []string{"--cert", acme, "--source", "203.0.113.7", "--requested-profile", "partner-staging"}, ExitDenied, 403, "PROFILE_MISMATCH"},
		{"client not bound", []string{"--cert", leaf("mallory", "partner-prod"), "--source", "203.0.113.7"}, ExitDenied, 403, "CLIENT_NOT_ALLOWED"},
		{"glob-bound client", []string{"--cert", leaf("globex-eu", "partner-prod"), "--source", "[2001:db8::5]:443"}, ExitAllowed, 200, ""},
		{"unknown profile", []string{"--cert", leaf("acme-mobile", "partner-test")}, ExitDenied, 403, "PROFILE_UNKNOWN"},
		{"any client, GET only", []string{"--cert", leaf("someone", "partner-staging")}, ExitAllowed, 200, ""},
	} {
		code, out, errOut := run(append(append([]string{}, base...), c.args...)...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d: %s%s", c.name, code, c.code, out, errOut)
			continue
		}
		var rep jsonReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%s: %v: %s", c.name, err, out)
		}
		wantSet := "config"
		if slices.Contains(c.args, "--profiles") {
			wantSet = "file " + profiles
		}
		if rep.Status != c.status || rep.Reason != c.reason || rep.Profiles != wantSet || rep.ClientID == "" || rep.ProfileID == "" {
			t.Errorf("%s: %+v", c.name, rep)
		}
	}

	code, out, _ := run("--ca", ca, "--policy", config, "--cert", acme, "--source", "203.0.113.9", "--requested-profile", "partner-prod")
	for _, want := range []string{"decision: allow", "client:   acme-mobile", "profile:  partner-prod", "requested: partner-prod", "profiles: config"} {
		if code != ExitAllowed || !strings.Contains(out, want) {
			t.Errorf("exit %d, %q missing from:\n%s", code, want, out)
		}
	}

	// A profile with sourceCIDRs and no --source is a question verify
	// cannot answer: bad input naming the flag, not a denial.
	if code, _, errOut := run("--ca", ca, "--policy", config, "--cert", acme); code != ExitBadInput || !strings.Contains(errOut, "--source") {
		t.Errorf("no --source: exit %d, %q", code, errOut)
	}
	// Enforcing profiles with no set to enforce.
	enforce := write(t, dir, "enforce.json", []byte(`{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"profileAuthorization":"enforce"}}}`))
	if code, _, errOut := run("--ca", ca, "--policy", enforce, "--cert", acme); code != ExitBadInput || !strings.Contains(errOut, "--profiles") {
		t.Errorf("no profile set: exit %d, %q", code, errOut)
	}
	if code, out, _ := run("--ca", ca, "--policy", enforce, "--profiles", profiles, "--cert", acme, "--source", "203.0.113.1"); code != ExitAllowed || !strings.Contains(out, "profiles: file "+profiles) {
		t.Errorf("policy object + --profiles: exit %d, want the file named as the profile set: %s", code, out)
	}
	// Several policies: --policy-name picks one.
	two := write(t, dir, "two.json", []byte(`{"policies":[
		{"name":"open","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{}}},
		{"name":"pinned","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"certIssuerDN":"CN=other"}}}],
		"routes":[{"name":"a","pathPrefix":"/a/","policy":"open"},{"name":"b","pathPrefix":"/b/","policy":"pinned"}],
		"trustBundle":{"cluster":"mtlsgate_sidecar"}}`))
	if code, _, errOut := run("--ca", ca, "--policy", two, "--cert", acme); code != ExitBadInput || !strings.Contains(errOut, `"open", "pinned"`) {
		t.Errorf("two policies, no name: exit %d, %q", code, errOut)
	}
	if code, out, _ := run("--ca", ca, "--policy", two, "--policy-name", "pinned", "--cert", acme); code != ExitDenied || !strings.Contains(out, "ISSUER_DN_MISMATCH") {
		t.Errorf("--policy-name pinned: exit %d: %s", code, out)
	}
	if code, out, _ := run("--ca", ca, "--policy", two, "--policy-name", "open", "--cert", acme); code != ExitAllowed {
		t.Errorf("--policy-name open: exit %d: %s", code, out)
	}
	if code, _, errOut := run("--ca", ca, "--policy", two, "--policy-name", "nope", "--cert", acme); code != ExitBadInput || !strings.Contains(errOut, "nope") {
		t.Errorf("--policy-name nope: exit %d, %q", code, errOut)
	}
}

// TestVerifyBundle checks a certificate against a bundle document as the
// sidecar serves it: its CAs, CRLs and profile set.
func TestVerifyBundle(t *testing.T) {
	dir := t.TempDir()
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "partners CA"}))
	acme := testpki.Must(root.Issue(testpki.Options{Subject: pkix.Name{CommonName: "acme-mobile", OrganizationalUnit: []string{"partner-prod"}}}))
	revoked := testpki.Must(root.Issue(testpki.Options{Subject: pkix.Name{CommonName: "globex-1", OrganizationalUnit: []string{"partner-prod"}}}))
	crl := testpki.Must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	set, err := os.ReadFile(filepath.Join("..", "..", "..", "policies", "profiles", "profiles.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := bundle.New([]bundle.CA{{ID: "mtlsca_1", PEM: string(root.PEM())}}, []bundle.CRL{{CAID: "mtlsca_1", PEM: string(crl)}},
		[]byte(gjson.GetBytes(set, "profiles").Raw), 7, time.Now()).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b := write(t, dir, "bundle.json", doc)
	enforce := write(t, dir, "enforce.json", []byte(`{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"profileAuthorization":"enforce"}}}`))
	acmeFile, revokedFile := write(t, dir, "acme.pem", acme.PEM()), write(t, dir, "revoked.pem", revoked.PEM())

	code, out, errOut := run("--bundle", b, "--policy", enforce, "--cert", acmeFile, "--source", "203.0.113.9", "--output", "json")
	var rep jsonReport
	if code != ExitAllowed || json.Unmarshal([]byte(out), &rep) != nil || rep.Profiles != "sidecar:7" || rep.ProfileID != "partner-prod" {
		t.Fatalf("bundle with profiles: exit %d %s%s", code, out, errOut)
	}
	if code, out, _ := run("--bundle", b, "--cert", revokedFile); code != ExitDenied || !strings.Contains(out, "REVOKED") {
		t.Fatalf("the bundle's CRL: exit %d %s", code, out)
	}
	// --profiles replaces the bundle's set: partner-staging allows GET only.
	staging := write(t, dir, "staging.json", []byte(`{"profiles":[{"id":"partner-prod","clients":["*"],"methods":["GET"]}]}`))
	if code, out, _ := run("--bundle", b, "--policy", enforce, "--profiles", staging, "--cert", acmeFile, "--method", "POST", "--output", "json"); code != ExitDenied || !strings.Contains(out, `"profiles": "file `+staging+`"`) || !strings.Contains(out, "METHOD_NOT_ALLOWED") {
		t.Fatalf("--profiles over the bundle's: exit %d %s", code, out)
	}
	notBundle := write(t, dir, "not.json", []byte(`{"caCertificates": 3}`))
	if code, _, errOut := run("--bundle", notBundle, "--cert", acmeFile); code != ExitBadInput || !strings.Contains(errOut, "v1/bundle") {
		t.Fatalf("bad bundle: exit %d %q", code, errOut)
	}
}
