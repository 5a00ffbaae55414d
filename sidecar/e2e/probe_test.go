package e2e

// Throwaway security probes (branch sideprobe). Each test asserts the
// behaviour the documentation promises; a failure is a finding.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestProbeSealingLeavesPlaintextKeyInDB: README (Store): "Keys stored in
// clear are sealed when a key is first given." After the first start with
// --encryption-key-file, the database file must no longer hold the key in
// clear.
func TestProbeSealingLeavesPlaintextKeyInDB(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	cert, key, chain := outboundFiles(t, "was-clear")
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "was_clear", "--environment-type", "development")
	p.stop()

	encKey := writeFile(t, "enc.hex", []byte(strings.Repeat("5a", 32)))
	p2 := startServe(t, dir, "--encryption-key-file", encKey)
	// a few more writes, as a running sidecar would make
	for i := 0; i < 3; i++ {
		p2.run("mtls-certificate", "disable", "--cert-id", "nope")
	}
	p2.stop()

	raw, err := os.ReadFile(filepath.Join(dir, "mtlsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if keyInClear(raw, chain.Leaf.KeyPEM()) {
		t.Fatal("after sealing with --encryption-key-file the private key is still readable in clear in mtlsgate.db (old bbolt page not overwritten)")
	}
}
