package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestCRLWithoutNextUpdateGoesStale: a list without nextUpdate is current
// for --crl-max-age-without-next-update after its thisUpdate, then stale in
// every place a list past its nextUpdate is: the API and CLI, the metric,
// and the bundle, which also carries the moment for the filter to judge by.
func TestCRLWithoutNextUpdateGoesStale(t *testing.T) {
	p := startServe(t, t.TempDir(), "--crl-max-age-without-next-update", "8s")
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Undated CRL Root"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "undated", "--cert", writeFile(t, "root.pem", root.PEM()))
	thisUpdate := time.Now().UTC().Truncate(time.Second)
	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "undated.crl", testpki.Must(root.CRLWithoutNextUpdate(thisUpdate))))
	staleAfter := thisUpdate.Add(8 * time.Second)
	if !crl.NextUpdate.IsZero() || !crl.StaleAfter.Equal(staleAfter) || crl.Stale {
		t.Fatalf("created %+v, want no nextUpdate, staleAfter %s, fresh", crl, staleAfter)
	}
	if b := getBundle(t, p); len(b.CRLs) != 1 || !b.CRLs[0].StaleAfter.Equal(staleAfter) || b.CRLs[0].Stale {
		t.Fatalf("bundle CRLs %+v", b.CRLs)
	}
	if m := metricsText(t, p); !strings.Contains(m, "mtlsgate_crls_stale 0") {
		t.Errorf("metrics before the max age:\n%s", m)
	}

	// Nothing changes in the store: the clock alone makes it stale, as it
	// does a list whose nextUpdate passes.
	waitFor(t, "the bundle to flag the undated CRL stale", func() bool {
		b := getBundle(t, p)
		return len(b.CRLs) == 1 && b.CRLs[0].Stale
	})
	if m := metricsText(t, p); !strings.Contains(m, "mtlsgate_crls_stale 1") {
		t.Errorf("metrics after the max age:\n%s", m)
	}
	var crls []api.CRL
	p.runJSON(t, &crls, "crl", "list")
	if len(crls) != 1 || !crls[0].Stale {
		t.Errorf("crl list %+v", crls)
	}
	p.runJSON(t, &ca, "ca-certificate", "describe", "--cert-id", ca.ID)
	if ca.CRL == nil || !ca.CRL.Stale || !ca.CRL.StaleAfter.Equal(staleAfter) {
		t.Errorf("CA's CRL state %+v", ca.CRL)
	}
	if r := p.run("ca-certificate", "describe", "--cert-id", ca.ID); !strings.Contains(r.stdout, "(none; stale after "+staleAfter.Format(time.RFC3339)+")") {
		t.Errorf("ca-certificate describe does not say when the list without nextUpdate goes stale:\n%s%s", r.stdout, r.stderr)
	}
	if r := p.run("crl", "describe", "--crl-id", crl.ID); !strings.Contains(r.stdout, "STALE (no nextUpdate") || !strings.Contains(r.stdout, "was current until") ||
		!strings.Contains(r.stdout, "mtlsgate crl update --crl-id "+crl.ID) || !strings.Contains(r.stdout, "Number:       -") {
		t.Errorf("crl describe:\n%s%s", r.stdout, r.stderr)
	}
}

// With the default max age (a week), a list without nextUpdate issued a
// month ago is stale from the moment it is stored.
func TestCRLWithoutNextUpdateDefaultMaxAge(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Old Undated CRL Root"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "undated_old", "--cert", writeFile(t, "root.pem", root.PEM()))
	var crl api.CRL
	old := testpki.Must(root.CRLWithoutNextUpdate(time.Now().Add(-30 * 24 * time.Hour)))
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "old.crl", old))
	if !crl.Stale {
		t.Fatalf("a month-old list without nextUpdate is not stale: %+v", crl)
	}
	if b := getBundle(t, p); len(b.CRLs) != 1 || !b.CRLs[0].Stale {
		t.Fatalf("bundle CRLs %+v", b.CRLs)
	}
	if r := runCLI(nil, "serve", "--crl-max-age-without-next-update", "0s"); r.code != 2 || !strings.Contains(r.stderr, "--crl-max-age-without-next-update") {
		t.Errorf("serve with a zero max age: %d %s", r.code, r.stderr)
	}
}

// TestCRLWithoutNextUpdateNearYear9999: a list without nextUpdate whose
// thisUpdate is late in year 9999 (a CA with a broken clock, or a list
// dated "never expires") goes stale past the last moment JSON can carry.
// The bundle could not be encoded, so every publish failed: nothing new
// reached Envoy or the filter, and /readyz stayed 503, until the list was
// removed. Such a list is now current until the end of year 9999.
func TestCRLWithoutNextUpdateNearYear9999(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Far Future CRL Root"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "far_future", "--cert", writeFile(t, "root.pem", root.PEM()))
	thisUpdate := time.Date(9999, 12, 30, 0, 0, 0, 0, time.UTC)
	r := p.run("crl", "create", "--cert-id", ca.ID, "--file", writeFile(t, "future.crl", testpki.Must(root.CRLWithoutNextUpdate(thisUpdate))), "--output", "json")
	if r.code != 0 {
		t.Fatalf("crl create: %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(nil, "health", "--server", "http://"+p.addrs.Admin); r.code != 0 {
		t.Fatalf("serve not ready after storing the list: %s%s", r.stdout, r.stderr)
	}
	b := getBundle(t, p)
	if len(b.CRLs) != 1 || b.CRLs[0].StaleAfter.Year() != 9999 || b.CRLs[0].Stale {
		t.Fatalf("bundle CRLs %+v, want the list, current until year 9999", b.CRLs)
	}
	var crls []api.CRL
	p.runJSON(t, &crls, "crl", "list")
	if len(crls) != 1 || crls[0].StaleAfter.Year() != 9999 {
		t.Errorf("crl list %+v", crls)
	}
}
