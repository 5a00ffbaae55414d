package policy

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/mtlsgate/mtlsgate/filter/policy/dn"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/crlscope"
)

// trust is a compiled bundle: the anchor pool and a CRL index. It is immutable
// once built, so requests read it without locks while SetBundle swaps it.
type trust struct {
	version string
	roots   *x509.CertPool
	anchors []*x509.Certificate
	// crls indexes revocation lists by the DER of their issuer name.
	crls map[string][]*crlEntry
	// withheld holds the CAs (caKey) whose CRL the sidecar withholds: their
	// revocation status is unknown, not absent.
	withheld map[string]bool
	// above maps an anchor that is not self-signed (an intermediate uploaded
	// as a trust anchor), by its DER, to the anchors above it: its issuer, that
	// one's issuer, and so on while they are anchors too. Chain building stops
	// at the first anchor it reaches, so without this an intermediate that is
	// also anchored would never be looked up in its root's CRL: trusting one
	// more certificate would weaken revocation.
	above map[string][]*x509.Certificate
}

// caKey names a CA for revocation: its name and key (see crlEntry).
func caKey(c *x509.Certificate) string {
	return string(c.RawSubject) + "\x00" + string(c.RawSubjectPublicKeyInfo)
}

type crlEntry struct {
	list    *x509.RevocationList
	revoked map[string]struct{} // serial number bytes
	stale   bool                // flagged by the sidecar
	// staleAfter is when the list stops being current: its nextUpdate, or
	// for a list without one the sidecar's staleAfter (zero: never).
	staleAfter time.Time
	// signerKeys holds the SubjectPublicKeyInfo DER of every anchor, named as
	// the list's issuer, whose key verified the list at load. A CA is its name
	// and key, not one certificate: a root renewed with the same name and key,
	// or a cross-certificate of it, issues under the same CRL, so a chain
	// certificate with a matching name and key needs no signature check at
	// request time. Lists of CAs that are not anchors (intermediates) are
	// checked against the presented issuer at request time.
	signerKeys []string
	// points scope the list to the certificates naming one of them as their
	// CRL distribution point (crlscope.Points); nil: every certificate.
	points []string
}

// signedBy reports whether issuer's key signed the list (its name is already
// known to match: the index is by issuer name).
func (e *crlEntry) signedBy(issuer *x509.Certificate) bool {
	for _, k := range e.signerKeys {
		if k == string(issuer.RawSubjectPublicKeyInfo) {
			return true
		}
	}
	return e.list.CheckSignatureFrom(issuer) == nil
}

