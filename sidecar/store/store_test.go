package store

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// keyInClear reports whether the store file holds keyPEM unsealed. Records
// are JSON, where a []byte is base64, so the clear form to look for is the
// base64 of the PEM (which starts where the value starts); the PEM text
// itself is checked too in case the encoding ever changes.
func keyInClear(raw, keyPEM []byte) bool {
	nl := bytes.IndexByte(keyPEM, '\n')
	b64 := base64.StdEncoding.EncodeToString(keyPEM)
	return bytes.Contains(raw, keyPEM[nl+1:nl+40]) || bytes.Contains(raw, []byte(b64[:60]))
}

func TestEncryptedKeysNeedTheRightKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	leaf := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{})).Leaf
	keyPEM := leaf.KeyPEM()

	s, err := Open(dir, Options{EncryptionKey: key(1)})
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.CreateOutbound(Outbound{Name: "backend", ChainPEM: string(leaf.PEM()), EnvironmentTypes: []string{"development"}, KeyPEM: keyPEM}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if keyInClear(raw, keyPEM) {
		t.Fatal("private key found in clear in the store file")
	}
	if fi, _ := os.Stat(filepath.Join(dir, FileName)); fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}

	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "--encryption-key-file") {
		t.Fatalf("open without key: %v, want a refusal naming --encryption-key-file", err)
	}
	if _, err := Open(dir, Options{EncryptionKey: key(2)}); err == nil || !strings.Contains(err.Error(), "wrong --encryption-key-file") {
		t.Fatalf("open with wrong key: %v, want a wrong-key refusal", err)
	}
	s, err = Open(dir, Options{EncryptionKey: key(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.ListOutbound(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != o.ID || !bytes.Equal(list[0].KeyPEM, keyPEM) {
		t.Fatalf("decrypted key does not round-trip: %+v", list)
	}
	plain, err := s.ListOutbound(false)
	if err != nil || plain[0].KeyPEM != nil {
		t.Fatalf("list without keys returned key material: %v", err)
	}
}

// clearKeyStore leaves in dir a closed store without an encryption key
// holding one outbound certificate, whose key it returns the leaf of.
func clearKeyStore(t *testing.T, dir string) *testpki.Cert {
	t.Helper()
	leaf := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{})).Leaf
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOutbound(Outbound{Name: "a", KeyPEM: leaf.KeyPEM()}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return leaf
}

func TestPlaintextKeysAreSealedWhenAKeyIsAdded(t *testing.T) {
	dir := t.TempDir()
	leaf := clearKeyStore(t, dir)
	s, err := Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("store sealed on open still opens without a key")
	}
	s, err = Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.ListOutbound(true)
	if err != nil || !bytes.Equal(list[0].KeyPEM, leaf.KeyPEM()) {
		t.Fatalf("sealed key does not round-trip: %v", err)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	editRaw(t, dir, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion+1))
	})
	_, err = Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this build") {
		t.Fatalf("open of a newer schema: %v, want a refusal", err)
	}
}

func TestMigrationHookRuns(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Pretend the file is one schema older and register a migration from it.
	editRaw(t, dir, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion-1))
	})
	ran := false
	// The real migration is put back afterwards: other tests open stores
	// of the previous schema too.
	real := migrations[SchemaVersion-1]
	migrations[SchemaVersion-1] = func(*bolt.Tx) error { ran = true; return nil }
	defer func() { migrations[SchemaVersion-1] = real }()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !ran {
		t.Fatal("migration from the previous schema did not run")
	}
}

