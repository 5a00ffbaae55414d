// Package bundlesrv serves the trust bundle the filter polls: GET /v1/bundle,
// read-only and free of secrets, with the bundle version as a weak ETag so
// a filter that is up to date gets a body-less 304, and with a signature
// over the body when serve has a signing key.
package bundlesrv

import (
	"crypto/ecdsa"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

type current struct {
	body    []byte
	version string
	// labels are what the body carries beyond the version: CA ids and names
	// and CRL stale flags. They change the body but not the version (the
	// filter checks nextUpdate and staleAfter itself, and names never change
	// a verdict), so
	// a revalidating filter keeps its copy while a fresh fetch sees them.
	labels string
	// sig is the bundle.SignatureHeader value for body, "" when unsigned.
	// Made once per body: ECDSA signing costs far more than serving a
	// poll, and the filter takes any valid signature.
	sig string
}

func bodyLabels(b *bundle.Bundle) string {
	var sb strings.Builder
	for _, c := range b.CACertificates {
		sb.WriteString(c.ID + "=" + c.Name + ";")
	}
	for _, c := range b.CRLs {
		fmt.Fprintf(&sb, "crl %s %t;", c.CAID, c.Stale)
	}
	return sb.String()
}

// Server holds the encoded bundle; Update swaps it atomically so readers
// never wait for a rebuild.
type Server struct {
	cur atomic.Pointer[current]
	// MaxAgeWithoutNextUpdate is how long after its thisUpdate a list
	// without nextUpdate stays current (see store.CRL.StaleAfter); zero
	// means forever. Set before the first Update.
	MaxAgeWithoutNextUpdate time.Duration
	// SigningKey, when set, signs every body served (bundle.SignatureHeader),
	// for filters whose trustBundle.publicKeys list its public half. Set
	// before the first Update.
	SigningKey *ecdsa.PrivateKey
}

// New returns a server that has nothing to serve until the first Update: it
// answers 503 until then. An empty bundle would not do as a stand-in: the
// filter installs an empty CA list from the sidecar (the last CA was
// deleted), so a filter that kept its bundle across a sidecar restart would
// drop every CA whenever the restarted sidecar cannot publish (a store
// record it cannot decode fails every publish). On a 503 the filter keeps
// the bundle it has, as Envoy keeps its SDS secrets while the SDS server
// holds the request.
func New() *Server { return &Server{} }

// Build converts store records into the bundle. A CRL is marked stale when
// its nextUpdate has passed; one without nextUpdate carries the moment it
// goes stale, maxAge after its thisUpdate, for the filter to judge it by.
func Build(cas []store.CA, crls []store.CRL, withheld map[string]bool, profiles []byte, profilesVersion int, maxAge time.Duration, now time.Time) *bundle.Bundle {
	bc := make([]bundle.CA, 0, len(cas))
	for _, c := range cas {
		bc = append(bc, bundle.CA{ID: c.ID, Name: c.Name, PEM: c.PEM, RevocationUnknown: withheld[c.ID]})
	}
	bl := make([]bundle.CRL, 0, len(crls))
	for _, c := range crls {
		bc := bundle.CRL{CAID: c.CAID, PEM: c.PEM, Stale: c.Stale(now, maxAge)}
		if c.NextUpdate.IsZero() {
			bc.StaleAfter = c.StaleAfter(maxAge).UTC()
		}
		bl = append(bl, bc)
	}
	return bundle.New(bc, bl, profiles, profilesVersion, now)
}

// Update replaces the served bundle.
// withheld names the CAs whose stored CRL is not published (see
// bundle.CA.RevocationUnknown).
func (s *Server) Update(cas []store.CA, crls []store.CRL, withheld map[string]bool, profiles []byte, profilesVersion int, now time.Time) error {
	b := Build(cas, crls, withheld, profiles, profilesVersion, s.MaxAgeWithoutNextUpdate, now)
	labels := bodyLabels(b)
	if cur := s.cur.Load(); cur != nil && cur.version == b.Version && cur.labels == labels {
		// Same trust material: keep the old body so generatedAt (and so the
		// bytes a client may have cached) does not churn.
		return nil
	}
	body, err := b.Marshal()
	if err != nil {
		return err
	}
	var sig string
	if s.SigningKey != nil {
		if sig, err = bundle.Sign(s.SigningKey, body); err != nil {
			return err
		}
	}
	s.cur.Store(&current{body: body, version: b.Version, labels: labels, sig: sig})
	return nil
}

// Version is the version currently served, "" before the first Update.
func (s *Server) Version() string {
	if cur := s.cur.Load(); cur != nil {
		return cur.version
	}
	return ""
}

// Handler serves /v1/bundle.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bundle", s.serveBundle)
	mux.HandleFunc("/v1/bundle", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"title":"Method Not Allowed","status":405,"detail":"the bundle endpoint is read-only: use GET; manage trust material through the admin API"}` + "\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"title":"Not Found","status":404,"detail":"the bundle endpoint serves only GET /v1/bundle"}` + "\n"))
	})
	return mux
}

func (s *Server) serveBundle(w http.ResponseWriter, r *http.Request) {
	cur := s.cur.Load()
	if cur == nil {
		h := w.Header()
		h.Set("Content-Type", "application/problem+json")
		h.Set("Cache-Control", "no-store")
		h.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"title":"Service Unavailable","status":503,"detail":"the sidecar has not published its trust material yet (it is starting, or its store cannot be published: see its log and /readyz); keep the bundle you have and retry"}` + "\n"))
		return
	}
	// Weak: bodies of one version can differ in what no verdict depends on
	// (CA ids and names, stale flags, generatedAt), so they are equivalent,
	// not identical, which a strong tag would claim. The version stays the
	// tag's value because the filter revalidates with the version it read
	// from the body; a tag over the bytes would never match it, and every
	// poll would fetch and parse the whole bundle again.
	tag := `"` + cur.version + `"`
	h := w.Header()
	h.Set("ETag", "W/"+tag)
	// Clients must revalidate every time: a stale trust bundle keeps a
	// deleted CA trusted.
	h.Set("Cache-Control", "no-cache")
	if match(r.Header.Get("If-None-Match"), tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	if cur.sig != "" {
		h.Set(bundle.SignatureHeader, cur.sig)
	}
	_, _ = w.Write(cur.body)
}

// match implements If-None-Match's list and weak comparison (RFC 9110 13.1.2).
func match(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
