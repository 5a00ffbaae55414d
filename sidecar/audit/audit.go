// Package audit keeps the sidecar's audit trail: one record for every
// committed change of trust material, whoever made it. Changes made by an
// operator through the admin API name the token; changes the sidecar makes
// on its own (a CRL downloaded from its URL, the trust directory applied)
// name the component, so "which CAs and lists were in force, and since when"
// can be answered from the trail alone.
//
// A record is written into the store by the transaction that makes its
// change (the store methods take a function that builds it), so it commits
// and rolls back with the change: no crash, full disk or failing log sink
// between the two can leave a change without its record, or a record
// without its change. The same record is then written as a log line, for
// log pipelines; the line can still be lost, the stored record cannot.
package audit

import (
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Actors of the changes the sidecar makes without an admin request.
const (
	ActorCRLRefresh = "crl-refresh"
	ActorTrustDir   = "trust-dir"
)

// Entry builds the record of one change, for a store write's audit
// argument. attrs are key-value pairs, kept as the record's details.
func Entry(actor, action string, before, after any, attrs ...any) *store.AuditEntry {
	e := &store.AuditEntry{Actor: actor, Action: action, Before: before, After: after}
	for i := 0; i+1 < len(attrs); i += 2 {
		k, ok := attrs[i].(string)
		if !ok {
			continue
		}
		if e.Details == nil {
			e.Details = map[string]any{}
		}
		e.Details[k] = attrs[i+1]
	}
	return e
}

// Log writes the audit line of a record the store has committed (with its
// sequence number, which finds it in `mtlsgate audit list`) and counts the
// change in mtlsgate_trust_changes_total. log and m may be nil, and so may e
// (a write that called for no record). Call it only once the write
// returned without error: a line for a change that was rolled back would be
// false.
func Log(log *slog.Logger, m *metrics.Metrics, e *store.AuditEntry) {
	if e == nil {
		return
	}
	if m != nil {
		m.Changes.WithLabelValues(e.Action).Inc()
	}
	if log == nil {
		return
	}
	args := []any{"audit", true, "auditSeq", e.Seq, "actor", e.Actor, "action", e.Action, "before", e.Before, "after", e.After}
	for _, k := range slices.Sorted(maps.Keys(e.Details)) {
		args = append(args, k, e.Details[k])
	}
	log.Info("audit", args...)
}

// Ref names a record in an audit line.
type Ref struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	Enabled     *bool  `json:"enabled,omitempty"`
	Fingerprint string `json:"sha256Fingerprint,omitempty"`
	NotAfter    string `json:"notAfter,omitempty"`
	// A CRL's number, thisUpdate and source: what tells one list from the
	// next in an audit line.
	Number     string `json:"number,omitempty"`
	ThisUpdate string `json:"thisUpdate,omitempty"`
	Source     string `json:"source,omitempty"`
}

// CRLRef names one revocation list as stored.
func CRLRef(c store.CRL) Ref {
	return Ref{ID: c.ID, Number: c.Number, ThisUpdate: Time(c.ThisUpdate), Source: Source(c)}
}

// Source is where a stored CRL comes from: its URL, "file" for an uploaded
// list, or what manages it.
func Source(c store.CRL) string {
	if c.ManagedBy != "" {
		return c.ManagedBy
	}
	if c.URL == "" {
		return "file"
	}
	return c.URL
}

// Time formats a timestamp for an audit line.
func Time(t time.Time) string { return t.UTC().Format(time.RFC3339) }
