package bundle

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// SignatureHeader is the response header of GET /v1/bundle that carries the
// sidecar's signature over the exact body bytes: standard base64 of an
// ASN.1 DER ECDSA P-256 signature over the body's SHA-256. It is a header
// rather than a field of the document so that what is signed is the bytes as
// they came off the wire, with no canonical form to agree on, and a bundle
// keeps one format whether or not it is signed.
const SignatureHeader = "x-mtlsgate-bundle-signature"

// ErrUnsigned is returned by VerifySignature for a response without a
// signature.
var ErrUnsigned = errors.New("unsigned")

// ParsePublicKey reads one PEM "PUBLIC KEY" block (SubjectPublicKeyInfo)
// holding an ECDSA P-256 key, the only kind bundles are signed with: one
// algorithm means a verifier never has to decide which one a signature
// claims. It returns the key's DER too, for KeySetID.
func ParsePublicKey(data []byte) (key *ecdsa.PublicKey, spki []byte, err error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("not PEM: give the text `mtlsgate bundle-key public` prints, from -----BEGIN PUBLIC KEY----- to -----END PUBLIC KEY-----")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, nil, errors.New("more than one PEM block: give each public key as its own list entry")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, nil, fmt.Errorf("PEM block %q is not a PUBLIC KEY: give the public key `mtlsgate bundle-key public --key FILE` prints, never the private key", block.Type)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot parse the public key: %v", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, nil, fmt.Errorf("key type %s: bundle signatures are ECDSA P-256 only; make a key with `mtlsgate bundle-key create`", keyKind(k))
	}
	return ek, block.Bytes, nil
}

func keyKind(k any) string {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k)
}

// KeySetID names a list of public keys, given as their SubjectPublicKeyInfo
// DER (ParsePublicKey returns it): the first 16 hex digits of the SHA-256
// over the encodings in the order given. Filters that verify with different
// keys must not share fetched bundles (see the filter's shared-data keys);
// two that list the same keys in another order merely poll separately.
// DER is unique for a key, and taking the bytes already at hand keeps an
// encoder out of the filter's module.
func KeySetID(spkis [][]byte) string {
	h := sha256.New()
	for _, d := range spkis {
		h.Write([]byte{byte(len(d) >> 8), byte(len(d))})
		h.Write(d)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Sign returns the SignatureHeader value for body.
func Sign(key *ecdsa.PrivateKey, body []byte) (string, error) {
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign the bundle: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// VerifySignature checks header, a SignatureHeader value ("" when the
// response had none), over body against keys: it is good when any one of
// them made it, so a key is rotated by listing the old and the new one
// together for a while.
func VerifySignature(keys []*ecdsa.PublicKey, body []byte, header string) error {
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrUnsigned
	}
	sig, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return fmt.Errorf("the %s header is not base64: %v", SignatureHeader, err)
	}
	sum := sha256.Sum256(body)
	for _, k := range keys {
		if ecdsa.VerifyASN1(k, sum[:], sig) {
			return nil
		}
	}
	return fmt.Errorf("the %s header does not verify with any of the %d listed public keys", SignatureHeader, len(keys))
}
