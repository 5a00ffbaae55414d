// Package testpki generates throwaway certificate hierarchies for tests,
// benchmarks and the local development gateway: roots, intermediates, leaves
// and CRLs with the key type, validity, key usage and names a case needs.
//
// Typical use:
//
//	root := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.P256}))
//	inter := testpki.Must(root.Issue(testpki.Options{CA: true}))
//	leaf := testpki.Must(inter.Issue(testpki.Options{CommonName: "client-1"}))
//	chainPEM := testpki.PEM(leaf, inter)
//	crlPEM := testpki.Must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}}))
//
// Nothing here is suitable for production keys: keys live in memory and the
// defaults favour convenience (long validity, clientAuth EKU on leaves).
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// KeyType selects the key algorithm of a generated certificate.
type KeyType int

const (
	// P256 is ECDSA on NIST P-256, the default: fast to generate and small.
	P256 KeyType = iota
	RSA2048
	RSA4096
	P384
	Ed25519
)

func (k KeyType) String() string {
	switch k {
	case P256:
		return "P-256"
	case P384:
		return "P-384"
	case RSA2048:
		return "RSA-2048"
	case RSA4096:
		return "RSA-4096"
	case Ed25519:
		return "Ed25519"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// Options describe one certificate. The zero value is valid: a P-256 key, a
// generated common name, valid from one hour ago for one year.
type Options struct {
	Key KeyType
	// Signer, when set, is used instead of generating a key (reuse a slow
	// RSA-4096 key across certificates, or present a known key).
	Signer crypto.Signer

	// CommonName and Subject set the subject; CommonName overrides
	// Subject.CommonName. RawSubject, when set, is the DER of the whole subject
	// RDNSequence and wins over both (for DNs pkix.Name cannot express, such as
	// multi-valued RDNs in a chosen order).
	CommonName string
	Subject    pkix.Name
	RawSubject []byte

	NotBefore time.Time // default: now - 1h
	NotAfter  time.Time // default: NotBefore + 1 year

	// CA marks an issuing certificate (root or intermediate). MaxPathLen -1
	// means unlimited; 0 (default) on an intermediate means it may only sign
	// leaves when MaxPathLenZero is set, otherwise unlimited.
	CA             bool
	MaxPathLen     int
	MaxPathLenZero bool

	// KeyUsage and ExtKeyUsage default to digitalSignature + clientAuth for
	// leaves and certSign + CRLSign for CAs. NoExtKeyUsage omits the EKU
	// extension entirely on a leaf.
	KeyUsage      x509.KeyUsage
	ExtKeyUsage   []x509.ExtKeyUsage
	NoExtKeyUsage bool

	DNSNames       []string
	URIs           []string
	EmailAddresses []string

	// Serial defaults to a process-unique increasing number.
	Serial *big.Int
	// ExtraExtensions are added verbatim (e.g. a large blob to test size limits).
	ExtraExtensions []pkix.Extension
	// CRLDistributionPoints are cRLDistributionPoints URIs.
	CRLDistributionPoints []string
}

// Cert is a generated certificate with its key and issuer.
type Cert struct {
	Cert   *x509.Certificate
	DER    []byte
	Key    crypto.Signer
	Issuer *Cert // nil for a self-signed root
}

// PEM returns the certificate as one PEM block.
func (c *Cert) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
}

// KeyPEM returns the private key as a PKCS#8 PEM block.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		// Every key type this package generates is PKCS#8 encodable.
		panic(fmt.Sprintf("testpki: encode key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PEM concatenates the certificates' PEM blocks in the given order (leaf first
// for a presented chain).
func PEM(certs ...*Cert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.PEM()...)
	}
	return out
}

// Must panics on error; for tests and benchmarks where a failure to generate
// test material is a bug in the test.
func Must[T any](v T, err error) T {
	if err != nil {
		panic("testpki: " + err.Error())
	}
	return v
}

var serialCounter atomic.Int64

func init() { serialCounter.Store(time.Now().UnixNano() & 0xffffffffff) }

// NewKey generates a key of the given type.
func NewKey(k KeyType) (crypto.Signer, error) {
	switch k {
	case P256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case P384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("unknown key type %d", int(k))
}

// NewRoot creates a self-signed root CA. CA is implied.
func NewRoot(o Options) (*Cert, error) {
	o.CA = true
	return issue(nil, o)
}

// Issue signs a new certificate with c. Set o.CA for an intermediate.
func (c *Cert) Issue(o Options) (*Cert, error) {
	if c == nil || !c.Cert.IsCA {
		return nil, errors.New("issuer is not a CA certificate")
	}
	return issue(c, o)
}

func issue(parent *Cert, o Options) (*Cert, error) {
	key := o.Signer
	if key == nil {
		var err error
		if key, err = NewKey(o.Key); err != nil {
			return nil, fmt.Errorf("generate %s key: %w", o.Key, err)
		}
	}
	serial := o.Serial
	if serial == nil {
		serial = big.NewInt(serialCounter.Add(1))
	}
	subject := o.Subject
	if o.CommonName != "" {
		subject.CommonName = o.CommonName
	}
	if subject.CommonName == "" && len(subject.Names) == 0 && len(subject.ExtraNames) == 0 && o.RawSubject == nil {
		kind := "leaf"
		if o.CA {
			kind = "ca"
		}
		subject.CommonName = fmt.Sprintf("testpki %s %s", kind, serial.Text(16))
	}
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour).Truncate(time.Second)
	}
	na := o.NotAfter
	if na.IsZero() {
		na = nb.Add(365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		RawSubject:            o.RawSubject,
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  o.CA,
		DNSNames:              o.DNSNames,
		EmailAddresses:        o.EmailAddresses,
		ExtraExtensions:       o.ExtraExtensions,
		CRLDistributionPoints: o.CRLDistributionPoints,
		KeyUsage:              o.KeyUsage,
		ExtKeyUsage:           o.ExtKeyUsage,
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("URI SAN %q: %w", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if o.CA {
		if tmpl.KeyUsage == 0 {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		}
		tmpl.MaxPathLen = o.MaxPathLen
		tmpl.MaxPathLenZero = o.MaxPathLenZero
		if o.MaxPathLen == 0 && !o.MaxPathLenZero {
			tmpl.MaxPathLen = -1
		}
	} else {
		if tmpl.KeyUsage == 0 {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			if _, ok := key.Public().(*rsa.PublicKey); ok {
				tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
			}
		}
		if tmpl.ExtKeyUsage == nil && !o.NoExtKeyUsage {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
	}
	signer, issuerCert := key, tmpl
	if parent != nil {
		signer, issuerCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse generated certificate: %w", err)
	}
	return &Cert{Cert: cert, DER: der, Key: key, Issuer: parent}, nil
}

// CRLOptions describe a revocation list signed by a CA.
type CRLOptions struct {
	Revoked        []*Cert    // certificates to list as revoked
	RevokedSerials []*big.Int // extra serials, e.g. of certificates not generated here
	ThisUpdate     time.Time  // default: now - 1h
	NextUpdate     time.Time  // default: ThisUpdate + 7 days; set in the past for a stale list
	Number         *big.Int   // default: 1
}

// CRL returns a PEM "X509 CRL" block signed by c.
func (c *Cert) CRL(o CRLOptions) ([]byte, error) {
	der, err := c.CRLDER(o)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// CRLDER is CRL in DER form.
func (c *Cert) CRLDER(o CRLOptions) ([]byte, error) {
	if c == nil || !c.Cert.IsCA {
		return nil, errors.New("CRL issuer is not a CA certificate")
	}
	tu := o.ThisUpdate
	if tu.IsZero() {
		tu = time.Now().Add(-time.Hour).Truncate(time.Second)
	}
	nu := o.NextUpdate
	if nu.IsZero() {
		nu = tu.Add(7 * 24 * time.Hour)
	}
	num := o.Number
	if num == nil {
		num = big.NewInt(1)
	}
	tmpl := &x509.RevocationList{ThisUpdate: tu, NextUpdate: nu, Number: num}
	for _, r := range o.Revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: r.Cert.SerialNumber, RevocationTime: tu})
	}
	for _, s := range o.RevokedSerials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: s, RevocationTime: tu})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	return der, nil
}

