package e2e

import (
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestProbeCRLIssuerNameNotChecked: a CA re-issued under a new DN with the
// same key (common on CA renewal/renaming) makes the old DN's lists verify
// with the new CA's key. The admin API and the URL refresh attach a list to
// a CA when the CA's key verifies its signature, without checking that the
// list's issuer is the CA (the trust directory does check, trustdir.match).
// A list of "Old CA" (signed by the shared key, higher CRL number) replaces
// "New CA"'s own list: the bundle then has no list for New CA's
// certificates and a revoked client passes `mtlsgate verify --bundle`.
func TestProbeCRLIssuerNameNotChecked(t *testing.T) {
	oldCA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Old CA"}))
	newCA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "New CA", Signer: oldCA.Key}))
	leaf := testpki.Must(newCA.Issue(testpki.Options{CommonName: "revoked client"}))
	newList := testpki.Must(newCA.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}, Number: big.NewInt(5), NextUpdate: time.Now().Add(4 * time.Second)}))
	oldList := testpki.Must(oldCA.CRL(testpki.CRLOptions{Number: big.NewInt(6), NextUpdate: time.Now().Add(time.Hour)}))

	var current atomic.Pointer[[]byte]
	current.Store(&newList)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(*current.Load()) }))
	defer srv.Close()

	p := startServe(t, t.TempDir(), "--crl-refresh-min-interval", "200ms")
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "new_ca", "--cert", writeFile(t, "new.pem", newCA.PEM()))
	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--url", srv.URL+"/new.crl")

	leafFile := writeFile(t, "leaf.pem", leaf.PEM())
	verify := func() result {
		b := httpBody(t, "http://"+p.addrs.Bundle+"/v1/bundle")
		return runCLI(nil, "verify", "--bundle", writeFile(t, "bundle.json", b), "--cert", leafFile)
	}
	if r := verify(); r.code != 1 || !strings.Contains(r.stdout, "REVOKED") {
		t.Fatalf("revoked client before the replay: exit %d %s %s", r.code, r.stdout, r.stderr)
	}

	// What a refresh (e.g. an on-path attacker replaying a genuine old-DN
	// list over plain-HTTP CRL distribution) stores:
	current.Store(&oldList)
	waitFor(t, "the refresher to download the other list", func() bool {
		var c api.CRL
		p.runJSON(t, &c, "crl", "describe", "--crl-id", crl.ID)
		return c.Number == "6" || c.LastError != ""
	})
	var c api.CRL
	p.runJSON(t, &c, "crl", "describe", "--crl-id", crl.ID)
	if c.Number == "6" {
		r := verify()
		t.Errorf("refresher stored a CRL issued by %q as CA %q's list (lastError %q); verify of the revoked client now: exit %d %s",
			"CN=Old CA", ca.Subject, c.LastError, r.code, strings.TrimSpace(r.stdout))
	}

	// Same through the admin API with a file.
	p2 := startServe(t, t.TempDir())
	var ca2 api.CACertificate
	p2.runJSON(t, &ca2, "ca-certificate", "create", "--name", "new_ca", "--cert", writeFile(t, "new.pem", newCA.PEM()))
	if r := p2.run("crl", "create", "--cert-id", ca2.ID, "--file", writeFile(t, "old.crl", oldList)); r.code == 0 {
		t.Errorf("admin API attached a CRL whose issuer (CN=Old CA) is not the CA (%s): %s", ca2.Subject, r.stdout)
	}
}
