// Package wasmbuild compiles a Go main package to a proxy-wasm module with the
// standard toolchain and caches the result by a hash of everything that goes
// into it, so plain `go test` needs no make step and reruns do not rebuild.
package wasmbuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	filterbuild "github.com/mtlsgate/mtlsgate/filter/wasmbuild"
)

// Flags are the build flags of every filter module in this project.
var Flags = []string{"build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w"}

// NamedFlags build the same module with its name section kept, for tools
// that report guest functions by name (profiles, allocation checks).
var NamedFlags = []string{"build", "-buildmode=c-shared", "-trimpath"}

// CacheDir is where built modules are kept: $MTLSGATE_WASM_CACHE, else the
// user cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("MTLSGATE_WASM_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate user cache dir: %w", err)
	}
	return filepath.Join(d, "mtlsgate", "wasm"), nil
}

func wasmEnv() []string {
	return append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
}

// Build compiles pkg (an import path, or a directory relative to dir) run from
// dir, and returns the path of the cached .wasm.
func Build(dir, pkg string) (string, error) { return build(dir, pkg, Flags, "") }

// BuildNamed is Build with NamedFlags.
func BuildNamed(dir, pkg string) (string, error) { return build(dir, pkg, NamedFlags, "-named") }

func build(dir, pkg string, flags []string, suffix string) (string, error) {
	key, err := sourceKey(dir, pkg, flags)
	if err != nil {
		return "", err
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("create wasm cache: %w", err)
	}
	name := strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimLeft(pkg, "./"))
	out := filepath.Join(cache, name+suffix+"-"+key[:24]+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	// Build beside the target and rename, so concurrent test binaries never
	// see a half-written module.
	tmp, err := os.CreateTemp(cache, name+"-*.tmp")
	if err != nil {
		return "", fmt.Errorf("create temp module: %w", err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName)
	root, err := moduleRoot(dir)
	if err != nil {
		return "", err
	}
	args := append([]string{}, flags...)
	// Inside the mtlsgate module, build exactly as `make build` does; other
	// modules (tests of this package) build plain.
	if _, err := os.Stat(filepath.Join(root, filterbuild.Dir)); err == nil {
		overlay, err := filterbuild.Overlay(root)
		if err != nil {
			return "", err
		}
		overlayFile := tmpName + ".overlay.json"
		if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
			return "", fmt.Errorf("write build overlay: %w", err)
		}
		defer os.Remove(overlayFile)
		args = append(args, "-overlay", overlayFile)
	}
	args = append(args, "-o", tmpName, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = wasmEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := os.Rename(tmpName, out); err != nil {
		return "", fmt.Errorf("install built module: %w", err)
	}
	return out, nil
}

// sourceKey hashes the toolchain version, the build flags, the module's
// go.mod/go.sum, and the content of every Go and embedded file of every
// package pkg depends on that is not in the standard library or the
// read-only module cache (those are pinned by go.sum and the version).
func sourceKey(dir, pkg string, flags []string) (string, error) {
	cmd := exec.Command("go", "list", "-deps",
		"-f", "{{.ImportPath}}\t{{.Standard}}\t{{.Dir}}\t{{if .Module}}{{.Module.Path}}@{{.Module.Version}} {{.Module.GoMod}}{{end}}\t{{join .GoFiles \",\"}}\t{{join .EmbedFiles \",\"}}",
		pkg)
	cmd.Dir = dir
	cmd.Env = wasmEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list %s: %w\n%s", pkg, err, stderr.String())
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", runtime.Version(), strings.Join(flags, " "))
	root, err := moduleRoot(dir)
	if err != nil {
		return "", err
	}
	for _, f := range filterbuild.Files(root) {
		if err := hashFile(h, f); err != nil && !os.IsNotExist(err) {
			return "", err
		}
	}
	if v, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		h.Write(v)
	}
	for _, line := range strings.Split(strings.TrimRight(string(outb), "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			return "", fmt.Errorf("unexpected go list line %q", line)
		}
		fmt.Fprintf(h, "pkg %s %s\n", f[0], f[3])
		if f[1] == "true" {
			continue
		}
		mod := strings.Fields(f[3])
		if len(mod) == 2 && strings.Contains(mod[0], "@v") {
			continue // versioned dependency: its version is its identity
		}
		if len(mod) == 2 {
			for _, n := range []string{mod[1], filepath.Join(filepath.Dir(mod[1]), "go.sum")} {
				if err := hashFile(h, n); err != nil && !os.IsNotExist(err) {
					return "", err
				}
			}
		}
		for _, list := range []string{f[4], f[5]} {
			if list == "" {
				continue
			}
			for _, n := range strings.Split(list, ",") {
				if err := hashFile(h, filepath.Join(f[2], n)); err != nil {
					return "", err
				}
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// moduleRoot is the directory of the main module's go.mod as seen from dir.
func moduleRoot(dir string) (string, error) {
	cmd := exec.Command("go", "env", "GOMOD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("%s is not inside the mtlsgate module", dir)
	}
	return filepath.Dir(mod), nil
}

func hashFile(h io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(h, "file %s\n", name)
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", name, err)
	}
	return nil
}