// compileBundle parses every PEM in b. Errors say which entry is bad, so the
// operator can fix the sidecar's store.
func compileBundle(b *bundle.Bundle) (*trust, error) {
	if b == nil {
		return nil, errors.New("no trust bundle")
	}
	t := &trust{version: b.Version, roots: x509.NewCertPool(), crls: map[string][]*crlEntry{}}
	for i, ca := range b.CACertificates {
		rest := []byte(ca.PEM)
		n := 0
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			where := "caCertificates[" + strconv.Itoa(i) + "]"
			if blk.Type != "CERTIFICATE" {
				return nil, errors.New(where + ": PEM block " + strconv.Quote(blk.Type) + " is not a CERTIFICATE")
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, errors.New(where + ": " + err.Error())
			}
			if why := notAnAnchor(c); why != "" {
				return nil, errors.New(where + ": " + c.Subject.String() + why)
			}
			t.roots.AddCert(c)
			t.anchors = append(t.anchors, c)
			if ca.RevocationUnknown {
				if t.withheld == nil {
					t.withheld = map[string]bool{}
				}
				t.withheld[caKey(c)] = true
			}
			n++
		}
		if n == 0 {
			return nil, errors.New("caCertificates[" + strconv.Itoa(i) + "]: no PEM CERTIFICATE block: CA certificates must be PEM (-----BEGIN CERTIFICATE-----)")
		}
	}
	// No anchors is a valid state when it comes from the sidecar: the last CA
	// was deleted, and trust must stop at once rather than the previous bundle
	// staying in force. Inline configuration requires anchors (ParseConfig).
	for i, c := range b.CRLs {
		where := "crls[" + strconv.Itoa(i) + "]"
		blk, _ := pem.Decode([]byte(c.PEM))
		if blk == nil || blk.Type != "X509 CRL" {
			return nil, errors.New(where + ": not a PEM X509 CRL block")
		}
		l, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, errors.New(where + ": " + err.Error())
		}
		// A list that is not a complete list of its issuer's revocations is
		// refused like a forged one, not skipped: used as complete, a delta or
		// partition would un-revoke everything it does not repeat, and
		// skipping it silently would leave the CA unchecked. The previous
		// bundle stays in force and the error names the list.
		if why := crlscope.Incomplete(l); why != "" {
			return nil, errors.New(where + ": CRL of " + l.Issuer.String() + " " + why)
		}
		e := &crlEntry{list: l, stale: c.Stale, staleAfter: l.NextUpdate, revoked: make(map[string]struct{}, len(l.RevokedCertificateEntries)), points: crlscope.Points(l)}
		if e.staleAfter.IsZero() {
			e.staleAfter = c.StaleAfter
		}
		for _, r := range l.RevokedCertificateEntries {
			if r.SerialNumber != nil {
				e.revoked[string(r.SerialNumber.Bytes())+signTag(r.SerialNumber.Sign())] = struct{}{}
			}
		}
		sameName := false
		for _, a := range t.anchors {
			if string(a.RawSubject) != string(l.RawIssuer) {
				continue
			}
			sameName = true
			if l.CheckSignatureFrom(a) == nil {
				e.signerKeys = append(e.signerKeys, string(a.RawSubjectPublicKeyInfo))
			}
		}
		if sameName && len(e.signerKeys) == 0 {
			return nil, errors.New(where + ": signature does not verify with the CA certificate of the same name: upload the CRL that CA signed")
		}
		t.crls[string(l.RawIssuer)] = append(t.crls[string(l.RawIssuer)], e)
	}
	t.above = anchorsAbove(t.anchors)
	return t, nil
}

// notAnAnchor says why c cannot be a trust anchor, or "" when it can: a CA
// certificate, or a self-signed version 1 root (v1 has no extensions, so no
// basicConstraints; crypto/x509 accepts such roots as anchors, and old
// private roots are still around). Anything else is most likely a client or
// server certificate uploaded by mistake, which crypto/x509 would accept as
// an anchor all the same, so the bundle refuses it.
func notAnAnchor(c *x509.Certificate) string {
	switch {
	case c.IsCA:
		return ""
	case c.Version < 3 && selfSigned(c):
		return ""
	case c.Version < 3:
		return " is a version " + strconv.Itoa(c.Version) + " certificate that is not self-signed: only a self-signed v1 root can be a trust anchor without basicConstraints; upload the CA that issued it"
	case !c.BasicConstraintsValid:
		return " is not a CA certificate (no basicConstraints extension): upload the CA that issued it"
	}
	return " is not a CA certificate (basicConstraints CA:FALSE): upload the CA that issued it"
}

// selfSigned reports whether c names itself as issuer and its own key
// verifies its signature. A self-issued certificate signed by another key (a
// key-rollover link) is not self-signed: something above it can revoke it.
func selfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// anchorsAbove builds trust.above: for each anchor that is not self-signed,
// the anchors that issued it, walking up while the issuer is itself an
// anchor that is not self-signed. Issuers are found by name and verified by
// signature, so a same-name anchor with another key is never taken for the
// issuer; a cycle of cross-signed anchors stops at the first repeat.
func anchorsAbove(anchors []*x509.Certificate) map[string][]*x509.Certificate {
	var above map[string][]*x509.Certificate
	for _, a := range anchors {
		if selfSigned(a) {
			continue
		}
		var path []*x509.Certificate
		seen := map[*x509.Certificate]bool{a: true}
		for cur := a; ; {
			var issuer *x509.Certificate
			for _, p := range anchors {
				if !seen[p] && string(p.RawSubject) == string(cur.RawIssuer) && cur.CheckSignatureFrom(p) == nil {
					issuer = p
					break
				}
			}
			if issuer == nil {
				break
			}
			path = append(path, issuer)
			seen[issuer] = true
			if selfSigned(issuer) {
				break
			}
			cur = issuer
		}
		if len(path) > 0 {
			if above == nil {
				above = map[string][]*x509.Certificate{}
			}
			above[string(a.Raw)] = path
		}
	}
	return above
}

