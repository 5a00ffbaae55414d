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
		case x.Id.Equal(IssuingDistributionPoint) && !onlyNamesItsPoint(x.Value):
			return "has an issuingDistributionPoint extension that limits it to some certificates or reasons (a partitioned, scoped or indirect CRL), and only complete CRLs are used; upload a full CRL"
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

// onlyNamesItsPoint reports whether an issuingDistributionPoint value names
// the list's distribution point and nothing else: no onlyContains…,
// onlySomeReasons or indirectCRL. AD CS writes such an extension on its full
// CRLs; the list is then complete for the certificates that name that point,
// which for a CA with one distribution point is all of them.
func onlyNamesItsPoint(der []byte) bool {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence {
		return false
	}
	for in := seq.Bytes; len(in) > 0; {
		var el asn1.RawValue
		if in, err = asn1.Unmarshal(in, &el); err != nil || el.Class != asn1.ClassContextSpecific || el.Tag != 0 {
			return false
		}
	}
	return true
}
