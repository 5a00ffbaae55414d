// Package admin is the sidecar's management REST API: CA certificates, CRLs
// and outbound mTLS certificates, plus /healthz, /readyz and /metrics. Every
// /v1 route needs the bearer token; every change is an audit record, stored
// with the change, naming the token's id, the action and the ids before and
// after; GET /v1/audit reads them back.
package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/audit"
	"github.com/mtlsgate/mtlsgate/sidecar/crlrefresh"
	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// MaxBody bounds request bodies; certificates, keys and CRLs uploaded inline
// fit well within it (large CRLs are better given by URL).
const MaxBody = 16 << 20

// Config wires the API to the rest of the sidecar.
type Config struct {
	Store       *store.Store
	Tracker     *sds.Tracker
	Environment string
	// Tokens are the bearer tokens accepted (re-read as the file changes).
	Tokens  *admintoken.File
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// Ready says why serve is not ready (the detail of /readyz's 503), or
	// nil when the store's current state is published.
	Ready      func() error
	HTTPClient *http.Client          // for CRL URLs
	Refresher  *crlrefresh.Refresher // woken when URL CRLs change
	// CRLMaxAge is how long after its thisUpdate a CRL without nextUpdate
	// counts as current (store.CRL.StaleAfter); zero means forever.
	CRLMaxAge time.Duration
}

type server struct {
	Config
	refused refusalLog
}

// refusalLog writes one warning per second at most about refused admin
// requests, so a client guessing tokens shows in the log without flooding
// it. The refusals not written are counted in a line of their own at the end
// of the second, not left for a next refusal that may never come.
type refusalLog struct {
	mu     sync.Mutex
	last   time.Time
	unsaid int
}

func (l *refusalLog) note(log *slog.Logger, r *http.Request, presented bool) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < time.Second {
		l.unsaid++
		if l.unsaid == 1 {
			time.AfterFunc(l.last.Add(time.Second).Sub(now), func() { l.flush(log) })
		}
		l.mu.Unlock()
		return
	}
	l.last = now
	l.mu.Unlock()
	log.Warn("admin request refused: missing or unknown token", "audit", true, "method", r.Method, "path", r.URL.Path,
		"remote", r.RemoteAddr, "tokenPresented", presented)
}

func (l *refusalLog) flush(log *slog.Logger) {
	l.mu.Lock()
	unsaid := l.unsaid
	l.unsaid = 0
	l.last = time.Now()
	l.mu.Unlock()
	if unsaid > 0 {
		log.Warn("admin requests refused: missing or unknown token (more of them, not written one by one)", "audit", true, "refused", unsaid)
	}
}

// actorKey carries the ID of the token that authenticated a request.
type actorKey struct{}

// actor names who made a change in audit lines and profile history.
func actor(r *http.Request) string {
	id, _ := r.Context().Value(actorKey{}).(string)
	return "token:" + id
}

// New returns the admin API handler.
func New(cfg Config) http.Handler {
	s := &server{Config: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.Ready != nil {
			if err := s.Ready(); err != nil {
				writeProblem(w, &problem.Error{Status: 503, Code: "not_ready", Title: "Service Unavailable", Detail: err.Error()})
				return
			}
		}
		writeJSON(w, 200, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics.Registry, promhttp.HandlerOpts{}))

	v1 := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, s.authed(h))
	}
	v1("GET "+api.PathCAs, s.listCAs)
	v1("POST "+api.PathCAs, s.createCA)
	v1("GET "+api.PathCAs+"/{id}", s.getCA)
	v1("PATCH "+api.PathCAs+"/{id}", s.updateCA)
	v1("DELETE "+api.PathCAs+"/{id}", s.deleteCA)
	v1("GET "+api.PathCRLs, s.listCRLs)
	v1("POST "+api.PathCRLs, s.createCRL)
	v1("GET "+api.PathCRLs+"/{id}", s.getCRL)
	v1("PUT "+api.PathCRLs+"/{id}", s.replaceCRL)
	v1("DELETE "+api.PathCRLs+"/{id}", s.deleteCRL)
	v1("GET "+api.PathOutbound, s.listOutbound)
	v1("POST "+api.PathOutbound, s.createOutbound)
	v1("GET "+api.PathOutbound+"/{id}", s.getOutbound)
	v1("PUT "+api.PathOutbound+"/{id}/material", s.replaceOutboundMaterial)
	v1("POST "+api.PathOutbound+"/{id}/disable", s.setEnabled(false))
	v1("POST "+api.PathOutbound+"/{id}/enable", s.setEnabled(true))
	v1("DELETE "+api.PathOutbound+"/{id}", s.deleteOutbound)
	s.profileRoutes(v1)
	v1("GET "+api.PathAudit, s.auditLog)
	v1("GET "+api.PathSDS, func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, 200, s.Tracker.Subscriptions())
		return nil
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, problem.NotFound("no_route", "no admin API route %s %s: this mtlsgate serve may be older than the CLI; check `mtlsgate version` on both", r.Method, r.URL.Path))
	})
	return s.instrument(mux)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(c int) { w.code = c; w.ResponseWriter.WriteHeader(c) }

