// Package crlscope tells a complete certificate revocation list from one
// that covers part of its issuer's revocations (delta, partitioned,
// indirect, or extended in ways mtlsgate does not process). The filter and
// the sidecar both use it, so a list the sidecar takes is one the filter
// takes.
package crlscope

import (
	"crypto/x509"
	"encoding/asn1"
)

// Extension OIDs (RFC 5280 5.2, 5.3).
var (
	CRLNumber                = asn1.ObjectIdentifier{2, 5, 29, 20}
	AuthorityKeyID           = asn1.ObjectIdentifier{2, 5, 29, 35}
	DeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	IssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
	CertificateIssuer        = asn1.ObjectIdentifier{2, 5, 29, 29}
	ReasonCode               = asn1.ObjectIdentifier{2, 5, 29, 21}
	InvalidityDate           = asn1.ObjectIdentifier{2, 5, 29, 24}
)

// Incomplete says why l cannot be used as the complete list of its
// issuer's revocations, or "". crypto/x509 parses these extensions without
// acting on them (criticality included), so its users have to: RFC 5280
// 5.2/5.3 forbids using a CRL with a critical extension the reader does not
// process, and 6.3.3 scopes delta, partitioned and indirect lists, which
// neither the filter nor Envoy implements: each takes a list as all its
// issuer revoked.
func Incomplete(l *x509.RevocationList) string {
	for _, x := range l.Extensions {
		switch {
		case x.Id.Equal(DeltaCRLIndicator):
			return "is a delta CRL (deltaCRLIndicator): it lists only the changes since a base CRL, and only complete CRLs are used; upload the full CRL"
		case x.Id.Equal(IssuingDistributionPoint) && pointURIs(x.Value) == nil:
			return "has an issuingDistributionPoint extension that limits it to some certificates or reasons, or names its point other than by URI (a partitioned, scoped or indirect CRL), and only complete CRLs are used; upload a full CRL"
		case x.Critical && !x.Id.Equal(CRLNumber) && !x.Id.Equal(AuthorityKeyID) && !x.Id.Equal(IssuingDistributionPoint):
			return "has a critical extension " + x.Id.String() + " mtlsgate does not process, so the list must not be used (RFC 5280 5.2); upload a CRL without it"
		}
	}
	for _, r := range l.RevokedCertificateEntries {
		for _, x := range r.Extensions {
			switch {
			case x.Id.Equal(CertificateIssuer):
				return "is an indirect CRL (an entry carries certificateIssuer): only CRLs that list their own issuer's certificates are used"
			case x.Critical && !x.Id.Equal(ReasonCode) && !x.Id.Equal(InvalidityDate):
				return "has an entry with a critical extension " + x.Id.String() + " mtlsgate does not process, so the list must not be used (RFC 5280 5.3)"
			}
		}
	}
	return ""
}

// Points returns the distribution point URIs a list is scoped to: nil for a
// list without issuingDistributionPoint (it covers every certificate of its
// issuer), else the URIs its issuingDistributionPoint names. Such a list
// (AD CS writes one on its full CRLs) covers exactly the certificates whose
// cRLDistributionPoints name one of them; a CA may publish one per point, so
// it must not stand for the others. Call it on lists Incomplete accepted.
func Points(l *x509.RevocationList) []string {
	for _, x := range l.Extensions {
		if x.Id.Equal(IssuingDistributionPoint) {
			return pointURIs(x.Value)
		}
	}
	return nil
}

// Covers reports whether a list scoped to points (see Points) covers c:
// every certificate when points is nil, else one naming a point in its
// cRLDistributionPoints.
func Covers(points []string, c *x509.Certificate) bool {
	if points == nil {
		return true
	}
	for _, p := range points {
		for _, q := range c.CRLDistributionPoints {
			if p == q {
				return true
			}
		}
	}
	return false
}

// pointURIs returns the URIs of an issuingDistributionPoint value that names
// the list's distribution point by URI and nothing else (no onlyContains…,
// onlySomeReasons or indirectCRL), or nil.
func pointURIs(der []byte) []string {
	var idp struct {
		Point asn1.RawValue `asn1:"optional,explicit,tag:0"`
		Rest  asn1.RawValue `asn1:"optional"`
	}
	rest, err := asn1.Unmarshal(der, &idp)
	if err != nil || len(rest) > 0 || len(idp.Rest.FullBytes) > 0 || len(idp.Point.Bytes) == 0 {
		return nil // no point, or more than a point
	}
	var name asn1.RawValue // DistributionPointName
	if rest, err = asn1.Unmarshal(idp.Point.Bytes, &name); err != nil || len(rest) > 0 || name.Class != asn1.ClassContextSpecific || name.Tag != 0 {
		return nil // not fullName (nameRelativeToCRLIssuer cannot be matched)
	}
	var uris []string
	for in := name.Bytes; len(in) > 0; { // fullName: GeneralNames
		var gn asn1.RawValue
		if in, err = asn1.Unmarshal(in, &gn); err != nil {
			return nil
		}
		if gn.Class == asn1.ClassContextSpecific && gn.Tag == 6 { // uniformResourceIdentifier
			uris = append(uris, string(gn.Bytes))
		}
	}
	return uris
}
