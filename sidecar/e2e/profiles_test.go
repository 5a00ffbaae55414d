package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestProfileLifecycle drives `mtlsgate profile` against a real serve: every
// change is a version, the bundle carries the active set, a rollback restores
// an earlier set byte for byte as a new version, and all of it survives a
// restart.
func TestProfileLifecycle(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)

	if r := p.run("profile", "list"); r.code != 0 || !strings.Contains(r.stdout, "No profile set stored") {
		t.Fatalf("list before any set: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if b := getBundle(t, p); len(b.Profiles) != 0 || b.ProfilesVersion != 0 {
		t.Fatalf("bundle carries profiles before any set: %s v%d", b.Profiles, b.ProfilesVersion)
	}

	example, err := os.ReadFile("../../policies/profiles/profiles.json")
	if err != nil {
		t.Fatal(err)
	}
	var v1 api.SetProfilesResult
	p.runJSON(t, &v1, "profile", "set", "--file", "../../policies/profiles/profiles.json")
	if v1.Version != 1 || !v1.Changed || !v1.Active {
		t.Fatalf("set example: %+v", v1)
	}
	b := getBundle(t, p)
	if b.ProfilesVersion != 1 || !sameJSON(b.Profiles, v1.Profiles) {
		t.Fatalf("bundle after set: v%d %s", b.ProfilesVersion, b.Profiles)
	}
	if r := p.run("profile", "list"); r.code != 0 || !strings.Contains(r.stdout, "partner-prod") || !strings.Contains(r.stdout, "120/minute") {
		t.Fatalf("list: %q %q", r.stdout, r.stderr)
	}

	// A stricter set, as an operator might push it by mistake.
	strict := writeFile(t, "strict.json", []byte(`{"profiles":[{"id":"partner-prod","clients":["globex-*"],"methods":["GET"]}]}`))
	var v2 api.SetProfilesResult
	p.runJSON(t, &v2, "profile", "set", "--file", strict)
	if v2.Version != 2 || getBundle(t, p).ProfilesVersion != 2 {
		t.Fatalf("set strict: %+v", v2)
	}
	var same api.SetProfilesResult
	p.runJSON(t, &same, "profile", "set", "--file", strict)
	if same.Changed || same.Version != 2 {
		t.Fatalf("same content made a version: %+v", same)
	}

	// Invalid files are refused with the JSON path, before anything changes.
	for _, tc := range []struct{ doc, mention string }{
		{`{"profiles":[{"id":"a","clients":["*"],"methods":["GET POST"]}]}`, "profiles[0].methods[0]"},
		{`{"profiles":[{"id":"a","clients":["*"],"rateLimit":{"requests":0,"per":"minute"}}]}`, "profiles[0].rateLimit.requests"},
		{`{"profile":[]}`, "unknown key"},
		{`{"profiles":[{"id":"a","clients":["*"]},{"id":"a","clients":["x"]}]}`, "profiles[1].id"},
		{`not json`, "not valid JSON"},
	} {
		r := p.run("profile", "set", "--file", writeFile(t, "bad.json", []byte(tc.doc)))
		if r.code != 1 || !strings.Contains(r.stderr, tc.mention) {
			t.Errorf("bad file %s: exit %d stderr %q, want a mention of %q", tc.doc, r.code, r.stderr, tc.mention)
		}
	}
	// The API validates too (a client that skips the CLI's check).
	err = p.client(t).Do("PUT", api.PathProfiles, map[string]any{"profiles": []any{map[string]any{"id": "a"}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "profiles[0].clients") {
		t.Fatalf("API accepted an invalid set: %v", err)
	}

	var rb api.SetProfilesResult
	p.runJSON(t, &rb, "profile", "rollback", "--to-version", "1")
	if rb.Version != 3 || rb.RollbackOf != 1 || !sameJSON(rb.Profiles, v1.Profiles) || rb.SHA256 != v1.SHA256 {
		t.Fatalf("rollback: %+v", rb)
	}
	b = getBundle(t, p)
	if b.ProfilesVersion != 3 || !sameJSON(b.Profiles, v1.Profiles) {
		t.Fatalf("bundle after rollback: v%d %s", b.ProfilesVersion, b.Profiles)
	}
	var fromFile struct{ Profiles json.RawMessage }
	if err := json.Unmarshal(example, &fromFile); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(fromFile.Profiles, b.Profiles) {
		t.Fatalf("served profiles differ from the file: %s", b.Profiles)
	}
	if r := p.run("profile", "rollback", "--to-version", "42"); r.code != 1 || !strings.Contains(r.stderr, "profile history") {
		t.Fatalf("rollback to a missing version: %d %q", r.code, r.stderr)
	}
	if r := p.run("profile", "rollback"); r.code != 2 {
		t.Fatalf("rollback without --to-version: exit %d", r.code)
	}

	var hist []api.ProfileSet
	p.runJSON(t, &hist, "profile", "history")
	if len(hist) != 3 || !hist[2].Active || hist[0].Active || hist[2].Action != "rollback" || hist[1].SHA256 == hist[0].SHA256 {
		t.Fatalf("history: %+v", hist)
	}
	if r := p.run("profile", "history"); r.code != 0 || !strings.Contains(r.stdout, "rollback to 1") || !strings.Contains(r.stdout, "3*") {
		t.Fatalf("history table: %q", r.stdout)
	}
	if !strings.Contains(p.stderr.String(), `"action":"profile.rollback"`) {
		t.Errorf("no audit line for the rollback")
	}

	p.stop()
	p = startServe(t, dir)
	if b := getBundle(t, p); b.ProfilesVersion != 3 || !sameJSON(b.Profiles, v1.Profiles) {
		t.Fatalf("bundle after restart: v%d %s", b.ProfilesVersion, b.Profiles)
	}
}

// sameJSON compares documents ignoring layout (the CLI indents its output).
func sameJSON(a, b []byte) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}
