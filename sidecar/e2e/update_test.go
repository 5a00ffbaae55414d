package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

// servedPair is the chain and key an SDS push carries for name.
func servedPair(p push, name string) (chain, key string) {
	tc := p.secrets[name].GetTlsCertificate()
	return tc.GetCertificateChain().GetInlineString(), string(tc.GetPrivateKey().GetInlineBytes())
}

// auditLines returns the decoded audit lines of one action from serve's log.
func auditLines(t *testing.T, p *serveProc, action string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(line, `"action":"`+action+`"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// keyInClear reports whether a store file holds keyPEM unsealed. Records are
// JSON, where a []byte is base64, so the clear form is the base64 of the PEM
// (which starts where the value starts); the PEM text is checked too.
func keyInClear(raw, keyPEM []byte) bool {
	nl := bytes.IndexByte(keyPEM, '\n')
	b64 := base64.StdEncoding.EncodeToString(keyPEM)
	return bytes.Contains(raw, keyPEM[nl+1:nl+40]) || bytes.Contains(raw, []byte(b64[:60]))
}

// TestOutboundUpdateInPlace rotates an outbound certificate behind the same
// secret name, the usual SDS pattern: subscribed clients (state of the world
// and delta) get the new pair without changing their subscription, the record
// keeps its identity, the new key is sealed, and it all survives a restart.
func TestOutboundUpdateInPlace(t *testing.T) {
	dir := t.TempDir()
	encKey := writeFile(t, "enc.hex", []byte(strings.Repeat("5a", 32)))
	p := startServe(t, dir, "--encryption-key-file", encKey)

	oldCert, oldKey, oldChain := outboundFiles(t, "backend-2025")
	var created api.MTLSCertificate
	p.runJSON(t, &created, "mtls-certificate", "create", "--cert", oldCert, "--key", oldKey, "--name", "backend",
		"--environment-type", "development", "--environment-type", "production")

	sotw := newSotW(t, p.addrs.SDS, "envoy-1", "payments", "backend")
	delta := newDelta(t, p.addrs.SDS, "envoy-2", "orders", "backend")
	for _, c := range []*sdsClient{sotw, delta} {
		if chain, key := servedPair(c.next("initial outbound secret"), "backend"); chain != string(testpki.PEM(oldChain.Leaf, oldChain.Issuer())) || key != string(oldChain.Leaf.KeyPEM()) {
			t.Fatalf("initial secret is not the uploaded pair")
		}
	}

	newCert, newKey, newChain := outboundFiles(t, "backend-2026")
	var updated api.MTLSCertificate
	p.runJSON(t, &updated, "mtls-certificate", "update", "--cert-id", created.ID, "--cert", newCert, "--key", newKey)
	newFP := pki.Fingerprint(newChain.Leaf.DER)
	if updated.ID != created.ID || updated.Name != "backend" || !slices.Equal(updated.EnvironmentTypes, []string{"development", "production"}) ||
		!updated.Enabled || !updated.Served || !updated.CreatedAt.Equal(created.CreatedAt) || !updated.UpdatedAt.After(created.UpdatedAt) {
		t.Fatalf("update changed more than the material, or not updatedAt:\nbefore %+v\nafter  %+v", created.Outbound, updated.Outbound)
	}
	if updated.Fingerprint != newFP || updated.Subject != "CN=backend-2026" || !updated.NotAfter.Equal(newChain.Leaf.Cert.NotAfter.UTC().Truncate(time.Second)) {
		t.Fatalf("update answered fingerprint %s subject %q notAfter %s, want %s CN=backend-2026 %s",
			updated.Fingerprint, updated.Subject, updated.NotAfter, newFP, newChain.Leaf.Cert.NotAfter)
	}

	// Neither client changes its subscription; both get the new pair, the
	// chain after the leaf kept as uploaded.
	for _, c := range []*sdsClient{sotw, delta} {
		chain, key := servedPair(c.next("push after update"), "backend")
		if chain != string(testpki.PEM(newChain.Leaf, newChain.Issuer())) || key != string(newChain.Leaf.KeyPEM()) {
			t.Fatalf("push after update carries chain %q", chain)
		}
	}

	var desc api.MTLSCertificate
	p.runJSON(t, &desc, "mtls-certificate", "describe", "--cert-id", created.ID)
	if desc.Fingerprint != newFP || len(desc.Subscribers) != 2 {
		t.Fatalf("describe after update: fingerprint %s subscribers %+v", desc.Fingerprint, desc.Subscribers)
	}
	oldFP := pki.Fingerprint(oldChain.Leaf.DER)
	human := p.run("mtls-certificate", "describe", "--cert-id", created.ID)
	if !strings.Contains(human.stdout, newFP) || strings.Contains(human.stdout, oldFP) || !strings.Contains(human.stdout, "CN=backend-2026") {
		t.Fatalf("describe table after update:\n%s", human.stdout)
	}

	lines := auditLines(t, p, "mtls-certificate.update")
	if len(lines) != 1 {
		t.Fatalf("%d audit lines for the update, want 1", len(lines))
	}
	before, _ := lines[0]["before"].(map[string]any)
	after, _ := lines[0]["after"].(map[string]any)
	if before["sha256Fingerprint"] != oldFP || after["sha256Fingerprint"] != newFP || after["id"] != created.ID ||
		!strings.HasPrefix(lines[0]["actor"].(string), "token:") {
		t.Fatalf("audit line %v", lines[0])
	}

	p.stop()
	raw, err := os.ReadFile(filepath.Join(dir, "mtlsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if keyInClear(raw, newChain.Leaf.KeyPEM()) {
		t.Fatal("replacement private key stored in clear")
	}
	p2 := startServe(t, dir, "--encryption-key-file", encKey)
	if chain, key := servedPair(newSotW(t, p2.addrs.SDS, "envoy-1", "payments", "backend").next("after restart"), "backend"); chain != string(testpki.PEM(newChain.Leaf, newChain.Issuer())) || key != string(newChain.Leaf.KeyPEM()) {
		t.Fatal("the replacement pair is not what a restarted sidecar serves")
	}
}

// TestOutboundUpdateRefusals: every bad update is refused with one line that
// says what to do, and changes nothing. The proof that nothing was published
// is the subscribed client's next push: it is the later valid update, not a
// change made by a refused one.
func TestOutboundUpdateRefusals(t *testing.T) {
	p := startServe(t, t.TempDir())
	cert, key, chain := outboundFiles(t, "current")
	var orig api.MTLSCertificate
	p.runJSON(t, &orig, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "backend", "--environment-type", "development")
	sotw := newSotW(t, p.addrs.SDS, "envoy-1", "payments", "backend")
	if c, _ := servedPair(sotw.next("initial"), "backend"); c != string(testpki.PEM(chain.Leaf, chain.Issuer())) {
		t.Fatal("initial secret is not the uploaded chain")
	}

	other := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "other"}))
	expired := testpki.Must(chain.Issuer().Issue(testpki.Options{CommonName: "lapsed",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}))
	otherCert := writeFile(t, "other.pem", other.Leaf.PEM())
	derFile := writeFile(t, "other.der", other.Leaf.DER)
	id := orig.ID
	cases := []struct {
		name string
		code int
		args []string
		want []string
	}{
		{"key mismatch", 1, []string{"--cert-id", id, "--cert", otherCert, "--key", key}, []string{"private key does not match", "CN=other"}},
		{"DER certificate", 1, []string{"--cert-id", id, "--cert", derFile, "--key", writeFile(t, "other.key", other.Leaf.KeyPEM())}, []string{"DER-encoded", "openssl x509 -inform der -in " + derFile}},
		{"expired", 1, []string{"--cert-id", id, "--cert", writeFile(t, "lapsed.pem", expired.PEM()), "--key", writeFile(t, "lapsed.key", expired.KeyPEM())}, []string{`"CN=lapsed" expired on`, "upload a current certificate"}},
		{"key file holds no key", 1, []string{"--cert-id", id, "--cert", otherCert, "--key", otherCert}, []string{"no PEM private key"}},
		{"unknown ID", 1, []string{"--cert-id", "mtlscert_nope", "--cert", otherCert, "--key", writeFile(t, "o.key", other.Leaf.KeyPEM())}, []string{`no mTLS certificate with ID "mtlscert_nope"`, "mtls-certificate list"}},
		{"missing file", 1, []string{"--cert-id", id, "--cert", "/nonexistent/new.pem", "--key", key}, []string{"cannot read --cert", "no such file"}},
		{"missing --key", 2, []string{"--cert-id", id, "--cert", otherCert}, []string{"--key is required"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := p.run(append([]string{"mtls-certificate", "update"}, c.args...)...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", r.code, c.code, r.stdout, r.stderr)
			}
			line := strings.TrimSpace(r.stderr)
			if strings.Contains(line, "\n") {
				t.Errorf("error is not one line:\n%s", r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(line, w) {
					t.Errorf("error %q lacks %q", line, w)
				}
			}
		})
	}
	// The server judges the material itself, for clients that skip the CLI.
	// DER bytes do not survive a JSON string (invalid UTF-8 is replaced), so
	// the server sees no PEM and answers with the conversion command.
	err := p.client(t).Do(http.MethodPut, api.PathOutbound+"/"+id+"/material",
		api.UpdateMTLSCertificateMaterial{CertPEM: string(other.Leaf.DER), KeyPEM: string(other.Leaf.KeyPEM())}, nil)
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") || !strings.Contains(err.Error(), "openssl x509 -inform der") {
		t.Fatalf("API accepted a DER certificate: %v", err)
	}
	r := p.run("mtls-certificate", "update", "--cert-id", id, "--cert", otherCert, "--key", key, "--output", "json")
	var doc struct{ Error struct{ Code string } }
	if json.Unmarshal([]byte(r.stdout), &doc) != nil || doc.Error.Code != "key_mismatch" {
		t.Errorf("--output json refusal: %q", r.stdout)
	}

	var now api.MTLSCertificate
	p.runJSON(t, &now, "mtls-certificate", "describe", "--cert-id", id)
	if now.Fingerprint != orig.Fingerprint || !now.UpdatedAt.Equal(orig.UpdatedAt) || now.Subject != orig.Subject {
		t.Fatalf("a refused update changed the record: %+v", now.Outbound)
	}
	if n := len(auditLines(t, p, "mtls-certificate.update")); n != 0 {
		t.Fatalf("%d audit lines for refused updates", n)
	}

	// A valid update after all of that is the first change the client sees.
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "update", "--cert-id", id, "--cert", otherCert, "--key", writeFile(t, "other2.key", other.Leaf.KeyPEM()))
	if c, _ := servedPair(sotw.next("the valid update"), "backend"); c != string(other.Leaf.PEM()) {
		t.Fatalf("first push after the refusals carries %q, want the valid update", c)
	}
}

// TestOutboundUpdateWhileDisabled: the material of a disabled certificate
// can be replaced ahead of time; it stays disabled (not served) until
// enabled, and then the new pair is what goes out.
func TestOutboundUpdateWhileDisabled(t *testing.T) {
	p := startServe(t, t.TempDir())
	cert, key, _ := outboundFiles(t, "first")
	var o api.MTLSCertificate
	p.runJSON(t, &o, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "backend", "--environment-type", "development")
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "disable", "--cert-id", o.ID)
	newCert, newKey, newChain := outboundFiles(t, "second")
	var u api.MTLSCertificate
	p.runJSON(t, &u, "mtls-certificate", "update", "--cert-id", o.ID, "--cert", newCert, "--key", newKey)
	if u.Enabled || u.Served {
		t.Fatalf("update re-enabled a disabled certificate: %+v", u.Outbound)
	}
	if r := p.run("mtls-certificate", "update", "--cert-id", o.ID, "--cert", newCert, "--key", newKey); r.code != 0 || !strings.Contains(r.stdout, "mtls-certificate enable --cert-id "+o.ID) {
		t.Fatalf("table answer for a disabled certificate does not say how to serve it: %q %q", r.stdout, r.stderr)
	}
	// The CA secret always exists, so the first push is certain and shows
	// what is served while the certificate is disabled.
	c := newDelta(t, p.addrs.SDS, "envoy-1", "payments", "backend", sds.ClientCASecret)
	if first := c.next("initial"); first.secrets["backend"] != nil || first.secrets[sds.ClientCASecret] == nil {
		t.Fatal("a disabled certificate was served")
	}
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "enable", "--cert-id", o.ID)
	if _, k := servedPair(c.next("enable"), "backend"); k != string(newChain.Leaf.KeyPEM()) {
		t.Fatal("enabling served something other than the replacement pair")
	}
}
