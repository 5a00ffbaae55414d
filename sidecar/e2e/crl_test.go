package e2e

import (
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

// TestCRLsStayOutOfSDSByDefault: without --sds-crls the validation context
// Envoy gets carries the CAs and no CRL (the filter checks revocation from
// the bundle, which carries them), so a CRL change pushes nothing to Envoy.
func TestCRLsStayOutOfSDSByDefault(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Bundle-only CRL Root"}))
	leaf := testpki.Must(root.Issue(testpki.Options{CommonName: "revoked client"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "crl_root", "--cert", writeFile(t, "root.pem", root.PEM()))
	c := newSotW(t, p.addrs.SDS, "envoy", "edge", sds.ClientCASecret)
	first := c.next("initial")
	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "root.crl", testpki.Must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}}))))
	if b := getBundle(t, p); len(b.CRLs) != 1 || b.CRLs[0].CAID != ca.ID || !strings.Contains(b.CRLs[0].PEM, "-----BEGIN X509 CRL-----") {
		t.Fatalf("bundle CRLs %+v, want the uploaded list", b.CRLs)
	}
	c.never("a push for the CRL", 2*time.Second, func(push) bool { return true })
	// A stream opened after the upload gets the context as it is now.
	vc := newSotW(t, p.addrs.SDS, "envoy", "edge", sds.ClientCASecret).next("the validation context").secrets[sds.ClientCASecret].GetValidationContext()
	if vc.GetCrl() != nil || vc.GetOnlyVerifyLeafCertCrl() {
		t.Fatalf("validation context carries crl %q, only_verify_leaf_cert_crl %v; want neither without --sds-crls", vc.GetCrl().GetInlineString(), vc.GetOnlyVerifyLeafCertCrl())
	}
	if vc.GetTrustedCa().GetInlineString() != trustedCA(first) || !strings.Contains(trustedCA(first), strings.TrimSpace(string(root.PEM()))) {
		t.Fatalf("trusted_ca changed or lacks the CA:\n%s", vc.GetTrustedCa().GetInlineString())
	}
}

// TestCRLFileReachesSDSAndBundle runs with --sds-crls: the lists go to Envoy
// as well as to the filter.
func TestCRLFileReachesSDSAndBundle(t *testing.T) {
	p := startServe(t, t.TempDir(), "--sds-crls")
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "CRL Root"}))
	leaf := testpki.Must(root.Issue(testpki.Options{CommonName: "revoked client"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "crl_root", "--cert", writeFile(t, "root.pem", root.PEM()))
	c := newSotW(t, p.addrs.SDS, "envoy", "edge", sds.ClientCASecret)
	if crlOf(c.next("initial")) != "" {
		t.Fatal("CRL present before any was uploaded")
	}

	// DER is accepted for CRLs and served as PEM.
	der := testpki.Must(root.CRLDER(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}, Number: big.NewInt(7)}))
	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "root.crl", der))
	if !strings.HasPrefix(crl.ID, "mtlscrl_") || crl.Number != "7" || crl.RevokedCount != 1 || crl.Source != "file" || crl.Stale {
		t.Fatalf("created %+v", crl)
	}
	got := c.next("CRL create")
	if !strings.Contains(crlOf(got), "-----BEGIN X509 CRL-----") {
		t.Fatalf("validation context crl = %q", crlOf(got))
	}
	if b := getBundle(t, p); len(b.CRLs) != 1 || b.CRLs[0].CAID != ca.ID || b.CRLs[0].PEM != crlOf(got) {
		t.Fatalf("bundle CRLs %+v", b.CRLs)
	}
	var desc api.CACertificate
	p.runJSON(t, &desc, "ca-certificate", "describe", "--cert-id", ca.ID)
	if desc.CRL == nil || desc.CRL.ID != crl.ID || desc.CRL.Stale {
		t.Fatalf("describe CRL state %+v", desc.CRL)
	}
	// One list per CA: a second is refused with the way forward.
	if r := p.run("crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "again.crl", der)); r.code == 0 || !strings.Contains(r.stderr, "crl update --crl-id "+crl.ID) {
		t.Fatalf("second CRL: %d %s", r.code, r.stderr)
	}
	// update swaps the list in one step: same CRL, newer number, pushed.
	other := testpki.Must(root.Issue(testpki.Options{CommonName: "also revoked"}))
	newer := testpki.Must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf, other}, Number: big.NewInt(8)}))
	var updated api.CRL
	p.runJSON(t, &updated, "crl", "update", "--crl-id", crl.ID, "--file", writeFile(t, "newer.crl", newer))
	if updated.ID != crl.ID || updated.Number != "8" || updated.RevokedCount != 2 || !updated.CreatedAt.Equal(crl.CreatedAt) {
		t.Fatalf("updated %+v", updated)
	}
	// The audit line tells the two lists apart.
	waitFor(t, "the crl.update audit line", func() bool { return len(auditLines(t, p, "crl.update")) == 1 })
	line := auditLines(t, p, "crl.update")[0]
	before, _ := line["before"].(map[string]any)
	after, _ := line["after"].(map[string]any)
	if before["id"] != crl.ID || before["number"] != "7" || after["number"] != "8" || before["source"] != "file" || after["thisUpdate"] == nil {
		t.Fatalf("crl.update audit line: before %v after %v", before, after)
	}
	pushed := crlOf(c.next("CRL update"))
	if pushed == crlOf(got) || !strings.Contains(pushed, "-----BEGIN X509 CRL-----") {
		t.Fatal("the new list was not pushed over SDS")
	}
	if b := getBundle(t, p); len(b.CRLs) != 1 || b.CRLs[0].PEM != pushed {
		t.Fatalf("bundle CRLs after update %+v", b.CRLs)
	}
	// An older list would un-revoke: refused, the stored one kept.
	older := testpki.Must(root.CRL(testpki.CRLOptions{Number: big.NewInt(6)}))
	if r := p.run("crl", "update", "--crl-id", crl.ID, "--file", writeFile(t, "older.crl", older)); r.code == 0 || !strings.Contains(r.stderr, "older than CRL "+crl.ID) {
		t.Fatalf("older CRL: %d %s", r.code, r.stderr)
	}
	if r := p.run("crl", "update", "--crl-id", crl.ID); r.code == 0 || !strings.Contains(r.stderr, "exactly one of --file and --url") {
		t.Fatalf("update without a list: %d %s", r.code, r.stderr)
	}
	var kept api.CRL
	p.runJSON(t, &kept, "crl", "describe", "--crl-id", crl.ID)
	if kept.Number != "8" {
		t.Fatalf("after the refused update the CRL is number %s, want 8", kept.Number)
	}
	// From a file to the CA's URL: the list comes from there, and so will
	// its refreshes.
	byURL := testpki.Must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}, Number: big.NewInt(9)}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(byURL) }))
	defer srv.Close()
	p.runJSON(t, &updated, "crl", "update", "--crl-id", crl.ID, "--url", srv.URL+"/root.crl")
	if updated.Source != srv.URL+"/root.crl" || updated.URL != updated.Source || updated.Number != "9" || updated.LastFetchAt.IsZero() {
		t.Fatalf("updated to a URL: %+v", updated)
	}
	c.next("CRL update from URL")
	p.runJSON(t, &api.CRL{}, "crl", "delete", "--crl-id", crl.ID)
	if crlOf(c.next("CRL delete")) != "" {
		t.Fatal("deleted CRL still served")
	}

	// A stale file CRL is accepted (it still revokes) and flagged.
	stale := testpki.Must(root.CRL(testpki.CRLOptions{ThisUpdate: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-time.Hour)}))
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "stale.crl", stale))
	if !crl.Stale {
		t.Error("past nextUpdate not reported stale")
	}
	if r := p.run("crl", "list"); !strings.Contains(r.stdout, "STALE") {
		t.Errorf("crl list does not show staleness:\n%s", r.stdout)
	}
	if b := getBundle(t, p); len(b.CRLs) != 1 || !b.CRLs[0].Stale {
		t.Errorf("bundle does not flag the stale CRL: %+v", b.CRLs)
	}
	// Deleting the CA takes its CRL with it.
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "delete", "--cert-id", ca.ID)
	var crls []api.CRL
	p.runJSON(t, &crls, "crl", "list")
	if len(crls) != 0 {
		t.Errorf("CRLs of a deleted CA remain: %+v", crls)
	}
}

