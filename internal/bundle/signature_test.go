package bundle

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func publicPEM(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestSignatureVerifies(t *testing.T) {
	oldKey, newKey, otherKey := newKey(t), newKey(t), newKey(t)
	body := []byte(`{"format":1,"version":"v"}`)
	sig, err := Sign(newKey, body)
	if err != nil {
		t.Fatal(err)
	}
	// Rotation: any listed key that made the signature will do.
	if err := VerifySignature([]*ecdsa.PublicKey{&oldKey.PublicKey, &newKey.PublicKey}, body, sig); err != nil {
		t.Fatalf("signature by the second listed key: %v", err)
	}
	if err := VerifySignature([]*ecdsa.PublicKey{&oldKey.PublicKey}, body, sig); err == nil || !strings.Contains(err.Error(), "any of the 1 listed") {
		t.Errorf("signature by an unlisted key: %v", err)
	}
	other, _ := Sign(otherKey, body)
	if VerifySignature([]*ecdsa.PublicKey{&newKey.PublicKey}, body, other) == nil {
		t.Error("another key's signature verified")
	}
	if VerifySignature([]*ecdsa.PublicKey{&newKey.PublicKey}, append(body, ' '), sig) == nil {
		t.Error("the signature verified a body with one more byte")
	}
	if err := VerifySignature([]*ecdsa.PublicKey{&newKey.PublicKey}, body, ""); !errors.Is(err, ErrUnsigned) {
		t.Errorf("no signature: %v", err)
	}
	if err := VerifySignature([]*ecdsa.PublicKey{&newKey.PublicKey}, body, "%%%"); err == nil || !strings.Contains(err.Error(), "not base64") {
		t.Errorf("garbage signature: %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(sig)
	if VerifySignature([]*ecdsa.PublicKey{&newKey.PublicKey}, body, base64.StdEncoding.EncodeToString(raw[:len(raw)-1])) == nil {
		t.Error("a truncated signature verified")
	}
}

func TestParsePublicKey(t *testing.T) {
	k := newKey(t)
	got, _, err := ParsePublicKey(publicPEM(t, &k.PublicKey))
	if err != nil || !got.Equal(&k.PublicKey) {
		t.Fatalf("P-256 key: %v", err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"rsa", publicPEM(t, rsaKey.Public()), "key type RSA"},
		{"p384", publicPEM(t, p384.Public()), "ECDSA P-384"},
		{"ed25519", publicPEM(t, edPub), "Ed25519"},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "never the private key"},
		{"not pem", []byte("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"), "not PEM"},
		{"two keys", append(publicPEM(t, &k.PublicKey), publicPEM(t, &k.PublicKey)...), "more than one PEM block"},
		{"broken", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}), "cannot parse"},
	} {
		if _, _, err := ParsePublicKey(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestKeySetID(t *testing.T) {
	a, b := newKey(t), newKey(t)
	_, da, _ := ParsePublicKey(publicPEM(t, &a.PublicKey))
	_, db, _ := ParsePublicKey(publicPEM(t, &b.PublicKey))
	ab := KeySetID([][]byte{da, db})
	if ab != KeySetID([][]byte{da, db}) {
		t.Error("the list's name is not stable")
	}
	if ab == KeySetID([][]byte{da}) || ab == KeySetID([][]byte{db}) || len(ab) != 16 {
		t.Errorf("set names: %s vs %s", ab, KeySetID([][]byte{da}))
	}
}