var (
	oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}
)

func signTag(s int) string {
	if s < 0 {
		return "-"
	}
	return ""
}

// Reason is a machine-readable verification outcome.
type Reason string

const (
	ReasonNone                   Reason = ""
	ReasonNoCertificate          Reason = "NO_CERTIFICATE"
	ReasonMalformedCertificate   Reason = "MALFORMED_CERTIFICATE"
	ReasonUntrustedChain         Reason = "UNTRUSTED_CHAIN"
	ReasonExpired                Reason = "EXPIRED"
	ReasonNotYetValid            Reason = "NOT_YET_VALID"
	ReasonRevoked                Reason = "REVOKED"
	ReasonRevocationUnknown      Reason = "REVOCATION_UNKNOWN"
	ReasonIssuerDNMismatch       Reason = "ISSUER_DN_MISMATCH"
	ReasonWrongKeyUsage          Reason = "WRONG_KEY_USAGE"
	ReasonCertificateTooLarge    Reason = "CERTIFICATE_TOO_LARGE"
	ReasonUntrustedSource        Reason = "UNTRUSTED_SOURCE"
	ReasonTrustBundleUnavailable Reason = "TRUST_BUNDLE_UNAVAILABLE"
)

// outcome is what verification found about one presented chain under one
// policy's options. It does not depend on the route, so it is what the
// verdict cache stores (already rendered, see entry).
type outcome struct {
	hard   Reason // refusal; empty when the chain is accepted
	soft   Reason // accepted despite this (allowExpired/allowRevoked/best-effort)
	detail string // for operators: logs and the problem body
	leaf   *x509.Certificate
	chain  []*x509.Certificate // leaf first; the verified chain in filter mode, without the anchor
	// until is when the outcome stops being true (zero: until the bundle changes).
	until time.Time
}

