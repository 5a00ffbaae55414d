// Package store keeps the sidecar's trust material durable: CA certificates,
// their CRLs and the outbound client certificates with their private keys.
//
// It uses bbolt, a pure-Go single-file B+tree whose transactions are fsync'd
// on commit and which survives a crash mid-write; SQLite would need cgo or a
// large translated driver for the same guarantees. A write returns only after
// its commit reached the disk, so anything acknowledged to an API client
// survives kill -9.
package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/mtlsgate/mtlsgate/sidecar/problem"
)

// SchemaVersion is the layout this build writes. Older stores are migrated on
// open; newer ones are refused so an old binary never rewrites data it does not
// understand.
const SchemaVersion = 3

// FileName is the database file inside the data directory.
const FileName = "mtlsgate.db"

var (
	bucketMeta     = []byte("meta")
	bucketCAs      = []byte("ca_certificates")
	bucketCRLs     = []byte("crls")
	bucketOutbound = []byte("mtls_certificates")

	keySchema   = []byte("schema_version")
	keyKeyCheck = []byte("encryption_key_check")
	// keyCompact is set in the transaction that seals keys stored in clear
	// and removed once the file has been rewritten without them (see
	// compact), so a crash in between still gets the rewrite at next start.
	keyCompact = []byte("compact_pending")
)

// keyCheckPlain is sealed with the encryption key at first use; opening it
// later proves the operator supplied the same key.
var keyCheckPlain = []byte("mtlsgate store key check v1")

// migrations[n] upgrades a store from schema n to n+1 inside one transaction.
var migrations = map[int]func(tx *bolt.Tx) error{}

