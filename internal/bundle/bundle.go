// Package bundle defines the trust bundle: the JSON document the sidecar serves on
// GET /v1/bundle and the filter loads (from the sidecar or inline in its plugin
// configuration). It is the only format the two sides share, so it lives in one
// package that both import; the filter compiles it to wasm, so parsing uses gjson
// rather than reflection-heavy decoding.
package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/tidwall/gjson"
)

// Format is the bundle schema version. A reader refuses a bundle whose format it
// does not know instead of guessing at fields.
const Format = 1

// Bundle is the trust material the filter verifies against. It carries no secrets.
type Bundle struct {
	Format int `json:"format"`
	// Version identifies the content (see ComputeVersion). The sidecar uses it as
	// the ETag; the filter drops its verdict cache whenever it changes.
	Version     string    `json:"version"`
	GeneratedAt time.Time `json:"generatedAt"`
	// CACertificates are the trust anchors (normally self-signed roots; an
	// intermediate uploaded with --allow-intermediate anchors at itself).
	CACertificates []CA `json:"caCertificates"`
	// CRLs are revocation lists, each signed by one of CACertificates or by an
	// intermediate that chains to one.
	CRLs []CRL `json:"crls"`
	// Profiles is opaque JSON handed to the authorization layer, with the
	// version of the binding set it belongs to. Empty when none are defined.
	Profiles        json.RawMessage `json:"profiles,omitempty"`
	ProfilesVersion int             `json:"profilesVersion,omitempty"`
}

// CA is one trust anchor.
type CA struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
	PEM  string `json:"pem"`
	// RevocationUnknown is set by the sidecar when the CA has a CRL it
	// withholds (not a complete list): the filter then treats the CA's
	// revocation status as unknown, as for a stale list, rather than as a CA
	// without a CRL.
	RevocationUnknown bool `json:"revocationUnknown,omitempty"`
}

// CRL is one certificate revocation list, PEM encoded.
type CRL struct {
	CAID string `json:"caId,omitempty"`
	PEM  string `json:"pem"`
	// Stale is set by the sidecar when the list's nextUpdate (or StaleAfter)
	// has passed and no fresher list could be fetched; the filter also
	// checks both times itself.
	Stale bool `json:"stale,omitempty"`
	// StaleAfter is set by the sidecar on a list without nextUpdate: the
	// moment it stops being current (its thisUpdate plus the sidecar's
	// --crl-max-age-without-next-update). The filter treats it as the
	// list's nextUpdate, so such a list goes stale on time even when the
	// filter cannot reach the sidecar, and bounds cached verdicts.
	StaleAfter time.Time `json:"staleAfter,omitzero"`
}

// ComputeVersion returns a content hash over everything that changes a verdict,
// so the same trust material always yields the same version (and ETag), across
// sidecar restarts and replicas.
func ComputeVersion(cas []CA, crls []CRL, profiles []byte, profilesVersion int) string {
	h := sha256.New()
	pems := make([]string, 0, len(cas))
	for _, c := range cas {
		p := c.PEM
		if c.RevocationUnknown {
			p += "\x00revocation unknown"
		}
		pems = append(pems, p)
	}
	sort.Strings(pems)
	for _, p := range pems {
		h.Write([]byte("ca\x00" + p + "\x00"))
	}
	lists := make([]string, 0, len(crls))
	for _, c := range crls {
		l := c.PEM
		if !c.StaleAfter.IsZero() {
			// A verdict depends on it; lists without it hash as before, so
			// versions do not change for bundles that have none.
			l += "\x00stale after " + c.StaleAfter.UTC().Format(time.RFC3339)
		}
		lists = append(lists, l)
	}
	sort.Strings(lists)
	for _, p := range lists {
		h.Write([]byte("crl\x00" + p + "\x00"))
	}
	fmt.Fprintf(h, "profiles\x00%d\x00", profilesVersion)
	h.Write(profiles)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// New assembles a bundle and stamps its version.
func New(cas []CA, crls []CRL, profiles []byte, profilesVersion int, now time.Time) *Bundle {
	if cas == nil {
		cas = []CA{}
	}
	if crls == nil {
		crls = []CRL{}
	}
	return &Bundle{
		Format:          Format,
		Version:         ComputeVersion(cas, crls, profiles, profilesVersion),
		GeneratedAt:     now.UTC(),
		CACertificates:  cas,
		CRLs:            crls,
		Profiles:        profiles,
		ProfilesVersion: profilesVersion,
	}
}

// Marshal encodes the bundle as served on /v1/bundle.
func (b *Bundle) Marshal() ([]byte, error) {
	out, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode trust bundle: %w", err)
	}
	return out, nil
}

