// Package wasmbuild holds what the filter's wasip1 build needs beyond `go
// build`: an overlay that swaps two standard-library files for versions that
// do not link WASI filesystem calls Envoy's wasm host lacks.
//
// Envoy refuses to load a module whose imports it cannot satisfy. With the
// standard library as is, crypto/x509 (system-root discovery) and os (the
// sticky-bit fallback reached from net's init) import fd_readdir,
// fd_filestat_get, path_filestat_get and path_readlink; the filter calls none of
// that code, but the linker keeps it. The test host refuses the same imports,
// so a filter built without the overlay fails its tests instead of failing in
// Envoy.
package wasmbuild

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// replacements maps files under GOROOT/src to their replacements in this
// directory.
var replacements = map[string]string{
	"crypto/x509/root_unix.go": "x509_roots_wasip1.go.in",
	"os/sticky_bsd.go":         "os_sticky_wasip1.go.in",
}

// Dir is this package's directory relative to the module root.
const Dir = "filter/wasmbuild"

// Files returns the replacement files, for callers that hash build inputs.
func Files(moduleRoot string) []string {
	var out []string
	for _, r := range replacements {
		out = append(out, filepath.Join(moduleRoot, Dir, r))
	}
	sort.Strings(out)
	return out
}

// Overlay returns the JSON for `go build -overlay`, for the Go toolchain on
// PATH. It fails when that toolchain no longer has a file we replace, so a Go
// upgrade that moves them is noticed at build time.
func Overlay(moduleRoot string) ([]byte, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("find GOROOT with 'go env GOROOT': %w", err)
	}
	goroot := strings.TrimSpace(string(out))
	replace := map[string]string{}
	for std, ours := range replacements {
		from := filepath.Join(goroot, "src", filepath.FromSlash(std))
		if _, err := os.Stat(from); err != nil {
			return nil, fmt.Errorf("this Go toolchain has no %s to replace (%w): update %s for it", std, err, Dir)
		}
		to, err := filepath.Abs(filepath.Join(moduleRoot, Dir, ours))
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(to); err != nil {
			return nil, fmt.Errorf("overlay file missing: %w", err)
		}
		replace[from] = to
	}
	return json.Marshal(map[string]any{"Replace": replace})
}
