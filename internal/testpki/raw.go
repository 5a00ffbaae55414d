package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"time"
)

// ECDSAWithSHA256 is the signature algorithm Signed writes.
var ECDSAWithSHA256 = pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}

// Signed DER-encodes tbs and wraps it with an ECDSA-SHA256 signature by
// signer's key, the shape shared by certificates and CRLs, for structures
// crypto/x509 will not produce (version 1 certificates, CRLs without
// nextUpdate or with hand-made extensions).
func Signed(signer *Cert, tbs any) ([]byte, error) {
	if _, ok := signer.Key.(*ecdsa.PrivateKey); !ok {
		return nil, errors.New("testpki.Signed needs an ECDSA signer")
	}
	der, err := asn1.Marshal(tbs)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(der)
	sig, err := signer.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: der}, ECDSAWithSHA256, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}

// NewVersion1 builds a version 1 certificate (no extensions, so no
// basicConstraints) with a P-256 key, self-signed when issuer is nil, valid
// from an hour ago for a year. The returned Cert reports IsCA so that it can
// issue certificates through Issue; its DER is the real version 1 encoding.
func NewVersion1(cn string, issuer *Cert) (*Cert, error) {
	key, err := NewKey(P256)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	name, err := asn1.Marshal(pkix.Name{CommonName: cn}.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	signer, issuerName := &Cert{Key: key}, name
	if issuer != nil {
		signer, issuerName = issuer, issuer.Cert.RawSubject
	}
	now := time.Now()
	type validity struct{ NotBefore, NotAfter time.Time }
	der, err := Signed(signer, struct {
		Serial    *big.Int
		Signature pkix.AlgorithmIdentifier
		Issuer    asn1.RawValue
		Validity  validity
		Subject   asn1.RawValue
		PublicKey asn1.RawValue
	}{big.NewInt(now.UnixNano()), ECDSAWithSHA256, asn1.RawValue{FullBytes: issuerName},
		validity{now.Add(-time.Hour).UTC().Truncate(time.Second), now.Add(365 * 24 * time.Hour).UTC().Truncate(time.Second)},
		asn1.RawValue{FullBytes: name}, asn1.RawValue{FullBytes: spki}})
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if c.Version != 1 || c.BasicConstraintsValid {
		return nil, errors.New("testpki.NewVersion1 made a certificate with extensions")
	}
	asCA := *c
	asCA.IsCA = true
	return &Cert{Cert: &asCA, DER: der, Key: key}, nil
}

// CRLWithoutNextUpdate is a PEM CRL signed by c (an ECDSA CA) that has no
// nextUpdate, which crypto/x509 always writes: thisUpdate as given, the
// revoked certificates listed, no extensions.
func (c *Cert) CRLWithoutNextUpdate(thisUpdate time.Time, revoked ...*Cert) ([]byte, error) {
	return c.RawCRL(thisUpdate, time.Time{}, revoked...)
}

// RawCRL is a PEM CRL signed by c (an ECDSA CA) as crypto/x509 will not
// write one: without extensions, nextUpdate omitted when zero, and whether
// or not c may sign CRLs (a v1 root has no key usage at all).
func (c *Cert) RawCRL(thisUpdate, nextUpdate time.Time, revoked ...*Cert) ([]byte, error) {
	type entry struct {
		Serial *big.Int
		Date   time.Time
	}
	type tbs struct {
		Version    int // 1: v2, which crypto/x509 requires
		Signature  pkix.AlgorithmIdentifier
		Issuer     asn1.RawValue
		ThisUpdate time.Time
		NextUpdate time.Time `asn1:"optional"`
		Revoked    []entry   `asn1:"optional"`
	}
	v := tbs{Version: 1, Signature: ECDSAWithSHA256, Issuer: asn1.RawValue{FullBytes: c.Cert.RawSubject},
		ThisUpdate: thisUpdate.UTC().Truncate(time.Second), NextUpdate: nextUpdate.UTC().Truncate(time.Second)}
	for _, r := range revoked {
		v.Revoked = append(v.Revoked, entry{r.Cert.SerialNumber, v.ThisUpdate})
	}
	der, err := Signed(c, v)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}