func (s *server) instrument(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: 200}
		mux.ServeHTTP(sw, r)
		_, pattern := mux.Handler(r)
		s.Metrics.AdminRequests.WithLabelValues(pattern, strconv.Itoa(sw.code)).Inc()
	})
}

func (s *server) authed(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		id, known := s.Tokens.Check(strings.TrimSpace(tok))
		if !ok || !known {
			s.refused.note(s.Log, r, ok && strings.TrimSpace(tok) != "")
			w.Header().Set("WWW-Authenticate", `Bearer realm="mtlsgate"`)
			writeProblem(w, &problem.Error{Status: 401, Code: "unauthorized", Title: "Unauthorized",
				Detail: "missing or wrong admin token: set MTLSGATE_ADMIN_TOKEN to the token itself (not a file name) or pass --admin-token-file with the token file of this mtlsgate serve"})
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), actorKey{}, id))
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		if err := h(w, r); err != nil {
			if p, ok := problem.As(err); ok {
				writeProblem(w, p)
				return
			}
			s.Log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			writeProblem(w, &problem.Error{Status: 500, Code: "internal", Title: "Internal Server Error",
				Detail: "the sidecar failed to complete the request (" + err.Error() + "); nothing was changed unless a later list shows it: check the sidecar log"})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeProblem(w http.ResponseWriter, p *problem.Error) {
	w.Header().Set("Content-Type", api.ProblemType)
	w.WriteHeader(p.Status)
	doc := struct {
		Type string `json:"type"`
		*problem.Error
	}{Type: "https://mtlsgate.dev/problems/" + p.Code, Error: p}
	_ = json.NewEncoder(w).Encode(doc)
}

// decode reads a request body into v, which must point to a struct: one
// JSON object whose field names are v's json names exactly, and nothing
// after it. encoding/json alone matches names case-insensitively (NAME is
// taken for name) and stops reading at the end of the first document, so
// a body that says something other than what is applied would pass; a
// client relying on either would break with any stricter reader.
func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return problem.Invalid("too_large", "request body is larger than %d bytes: upload large CRLs by URL (--url)", MaxBody)
		}
		return problem.Invalid("bad_json", "request body could not be read (%v): send the request again", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem.Invalid("bad_json", "request body is not the expected JSON (%v)%s: see the request body table under Admin API in sidecar/README.md, or use the mtlsgate CLI", err, bodyHint(v, err))
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return problem.Invalid("bad_json", "request body has data after its JSON object (%q): send exactly one JSON object", abbreviate(rest, 40))
	}
	return exactFields(data, v)
}

// exactFields refuses a top-level field of the JSON object data whose name
// matches one of v's json names only when case is ignored.
func exactFields(data []byte, v any) error {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil // not an object: Decode has judged it already
	}
	names := jsonNames(reflect.TypeOf(v).Elem())
	got := slices.Sorted(maps.Keys(top))
	for _, k := range got {
		if names[k] {
			continue
		}
		for _, n := range slices.Sorted(maps.Keys(names)) {
			if strings.EqualFold(n, k) {
				return problem.Invalid("bad_json", "request body field %q is not known: field names are case-sensitive, use %q (see the request body table under Admin API in sidecar/README.md)", k, n)
			}
		}
		return problem.Invalid("bad_json", "request body field %q is not known: see the request body table under Admin API in sidecar/README.md", k)
	}
	return nil
}

