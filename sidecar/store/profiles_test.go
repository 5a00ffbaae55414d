package store

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/sidecar/problem"
)

func TestProfileVersionsAndRollback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.ActiveProfiles(); ok || err != nil {
		t.Fatalf("fresh store has an active profile set (%v)", err)
	}
	v1 := []byte(`[ {"id":"partner-prod", "clients":["acme-mobile"]} ]`)
	v2 := []byte(`[{"id":"partner-prod","clients":["someone-else"],"methods":["GET"]}]`)
	a, changed, err := s.SetProfiles(v1, "token:1", nil)
	if err != nil || !changed || a.Version != 1 || string(a.Profiles) != `[{"id":"partner-prod","clients":["acme-mobile"]}]` {
		t.Fatalf("set v1: %+v changed=%v err=%v", a, changed, err)
	}
	if again, changed, err := s.SetProfiles([]byte(`[{"id":"partner-prod","clients":["acme-mobile"]}]`), "token:1", nil); err != nil || changed || again.Version != 1 {
		t.Fatalf("same content again: %+v changed=%v err=%v", again, changed, err)
	}
	if b, _, err := s.SetProfiles(v2, "token:2", nil); err != nil || b.Version != 2 {
		t.Fatalf("set v2: %+v %v", b, err)
	}
	_, _, err = s.SetProfiles([]byte(`[{"id":"x","clients":[]}]`), "token:2", nil)
	if p, ok := problem.As(err); !ok || p.Status != 400 || !strings.Contains(p.Detail, "profiles[0].clients") {
		t.Fatalf("invalid set: %v", err)
	}
	if _, err := s.RollbackProfiles(9, "token:1", nil); err == nil {
		t.Fatal("rollback to a missing version accepted")
	} else if p, ok := problem.As(err); !ok || p.Status != 404 {
		t.Fatalf("rollback to a missing version: %v", err)
	}
	r, err := s.RollbackProfiles(1, "token:3", nil)
	if err != nil || r.Version != 3 || r.RollbackOf != 1 || r.Action != "rollback" || !bytes.Equal(r.Profiles, a.Profiles) || r.SHA256 != a.SHA256 {
		t.Fatalf("rollback: %+v %v", r, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Every version survives a reopen, and the last one is active.
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	act, ok, err := s.ActiveProfiles()
	if err != nil || !ok || act.Version != 3 || !bytes.Equal(act.Profiles, a.Profiles) {
		t.Fatalf("active after reopen: %+v %v", act, err)
	}
	hist, err := s.ProfileHistory()
	if err != nil || len(hist) != 3 {
		t.Fatalf("history: %+v %v", hist, err)
	}
	for i, h := range hist {
		if h.Version != i+1 {
			t.Fatalf("history order: %+v", hist)
		}
	}
	if hist[1].Actor != "token:2" || hist[1].SHA256 == hist[0].SHA256 {
		t.Fatalf("version 2 record: %+v", hist[1])
	}
}
