package wasmbuild

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBuildCachesBySourceHash(t *testing.T) {
	t.Setenv("MTLSGATE_WASM_CACHE", t.TempDir())
	dir := t.TempDir()
	write := func(body string) {
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/w\n\ngo 1.24\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\n"+body+"\nfunc main() {}\n"), 0o644)
	}
	write("var x = 1")
	p1, err := Build(dir, ".")
	if err != nil {
		t.Fatal(err)
	}
	st1, err := os.Stat(p1)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Build(dir, ".")
	if err != nil || p2 != p1 {
		t.Fatalf("rebuild of unchanged sources: %q %v, want %q", p2, err, p1)
	}
	if st2, _ := os.Stat(p2); !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("unchanged sources were rebuilt")
	}
	write("var x = 2")
	p3, err := Build(dir, ".")
	if err != nil || p3 == p1 {
		t.Fatalf("changed sources reused %q (%v)", p3, err)
	}
	if m, _ := filepath.Glob(filepath.Join(os.Getenv("MTLSGATE_WASM_CACHE"), "*.tmp")); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}
}
