package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExistingDataDirKeepsItsMode: serve creates a missing --data-dir 0700,
// but must not change the mode of one that exists. It used to force 0700 on
// any: `serve --data-dir /tmp` (or ".", or a volume shared with other
// containers) dropped the sticky bit and locked every other user out. A
// directory others can read or write is used as it is, with a warning.
func TestExistingDataDirKeepsItsMode(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, shared)
	p.stop()
	fi, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&(os.ModeSticky|os.ModePerm) != os.ModeSticky|0o777 {
		t.Errorf("pre-existing shared data dir (mode 1777) changed to %v", fi.Mode())
	}
	if log := p.stderr.String(); !strings.Contains(log, "can be read or written by other users") || !strings.Contains(log, `"mode":"1777"`) {
		t.Errorf("no warning about the shared data dir: %.500s", log)
	}

	// A directory of its own: no warning. A missing one: created 0700.
	own := t.TempDir()
	if err := os.Chmod(own, 0o700); err != nil {
		t.Fatal(err)
	}
	p = startServe(t, own)
	p.stop()
	if strings.Contains(p.stderr.String(), "other users") {
		t.Errorf("warning about a 0700 data dir: %.500s", p.stderr.String())
	}
	fresh := filepath.Join(t.TempDir(), "new", "data")
	startServe(t, fresh).stop()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir created by serve: %v %v", fi.Mode(), err)
	}
}
