// Package crlrefresh downloads CRLs published at a URL and refreshes them
// before their nextUpdate. A failed download keeps the last good list (an old
// list still revokes what it lists; dropping it would un-revoke everything)
// and records the error where `crl list` shows it.
package crlrefresh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/audit"
	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
	"github.com/mtlsgate/mtlsgate/sidecar/termtext"
)

// MaxCRLBytes bounds a download; real CRLs of large CAs stay well below it.
const MaxCRLBytes = 32 << 20

// Fetch downloads a CRL with client, which should come from NewClient: its
// rules on redirects and addresses rely on the URL Fetch marks the
// download's context with.
func Fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("CRL URL %q: %w", url, err)
	}
	req = req.WithContext(withOrigin(ctx, req.URL))
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch CRL %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The reason phrase is the server's own text, shown in `crl list`.
		return nil, fmt.Errorf("fetch CRL %s: HTTP %s", url, termtext.Sanitize(resp.Status))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxCRLBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch CRL %s: %w", url, err)
	}
	if len(data) > MaxCRLBytes {
		return nil, fmt.Errorf("fetch CRL %s: larger than %d bytes", url, MaxCRLBytes)
	}
	return data, nil
}

// Apply records a parsed list in c.
func Apply(c *store.CRL, rl *x509.RevocationList, pemBytes []byte) {
	c.PEM = string(pemBytes)
	c.Number = ""
	if rl.Number != nil {
		c.Number = rl.Number.String()
	}
	c.ThisUpdate = rl.ThisUpdate.UTC()
	c.NextUpdate = rl.NextUpdate.UTC()
	c.RevokedCount = len(rl.RevokedCertificateEntries)
}

// Older reports whether list a is older than list b: by CRL number when
// both have one, else by thisUpdate. Nothing is older than a stored list
// that is not complete (a delta or partition stored by an older version,
// withheld from publishing): deltas share the base's number sequence and run
// ahead of it, so the complete list that replaces one has a lower number.
func Older(a, b store.CRL) bool {
	if pki.StoredIncomplete(b.PEM) != "" {
		return false
	}
	na, okA := parseNumber(a.Number)
	nb, okB := parseNumber(b.Number)
	if okA && okB {
		return na.Cmp(nb) < 0
	}
	return a.ThisUpdate.Before(b.ThisUpdate)
}

// Refresher keeps URL CRLs fresh.
type Refresher struct {
	Store  *store.Store
	Client *http.Client
	Log    *slog.Logger
	M      *metrics.Metrics
	// MinInterval is the shortest time between two downloads of one list and
	// the retry delay after a failure; MaxInterval the longest between two.
	MinInterval, MaxInterval time.Duration
	// Republish runs when a list's nextUpdate passes, so the bundle's stale
	// flags follow the clock and not only changes.
	Republish func()
	// MaxAgeWithoutNextUpdate is how long after its thisUpdate a list
	// without nextUpdate is current (store.CRL.StaleAfter); zero: forever.
	MaxAgeWithoutNextUpdate time.Duration

	wake chan struct{}
}

// Wake makes Run re-read the schedule (after a CRL is created or deleted).
func (r *Refresher) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Init prepares the refresher; call before Run and Wake.
func (r *Refresher) Init() { r.wake = make(chan struct{}, 1) }

// due is when c should next be downloaded.
func (r *Refresher) due(c store.CRL) time.Time {
	if c.LastErrorAt.After(c.LastFetchAt) {
		return c.LastErrorAt.Add(r.MinInterval)
	}
	last := c.LastFetchAt
	if last.IsZero() {
		last = c.CreatedAt
	}
	staleAfter := c.StaleAfter(r.MaxAgeWithoutNextUpdate)
	if staleAfter.IsZero() {
		return last.Add(r.MaxInterval)
	}
	// Halfway to nextUpdate leaves room for several retries before the list
	// goes stale.
	gap := staleAfter.Sub(last) / 2
	gap = max(gap, r.MinInterval)
	gap = min(gap, r.MaxInterval)
	return last.Add(gap)
}

