package gateway

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"

	"github.com/mtlsgate/mtlsgate/filter/policy/dn"
)

// XFCCHeader is the header Envoy's HTTP connection manager writes with the
// downstream client certificate.
const XFCCHeader = "x-forwarded-client-cert"

// PeerInfo is what Envoy's Ssl::ConnectionInfo reports about one TLS
// connection, computed once per connection: the XFCC value and the
// connection.* attributes the filter reads are both derived from it.
type PeerInfo struct {
	// Presented is peerCertificatePresented(): the client sent a certificate.
	Presented bool
	// Digest is the lowercase hex SHA-256 of the leaf's DER.
	Digest string
	// CertPEM and ChainPEM are the url-encoded PEM of the leaf and of every
	// certificate the client sent, leaf first, as Envoy puts them in XFCC.
	CertPEM, ChainPEM string
	// Subject is the leaf's subject in RFC 2253 form (openssl's
	// X509_NAME_print_ex with XN_FLAG_RFC2253, as Envoy prints it).
	Subject string
	URISANs []string
	DNSSANs []string
	// LocalURISANs are the URI SANs of our own serving certificate; Envoy
	// writes them as By= elements.
	LocalURISANs []string
	// LocalSubject is the serving certificate's subject.
	LocalSubject string
}

// newPeerInfo reads the presented chain (leaf first) and the serving
// certificate of one connection.
func newPeerInfo(peer []*x509.Certificate, local *x509.Certificate) PeerInfo {
	var pi PeerInfo
	if local != nil {
		for _, u := range local.URIs {
			pi.LocalURISANs = append(pi.LocalURISANs, u.String())
		}
		pi.LocalSubject = rfc2253(local)
	}
	if len(peer) == 0 {
		return pi
	}
	leaf := peer[0]
	pi.Presented = true
	sum := sha256.Sum256(leaf.Raw)
	pi.Digest = hex.EncodeToString(sum[:])
	pi.CertPEM = urlEncodePEM(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})))
	var chain strings.Builder
	for _, c := range peer {
		chain.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	pi.ChainPEM = urlEncodePEM(chain.String())
	pi.Subject = rfc2253(leaf)
	for _, u := range leaf.URIs {
		pi.URISANs = append(pi.URISANs, u.String())
	}
	pi.DNSSANs = append(pi.DNSSANs, leaf.DNSNames...)
	return pi
}

// rfc2253 formats a certificate subject with the policy package's formatter,
// so the gateway and the filter agree byte for byte on DNs.
func rfc2253(c *x509.Certificate) string {
	s, err := dn.Format(c.RawSubject)
	if err != nil {
		// crypto/x509 already parsed this name, so the DER is well formed;
		// fall back to Go's rendering rather than dropping the subject.
		return c.Subject.String()
	}
	return s
}

// pemEscaper mirrors Envoy's urlEncodedPemEncodedPeerCertificate
// (source/common/tls/connection_info_impl_base.cc), which escapes only the
// characters that occur in PEM and would break the XFCC grammar.
var pemEscaper = strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D")

func urlEncodePEM(s string) string { return pemEscaper.Replace(s) }

// XFCC returns the x-forwarded-client-cert value Envoy's HTTP connection
// manager sets with forward_client_cert_details SANITIZE_SET and
// set_current_client_cert_details {cert, chain, subject, uri, dns}, or "" when
// no client certificate was presented (then Envoy removes the header). The
// shipped envoy.yaml leaves uri and dns off; the dev gateway writes them, as
// Istio's defaults do, so the filter is run against SANs written unquoted,
// the case it must withstand.
//
// The element order mirrors ConnectionManagerUtility::mutateXfccRequestHeader
// (envoyproxy/envoy source/common/http/conn_manager_utility.cc): one By= per
// URI SAN of the local certificate, Hash=, then the configured details in the
// order the HCM config builds them (source/extensions/filters/network/
// http_connection_manager/config.cc: Cert, Chain, Subject, URI, DNS). URI= is
// written even when the certificate has no URI SAN, one per URI SAN
// otherwise; Subject= is always written; DNS= once per DNS SAN.
func (pi *PeerInfo) XFCC() string {
	if !pi.Presented {
		return ""
	}
	var el []string
	for _, u := range pi.LocalURISANs {
		el = append(el, "By="+u)
	}
	if pi.Digest != "" {
		el = append(el, "Hash="+pi.Digest)
	}
	if pi.CertPEM != "" {
		el = append(el, `Cert="`+pi.CertPEM+`"`)
	}
	if pi.ChainPEM != "" {
		el = append(el, `Chain="`+pi.ChainPEM+`"`)
	}
	el = append(el, `Subject="`+pi.Subject+`"`)
	if len(pi.URISANs) == 0 {
		el = append(el, "URI=")
	}
	for _, u := range pi.URISANs {
		el = append(el, "URI="+u)
	}
	for _, d := range pi.DNSSANs {
		el = append(el, "DNS="+d)
	}
	return strings.Join(el, ";")
}
