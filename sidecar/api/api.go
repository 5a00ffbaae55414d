// Package api defines the admin API's JSON documents, shared by the server
// (sidecar/admin) and the CLI (sidecar/cli).
package api

import (
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Paths of the admin API.
const (
	PathCAs       = "/v1/ca-certificates"
	PathCRLs      = "/v1/crls"
	PathOutbound  = "/v1/mtls-certificates"
	PathSDS       = "/v1/sds/subscriptions"
	PathAudit     = "/v1/audit"
	TokenHeader   = "Authorization"
	ProblemType   = "application/problem+json"
	DefaultServer = "http://127.0.0.1:9911"
)

// GET /v1/audit answers a page of records at a time: the newest
// AuditPageDefault of those selected without ?limit, at most AuditPageMax
// with it. When older records were left out, a Link header with rel="next"
// gives the path of the page before (?before= the page's oldest seq).
const (
	AuditPageDefault = 1000
	AuditPageMax     = 10000
)

// EnvironmentTypes are the environments an outbound certificate may serve.
var EnvironmentTypes = []string{"development", "preview", "production"}

// CRLState summarises a CA's revocation list in CA documents.
type CRLState struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"` // "file", the URL, or "trust-dir"
	NextUpdate time.Time `json:"nextUpdate,omitzero"`
	// StaleAfter is when the list stops being current: nextUpdate, or for
	// a list without one its thisUpdate plus serve's
	// --crl-max-age-without-next-update.
	StaleAfter time.Time `json:"staleAfter,omitzero"`
	Stale      bool      `json:"stale"`
	LastError  string    `json:"lastError,omitempty"`
}

// CACertificate is a trust anchor as the API shows it.
type CACertificate struct {
	store.CA
	CRL *CRLState `json:"crl"`
}

// CRL is a revocation list as the API shows it.
type CRL struct {
	store.CRL
	Source     string    `json:"source"`
	StaleAfter time.Time `json:"staleAfter,omitzero"` // as in CRLState
	Stale      bool      `json:"stale"`
}

// MTLSCertificate is an outbound certificate as the API shows it: never with
// key material.
type MTLSCertificate struct {
	store.Outbound
	// Served tells whether this sidecar publishes it over SDS (enabled and
	// for this sidecar's environment).
	Served bool `json:"served"`
	// UnsupportedKey names the certificate's key when Envoy refuses to load
	// it (stored before uploads were checked): such a certificate is never
	// served, and a new certificate with a supported key replaces it.
	UnsupportedKey string           `json:"unsupportedKey,omitempty"`
	Subscribers    []sds.Subscriber `json:"subscribers"`
}

// CreateCA is the body of POST /v1/ca-certificates.
type CreateCA struct {
	Name              string `json:"name"`
	CertPEM           string `json:"certPem"`
	AllowIntermediate bool   `json:"allowIntermediate,omitempty"`
}

// UpdateCA is the body of PATCH /v1/ca-certificates/{id}.
type UpdateCA struct {
	Name string `json:"name"`
}

// CreateCRL is the body of POST /v1/crls: exactly one of CRL (PEM or DER
// bytes) and URL.
type CreateCRL struct {
	CAID string `json:"caId"`
	CRL  []byte `json:"crl,omitempty"`
	URL  string `json:"url,omitempty"`
}

// ReplaceCRL is the body of PUT /v1/crls/{id}: the new list, from a file
// or a URL, swapped in for the old one in one step.
type ReplaceCRL struct {
	CRL []byte `json:"crl,omitempty"`
	URL string `json:"url,omitempty"`
}

// CreateMTLSCertificate is the body of POST /v1/mtls-certificates.
type CreateMTLSCertificate struct {
	Name             string   `json:"name"`
	CertPEM          string   `json:"certPem"`
	KeyPEM           string   `json:"keyPem"`
	EnvironmentTypes []string `json:"environmentTypes"`
}

// UpdateMTLSCertificateMaterial is the body of PUT
// /v1/mtls-certificates/{id}/material: a new certificate (leaf first,
// optionally followed by its chain) and its private key, replacing the
// stored pair behind the same name.
type UpdateMTLSCertificateMaterial struct {
	CertPEM string `json:"certPem"`
	KeyPEM  string `json:"keyPem"`
}
