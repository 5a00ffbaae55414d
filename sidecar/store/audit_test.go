package store

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// note is an audit argument that records action for whatever it is given.
func note[T any](action string) func(T) *AuditEntry {
	return func(v T) *AuditEntry { return &AuditEntry{Actor: "test", Action: action, After: v} }
}

// newCA is a CA record; the store does not look into its certificate.
func newCA(t *testing.T, name string) CA {
	t.Helper()
	return CA{Name: name, Fingerprint: name + "-fp", Subject: "CN=" + name}
}

func actions(t *testing.T, s *Store) []string {
	t.Helper()
	list, _, err := s.AuditLog(AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.Action)
	}
	return out
}

func TestAuditRecordCommitsWithItsChange(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := s.CreateCA(newCA(t, "first"), note[CA]("ca.create"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RenameCA(ca.ID, "renamed", func(before, after CA) *AuditEntry {
		return &AuditEntry{Actor: "test", Action: "ca.rename", Before: before.Name, After: after.Name}
	}); err != nil {
		t.Fatal(err)
	}
	list, _, err := s.AuditLog(AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Seq != 1 || list[1].Seq != 2 || list[0].Action != "ca.create" || list[1].Action != "ca.rename" {
		t.Fatalf("audit log %+v, want ca.create (1) then ca.rename (2)", list)
	}
	if list[1].Before != "first" || list[1].After != "renamed" || list[1].Actor != "test" || list[1].Time.IsZero() {
		t.Errorf("rename record %+v", list[1])
	}

	// Refused changes roll back, and their records with them: a duplicate,
	// a guard's refusal, a trust change that fails half-way.
	if _, err := s.CreateCA(newCA(t, "renamed"), note[CA]("dup.create")); err == nil {
		t.Fatal("duplicate name accepted")
	}
	refused := errors.New("refused")
	if _, _, err := s.DeleteCA(ca.ID, func(CA, []CRL) error { return refused }, func(CA, []string) *AuditEntry {
		return &AuditEntry{Action: "ca.delete"}
	}); !errors.Is(err, refused) {
		t.Fatalf("guarded delete: %v", err)
	}
	_, err = s.ApplyTrust(func([]CA, []CRL) (TrustChange, error) {
		// The new CA is written, then the list for an unknown CA fails the
		// transaction: the record built for the change must go too.
		return TrustChange{AddCAs: []CA{newCA(t, "dir_ca")}, AddCRLs: []NewCRL{{CAFingerprint: "nobody"}}}, nil
	}, func(TrustChange, []CRL) *AuditEntry { return &AuditEntry{Action: "trust.apply"} })
	if err == nil {
		t.Fatal("trust change with a CRL for no CA applied")
	}
	// A record that cannot be written fails its change: no change without
	// its record.
	if _, err := s.CreateCA(newCA(t, "unrecorded"), func(CA) *AuditEntry {
		return &AuditEntry{Action: "bad", After: make(chan int)}
	}); err == nil {
		t.Fatal("change committed without its audit record")
	}
	cas, err := s.ListCAs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 1 {
		t.Fatalf("%d CAs after the refused changes, want 1", len(cas))
	}
	if got := actions(t, s); len(got) != 2 {
		t.Fatalf("records after refused changes: %v, want only the two committed ones", got)
	}

	// The trail is on disk: it survives closing and reopening, and the
	// numbering goes on from where it was.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.DeleteCA(ca.ID, nil, func(CA, []string) *AuditEntry { return &AuditEntry{Action: "ca.delete"} }); err != nil {
		t.Fatal(err)
	}
	list, _, err = s.AuditLog(AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[2].Seq != 3 || list[2].Action != "ca.delete" || list[0].Action != "ca.create" {
		t.Fatalf("after reopening: %+v", list)
	}
	// A write whose builder returns nil records nothing.
	if _, err := s.CreateCA(newCA(t, "quiet"), func(CA) *AuditEntry { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := actions(t, s); len(got) != 3 {
		t.Fatalf("records %v after a write that asked for none", got)
	}
}

func TestAuditRetentionDropsTheOldest(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := Open(dir, Options{AuditRetention: 3, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, _, err := s.RenameCA("none", "x", nil); err == nil {
			t.Fatal("rename of a missing CA")
		}
		now = now.Add(time.Hour)
		if _, err := s.CreateCA(newCA(t, "ca"+string(rune('a'+i))), note[CA]("create")); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func() []uint64 {
		list, _, err := s.AuditLog(AuditQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, e := range list {
			out = append(out, e.Seq)
		}
		return out
	}
	if got := seqs(); len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Fatalf("kept %v, want 3 4 5", got)
	}
	// since and limit select from what is kept; before pages back from a
	// page's oldest record, and more says whether a page left older
	// records out.
	for _, c := range []struct {
		q    AuditQuery
		want []uint64
		more bool
	}{
		{AuditQuery{Since: time.Date(2026, 1, 1, 4, 0, 0, 0, time.UTC)}, []uint64{4, 5}, false},
		{AuditQuery{Limit: 1}, []uint64{5}, true},
		{AuditQuery{Limit: 2}, []uint64{4, 5}, true},
		{AuditQuery{Limit: 3}, []uint64{3, 4, 5}, false},
		{AuditQuery{Before: 5, Limit: 1}, []uint64{4}, true},
		{AuditQuery{Before: 4, Limit: 1}, []uint64{3}, false},
		{AuditQuery{Before: 4}, []uint64{3}, false},
		{AuditQuery{Before: 3}, nil, false},
		// A cursor below what is kept (dropped by the retention since)
		// and one above the newest.
		{AuditQuery{Before: 2}, nil, false},
		{AuditQuery{Before: 99, Limit: 2}, []uint64{4, 5}, true},
		// The record before since does not count as more.
		{AuditQuery{Since: time.Date(2026, 1, 1, 4, 0, 0, 0, time.UTC), Before: 5, Limit: 1}, []uint64{4}, false},
	} {
		list, more, err := s.AuditLog(c.q)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, e := range list {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, c.want) || more != c.more {
			t.Errorf("%+v: %v more %v, want %v more %v", c.q, got, more, c.want, c.more)
		}
	}
	s.Close()

	// A lower retention at the next start drops the excess with the next
	// record.
	s, err = Open(dir, Options{AuditRetention: 2, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateCA(newCA(t, "cf"), note[CA]("create")); err != nil {
		t.Fatal(err)
	}
	if got := seqs(); len(got) != 2 || got[0] != 5 || got[1] != 6 {
		t.Fatalf("kept %v, want 5 6", got)
	}
}

// A store of the previous schema (no audit bucket) gets one when opened,
// and its first change is recorded.
func TestAuditBucketAddedToAnOlderStore(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	editRaw(t, dir, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketAudit); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, 2))
	})
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateCA(newCA(t, "after_upgrade"), note[CA]("create")); err != nil {
		t.Fatal(err)
	}
	if got := actions(t, s); len(got) != 1 {
		t.Fatalf("records %v", got)
	}
}
