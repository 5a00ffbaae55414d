package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

// TestProbeSecondServeUnlinksLiveAdminSocket: daemon.Listen removes any
// socket file at a unix: path before binding ("a socket left by a killed
// predecessor"), without checking whether a live process still listens on
// it. A second `mtlsgate serve` started by mistake with the same flags
// binds the admin socket before it finds the store locked, then exits and
// its listener's Close unlinks the path: the running sidecar's admin API
// is unreachable until it is restarted.
func TestProbeSecondServeUnlinksLiveAdminSocket(t *testing.T) {
	dir := t.TempDir()
	sockDir := t.TempDir()
	admin := "unix:" + filepath.Join(sockDir, "admin.sock")
	sdsSock := "unix:" + filepath.Join(sockDir, "sds.sock")
	p := startServe(t, dir, "--admin-listen", admin, "--sds-listen", sdsSock)
	if r := runCLI(nil, "health", "--server", admin); r.code != 0 {
		t.Fatalf("health: %d %s", r.code, r.stderr)
	}
	_, err := tryServe(t, dir, "--admin-listen", admin, "--sds-listen", sdsSock)
	if err == nil {
		t.Fatal("second serve on the same data dir started")
	}
	t.Logf("second serve refused: %.200s", err)
	if r := runCLI(nil, "health", "--server", admin); r.code != 0 {
		t.Errorf("the running sidecar's admin socket no longer answers after a refused second start: exit %d %s", r.code, strings.TrimSpace(r.stderr))
	}
	_ = p
}

// TestProbeSecondServeHijacksSDSSocket: a second serve (other data dir,
// same --sds-listen unix: path) silently takes over the socket of a live
// sidecar instead of refusing like a taken TCP port does: Envoys that
// (re)connect now get the second store's secrets.
func TestProbeSecondServeHijacksSDSSocket(t *testing.T) {
	sockDir := t.TempDir()
	sdsSock := "unix:" + filepath.Join(sockDir, "sds.sock")
	p := startServe(t, t.TempDir(), "--sds-listen", sdsSock)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "First"}))
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", "first", "--cert", writeFile(t, "r.pem", root.PEM()))

	p2, err := tryServe(t, t.TempDir(), "--sds-listen", sdsSock)
	if err != nil {
		t.Logf("second serve refused (good): %.200s", err)
		return
	}
	defer p2.stop()
	got := newSotW(t, sdsSock, "envoy", "c", sds.ClientCASecret).next("CA secret")
	if !strings.Contains(trustedCA(got), strings.TrimSpace(string(root.PEM()))) {
		t.Errorf("a second serve took over the live sidecar's SDS socket %s: a new Envoy connection gets the other store's (empty) trust", sdsSock)
	}
}
