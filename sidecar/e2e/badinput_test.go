package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
)

// TestBadInputs checks every refusal: non-zero exit, one line on stderr that
// says what is wrong and what to do, and nothing stored.
func TestBadInputs(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Good Root", Subject: pkixName("Example", "US")}))
	inter := testpki.Must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing CA"}))
	leaf := testpki.Must(inter.Issue(testpki.Options{CommonName: "client"}))
	expired := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Old Root",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}))
	other := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Other Root"}))
	otherLeaf := testpki.Must(other.Issue(testpki.Options{CommonName: "other client"}))

	rootFile := writeFile(t, "root.pem", root.PEM())
	derFile := writeFile(t, "root.der", root.DER)
	var good api.CACertificate
	p.runJSON(t, &good, "ca-certificate", "create", "--name", "good", "--cert", rootFile)

	wrongCRL := writeFile(t, "other.crl", testpki.Must(other.CRL(testpki.CRLOptions{})))
	leafCert := writeFile(t, "leaf.pem", leaf.PEM())
	leafKey := writeFile(t, "leaf.key", leaf.KeyPEM())
	otherKey := writeFile(t, "other.key", otherLeaf.KeyPEM())
	withKey := writeFile(t, "withkey.pem", append(root.PEM(), root.KeyPEM()...))
	garbage := writeFile(t, "garbage.pem", []byte("hello"))

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"name starts with digit", []string{"ca-certificate", "create", "--name", "1ca", "--cert", rootFile}, []string{"starts with a digit", "JavaScript identifier"}},
		{"name with dash", []string{"ca-certificate", "create", "--name", "my-ca", "--cert", rootFile}, []string{`contains "-"`, `"my_ca"`}},
		{"reserved word", []string{"ca-certificate", "create", "--name", "class", "--cert", rootFile}, []string{"reserved word"}},
		{"DER certificate", []string{"ca-certificate", "create", "--name", "der_ca", "--cert", derFile}, []string{"DER", "openssl x509 -inform der -in " + derFile + " -out "}},
		{"not a certificate", []string{"ca-certificate", "create", "--name", "junk", "--cert", garbage}, []string{"no PEM certificate"}},
		{"private key in CA file", []string{"ca-certificate", "create", "--name", "withkey", "--cert", withKey}, []string{"private key", "only the certificate"}},
		{"missing file", []string{"ca-certificate", "create", "--name", "nofile", "--cert", "/nonexistent/ca.pem"}, []string{"cannot read --cert", "no such file"}},
		{"leaf is not a CA", []string{"ca-certificate", "create", "--name", "leaf", "--cert", leafCert}, []string{"not a CA certificate", "basicConstraints"}},
		{"intermediate", []string{"ca-certificate", "create", "--name", "inter", "--cert", writeFile(t, "inter.pem", inter.PEM())}, []string{"intermediate CA issued by \"CN=Good Root,O=Example,C=US\"", "upload the self-signed root", "--allow-intermediate"}},
		{"identical certificate", []string{"ca-certificate", "create", "--name", "again", "--cert", rootFile}, []string{"already stored as " + good.ID}},
		{"duplicate name", []string{"ca-certificate", "create", "--name", "good", "--cert", writeFile(t, "other.pem", other.PEM())}, []string{`named "good" already exists`}},
		{"expired CA", []string{"ca-certificate", "create", "--name", "old", "--cert", writeFile(t, "old.pem", expired.PEM())}, []string{"expired on"}},
		{"missing name", []string{"ca-certificate", "create", "--cert", rootFile}, []string{"--name is required"}},
		{"unknown CA id", []string{"ca-certificate", "describe", "--cert-id", "mtlsca_nope"}, []string{`no CA certificate with ID "mtlsca_nope"`, "ca-certificate list"}},
		{"rename to bad name", []string{"ca-certificate", "update", "--cert-id", good.ID, "--name", "bad name"}, []string{"JavaScript identifier"}},
		{"CRL from another CA", []string{"crl", "create", "--cert-id", good.ID, "--file", wrongCRL}, []string{"not signed by CA", "CN=Other Root"}},
		{"CRL for unknown CA", []string{"crl", "create", "--cert-id", "mtlsca_nope", "--file", wrongCRL}, []string{"no CA certificate with ID"}},
		{"CRL not a CRL", []string{"crl", "create", "--cert-id", good.ID, "--file", rootFile}, []string{"not an X509 CRL"}},
		{"CRL both sources", []string{"crl", "create", "--cert-id", good.ID, "--file", wrongCRL, "--url", "http://x"}, []string{"exactly one of --file and --url"}},
		{"CRL bad URL", []string{"crl", "create", "--cert-id", good.ID, "--url", "ftp://x/y.crl"}, []string{"not an http(s) URL"}},
		{"CRL unreachable URL", []string{"crl", "create", "--cert-id", good.ID, "--url", "http://127.0.0.1:1/ca.crl"}, []string{"check that the URL is reachable", "--file"}},
		{"key mismatch", []string{"mtls-certificate", "create", "--cert", leafCert, "--key", otherKey, "--name", "mismatch", "--environment-type", "development"}, []string{"private key does not match"}},
		{"key is not a key", []string{"mtls-certificate", "create", "--cert", leafCert, "--key", leafCert, "--name", "nokey", "--environment-type", "development"}, []string{"no PEM private key"}},
		{"bad environment", []string{"mtls-certificate", "create", "--cert", leafCert, "--key", leafKey, "--name", "env", "--environment-type", "staging"}, []string{`"staging" is not one of development, preview, production`}},
		{"missing environment", []string{"mtls-certificate", "create", "--cert", leafCert, "--key", leafKey, "--name", "env"}, []string{"--environment-type is required"}},
		{"outbound bad name", []string{"mtls-certificate", "create", "--cert", leafCert, "--key", leafKey, "--name", "my-backend-cert", "--environment-type", "development"}, []string{"JavaScript identifier"}},
		{"unknown outbound", []string{"mtls-certificate", "disable", "--cert-id", "mtlscert_nope"}, []string{"no mTLS certificate", "mtls-certificate list"}},
		{"unknown subcommand", []string{"ca-certificate", "frobnicate"}, []string{"unknown subcommand", "create, list"}},
		{"unknown flag", []string{"ca-certificate", "list", "--bogus"}, []string{"-bogus", "-h"}},
		{"stray argument", []string{"ca-certificate", "describe", "mtlsca_x"}, []string{"unexpected argument", "flags"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := p.run(c.args...)
			if r.code == 0 {
				t.Fatalf("accepted: %s", r.stdout)
			}
			oneLineError(t, r.stderr, c.want...)
		})
	}
	// --output json errors are machine-readable too.
	r := p.run("ca-certificate", "create", "--name", "again", "--cert", rootFile, "--output", "json")
	var doc struct {
		Error struct{ Code, ExistingID string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Error.Code != "duplicate_certificate" || doc.Error.ExistingID != good.ID {
		t.Errorf("json error: %q %v", r.stdout, err)
	}
	// Nothing but the good CA was stored; the intermediate is accepted when asked.
	var list []api.CACertificate
	p.runJSON(t, &list, "ca-certificate", "list")
	if len(list) != 1 {
		t.Fatalf("refused uploads were stored: %d CAs", len(list))
	}
	var ic api.CACertificate
	p.runJSON(t, &ic, "ca-certificate", "create", "--name", "inter", "--cert", writeFile(t, "inter2.pem", inter.PEM()), "--allow-intermediate")
	if ic.SelfSigned || ic.Issuer != "CN=Good Root,O=Example,C=US" {
		t.Errorf("intermediate stored as %+v", ic)
	}
}

func TestAuthAndHealth(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	fi, err := os.Stat(p.addrs.TokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(p.addrs.TokenFile) != dir {
		t.Fatalf("token file %v mode %v", err, fi.Mode())
	}
	server := "http://" + p.addrs.Admin
	// No token, wrong token: one line that says where the token comes from.
	r := runCLI([]string{"MTLSGATE_SERVER=" + server, "MTLSGATE_ADMIN_TOKEN=wrong"}, "ca-certificate", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "wrong admin token") || !strings.Contains(r.stderr, "MTLSGATE_ADMIN_TOKEN") {
		t.Errorf("wrong token: %d %s", r.code, r.stderr)
	}
	// The refusal is in the sidecar's log, once however many follow at once.
	for i := 0; i < 5; i++ {
		runCLI([]string{"MTLSGATE_SERVER=" + server, "MTLSGATE_ADMIN_TOKEN=guess"}, "ca-certificate", "list")
	}
	if n := strings.Count(p.stderr.String(), "admin request refused"); n < 1 || n >= 6 {
		t.Errorf("%d log lines for 6 refused requests in a few seconds, want one a second:\n%s", n, p.stderr.String())
	}
	tok, _ := os.ReadFile(p.addrs.TokenFile)
	r = runCLI([]string{"MTLSGATE_SERVER=" + server, "MTLSGATE_ADMIN_TOKEN=" + strings.TrimSpace(string(tok))}, "ca-certificate", "list", "--output", "json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("env token: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = runCLI([]string{"MTLSGATE_ADMIN_TOKEN=x"}, "ca-certificate", "list", "--server", "http://127.0.0.1:1")
	if r.code == 0 || !strings.Contains(r.stderr, "cannot reach mtlsgate serve") {
		t.Errorf("unreachable server: %d %s", r.code, r.stderr)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, api.PathCAs: 401} {
		resp, err := http.Get(server + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Get(server + "/metrics")
	if err == nil {
		var b strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if !strings.Contains(b.String(), "mtlsgate_admin_requests_total") {
			t.Error("metrics lack mtlsgate_admin_requests_total")
		}
	}
}

// TestAdminTokenRotation rotates the admin token of a running serve: a second
// line in the token file is accepted within a second or so, the audit log
// names it, and once the first line is removed the old token is refused.
func TestAdminTokenRotation(t *testing.T) {
	p := startServe(t, t.TempDir())
	server := "http://" + p.addrs.Admin
	data, err := os.ReadFile(p.addrs.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	oldTok := strings.TrimSpace(string(data))
	newTok := "rotated-" + strings.Repeat("7", 40)
	create := func(tok string) result {
		return runCLI([]string{"MTLSGATE_SERVER=" + server, "MTLSGATE_ADMIN_TOKEN=" + tok}, "ca-certificate", "create",
			"--name", "ca_"+tok[:7], "--cert", writeFile(t, tok[:7]+".pem", testpki.Must(testpki.NewRoot(testpki.Options{CommonName: tok[:7]})).PEM()))
	}
	if r := create(newTok); r.code == 0 {
		t.Fatal("new token accepted before it was in the file")
	}
	if err := os.WriteFile(p.addrs.TokenFile, []byte(oldTok+"\n"+newTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new token accepted", func() bool { return create(newTok).code == 0 })
	if r := create(oldTok); r.code != 0 {
		t.Fatalf("old token refused during the rotation: %s", r.stderr)
	}
	// The CLI reading the file sends its first token.
	if r := p.run("ca-certificate", "list"); r.code != 0 {
		t.Fatalf("CLI with a two-token file: %s", r.stderr)
	}
	if err := os.WriteFile(p.addrs.TokenFile, []byte(newTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old token refused", func() bool {
		r := runCLI([]string{"MTLSGATE_SERVER=" + server, "MTLSGATE_ADMIN_TOKEN=" + oldTok}, "ca-certificate", "list")
		return r.code != 0 && strings.Contains(r.stderr, "wrong admin token")
	})
	logs := p.stderr.String()
	if !strings.Contains(logs, `"actor":"token:`+admintoken.ID(newTok)+`"`) || !strings.Contains(logs, "admin token file re-read") {
		t.Fatalf("audit log does not name the new token %s:\n%s", admintoken.ID(newTok), logs)
	}
}

// TestHealth: `mtlsgate health` answers 0 for a ready serve and 1, saying
// why, when nothing listens.
func TestHealth(t *testing.T) {
	p := startServe(t, t.TempDir())
	if r := runCLI(nil, "health", "--server", "http://"+p.addrs.Admin); r.code != 0 || strings.TrimSpace(r.stdout) != "ready" {
		t.Fatalf("ready serve: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI([]string{"MTLSGATE_SERVER=" + p.addrs.Admin}, "health"); r.code != 0 {
		t.Fatalf("MTLSGATE_SERVER: %d %s", r.code, r.stderr)
	}
	var doc map[string]string
	r := runCLI(nil, "health", "--server", "http://"+p.addrs.Admin, "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || doc["status"] != "ready" || doc["server"] != "http://"+p.addrs.Admin {
		t.Fatalf("health --output json: %d %q %v", r.code, r.stdout, err)
	}
	p.stop()
	if r := runCLI(nil, "health", "--server", "http://"+p.addrs.Admin, "--timeout", "1s"); r.code != 1 || !strings.Contains(r.stderr, "not reachable") {
		t.Fatalf("stopped serve: %d %s", r.code, r.stderr)
	}
	doc = nil
	r = runCLI(nil, "health", "--server", "http://"+p.addrs.Admin, "--timeout", "1s", "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 1 || doc["status"] != "not ready" || !strings.Contains(doc["error"], "not reachable") {
		t.Fatalf("stopped serve, --output json: %d %q %v", r.code, r.stdout, err)
	}
}

// TestHostedGatewayFlags: --account and --project, in commands copied from a
// hosted gateway's documentation, get a line that says to drop them.
func TestHostedGatewayFlags(t *testing.T) {
	for _, f := range []string{"--account", "--project"} {
		r := runCLI(nil, "ca-certificate", "list", f, "my-account")
		if r.code != 2 || !strings.Contains(r.stderr, "no accounts or projects") || !strings.Contains(r.stderr, "drop "+f) {
			t.Errorf("%s: %d %s", f, r.code, r.stderr)
		}
	}
}

// TestAdminTokenFilePermissions: a token file other users can read is used,
// with a warning at start that says how to restrict it; the generated one
// (0600) brings no warning.
func TestAdminTokenFilePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("loose-"+strings.Repeat("5", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	loose := startServe(t, t.TempDir(), "--admin-token-file", path)
	waitFor(t, "the warning about the token file", func() bool { return strings.Contains(loose.stderr.String(), "chmod 600 "+path) })
	if r := loose.run("ca-certificate", "list"); r.code != 0 {
		t.Fatalf("the loose token file is not used: %s", r.stderr)
	}

	tight := startServe(t, t.TempDir())
	waitFor(t, "the ready log line", func() bool { return strings.Contains(tight.stderr.String(), "mtlsgate serve ready") })
	if strings.Contains(tight.stderr.String(), "chmod 600") {
		t.Fatalf("warning about the generated token file:\n%s", tight.stderr.String())
	}
}

// TestRefusedAdminRequestsCounted: a burst of refused requests writes a line
// or two, and the rest are counted in a line at the end of the second,
// without waiting for a further refusal to report them.
func TestRefusedAdminRequestsCounted(t *testing.T) {
	p := startServe(t, t.TempDir())
	const burst = 30
	for i := 0; i < burst; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.addrs.Admin+api.PathCAs, nil)
		req.Header.Set("Authorization", "Bearer guess-"+strconv.Itoa(i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	var single, counted, lines int
	waitFor(t, "every refusal written or counted", func() bool {
		single, counted, lines = 0, 0, 0
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) != nil || m["audit"] != true {
				continue
			}
			switch msg, _ := m["msg"].(string); {
			case strings.HasPrefix(msg, "admin request refused"):
				single++
				lines++
			case strings.HasPrefix(msg, "admin requests refused"):
				n, _ := m["refused"].(float64)
				counted += int(n)
				lines++
			}
		}
		return single+counted >= burst
	})
	if single+counted != burst || lines > 6 {
		t.Fatalf("%d refusals written one by one and %d counted, in %d lines; want %d in all, a line a second at most:\n%s",
			single, counted, lines, burst, p.stderr.String())
	}
}

// TestAdminBodyMistakes: a body written by hand, often copied from a GET
// answer, is refused with the field to use and where the bodies are listed.
func TestAdminBodyMistakes(t *testing.T) {
	p := startServe(t, t.TempDir())
	cl := p.client(t)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Body Root"}))
	var ca api.CACertificate
	if err := cl.Do(http.MethodPost, api.PathCAs, api.CreateCA{Name: "body", CertPEM: string(root.PEM())}, &ca); err != nil {
		t.Fatal(err)
	}
	crlPEM := string(testpki.Must(root.CRL(testpki.CRLOptions{})))
	cases := []struct {
		name, method, path string
		body               any
		want               string
	}{
		{"CA as pem", http.MethodPost, api.PathCAs, map[string]string{"name": "x", "pem": string(root.PEM())}, `use "certPem"`},
		{"CRL as pem", http.MethodPost, api.PathCRLs, map[string]string{"caId": ca.ID, "pem": crlPEM}, `use "crl"`},
		{"CRL not base64", http.MethodPost, api.PathCRLs, map[string]string{"caId": ca.ID, "crl": crlPEM}, `in base64`},
		{"outbound as chainPem", http.MethodPost, api.PathOutbound, map[string]string{"name": "x", "chainPem": "x"}, `use "certPem"`},
		{"other unknown field", http.MethodPatch, api.PathCAs + "/" + ca.ID, map[string]string{"nam": "x"}, `unknown field "nam"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := cl.Do(c.method, c.path, c.body, nil)
			pe, ok := err.(*problem.Error)
			if !ok || pe.Status != http.StatusBadRequest || pe.Code != "bad_json" {
				t.Fatalf("want a 400 bad_json problem, got %v", err)
			}
			for _, w := range []string{c.want, "sidecar/README.md"} {
				if !strings.Contains(pe.Detail, w) {
					t.Errorf("detail %q lacks %q", pe.Detail, w)
				}
			}
		})
	}
	// A CRL given as base64, as the README's table says, is taken.
	var crl api.CRL
	if err := cl.Do(http.MethodPost, api.PathCRLs, map[string]string{"caId": ca.ID, "crl": base64.StdEncoding.EncodeToString([]byte(crlPEM))}, &crl); err != nil || crl.CAID != ca.ID {
		t.Fatalf("base64 crl: %v %+v", err, crl)
	}
}

// TestServeUsageMistakes: serve refuses flags it cannot work with as a usage
// mistake (exit 2, one line saying what to change) before it opens anything.
func TestServeUsageMistakes(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"bad environment", []string{"--environment", "prod"}, []string{`--environment "prod" is not one of development, preview, production`}},
		{"unknown flag", []string{"--bogus"}, []string{"-bogus", "-h"}},
		{"bad duration", []string{"--trust-dir-interval", "soon"}, []string{"-trust-dir-interval", "soon"}},
		{"zero trust-dir interval", []string{"--trust-dir-interval", "0s"}, []string{"--trust-dir-interval must be positive"}},
		{"CRL intervals crossed", []string{"--crl-refresh-min-interval", "2h", "--crl-refresh-max-interval", "1h"}, []string{"--crl-refresh-min-interval must be positive and at most --crl-refresh-max-interval"}},
		{"bad output", []string{"--output", "yaml"}, []string{"use json or table"}},
		{"stray argument", []string{"now"}, []string{"unexpected argument"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			args := append([]string{"serve", "--data-dir", dataDir, "--admin-listen", "127.0.0.1:0",
				"--sds-listen", "127.0.0.1:0", "--bundle-listen", "127.0.0.1:0"}, c.args...)
			r := runCLI(nil, args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2; stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			oneLineError(t, r.stderr, c.want...)
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created before the flags were checked (%v)", err)
			}
		})
	}
}

// oneLineError checks that stderr is one line naming every wanted phrase.
func oneLineError(t *testing.T, stderr string, want ...string) {
	t.Helper()
	line := strings.TrimSpace(stderr)
	if strings.Count(line, "\n") != 0 {
		t.Errorf("error is not one line:\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("error %q lacks %q", line, w)
		}
	}
}
