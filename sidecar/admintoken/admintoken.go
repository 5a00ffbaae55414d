// Package admintoken holds the admin API's bearer tokens: a file with one
// token per line, re-read when it changes, so an operator rotates a token
// without restarting the sidecar (add the new line, move the clients over,
// delete the old line).
package admintoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// recheck is how often, at most, the file is looked at again: a removed
// token keeps working for up to this long.
const recheck = time.Second

// Parse returns the tokens of a token file: one per line, surrounding space
// trimmed, blank lines and lines starting with '#' skipped.
func Parse(data []byte) []string {
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out
}

// ID is the non-secret name of a token in audit lines and logs: the first 8
// hex digits of its SHA-256.
func ID(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:4])
}

// File is a token file being served from. It is safe for concurrent use.
type File struct {
	path string
	// OnReload, if set, hears every re-read: the IDs now accepted, or why
	// the file was not taken (the previous tokens then stay in force).
	OnReload func(ids []string, err error)

	mu   sync.Mutex
	sums [][sha256.Size]byte
	ids  []string
	// seen is the state of the file last looked at, taken or not, so a
	// file that cannot be used is reported once, not at every check.
	seen    stamp
	checked time.Time
	now     func() time.Time // the clock; tests stop it
}

// stamp tells one state of the file from another: a digest of its content,
// or of the error reading it. A few dozen bytes read once a second at most,
// and unlike a modification time it cannot miss an edit made within one
// clock tick.
type stamp [sha256.Size]byte

func (f *File) read() ([]byte, stamp, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, sha256.Sum256([]byte("error: " + err.Error())), fmt.Errorf("read admin token file: %w", err)
	}
	return data, sha256.Sum256(data), nil
}

// Open reads path, first creating it (mode 0600, directories 0700) with one
// random token if it does not exist.
func Open(path string) (*File, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := create(path); err != nil {
			return nil, err
		}
	}
	f := &File{path: path, now: time.Now}
	data, st, err := f.read()
	if err != nil {
		return nil, err
	}
	if err := f.take(data); err != nil {
		return nil, err
	}
	f.seen, f.checked = st, f.now()
	return f, nil
}

func create(path string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("generate admin token: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create directory for admin token: %w", err)
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create admin token file %s: %w", path, err)
	}
	if _, err := fh.WriteString(hex.EncodeToString(b) + "\n"); err != nil {
		fh.Close()
		return fmt.Errorf("write admin token file %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("write admin token file %s: %w", path, err)
	}
	return nil
}

// take installs the tokens of data; when it holds none nothing changes.
// Callers hold mu (or own f).
func (f *File) take(data []byte) error {
	toks := Parse(data)
	if len(toks) == 0 {
		return fmt.Errorf("admin token file %s holds no token: write one token per line (any random string, e.g. from `openssl rand -hex 32`), or delete the file to have one generated at the next start", f.path)
	}
	sums := make([][sha256.Size]byte, len(toks))
	ids := make([]string, len(toks))
	for i, t := range toks {
		sums[i], ids[i] = sha256.Sum256([]byte(t)), ID(t)
	}
	f.sums, f.ids = sums, ids
	return nil
}

// IDs returns the IDs of the tokens accepted now.
func (f *File) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

// Check reports whether tok is one of the file's tokens, and its ID.
func (f *File) Check(tok string) (id string, ok bool) {
	f.refresh()
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := sha256.Sum256([]byte(tok))
	match := -1
	for i := range f.sums {
		// Every token is compared, so the time taken says nothing about
		// which one (if any) matched.
		if subtle.ConstantTimeCompare(sum[:], f.sums[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 || tok == "" {
		return "", false
	}
	return f.ids[match], true
}

// refresh re-reads the file if it changed, at most once per recheck. The
// file is read outside the lock, so a slow filesystem delays only the
// request that happens to look, not every other one.
func (f *File) refresh() {
	f.mu.Lock()
	now := f.now()
	if now.Sub(f.checked) < recheck && !now.Before(f.checked) {
		f.mu.Unlock()
		return
	}
	f.checked = now
	f.mu.Unlock()

	data, st, err := f.read()

	f.mu.Lock()
	if st == f.seen {
		f.mu.Unlock()
		return
	}
	f.seen = st
	if err == nil {
		err = f.take(data)
	}
	ids := append([]string(nil), f.ids...)
	f.mu.Unlock()
	if f.OnReload != nil {
		f.OnReload(ids, err)
	}
}
