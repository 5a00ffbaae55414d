package e2e

import (
	"math/big"
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

// TestTrustDirKubeletSecret runs `serve --trust-dir` on a directory the way
// the kubelet lays out and updates a mounted Secret. Replicas start while
// the Secret is being updated (the start must not fail on a version deleted
// under the read), a removed key withdraws its CA and CRL, the kubelet's
// entries are never warned about, and a directory that disappears and comes
// back is refused meanwhile and applied again after.
func TestTrustDirKubeletSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trust")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Secret CA A"}))
	b := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Secret CA B"}))
	crlA := testpki.Must(a.CRL(testpki.CRLOptions{Number: big.NewInt(1)}))
	crlB := testpki.Must(b.CRL(testpki.CRLOptions{Number: big.NewInt(1)}))
	gens := []map[string][]byte{
		{"ca.crt": a.PEM(), "ca.crl": crlA},
		{"ca.crt": b.PEM(), "ca.crl": crlB},
	}
	w := &kubeletdir.Writer{Dir: dir}
	if err := w.Update(gens[0]); err != nil {
		t.Fatal(err)
	}

	// Starts during a stream of updates.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := w.Update(gens[i%2]); err != nil {
				werr = err
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	for i := range 8 {
		p, err := tryServe(t, t.TempDir(), "--trust-dir", dir, "--trust-dir-interval", "10ms")
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("start %d during Secret updates: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
		bd := getBundle(t, p)
		stderr := p.stderr.String()
		p.stop()
		if len(bd.CACertificates) != 1 || len(bd.CRLs) != 1 {
			t.Errorf("start %d: bundle with %d CAs and %d CRLs, want one version whole", i, len(bd.CACertificates), len(bd.CRLs))
		}
		if strings.Contains(stderr, "not applied") || strings.Contains(stderr, "..data") || strings.Contains(stderr, "..2026") {
			t.Errorf("start %d: errors or warnings during Secret updates:\n%s", i, stderr)
		}
	}
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}

	p := startServe(t, t.TempDir(), "--trust-dir", dir, "--trust-dir-interval", "50ms")
	if err := w.Update(map[string][]byte{"a.crt": a.PEM(), "a.crl": crlA, "b.crt": b.PEM()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both CAs and A's CRL", func() bool {
		bd := getBundle(t, p)
		return len(bd.CACertificates) == 2 && len(bd.CRLs) == 1
	})
	// Keys a.crt and a.crl removed from the Secret.
	if err := w.Update(map[string][]byte{"b.crt": b.PEM()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A and its CRL withdrawn", func() bool {
		bd := getBundle(t, p)
		return len(bd.CACertificates) == 1 && len(bd.CRLs) == 0
	})

	// The directory disappears (volume unmounted) and comes back.
	moved := dir + ".away"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "out of sync while the directory is gone", func() bool {
		return strings.Contains(metricsText(t, p), "mtlsgate_trust_dir_in_sync 0")
	})
	if bd := getBundle(t, p); len(bd.CACertificates) != 1 {
		t.Fatalf("a missing directory changed the trust: %d CAs", len(bd.CACertificates))
	}
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync once it is back", func() bool { return strings.Contains(metricsText(t, p), "mtlsgate_trust_dir_in_sync 1") })

	// In a plain directory, a FIFO or a link to /dev/zero beside the files
	// neither hangs nor fills memory; each is warned about once.
	plain := t.TempDir()
	if err := os.WriteFile(filepath.Join(plain, "b.crt"), b.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(plain, "pipe.crl"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(plain, "zero.crl")); err != nil {
		t.Fatal(err)
	}
	q := startServe(t, t.TempDir(), "--trust-dir", plain, "--trust-dir-interval", "50ms")
	time.Sleep(300 * time.Millisecond)
	if n := strings.Count(q.stderr.String(), `"entry":"zero.crl"`) + strings.Count(q.stderr.String(), `"entry":"pipe.crl"`); n != 2 {
		t.Errorf("pipe.crl and zero.crl warned about %d times in all, want once each:\n%s", n, q.stderr.String())
	}
	if bd := getBundle(t, q); len(bd.CACertificates) != 1 {
		t.Errorf("bundle with %d CAs", len(bd.CACertificates))
	}
}
