package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestProbeCRLRedirectToLoopback: the CRL download follows a distribution
// point's redirects anywhere, including the sidecar's own loopback
// listeners (a remote CRL server, or anyone on its plain-HTTP path, makes
// the sidecar issue GETs inside the pod; the status comes back in lastError).
func TestProbeCRLRedirectToLoopback(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Redirect Root"}))
	p := startServe(t, t.TempDir())
	target := "http://" + p.addrs.Admin + "/v1/ca-certificates"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target, http.StatusFound) }))
	defer srv.Close()
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "redir", "--cert", writeFile(t, "r.pem", root.PEM()))
	r := p.run("crl", "create", "--cert-id", ca.ID, "--url", srv.URL+"/ca.crl")
	if strings.Contains(r.stderr, "401") {
		t.Errorf("CRL fetch followed a redirect to the sidecar's own admin API (answer: %s)", strings.TrimSpace(r.stderr))
	}
}

// TestProbeDataDirChmodsSharedDirectory: README: "--data-dir (default
// ./mtlsgate-data, created 0700)". An existing directory is also forced to
// 0700, dropping the sticky bit and everyone else's access: `serve
// --data-dir /tmp` (or `.`, or a volume shared with other containers)
// locks every other user out of it.
func TestProbeDataDirChmodsSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, shared)
	p.stop()
	fi, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&(os.ModeSticky|0o077) != os.ModeSticky|0o077 {
		t.Errorf("pre-existing shared data dir (mode 1777) changed to %v", fi.Mode())
	}
}
