package e2e

import (
	"os"
	"testing"
)

// TestProbeDataDirChmodsSharedDirectory: README: "--data-dir (default
// ./mtlsgate-data, created 0700)". An existing directory is also forced to
// 0700, dropping the sticky bit and everyone else's access: `serve
// --data-dir /tmp` (or `.`, or a volume shared with other containers)
// locks every other user out of it.
func TestProbeDataDirChmodsSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, shared)
	p.stop()
	fi, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&(os.ModeSticky|0o077) != os.ModeSticky|0o077 {
		t.Errorf("pre-existing shared data dir (mode 1777) changed to %v", fi.Mode())
	}
}
