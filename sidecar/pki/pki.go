// Package pki checks the certificates, keys and revocation lists operators
// upload, and renders the facts about them that the API reports. Every refusal
// is a *problem.Error that names the fault and the command that fixes it.
package pki

import (
	"github.com/mtlsgate/mtlsgate/filter/policy/dn"

	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/mtlsgate/mtlsgate/internal/crlscope"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// reserved are the ECMAScript reserved words; they are not valid identifiers,
// and names are used as identifiers in gateway configuration code.
var reserved = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`await break case catch class const continue debugger default delete do
		else enum export extends false finally for function if import in instanceof new null return
		super switch this throw true try typeof var void while with yield let static implements
		interface package private protected public`) {
		reserved[w] = true
	}
}

// ValidName checks that name is a JavaScript identifier: letters, digits, _ and
// $, not starting with a digit, not a reserved word. what names the flag for
// the message ("--name").
func ValidName(name string) error {
	if name == "" {
		return problem.Invalid("invalid_name", "--name is required: give a JavaScript identifier such as my_ca")
	}
	for i, r := range name {
		ok := r == '_' || r == '$' || unicode.IsLetter(r) || (i > 0 && unicode.IsDigit(r))
		if !ok {
			if i == 0 && unicode.IsDigit(r) {
				return problem.Invalid("invalid_name", "name %q starts with a digit: a name must be a JavaScript identifier (letters, digits, _ and $, not starting with a digit), e.g. ca_%s", name, name)
			}
			return problem.Invalid("invalid_name", "name %q contains %q: a name must be a JavaScript identifier (letters, digits, _ and $, not starting with a digit); try %q", name, string(r), SuggestName(name))
		}
	}
	if reserved[name] {
		return problem.Invalid("invalid_name", "name %q is a JavaScript reserved word: pick another name, e.g. %s_ca", name, name)
	}
	return nil
}

// SuggestName turns s into a valid name by replacing what ValidName refuses
// with underscores (and prefixing one to a leading digit).
func SuggestName(name string) string {
	var b strings.Builder
	for i, r := range name {
		switch {
		case r == '_' || r == '$' || unicode.IsLetter(r):
			b.WriteRune(r)
		case unicode.IsDigit(r):
			if i == 0 {
				b.WriteRune('_')
			}
			b.WriteRune(r)
		default:
			b.WriteRune('_')
		}
	}
	return b.String()
}

// Fingerprint is the SHA-256 of the DER certificate, uppercase hex pairs joined
// by colons (the form openssl x509 -fingerprint -sha256 prints).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// derHint is the conversion command for a DER file.
func derHint(file string) string {
	if file == "" {
		file = "FILE"
	}
	return fmt.Sprintf("openssl x509 -inform der -in %s -out %s.pem", file, strings.TrimSuffix(strings.TrimSuffix(file, ".der"), ".cer"))
}

// IsDER reports whether data is a DER certificate rather than PEM, so the CLI
// can answer with the conversion command for the file it read.
func IsDER(data []byte) bool {
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return false
	}
	_, err := x509.ParseCertificate(data)
	return err == nil
}

// DERCertificateError is the answer to a DER upload where PEM is required.
func DERCertificateError(file string) error {
	return problem.Invalid("der_not_supported", "%s is DER-encoded; only PEM is accepted: convert it with `%s` and upload the .pem file", nameOr(file, "the certificate"), derHint(file))
}

func nameOr(file, dflt string) string {
	if file == "" {
		return dflt
	}
	return file
}

// certBlocks returns the CERTIFICATE blocks of a PEM file, refusing private
// keys (a CA upload must never carry one) and non-PEM input.
func certBlocks(data []byte, what string) ([]*x509.Certificate, error) {
	if IsDER(data) {
		return nil, DERCertificateError("")
	}
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, problem.Invalid("bad_certificate", "%s: certificate %d cannot be parsed (%v): export it again as PEM", what, len(certs)+1, err)
			}
			certs = append(certs, c)
		case strings.Contains(b.Type, "PRIVATE KEY"):
			return nil, problem.Invalid("private_key_in_certificate", "%s contains a private key: upload only the certificate and keep the key secret", what)
		}
	}
	if len(certs) == 0 {
		return nil, problem.Invalid("not_pem", "%s holds no PEM certificate (-----BEGIN CERTIFICATE-----): pass a PEM file; a DER file converts with `%s`", what, derHint(""))
	}
	return certs, nil
}

