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
	if r := p.run("crl", "describe", "--crl-id", crl.ID); !strings.Contains(r.stdout, "STALE (no nextUpdate") || !strings.Contains(r.stdout, "current until") {
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
