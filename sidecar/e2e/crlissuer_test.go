package e2e

import (
	"encoding/json"
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

// TestCRLOfRenamedCARefused protects the issuer-name check on every path
// that attaches a list to a CA outside the trust directory: the URL refresh
// and `crl create/update --file`. A CA re-issued under a new subject with
// the same key (a common renewal) makes the old subject's lists verify with
// the new CA's key. Stored as the new CA's list, such a list (newer number,
// nothing revoked) would replace the CA's own, and Envoy and the filter,
// which look lists up by issuer name, would then have no list for the new
// CA's certificates: a revoked client passes. The signature is not enough;
// the list's issuer must be the CA's subject.
func TestCRLOfRenamedCARefused(t *testing.T) {
	oldCA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Old CA"}))
	newCA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "New CA", Signer: oldCA.Key}))
	leaf := testpki.Must(newCA.Issue(testpki.Options{CommonName: "revoked client"}))
	newList := testpki.Must(newCA.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}, Number: big.NewInt(5), NextUpdate: time.Now().Add(4 * time.Second)}))
	oldList := testpki.Must(oldCA.CRL(testpki.CRLOptions{Number: big.NewInt(6), NextUpdate: time.Now().Add(time.Hour)}))
	wantDNs := func(t *testing.T, what, msg string) {
		t.Helper()
		if !strings.Contains(msg, `"CN=Old CA"`) || !strings.Contains(msg, `"CN=New CA"`) {
			t.Errorf("%s does not name both the list's issuer and the CA: %q", what, msg)
		}
	}

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
		t.Fatalf("revoked client before the other list is served: exit %d %s %s", r.code, r.stdout, r.stderr)
	}

	// The distribution point (or whoever sits on its plain-HTTP path) now
	// serves the old name's genuine list.
	current.Store(&oldList)
	var c api.CRL
	waitFor(t, "the refresher to download the other list", func() bool {
		p.runJSON(t, &c, "crl", "describe", "--crl-id", crl.ID)
		return c.Number == "6" || c.LastError != ""
	})
	if c.Number != "5" {
		t.Errorf("refresher stored a CRL issued by CN=Old CA as CA %q's list: number %s", ca.Subject, c.Number)
	}
	wantDNs(t, "the refresh error", c.LastError)
	if r := verify(); r.code != 1 || !strings.Contains(r.stdout, "REVOKED") {
		t.Errorf("revoked client after the refresh: exit %d %s", r.code, strings.TrimSpace(r.stdout))
	}

	// The admin API, create and update alike.
	oldFile := writeFile(t, "old.crl", oldList)
	refused := func(what string, args ...string) {
		t.Helper()
		r := p.run(append(args, "--output", "json")...)
		var doc struct {
			Error struct{ Code, Detail string } `json:"error"`
		}
		if r.code != 1 || json.Unmarshal([]byte(r.stdout), &doc) != nil || doc.Error.Code != "crl_wrong_issuer" {
			t.Errorf("%s with another name's list: exit %d, %s %s", what, r.code, r.stdout, r.stderr)
			return
		}
		wantDNs(t, what, doc.Error.Detail)
	}
	refused("crl update", "crl", "update", "--crl-id", crl.ID, "--file", oldFile)
	p.runJSON(t, &api.CRL{}, "crl", "delete", "--crl-id", crl.ID)
	refused("crl create", "crl", "create", "--cert-id", ca.ID, "--file", oldFile)
}