// Chain is a ready-made hierarchy: Root signs Intermediates[0], each
// intermediate signs the next, the last one (or Root) signs Leaf.
type Chain struct {
	Root          *Cert
	Intermediates []*Cert // nearest to the root first
	Leaf          *Cert
}

// NewChain builds a hierarchy of the given depth (certificates including root
// and leaf; 2 = root → leaf, 3 = root → intermediate → leaf), all with key
// type k. leaf customises the leaf (its Key and CA fields are ignored; set
// leaf.Signer for a different key).
func NewChain(k KeyType, depth int, leaf Options) (*Chain, error) {
	if depth < 2 {
		return nil, fmt.Errorf("chain depth %d: need at least 2 (root and leaf)", depth)
	}
	root, err := NewRoot(Options{Key: k, CommonName: "testpki root " + k.String()})
	if err != nil {
		return nil, err
	}
	ch := &Chain{Root: root}
	issuer := root
	for i := 0; i < depth-2; i++ {
		inter, err := issuer.Issue(Options{Key: k, CA: true, CommonName: fmt.Sprintf("testpki intermediate %d %s", i+1, k)})
		if err != nil {
			return nil, err
		}
		ch.Intermediates = append(ch.Intermediates, inter)
		issuer = inter
	}
	leaf.Key = k
	leaf.CA = false
	if ch.Leaf, err = issuer.Issue(leaf); err != nil {
		return nil, err
	}
	return ch, nil
}

// Presented returns what a client sends: the leaf then the intermediates,
// nearest to the leaf first, as concatenated PEM.
func (ch *Chain) Presented() []byte {
	out := ch.Leaf.PEM()
	for i := len(ch.Intermediates) - 1; i >= 0; i-- {
		out = append(out, ch.Intermediates[i].PEM()...)
	}
	return out
}

// Issuer returns the certificate that signed the leaf.
func (ch *Chain) Issuer() *Cert { return ch.Leaf.Issuer }

// SiblingLeaves returns n distinct client certificates from the chain's
// issuer, the chain's own leaf first. They share the leaf's key: that keeps
// RSA-4096 pools fast to build, while serial, subject and signature all
// differ, which is what a verifier and a verdict cache see.
func (ch *Chain) SiblingLeaves(n int) ([]*Cert, error) {
	out := []*Cert{ch.Leaf}
	for i := 1; i < n; i++ {
		l, err := ch.Issuer().Issue(Options{Signer: ch.Leaf.Key, CommonName: ch.Leaf.Cert.Subject.CommonName + " " + strconv.Itoa(i),
			DNSNames: ch.Leaf.Cert.DNSNames})
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}
