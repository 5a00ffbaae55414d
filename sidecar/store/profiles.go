package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/tidwall/gjson"
)

// bucketProfiles holds every version of the authorization profile set,
// keyed by the version number as 8 big-endian bytes so the cursor's last key
// is the active version. Versions are never rewritten or deleted: a rollback
// appends a copy of the old content, so history reads as what was in force
// when.
var bucketProfiles = []byte("profiles")

func init() {
	// Schema 2 adds the profiles bucket. Migrating is creating it; a build
	// that predates it refuses the store rather than serve bundles without
	// the bindings operators set.
	migrations[1] = func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketProfiles)
		return err
	}
}

// ProfileVersion is one stored version of the profile set.
type ProfileVersion struct {
	Version int `json:"version"`
	// Profiles is the set as a compact JSON array, byte for byte what the
	// bundle serves.
	Profiles json.RawMessage `json:"profiles"`
	// SHA256 is the hex digest of Profiles; two versions with the same
	// digest bind exactly the same way.
	SHA256 string `json:"sha256"`
	// Action is "set" or "rollback"; RollbackOf names the version a
	// rollback copied.
	Action     string `json:"action"`
	RollbackOf int    `json:"rollbackOf,omitempty"`
	Actor      string `json:"actor,omitempty"`
	// CreatedAt is when this version became active.
	CreatedAt time.Time `json:"createdAt"`
}

// CanonicalProfiles validates a profile array with the filter's own parser
// and returns it compacted. The error is a *problem.Error naming the JSON path.
func CanonicalProfiles(raw []byte) ([]byte, []bundle.Profile, error) {
	if !gjson.ValidBytes(raw) {
		return nil, nil, problem.Invalid("bad_profiles", "profiles: not valid JSON: pass an array of profile objects")
	}
	list, err := bundle.ParseProfiles(gjson.ParseBytes(raw), "profiles")
	if err != nil {
		return nil, nil, problem.Invalid("bad_profiles", "%v", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, nil, problem.Invalid("bad_profiles", "profiles: %v", err)
	}
	return buf.Bytes(), list, nil
}

func versionKey(n int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func lastProfiles(b *bolt.Bucket) (ProfileVersion, bool, error) {
	k, v := b.Cursor().Last()
	if k == nil {
		return ProfileVersion{}, false, nil
	}
	var pv ProfileVersion
	if err := json.Unmarshal(v, &pv); err != nil {
		return pv, false, fmt.Errorf("decode profile version %d: %w", binary.BigEndian.Uint64(k), err)
	}
	return pv, true, nil
}

func (s *Store) appendProfiles(tx *bolt.Tx, pv ProfileVersion) (ProfileVersion, error) {
	b := tx.Bucket(bucketProfiles)
	last, _, err := lastProfiles(b)
	if err != nil {
		return pv, err
	}
	pv.Version = last.Version + 1
	pv.SHA256 = digest(pv.Profiles)
	pv.CreatedAt = s.now().UTC()
	data, err := json.Marshal(pv)
	if err != nil {
		return pv, fmt.Errorf("encode profile version: %w", err)
	}
	if err := b.Put(versionKey(pv.Version), data); err != nil {
		return pv, fmt.Errorf("write profile version %d: %w", pv.Version, err)
	}
	return pv, nil
}

// SetProfiles stores raw (a JSON array of profiles) as the next version and
// makes it active. Content equal to the active version is not a change:
// that version comes back with changed false and nothing is written. audit
// sees the version active before (nil when none was) and the new one.
func (s *Store) SetProfiles(raw []byte, actor string, audit func(before, after *ProfileVersion) *AuditEntry) (pv ProfileVersion, changed bool, err error) {
	canon, _, err := CanonicalProfiles(raw)
	if err != nil {
		return pv, false, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		last, ok, err := lastProfiles(tx.Bucket(bucketProfiles))
		if err != nil {
			return err
		}
		if ok && last.SHA256 == digest(canon) {
			pv = last
			return nil
		}
		changed = true
		if pv, err = s.appendProfiles(tx, ProfileVersion{Profiles: canon, Action: "set", Actor: actor}); err != nil {
			return err
		}
		var before *ProfileVersion
		if ok {
			before = &last
		}
		return record2(s, tx, audit, before, &pv)
	})
	return pv, changed, err
}

// RollbackProfiles makes the content of version `to` active again as a new
// version, so the history keeps both the change and its undoing.
func (s *Store) RollbackProfiles(to int, actor string, audit func(before, after *ProfileVersion) *AuditEntry) (ProfileVersion, error) {
	var pv ProfileVersion
	err := s.update(func(tx *bolt.Tx) error {
		old, err := getProfileVersion(tx, to)
		if err != nil {
			return err
		}
		last, ok, err := lastProfiles(tx.Bucket(bucketProfiles))
		if err != nil {
			return err
		}
		if pv, err = s.appendProfiles(tx, ProfileVersion{Profiles: old.Profiles, Action: "rollback", RollbackOf: to, Actor: actor}); err != nil {
			return err
		}
		var before *ProfileVersion
		if ok {
			before = &last
		}
		return record2(s, tx, audit, before, &pv)
	})
	return pv, err
}

func getProfileVersion(tx *bolt.Tx, n int) (ProfileVersion, error) {
	var pv ProfileVersion
	if n < 1 {
		return pv, problem.Invalid("bad_version", "version %d does not exist: versions start at 1; see `mtlsgate profile history`", n)
	}
	v := tx.Bucket(bucketProfiles).Get(versionKey(n))
	if v == nil {
		return pv, problem.NotFound("profile_version_not_found", "no profile set version %d: see `mtlsgate profile history` for the versions stored", n)
	}
	if err := json.Unmarshal(v, &pv); err != nil {
		return pv, fmt.Errorf("decode profile version %d: %w", n, err)
	}
	return pv, nil
}

// ProfileVersionAt returns one stored version.
func (s *Store) ProfileVersionAt(n int) (ProfileVersion, error) {
	var pv ProfileVersion
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		pv, err = getProfileVersion(tx, n)
		return err
	})
	return pv, err
}

// ActiveProfiles returns the version in force; ok is false when no profile
// set was ever stored.
func (s *Store) ActiveProfiles() (pv ProfileVersion, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) (err error) {
		pv, ok, err = lastProfiles(tx.Bucket(bucketProfiles))
		return err
	})
	return pv, ok, err
}

// ProfileHistory returns every version, oldest first.
func (s *Store) ProfileHistory() ([]ProfileVersion, error) {
	out := []ProfileVersion{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProfiles).ForEach(func(k, v []byte) error {
			var pv ProfileVersion
			if err := json.Unmarshal(v, &pv); err != nil {
				return fmt.Errorf("decode profile version %x: %w", k, err)
			}
			out = append(out, pv)
			return nil
		})
	})
	return out, err
}
