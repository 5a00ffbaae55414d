package trustdir

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestSubdirectoryWarnedOnce: a Secret mounted with `items: [{key:
// partners.crl, path: crls/partners.crl}]` (or any subdirectory) puts the
// list in a subdirectory, which the read does not descend into. It used to
// be skipped without a word: the CA trusted with no CRL, revoked clients
// passing, and the sync reporting success. The skip must be logged, naming
// the subdirectory, once and not every interval; the kubelet's own hidden
// entries (..data, ..<timestamp>) are not worth a word.
func TestSubdirectoryWarnedOnce(t *testing.T) {
	f := newFixture(t)
	var logs strings.Builder
	f.sync.Log = slog.New(slog.NewTextHandler(&logs, nil))
	a := root(t, "partners")
	leaf := testpki.Must(a.Issue(testpki.Options{CommonName: "revoked"}))
	f.write("partners.crt", a.PEM())
	if err := os.Mkdir(filepath.Join(f.dir, "crls"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "crls", "partners.crl"), crl(t, a, 1, leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.dir, "..2026_12_01_01"), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.syncOK()
	}
	eq(t, f.cas(), "CN=partners|trust-dir")
	if n := strings.Count(logs.String(), "subdirectory skipped"); n != 1 || !strings.Contains(logs.String(), "subdirectory=crls") {
		t.Fatalf("subdirectory crls/ warned about %d times over 3 syncs, want once naming it:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "..2026") {
		t.Errorf("the kubelet's hidden entries are warned about:\n%s", logs.String())
	}
}