// CA parses and checks an uploaded trust anchor: one PEM certificate, a CA,
// not expired, and a self-signed root unless allowIntermediate.
func CA(data []byte, allowIntermediate bool, now time.Time) (*x509.Certificate, error) {
	certs, err := certBlocks(data, "the CA certificate file")
	if err != nil {
		return nil, err
	}
	if len(certs) > 1 {
		return nil, problem.Invalid("multiple_certificates", "the CA certificate file holds %d certificates: upload one CA per create (the self-signed root that anchors your client certificates)", len(certs))
	}
	c := certs[0]
	// A version 1 (or 2) certificate cannot carry basicConstraints;
	// self-signed, it is a (legacy) root, as crypto/x509 and the filter take
	// it.
	v1Root := c.Version < 3 && SelfSigned(c)
	if !v1Root && (!c.BasicConstraintsValid || !c.IsCA) {
		return nil, problem.Invalid("not_a_ca", "%q is not a CA certificate (basicConstraints CA:TRUE is missing): upload the CA that issued your client certificates, not a client certificate", DN(c.RawSubject))
	}
	if now.After(c.NotAfter) {
		return nil, problem.Invalid("expired", "CA %q expired on %s: upload a current CA certificate", DN(c.RawSubject), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if !SelfSigned(c) && !allowIntermediate && bytes.Equal(c.RawSubject, c.RawIssuer) {
		err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
		return nil, problem.Invalid("not_a_root", "%q names itself as issuer, but its own key does not verify its signature (%v): if it is a key-rollover certificate signed by an older key, upload the root of that key; if its signature algorithm is one no verifier accepts any more (MD5), re-issue the root with SHA-256; or pass --allow-intermediate to anchor trust at it as it is", DN(c.RawSubject), err)
	}
	if !SelfSigned(c) && !allowIntermediate {
		return nil, problem.Invalid("not_a_root", "%q is an intermediate CA issued by %q: upload the self-signed root that anchors it (subject equals issuer in `openssl x509 -in FILE -noout -subject -issuer -nameopt RFC2253`), or pass --allow-intermediate to anchor trust at this intermediate", DN(c.RawSubject), DN(c.RawIssuer))
	}
	return c, nil
}

// CARecord is the store record of a checked CA certificate (see CA).
func CARecord(name string, c *x509.Certificate, managedBy string) store.CA {
	return store.CA{
		Name:        name,
		PEM:         string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})),
		Subject:     DN(c.RawSubject),
		Issuer:      DN(c.RawIssuer),
		Fingerprint: Fingerprint(c.Raw),
		NotBefore:   c.NotBefore.UTC(),
		NotAfter:    c.NotAfter.UTC(),
		SelfSigned:  SelfSigned(c),
		ManagedBy:   managedBy,
	}
}

// SelfSigned reports whether c is its own issuer with a valid self-signature.
//
// The signature is checked with CheckSignature, not CheckSignatureFrom: the
// latter refuses SHA-1, which many long-lived private roots were signed
// with, and so called such a root an intermediate issued by itself. A
// root's own signature is not what path validation relies on (crypto/x509,
// BoringSSL and so Envoy ignore it, RFC 5280 6.1), so a SHA-1 one is fine
// here; checking it still tells a root from a self-issued certificate signed
// by another key (a key-rollover link). It is the filter's definition too
// (filter/policy selfSigned), so both call the same certificates roots.
func SelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// CRL parses a PEM or DER revocation list and checks that ca signed it. It
// returns the list and its PEM form (what Envoy and the filter consume).
func CRL(data []byte, ca *x509.Certificate) (*x509.RevocationList, []byte, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" {
			return nil, nil, problem.Invalid("not_a_crl", "the CRL file holds a %q PEM block, not an X509 CRL: pass the certificate revocation list your CA publishes", b.Type)
		}
		der = b.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, nil, problem.Invalid("bad_crl", "the CRL cannot be parsed (%v): pass a PEM (-----BEGIN X509 CRL-----) or DER revocation list", err)
	}
	if err := CheckCRL(rl, ca); err != nil {
		return nil, nil, err
	}
	return rl, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: rl.Raw}), nil
}

// CheckCRL checks that the parsed list rl is complete and that ca issued it:
// ca's key signed it and its issuer is ca's subject. Every path that attaches
// a list to a CA (admin API, URL refresh, trust directory) goes through it,
// for callers that parse a list once and try it against several CAs.
//
// The signature alone does not tell whose list it is: a CA renamed or
// re-issued under another subject often keeps its key, and then the old
// name's lists verify with the new CA too. Envoy and the filter look lists
// up by issuer name, so a list of another name stored as this CA's would
// replace the CA's own and leave its certificates with no list at all.
func CheckCRL(rl *x509.RevocationList, ca *x509.Certificate) error {
	if err := Complete(rl); err != nil {
		return err
	}
	if err := rl.CheckSignatureFrom(ca); err != nil {
		return problem.Invalid("crl_wrong_issuer", "the CRL issued by %q is not signed by CA %q (%v): pass the CRL this CA publishes, or attach it to the CA that signed it", DN(rl.RawIssuer), DN(ca.RawSubject), err)
	}
	if !bytes.Equal(rl.RawIssuer, ca.RawSubject) {
		return problem.Invalid("crl_wrong_issuer", "the CRL is issued by %q, not by CA %q: it is signed with this CA's key, but a list belongs to the CA whose subject is its issuer "+
			"(the CA was probably renamed or re-issued with the same key); pass the list the CA %q publishes, or attach this one to the CA %q", DN(rl.RawIssuer), DN(ca.RawSubject), DN(ca.RawSubject), DN(rl.RawIssuer))
	}
	return nil
}

