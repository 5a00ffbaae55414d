package admintoken

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// settle lets the next Check look at the file again.
func settle(f *File) {
	f.mu.Lock()
	f.checked = time.Time{}
	f.mu.Unlock()
}

func TestOpenCreatesARandomToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "admin-token")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	toks := Parse(data)
	if len(toks) != 1 || len(toks[0]) != 64 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created %q, mode %v", data, fi.Mode())
	}
	if id, ok := f.Check(toks[0]); !ok || id != ID(toks[0]) {
		t.Fatalf("own token refused: %q %v", id, ok)
	}
	// A second Open keeps the file.
	if _, err := Open(path); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(data) {
		t.Fatal("second Open rewrote the token")
	}
}

func TestRotationWithoutRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	write(t, path, "old-token\n")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var reloads []string
	f.OnReload = func(ids []string, err error) {
		if err != nil {
			reloads = append(reloads, "error: "+err.Error())
			return
		}
		reloads = append(reloads, strings.Join(ids, ","))
	}
	if _, ok := f.Check("old-token"); !ok {
		t.Fatal("old token refused")
	}
	// Both during the switch-over; comments and blank lines are not tokens.
	write(t, path, "# rotating 2026-12\nold-token\n\n  new-token  \n")
	settle(f)
	for _, tok := range []string{"old-token", "new-token"} {
		if _, ok := f.Check(tok); !ok {
			t.Errorf("%s refused during rotation", tok)
		}
	}
	for _, tok := range []string{"", "# rotating 2026-12", "new", "old-token new-token"} {
		if _, ok := f.Check(tok); ok {
			t.Errorf("%q accepted", tok)
		}
	}
	write(t, path, "new-token\n")
	settle(f)
	if _, ok := f.Check("old-token"); ok {
		t.Error("removed token still accepted")
	}
	if id, ok := f.Check("new-token"); !ok || id != ID("new-token") {
		t.Errorf("new token: %q %v", id, ok)
	}
	// An emptied or deleted file is a mistake, not a lock-out: the tokens
	// last read stay, and the problem is reported once per state.
	write(t, path, "# nothing\n")
	settle(f)
	f.Check("new-token")
	settle(f)
	if _, ok := f.Check("new-token"); !ok {
		t.Error("emptied file locked everyone out")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	settle(f)
	if _, ok := f.Check("new-token"); !ok {
		t.Error("deleted file locked everyone out")
	}
	want := []string{ID("old-token") + "," + ID("new-token"), ID("new-token"), "error: ", "error: "}
	if len(reloads) != len(want) {
		t.Fatalf("reloads %q", reloads)
	}
	for i := range want {
		if !strings.HasPrefix(reloads[i], want[i]) {
			t.Errorf("reload %d: %q, want %q...", i, reloads[i], want[i])
		}
	}
	if !strings.Contains(reloads[2], "holds no token") || !strings.Contains(reloads[3], "no such file") {
		t.Errorf("reload errors %q", reloads[2:])
	}
}

func TestChecksAtMostOncePerSecond(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	write(t, path, "a\n")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	stopped := f.checked
	f.now = func() time.Time { return stopped.Add(recheck - time.Nanosecond) }
	write(t, path, "b\n")
	// Within recheck of Open the file is not read again.
	if _, ok := f.Check("a"); !ok {
		t.Fatal("token dropped before the recheck interval")
	}
	f.now = func() time.Time { return stopped.Add(recheck) }
	if _, ok := f.Check("b"); !ok {
		t.Fatal("edit not taken after the recheck interval")
	}
}

func TestOpenRefusesAnEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	write(t, path, "\n# only a comment\n")
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "holds no token") || !strings.Contains(err.Error(), "delete the file") {
		t.Fatalf("empty token file: %v", err)
	}
}
