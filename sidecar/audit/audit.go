// Package audit writes the sidecar's audit trail: one structured log line for
// every committed change of trust material, whoever made it. Changes made by
// an operator through the admin API name the token; changes the sidecar makes
// on its own (a CRL downloaded from its URL, the trust directory applied) name
// the component, so "which CAs and lists were in force, and since when" can be
// answered from the audit lines alone.
package audit

import (
	"log/slog"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Actors of the changes the sidecar makes without an admin request.
const (
	ActorCRLRefresh = "crl-refresh"
	ActorTrustDir   = "trust-dir"
)

// Record writes one audit line and counts the change in
// mtlsgate_trust_changes_total (m may be nil). Call it after the change is
// committed: a line for a change that was rolled back would be false.
func Record(log *slog.Logger, m *metrics.Metrics, actor, action string, before, after any, attrs ...any) {
	if m != nil {
		m.Changes.WithLabelValues(action).Inc()
	}
	if log == nil {
		return
	}
	log.Info("audit", append([]any{"audit", true, "actor", actor, "action", action, "before", before, "after", after}, attrs...)...)
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