// CA is a stored trust anchor.
type CA struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	PEM         string    `json:"pem"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Fingerprint string    `json:"sha256Fingerprint"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	SelfSigned  bool      `json:"selfSigned"`
	// ManagedBy is ManagedByTrustDir for a CA the trust directory put here
	// (the directory adds and removes it, the admin API does not); empty for
	// one created through the admin API.
	ManagedBy string    `json:"managedBy,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Certificate parses the stored PEM.
func (c CA) Certificate() (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(c.PEM))
	if b == nil {
		return nil, fmt.Errorf("stored CA %s has no PEM block", c.ID)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse stored CA %s: %w", c.ID, err)
	}
	return cert, nil
}

// ManagedByTrustDir marks records kept in step with `serve --trust-dir`.
const ManagedByTrustDir = "trust-dir"

// CRL is a revocation list attached to one CA.
type CRL struct {
	ID           string    `json:"id"`
	CAID         string    `json:"caId"`
	URL          string    `json:"url,omitempty"` // empty for an uploaded file
	PEM          string    `json:"pem"`
	Number       string    `json:"number,omitempty"`
	ThisUpdate   time.Time `json:"thisUpdate"`
	NextUpdate   time.Time `json:"nextUpdate,omitzero"`
	RevokedCount int       `json:"revokedCount"`
	// LastFetchAt/LastError describe the most recent download attempt of a URL
	// CRL; a failed attempt keeps the last good list.
	LastFetchAt time.Time `json:"lastFetchAt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// ManagedBy is ManagedByTrustDir for a list read from the trust directory.
	ManagedBy string    `json:"managedBy,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// StaleAfter is when the list stops being current: its nextUpdate, or, for
// a list without one, maxAge after its thisUpdate. RFC 5280 requires
// nextUpdate, but lists without it exist, and taking them as current
// forever would hide a source that stopped issuing: revocation would stop
// being checked against anything recent with no sign of it. thisUpdate, not
// when the list was fetched or uploaded, is the age that counts: a URL that
// keeps serving the same old list is fetched successfully every time, and
// every replica and restart then agrees on the moment. Zero (never) only
// for a list without nextUpdate when maxAge is not positive. It is never
// later than the end of year 9999, the last moment JSON can carry: a later
// one would make the bundle and the API answers impossible to encode.
func (c CRL) StaleAfter(maxAge time.Duration) time.Time {
	if !c.NextUpdate.IsZero() || maxAge <= 0 {
		return c.NextUpdate
	}
	if t := c.ThisUpdate.Add(maxAge); t.Before(lastJSONTime) {
		return t
	}
	return lastJSONTime
}

// lastJSONTime is the latest time encoding/json writes (RFC 3339 has
// four-digit years).
var lastJSONTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// Stale reports whether the list is past StaleAfter(maxAge).
func (c CRL) Stale(now time.Time, maxAge time.Duration) bool {
	t := c.StaleAfter(maxAge)
	return !t.IsZero() && now.After(t)
}

// Outbound is a client certificate the gateway presents to backends.
type Outbound struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	ChainPEM         string    `json:"chainPem"`
	Subject          string    `json:"subject"`
	Issuer           string    `json:"issuer"`
	Fingerprint      string    `json:"sha256Fingerprint"`
	NotBefore        time.Time `json:"notBefore"`
	NotAfter         time.Time `json:"notAfter"`
	EnvironmentTypes []string  `json:"environmentTypes"`
	Enabled          bool      `json:"enabled"`
	CreatedAt        time.Time `json:"createdAt"`
	UpdatedAt        time.Time `json:"updatedAt"`
	// KeyPEM is the private key in clear; filled only by GetOutboundWithKey
	// and ListEnabledWithKeys, never persisted as is when a key is configured.
	KeyPEM []byte `json:"-"`
}

// outboundRecord is the persisted form of Outbound.
type outboundRecord struct {
	Outbound
	Key          []byte `json:"key"`
	KeyEncrypted bool   `json:"keyEncrypted"`
}

// Options configure Open.
type Options struct {
	// EncryptionKey, when 32 bytes, seals private keys with AES-256-GCM.
	EncryptionKey []byte
	// Now is the clock for timestamps; tests leave it nil.
	Now func() time.Time
	// AuditRetention is how many audit records are kept, the oldest
	// dropped first; 0 means DefaultAuditRetention.
	AuditRetention int
}

// Store is the durable trust store. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	aead cipher.AEAD
	now  func() time.Time

	auditRetention int
	// rewriteErr is why the rewrite that takes keys sealed at this start
	// out of the file's free pages failed (see PendingRewrite).
	rewriteErr error

	mu       sync.Mutex // orders writes with their change notifications
	onChange func()
}

// EnsureDir creates the data directory dir, mode 0700 whatever the umask
// (private keys live there), when it does not exist, and reports whether it
// did. An existing directory is left as it is: it may be shared (/tmp,
// ".", a volume other containers use), and changing its mode would lock
// everyone else out of it or drop its sticky bit. Whoever starts the store
// in such a directory is told by the caller (see daemon.Run).
func EnsureDir(dir string) (created bool, err error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, fmt.Errorf("restrict data dir %s to 0700: %w", dir, err)
	}
	return true, nil
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if _, err := EnsureDir(dir); err != nil {
		return nil, err
	}
	s := &Store{now: opts.Now, auditRetention: opts.AuditRetention}
	if s.now == nil {
		s.now = time.Now
	}
	if s.auditRetention <= 0 {
		s.auditRetention = DefaultAuditRetention
	}
	if opts.EncryptionKey != nil {
		if len(opts.EncryptionKey) != 32 {
			return nil, fmt.Errorf("encryption key is %d bytes; it must be 32 (e.g. `head -c 32 /dev/urandom > key`)", len(opts.EncryptionKey))
		}
		block, err := aes.NewCipher(opts.EncryptionKey)
		if err != nil {
			return nil, fmt.Errorf("encryption key: %w", err)
		}
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("encryption key: %w", err)
		}
	}
	path := filepath.Join(dir, FileName)
	db, err := openLocked(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("restrict store file %s to 0600: %w", path, err)
	}
	s.db = db
	if err := db.Update(s.initialize); err != nil {
		db.Close()
		return nil, err
	}
	// A failed rewrite does not stop the store: the keys are sealed in
	// their records already, and the clear copies left in free pages are
	// no more exposed than they were before the sealing, while a store that
	// refuses to open turns a full disk into a sidecar that restarts in a
	// loop and stops every trust update. The caller reports it, and the
	// rewrite is tried again at every start until it succeeds.
	s.rewriteErr = s.compactIfPending(path)
	return s, nil
}

// openLocked opens the database file and takes its lock. The file may be
// replaced while this waits for the lock (another process compacting it,
// see compact), and the lock then won is on a file nobody will read again:
// working on it would lose every write. So the path is checked to still
// name the file opened, and opened again if not.
func openLocked(path string) (*bolt.DB, error) {
	for attempt := 0; ; attempt++ {
		before, statErr := os.Stat(path)
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: the file is locked by another process; stop the other mtlsgate serve using this --data-dir or pick another one", path)
		}
		if err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		after, err := os.Stat(path)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		if statErr != nil || os.SameFile(before, after) {
			return db, nil
		}
		db.Close()
		if attempt == 2 {
			return nil, fmt.Errorf("open store %s: the file keeps being replaced while it is opened; stop the other mtlsgate serve using this --data-dir", path)
		}
	}
}

func (s *Store) initialize(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create meta bucket: %w", err)
	}
	version := SchemaVersion
	if v := meta.Get(keySchema); v != nil {
		version = int(binary.BigEndian.Uint64(v))
	}
	if version > SchemaVersion {
		return fmt.Errorf("store schema version %d is newer than this build understands (%d): run a newer mtlsgate, or restore a backup taken with this version", version, SchemaVersion)
	}
	for _, b := range [][]byte{bucketCAs, bucketCRLs, bucketOutbound, bucketProfiles, bucketAudit} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	for ; version < SchemaVersion; version++ {
		if m := migrations[version]; m != nil {
			if err := m(tx); err != nil {
				return fmt.Errorf("migrate store schema %d to %d: %w", version, version+1, err)
			}
		}
	}
	if err := meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, uint64(SchemaVersion))); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	return s.checkKey(tx, meta)
}

// checkKey makes sure the configured key is the one the store was sealed
// with, and seals keys stored in clear once a key is first configured.
func (s *Store) checkKey(tx *bolt.Tx, meta *bolt.Bucket) error {
	check := meta.Get(keyKeyCheck)
	switch {
	case check != nil && s.aead == nil:
		return errors.New("the store holds encrypted private keys but no encryption key was given: start with --encryption-key-file pointing at the key the store was created with")
	case check != nil:
		if _, err := s.open(check, keyKeyCheck); err != nil {
			return errors.New("the encryption key does not open this store (wrong --encryption-key-file): pass the key the store was created with")
		}
		return nil
	case s.aead == nil:
		return nil
	}
	sealed, err := s.seal(keyCheckPlain, keyKeyCheck)
	if err != nil {
		return err
	}
	if err := meta.Put(keyKeyCheck, sealed); err != nil {
		return fmt.Errorf("write key check: %w", err)
	}
	b := tx.Bucket(bucketOutbound)
	sealedAny := false
	err = b.ForEach(func(k, v []byte) error {
		var r outboundRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		if r.KeyEncrypted {
			return nil
		}
		if r.Key, err = s.seal(r.Key, k); err != nil {
			return err
		}
		r.KeyEncrypted = true
		sealedAny = true
		return putJSON(b, string(k), r)
	})
	if err != nil || !sealedAny {
		return err
	}
	// The records now hold sealed keys, but bbolt writes changed pages
	// elsewhere and only marks the old ones free: the keys in clear stay in
	// the file until later writes happen to reuse those pages.
	if err := meta.Put(keyCompact, []byte{1}); err != nil {
		return fmt.Errorf("mark the store for compaction: %w", err)
	}
	return nil
}

// compactIfPending rewrites the database file when the sealing of keys
// stored in clear left them in its free pages (see checkKey).
func (s *Store) compactIfPending(path string) error {
	var pending bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		pending = tx.Bucket(bucketMeta).Get(keyCompact) != nil
		return nil
	}); err != nil || !pending {
		return err
	}
	if err := s.compact(path); err != nil {
		return fmt.Errorf("rewrite store %s without the private keys it held in clear: %w; check the data directory's free space and permissions and restart serve (the keys are already sealed, and their clear copies stay in the file's free pages until the rewrite succeeds; it is tried at every start)", path, err)
	}
	return nil
}

// PendingRewrite returns why this start could not rewrite the file after
// sealing keys that were stored in clear (their clear copies may still be in
// its free pages, and in any copy or backup of it), or nil.
func (s *Store) PendingRewrite() error { return s.rewriteErr }

// compact copies the live records into a new file (bbolt's Compact, which
// writes only what is reachable, so none of the free pages) and puts it in
// place of path: written and synced first, then renamed over the old file,
// then the directory synced, so a crash leaves either file whole. It runs
// while Open still owns the store: nothing else in this process holds the
// old file, and the new one is locked before it takes the old one's name, so
// another process never finds the path unlocked in between (openLocked
// catches one that waited on the old file's lock).
func (s *Store) compact(path string) error {
	tmp := path + ".compact"
	// Left by a start that stopped half-way; the store's lock, held here,
	// means no other process is writing it.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Created afresh, never opened through what another user may have put
	// at the name meanwhile in a directory others can write (a symlink).
	exclusive := func(name string, flag int, mode os.FileMode) (*os.File, error) {
		return os.OpenFile(name, flag|os.O_CREATE|os.O_EXCL, mode)
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: 2 * time.Second, OpenFile: exclusive})
	if err != nil {
		return err
	}
	fail := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	if err := bolt.Compact(dst, s.db, 0); err != nil {
		return fail(err)
	}
	if err := dst.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyCompact) }); err != nil {
		return fail(err)
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	old := s.db
	s.db = dst
	if err := old.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) seal(plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plain, aad), nil
}

func (s *Store) open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], aad)
}

// Close releases the database file.
func (s *Store) Close() error { return s.db.Close() }

// SetOnChange registers fn to run after every committed write, in commit
// order, before the write returns to its caller; so by the time an API call
// answers, the change has been handed to SDS and the bundle.
func (s *Store) SetOnChange(fn func()) {
	s.mu.Lock()
	s.onChange = fn
	s.mu.Unlock()
}

// update runs fn in a write transaction and then the change hook.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Update(fn); err != nil {
		return err
	}
	if s.onChange != nil {
		s.onChange()
	}
	return nil
}

// NewID returns prefix followed by 20 random hex digits.
func NewID(prefix string) string {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on supported platforms
	}
	return prefix + hex.EncodeToString(b)
}

func putJSON(b *bolt.Bucket, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", id, err)
	}
	if err := b.Put([]byte(id), data); err != nil {
		return fmt.Errorf("write %s: %w", id, err)
	}
	return nil
}

func getJSON(b *bolt.Bucket, id string, v any) (bool, error) {
	data := b.Get([]byte(id))
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", id, err)
	}
	return true, nil
}

// listOldestFirst reads every record of a bucket, ordered by creation time.
// Snapshot is everything the sidecar publishes, read in one transaction.
type Snapshot struct {
	CAs      []CA
	CRLs     []CRL
	Outbound []Outbound // with keys
	// Profiles is the active profile set; HasProfiles is false when none
	// was ever set.
	Profiles    ProfileVersion
	HasProfiles bool
}

// Snapshot reads CAs, CRLs, outbound certificates (keys opened) and the
// active profile set in one read transaction, so what is published never
// mixes two states of the store (a CA with its CRL already gone, say).
func (s *Store) Snapshot() (Snapshot, error) {
	var snap Snapshot
	var recs []outboundRecord
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		if snap.CAs, err = all[CA](tx.Bucket(bucketCAs)); err != nil {
			return err
		}
		if snap.CRLs, err = all[CRL](tx.Bucket(bucketCRLs)); err != nil {
			return err
		}
		if recs, err = all[outboundRecord](tx.Bucket(bucketOutbound)); err != nil {
			return err
		}
		snap.Profiles, snap.HasProfiles, err = lastProfiles(tx.Bucket(bucketProfiles))
		return err
	})
	if err != nil {
		return Snapshot{}, err
	}
	for _, r := range recs {
		o, err := s.decode(r, true)
		if err != nil {
			return Snapshot{}, err
		}
		snap.Outbound = append(snap.Outbound, o)
	}
	sort.Slice(snap.CAs, func(i, j int) bool { return snap.CAs[i].CreatedAt.Before(snap.CAs[j].CreatedAt) })
	sort.Slice(snap.CRLs, func(i, j int) bool { return snap.CRLs[i].CreatedAt.Before(snap.CRLs[j].CreatedAt) })
	sort.Slice(snap.Outbound, func(i, j int) bool { return snap.Outbound[i].CreatedAt.Before(snap.Outbound[j].CreatedAt) })
	return snap, nil
}

func listOldestFirst[T any](db *bolt.DB, bucket []byte, created func(T) time.Time) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) (err error) {
		out, err = all[T](tx.Bucket(bucket))
		return err
	})
	sort.Slice(out, func(i, j int) bool { return created(out[i]).Before(created(out[j])) })
	return out, err
}

// getOne reads one record, or the bucket's not-found problem.
func getOne[T any](db *bolt.DB, bucket []byte, id string, notFound func(string) error) (T, error) {
	var v T
	err := db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucket), id, &v)
		if err == nil && !ok {
			err = notFound(id)
		}
		return err
	})
	return v, err
}

func all[T any](b *bolt.Bucket) ([]T, error) {
	var out []T
	err := b.ForEach(func(k, v []byte) error {
		var t T
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// ---- CA certificates

// CreateCA stores ca under a new ID, refusing a duplicate name or an identical
// certificate already stored. audit (may be nil, as may what it returns)
// builds the change's audit record, written in the same transaction; so do
// the audit arguments of every other write.
func (s *Store) CreateCA(ca CA, audit func(CA) *AuditEntry) (CA, error) {
	now := s.now().UTC()
	ca.ID = NewID("mtlsca_")
	ca.CreatedAt, ca.UpdatedAt = now, now
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCAs)
		existing, err := all[CA](b)
		if err != nil {
			return err
		}
		if err := newCAConflict(existing, ca); err != nil {
			return err
		}
		if err := putJSON(b, ca.ID, ca); err != nil {
			return err
		}
		return record(s, tx, audit, ca)
	})
	return ca, err
}

// newCAConflict refuses a CA whose certificate or name is already stored.
func newCAConflict(existing []CA, ca CA) error {
	for _, e := range existing {
		if e.Fingerprint == ca.Fingerprint {
			p := problem.Conflict("duplicate_certificate", "this certificate is already stored as %s (name %q): use that ID, or delete it first to upload it again", e.ID, e.Name)
			p.ExistingID = e.ID
			return p
		}
		if e.Name == ca.Name {
			p := problem.Conflict("duplicate_name", "a CA certificate named %q already exists (%s): pick another --name or rename the existing one with `ca-certificate update`", e.Name, e.ID)
			p.ExistingID = e.ID
			return p
		}
	}
	return nil
}

// ListCAs returns every CA, oldest first.
func (s *Store) ListCAs() ([]CA, error) {
	return listOldestFirst(s.db, bucketCAs, func(c CA) time.Time { return c.CreatedAt })
}

func caNotFound(id string) error {
	return problem.NotFound("ca_not_found", "no CA certificate with ID %q: list them with `mtlsgate ca-certificate list`", id)
}

// GetCA returns one CA.
func (s *Store) GetCA(id string) (CA, error) {
	return getOne[CA](s.db, bucketCAs, id, caNotFound)
}

// RenameCA changes a CA's name and returns it before and after. Renaming
// a CA to its own name writes nothing (and so no audit record).
func (s *Store) RenameCA(id, name string, audit func(before, after CA) *AuditEntry) (before, after CA, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCAs)
		existing, err := all[CA](b)
		if err != nil {
			return err
		}
		found := false
		for _, e := range existing {
			if e.ID == id {
				before, found = e, true
			} else if e.Name == name {
				return problem.Conflict("duplicate_name", "a CA certificate named %q already exists (%s): pick another --name", name, e.ID)
			}
		}
		if !found {
			return caNotFound(id)
		}
		after = before
		if before.Name == name {
			return nil // already so named: no change, no record
		}
		after.Name = name
		after.UpdatedAt = s.now().UTC()
		if err := putJSON(b, id, after); err != nil {
			return err
		}
		return record2(s, tx, audit, before, after)
	})
	return before, after, err
}

// DeleteCA removes a CA and the CRLs attached to it, if guard (run inside
// the transaction with the CA and those CRLs, so the trust directory cannot
// take them over in between) allows. guard may be nil.
func (s *Store) DeleteCA(id string, guard func(CA, []CRL) error, audit func(ca CA, crlIDs []string) *AuditEntry) (ca CA, crlIDs []string, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCAs)
		ok, err := getJSON(b, id, &ca)
		if err != nil {
			return err
		}
		if !ok {
			return caNotFound(id)
		}
		crls := tx.Bucket(bucketCRLs)
		list, err := all[CRL](crls)
		if err != nil {
			return err
		}
		var attached []CRL
		for _, c := range list {
			if c.CAID == id {
				attached = append(attached, c)
			}
		}
		if guard != nil {
			if err := guard(ca, attached); err != nil {
				return err
			}
		}
		for _, c := range attached {
			if err := crls.Delete([]byte(c.ID)); err != nil {
				return fmt.Errorf("delete CRL %s: %w", c.ID, err)
			}
			crlIDs = append(crlIDs, c.ID)
		}
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete CA %s: %w", id, err)
		}
		if audit == nil {
			return nil
		}
		return s.appendAudit(tx, audit(ca, crlIDs))
	})
	return ca, crlIDs, err
}

// ---- CRLs

// CreateCRL attaches a revocation list to an existing CA; one per CA.
func (s *Store) CreateCRL(c CRL, audit func(CRL) *AuditEntry) (CRL, error) {
	now := s.now().UTC()
	c.ID = NewID("mtlscrl_")
	c.CreatedAt, c.UpdatedAt = now, now
	err := s.update(func(tx *bolt.Tx) error {
		var ca CA
		ok, err := getJSON(tx.Bucket(bucketCAs), c.CAID, &ca)
		if err != nil {
			return err
		}
		if !ok {
			return caNotFound(c.CAID)
		}
		b := tx.Bucket(bucketCRLs)
		list, err := all[CRL](b)
		if err != nil {
			return err
		}
		for _, e := range list {
			if e.CAID == c.CAID {
				p := problem.Conflict("crl_exists", "CA %s already has CRL %s: replace its list with `mtlsgate crl update --crl-id %s --file F` (or --url U)", c.CAID, e.ID, e.ID)
				p.ExistingID = e.ID
				return p
			}
		}
		if err := putJSON(b, c.ID, c); err != nil {
			return err
		}
		return record(s, tx, audit, c)
	})
	return c, err
}

// ListCRLs returns every CRL, oldest first.
func (s *Store) ListCRLs() ([]CRL, error) {
	return listOldestFirst(s.db, bucketCRLs, func(c CRL) time.Time { return c.CreatedAt })
}

func crlNotFound(id string) error {
	return problem.NotFound("crl_not_found", "no CRL with ID %q: list them with `mtlsgate crl list`", id)
}

// GetCRL returns one CRL.
func (s *Store) GetCRL(id string) (CRL, error) {
	return getOne[CRL](s.db, bucketCRLs, id, crlNotFound)
}

// UpdateCRL applies fn to a stored CRL (the refresher records fetches this
// way). audit sees the record before and after fn.
func (s *Store) UpdateCRL(id string, fn func(*CRL) error, audit func(before, after CRL) *AuditEntry) (CRL, error) {
	var c CRL
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCRLs)
		ok, err := getJSON(b, id, &c)
		if err != nil {
			return err
		}
		if !ok {
			return crlNotFound(id)
		}
		before := c
		if err := fn(&c); err != nil {
			return err
		}
		c.UpdatedAt = s.now().UTC()
		if err := putJSON(b, id, c); err != nil {
			return err
		}
		return record2(s, tx, audit, before, c)
	})
	return c, err
}

// DeleteCRL removes a CRL if guard (run inside the transaction) allows;
// guard may be nil.
func (s *Store) DeleteCRL(id string, guard func(CRL) error, audit func(CRL) *AuditEntry) (CRL, error) {
	var c CRL
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCRLs)
		ok, err := getJSON(b, id, &c)
		if err != nil {
			return err
		}
		if !ok {
			return crlNotFound(id)
		}
		if guard != nil {
			if err := guard(c); err != nil {
				return err
			}
		}
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete CRL %s: %w", id, err)
		}
		return record(s, tx, audit, c)
	})
	return c, err
}

// ---- reconciling trust

// NewCRL is a CRL to attach to the CA with CAFingerprint, which may be a CA
// added by the same TrustChange (its ID is not known when planning).
type NewCRL struct {
	CRL           CRL
	CAFingerprint string
}

// TrustChange is a set of CA and CRL edits ApplyTrust makes in one
// transaction.
type TrustChange struct {
	AddCAs     []CA     // new records; IDs and timestamps are assigned
	AdoptCAs   []string // IDs of stored CAs whose ManagedBy becomes AdoptAs
	AdoptAs    string
	DeleteCAs  []string // with every CRL attached to them
	AddCRLs    []NewCRL
	UpdateCRLs []CRL // whole records, by ID
	DeleteCRLs []string
}

// Empty reports whether the change edits nothing.
func (c TrustChange) Empty() bool {
	return len(c.AddCAs)+len(c.AdoptCAs)+len(c.DeleteCAs)+len(c.AddCRLs)+len(c.UpdateCRLs)+len(c.DeleteCRLs) == 0
}

// ApplyTrust lets plan look at every CA and CRL and applies the change it
// returns in the same write transaction: no other write lands between the
// reading and the writing, and the change is committed, and published, whole
// or not at all. A plan that changes nothing costs a read transaction only.
// plan may run twice and must not have side effects. The change returned is
// the one applied, its new CAs and CRLs carrying the IDs they were stored
// under; audit gets it too, with the CRLs stored before it.
func (s *Store) ApplyTrust(plan func(cas []CA, crls []CRL) (TrustChange, error), audit func(ch TrustChange, crlsBefore []CRL) *AuditEntry) (TrustChange, error) {
	var ch TrustChange
	err := s.db.View(func(tx *bolt.Tx) error {
		cas, crls, err := trustState(tx)
		if err == nil {
			ch, err = plan(cas, crls)
		}
		return err
	})
	if err != nil || ch.Empty() {
		return ch, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		cas, crls, err := trustState(tx)
		if err != nil {
			return err
		}
		if ch, err = plan(cas, crls); err != nil {
			return err
		}
		if ch.Empty() {
			return nil
		}
		if err := s.applyTrust(tx, ch, cas, crls); err != nil {
			return err
		}
		if audit == nil {
			return nil
		}
		return s.appendAudit(tx, audit(ch, crls))
	})
	return ch, err
}

func trustState(tx *bolt.Tx) ([]CA, []CRL, error) {
	cas, err := all[CA](tx.Bucket(bucketCAs))
	if err != nil {
		return nil, nil, err
	}
	crls, err := all[CRL](tx.Bucket(bucketCRLs))
	return cas, crls, err
}

func (s *Store) applyTrust(tx *bolt.Tx, ch TrustChange, cas []CA, crls []CRL) error {
	now := s.now().UTC()
	caB, crlB := tx.Bucket(bucketCAs), tx.Bucket(bucketCRLs)
	byFP := map[string]CA{}
	byID := map[string]CA{}
	for _, c := range cas {
		byFP[c.Fingerprint], byID[c.ID] = c, c
	}
	stored := cas
	for i, c := range ch.AddCAs {
		if err := newCAConflict(stored, c); err != nil {
			return err
		}
		c.ID, c.CreatedAt, c.UpdatedAt = NewID("mtlsca_"), now, now
		if err := putJSON(caB, c.ID, c); err != nil {
			return err
		}
		ch.AddCAs[i] = c // the caller's copy names the new records (audit)
		byFP[c.Fingerprint] = c
		stored = append(stored[:len(stored):len(stored)], c)
	}
	for _, id := range ch.AdoptCAs {
		c, ok := byID[id]
		if !ok {
			return caNotFound(id)
		}
		c.ManagedBy, c.UpdatedAt = ch.AdoptAs, now
		if err := putJSON(caB, id, c); err != nil {
			return err
		}
	}
	deleted := map[string]bool{}
	for _, id := range ch.DeleteCRLs {
		if err := crlB.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete CRL %s: %w", id, err)
		}
		deleted[id] = true
	}
	hasCRL := map[string]bool{}
	for _, c := range crls {
		if !deleted[c.ID] {
			hasCRL[c.CAID] = true
		}
	}
	for i, n := range ch.AddCRLs {
		ca, ok := byFP[n.CAFingerprint]
		if !ok {
			return fmt.Errorf("no stored CA with fingerprint %s for a new CRL", n.CAFingerprint)
		}
		if hasCRL[ca.ID] {
			return problem.Conflict("crl_exists", "CA %s already has a CRL", ca.ID)
		}
		c := n.CRL
		c.ID, c.CAID, c.CreatedAt, c.UpdatedAt = NewID("mtlscrl_"), ca.ID, now, now
		if err := putJSON(crlB, c.ID, c); err != nil {
			return err
		}
		ch.AddCRLs[i].CRL = c
		hasCRL[ca.ID] = true
	}
	for _, c := range ch.UpdateCRLs {
		if crlB.Get([]byte(c.ID)) == nil {
			return crlNotFound(c.ID)
		}
		c.UpdatedAt = now
		if err := putJSON(crlB, c.ID, c); err != nil {
			return err
		}
	}
	for _, id := range ch.DeleteCAs {
		for _, c := range crls {
			if c.CAID == id && !deleted[c.ID] {
				if err := crlB.Delete([]byte(c.ID)); err != nil {
					return fmt.Errorf("delete CRL %s: %w", c.ID, err)
				}
			}
		}
		if err := caB.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete CA %s: %w", id, err)
		}
	}
	return nil
}

// ---- outbound certificates

func outboundNotFound(id string) error {
	return problem.NotFound("mtls_certificate_not_found", "no mTLS certificate with ID %q: list them with `mtlsgate mtls-certificate list`", id)
}

// CreateOutbound stores a client certificate and its key (o.KeyPEM), enabled.
func (s *Store) CreateOutbound(o Outbound, audit func(Outbound) *AuditEntry) (Outbound, error) {
	now := s.now().UTC()
	o.ID = NewID("mtlscert_")
	o.CreatedAt, o.UpdatedAt = now, now
	o.Enabled = true
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbound)
		existing, err := all[outboundRecord](b)
		if err != nil {
			return err
		}
		for _, e := range existing {
			if e.Name == o.Name {
				p := problem.Conflict("duplicate_name", "an mTLS certificate named %q already exists (%s): pick another --name, or replace its certificate and key in place with `mtlsgate mtls-certificate update --cert-id %s`", e.Name, e.ID, e.ID)
				p.ExistingID = e.ID
				return p
			}
		}
		r := outboundRecord{Outbound: o, Key: o.KeyPEM}
		r.KeyPEM = nil
		if s.aead != nil {
			if r.Key, err = s.seal(o.KeyPEM, []byte(o.ID)); err != nil {
				return err
			}
			r.KeyEncrypted = true
		}
		if err := putJSON(b, o.ID, r); err != nil {
			return err
		}
		return record(s, tx, audit, r.Outbound)
	})
	o.KeyPEM = nil
	return o, err
}

func (s *Store) decode(r outboundRecord, withKey bool) (Outbound, error) {
	o := r.Outbound
	if !withKey {
		return o, nil
	}
	if !r.KeyEncrypted {
		o.KeyPEM = r.Key
		return o, nil
	}
	if s.aead == nil {
		return o, fmt.Errorf("private key of %s is encrypted and no encryption key is configured", o.ID)
	}
	k, err := s.open(r.Key, []byte(o.ID))
	if err != nil {
		return o, fmt.Errorf("decrypt private key of %s: %w", o.ID, err)
	}
	o.KeyPEM = k
	return o, nil
}

// ListOutbound returns every outbound certificate, oldest first; key material
// only when withKeys.
func (s *Store) ListOutbound(withKeys bool) ([]Outbound, error) {
	var recs []outboundRecord
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		recs, err = all[outboundRecord](tx.Bucket(bucketOutbound))
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Outbound, 0, len(recs))
	for _, r := range recs {
		o, err := s.decode(r, withKeys)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// GetOutbound returns one outbound certificate without its key.
func (s *Store) GetOutbound(id string) (Outbound, error) {
	var r outboundRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketOutbound), id, &r)
		if err == nil && !ok {
			err = outboundNotFound(id)
		}
		return err
	})
	return r.Outbound, err
}

// SetOutboundEnabled enables or disables a certificate and returns it before
// and after. A certificate already in that state is not written (and the
// write has no audit record).
func (s *Store) SetOutboundEnabled(id string, enabled bool, audit func(before, after Outbound) *AuditEntry) (before, after Outbound, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbound)
		var r outboundRecord
		ok, err := getJSON(b, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return outboundNotFound(id)
		}
		before = r.Outbound
		if r.Enabled == enabled {
			after = before
			return nil // already so: no change, no record
		}
		r.Enabled = enabled
		r.UpdatedAt = s.now().UTC()
		after = r.Outbound
		if err := putJSON(b, id, r); err != nil {
			return err
		}
		return record2(s, tx, audit, before, after)
	})
	return before, after, err
}

// Material is a replacement certificate and key for an outbound certificate:
// everything about it that comes from the uploaded files.
type Material struct {
	ChainPEM    string
	Subject     string
	Issuer      string
	Fingerprint string
	NotBefore   time.Time
	NotAfter    time.Time
	KeyPEM      []byte
}

// ReplaceOutboundMaterial swaps the certificate chain and private key of an
// outbound certificate, keeping its ID, name, environment types and enabled
// state, so Envoys subscribed to the name get the new pair over SDS without a
// configuration change. The key is sealed as CreateOutbound seals it.
func (s *Store) ReplaceOutboundMaterial(id string, m Material, audit func(before, after Outbound) *AuditEntry) (before, after Outbound, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbound)
		var r outboundRecord
		ok, err := getJSON(b, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return outboundNotFound(id)
		}
		before = r.Outbound
		r.ChainPEM, r.Subject, r.Issuer, r.Fingerprint = m.ChainPEM, m.Subject, m.Issuer, m.Fingerprint
		r.NotBefore, r.NotAfter = m.NotBefore, m.NotAfter
		r.UpdatedAt = s.now().UTC()
		r.Key, r.KeyEncrypted = m.KeyPEM, false
		if s.aead != nil {
			// The record ID is the associated data, as at creation, so a
			// sealed key cannot be moved to another record.
			if r.Key, err = s.seal(m.KeyPEM, []byte(id)); err != nil {
				return fmt.Errorf("seal private key of %s: %w", id, err)
			}
			r.KeyEncrypted = true
		}
		after = r.Outbound
		if err := putJSON(b, id, r); err != nil {
			return err
		}
		return record2(s, tx, audit, before, after)
	})
	return before, after, err
}

// DeleteOutbound removes a certificate if guard (run inside the transaction,
// so nothing enables it in between) allows.
func (s *Store) DeleteOutbound(id string, guard func(Outbound) error, audit func(Outbound) *AuditEntry) (Outbound, error) {
	var r outboundRecord
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbound)
		ok, err := getJSON(b, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return outboundNotFound(id)
		}
		if err := guard(r.Outbound); err != nil {
			return err
		}
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete mTLS certificate %s: %w", id, err)
		}
		return record(s, tx, audit, r.Outbound)
	})
	return r.Outbound, err
}
