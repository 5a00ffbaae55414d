// Package kubeletdir lays out and updates a directory the way the kubelet's
// atomic writer updates a mounted Secret, so tests of --trust-dir run
// against the real layout: each version of the keys in a ..<timestamp>
// directory, a ..data link to the current one, and a top-level link per key
// into ..data.
package kubeletdir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Writer updates Dir. It is safe for use from several goroutines.
type Writer struct {
	Dir string
	mu  sync.Mutex
	n   int
}

// Update makes files the Secret's content, in the kubelet's order: the new
// version directory, a ..data_tmp link renamed over ..data, key links added
// and removed, and the previous version directory deleted last (a reader
// that resolved ..data just before the swap finds its version gone).
func (w *Writer) Update(files map[string][]byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	gen := fmt.Sprintf("..2026_12_01_10_00_00.%09d", w.n)
	d := filepath.Join(w.Dir, gen)
	if err := os.Mkdir(d, 0o755); err != nil {
		return err
	}
	for n, data := range files {
		if err := os.WriteFile(filepath.Join(d, n), data, 0o644); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(w.Dir, "..data"))
	tmp := filepath.Join(w.Dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(w.Dir, "..data")); err != nil {
		return err
	}
	entries, err := os.ReadDir(w.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, keep := files[e.Name()]; !keep && !strings.HasPrefix(e.Name(), "..") {
			if err := os.Remove(filepath.Join(w.Dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for n := range files {
		if err := os.Symlink(filepath.Join("..data", n), filepath.Join(w.Dir, n)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if old != "" {
		return os.RemoveAll(filepath.Join(w.Dir, old))
	}
	return nil
}