func (o *outcome) fail(r Reason, detail string) *outcome {
	o.hard, o.detail = r, detail
	return o
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// verifyChain runs every check a policy asks for on a presented chain (DER,
// leaf first). t may be nil only for chainVerification "envoy".
func verifyChain(opts *Options, t *trust, ders [][]byte, now time.Time) *outcome {
	o := &outcome{}
	if len(ders) == 0 {
		return o.fail(ReasonNoCertificate, "the request carries no client certificate")
	}
	if len(ders[0]) > opts.MaxCertificateBytes {
		return o.fail(ReasonCertificateTooLarge, "leaf certificate is "+strconv.Itoa(len(ders[0]))+" bytes DER, above maxCertificateBytes "+strconv.Itoa(opts.MaxCertificateBytes))
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			which := "leaf certificate"
			if i > 0 {
				which = "chain certificate " + strconv.Itoa(i)
			}
			return o.fail(ReasonMalformedCertificate, which+" does not parse: "+err.Error())
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	o.leaf = leaf
	o.chain = certs

	// vleaf is what crypto/x509 verifies: the leaf itself, or for an expired
	// leaf accepted by allowExpiredCertificates a copy whose notAfter is
	// moved to now. Everything else (CAs, signatures, constraints, EKU) is
	// then verified as of now. Verifying at the leaf's last valid second
	// instead would refuse a leaf whose CA was renewed (same name and key)
	// after the leaf expired, and pick a since-expired CA over its renewal.
	// Only notAfter differs; Verify reads validity from the fields and checks
	// signatures over RawTBSCertificate, so the copy verifies exactly like the
	// leaf would with its expiry waived.
	vleaf := leaf
	if now.Before(leaf.NotBefore) {
		o.until = leaf.NotBefore
		return o.fail(ReasonNotYetValid, "certificate is valid from "+isoTime(leaf.NotBefore))
	}
	if now.After(leaf.NotAfter) {
		if !opts.AllowExpiredCertificates {
			return o.fail(ReasonExpired, "certificate expired at "+isoTime(leaf.NotAfter))
		}
		o.soft = ReasonExpired
		o.detail = "certificate expired at " + isoTime(leaf.NotAfter) + " (accepted: allowExpiredCertificates)"
		waived := *leaf
		waived.NotAfter = now
		vleaf = &waived
	} else {
		o.until = leaf.NotAfter.Add(time.Second)
	}
	if opts.RequireClientAuthUsage && !keyUsageAllowsClient(leaf) {
		if leaf.KeyUsage == 0 {
			return o.fail(ReasonWrongKeyUsage, "certificate has a keyUsage extension with no usage set, so it cannot authenticate a TLS client (RFC 5280 4.2.1.3)")
		}
		return o.fail(ReasonWrongKeyUsage, "certificate keyUsage allows neither digitalSignature nor keyAgreement, so it cannot authenticate a TLS client")
	}

	if opts.ChainVerification == "envoy" {
		// Envoy verified the chain during the handshake; only the rules Envoy
		// does not know about apply here. Which of the presented CAs Envoy
		// chained through is unknown, so none is passed on as verified
		// (client-cert-chain).
		o.chain = certs[:1]
		if opts.RequireClientAuthUsage && !hasClientAuth(leaf) {
			return o.fail(ReasonWrongKeyUsage, "certificate extendedKeyUsage does not include clientAuth")
		}
		if opts.RevocationCheck != RevocationOff {
			if t == nil {
				return o.fail(ReasonTrustBundleUnavailable, "no trust bundle loaded yet, so revocation cannot be checked")
			}
			// Envoy is given no CRLs (the sidecar's --sds-crls): BoringSSL
			// wants a current list from every client's issuer once it has
			// one, so one published list would refuse every other CA's
			// clients. The filter checks revocation on the path instead.
			// Only CAs valid now make a path, as in BoringSSL and in filter
			// mode: otherwise an expired earlier certificate of a revoked
			// intermediate (same name and key, no longer listed) would
			// stand in for it.
			path := envoyPath(t, certs, now)
			if path == nil {
				o.until = earliest(o.until, nextNotBefore(now, certs[1:], t.anchors))
				if p := envoyPath(t, certs, time.Time{}); p != nil {
					for _, c := range p[1:] {
						if now.Before(c.NotBefore) {
							return o.fail(ReasonNotYetValid, "CA certificate "+c.Subject.String()+" is valid from "+isoTime(c.NotBefore))
						}
						if now.After(c.NotAfter) {
							o.soft = ""
							return o.fail(ReasonExpired, "CA certificate "+c.Subject.String()+" expired at "+isoTime(c.NotAfter)+": renew the CA; allowExpiredCertificates covers the client certificate only")
						}
					}
				}
				return o.fail(ReasonUntrustedChain, "the certificate does not chain to a CA in the trust bundle, though Envoy accepted it: its CA was removed (its clients are refused from the next bundle on, whatever connection they hold), or the filter's bundle is behind Envoy's; to trust it, upload its root CA with 'mtlsgate ca-certificate create'")
			}
			// The verdict holds until the first CA of the path expires.
			for _, c := range path[1:] {
				o.until = earliest(o.until, c.NotAfter.Add(time.Second))
			}
			if checkRevocation(opts, t, path, t.above[string(path[len(path)-1].Raw)], now, o); o.hard != "" {
				return o
			}
		}
		return checkIssuerDN(opts, o)
	}
	if t == nil {
		return o.fail(ReasonTrustBundleUnavailable, "no trust bundle loaded yet")
	}

	if len(t.anchors) == 0 {
		return o.fail(ReasonUntrustedChain, "no CA is trusted: upload the root CA that issues client certificates with 'mtlsgate ca-certificate create'")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	if opts.RequireClientAuthUsage {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	chains, err := vleaf.Verify(x509.VerifyOptions{Roots: t.roots, Intermediates: inter, CurrentTime: now, KeyUsages: usages})
	if err != nil {
		// The refusal holds until a CA that is not valid yet becomes valid
		// (the usual cause is a CA issued with a clock ahead of ours), not
		// until the leaf expires: cache it no longer than that.
		o.until = earliest(o.until, nextNotBefore(now, certs[1:], t.anchors))
		// A presented CA that has expired explains the failure better than
		// whatever candidate chain crypto/x509 reports last.
		for _, c := range certs[1:] {
			if now.After(c.NotAfter) {
				o.soft = ""
				return o.fail(ReasonExpired, "CA certificate "+c.Subject.String()+" expired at "+isoTime(c.NotAfter)+": renew the CA; allowExpiredCertificates covers the client certificate only")
			}
		}
		return classifyVerifyError(o, err, now)
	}
	chain := chains[0]
	for _, c := range chains[1:] {
		if len(c) < len(chain) {
			chain = c
		}
	}
	chain[0] = leaf // not the waived copy: the outcome describes the certificate presented
	// Verify checked every certificate of the chain as of now; the verdict
	// holds until the first of the CAs expires.
	for _, c := range chain[1:] {
		o.until = earliest(o.until, c.NotAfter.Add(time.Second))
	}
	o.chain = chain[:len(chain)-1]
	if len(chain) == 1 {
		o.chain = chain
	}
	if opts.RevocationCheck != RevocationOff {
		if checkRevocation(opts, t, chain, t.above[string(chain[len(chain)-1].Raw)], now, o); o.hard != "" {
			return o
		}
	}
	return checkIssuerDN(opts, o)
}

// keyUsageAllowsClient reports whether the leaf's keyUsage, if it has one,
// allows a TLS client signature. crypto/x509 reports an absent extension and
// one with no bit set alike (KeyUsage 0), but RFC 5280 4.2.1.3 reads the first
// as "any usage" and the second as "no usage", so look for the extension.
func keyUsageAllowsClient(leaf *x509.Certificate) bool {
	if leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement) != 0 {
		return true
	}
	for _, x := range leaf.Extensions {
		if x.Id.Equal(oidKeyUsage) {
			return false
		}
	}
	return true
}

// nextNotBefore returns the earliest notBefore after now among the given
// certificates, or the zero time: the next moment a certificate that could
// be part of the chain becomes valid, and so a failed verification may pass.
func nextNotBefore(now time.Time, lists ...[]*x509.Certificate) time.Time {
	var next time.Time
	for _, l := range lists {
		for _, c := range l {
			if c.NotBefore.After(now) {
				next = earliest(next, c.NotBefore)
			}
		}
	}
	return next
}

func hasClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true // no EKU extension: any usage (RFC 5280 4.2.1.12)
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func checkIssuerDN(opts *Options, o *outcome) *outcome {
	if len(opts.CertIssuerDN) == 0 {
		return o
	}
	for _, p := range opts.CertIssuerDN {
		if p.Match(o.leaf.RawIssuer) {
			return o
		}
	}
	want := opts.CertIssuerDN[0].String()
	if len(opts.CertIssuerDN) > 1 {
		want = "(any of " + strconv.Itoa(len(opts.CertIssuerDN)) + ", first " + want + ")"
	}
	got, err := dn.Format(o.leaf.RawIssuer)
	if err != nil {
		got = "(unparseable)"
	}
	return o.fail(ReasonIssuerDNMismatch, "certificate issuer "+got+" does not match certIssuerDN "+want)
}

func classifyVerifyError(o *outcome, err error, at time.Time) *outcome {
	o.soft = ""
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv):
		switch inv.Reason {
		case x509.Expired:
			if inv.Cert != nil && at.Before(inv.Cert.NotBefore) {
				return o.fail(ReasonNotYetValid, "CA certificate "+inv.Cert.Subject.String()+" is valid from "+isoTime(inv.Cert.NotBefore))
			}
			name := ""
			if inv.Cert != nil {
				name = inv.Cert.Subject.String() + " "
			}
			return o.fail(ReasonExpired, "CA certificate "+name+"in the chain has expired: renew it; allowExpiredCertificates covers the client certificate only")
		case x509.IncompatibleUsage:
			return o.fail(ReasonWrongKeyUsage, "certificate or an issuing CA does not allow clientAuth (extendedKeyUsage)")
		}
		return o.fail(ReasonUntrustedChain, err.Error())
	case errors.As(err, &ua):
		return o.fail(ReasonUntrustedChain, "no chain to a trusted CA: "+err.Error()+
			" (the client must send its intermediate CAs after the leaf, and the root must be uploaded: mtlsgate ca-certificate list)")
	}
	return o.fail(ReasonUntrustedChain, err.Error())
}

// envoyPath finds again, for chainVerification "envoy", the path Envoy
// verified at the handshake, which it does not report: from the leaf, each
// issuer among the bundle's anchors first (chain building stops at the first
// anchor, as in filter mode) and otherwise among the presented certificates,
// matched by name and verified by signature, so that a CA with the same name
// and another key is never taken for the issuer. It returns nil when no path
// reaches an anchor. The search backtracks (a client may present two
// certificates of one CA, only one of them issued by a trusted root) and
// explores each presented certificate at most once. Only CAs valid at now
// are taken as issuers; a zero now takes any.
func envoyPath(t *trust, certs []*x509.Certificate, now time.Time) []*x509.Certificate {
	dead := make([]bool, len(certs))
	var walk func(path []*x509.Certificate) []*x509.Certificate
	walk = func(path []*x509.Certificate) []*x509.Certificate {
		c := path[len(path)-1]
		if t.isAnchor(c) {
			return path
		}
		if a := issuerAmong(c, t.anchors, now); a != nil {
			return append(path, a)
		}
		for i := 1; i < len(certs); i++ {
			p := certs[i]
			if dead[i] || string(p.RawSubject) != string(c.RawIssuer) || !validAt(p, now) || slices.Contains(path, p) || c.CheckSignatureFrom(p) != nil {
				continue
			}
			if full := walk(append(path[:len(path):len(path)], p)); full != nil {
				return full
			}
			dead[i] = true
		}
		return nil
	}
	return walk(certs[:1:1])
}

// isAnchor reports whether c is one of the bundle's anchors.
func (t *trust) isAnchor(c *x509.Certificate) bool {
	for _, a := range t.anchors {
		if string(a.Raw) == string(c.Raw) {
			return true
		}
	}
	return false
}

// issuerAmong returns the certificate among cands, valid at now (any when
// now is zero), that is named as c's issuer and whose key verifies c's
// signature.
func issuerAmong(c *x509.Certificate, cands []*x509.Certificate, now time.Time) *x509.Certificate {
	for _, p := range cands {
		if string(p.RawSubject) == string(c.RawIssuer) && validAt(p, now) && c.CheckSignatureFrom(p) == nil {
			return p
		}
	}
	return nil
}

// validAt reports whether now is within c's validity; a zero now is.
func validAt(c *x509.Certificate, now time.Time) bool {
	return now.IsZero() || (!now.Before(c.NotBefore) && !now.After(c.NotAfter))
}

// revocationUnknown records a certificate whose revocation status cannot be
// known: a refusal under revocationCheck strict, an acceptance with the
// reason noted under best-effort.
func revocationUnknown(opts *Options, o *outcome, why string) {
	if opts.RevocationCheck == RevocationStrict {
		o.fail(ReasonRevocationUnknown, why)
		return
	}
	if o.soft == "" {
		o.soft = ReasonRevocationUnknown
		o.detail = why + " (accepted: revocationCheck best-effort)"
	}
}

// checkRevocation looks up every non-anchor certificate of chain in the CRLs
// its issuer published, and then the anchor itself and the anchors above it
// (trust.above) the same way, so that anchoring an intermediate as well as
// its root does not exempt the intermediate from the root's CRL. A revoked
// CA is always refused: a compromised CA is not the client's certificate,
// which is all allowRevokedCertificates is about.
func checkRevocation(opts *Options, t *trust, chain, above []*x509.Certificate, now time.Time, o *outcome) {
	anchor := len(chain) - 1
	if len(above) > 0 {
		chain = append(chain[:len(chain):len(chain)], above...)
	}
	for i := 0; i+1 < len(chain); i++ {
		c, issuer := chain[i], chain[i+1]
		what := "certificate"
		switch {
		case i >= anchor && i > 0:
			what = "trusted CA " + c.Subject.String() + " (an anchor in the trust bundle, issued by the anchor " + issuer.Subject.String() + ")"
		case i > 0:
			what = "intermediate CA " + c.Subject.String()
		}
		// found is the issuer's newest list covering c (one without
		// issuingDistributionPoint covers all; a scoped one, the
		// certificates naming its point). A scoped list that does not name
		// c's point still revokes what it lists: a serial is the CA's, and a
		// certificate whose point is spelt otherwise (case, LDAP, none) must
		// not escape a list that names it. With no covering list the
		// issuer's newest list speaks for c.
		var found, newest *crlEntry
		revokedElsewhere := false
		serial := string(c.SerialNumber.Bytes()) + signTag(c.SerialNumber.Sign())
		for _, e := range t.crls[string(c.RawIssuer)] {
			if !e.signedBy(issuer) {
				continue
			}
			if newest == nil || e.list.ThisUpdate.After(newest.list.ThisUpdate) {
				newest = e
			}
			if !crlscope.Covers(e.points, c) {
				if _, r := e.revoked[serial]; r {
					revokedElsewhere = true
				}
				continue
			}
			if found == nil || e.list.ThisUpdate.After(found.list.ThisUpdate) {
				found = e
			}
		}
		if found == nil {
			found = newest
		}
		unknown := ""
		switch {
		case found == nil && t.withheld[caKey(issuer)]:
			unknown = "the sidecar withholds the CRL of " + issuer.Subject.String() + " (not a complete list): replace it with the CA's complete CRL"
		case found == nil:
			if opts.RequireCRL {
				unknown = "no CRL from " + issuer.Subject.String() + " in the trust bundle (requireCRL)"
			}
		default:
			if _, revoked := found.revoked[serial]; revoked || revokedElsewhere {
				if i == 0 && opts.AllowRevokedCertificates {
					if o.soft == "" {
						o.soft = ReasonRevoked
						o.detail = "certificate is revoked (accepted: allowRevokedCertificates)"
					}
					continue
				}
				o.fail(ReasonRevoked, what+" is revoked by its issuer's CRL")
				return
			}
			if found.stale || (!found.staleAfter.IsZero() && now.After(found.staleAfter)) {
				unknown = "CRL of " + issuer.Subject.String() + " is stale (nextUpdate " + isoTime(found.list.NextUpdate) + "): publish a fresh CRL"
				if found.list.NextUpdate.IsZero() {
					unknown = "CRL of " + issuer.Subject.String() + " is stale (no nextUpdate; thisUpdate " + isoTime(found.list.ThisUpdate) +
						", current until " + isoTime(found.staleAfter) + " by the sidecar's --crl-max-age-without-next-update): publish a fresh CRL"
				}
			} else if !found.staleAfter.IsZero() {
				o.until = earliest(o.until, found.staleAfter.Add(time.Second))
			}
		}
		if unknown != "" {
			if revocationUnknown(opts, o, unknown); o.hard != "" {
				return
			}
		}
	}
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }
