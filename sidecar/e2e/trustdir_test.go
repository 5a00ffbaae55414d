package e2e

import (
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// TestTrustDir runs `serve --trust-dir` as a gateway replica with a mounted
// Secret would: the directory's CAs are in the first SDS answer and bundle,
// later edits reach both, the admin API cannot delete what the directory
// keeps, and a broken file changes nothing.
func TestTrustDir(t *testing.T) {
	dir := t.TempDir()
	put := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Secret CA A"}))
	b := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Secret CA B"}))
	leaf := testpki.Must(a.Issue(testpki.Options{CommonName: "revoked client"}))
	put("ca.crt", a.PEM())

	// --sds-crls: the directory's CRLs are watched arriving over SDS too.
	p := startServe(t, t.TempDir(), "--trust-dir", dir, "--trust-dir-interval", "100ms", "--sds-crls")
	c := newSotW(t, p.addrs.SDS, "envoy", "edge", sds.ClientCASecret)
	if first := trustedCA(c.next("initial")); !strings.Contains(first, strings.TrimSpace(string(a.PEM()))) {
		t.Fatalf("first SDS answer lacks the directory's CA:\n%s", first)
	}
	if bd := getBundle(t, p); len(bd.CACertificates) != 1 {
		t.Fatalf("bundle CAs %+v", bd.CACertificates)
	}
	var cas []api.CACertificate
	p.runJSON(t, &cas, "ca-certificate", "list")
	if len(cas) != 1 || cas[0].ManagedBy != store.ManagedByTrustDir {
		t.Fatalf("listed %+v", cas)
	}

	if r := p.run("ca-certificate", "list"); r.code != 0 || !strings.Contains(r.stdout, "FROM") || !strings.Contains(r.stdout, "trust-dir") {
		t.Fatalf("list: %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := p.run("ca-certificate", "describe", "--cert-id", cas[0].ID); r.code != 0 || !strings.Contains(r.stdout, "trust directory") {
		t.Fatalf("describe: %d %s%s", r.code, r.stdout, r.stderr)
	}
	// The admin API refuses to delete it, saying where to change it.
	if r := p.run("ca-certificate", "delete", "--cert-id", cas[0].ID); r.code == 0 || !strings.Contains(r.stderr, "trust directory") {
		t.Fatalf("delete of a managed CA: %d %s", r.code, r.stderr)
	}

	// A second CA and a CRL arrive with the next read.
	put("ca-b.pem", b.PEM())
	put("ca.crl", testpki.Must(a.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}, Number: big.NewInt(3)})))
	pushed := c.until("second CA and CRL", func(x push) bool {
		return strings.Contains(trustedCA(x), strings.TrimSpace(string(b.PEM()))) && crlOf(x) != ""
	})
	if !strings.Contains(trustedCA(pushed), strings.TrimSpace(string(a.PEM()))) {
		t.Fatal("CA A dropped when B was added")
	}
	var crls []api.CRL
	p.runJSON(t, &crls, "crl", "list")
	if len(crls) != 1 || crls[0].Source != "trust-dir" || crls[0].Number != "3" {
		t.Fatalf("CRLs %+v", crls)
	}
	if r := p.run("crl", "delete", "--crl-id", crls[0].ID); r.code == 0 || !strings.Contains(r.stderr, "trust directory") {
		t.Fatalf("delete of a managed CRL: %d %s", r.code, r.stderr)
	}
	newer := writeFile(t, "newer.crl", testpki.Must(a.CRL(testpki.CRLOptions{Number: big.NewInt(4)})))
	if r := p.run("crl", "update", "--crl-id", crls[0].ID, "--file", newer); r.code == 0 || !strings.Contains(r.stderr, "trust directory") {
		t.Fatalf("update of a managed CRL: %d %s", r.code, r.stderr)
	}

	// A CA added through the admin API whose CRL comes from the directory
	// cannot be deleted from under that CRL.
	e := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Admin CA E"}))
	var ecA api.CACertificate
	p.runJSON(t, &ecA, "ca-certificate", "create", "--name", "admin_e", "--cert", writeFile(t, "e.pem", e.PEM()))
	put("e.crl", testpki.Must(e.CRL(testpki.CRLOptions{Number: big.NewInt(1)})))
	waitFor(t, "E's CRL from the directory", func() bool {
		var list []api.CRL
		p.runJSON(t, &list, "crl", "list")
		return len(list) == 2
	})
	if r := p.run("ca-certificate", "delete", "--cert-id", ecA.ID); r.code == 0 || !strings.Contains(r.stderr, "remove that CRL's file") {
		t.Fatalf("delete of a CA carrying a directory CRL: %d %s", r.code, r.stderr)
	}
	if err := os.Remove(filepath.Join(dir, "e.crl")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "E deletable once its CRL file is gone", func() bool { return p.run("ca-certificate", "delete", "--cert-id", ecA.ID).code == 0 })

	waitFor(t, "the bundle with both CAs and the CRL", func() bool {
		bd := getBundle(t, p)
		return len(bd.CACertificates) == 2 && len(bd.CRLs) == 1
	})
	// A broken file: nothing changes, the error is logged once, and the
	// metric says the directory is out of step.
	put("oops.pem", leaf.KeyPEM())
	waitFor(t, "the refusal in the log", func() bool { return strings.Contains(p.stderr.String(), "holds a private key") })
	if bd := getBundle(t, p); len(bd.CACertificates) != 2 || len(bd.CRLs) != 1 {
		t.Fatalf("bundle changed by a refused directory: %d CAs, %d CRLs", len(bd.CACertificates), len(bd.CRLs))
	}
	if m := metricsText(t, p); !strings.Contains(m, "mtlsgate_trust_dir_in_sync 0") {
		t.Fatalf("metrics:\n%s", m)
	}
	if err := os.Remove(filepath.Join(dir, "oops.pem")); err != nil {
		t.Fatal(err)
	}

	// Removing A's file withdraws A and its CRL; B stays.
	if err := os.Remove(filepath.Join(dir, "ca.crl")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	c.until("CA A withdrawn", func(x push) bool {
		return !strings.Contains(trustedCA(x), strings.TrimSpace(string(a.PEM()))) && crlOf(x) == ""
	})
	// The bundle is rebuilt right after the SDS snapshot, so it may lag the
	// push just seen by a moment.
	waitFor(t, "the bundle without CA A", func() bool {
		bd := getBundle(t, p)
		return len(bd.CACertificates) == 1 && len(bd.CRLs) == 0
	})
	waitFor(t, "mtlsgate_trust_dir_in_sync 1", func() bool { return strings.Contains(metricsText(t, p), "mtlsgate_trust_dir_in_sync 1") })

	// Every applied change is in the audit trail, like an admin change:
	// A added first, then B with A's CRL, ..., finally A and its CRL removed.
	applied := auditLines(t, p, "trust-dir.apply")
	sameAsLogLines(t, p, "trust-dir.apply")
	if len(applied) < 3 {
		t.Fatalf("%d trust-dir.apply audit lines, want one per applied change:\n%v", len(applied), applied)
	}
	for _, l := range applied {
		if l["actor"] != "trust-dir" || l["dir"] != dir {
			t.Errorf("audit line %v", l)
		}
	}
	first, _ := json.Marshal(applied[0]["casAdded"])
	second, _ := json.Marshal(applied[1])
	last, _ := json.Marshal(applied[len(applied)-1])
	if !strings.Contains(string(first), cas[0].Fingerprint) ||
		!strings.Contains(string(second), `"crlsAdded":[{"id":`) || !strings.Contains(string(second), `"number":"3"`) ||
		!strings.Contains(string(last), `"casRemoved":["`+cas[0].ID+`"]`) || !strings.Contains(string(last), `"crlsRemoved":["`+crls[0].ID+`"]`) {
		t.Errorf("trust-dir audit lines do not name the changes:\nfirst %s\nsecond %s\nlast %s", first, second, last)
	}
	if m := metricsText(t, p); !strings.Contains(m, `mtlsgate_trust_changes_total{action="trust-dir.apply"} `+strconv.Itoa(len(applied))) {
		t.Errorf("trust-dir changes not counted like admin changes:\n%s", m)
	}
}

// TestTrustDirBrokenAtStart: a replica whose Secret holds a bad file does not
// start serving an empty trust store; it exits saying which file.
func TestTrustDirBrokenAtStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := tryServe(t, t.TempDir(), "--trust-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "ca.pem holds neither a PEM block nor a DER CRL") || !strings.Contains(err.Error(), "start without --trust-dir") {
		t.Fatalf("start with a broken directory: %v", err)
	}
}

// metricsText reads the admin listener's Prometheus exposition.
func metricsText(t *testing.T, p *serveProc) string {
	t.Helper()
	return string(httpBody(t, "http://"+p.addrs.Admin+"/metrics"))
}