// jsonNames are the object keys encoding/json uses for struct type t.
func jsonNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	if t.Kind() != reflect.Struct {
		return names
	}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct:
			maps.Copy(names, jsonNames(f.Type))
		case !f.IsExported():
		case name == "":
			names[f.Name] = true
		default:
			names[name] = true
		}
	}
	return names
}

// abbreviate is at most n bytes of b, marked when cut.
func abbreviate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// bodyHint names the right field for the mistakes a body copied from a GET
// answer makes: the answers show PEM text as "pem" or "chainPem", while the
// write bodies take "certPem", and a CRL as base64 "crl".
func bodyHint(v any, err error) string {
	field := ""
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field, _ = strconv.Unquote(f)
	}
	var b64 base64.CorruptInputError
	switch v.(type) {
	case *api.CreateCA:
		if field == "pem" {
			return `; use "certPem" for the CA certificate's PEM (GET answers call it "pem")`
		}
	case *api.CreateCRL, *api.ReplaceCRL:
		if field == "pem" {
			return `; use "crl" with the CRL file's bytes (PEM or DER) in base64, or "url"`
		}
		if errors.As(err, &b64) {
			return `; "crl" is the CRL file's bytes (PEM or DER) in base64, e.g. the output of base64 -w0 ca.crl`
		}
	case *api.CreateMTLSCertificate, *api.UpdateMTLSCertificateMaterial:
		if field == "chainPem" {
			return `; use "certPem" for the certificate chain (GET answers call it "chainPem") and "keyPem" for its key`
		}
	}
	return ""
}

// entry builds the audit record of a change made by request r; the store
// writes it in the change's transaction.
func entry(r *http.Request, action string, before, after any, attrs ...any) *store.AuditEntry {
	return audit.Entry(actor(r), action, before, after, attrs...)
}

// logAudit writes the audit line of a committed change.
func (s *server) logAudit(e *store.AuditEntry) { audit.Log(s.Log, s.Metrics, e) }

// auditLog answers GET /v1/audit: a page of the stored audit records, oldest
// first. ?since= (RFC 3339) keeps those made at or after it, ?before=SEQ
// those numbered below SEQ, and of these the page is the newest ?limit=N
// (api.AuditPageDefault without it). The trail can hold any number of
// records (--audit-retention), so the answer is bounded whatever the
// retention, and a Link rel="next" header names the page before when there
// is one: the JSON stays the array every other list answers.
func (s *server) auditLog(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var aq store.AuditQuery
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil && strings.Contains(v, " ") {
			// An offset's '+' sent unescaped arrives as a space.
			t, err = time.Parse(time.RFC3339Nano, strings.Replace(v, " ", "+", 1))
		}
		if err != nil {
			return problem.Invalid("bad_since", "since=%q is not an RFC 3339 time (2006-01-02T15:04:05Z; escape a '+' in an offset as %%2B): `mtlsgate audit list --since` also takes a duration such as 24h", v)
		}
		aq.Since = t
	}
	aq.Limit = api.AuditPageDefault
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > api.AuditPageMax {
			return problem.Invalid("bad_limit", "limit=%q is not a page size from 1 to %d (without limit, %d): fetch more records page by page, following the Link header's rel=\"next\" path, as `mtlsgate audit list` does", v, api.AuditPageMax, api.AuditPageDefault)
		}
		aq.Limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return problem.Invalid("bad_before", "before=%q is not a record number (seq): give the seq of the oldest record of the page you have, as the Link header's rel=\"next\" path does", v)
		}
		aq.Before = n
	}
	list, more, err := s.Store.AuditLog(aq)
	if err != nil {
		return fmt.Errorf("read the audit trail: %w", err)
	}
	if more {
		next := url.Values{}
		if v := q.Get("since"); v != "" {
			next.Set("since", aq.Since.Format(time.RFC3339Nano))
		}
		next.Set("before", strconv.FormatUint(list[0].Seq, 10))
		next.Set("limit", strconv.Itoa(aq.Limit))
		w.Header().Set("Link", "<"+api.PathAudit+"?"+next.Encode()+`>; rel="next"`)
	}
	writeJSON(w, 200, list)
	return nil
}

// ---- CA certificates