// Parse decodes a bundle document. It also accepts the inline form used in plugin
// configuration, where caCertificates and crls are plain PEM strings and format and
// version may be absent (the version is then computed from the content).
func Parse(data []byte) (*Bundle, error) {
	if !gjson.ValidBytes(data) {
		return nil, errors.New("trust bundle is not valid JSON")
	}
	return FromResult(gjson.ParseBytes(data))
}

// FromResult decodes a bundle from an already parsed JSON value (the plugin
// configuration's trustBundle object).
func FromResult(r gjson.Result) (*Bundle, error) {
	if !r.IsObject() {
		return nil, errors.New("trust bundle must be a JSON object")
	}
	b := &Bundle{Format: Format}
	if f := r.Get("format"); f.Exists() {
		if f.Type != gjson.Number || int(f.Int()) != Format {
			return nil, fmt.Errorf("trust bundle format %s is not supported (this build reads format %d): upgrade the filter", f.Raw, Format)
		}
	}
	cas := r.Get("caCertificates")
	if cas.Exists() && !cas.IsArray() {
		return nil, errors.New("trust bundle caCertificates must be an array")
	}
	for i, c := range cas.Array() {
		ca, err := caFrom(c)
		if err != nil {
			return nil, fmt.Errorf("trust bundle caCertificates[%d]: %w", i, err)
		}
		b.CACertificates = append(b.CACertificates, ca)
	}
	crls := r.Get("crls")
	if crls.Exists() && !crls.IsArray() {
		return nil, errors.New("trust bundle crls must be an array")
	}
	for i, c := range crls.Array() {
		crl, err := crlFrom(c)
		if err != nil {
			return nil, fmt.Errorf("trust bundle crls[%d]: %w", i, err)
		}
		b.CRLs = append(b.CRLs, crl)
	}
	if p := r.Get("profiles"); p.Exists() {
		b.Profiles = json.RawMessage(p.Raw)
		b.ProfilesVersion = int(r.Get("profilesVersion").Int())
	}
	if g := r.Get("generatedAt"); g.Exists() {
		t, err := time.Parse(time.RFC3339Nano, g.String())
		if err != nil {
			return nil, fmt.Errorf("trust bundle generatedAt: %w", err)
		}
		b.GeneratedAt = t
	}
	b.Version = r.Get("version").String()
	if b.Version == "" {
		b.Version = ComputeVersion(b.CACertificates, b.CRLs, b.Profiles, b.ProfilesVersion)
	}
	return b, nil
}

func caFrom(c gjson.Result) (CA, error) {
	switch {
	case c.Type == gjson.String:
		return CA{PEM: c.String()}, nil
	case c.IsObject():
		ca := CA{ID: c.Get("id").String(), Name: c.Get("name").String(), PEM: c.Get("pem").String(),
			RevocationUnknown: c.Get("revocationUnknown").Bool()}
		if ca.PEM == "" {
			return CA{}, errors.New("missing pem")
		}
		return ca, nil
	default:
		return CA{}, errors.New("must be a PEM string or an object with a pem field")
	}
}

func crlFrom(c gjson.Result) (CRL, error) {
	switch {
	case c.Type == gjson.String:
		return CRL{PEM: c.String()}, nil
	case c.IsObject():
		crl := CRL{CAID: c.Get("caId").String(), PEM: c.Get("pem").String(), Stale: c.Get("stale").Bool()}
		if crl.PEM == "" {
			return CRL{}, errors.New("missing pem")
		}
		if s := c.Get("staleAfter"); s.Exists() {
			t, err := time.Parse(time.RFC3339Nano, s.String())
			if err != nil {
				return CRL{}, fmt.Errorf("staleAfter: %w", err)
			}
			crl.StaleAfter = t
		}
		return crl, nil
	default:
		return CRL{}, errors.New("must be a PEM string or an object with a pem field")
	}
}
