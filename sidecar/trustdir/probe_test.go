package trustdir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestProbeSubdirectoryCRLSilentlyIgnored: a Secret mounted with
// `items: [{key: partners.crl, path: crls/partners.crl}]` (or any
// subdirectory) puts the list in a subdirectory. The read skips every
// non-regular entry without a word: the CA is trusted with no CRL, revoked
// clients pass, and the sync reports success (trust_dir_in_sync 1). A file
// the directory cannot use is otherwise an error ("applied whole or not at
// all").
func TestProbeSubdirectoryCRLSilentlyIgnored(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners")
	leaf := testpki.Must(a.Issue(testpki.Options{CommonName: "revoked"}))
	f.write("partners.crt", a.PEM())
	if err := os.Mkdir(filepath.Join(f.dir, "crls"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "crls", "partners.crl"), crl(t, a, 1, leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := f.sync.Sync()
	if err == nil && len(f.crls()) == 0 {
		t.Errorf("sync succeeded with the CA but without the CRL in crls/: the subdirectory was skipped silently (CAs %v)", f.cas())
	}
}
