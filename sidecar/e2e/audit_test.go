package e2e

import (
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// storedAudit is the audit trail as `mtlsgate audit list` reads it from the
// store, with extra flags; only the records of action when it is not empty.
func storedAudit(t *testing.T, p *serveProc, action string, flags ...string) []store.AuditEntry {
	t.Helper()
	var all []store.AuditEntry
	p.runJSON(t, &all, append([]string{"audit", "list"}, flags...)...)
	var out []store.AuditEntry
	for _, e := range all {
		if action == "" || e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// sameAsLogLines checks that the stored records of an action are those the
// log lines report, one for one.
func sameAsLogLines(t *testing.T, p *serveProc, action string) []store.AuditEntry {
	t.Helper()
	stored := storedAudit(t, p, action)
	lines := auditLines(t, p, action)
	if len(stored) != len(lines) {
		t.Fatalf("%d stored %s records, %d log lines", len(stored), action, len(lines))
	}
	for i, l := range lines {
		if seq, _ := l["auditSeq"].(float64); uint64(seq) != stored[i].Seq || l["actor"] != stored[i].Actor {
			t.Errorf("%s line %v, stored record %+v", action, l, stored[i])
		}
	}
	return stored
}

// TestAuditTrailIsStoredWithEachChange drives every kind of admin change
// through the CLI and reads the trail back with `mtlsgate audit list`: one
// record per committed change, none for a refused one, kept across a kill
// -9 and bounded by --audit-retention.
func TestAuditTrailIsStoredWithEachChange(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Audit Root"}))
	rootFile := writeFile(t, "root.pem", root.PEM())
	crl := func(n int64) string {
		return writeFile(t, "root.crl", testpki.Must(root.CRL(testpki.CRLOptions{Number: big.NewInt(n)})))
	}
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "audited", "--cert", rootFile)
	p.runJSON(t, &ca, "ca-certificate", "update", "--cert-id", ca.ID, "--name", "audited2")
	var l api.CRL
	p.runJSON(t, &l, "crl", "create", "--cert-id", ca.ID, "--file", crl(1))
	p.runJSON(t, &l, "crl", "update", "--crl-id", l.ID, "--file", crl(2))
	p.runJSON(t, &l, "crl", "delete", "--crl-id", l.ID)
	cert, key, _ := outboundFiles(t, "audited")
	var m api.MTLSCertificate
	p.runJSON(t, &m, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "audited", "--environment-type", "development")
	cert2, key2, _ := outboundFiles(t, "audited")
	p.runJSON(t, &m, "mtls-certificate", "update", "--cert-id", m.ID, "--cert", cert2, "--key", key2)
	p.runJSON(t, &m, "mtls-certificate", "disable", "--cert-id", m.ID)
	p.runJSON(t, &m, "mtls-certificate", "enable", "--cert-id", m.ID)
	p.runJSON(t, &m, "mtls-certificate", "disable", "--cert-id", m.ID)
	p.runJSON(t, &m, "mtls-certificate", "delete", "--cert-id", m.ID)
	p.run("profile", "set", "--file", "../../policies/profiles/profiles.json")
	strict := writeFile(t, "strict.json", []byte(`{"profiles":[{"id":"partner-prod","clients":["globex-*"],"methods":["GET"]}]}`))
	p.run("profile", "set", "--file", strict)
	p.run("profile", "rollback", "--to-version", "1")
	// Refused (a second CA of the same name): no record.
	if r := p.run("ca-certificate", "create", "--name", "audited2", "--cert", writeFile(t, "other.pem", testpki.Must(testpki.NewRoot(testpki.Options{})).PEM())); r.code == 0 {
		t.Fatal("duplicate name accepted")
	}
	p.runJSON(t, &ca, "ca-certificate", "delete", "--cert-id", ca.ID)

	want := []string{"ca-certificate.create", "ca-certificate.update", "crl.create", "crl.update", "crl.delete",
		"mtls-certificate.create", "mtls-certificate.update", "mtls-certificate.disable", "mtls-certificate.enable",
		"mtls-certificate.disable", "mtls-certificate.delete", "profile.set", "profile.set", "profile.rollback", "ca-certificate.delete"}
	check := func(p *serveProc, what string) []store.AuditEntry {
		t.Helper()
		got := storedAudit(t, p, "")
		var actions []string
		for i, e := range got {
			actions = append(actions, e.Action)
			if e.Seq != uint64(i+1) || !strings.HasPrefix(e.Actor, "token:") || e.Time.IsZero() {
				t.Errorf("%s: record %+v", what, e)
			}
		}
		if strings.Join(actions, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: stored actions\n%v\nwant\n%v", what, actions, want)
		}
		return got
	}
	got := check(p, "before the kill")
	if after, _ := got[1].After.(map[string]any); after["name"] != "audited2" || got[1].Before.(map[string]any)["name"] != "audited" {
		t.Errorf("rename record %+v", got[1])
	}
	if got[3].Before.(map[string]any)["number"] != "1" || got[3].After.(map[string]any)["number"] != "2" {
		t.Errorf("crl.update record %+v", got[3])
	}
	for _, a := range []string{"ca-certificate.create", "crl.update", "mtls-certificate.update", "profile.rollback"} {
		sameAsLogLines(t, p, a)
	}

	// The table names each record's target; --limit and --since select.
	if r := p.run("audit", "list"); r.code != 0 || !strings.Contains(r.stdout, "SEQ") || !strings.Contains(r.stdout, ca.ID) || !strings.Contains(r.stdout, m.ID) {
		t.Errorf("audit list table: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if last := storedAudit(t, p, "", "--limit", "1"); len(last) != 1 || last[0].Action != "ca-certificate.delete" {
		t.Errorf("--limit 1: %+v", last)
	}
	if none := storedAudit(t, p, "", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(none) != 0 {
		t.Errorf("--since an hour ahead: %+v", none)
	}
	if all := storedAudit(t, p, "", "--since", "1h"); len(all) != len(want) {
		t.Errorf("--since 1h: %d records", len(all))
	}
	if r := p.run("audit", "list", "--since", "yesterday"); r.code != 2 || !strings.Contains(r.stderr, "--since") {
		t.Errorf("--since yesterday: %d %s", r.code, r.stderr)
	}
	// An offset's '+' sent unescaped by a hand-written query arrives as a
	// space; it still reads as the time meant.
	token, err := os.ReadFile(p.addrs.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+p.addrs.Admin+api.PathAudit+"?since="+time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04:05")+"+00:00", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s with an unescaped '+': %v %v", req.URL, resp, err)
	} else {
		resp.Body.Close()
	}
	// The endpoint is an admin route like the others: no token, no trail.
	if resp, err := http.Get("http://" + p.addrs.Admin + api.PathAudit); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET %s without a token: %v %v", api.PathAudit, resp, err)
	} else {
		resp.Body.Close()
	}

	// kill -9 right after the last answer: the records are on disk with
	// their changes, whatever became of the log lines.
	p.kill9()
	p2 := startServe(t, dir)
	check(p2, "after kill -9")
	p2.stop()

	// A lower retention keeps the newest records only.
	p3 := startServe(t, dir, "--audit-retention", "3")
	p3.runJSON(t, &ca, "ca-certificate", "create", "--name", "late", "--cert", rootFile)
	kept := storedAudit(t, p3, "")
	if len(kept) != 3 || kept[2].Action != "ca-certificate.create" || kept[2].Seq != uint64(len(want)+1) || kept[0].Seq != uint64(len(want)-1) {
		t.Errorf("with --audit-retention 3: %+v", kept)
	}
	if r := runCLI(nil, "serve", "--audit-retention", "0"); r.code != 2 || !strings.Contains(r.stderr, "--audit-retention") {
		t.Errorf("serve --audit-retention 0: %d %s", r.code, r.stderr)
	}
}

// TestAuditNoRecordWithoutAChange: repeating a change that is already in
// force (enable an enabled certificate, rename a CA to its name, store the
// list already stored) changes no trust material, so it leaves no record,
// as setting the active profile set again does not. Such repeats from a
// retrying script filled the trail and pushed real changes out of the
// retention.
func TestAuditNoRecordWithoutAChange(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Repeat Root"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "repeat", "--cert", writeFile(t, "root.pem", root.PEM()))
	crlFile := writeFile(t, "root.crl", testpki.Must(root.CRL(testpki.CRLOptions{Number: big.NewInt(1)})))
	var l api.CRL
	p.runJSON(t, &l, "crl", "create", "--cert-id", ca.ID, "--file", crlFile)
	cert, key, _ := outboundFiles(t, "repeat")
	var m api.MTLSCertificate
	p.runJSON(t, &m, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "repeat", "--environment-type", "development")
	before := storedAudit(t, p, "")

	p.runJSON(t, &ca, "ca-certificate", "update", "--cert-id", ca.ID, "--name", "repeat")
	p.runJSON(t, &l, "crl", "update", "--crl-id", l.ID, "--file", crlFile)
	p.runJSON(t, &m, "mtls-certificate", "enable", "--cert-id", m.ID)
	p.runJSON(t, &m, "mtls-certificate", "disable", "--cert-id", m.ID)
	p.runJSON(t, &m, "mtls-certificate", "disable", "--cert-id", m.ID)
	if !m.Enabled && ca.Name == "repeat" {
		var got []string
		for _, e := range storedAudit(t, p, "")[len(before):] {
			got = append(got, e.Action)
		}
		if len(got) != 1 || got[0] != "mtls-certificate.disable" {
			t.Fatalf("records after the repeats: %v, want only the one disable", got)
		}
	} else {
		t.Fatalf("state after the repeats: CA %+v, certificate %+v", ca, m)
	}
	if lines := auditLines(t, p, "mtls-certificate.enable"); len(lines) != 0 {
		t.Errorf("log lines for enabling an enabled certificate: %v", lines)
	}
}