// Run refreshes until ctx ends.
func (r *Refresher) Run(ctx context.Context) {
	staleSeen := map[string]bool{}
	for {
		crls, err := r.Store.ListCRLs()
		if err != nil {
			r.Log.Error("list CRLs for refresh", "err", err)
		}
		now := time.Now()
		next := now.Add(r.MaxInterval)
		republish := false
		for _, c := range crls {
			if stale := c.Stale(now, r.MaxAgeWithoutNextUpdate); stale != staleSeen[c.ID] {
				staleSeen[c.ID] = stale
				republish = true
			}
			if t := c.StaleAfter(r.MaxAgeWithoutNextUpdate); !t.IsZero() && t.After(now) && t.Before(next) {
				next = t.Add(time.Millisecond)
			}
			if c.URL == "" {
				continue
			}
			d := r.due(c)
			if !d.After(now) {
				r.refresh(ctx, c)
				d = now.Add(r.MinInterval)
			}
			if d.Before(next) {
				next = d
			}
		}
		if republish && r.Republish != nil {
			r.Republish()
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// errSuperseded abandons a download whose record changed while it ran.
var errSuperseded = errors.New("CRL changed during the download")

func (r *Refresher) refresh(ctx context.Context, c store.CRL) {
	err := r.download(ctx, c)
	if errors.Is(err, errSuperseded) {
		// Not the URL's fault: an operator gave another list or source
		// meanwhile, and the store already holds the list to keep.
		r.M.CRLFetches.WithLabelValues("ok").Inc()
		r.Log.Info("CRL changed while it was downloaded; the download is discarded", "crlId", c.ID, "caId", c.CAID, "url", c.URL)
		return
	}
	if err == nil {
		r.M.CRLFetches.WithLabelValues("ok").Inc()
		return
	}
	r.M.CRLFetches.WithLabelValues("error").Inc()
	r.Log.Warn("CRL refresh failed; keeping the last good list", "crlId", c.ID, "caId", c.CAID, "url", c.URL, "err", err)
	_, uerr := r.Store.UpdateCRL(c.ID, func(s *store.CRL) error {
		if s.URL != c.URL {
			return errSuperseded
		}
		// Stored for `crl list` and the API: text from the network (a
		// status line, a redirect target) is sanitized before it is kept.
		s.LastError = termtext.Sanitize(err.Error())
		s.LastErrorAt = time.Now().UTC()
		return nil
	}, nil) // a failed download changes no list: no audit record
	if uerr != nil && !errors.Is(uerr, errSuperseded) {
		r.Log.Error("record CRL refresh failure", "crlId", c.ID, "err", uerr)
	}
}

func (r *Refresher) download(ctx context.Context, c store.CRL) error {
	ca, err := r.Store.GetCA(c.CAID)
	if err != nil {
		return err
	}
	caCert, err := ca.Certificate()
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := Fetch(fctx, r.Client, c.URL)
	if err != nil {
		return err
	}
	rl, pemBytes, err := pki.CRL(data, caCert)
	if err != nil {
		return err
	}
	var got store.CRL
	Apply(&got, rl, pemBytes)
	// Judged against the record as it is when the list is stored, not as it
	// was before the download: an operator's `crl update` may have stored a
	// newer list (and dropped the URL) meanwhile, and overwriting it would
	// un-revoke certificates with no refresh left to correct it.
	var rec *store.AuditEntry
	_, err = r.Store.UpdateCRL(c.ID, func(s *store.CRL) error {
		if s.URL != c.URL {
			return errSuperseded
		}
		if Older(got, *s) {
			if s.PEM != c.PEM {
				return errSuperseded
			}
			return fmt.Errorf("the CRL at %s (number %s, thisUpdate %s) is older than the stored one (number %s, thisUpdate %s): check that the URL is the CA's current distribution point",
				c.URL, orDash(got.Number), got.ThisUpdate.Format(time.RFC3339), orDash(s.Number), s.ThisUpdate.Format(time.RFC3339))
		}
		Apply(s, rl, pemBytes)
		s.LastFetchAt = time.Now().UTC()
		s.LastError = ""
		s.LastErrorAt = time.Time{}
		return nil
	}, func(before, after store.CRL) *store.AuditEntry {
		if after.PEM == before.PEM {
			return nil // the same list again: only its fetch time moved
		}
		// A new list changes which certificates are revoked: a record like
		// an operator's `crl update`, so the trail shows every list in force.
		rec = audit.Entry(audit.ActorCRLRefresh, "crl.update", audit.CRLRef(before), audit.CRLRef(after), "caId", c.CAID, "nextUpdate", audit.Time(after.NextUpdate))
		return rec
	})
	if err != nil {
		return err
	}
	if rec == nil {
		r.Log.Debug("CRL downloaded; unchanged", "crlId", c.ID, "number", rl.Number, "nextUpdate", rl.NextUpdate)
		return nil
	}
	audit.Log(r.Log, r.M, rec)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func parseNumber(s string) (*big.Int, bool) {
	if s == "" {
		return nil, false
	}
	return new(big.Int).SetString(s, 10)
}
