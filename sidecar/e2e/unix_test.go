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
