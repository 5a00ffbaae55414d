package trustdir

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/kubeletdir"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// update makes files the content of the Secret mounted at w.Dir, failing
// the test on an error.
func update(t testing.TB, w *kubeletdir.Writer, files map[string][]byte) {
	t.Helper()
	if err := w.Update(files); err != nil {
		t.Error(err)
	}
}

// TestSyncAcrossKubeletSwaps: the kubelet deletes the old version right
// after swapping ..data, so a read that resolved ..data just before a swap
// finds its version gone. The read must then start again from the new
// version (one whole version, never an error or a mix): an error here stops
// `serve` at start and flaps mtlsgate_trust_dir_in_sync. Each version pairs
// one CA with its own CRL, so a mixed read would be refused as well.
func TestSyncAcrossKubeletSwaps(t *testing.T) {
	f := newFixture(t)
	a, b := root(t, "partners A"), root(t, "partners B")
	gens := []map[string][]byte{
		{"ca.crt": a.PEM(), "ca.crl": crl(t, a, 1)},
		{"ca.crt": b.PEM(), "ca.crl": crl(t, b, 1)},
	}
	w := &kubeletdir.Writer{Dir: f.dir}
	update(t, w, gens[0])
	f.syncOK()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			update(t, w, gens[i%2])
			time.Sleep(time.Millisecond)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	var failed error
	for n := 0; time.Now().Before(deadline) && failed == nil; n++ {
		if _, err := f.sync.Sync(); err != nil {
			failed = fmt.Errorf("sync %d during kubelet updates: %w", n, err)
		} else if cas, crls := f.cas(), f.crls(); len(cas) != 1 || len(crls) != 1 {
			// The old version deleted file by file while it was read.
			failed = fmt.Errorf("sync %d applied part of a version: CAs %v, %d CRLs", n, cas, len(crls))
		}
	}
	close(stop)
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	f.syncOK()
	if got := f.cas(); len(got) != 1 || len(f.crls()) != 1 {
		t.Fatalf("after the updates: CAs %v, %d CRLs", got, len(f.crls()))
	}
}

// TestSyncKubeletKeyRemoved: a key removed from the Secret withdraws its CA
// and CRL; the kubelet's entries are never warned about.
func TestSyncKubeletKeyRemoved(t *testing.T) {
	f := newFixture(t)
	var logs strings.Builder
	f.sync.Log = slog.New(slog.NewTextHandler(&logs, nil))
	a, b := root(t, "partners A"), root(t, "partners B")
	w := &kubeletdir.Writer{Dir: f.dir}
	update(t, w, map[string][]byte{"a.crt": a.PEM(), "a.crl": crl(t, a, 1), "b.crt": b.PEM()})
	f.syncOK()
	eq(t, f.cas(), "CN=partners A|trust-dir", "CN=partners B|trust-dir")
	if len(f.crls()) != 1 {
		t.Fatalf("CRLs %d", len(f.crls()))
	}
	update(t, w, map[string][]byte{"b.crt": b.PEM()})
	for range 3 {
		f.syncOK()
	}
	eq(t, f.cas(), "CN=partners B|trust-dir")
	if len(f.crls()) != 0 {
		t.Fatalf("CRL of the removed key kept")
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warnings about the kubelet's layout:\n%s", logs.String())
	}
}

// TestSyncKubeletDotKey: a Secret key may start with one dot
// (`.partners.crl`); in the version directory every name is a key, so it is
// read. It used to be skipped like an editor's file, leaving the CA trusted
// without its CRL.
func TestSyncKubeletDotKey(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners")
	w := &kubeletdir.Writer{Dir: f.dir}
	update(t, w, map[string][]byte{"partners.crt": a.PEM(), ".partners.crl": crl(t, a, 1)})
	f.syncOK()
	if len(f.crls()) != 1 {
		t.Fatalf("the CRL in key .partners.crl was not read: %d CRLs", len(f.crls()))
	}
	// In a plain directory, dot files stay skipped (.swp files and the like).
	g := newFixture(t)
	g.write("partners.crt", a.PEM())
	g.write(".partners.crt.swp", []byte("junk"))
	g.syncOK()
	eq(t, g.cas(), "CN=partners|trust-dir")
}

// TestSyncOversizedFile: a file larger than any list a CA publishes (or a
// link to one) is refused by its size, before it is read into memory.
func TestSyncOversizedFile(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners")
	f.write("partners.crt", a.PEM())
	big, err := os.Create(filepath.Join(t.TempDir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(32<<20 + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	big.Close()
	if err := os.Symlink(big.Name(), filepath.Join(f.dir, "huge.crl")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync.Sync(); err == nil || !strings.Contains(err.Error(), "huge.crl") || !strings.Contains(err.Error(), "MiB") {
		t.Fatalf("oversized file: %v", err)
	}
	if len(f.cas()) != 0 {
		t.Fatalf("applied despite the oversized file: %v", f.cas())
	}
}

// TestSyncSpecialFiles: a FIFO, a link to /dev/zero and a link to a
// directory are skipped (warned once), never read: reading a FIFO without a
// writer would block the sync forever, /dev/zero would fill memory.
func TestSyncSpecialFiles(t *testing.T) {
	f := newFixture(t)
	var logs strings.Builder
	f.sync.Log = slog.New(slog.NewTextHandler(&logs, nil))
	a := root(t, "partners")
	f.write("partners.crt", a.PEM())
	if err := syscall.Mkfifo(filepath.Join(f.dir, "fifo.crl"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(f.dir, "zero.crl")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.sync.Sync()
		if err == nil {
			_, err = f.sync.Sync()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sync hangs on a FIFO or device")
	}
	eq(t, f.cas(), "CN=partners|trust-dir")
	if strings.Count(logs.String(), "not a regular file") != 2 {
		t.Errorf("want one warning per special entry:\n%s", logs.String())
	}
}

// TestSyncExpiredWarnedOnceWhileRefused: an expired CA left in the
// directory is warned about once, also while another file keeps the
// directory refused (each refused read parses again).
func TestSyncExpiredWarnedOnceWhileRefused(t *testing.T) {
	f := newFixture(t)
	var logs strings.Builder
	f.sync.Log = slog.New(slog.NewTextHandler(&logs, nil))
	old := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	f.write("old.crt", old.PEM())
	f.write("oops.pem", []byte("not a certificate"))
	for range 3 {
		if _, err := f.sync.Sync(); err == nil {
			t.Fatal("broken directory applied")
		}
	}
	if n := strings.Count(logs.String(), "expired CA certificate skipped"); n != 1 {
		t.Fatalf("expired CA warned about %d times over 3 refused reads, want once:\n%s", n, logs.String())
	}
}

// TestSyncSameMtime: a file rewritten in place with the same size and
// mtime is still seen: reads compare content, not metadata.
func TestSyncSameMtime(t *testing.T) {
	f := newFixture(t)
	a, b := root(t, "partners A"), root(t, "partners B")
	f.write("ca.crt", a.PEM())
	f.syncOK()
	fi, err := os.Stat(filepath.Join(f.dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	f.write("ca.crt", b.PEM())
	if err := os.Chtimes(filepath.Join(f.dir, "ca.crt"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	f.syncOK()
	eq(t, f.cas(), "CN=partners B|trust-dir")
}
