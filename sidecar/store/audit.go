package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketAudit holds the audit trail: one record per committed change, keyed
// by the bucket's sequence as 8 big-endian bytes, so the cursor walks it
// oldest first and the oldest records are the first keys. A record is
// written by the transaction that makes its change: it exists exactly when
// the change does, whatever happens to the process or the log afterwards.
var bucketAudit = []byte("audit")

// DefaultAuditRetention is how many audit records the store keeps when
// Options.AuditRetention is not set. Records run from about 200 bytes (a
// rename) to a few KiB (a trust directory read that adds many lists), so
// the trail stays within a few MiB of the database file while covering
// years of ordinary operation; the log keeps the lines beyond it.
const DefaultAuditRetention = 10000

func init() {
	// Schema 3 adds the audit bucket. A build that predates it refuses the
	// store: it would make changes with no record, a silent gap in the trail.
	migrations[2] = func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketAudit)
		return err
	}
}

// AuditEntry is one audit record: who changed what, from which state to
// which. Before, After and Details are JSON values; read back from the
// store they are generic (maps, slices, strings).
type AuditEntry struct {
	// Seq numbers the records in commit order, without gaps: a gap in a
	// listing that is not at its start means a record was lost, which the
	// store does not do, and records below the first one shown were
	// dropped by the retention.
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Before  any            `json:"before"`
	After   any            `json:"after"`
	Details map[string]any `json:"details,omitempty"`
}

func auditKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// appendAudit writes e in tx, stamping its sequence number and time, and
// drops the records that fall out of the retention. e is nil when the
// change calls for no record. An error fails the transaction: a change is
// not committed without its record.
func (s *Store) appendAudit(tx *bolt.Tx, e *AuditEntry) error {
	if e == nil {
		return nil
	}
	b := tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("number the audit record: %w", err)
	}
	e.Seq, e.Time = seq, s.now().UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode the audit record of %s: %w", e.Action, err)
	}
	if err := b.Put(auditKey(seq), data); err != nil {
		return fmt.Errorf("write the audit record of %s: %w", e.Action, err)
	}
	if seq <= uint64(s.auditRetention) {
		return nil
	}
	// Sequence numbers have no gaps, so everything below this key is
	// beyond the retention. Usually that is one record; after the
	// retention was lowered, all the excess goes in this transaction.
	keep := auditKey(seq - uint64(s.auditRetention) + 1)
	c := b.Cursor()
	for k, _ := c.First(); k != nil && string(k) < string(keep); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return fmt.Errorf("drop an audit record beyond the retention: %w", err)
		}
	}
	return nil
}

// AuditQuery selects audit records.
type AuditQuery struct {
	// Since keeps the records made at or after it (all when zero).
	Since time.Time
	// Before keeps the records numbered below it (all when 0): the cursor
	// that pages back from a page's oldest record.
	Before uint64
	// Limit keeps only the newest Limit of the selected records (all when 0).
	Limit int
}

// AuditLog returns the audit records q selects, oldest first, and whether
// older ones that q selects were left out by its limit.
func (s *Store) AuditLog(q AuditQuery) (list []AuditEntry, more bool, err error) {
	out := []AuditEntry{}
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		k, v := c.Last()
		if q.Before > 0 {
			k, v = c.Seek(auditKey(q.Before))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		// Walked from the newest back, so a limit reads only what it
		// returns (and, with since, what it skips before the next match).
		// Older records are skipped, not taken as the end: the clock may
		// have been set back between two of them.
		for ; k != nil; k, v = c.Prev() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode audit record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if !q.Since.IsZero() && e.Time.Before(q.Since) {
				continue
			}
			if q.Limit > 0 && len(out) == q.Limit {
				more = true
				break
			}
			out = append(out, e)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, more, err
}

// record writes the audit record audit builds from v, if any.
func record[T any](s *Store, tx *bolt.Tx, audit func(T) *AuditEntry, v T) error {
	if audit == nil {
		return nil
	}
	return s.appendAudit(tx, audit(v))
}

// record2 is record for a change seen before and after.
func record2[T any](s *Store, tx *bolt.Tx, audit func(before, after T) *AuditEntry, before, after T) error {
	if audit == nil {
		return nil
	}
	return s.appendAudit(tx, audit(before, after))
}
