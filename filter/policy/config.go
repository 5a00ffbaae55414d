package policy

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mtlsgate/mtlsgate/filter/policy/certsrc"
	"github.com/mtlsgate/mtlsgate/filter/policy/dn"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/tidwall/gjson"
)

// PolicyType, Export and Module are the values a policy object must carry,
// as in the reference policies.json shape.
const (
	PolicyType = "mtls-auth-inbound"
	Export     = "MTLSAuthInboundPolicy"
	Module     = "$import(@zuplo/runtime)"
)

// Source says where a policy reads the client certificate from.
type Source string

const (
	SourceXFCC    Source = "xfcc"
	SourceRFC9440 Source = "rfc9440"
	SourceHeader  Source = "header"
)

// Revocation is how CRLs are applied.
type Revocation string

const (
	// RevocationStrict: a revoked certificate is refused; a CRL for an issuer
	// in the chain that is stale (nextUpdate passed, or flagged stale by the
	// sidecar) makes the verdict REVOCATION_UNKNOWN. The default.
	RevocationStrict Revocation = "strict"
	// RevocationBestEffort: revoked is refused, a stale CRL is still used and
	// the request allowed, with the reason header saying REVOCATION_UNKNOWN.
	RevocationBestEffort Revocation = "best-effort"
	// RevocationOff ignores CRLs.
	RevocationOff Revocation = "off"
)

// HeaderNames are the names of the headers the filter writes upstream. Every
// one can be renamed; an empty name (allowed for all but Status) omits it.
type HeaderNames struct {
	Subject, Issuer, NotBefore, NotAfter, Fingerprint, Serial string
	SANURI, SANDNS, UserSub, Status, Reason                   string
	ClientCert, ClientCertChain                               string
	// ClientID and ProfileID carry the identities read from the certificate
	// (clientIdField, profileIdField) for a verified certificate.
	ClientID, ProfileID string
}

// DefaultHeaderNames are the documented defaults.
var DefaultHeaderNames = HeaderNames{
	Subject:         "x-mtls-subject",
	Issuer:          "x-mtls-issuer",
	NotBefore:       "x-mtls-not-before",
	NotAfter:        "x-mtls-not-after",
	Fingerprint:     "x-mtls-sha256-fingerprint",
	Serial:          "x-mtls-serial",
	SANURI:          "x-mtls-san-uri",
	SANDNS:          "x-mtls-san-dns",
	UserSub:         "x-user-sub",
	Status:          "x-mtls-verification-status",
	Reason:          "x-mtls-verification-reason",
	ClientCert:      "client-cert",
	ClientCertChain: "client-cert-chain",
	ClientID:        "x-client-id",
	ProfileID:       "x-profile-id",
}

// headerNameKeys maps the option keys of handler.options.headerNames to fields.
func (h *HeaderNames) fields() []struct {
	key string
	ptr *string
} {
	return []struct {
		key string
		ptr *string
	}{
		{"subject", &h.Subject}, {"issuer", &h.Issuer}, {"notBefore", &h.NotBefore},
		{"notAfter", &h.NotAfter}, {"sha256Fingerprint", &h.Fingerprint}, {"serial", &h.Serial},
		{"sanUri", &h.SANURI}, {"sanDns", &h.SANDNS}, {"userSub", &h.UserSub},
		{"verificationStatus", &h.Status}, {"verificationReason", &h.Reason},
		{"clientCert", &h.ClientCert}, {"clientCertChain", &h.ClientCertChain},
		{"clientId", &h.ClientID}, {"profileId", &h.ProfileID},
	}
}

// Options are a policy's handler.options, with defaults applied.
type Options struct {
	AllowUnauthenticatedRequests bool          // default false
	AllowExpiredCertificates     bool          // default false: an expired leaf is refused (never an expired CA)
	AllowRevokedCertificates     bool          // default false
	CertIssuerDN                 []*dn.Pattern // any of them; nil: any issuer

	CertificateSource       Source         // default xfcc
	CertificateHeader       string         // lowercase; required for source header
	CertificateHeaderFormat certsrc.Format // default url-encoded-pem
	TrustedSourceCIDRs      []netip.Prefix // required for rfc9440 and header
	XFCCElementLast         bool           // default true ("last")
	ChainVerification       string         // "filter" (default) or "envoy"
	RequireClientAuthUsage  bool           // default true
	MaxCertificateBytes     int            // default 16384
	RevocationCheck         Revocation     // default strict
	RequireCRL              bool           // default false
	CacheSize               int            // default 1024
	Headers                 HeaderNames

	ClientIDField      IDField  // default CN
	ProfileIDField     IDField  // default OU
	SPIFFETrustDomains []string // spiffeId fields accept only these trust domains (any when empty)
	// RequestedProfileHeader is the request header in which a client names
	// the profile it means to use (default x-profile-id); read before the
	// filter's namespace is stripped.
	RequestedProfileHeader string
	// ProfileAuthorization enforces the bound profile's rules on every
	// verified request ("profileAuthorization": "enforce").
	ProfileAuthorization bool
	// AllowedProfiles, when set, are the only profiles that may use the
	// policy's routes (the reference's "collection access"): a verified
	// client bound to another profile gets 403 PROFILE_NOT_ALLOWED.
	AllowedProfiles []string
	// DecisionLogAll logs allowed requests at info too ("decisionLog": "all");
	// by default only denials and unauthenticated pass-through are.
	DecisionLogAll bool
}

