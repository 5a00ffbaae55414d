package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

// TestAdminOverUnixSocket: with serve --admin-listen unix:/path, every
// command reaches the admin API through the socket, named by --server or by
// MTLSGATE_SERVER, in either spelling (unix:/path, unix:///path).
func TestAdminOverUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	p := startServe(t, t.TempDir(), "--admin-listen", "unix:"+sock)
	if p.addrs.Admin != "unix:"+sock {
		t.Fatalf("admin bound to %s", p.addrs.Admin)
	}
	data, err := os.ReadFile(p.addrs.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := admintoken.Parse(data)[0]

	for _, env := range [][]string{nil, {"MTLSGATE_SERVER=unix:" + sock}, {"MTLSGATE_SERVER=unix://" + sock}} {
		args := []string{"health"}
		if env == nil {
			args = append(args, "--server", "unix:"+sock)
		}
		if r := runCLI(env, args...); r.code != 0 || strings.TrimSpace(r.stdout) != "ready" {
			t.Fatalf("health %v %v: exit %d, %q %q", env, args, r.code, r.stdout, r.stderr)
		}
	}

	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Socket CA"}))
	caFile := writeFile(t, "ca.pem", root.PEM())
	r := runCLI(nil, "ca-certificate", "create", "--name", "socket_ca", "--cert", caFile,
		"--server", "unix:"+sock, "--admin-token-file", p.addrs.TokenFile, "--output", "json")
	if r.code != 0 {
		t.Fatalf("create over the socket: exit %d: %s", r.code, r.stderr)
	}
	r = runCLI([]string{"MTLSGATE_SERVER=unix://" + sock, "MTLSGATE_ADMIN_TOKEN=" + token}, "ca-certificate", "list", "--output", "json")
	var list []api.CACertificate
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &list) != nil || len(list) != 1 || list[0].Name != "socket_ca" {
		t.Fatalf("list over the socket: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}

	p.stop()
	if r := runCLI(nil, "health", "--server", "unix:"+sock); r.code != 1 || !strings.Contains(r.stderr, "unix:"+sock) {
		t.Fatalf("health with serve stopped: exit %d, %q", r.code, r.stderr)
	}
	r = runCLI(nil, "ca-certificate", "list", "--server", "unix:"+sock, "--admin-token-file", p.addrs.TokenFile)
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach mtlsgate serve at unix:"+sock) {
		t.Fatalf("list with serve stopped: exit %d, %q", r.code, r.stderr)
	}
}

// TestSecondServeLeavesLiveAdminSocket: a second serve started by mistake
// with the same flags must fail on the store's lock before it touches a
// listener. It used to bind the admin socket first (removing the live one's
// file), then fail on the lock and remove the path on exit: the running
// sidecar's admin API stayed unreachable until it was restarted.
func TestSecondServeLeavesLiveAdminSocket(t *testing.T) {
	dir := t.TempDir()
	sockDir := t.TempDir()
	admin := "unix:" + filepath.Join(sockDir, "admin.sock")
	sdsSock := "unix:" + filepath.Join(sockDir, "sds.sock")
	startServe(t, dir, "--admin-listen", admin, "--sds-listen", sdsSock)
	if r := runCLI(nil, "health", "--server", admin); r.code != 0 {
		t.Fatalf("health: %d %s", r.code, r.stderr)
	}
	_, err := tryServe(t, dir, "--admin-listen", admin, "--sds-listen", sdsSock)
	if err == nil {
		t.Fatal("second serve on the same data dir started")
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second serve did not stop on the store's lock: %.300s", err)
	}
	if r := runCLI(nil, "health", "--server", admin); r.code != 0 {
		t.Errorf("the running sidecar's admin socket no longer answers after a refused second start: exit %d %s", r.code, strings.TrimSpace(r.stderr))
	}
}

// TestSecondServeRefusesLiveSDSSocket: a second serve with another data dir
// and the same --sds-listen unix: path must refuse, as for a TCP address in
// use, instead of replacing the live socket: Envoys that (re)connected would
// get the other store's secrets. A socket nobody listens on (a killed
// predecessor's) is still replaced.
func TestSecondServeRefusesLiveSDSSocket(t *testing.T) {
	sockPath := filepath.Join(t.TempDir(), "sds.sock")
	sdsSock := "unix:" + sockPath
	p := startServe(t, t.TempDir(), "--sds-listen", sdsSock)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "First"}))
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", "first", "--cert", writeFile(t, "r.pem", root.PEM()))

	p2, err := tryServe(t, t.TempDir(), "--sds-listen", sdsSock)
	if err == nil {
		p2.stop()
		t.Fatal("a second serve started on the live sidecar's SDS socket")
	}
	if !strings.Contains(err.Error(), "another process listens on "+sockPath) {
		t.Errorf("refusal does not name the socket in use: %.300s", err)
	}
	got := newSotW(t, sdsSock, "envoy", "c", sds.ClientCASecret).next("CA secret")
	if !strings.Contains(trustedCA(got), strings.TrimSpace(string(root.PEM()))) {
		t.Errorf("the live sidecar's SDS socket %s no longer serves its trust", sdsSock)
	}

	// Killed, the first leaves its socket file behind; a new serve takes it.
	p.kill9()
	if _, err := os.Stat(sockPath); err != nil {
		t.Fatalf("test broken: no stale socket after kill -9: %v", err)
	}
	startServe(t, t.TempDir(), "--sds-listen", sdsSock)
}