func (s *server) caView(ca store.CA, crls []store.CRL, now time.Time) api.CACertificate {
	v := api.CACertificate{CA: ca}
	for _, c := range crls {
		if c.CAID == ca.ID {
			v.CRL = &api.CRLState{ID: c.ID, Source: audit.Source(c), NextUpdate: c.NextUpdate, StaleAfter: c.StaleAfter(s.CRLMaxAge),
				Stale: c.Stale(now, s.CRLMaxAge), LastError: c.LastError}
		}
	}
	return v
}

func (s *server) listCAs(w http.ResponseWriter, r *http.Request) error {
	cas, err := s.Store.ListCAs()
	if err != nil {
		return err
	}
	crls, err := s.Store.ListCRLs()
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]api.CACertificate, 0, len(cas))
	for _, ca := range cas {
		out = append(out, s.caView(ca, crls, now))
	}
	writeJSON(w, 200, out)
	return nil
}

func (s *server) getCA(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.Store.GetCA(r.PathValue("id"))
	if err != nil {
		return err
	}
	crls, err := s.Store.ListCRLs()
	if err != nil {
		return err
	}
	writeJSON(w, 200, s.caView(ca, crls, time.Now()))
	return nil
}

func (s *server) createCA(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateCA
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := pki.ValidName(req.Name); err != nil {
		return err
	}
	now := time.Now()
	c, err := pki.CA([]byte(req.CertPEM), req.AllowIntermediate, now)
	if err != nil {
		return err
	}
	var rec *store.AuditEntry
	ca, err := s.Store.CreateCA(pki.CARecord(req.Name, c, ""), func(ca store.CA) *store.AuditEntry {
		rec = entry(r, "ca-certificate.create", nil, audit.Ref{ID: ca.ID, Name: ca.Name}, "fingerprint", ca.Fingerprint)
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	writeJSON(w, 201, api.CACertificate{CA: ca})
	return nil
}

func (s *server) updateCA(w http.ResponseWriter, r *http.Request) error {
	var req api.UpdateCA
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := pki.ValidName(req.Name); err != nil {
		return err
	}
	var rec *store.AuditEntry
	_, after, err := s.Store.RenameCA(r.PathValue("id"), req.Name, func(before, after store.CA) *store.AuditEntry {
		rec = entry(r, "ca-certificate.update", audit.Ref{ID: before.ID, Name: before.Name}, audit.Ref{ID: after.ID, Name: after.Name})
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	crls, err := s.Store.ListCRLs()
	if err != nil {
		return err
	}
	writeJSON(w, 200, s.caView(after, crls, time.Now()))
	return nil
}

// notManagedCA refuses to delete a CA the trust directory keeps, or one that
// carries a CRL from it: the next read of the directory would undo it. It runs
// inside the store's transaction, so the directory cannot take the CA over
// between the check and the deletion.
func notManagedCA(ca store.CA, crls []store.CRL) error {
	if ca.ManagedBy == store.ManagedByTrustDir {
		return problem.Conflict("managed_by_trust_dir", "CA %s (%s) comes from the trust directory (serve --trust-dir): remove its file from the directory, or from the Secret mounted there, instead; it would be added again at the next read", ca.ID, ca.Subject)
	}
	for _, c := range crls {
		if c.ManagedBy == store.ManagedByTrustDir {
			return problem.Conflict("managed_by_trust_dir", "CA %s carries CRL %s from the trust directory (serve --trust-dir): remove that CRL's file from the directory first", ca.ID, c.ID)
		}
	}
	return nil
}

func (s *server) deleteCA(w http.ResponseWriter, r *http.Request) error {
	var rec *store.AuditEntry
	ca, crlIDs, err := s.Store.DeleteCA(r.PathValue("id"), notManagedCA, func(ca store.CA, crlIDs []string) *store.AuditEntry {
		rec = entry(r, "ca-certificate.delete", audit.Ref{ID: ca.ID, Name: ca.Name}, nil, "deletedCrlIds", crlIDs)
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	if len(crlIDs) > 0 && s.Refresher != nil {
		s.Refresher.Wake()
	}
	writeJSON(w, 200, api.CACertificate{CA: ca})
	return nil
}

// ---- CRLs

func (s *server) crlView(c store.CRL, now time.Time) api.CRL {
	return api.CRL{CRL: c, Source: audit.Source(c), StaleAfter: c.StaleAfter(s.CRLMaxAge), Stale: c.Stale(now, s.CRLMaxAge)}
}

func (s *server) listCRLs(w http.ResponseWriter, r *http.Request) error {
	crls, err := s.Store.ListCRLs()
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]api.CRL, 0, len(crls))
	for _, c := range crls {
		out = append(out, s.crlView(c, now))
	}
	writeJSON(w, 200, out)
	return nil
}

func (s *server) getCRL(w http.ResponseWriter, r *http.Request) error {
	c, err := s.Store.GetCRL(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, s.crlView(c, time.Now()))
	return nil
}

func (s *server) createCRL(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateCRL
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.CAID == "" {
		return problem.Invalid("missing_ca", "--cert-id is required: the ID of the CA certificate that signed this CRL (see `mtlsgate ca-certificate list`)")
	}
	rec, err := s.loadCRL(r.Context(), req.CAID, req.CRL, req.URL)
	if err != nil {
		return err
	}
	var ae *store.AuditEntry
	c, err := s.Store.CreateCRL(rec, func(c store.CRL) *store.AuditEntry {
		ae = entry(r, "crl.create", nil, audit.Ref{ID: c.ID}, "caId", c.CAID, "source", audit.Source(c))
		return ae
	})
	if err != nil {
		return err
	}
	if s.Refresher != nil {
		s.Refresher.Wake()
	}
	s.logAudit(ae)
	writeJSON(w, 201, s.crlView(c, time.Now()))
	return nil
}

// loadCRL reads a list from data or downloads it from rawURL (exactly one),
// and checks that the CA caID signed it.
func (s *server) loadCRL(ctx context.Context, caID string, data []byte, rawURL string) (store.CRL, error) {
	if (len(data) == 0) == (rawURL == "") {
		return store.CRL{}, problem.Invalid("crl_source", "give exactly one of --file (a PEM or DER CRL) and --url (where the CA publishes it)")
	}
	ca, err := s.Store.GetCA(caID)
	if err != nil {
		return store.CRL{}, err
	}
	caCert, err := ca.Certificate()
	if err != nil {
		return store.CRL{}, err
	}
	rec := store.CRL{CAID: ca.ID}
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return store.CRL{}, problem.Invalid("bad_url", "--url %q is not an http(s) URL: pass the CRL distribution point, e.g. http://pki.example.com/ca.crl", rawURL)
		}
		data, err = crlrefresh.Fetch(ctx, s.HTTPClient, rawURL)
		if err != nil {
			return store.CRL{}, problem.Invalid("crl_fetch_failed", "%v: check that the URL is reachable from the sidecar, or download the CRL and pass it with --file", err)
		}
		rec.URL = rawURL
		rec.LastFetchAt = time.Now().UTC()
	}
	rl, pemBytes, err := pki.CRL(data, caCert)
	if err != nil {
		return store.CRL{}, err
	}
	crlrefresh.Apply(&rec, rl, pemBytes)
	return rec, nil
}

// replaceCRL swaps a CA's list for a newer one in one store update, so no
// moment passes without a list (delete and create would leave one).
func (s *server) replaceCRL(w http.ResponseWriter, r *http.Request) error {
	var req api.ReplaceCRL
	if err := decode(r, &req); err != nil {
		return err
	}
	old, err := s.Store.GetCRL(r.PathValue("id"))
	if err != nil {
		return err
	}
	// Refused before a download too, to spare it; the answer that counts is
	// the one inside the update.
	if err := notManagedCRL(old); err != nil {
		return err
	}
	rec, err := s.loadCRL(r.Context(), old.CAID, req.CRL, req.URL)
	if err != nil {
		return err
	}
	var ae *store.AuditEntry
	c, err := s.Store.UpdateCRL(old.ID, func(c *store.CRL) error {
		// Checked inside the update: the trust directory may have taken the
		// list over, or a refresh stored a newer one, since the read above.
		if err := notManagedCRL(*c); err != nil {
			return err
		}
		if crlrefresh.Older(rec, *c) {
			return problem.Conflict("crl_older", "the new CRL (number %s, thisUpdate %s) is older than CRL %s's (number %s, thisUpdate %s) and would un-revoke certificates; "+
				"to roll back on purpose, delete the CRL and create it again", orDash(rec.Number), audit.Time(rec.ThisUpdate), c.ID, orDash(c.Number), audit.Time(c.ThisUpdate))
		}
		c.URL, c.PEM, c.Number, c.ThisUpdate, c.NextUpdate, c.RevokedCount = rec.URL, rec.PEM, rec.Number, rec.ThisUpdate, rec.NextUpdate, rec.RevokedCount
		c.LastFetchAt, c.LastError, c.LastErrorAt = rec.LastFetchAt, "", time.Time{}
		return nil
	}, func(before, after store.CRL) *store.AuditEntry {
		if after.PEM == before.PEM && after.URL == before.URL {
			return nil // the list and source already stored: no change
		}
		ae = entry(r, "crl.update", audit.CRLRef(before), audit.CRLRef(after), "caId", after.CAID)
		return ae
	})
	if err != nil {
		return err
	}
	if s.Refresher != nil {
		s.Refresher.Wake()
	}
	s.logAudit(ae)
	writeJSON(w, 200, s.crlView(c, time.Now()))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// notManagedCRL is notManagedCA for a revocation list.
func notManagedCRL(c store.CRL) error {
	if c.ManagedBy == store.ManagedByTrustDir {
		return problem.Conflict("managed_by_trust_dir", "CRL %s comes from the trust directory (serve --trust-dir): change or remove its file there instead; the next read of the directory would undo this", c.ID)
	}
	return nil
}

func (s *server) deleteCRL(w http.ResponseWriter, r *http.Request) error {
	var rec *store.AuditEntry
	c, err := s.Store.DeleteCRL(r.PathValue("id"), notManagedCRL, func(c store.CRL) *store.AuditEntry {
		rec = entry(r, "crl.delete", audit.Ref{ID: c.ID}, nil, "caId", c.CAID)
		return rec
	})
	if err != nil {
		return err
	}
	if s.Refresher != nil {
		s.Refresher.Wake()
	}
	s.logAudit(rec)
	writeJSON(w, 200, s.crlView(c, time.Now()))
	return nil
}

// ---- outbound certificates

func (s *server) outboundView(o store.Outbound) api.MTLSCertificate {
	subs := s.Tracker.Subscribers(o.Name)
	if subs == nil {
		subs = []sds.Subscriber{}
	}
	o.KeyPEM = nil
	bad := pki.StoredKeyUnsupported(o.ChainPEM)
	return api.MTLSCertificate{Outbound: o, Served: o.Enabled && slices.Contains(o.EnvironmentTypes, s.Environment) && bad == "",
		UnsupportedKey: bad, Subscribers: subs}
}

func (s *server) listOutbound(w http.ResponseWriter, r *http.Request) error {
	list, err := s.Store.ListOutbound(false)
	if err != nil {
		return err
	}
	out := make([]api.MTLSCertificate, 0, len(list))
	for _, o := range list {
		out = append(out, s.outboundView(o))
	}
	writeJSON(w, 200, out)
	return nil
}

func (s *server) getOutbound(w http.ResponseWriter, r *http.Request) error {
	o, err := s.Store.GetOutbound(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, s.outboundView(o))
	return nil
}

func (s *server) createOutbound(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateMTLSCertificate
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := pki.ValidName(req.Name); err != nil {
		return err
	}
	if len(req.EnvironmentTypes) == 0 {
		return problem.Invalid("missing_environment_type", "--environment-type is required: repeat it for each of %s the certificate may serve", strings.Join(api.EnvironmentTypes, ", "))
	}
	var envs []string
	for _, e := range req.EnvironmentTypes {
		if !slices.Contains(api.EnvironmentTypes, e) {
			return problem.Invalid("bad_environment_type", "--environment-type %q is not one of %s", e, strings.Join(api.EnvironmentTypes, ", "))
		}
		if !slices.Contains(envs, e) {
			envs = append(envs, e)
		}
	}
	leaf, chain, key, err := pki.KeyPair([]byte(req.CertPEM), []byte(req.KeyPEM), time.Now())
	if err != nil {
		return err
	}
	var rec *store.AuditEntry
	o, err := s.Store.CreateOutbound(store.Outbound{
		Name:             req.Name,
		ChainPEM:         string(chain),
		Subject:          pki.DN(leaf.RawSubject),
		Issuer:           pki.DN(leaf.RawIssuer),
		Fingerprint:      pki.Fingerprint(leaf.Raw),
		NotBefore:        leaf.NotBefore.UTC(),
		NotAfter:         leaf.NotAfter.UTC(),
		EnvironmentTypes: envs,
		KeyPEM:           key,
	}, func(o store.Outbound) *store.AuditEntry {
		rec = entry(r, "mtls-certificate.create", nil, audit.Ref{ID: o.ID, Name: o.Name}, "environmentTypes", envs)
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	writeJSON(w, 201, s.outboundView(o))
	return nil
}

// replaceOutboundMaterial rotates an outbound certificate in place: the
// usual SDS pattern, where Envoys keep asking for the same secret name and
// receive the new pair with the push that follows the commit.
func (s *server) replaceOutboundMaterial(w http.ResponseWriter, r *http.Request) error {
	var req api.UpdateMTLSCertificateMaterial
	if err := decode(r, &req); err != nil {
		return err
	}
	id := r.PathValue("id")
	// An unknown ID is reported before the files are judged: a typo in
	// --cert-id is the likelier mistake, and its answer says where to look.
	if _, err := s.Store.GetOutbound(id); err != nil {
		return err
	}
	leaf, chain, key, err := pki.KeyPair([]byte(req.CertPEM), []byte(req.KeyPEM), time.Now())
	if err != nil {
		return err
	}
	material := func(o store.Outbound) audit.Ref {
		return audit.Ref{ID: o.ID, Name: o.Name, Fingerprint: o.Fingerprint, NotAfter: o.NotAfter.Format(time.RFC3339)}
	}
	var rec *store.AuditEntry
	_, after, err := s.Store.ReplaceOutboundMaterial(id, store.Material{
		ChainPEM:    string(chain),
		Subject:     pki.DN(leaf.RawSubject),
		Issuer:      pki.DN(leaf.RawIssuer),
		Fingerprint: pki.Fingerprint(leaf.Raw),
		NotBefore:   leaf.NotBefore.UTC(),
		NotAfter:    leaf.NotAfter.UTC(),
		KeyPEM:      key,
	}, func(before, after store.Outbound) *store.AuditEntry {
		rec = entry(r, "mtls-certificate.update", material(before), material(after))
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	writeJSON(w, 200, s.outboundView(after))
	return nil
}

func (s *server) setEnabled(enabled bool) func(w http.ResponseWriter, r *http.Request) error {
	action := "mtls-certificate.disable"
	if enabled {
		action = "mtls-certificate.enable"
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		var rec *store.AuditEntry
		_, after, err := s.Store.SetOutboundEnabled(r.PathValue("id"), enabled, func(before, after store.Outbound) *store.AuditEntry {
			rec = entry(r, action, audit.Ref{ID: before.ID, Name: before.Name, Enabled: &before.Enabled}, audit.Ref{ID: after.ID, Name: after.Name, Enabled: &after.Enabled})
			return rec
		})
		if err != nil {
			return err
		}
		s.logAudit(rec)
		writeJSON(w, 200, s.outboundView(after))
		return nil
	}
}

func (s *server) deleteOutbound(w http.ResponseWriter, r *http.Request) error {
	var rec *store.AuditEntry
	o, err := s.Store.DeleteOutbound(r.PathValue("id"), func(o store.Outbound) error {
		if o.Enabled {
			return problem.Conflict("enabled", "mTLS certificate %q (%s) is enabled: disable it with `mtlsgate mtls-certificate disable --cert-id %s`, redeploy the Envoys that reference it, then delete it", o.Name, o.ID, o.ID)
		}
		if subs := s.Tracker.Subscribers(o.Name); len(subs) > 0 {
			names := make([]string, 0, len(subs))
			for _, sub := range subs {
				names = append(names, fmt.Sprintf("node %q cluster %q", sub.NodeID, sub.Cluster))
			}
			p := problem.Conflict("referenced", "mTLS certificate %q (%s) is still referenced over SDS by %s: point those Envoys at the new certificate and redeploy them, then delete it", o.Name, o.ID, strings.Join(names, ", "))
			p.Subscribers = names
			return p
		}
		return nil
	}, func(o store.Outbound) *store.AuditEntry {
		rec = entry(r, "mtls-certificate.delete", audit.Ref{ID: o.ID, Name: o.Name}, nil)
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	writeJSON(w, 200, s.outboundView(o))
	return nil
}