// DefaultOptions returns the options a policy with empty options gets.
func DefaultOptions() Options {
	return Options{
		CertificateSource:       SourceXFCC,
		CertificateHeaderFormat: certsrc.URLEncodedPEM,
		XFCCElementLast:         true,
		ChainVerification:       "filter",
		RequireClientAuthUsage:  true,
		MaxCertificateBytes:     16384,
		RevocationCheck:         RevocationStrict,
		CacheSize:               1024,
		Headers:                 DefaultHeaderNames,
		ClientIDField:           IDField{Kind: idKindCN},
		ProfileIDField:          IDField{Kind: idKindOU},
		RequestedProfileHeader:  "x-profile-id",
	}
}

// Policy is one named policy object.
type Policy struct {
	Name    string
	Options Options
}

// Route maps requests to a policy. Exactly one of Path (exact) and PathPrefix
// is set; Methods empty means any method.
type Route struct {
	Name       string
	Path       string
	PathPrefix string
	Methods    []string
	Policy     string
}

// SidecarSource is where the filter fetches the trust bundle from.
type SidecarSource struct {
	Cluster string        // Envoy cluster of the sidecar
	Path    string        // default /v1/bundle
	Refresh time.Duration // default 30s
	// PublicKeys, when set, are the keys one of which must have signed a
	// fetched bundle (bundle.SignatureHeader): whatever listens at the
	// cluster's address while the sidecar is down cannot hand the filter
	// CAs of its own.
	PublicKeys []*ecdsa.PublicKey
	// KeySetID names PublicKeys (bundle.KeySetID), "" without them.
	KeySetID string
}

// TrustBundleConfig holds exactly one of Inline and Sidecar (or neither when
// no policy needs trust material).
type TrustBundleConfig struct {
	Inline  *bundle.Bundle
	Sidecar *SidecarSource
}

// Config is the parsed plugin configuration.
type Config struct {
	Policies    []*Policy
	Routes      []Route // empty: the single policy applies to every request
	TrustBundle TrustBundleConfig
	// Profiles is the top-level "profiles" array. A bundle from the sidecar
	// that carries profiles replaces it.
	Profiles        []bundle.Profile
	ProfilesDefined bool
	// Version identifies the configuration text in decision records: the
	// first 12 hex digits of its SHA-256.
	Version string
	// Warnings are settings that are accepted but probably not what the
	// operator meant (a policy no route names, a method no registry lists);
	// the filter logs each at configure.
	Warnings []string
}

// Policy returns the named policy or nil.
func (c *Config) Policy(name string) *Policy {
	for _, p := range c.Policies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// ConfigError names the JSON path of a configuration problem.
type ConfigError struct {
	Path string
	Msg  string
}

func (e *ConfigError) Error() string { return "plugin configuration " + e.Path + ": " + e.Msg }

func cfgErr(path, format string, args ...any) error {
	return &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// ParseConfig parses the plugin configuration JSON. Any key it does not know,
// any value of the wrong type, fails the whole configuration: a typo must not
// silently leave a route open.
func ParseConfig(data []byte) (*Config, error) {
	if !gjson.ValidBytes(data) {
		return nil, cfgErr("$", "not valid JSON: check the plugin configuration's value (Envoy passes it as a string)")
	}
	root := gjson.ParseBytes(data)
	if !root.IsObject() {
		return nil, cfgErr("$", "must be a JSON object with a policies array")
	}
	if err := onlyKeys(root, "$", "policies", "routes", "trustBundle", "profiles"); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	cfg := &Config{Version: hex.EncodeToString(sum[:6])}
	pols := root.Get("policies")
	if !pols.IsArray() || len(pols.Array()) == 0 {
		return nil, cfgErr("policies", "required: a non-empty array of mtls-auth-inbound policy objects")
	}
	for i, p := range pols.Array() {
		pol, err := ParsePolicy(p, "policies["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		if cfg.Policy(pol.Name) != nil {
			return nil, cfgErr("policies["+strconv.Itoa(i)+"].name", "policy %q is defined twice: give each policy a unique name", pol.Name)
		}
		cfg.Policies = append(cfg.Policies, pol)
	}
	if r := root.Get("routes"); r.Exists() {
		routes, err := parseRoutes(r, cfg)
		if err != nil {
			return nil, err
		}
		cfg.Routes = routes
	}
	if len(cfg.Routes) > 0 {
		for i, p := range cfg.Policies {
			if !slices.ContainsFunc(cfg.Routes, func(r Route) bool { return r.Policy == p.Name }) {
				cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("policies[%d]: no route names policy %q, so it applies to no request: add a route for it or remove it", i, p.Name))
			}
		}
	}
	if len(cfg.Routes) == 0 && len(cfg.Policies) > 1 {
		return nil, cfgErr("routes", "%d policies but no routes: add routes that name the policy for each path, or keep a single policy", len(cfg.Policies))
	}
	if pr := root.Get("profiles"); pr.Exists() {
		list, err := bundle.ParseProfiles(pr, "profiles")
		if err != nil {
			var pe *bundle.ProfileError
			if errors.As(err, &pe) {
				return nil, cfgErr(pe.Path, "%s", pe.Msg)
			}
			return nil, cfgErr("profiles", "%v", err)
		}
		cfg.Profiles, cfg.ProfilesDefined = list, true
		if !slices.ContainsFunc(pols.Array(), func(p gjson.Result) bool { return p.Get("handler.options.profileAuthorization").Exists() }) {
			return nil, cfgErr("profiles", "are defined but no policy enforces them, so their clients, methods, sourceCIDRs and rate limits restrict nothing: set profileAuthorization \"enforce\" on the policies they govern (\"off\" to keep them unenforced on purpose)")
		}
	}
	needBundle, bundleWhy := false, ""
	for i, p := range cfg.Policies {
		for _, pat := range p.Options.CertIssuerDN {
			if pat.WrittenGeneralFirst() {
				cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("policies[%d].handler.options.certIssuerDN: %q is written country first, as openssl prints names without -nameopt RFC2253; it is compared CN first, so it matches almost no issuer: write it as `openssl x509 -noout -issuer -nameopt RFC2253` prints it", i, pat.String()))
			}
		}
		if p.Options.ChainVerification == "filter" {
			needBundle = true
			continue
		}
		if p.Options.RevocationCheck != RevocationOff && !needBundle {
			needBundle = true
			bundleWhy = fmt.Sprintf("policy %q checks revocation against the trust bundle's CRLs (revocationCheck %q; Envoy is given no CRLs unless the sidecar runs with --sds-crls)", p.Name, p.Options.RevocationCheck)
		}
		// Refusing would refuse the documented strict setup; what the
		// listener does is not visible from here.
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("policies[%d].handler.options.chainVerification: \"envoy\" verifies no chain in the filter for policy %q: Envoy's listener must verify it (trust_chain_verification VERIFY_TRUST_CHAIN, the strict variant of envoy.yaml); with ACCEPT_UNTRUSTED any self-signed certificate passes", i, p.Name))
	}
	tb := root.Get("trustBundle")
	switch {
	case tb.Exists():
		t, err := parseTrustBundle(tb)
		if err != nil {
			return nil, err
		}
		cfg.TrustBundle = t
	case needBundle:
		if bundleWhy != "" {
			return nil, cfgErr("trustBundle", "required: %s: set {\"cluster\": \"<sidecar cluster>\"} to load it from the mtlsgate sidecar, or set revocationCheck \"off\" on that policy", bundleWhy)
		}
		return nil, cfgErr("trustBundle", "required: set {\"cluster\": \"<sidecar cluster>\"} to load it from the mtlsgate sidecar, or {\"caCertificates\": [\"<PEM>\"]} inline")
	}
	for i, p := range cfg.Policies {
		if p.Options.ProfileAuthorization && !cfg.ProfilesDefined && cfg.TrustBundle.Sidecar == nil {
			return nil, cfgErr("policies["+strconv.Itoa(i)+"].handler.options.profileAuthorization",
				"\"enforce\" needs profiles: add a top-level \"profiles\" array, or load them from the sidecar with trustBundle {\"cluster\": ...} and `mtlsgate profile set`")
		}
	}
	return cfg, nil
}

func onlyKeys(obj gjson.Result, path string, allowed ...string) error {
	var err error
	seen := make(map[string]bool, 8)
	obj.ForEach(func(k, _ gjson.Result) bool {
		if seen[k.String()] {
			err = cfgErr(join(path, k.String()), "appears twice: keep one (JSON readers disagree on which one wins)")
			return false
		}
		seen[k.String()] = true
		for _, a := range allowed {
			if k.String() == a {
				return true
			}
		}
		err = cfgErr(join(path, k.String()), "unknown key: allowed keys here are %s", strings.Join(allowed, ", "))
		return false
	})
	return err
}

func join(path, key string) string {
	if path == "$" || path == "" {
		return key
	}
	return path + "." + key
}

func str(obj gjson.Result, path, key string, required bool) (string, error) {
	v := obj.Get(gjsonKey(key))
	if !v.Exists() {
		if required {
			return "", cfgErr(join(path, key), "required string is missing")
		}
		return "", nil
	}
	if v.Type != gjson.String {
		return "", cfgErr(join(path, key), "must be a string, got %s", v.Raw)
	}
	return v.String(), nil
}

// gjsonKey escapes the characters gjson treats as path syntax.
func gjsonKey(k string) string {
	if !strings.ContainsAny(k, ".*?|#@\\!=<>%") {
		return k
	}
	var b strings.Builder
	for _, c := range k {
		if strings.ContainsRune(".*?|#@\\!=<>%", c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// ParsePolicy parses one reference-shape policy object; path prefixes error
// messages (e.g. "policies[0]").
func ParsePolicy(p gjson.Result, path string) (*Policy, error) {
	if path == "" {
		path = "$"
	}
	if !p.IsObject() {
		return nil, cfgErr(path, "must be a policy object {name, policyType, handler}")
	}
	if err := onlyKeys(p, path, "name", "policyType", "handler"); err != nil {
		return nil, err
	}
	name, err := str(p, path, "name", true)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, cfgErr(join(path, "name"), "must not be empty")
	}
	pt, err := str(p, path, "policyType", true)
	if err != nil {
		return nil, err
	}
	if pt != PolicyType {
		return nil, cfgErr(join(path, "policyType"), "%q is not supported by this filter: use %q", pt, PolicyType)
	}
	h := p.Get("handler")
	hp := join(path, "handler")
	if !h.IsObject() {
		return nil, cfgErr(hp, "required object {export, module, options} is missing")
	}
	if err := onlyKeys(h, hp, "export", "module", "options"); err != nil {
		return nil, err
	}
	exp, err := str(h, hp, "export", true)
	if err != nil {
		return nil, err
	}
	if exp != Export {
		return nil, cfgErr(join(hp, "export"), "%q is not supported: use %q", exp, Export)
	}
	mod, err := str(h, hp, "module", true)
	if err != nil {
		return nil, err
	}
	if mod != Module {
		return nil, cfgErr(join(hp, "module"), "%q is not supported: use %q", mod, Module)
	}
	opts, err := parseOptions(h.Get("options"), join(hp, "options"))
	if err != nil {
		return nil, err
	}
	return &Policy{Name: name, Options: opts}, nil
}

var optionKeys = []string{
	"allowUnauthenticatedRequests", "allowExpiredCertificates", "allowRevokedCertificates",
	"certIssuerDN", "certificateSource", "certificateHeader", "certificateHeaderFormat",
	"trustedSourceCIDRs", "xfccElement", "chainVerification", "requireClientAuthUsage",
	"maxCertificateBytes", "revocationCheck", "requireCRL", "cacheSize", "headerNames",
	"clientIdField", "profileIdField", "spiffeTrustDomains", "requestedProfileHeader",
	"profileAuthorization", "decisionLog", "allowedProfiles",
}

func parseOptions(o gjson.Result, path string) (Options, error) {
	opts := DefaultOptions()
	if !o.Exists() || o.Type == gjson.Null {
		return opts, nil
	}
	if !o.IsObject() {
		return opts, cfgErr(path, "must be an object")
	}
	if err := onlyKeys(o, path, optionKeys...); err != nil {
		return opts, err
	}
	for _, b := range []struct {
		key string
		ptr *bool
	}{
		{"allowUnauthenticatedRequests", &opts.AllowUnauthenticatedRequests},
		{"allowExpiredCertificates", &opts.AllowExpiredCertificates},
		{"allowRevokedCertificates", &opts.AllowRevokedCertificates},
		{"requireClientAuthUsage", &opts.RequireClientAuthUsage},
		{"requireCRL", &opts.RequireCRL},
	} {
		v := o.Get(b.key)
		if !v.Exists() {
			continue
		}
		if !v.IsBool() {
			return opts, cfgErr(join(path, b.key), "must be true or false, got %s", v.Raw)
		}
		*b.ptr = v.Bool()
	}
	enum := func(key string, allowed ...string) (string, error) {
		s, err := str(o, path, key, false)
		if err != nil || s == "" {
			if err == nil && o.Get(key).Exists() {
				return "", cfgErr(join(path, key), "must be one of %s", strings.Join(allowed, ", "))
			}
			return "", err
		}
		for _, a := range allowed {
			if s == a {
				return s, nil
			}
		}
		return "", cfgErr(join(path, key), "%q is not one of %s", s, strings.Join(allowed, ", "))
	}
	if s, err := enum("certificateSource", "xfcc", "rfc9440", "header"); err != nil {
		return opts, err
	} else if s != "" {
		opts.CertificateSource = Source(s)
	}
	if s, err := enum("certificateHeaderFormat", string(certsrc.URLEncodedPEM), string(certsrc.Base64DER), string(certsrc.PEM)); err != nil {
		return opts, err
	} else if s != "" {
		opts.CertificateHeaderFormat = certsrc.Format(s)
	}
	if s, err := enum("xfccElement", "last", "first"); err != nil {
		return opts, err
	} else if s != "" {
		opts.XFCCElementLast = s == "last"
	}
	if s, err := enum("chainVerification", "filter", "envoy"); err != nil {
		return opts, err
	} else if s != "" {
		opts.ChainVerification = s
	}
	if s, err := enum("revocationCheck", "strict", "best-effort", "off"); err != nil {
		return opts, err
	} else if s != "" {
		opts.RevocationCheck = Revocation(s)
	}
	if s, err := enum("profileAuthorization", "off", "enforce"); err != nil {
		return opts, err
	} else if s != "" {
		opts.ProfileAuthorization = s == "enforce"
	}
	if s, err := enum("decisionLog", "denials", "all"); err != nil {
		return opts, err
	} else if s != "" {
		opts.DecisionLogAll = s == "all"
	}
	for _, f := range []struct {
		key string
		ptr *IDField
	}{{"clientIdField", &opts.ClientIDField}, {"profileIdField", &opts.ProfileIDField}} {
		s, err := str(o, path, f.key, false)
		if err != nil {
			return opts, err
		}
		if !o.Get(f.key).Exists() {
			continue
		}
		idf, ok := parseIDField(s)
		if !ok {
			return opts, cfgErr(join(path, f.key), "%q is not a certificate field: use %s", s, idFieldHelp)
		}
		*f.ptr = idf
	}
	if v := o.Get("spiffeTrustDomains"); v.Exists() {
		p := join(path, "spiffeTrustDomains")
		if !v.IsArray() || len(v.Array()) == 0 {
			return opts, cfgErr(p, "must be a non-empty array of trust domain names such as \"example.org\" (remove it to accept SPIFFE IDs of any trust domain)")
		}
		for i, d := range v.Array() {
			if d.Type != gjson.String || !validTrustDomain(d.String()) {
				return opts, cfgErr(p+"["+strconv.Itoa(i)+"]", "%s is not a trust domain: lowercase letters, digits, '.', '-' and '_' only, without spiffe:// (e.g. \"example.org\")", d.Raw)
			}
			opts.SPIFFETrustDomains = append(opts.SPIFFETrustDomains, d.String())
		}
	}
	if len(opts.SPIFFETrustDomains) > 0 && opts.ClientIDField.Kind != idKindSPIFFE && opts.ProfileIDField.Kind != idKindSPIFFE {
		return opts, cfgErr(join(path, "spiffeTrustDomains"), "applies only to the spiffeId field and restricts nothing else: set clientIdField or profileIdField to \"spiffeId\", or remove it (certIssuerDN and the trust bundle decide which certificates verify)")
	}
	if s, err := str(o, path, "requestedProfileHeader", false); err != nil {
		return opts, err
	} else if o.Get("requestedProfileHeader").Exists() {
		if !validHeaderName(s) {
			return opts, cfgErr(join(path, "requestedProfileHeader"), "%q is not a valid header name", s)
		}
		if reservedHeader(strings.ToLower(s)) {
			return opts, cfgErr(join(path, "requestedProfileHeader"), "%q is a header the filter or Envoy relies on, and the filter removes this header from every request: keep the default x-profile-id or choose a name of its own", s)
		}
		opts.RequestedProfileHeader = strings.ToLower(s)
	}
	if v := o.Get("allowedProfiles"); v.Exists() {
		p := join(path, "allowedProfiles")
		if !v.IsArray() || len(v.Array()) == 0 {
			return opts, cfgErr(p, "must be a non-empty array of profile IDs (remove it to let every profile use these routes)")
		}
		for i, id := range v.Array() {
			if id.Type != gjson.String || id.String() == "" || len(id.String()) > 256 {
				return opts, cfgErr(p+"["+strconv.Itoa(i)+"]", "%s is not a profile ID: a non-empty string, as in the profiles' \"id\"", clip(id.Raw))
			}
			opts.AllowedProfiles = append(opts.AllowedProfiles, id.String())
		}
		if !opts.ProfileAuthorization {
			return opts, cfgErr(p, "needs profileAuthorization \"enforce\": without it no profile is bound to check")
		}
	}
	if opts.ProfileAuthorization && opts.AllowUnauthenticatedRequests {
		return opts, cfgErr(join(path, "profileAuthorization"), "cannot be combined with allowUnauthenticatedRequests: a request without a verified certificate has no profile to check; use a separate route for unauthenticated traffic")
	}
	// certIssuerDN is one DN, as in the reference, or a list of them for a
	// CA rotation that changes the subject DN: both issuers stay accepted,
	// with their clients' identities, until the old one is dropped.
	if v := o.Get("certIssuerDN"); v.IsArray() {
		list := v.Array()
		if len(list) == 0 || len(list) > 64 {
			return opts, cfgErr(join(path, "certIssuerDN"), "a list needs 1 to 64 DNs; remove the option to accept any issuer")
		}
		for i, d := range list {
			where := join(path, "certIssuerDN") + "[" + strconv.Itoa(i) + "]"
			if d.Type != gjson.String {
				return opts, cfgErr(where, "must be a string, the issuer DN as openssl -nameopt RFC2253 prints it")
			}
			pat, err := dn.ParsePattern(d.String())
			if err != nil {
				return opts, cfgErr(where, "%v", err)
			}
			opts.CertIssuerDN = append(opts.CertIssuerDN, pat)
		}
	} else if s, err := str(o, path, "certIssuerDN", false); err != nil {
		return opts, err
	} else if v.Exists() {
		pat, err := dn.ParsePattern(s)
		if err != nil {
			return opts, cfgErr(join(path, "certIssuerDN"), "%v", err)
		}
		opts.CertIssuerDN = []*dn.Pattern{pat}
	}
	if s, err := str(o, path, "certificateHeader", false); err != nil {
		return opts, err
	} else if s != "" {
		if !validHeaderName(s) {
			return opts, cfgErr(join(path, "certificateHeader"), "%q is not a valid header name", s)
		}
		opts.CertificateHeader = strings.ToLower(s)
	}
	for _, n := range []struct {
		key      string
		ptr      *int
		min, max int
	}{
		{"maxCertificateBytes", &opts.MaxCertificateBytes, 256, 1 << 20},
		{"cacheSize", &opts.CacheSize, 0, 1 << 20},
	} {
		v := o.Get(n.key)
		if !v.Exists() {
			continue
		}
		if v.Type != gjson.Number || v.Float() != float64(v.Int()) || v.Int() < int64(n.min) || v.Int() > int64(n.max) {
			return opts, cfgErr(join(path, n.key), "must be an integer from %d to %d, got %s", n.min, n.max, v.Raw)
		}
		*n.ptr = int(v.Int())
	}
	if v := o.Get("trustedSourceCIDRs"); v.Exists() {
		if !v.IsArray() {
			return opts, cfgErr(join(path, "trustedSourceCIDRs"), "must be an array of CIDR strings such as \"10.0.0.0/8\"")
		}
		for i, c := range v.Array() {
			p := join(path, "trustedSourceCIDRs") + "[" + strconv.Itoa(i) + "]"
			if c.Type != gjson.String {
				return opts, cfgErr(p, "must be a CIDR string, got %s", c.Raw)
			}
			pfx, err := parseCIDR(c.String())
			if err != nil {
				return opts, cfgErr(p, "%q is not a CIDR or IP address (e.g. 10.0.0.0/8, 2001:db8::/32)", c.String())
			}
			if pfx.Bits() == 0 {
				return opts, cfgErr(p, "%q trusts every peer, so any client could send the certificate header with someone else's (public) certificate: list the addresses of the proxies in front of Envoy", c.String())
			}
			if raw := c.String(); strings.Contains(raw, "/") {
				if given, err := netip.ParsePrefix(raw); err == nil && given.Addr().Unmap() != pfx.Addr() {
					return opts, cfgErr(p, "%q has host bits set, and would trust all of %s: write %q for that network, or %q for the one address", raw, pfx, pfx.String(), given.Addr().Unmap().String())
				}
			}
			opts.TrustedSourceCIDRs = append(opts.TrustedSourceCIDRs, pfx)
		}
	}
	if v := o.Get("headerNames"); v.Exists() {
		hp := join(path, "headerNames")
		if !v.IsObject() {
			return opts, cfgErr(hp, "must be an object mapping header roles to names")
		}
		fields := opts.Headers.fields()
		keys := make([]string, len(fields))
		for i, f := range fields {
			keys[i] = f.key
		}
		if err := onlyKeys(v, hp, keys...); err != nil {
			return opts, err
		}
		for _, f := range fields {
			s, err := str(v, hp, f.key, false)
			if err != nil {
				return opts, err
			}
			if !v.Get(f.key).Exists() {
				continue
			}
			if s == "" && f.key == "verificationStatus" {
				return opts, cfgErr(join(hp, f.key), "cannot be empty: upstreams rely on the verification status header")
			}
			if s != "" && (!validHeaderName(s) || s[0] == ':') {
				return opts, cfgErr(join(hp, f.key), "%q is not a valid header name", s)
			}
			if reservedHeader(strings.ToLower(s)) {
				return opts, cfgErr(join(hp, f.key), "%q is a header the filter or Envoy relies on (the filter would remove it from every request and overwrite it): choose a name of its own, e.g. x-mtls-%s", s, strings.ToLower(f.key))
			}
			*f.ptr = strings.ToLower(s)
		}
		seen := map[string]string{}
		for _, f := range fields {
			if *f.ptr == "" {
				continue
			}
			if prev, dup := seen[*f.ptr]; dup {
				return opts, cfgErr(join(hp, f.key), "%q is already used for %s: give each header its own name", *f.ptr, prev)
			}
			seen[*f.ptr] = f.key
		}
	}
	switch opts.CertificateSource {
	case SourceHeader:
		if opts.CertificateHeader == "" {
			return opts, cfgErr(join(path, "certificateHeader"), "required when certificateSource is \"header\": name the header your load balancer writes, e.g. x-amzn-mtls-clientcert")
		}
		fallthrough
	case SourceRFC9440:
		if len(opts.TrustedSourceCIDRs) == 0 {
			return opts, cfgErr(join(path, "trustedSourceCIDRs"), "required when certificateSource is %q: list the addresses of the proxies allowed to send the certificate header, otherwise any client could", opts.CertificateSource)
		}
	case SourceXFCC:
		if o.Get("certificateHeader").Exists() {
			return opts, cfgErr(join(path, "certificateHeader"), "applies only to certificateSource \"header\": set certificateSource or remove it")
		}
		// The first element is the outermost proxy's only when the peer is
		// that proxy: anyone else connecting to Envoy writes it themselves
		// (Envoy appends to, and with SANITIZE_SET replaces, what arrives).
		switch {
		case !opts.XFCCElementLast && len(opts.TrustedSourceCIDRs) == 0:
			return opts, cfgErr(join(path, "trustedSourceCIDRs"), "required when xfccElement is \"first\": list the addresses of the proxies in front of Envoy that write x-forwarded-client-cert, otherwise any client could")
		case opts.XFCCElementLast && o.Get("trustedSourceCIDRs").Exists():
			return opts, cfgErr(join(path, "trustedSourceCIDRs"), "applies to certificateSource \"xfcc\" only with xfccElement \"first\" (the element this Envoy writes needs no trusted peer): remove it, or set xfccElement")
		}
	}
	if opts.RequireCRL && opts.RevocationCheck == RevocationOff {
		return opts, cfgErr(join(path, "requireCRL"), "has no effect with revocationCheck \"off\", where no CRL is read: remove one of them")
	}
	if opts.ChainVerification == "envoy" {
		// Envoy verifies the certificate of its own connection, nothing a
		// header carries: in envoy mode a certificate from anywhere else
		// would be trusted with no one having verified it.
		if opts.CertificateSource != SourceXFCC || !opts.XFCCElementLast {
			return opts, cfgErr(join(path, "chainVerification"), "\"envoy\" applies only to certificateSource \"xfcc\" with xfccElement \"last\": Envoy verifies the certificate of its own connection, not one a proxy forwards in a header; use chainVerification \"filter\"")
		}
	}
	if opts.CertificateSource == SourceHeader {
		for _, f := range opts.Headers.fields() {
			if *f.ptr == opts.CertificateHeader {
				return opts, cfgErr(join(path, "certificateHeader"), "%q is also an output header: choose a different name", opts.CertificateHeader)
			}
		}
	}
	return opts, nil
}

// parseCIDR is the one CIDR syntax of the project, shared with profiles.
func parseCIDR(s string) (netip.Prefix, error) { return bundle.ParseCIDR(s) }

// reservedHeader reports whether name may not be an output or request
// profile header: Envoy's XFCC (the certificate source, which must reach
// the upstream only as the element the filter verified) and the headers that
// frame or route the request.
func reservedHeader(name string) bool {
	switch name {
	case xfccHeader, "host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "keep-alive", "proxy-connection":
		return true
	}
	return false
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

func parseRoutes(r gjson.Result, cfg *Config) ([]Route, error) {
	if !r.IsArray() {
		return nil, cfgErr("routes", "must be an array of {pathPrefix | path, methods, policy}")
	}
	var out []Route
	for i, item := range r.Array() {
		p := "routes[" + strconv.Itoa(i) + "]"
		if !item.IsObject() {
			return nil, cfgErr(p, "must be an object {pathPrefix | path, methods, policy}")
		}
		if err := onlyKeys(item, p, "name", "path", "pathPrefix", "methods", "policy"); err != nil {
			return nil, err
		}
		var rt Route
		var err error
		if rt.Name, err = str(item, p, "name", false); err != nil {
			return nil, err
		}
		if rt.Path, err = str(item, p, "path", false); err != nil {
			return nil, err
		}
		if rt.PathPrefix, err = str(item, p, "pathPrefix", false); err != nil {
			return nil, err
		}
		hasPath, hasPrefix := item.Get("path").Exists(), item.Get("pathPrefix").Exists()
		if hasPath == hasPrefix {
			return nil, cfgErr(p, "set exactly one of path (exact match) and pathPrefix")
		}
		key := "path"
		if hasPrefix {
			key = "pathPrefix"
		}
		if err := checkRoutePath(rt.Path+rt.PathPrefix, p+"."+key); err != nil {
			return nil, err
		}
		if m := item.Get("methods"); m.Exists() {
			if !m.IsArray() {
				return nil, cfgErr(p+".methods", "must be an array of HTTP methods such as [\"GET\", \"POST\"]")
			}
			if len(m.Array()) == 0 {
				return nil, cfgErr(p+".methods", "is empty: list the methods the route covers, or remove methods to cover every method")
			}
			for j, v := range m.Array() {
				mp := p + ".methods[" + strconv.Itoa(j) + "]"
				if v.Type != gjson.String || v.String() == "" {
					return nil, cfgErr(mp, "must be a method name string")
				}
				name := strings.ToUpper(v.String())
				if name == "*" {
					return nil, cfgErr(mp, "\"*\" is not a wildcard here: remove methods to cover every method")
				}
				if !isToken(name) {
					return nil, cfgErr(mp, "%q is not one HTTP method: write each method as its own string, e.g. [\"GET\", \"POST\"]", clip(v.String()))
				}
				if !slices.Contains(knownMethods, name) {
					cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s: %q is not a registered HTTP method, so the route covers only requests that send exactly it: check the spelling", mp, name))
				}
				rt.Methods = append(rt.Methods, name)
			}
		}
		if rt.Policy, err = str(item, p, "policy", true); err != nil {
			return nil, err
		}
		if cfg.Policy(rt.Policy) == nil {
			return nil, cfgErr(p+".policy", "no policy named %q: define it in policies or fix the name", rt.Policy)
		}
		if rt.Name == "" {
			rt.Name = rt.Path + rt.PathPrefix
		}
		for k, prev := range out {
			if prev.Policy != rt.Policy && routeCovers(prev, rt) {
				return nil, cfgErr(p, "is never reached: routes[%d] (%s) comes first and matches every request this route matches, so policy %q applies to them, not %q (the first matching route wins): move this route before routes[%d]",
					k, describeRoute(prev), prev.Policy, rt.Policy, k)
			}
		}
		out = append(out, rt)
	}
	return out, nil
}

// knownMethods are the methods of the IANA HTTP Method Registry and a few
// common extensions (PURGE); a route naming another gets a warning, since a
// misspelt method leaves the requests it meant to cover unrouted.
var knownMethods = []string{
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
	"ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "COPY", "LABEL", "LINK", "LOCK",
	"MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE",
	"ORDERPATCH", "PROPFIND", "PROPPATCH", "REBIND", "REPORT", "SEARCH", "UNBIND", "UNCHECKOUT",
	"UNLINK", "UNLOCK", "UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL", "PURGE",
}

// isToken reports whether s is an RFC 9110 token, the syntax of a method.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// checkRoutePath refuses a route path no ordinary request reaches: requests
// are matched without their query, and a path an upstream resolves (dot
// segments, "//", ";params", "\\", escaped unreserved characters or slashes)
// is matched as the upstream reads it, so a route spelt that way covers
// only clients that send that exact spelling.
func checkRoutePath(m, p string) error {
	if m == "" || m[0] != '/' {
		return cfgErr(p, "must start with '/'")
	}
	if i := strings.IndexAny(m, "?#"); i >= 0 {
		return cfgErr(p, "%q has a %q: routes match the path without its query or fragment, so this route would never match; write %q", clip(m), m[i], clip(m[:i]))
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 0x20 || m[i] == 0x7f {
			return cfgErr(p, "%q has a control character: no request path carries one", clip(m))
		}
	}
	if r := routePath(m); r != m {
		return cfgErr(p, "%q is matched only by requests spelt exactly that way: upstreams read it as %q (dot segments and \"//\" resolved, \";params\" cut, \"\\\", %%2F and escaped unreserved characters decoded), and a request for that path would not reach this route; write %q", clip(m), clip(r), clip(r))
	}
	return nil
}

// routeCovers reports whether every request b matches is matched by a too
// (as written; the other readings of a path keep the relation), so that b,
// after a, is never reached.
func routeCovers(a, b Route) bool {
	if len(a.Methods) > 0 {
		if len(b.Methods) == 0 {
			return false
		}
		for _, m := range b.Methods {
			if !slices.Contains(a.Methods, m) && !(m == "HEAD" && slices.Contains(a.Methods, "GET")) {
				return false
			}
		}
	}
	if a.Path != "" {
		// An exact path never covers a prefix's subtree.
		return b.Path != "" && strings.TrimSuffix(a.Path, "/") == strings.TrimSuffix(b.Path, "/")
	}
	if b.PathPrefix != "" {
		return strings.HasPrefix(b.PathPrefix, a.PathPrefix)
	}
	w := strings.TrimSuffix(b.Path, "/")
	return underPrefix(w+"/", a.PathPrefix, false) && (w == "" || underPrefix(w, a.PathPrefix, false))
}

func describeRoute(r Route) string {
	d := "pathPrefix " + strconv.Quote(r.PathPrefix)
	if r.Path != "" {
		d = "path " + strconv.Quote(r.Path)
	}
	if len(r.Methods) > 0 {
		d += ", methods " + strings.Join(r.Methods, ",")
	}
	return d
}

func parseTrustBundle(tb gjson.Result) (TrustBundleConfig, error) {
	if !tb.IsObject() {
		return TrustBundleConfig{}, cfgErr("trustBundle", "must be an object: {\"cluster\": ...} or {\"caCertificates\": [...]}")
	}
	if tb.Get("publicKeys").Exists() && !tb.Get("cluster").Exists() {
		if tb.Get("caCertificates").Exists() {
			return TrustBundleConfig{}, cfgErr("trustBundle.publicKeys", "verifies bundles fetched from a cluster; an inline bundle (caCertificates) is part of the plugin configuration itself and needs no signature: remove publicKeys, or load the bundle from the sidecar with {\"cluster\": ..., \"publicKeys\": [...]}")
		}
		return TrustBundleConfig{}, cfgErr("trustBundle.publicKeys", "needs cluster: publicKeys verifies the bundle fetched from the sidecar's Envoy cluster, so set {\"cluster\": \"<sidecar cluster>\", \"publicKeys\": [...]}")
	}
	if tb.Get("cluster").Exists() || tb.Get("path").Exists() || tb.Get("refreshSeconds").Exists() {
		if err := onlyKeys(tb, "trustBundle", "cluster", "path", "refreshSeconds", "publicKeys"); err != nil {
			return TrustBundleConfig{}, cfgErr("trustBundle", "mixes the sidecar source (cluster, path, refreshSeconds, publicKeys) with other keys: use one form")
		}
		s := &SidecarSource{Path: "/v1/bundle", Refresh: 30 * time.Second}
		var err error
		if s.Cluster, err = str(tb, "trustBundle", "cluster", true); err != nil {
			return TrustBundleConfig{}, err
		}
		if s.Cluster == "" {
			return TrustBundleConfig{}, cfgErr("trustBundle.cluster", "must name the Envoy cluster of the mtlsgate sidecar")
		}
		if p, err := str(tb, "trustBundle", "path", false); err != nil {
			return TrustBundleConfig{}, err
		} else if p != "" {
			if p[0] != '/' {
				return TrustBundleConfig{}, cfgErr("trustBundle.path", "must start with '/'")
			}
			s.Path = p
		}
		if v := tb.Get("refreshSeconds"); v.Exists() {
			if v.Type != gjson.Number || v.Float() != float64(v.Int()) || v.Int() < 1 || v.Int() > 86400 {
				return TrustBundleConfig{}, cfgErr("trustBundle.refreshSeconds", "must be an integer from 1 to 86400, got %s", v.Raw)
			}
			s.Refresh = time.Duration(v.Int()) * time.Second
		}
		if v := tb.Get("publicKeys"); v.Exists() {
			keys, id, err := parsePublicKeys(v)
			if err != nil {
				return TrustBundleConfig{}, err
			}
			s.PublicKeys, s.KeySetID = keys, id
		}
		return TrustBundleConfig{Sidecar: s}, nil
	}
	if err := onlyKeys(tb, "trustBundle", "caCertificates", "crls"); err != nil {
		return TrustBundleConfig{}, err
	}
	if !tb.Get("caCertificates").IsArray() || len(tb.Get("caCertificates").Array()) == 0 {
		return TrustBundleConfig{}, cfgErr("trustBundle.caCertificates", "required: a non-empty array of PEM CA certificates (or use {\"cluster\": ...} to load them from the sidecar)")
	}
	b, err := bundle.FromResult(tb)
	if err != nil {
		return TrustBundleConfig{}, cfgErr("trustBundle", "%v", err)
	}
	if _, err := compileBundle(b); err != nil {
		return TrustBundleConfig{}, cfgErr("trustBundle", "%v", err)
	}
	return TrustBundleConfig{Inline: b}, nil
}

// parsePublicKeys reads trustBundle.publicKeys: a non-empty list of PEM
// ECDSA P-256 public keys. An empty list is refused rather than read as
// "no signature needed": an operator who wrote the key is asking for
// signatures, and a templating step that emptied the list must not turn
// them off.
func parsePublicKeys(v gjson.Result) (keys []*ecdsa.PublicKey, setID string, err error) {
	const path = "trustBundle.publicKeys"
	if !v.IsArray() || len(v.Array()) == 0 {
		return nil, "", cfgErr(path, "must be a non-empty array of PEM public keys (-----BEGIN PUBLIC KEY-----, as `mtlsgate bundle-key public --key FILE` prints); leave publicKeys out to accept unsigned bundles")
	}
	var spkis [][]byte
	seen := map[string]bool{}
	for i, e := range v.Array() {
		p := path + "[" + strconv.Itoa(i) + "]"
		if e.Type != gjson.String {
			return nil, "", cfgErr(p, "must be a string holding a PEM public key, got %s", clip(e.Raw))
		}
		k, spki, err := bundle.ParsePublicKey([]byte(e.String()))
		if err != nil {
			return nil, "", cfgErr(p, "%v", err)
		}
		if seen[string(spki)] {
			return nil, "", cfgErr(p, "lists the same key as an earlier entry: remove the duplicate")
		}
		seen[string(spki)] = true
		keys, spkis = append(keys, k), append(spkis, spki)
	}
	return keys, bundle.KeySetID(spkis), nil
}
