package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestCRLRedirectToOwnAdminAPIRefused: a CRL distribution point's redirect
// must not make the sidecar send requests to its own loopback listeners. A
// remote CRL server, or anyone on its plain-HTTP path, chooses where a
// redirect leads; the download used to follow it to the admin API and
// report the answer's status (401) back in the error.
func TestCRLRedirectToOwnAdminAPIRefused(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Redirect Root"}))
	p := startServe(t, t.TempDir())
	target := "http://" + p.addrs.Admin + "/v1/ca-certificates"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target, http.StatusFound) }))
	defer srv.Close()
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "redir", "--cert", writeFile(t, "r.pem", root.PEM()))
	r := p.run("crl", "create", "--cert-id", ca.ID, "--url", srv.URL+"/ca.crl")
	// "HTTP 401" is how a followed redirect would end (the admin API wants a
	// token); a bare "401" also matches an ephemeral port number.
	if r.code == 0 || strings.Contains(r.stderr, "HTTP 401") || !strings.Contains(r.stderr, "redirect from "+srv.URL+"/ca.crl to "+target+" refused") {
		t.Errorf("CRL download and a redirect to the sidecar's own admin API: exit %d, %s", r.code, strings.TrimSpace(r.stderr))
	}
	if strings.Contains(p.stderr.String(), `"path":"/v1/ca-certificates"`) {
		t.Error("the admin API received the redirected request")
	}
}