// Complete refuses a list that is not all its CA revoked: a delta, a
// partition, an indirect list, or one with a critical extension nobody here
// processes. Go's parser accepts them all, but Envoy and the filter treat
// every list as complete, so what such a list leaves out, which the CA may
// well have revoked, would pass. The filter applies the same check to its
// bundle (internal/crlscope), so a list stored here is one it takes.
func Complete(rl *x509.RevocationList) error {
	if why := crlscope.Incomplete(rl); why != "" {
		return problem.Invalid("crl_not_complete", "the CRL issued by %q %s", DN(rl.RawIssuer), why)
	}
	return nil
}

// StoredIncomplete says why a stored PEM list is not one to publish or to
// compare with (see Complete), or "".
func StoredIncomplete(pemText string) string {
	b, _ := pem.Decode([]byte(pemText))
	if b == nil {
		return "cannot be parsed"
	}
	rl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		return "cannot be parsed"
	}
	return crlscope.Incomplete(rl)
}

// KeyPair checks an outbound client certificate: PEM leaf (optionally followed
// by its chain) and the matching private key. It returns the leaf, the chain
// PEM as Envoy should present it, and the key's PEM block alone.
func KeyPair(certPEM, keyPEM []byte, now time.Time) (*x509.Certificate, []byte, []byte, error) {
	certs, err := certBlocks(certPEM, "the --cert file")
	if err != nil {
		return nil, nil, nil, err
	}
	var keyBlock *pem.Block
	rest := keyPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.Contains(b.Type, "PRIVATE KEY") {
			keyBlock = b
			break
		}
	}
	if keyBlock == nil {
		return nil, nil, nil, problem.Invalid("no_private_key", "the --key file holds no PEM private key (-----BEGIN PRIVATE KEY-----): pass the key generated with this certificate")
	}
	if keyBlock.Type == "ENCRYPTED PRIVATE KEY" || keyBlock.Headers["Proc-Type"] != "" {
		return nil, nil, nil, problem.Invalid("encrypted_key", "the --key file is passphrase-protected: decrypt it with `openssl pkey -in KEY -out KEY.plain.pem` and upload that (it is stored encrypted when the sidecar runs with --encryption-key-file)")
	}
	var chain []byte
	for _, c := range certs {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	keyOnly := pem.EncodeToMemory(&pem.Block{Type: keyBlock.Type, Bytes: keyBlock.Bytes})
	if _, err := tls.X509KeyPair(chain, keyOnly); err != nil {
		return nil, nil, nil, problem.Invalid("key_mismatch", "the private key does not match the certificate %q (%v): pass the key that was generated with this certificate", certs[0].Subject.String(), err)
	}
	leaf := certs[0]
	if now.After(leaf.NotAfter) {
		return nil, nil, nil, problem.Invalid("expired", "certificate %q expired on %s: upload a current certificate", leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if why := envoyRefusesKey(leaf); why != "" {
		return nil, nil, nil, problem.Invalid("unsupported_key", "certificate %q has %s, which Envoy refuses to load or present (it would reject the SDS secret and keep presenting the old certificate, or none): issue it with %s", leaf.Subject.String(), why, SupportedKeys)
	}
	return leaf, chain, keyOnly, nil
}

// StoredKeyUnsupported names the key of a stored outbound certificate
// (its chain's leaf) that Envoy refuses to load, or returns "". A store
// written before uploads were checked may hold one; a chain that cannot be
// parsed is not this check's to judge and gives "".
func StoredKeyUnsupported(chainPEM string) string {
	b, _ := pem.Decode([]byte(chainPEM))
	if b == nil {
		return ""
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return ""
	}
	return envoyRefusesKey(leaf)
}

// SupportedKeys says what an outbound certificate's key must be, for
// messages that ask for a new one.
const SupportedKeys = "an RSA key of 2048 bits or more, or an ECDSA P-256 key"

// envoyRefusesKey names a leaf key Envoy does not load as a TLS certificate,
// or returns "". Envoy's TLS context refuses RSA under 2048 bits, and ECDSA
// on a curve it has never supported; P-384 and P-521 pass here because later
// Envoy releases take them (an earlier one NACKs the secret, which the sidecar
// counts and logs). Any other key type (Ed25519) is refused too: Envoy's TLS
// certificates are RSA or ECDSA, and its default signature algorithms leave
// Ed25519 out, so an Envoy backend would never ask for such a certificate.
func envoyRefusesKey(leaf *x509.Certificate) string {
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fmt.Sprintf("a %d-bit RSA key", n)
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return "an ECDSA key on " + k.Curve.Params().Name
		}
	case ed25519.PublicKey:
		return "an Ed25519 key"
	default:
		return fmt.Sprintf("a %s key", leaf.PublicKeyAlgorithm)
	}
	return ""
}

// DN prints a distinguished name exactly as `openssl x509 -noout -subject
// -nameopt RFC2253` does (and so as the filter's x-mtls-* headers and
// certIssuerDN do), so what the CLI shows can be pasted into a policy.
func DN(raw []byte) string {
	s, err := dn.Format(raw)
	if err != nil {
		return "(unparseable name)"
	}
	return s
}