func TestUniqueness(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.CreateCA(CA{Name: "a", Fingerprint: "F1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateCA(CA{Name: "b", Fingerprint: "F1"}, nil)
	if p, ok := problem.As(err); !ok || p.ExistingID != a.ID || !strings.Contains(p.Detail, a.ID) {
		t.Fatalf("duplicate certificate: %v, want a conflict naming %s", err, a.ID)
	}
	_, err = s.CreateCA(CA{Name: "a", Fingerprint: "F2"}, nil)
	if p, ok := problem.As(err); !ok || p.Code != "duplicate_name" {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := s.CreateCRL(CRL{CAID: "mtlsca_nope"}, nil); err == nil {
		t.Fatal("CRL for an unknown CA accepted")
	}
	c, err := s.CreateCRL(CRL{CAID: a.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ids, err := s.DeleteCA(a.ID, nil, nil); err != nil || len(ids) != 1 || ids[0] != c.ID {
		t.Fatalf("deleting a CA must delete its CRL: %v %v", ids, err)
	}
}

// TestReplaceOutboundMaterial: the new pair is sealed under the record's own
// ID (it must open after a restart), and nothing but the material and
// updatedAt changes.
func TestReplaceOutboundMaterial(t *testing.T) {
	dir := t.TempDir()
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	opts := Options{EncryptionKey: key(3), Now: func() time.Time { return clock }}
	first := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "first"})).Leaf
	second := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "second"})).Leaf
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.CreateOutbound(Outbound{Name: "backend", ChainPEM: string(first.PEM()), Fingerprint: "F1", EnvironmentTypes: []string{"preview"}, KeyPEM: first.KeyPEM()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SetOutboundEnabled(o.ID, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReplaceOutboundMaterial("mtlscert_nope", Material{}, nil); err == nil {
		t.Fatal("replacing an unknown certificate succeeded")
	} else if p, ok := problem.As(err); !ok || p.Status != 404 {
		t.Fatalf("unknown ID: %v, want a 404 problem", err)
	}
	clock = clock.Add(time.Hour)
	before, after, err := s.ReplaceOutboundMaterial(o.ID, Material{ChainPEM: string(second.PEM()), Subject: "CN=second", Fingerprint: "F2",
		NotBefore: second.Cert.NotBefore, NotAfter: second.Cert.NotAfter, KeyPEM: second.KeyPEM()}, nil)

	if err != nil {
		t.Fatal(err)
	}
	if before.Fingerprint != "F1" || after.Fingerprint != "F2" || after.Subject != "CN=second" {
		t.Fatalf("before %q after %q", before.Fingerprint, after.Fingerprint)
	}
	if after.ID != o.ID || after.Name != "backend" || after.Enabled || !after.CreatedAt.Equal(o.CreatedAt) ||
		!after.UpdatedAt.Equal(clock) || len(after.EnvironmentTypes) != 1 || after.EnvironmentTypes[0] != "preview" {
		t.Fatalf("identity or state changed: %+v", after)
	}
	if after.KeyPEM != nil {
		t.Fatal("key material returned from a replace")
	}
	s.Close()

	raw, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if keyInClear(raw, second.KeyPEM()) {
		t.Fatal("replacement private key stored in clear")
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.ListOutbound(true)
	if err != nil || len(list) != 1 || !bytes.Equal(list[0].KeyPEM, second.KeyPEM()) || list[0].ChainPEM != string(second.PEM()) {
		t.Fatalf("replacement does not round-trip: %v", err)
	}
}

// TestApplyTrustIsOneTransaction: a change that fails part-way writes
// nothing and notifies nobody; one that succeeds notifies once.
func TestApplyTrustIsOneTransaction(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "data"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	notes := 0
	s.SetOnChange(func() { notes++ })
	existing, err := s.CreateCA(CA{Name: "taken", Fingerprint: "FP:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	notes = 0
	bad := TrustChange{
		AddCAs:    []CA{{Name: "fresh", Fingerprint: "FP:1"}, {Name: "taken", Fingerprint: "FP:2"}},
		AddCRLs:   []NewCRL{{CRL: CRL{Number: "1"}, CAFingerprint: "FP:1"}},
		DeleteCAs: []string{existing.ID},
	}
	if _, err := s.ApplyTrust(func([]CA, []CRL) (TrustChange, error) { return bad, nil }, nil); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Fatalf("conflicting change: %v", err)
	}
	cas, _ := s.ListCAs()
	crls, _ := s.ListCRLs()
	if len(cas) != 1 || cas[0].ID != existing.ID || len(crls) != 0 || notes != 0 {
		t.Fatalf("failed change left %d CAs, %d CRLs, %d notifications", len(cas), len(crls), notes)
	}
	good := TrustChange{
		AddCAs:   []CA{{Name: "fresh", Fingerprint: "FP:1", ManagedBy: ManagedByTrustDir}},
		AddCRLs:  []NewCRL{{CRL: CRL{Number: "1"}, CAFingerprint: "FP:1"}},
		AdoptCAs: []string{existing.ID},
		AdoptAs:  ManagedByTrustDir,
	}
	runs := 0
	if _, err := s.ApplyTrust(func([]CA, []CRL) (TrustChange, error) { runs++; return good, nil }, nil); err != nil {
		t.Fatal(err)
	}
	cas, _ = s.ListCAs()
	crls, _ = s.ListCRLs()
	if len(cas) != 2 || len(crls) != 1 || notes != 1 || runs != 2 {
		t.Fatalf("%d CAs, %d CRLs, %d notifications, plan ran %d times", len(cas), len(crls), notes, runs)
	}
	for _, c := range cas {
		if c.ManagedBy != ManagedByTrustDir {
			t.Errorf("CA %s not marked", c.Name)
		}
		if c.Name == "fresh" && crls[0].CAID != c.ID {
			t.Errorf("CRL attached to %s, want the new CA %s", crls[0].CAID, c.ID)
		}
	}
	// Nothing to do: no write, no notification.
	if _, err := s.ApplyTrust(func([]CA, []CRL) (TrustChange, error) { return TrustChange{}, nil }, nil); err != nil || notes != 1 {
		t.Fatalf("empty change: %v, %d notifications", err, notes)
	}
}

// TestDeleteGuards: the admin API's trust-directory check runs as a guard
// inside the deletion's transaction. A refusal deletes nothing, the guard
// sees the CA's CRLs as they are at that moment, and no other write (such
// as the trust directory taking the CA over) lands while it decides.
func TestDeleteGuards(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "data"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ca, err := s.CreateCA(CA{Name: "a", Fingerprint: "FP:A"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := s.CreateCRL(CRL{CAID: ca.ID, Number: "1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	var seen []CRL
	if _, _, err := s.DeleteCA(ca.ID, func(_ CA, crls []CRL) error { seen = crls; return refused }, nil); !errors.Is(err, refused) {
		t.Fatalf("DeleteCA with a refusing guard: %v", err)
	}
	if len(seen) != 1 || seen[0].ID != crl.ID {
		t.Fatalf("guard saw CRLs %+v, want %s", seen, crl.ID)
	}
	if _, err := s.DeleteCRL(crl.ID, func(CRL) error { return refused }, nil); !errors.Is(err, refused) {
		t.Fatalf("DeleteCRL with a refusing guard: %v", err)
	}
	if cas, _ := s.ListCAs(); len(cas) != 1 {
		t.Fatalf("refused deletions left %d CAs", len(cas))
	}
	if crls, _ := s.ListCRLs(); len(crls) != 1 {
		t.Fatalf("refused deletions left %d CRLs", len(crls))
	}

	adopt := func(cas []CA, _ []CRL) (TrustChange, error) {
		var ch TrustChange
		for _, c := range cas {
			ch.AdoptCAs = append(ch.AdoptCAs, c.ID)
		}
		ch.AdoptAs = ManagedByTrustDir
		return ch, nil
	}
	adopted := make(chan error, 1)
	_, ids, err := s.DeleteCA(ca.ID, func(CA, []CRL) error {
		go func() { _, err := s.ApplyTrust(adopt, nil); adopted <- err }()
		select {
		case err := <-adopted:
			return fmt.Errorf("the takeover committed while the guard was deciding (%v)", err)
		case <-time.After(200 * time.Millisecond):
			return nil
		}
	}, nil)

	if err != nil || len(ids) != 1 {
		t.Fatalf("DeleteCA: %v, CRLs %v", err, ids)
	}
	if err := <-adopted; err != nil {
		t.Fatalf("takeover after the deletion: %v", err)
	}
	if cas, _ := s.ListCAs(); len(cas) != 0 {
		t.Fatalf("after the deletion: %+v", cas)
	}
}

// TestSealingRewritesTheFile: sealing keys stored in clear must take them
// out of the file, not only out of the records. bbolt writes a changed page
// elsewhere and merely frees the old one, so without the rewrite (compact)
// the clear key stays readable in mtlsgate.db, and in every backup of it,
// until later writes happen to reuse the page.
func TestSealingRewritesTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	leaf := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{})).Leaf
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.CreateOutbound(Outbound{Name: "a", KeyPEM: leaf.KeyPEM()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := s.CreateCA(CA{Name: "ca", Fingerprint: "AA"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if raw, _ := os.ReadFile(path); !keyInClear(raw, leaf.KeyPEM()) {
		t.Fatal("test broken: the key is not found in clear before sealing")
	}

	s, err = Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if keyInClear(raw, leaf.KeyPEM()) {
		t.Error("the store file still holds the private key in clear after it was sealed")
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("compaction file left behind: %v", err)
	}
	// The rewritten file is the store: records kept, writes land in it.
	if got, err := s.GetCA(ca.ID); err != nil || got.Name != "ca" {
		t.Fatalf("CA after the rewrite: %+v %v", got, err)
	}
	if _, err := s.CreateCA(CA{Name: "later", Fingerprint: "BB"}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.ListOutbound(true)
	if err != nil || len(list) != 1 || list[0].ID != o.ID || !bytes.Equal(list[0].KeyPEM, leaf.KeyPEM()) {
		t.Fatalf("sealed key after the rewrite: %v %v", list, err)
	}
	if cas, err := s.ListCAs(); err != nil || len(cas) != 2 {
		t.Fatalf("CAs after the rewrite and a restart: %v %v", cas, err)
	}
}

// TestPendingRewriteIsResumed: a start that sealed the keys but stopped
// before the rewrite (crash, full disk) leaves the mark; the next start
// rewrites the file then, and clears a half-written copy.
func TestPendingRewriteIsResumed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s, err := Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	editRaw(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyCompact, []byte{1}) })
	if err := os.WriteFile(path+".compact", []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pending bool
	s.db.View(func(tx *bolt.Tx) error { pending = tx.Bucket(bucketMeta).Get(keyCompact) != nil; return nil })
	if pending {
		t.Error("the rewrite mark is still set after a start")
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("half-written copy left behind: %v", err)
	}
}

// editRaw changes the closed store in dir behind the Store's back, as an
// older or newer build, or a crash, would have left it.
func editRaw(t *testing.T, dir string, edit func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
}

// TestFailedRewriteStillOpens: when the rewrite after sealing fails (here a
// directory in the way of its temporary file, as a full disk would fail it),
// the store opens with the keys sealed and says why, and the next start
// that can rewrite does.
func TestFailedRewriteStillOpens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	leaf := clearKeyStore(t, dir)
	blocker := path + ".compact"
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatalf("the store refused to open over a failed rewrite: %v", err)
	}
	if err := s.PendingRewrite(); err == nil || !strings.Contains(err.Error(), "restart serve") {
		t.Errorf("PendingRewrite() = %v, want the reason and what to do", err)
	}
	list, err := s.ListOutbound(true)
	if err != nil || len(list) != 1 || !bytes.Equal(list[0].KeyPEM, leaf.KeyPEM()) {
		t.Fatalf("outbound after the failed rewrite: %v %v", list, err)
	}
	if _, err := s.CreateCA(CA{Name: "ca", Fingerprint: "AA"}, nil); err != nil {
		t.Fatalf("write after the failed rewrite: %v", err)
	}
	s.Close()

	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{EncryptionKey: key(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PendingRewrite(); err != nil {
		t.Errorf("PendingRewrite() after a good start: %v", err)
	}
	if raw, _ := os.ReadFile(path); keyInClear(raw, leaf.KeyPEM()) {
		t.Error("the key is still in clear after the rewrite")
	}
}
