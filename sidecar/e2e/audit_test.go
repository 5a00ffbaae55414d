package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strconv"
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

// TestAuditListIsPaged: GET /v1/audit answers a bounded page however long
// the trail, names the page before in a Link header, and refuses a page size
// above the maximum; `mtlsgate audit list` follows the pages, so it still
// shows every record, or the newest --limit, in order. The trail is written
// through the store before serve starts, one record a minute.
func TestAuditListIsPaged(t *testing.T) {
	const total = api.AuditPageMax + 500
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := start
	s, err := store.Open(dir, store.Options{Now: func() time.Time { return at }, AuditRetention: 2 * total})
	if err != nil {
		t.Fatal(err)
	}
	rename := func(before, after store.CA) *store.AuditEntry {
		return &store.AuditEntry{Actor: "test", Action: "ca-certificate.update", After: map[string]any{"id": after.ID, "name": after.Name}}
	}
	ca, err := s.CreateCA(store.CA{Name: "paged0", Fingerprint: "fp", Subject: "CN=paged"}, func(ca store.CA) *store.AuditEntry {
		return &store.AuditEntry{Actor: "test", Action: "ca-certificate.create", After: map[string]any{"id": ca.ID}}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < total; i++ {
		at = start.Add(time.Duration(i) * time.Minute)
		if _, _, err := s.RenameCA(ca.ID, fmt.Sprintf("paged%d", i%2), rename); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	p := startServe(t, dir, "--audit-retention", strconv.Itoa(2*total))

	token, err := os.ReadFile(p.addrs.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, []store.AuditEntry, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+p.addrs.Admin+path, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var list []store.AuditEntry
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatalf("GET %s: %v: %s", path, err, body)
			}
		}
		return resp.StatusCode, list, resp.Header.Get("Link"), string(body)
	}
	seqs := func(list []store.AuditEntry) (first, last uint64) {
		if len(list) == 0 {
			return 0, 0
		}
		return list[0].Seq, list[len(list)-1].Seq
	}

	// Without limit: the newest default page, and the way to the one before.
	code, list, link, body := get(api.PathAudit)
	if first, last := seqs(list); code != 200 || len(list) != api.AuditPageDefault || first != total-api.AuditPageDefault+1 || last != total {
		t.Fatalf("GET %s: %d, %d records %d..%d: %.200s", api.PathAudit, code, len(list), first, last, body)
	}
	wantLink := fmt.Sprintf("<%s?before=%d&limit=%d>; rel=\"next\"", api.PathAudit, total-api.AuditPageDefault+1, api.AuditPageDefault)
	if link != wantLink {
		t.Fatalf("Link %q, want %q", link, wantLink)
	}
	// Followed to the oldest record, the pages hold every record once, and
	// the last page names none after it.
	got := len(list)
	for next := strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`); next != ""; {
		prevFirst, _ := seqs(list)
		code, list, link, body = get(next)
		if _, last := seqs(list); code != 200 || len(list) == 0 || last != prevFirst-1 {
			t.Fatalf("GET %s: %d, %d records ending at %d, want the records before %d: %.200s", next, code, len(list), last, prevFirst, body)
		}
		got += len(list)
		next = ""
		if link != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	if first, _ := seqs(list); got != total || first != 1 {
		t.Fatalf("the pages held %d records down to %d, want %d down to 1", got, first, total)
	}
	// since is kept in the next page's path.
	since := start.Add((total - 1500) * time.Minute).Format(time.RFC3339)
	code, list, link, _ = get(api.PathAudit + "?since=" + since)
	if code != 200 || len(list) != api.AuditPageDefault || !strings.Contains(link, "since="+strings.ReplaceAll(since, ":", "%3A")) {
		t.Fatalf("GET ?since=%s: %d, %d records, Link %q", since, code, len(list), link)
	}
	// A page above the maximum, or "0" (all, once), is refused saying how
	// to page.
	for _, l := range []string{strconv.Itoa(api.AuditPageMax + 1), "0", "-1"} {
		code, _, _, body = get(api.PathAudit + "?limit=" + l)
		if code != http.StatusBadRequest || !strings.Contains(body, "bad_limit") || !strings.Contains(body, "from 1 to "+strconv.Itoa(api.AuditPageMax)) || !strings.Contains(body, `rel=\"next\"`) {
			t.Errorf("limit=%s: %d %s", l, code, body)
		}
	}
	if code, _, _, body = get(api.PathAudit + "?before=x"); code != http.StatusBadRequest || !strings.Contains(body, "bad_before") {
		t.Errorf("before=x: %d %s", code, body)
	}
	if code, _, _, body = get(api.PathAudit + "?limit=" + strconv.Itoa(api.AuditPageMax)); code != 200 {
		t.Errorf("limit=%d (the maximum): %d %.200s", api.AuditPageMax, code, body)
	}

	// The CLI follows the pages: all records, or the newest --limit, oldest
	// first, with or without --since.
	inOrder := func(what string, list []store.AuditEntry, n int, last uint64) {
		t.Helper()
		if len(list) != n {
			t.Fatalf("%s: %d records, want %d", what, len(list), n)
		}
		for i, e := range list {
			if e.Seq != last-uint64(n-1-i) {
				t.Fatalf("%s: record %d is seq %d, want %d", what, i, e.Seq, last-uint64(n-1-i))
			}
		}
	}
	inOrder("audit list", storedAudit(t, p, ""), total, total)
	inOrder("audit list --limit 10200", storedAudit(t, p, "", "--limit", "10200"), 10200, total)
	inOrder("audit list --limit 3", storedAudit(t, p, "", "--limit", "3"), 3, total)
	inOrder("audit list --since", storedAudit(t, p, "", "--since", since), 1500, total)
	if r := p.run("audit", "list"); r.code != 0 || strings.Count(r.stdout, "\n") != total+1 {
		t.Errorf("audit list table: exit %d, %d lines, want %d: %s", r.code, strings.Count(r.stdout, "\n"), total+1, r.stderr)
	}
}
