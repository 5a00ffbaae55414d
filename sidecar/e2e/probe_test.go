package e2e

// Throwaway security probes (branch sideprobe). Each test asserts the
// behaviour the documentation promises; a failure is a finding.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestProbeSealingLeavesPlaintextKeyInDB: README (Store): "Keys stored in
// clear are sealed when a key is first given." After the first start with
// --encryption-key-file, the database file must no longer hold the key in
// clear. bbolt frees the old page but does not overwrite it; the clear key
// stays in mtlsgate.db until later writes happen to reuse that page.
func TestProbeSealingLeavesPlaintextKeyInDB(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "mtlsgate.db")
	p := startServe(t, dir)
	cert, key, chain := outboundFiles(t, "was-clear")
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "was_clear", "--environment-type", "development")
	p.stop()

	encKey := writeFile(t, "enc.hex", []byte(strings.Repeat("5a", 32)))
	p2 := startServe(t, dir, "--encryption-key-file", encKey)
	clear := func() bool {
		raw, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		return keyInClear(raw, chain.Leaf.KeyPEM())
	}
	if clear() {
		t.Error("serve is running with --encryption-key-file and reports keysEncrypted, yet mtlsgate.db still holds the private key in clear")
	}
	writes := 0
	for ; writes < 20 && clear(); writes++ {
		r := testpki.Must(testpki.NewRoot(testpki.Options{}))
		p2.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", fmt.Sprintf("later_%d", writes), "--cert", writeFile(t, fmt.Sprintf("r%d.pem", writes), r.PEM()))
	}
	t.Logf("clear key gone from the file after %d later writes", writes)
	p2.stop()
}
