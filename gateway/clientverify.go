package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// clientTrust is a validation context as Envoy's listener applies it with
// trust_chain_verification VERIFY_TRUST_CHAIN (envoy.yaml's strict variant):
// the presented chain must reach one of trusted_ca and pass BoringSSL's
// ssl_client purpose (sslClientPurpose), and when the context carries CRLs,
// BoringSSL's CRL check runs on the chain it built.
type clientTrust struct {
	roots *x509.CertPool
	crls  []*x509.RevocationList
	// leafOnly is only_verify_leaf_cert_crl: without it BoringSSL wants a
	// list for every certificate below the anchor (X509_V_FLAG_CRL_CHECK_ALL).
	leafOnly bool
	cas      int
}

// parseValidationContext reads the parts of a validation context the
// sidecar writes. A field that would make Envoy refuse more clients than
// trusted_ca alone (pins, SAN matchers, a custom validator) is refused rather
// than ignored: ignoring it would let through what Envoy turns away.
func parseValidationContext(vc *tlsv3.CertificateValidationContext) (*clientTrust, error) {
	switch {
	case len(vc.GetVerifyCertificateSpki()) > 0, len(vc.GetVerifyCertificateHash()) > 0,
		len(vc.GetMatchTypedSubjectAltNames()) > 0, len(vc.GetMatchSubjectAltNames()) > 0,
		vc.GetCustomValidatorConfig() != nil, vc.GetAllowExpiredCertificate(), vc.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN:
		return nil, errors.New("the validation context sets fields mtlsgate dev does not model (certificate pins, SAN matchers, a custom validator, allow_expired_certificate or trust_chain_verification); it models trusted_ca, crl and only_verify_leaf_cert_crl")
	}
	ca, err := dataSource(vc.GetTrustedCa())
	if err != nil {
		return nil, fmt.Errorf("trusted_ca: %w", err)
	}
	ct := &clientTrust{roots: x509.NewCertPool(), leafOnly: vc.GetOnlyVerifyLeafCertCrl()}
	err = eachPEM(ca, func(der []byte) error {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		ct.roots.AddCert(c)
		ct.cas++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("trusted_ca: %w", err)
	}
	if ct.cas == 0 {
		return nil, errors.New("trusted_ca holds no PEM certificate")
	}
	if vc.GetCrl() == nil {
		return ct, nil
	}
	crls, err := dataSource(vc.GetCrl())
	if err != nil {
		return nil, fmt.Errorf("crl: %w", err)
	}
	err = eachPEM(crls, func(der []byte) error {
		l, err := x509.ParseRevocationList(der)
		if err == nil {
			ct.crls = append(ct.crls, l)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("crl: %w", err)
	}
	if len(ct.crls) == 0 {
		return nil, errors.New("crl holds no PEM X509 CRL")
	}
	return ct, nil
}

// eachPEM calls fn with the bytes of every PEM block in data, in order,
// stopping at the first error.
func eachPEM(data []byte, fn func(der []byte) error) error {
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return nil
		}
		if err := fn(blk.Bytes); err != nil {
			return err
		}
	}
}

// verify checks a presented chain (leaf first) as of now.
func (ct *clientTrust) verify(certs []*x509.Certificate, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("peer did not return a certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: ct.roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Errorf("certificate verify failed: %w", err)
	}
	chain := chains[0]
	for _, c := range chains[1:] {
		if len(c) < len(chain) {
			chain = c
		}
	}
	last := len(chain) - 1 // the anchor has no list to be checked against
	if err := sslClientPurpose(chain[:max(last, 1)]); err != nil {
		return err
	}
	if len(ct.crls) == 0 {
		return nil
	}
	if ct.leafOnly {
		last = min(last, 1)
	}
	for i := 0; i < last; i++ {
		if err := ct.checkCRL(chain[i], chain[i+1], now); err != nil {
			return fmt.Errorf("certificate %s: %w", chain[i].Subject, err)
		}
	}
	return nil
}

var (
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// sslClientPurpose is what BoringSSL's "ssl_client" purpose, which it sets
// when a server verifies its client, adds to crypto/x509's clientAuth check
// on the certificates below the anchor (leaf first): an extendedKeyUsage
// extension must name clientAuth, anyExtendedKeyUsage alone not doing, and
// the leaf's keyUsage, when present, must allow digitalSignature or
// keyAgreement.
func sslClientPurpose(chain []*x509.Certificate) error {
	for i, c := range chain {
		for _, x := range c.Extensions {
			if x.Id.Equal(oidExtKeyUsage) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				return fmt.Errorf("certificate %s: unsupported certificate purpose (extendedKeyUsage without clientAuth)", c.Subject)
			}
			if i == 0 && x.Id.Equal(oidKeyUsage) && c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement) == 0 {
				return fmt.Errorf("certificate %s: unsupported certificate purpose (keyUsage allows neither digitalSignature nor keyAgreement)", c.Subject)
			}
		}
	}
	return nil
}

// checkCRL is BoringSSL's verdict for one certificate: a list from its
// issuer must exist and be current, and must not list it.
func (ct *clientTrust) checkCRL(c, issuer *x509.Certificate, now time.Time) error {
	// BoringSSL scores a list whose thisUpdate has come and whose nextUpdate
	// has not passed above one that is out of its time, and then checks the
	// time of the list it chose.
	var found *x509.RevocationList
	current := false
	for _, l := range ct.crls {
		if string(l.RawIssuer) != string(c.RawIssuer) || l.CheckSignatureFrom(issuer) != nil {
			continue
		}
		cur := !now.Before(l.ThisUpdate) && (l.NextUpdate.IsZero() || !now.After(l.NextUpdate))
		if found == nil || cur && !current || cur == current && l.ThisUpdate.After(found.ThisUpdate) {
			found, current = l, cur
		}
	}
	switch {
	case found == nil:
		return errors.New("unable to get certificate CRL (its issuer has no list in the validation context)")
	case now.Before(found.ThisUpdate):
		return errors.New("CRL is not yet valid")
	case !found.NextUpdate.IsZero() && now.After(found.NextUpdate):
		return errors.New("CRL has expired")
	}
	for _, r := range found.RevokedCertificateEntries {
		if r.SerialNumber != nil && r.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return errors.New("certificate revoked")
		}
	}
	return nil
}

// verifyClient is the listener's verification in strict mode. Until the
// first validation context arrives every handshake fails, as Envoy keeps a
// listener whose SDS secret has not arrived warming and accepts nothing.
func (g *Gateway) verifyClient(cs tls.ConnectionState) error {
	ct := g.clientCA.Trust()
	if ct == nil {
		return fmt.Errorf("validation context %q not received yet from the SDS server %s", g.cfg.ClientCASecret, g.cfg.SDSAddr)
	}
	if len(cs.PeerCertificates) > 0 && !envoyVerifiable(cs.PeerCertificates[0]) {
		// Envoy's CertificateRequest does not offer Ed25519 (see
		// envoyVerifiable), so such a client has no certificate to send.
		return errors.New("peer did not return a certificate (Ed25519 keys are not offered)")
	}
	err := ct.verify(cs.PeerCertificates, time.Now())
	if err != nil {
		g.logf("TLS handshake refused: %v", err)
	}
	return err
}