// TestCRLURLRefresh serves a CRL from an HTTP server, changes it, then breaks
// the server: the sidecar picks up the new list before nextUpdate, keeps the
// last good one on failure, and reports it stale once nextUpdate passes.
func TestCRLURLRefresh(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "URL Root"}))
	var current atomic.Pointer[[]byte]
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		b := current.Load()
		if b == nil {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Write(*b)
	}))
	defer srv.Close()
	set := func(number int64, next time.Duration) []byte {
		b := testpki.Must(root.CRL(testpki.CRLOptions{Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(next)}))
		current.Store(&b)
		return b
	}
	set(1, 4*time.Second)

	// --sds-crls: the refreshed list is watched arriving over SDS.
	p := startServe(t, t.TempDir(), "--crl-refresh-min-interval", "200ms", "--sds-crls")
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "url_root", "--cert", writeFile(t, "root.pem", root.PEM()))
	c := newDelta(t, p.addrs.SDS, "envoy", "edge", sds.ClientCASecret)
	c.next("initial")
	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--url", srv.URL+"/root.crl")
	if crl.Number != "1" || crl.Source != srv.URL+"/root.crl" {
		t.Fatalf("created %+v", crl)
	}
	c.next("CRL 1")
	// The same list downloaded again changes nothing: no audit line (checked
	// at the end).
	fetched := fetches.Load()
	waitFor(t, "list 1 downloaded again", func() bool { return fetches.Load() > fetched })

	// The CA publishes a new list; it is fetched before the old nextUpdate.
	second := set(2, 3*time.Second)
	published := time.Now()
	got := c.until("CRL 2 over SDS", func(p push) bool { return strings.Contains(crlOf(p), strings.TrimSpace(string(second))) })
	t.Logf("CRL 2 reached the SDS client %s after the CA published it (refresh at half the time to nextUpdate)", got.at.Sub(published).Round(time.Millisecond))
	var refreshed api.CRL
	p.runJSON(t, &refreshed, "crl", "describe", "--crl-id", crl.ID)
	if refreshed.Number != "2" || refreshed.LastError != "" || refreshed.Stale {
		t.Fatalf("after refresh %+v", refreshed)
	}

	// The server breaks: the error is recorded, the last good list stays.
	current.Store(nil)
	waitFor(t, "the fetch failure to be recorded", func() bool {
		p.runJSON(t, &refreshed, "crl", "describe", "--crl-id", crl.ID)
		return refreshed.LastError != ""
	})
	if refreshed.Number != "2" || !strings.Contains(refreshed.LastError, "503") {
		t.Fatalf("after failure %+v", refreshed)
	}
	if b := getBundle(t, p); len(b.CRLs) != 1 || b.CRLs[0].PEM != string(second) {
		t.Fatal("bundle lost the last good CRL after a failed fetch")
	}

	// Past nextUpdate with no fresher list: stale in crl list, describe and the bundle.
	waitFor(t, "the CRL to go stale", func() bool {
		var crls []api.CRL
		p.runJSON(t, &crls, "crl", "list")
		return len(crls) == 1 && crls[0].Stale
	})
	var desc api.CACertificate
	p.runJSON(t, &desc, "ca-certificate", "describe", "--cert-id", ca.ID)
	if desc.CRL == nil || !desc.CRL.Stale || desc.CRL.LastError == "" {
		t.Errorf("describe CRL state %+v", desc.CRL)
	}
	if r := p.run("ca-certificate", "describe", "--cert-id", ca.ID); !strings.Contains(r.stdout, "STALE") || !strings.Contains(r.stdout, "last error") {
		t.Errorf("describe table:\n%s", r.stdout)
	}
	waitFor(t, "the bundle to flag the stale CRL", func() bool {
		b := getBundle(t, p)
		return len(b.CRLs) == 1 && b.CRLs[0].Stale
	})

	// Recovery: the next good fetch clears the error and the staleness.
	set(3, time.Hour)
	waitFor(t, "recovery", func() bool {
		p.runJSON(t, &refreshed, "crl", "describe", "--crl-id", crl.ID)
		return refreshed.Number == "3"
	})
	if refreshed.LastError != "" || refreshed.Stale {
		t.Errorf("after recovery %+v", refreshed)
	}
	t.Logf("%d fetches", fetches.Load())

	// Each new list is an audit line naming the refresher; downloads that
	// brought the same list again are not.
	var changes []string
	for _, l := range auditLines(t, p, "crl.update") {
		before, _ := l["before"].(map[string]any)
		after, _ := l["after"].(map[string]any)
		if l["actor"] != "crl-refresh" || after["id"] != crl.ID || l["caId"] != ca.ID {
			t.Errorf("refresh audit line %v", l)
		}
		changes = append(changes, fmt.Sprint(before["number"], "->", after["number"]))
	}
	if strings.Join(changes, " ") != "1->2 2->3" {
		t.Errorf("refresh audit lines record %q, want the two new lists (1->2 2->3) after %d fetches", changes, fetches.Load())
	}
	// The store holds the same records as the lines: the two refreshes.
	if stored := sameAsLogLines(t, p, "crl.update"); len(stored) != 2 || stored[1].Actor != "crl-refresh" {
		t.Errorf("stored crl.update records %+v", stored)
	}
}
