package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestSealingLeavesNoClearKeyInTheFile protects the rewrite of the store
// after the first start with --encryption-key-file: the README promises that
// keys stored in clear are sealed, and that must hold for the file (and so
// for every copy or backup of it), not only for the records. bbolt frees
// the pages that held the clear key without overwriting them; serve rewrites
// the database into a new file before it serves.
func TestSealingLeavesNoClearKeyInTheFile(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "mtlsgate.db")
	p := startServe(t, dir)
	cert, key, chain := outboundFiles(t, "was-clear")
	var m api.MTLSCertificate
	p.runJSON(t, &m, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "was_clear", "--environment-type", "development")
	p.stop()
	clear := func() bool {
		raw, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		return keyInClear(raw, chain.Leaf.KeyPEM())
	}
	if !clear() {
		t.Fatal("test broken: the key is not found in clear before sealing")
	}

	encKey := writeFile(t, "enc.hex", []byte(strings.Repeat("5a", 32)))
	p2 := startServe(t, dir, "--encryption-key-file", encKey)
	if clear() {
		t.Error("serve is running with --encryption-key-file, yet mtlsgate.db still holds the private key in clear")
	}
	// The rewritten file is the one in use: the certificate is still served.
	got := newSotW(t, p2.addrs.SDS, "envoy", "c", "was_clear").next("the outbound secret")
	if got.secrets["was_clear"].GetTlsCertificate().GetPrivateKey().GetInlineBytes() == nil {
		t.Errorf("outbound certificate not served after the rewrite: %v", keys(got.secrets))
	}
}
