package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

type keyDoc struct {
	KeyFile, KeyID, PublicKey string
}

// bundleResponse GETs serve's bundle, with If-None-Match when inm is set.
func bundleResponse(t *testing.T, p *serveProc, inm string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.addrs.Bundle+"/v1/bundle", nil)
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// fetchBundle GETs the bundle with an optional If-None-Match and returns
// the status, the signature header and the body.
func fetchBundle(t *testing.T, p *serveProc, inm string) (int, string, []byte, string) {
	t.Helper()
	resp, body := bundleResponse(t, p, inm)
	if n := len(resp.Header.Values(bundle.SignatureHeader)); n > 1 {
		t.Fatalf("%d signature headers", n)
	}
	return resp.StatusCode, resp.Header.Get(bundle.SignatureHeader), body, resp.Header.Get("ETag")
}

// TestBundleSignedWithKey: a key made with `bundle-key create` signs every
// bundle serve hands out, the signature verifies with the public key the
// CLI printed, and a revalidation (304) carries none.
func TestBundleSignedWithKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "bundle-key.pem")
	r := runCLI(nil, "bundle-key", "create", "--out", keyFile, "--output", "json")
	if r.code != 0 {
		t.Fatalf("bundle-key create: exit %d: %s", r.code, r.stderr)
	}
	var created keyDoc
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.KeyFile != keyFile || created.KeyID == "" {
		t.Fatalf("bundle-key create --output json: %q: %v", r.stdout, err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	pub, _, err := bundle.ParsePublicKey([]byte(created.PublicKey))
	if err != nil {
		t.Fatalf("printed public key: %v", err)
	}

	// The default output is the PEM alone on stdout, ready to paste.
	r = runCLI(nil, "bundle-key", "public", "--key", keyFile)
	if r.code != 0 || r.stdout != created.PublicKey {
		t.Fatalf("bundle-key public: exit %d, stdout %q, want the PEM create printed %q; stderr %s", r.code, r.stdout, created.PublicKey, r.stderr)
	}
	before, _ := os.ReadFile(keyFile)
	r = runCLI(nil, "bundle-key", "create", "--out", keyFile)
	if after, _ := os.ReadFile(keyFile); r.code != 1 || string(after) != string(before) || !strings.Contains(r.stderr, "exists and is left as it is") {
		t.Fatalf("create over an existing key: exit %d, stderr %q, file replaced %v", r.code, r.stderr, string(after) != string(before))
	}
	if r := runCLI(nil, "bundle-key", "create"); r.code != 2 || !strings.Contains(r.stderr, "--out is required") {
		t.Errorf("create without --out: exit %d: %s", r.code, r.stderr)
	}

	p := startServe(t, t.TempDir(), "--bundle-signing-key", keyFile)
	// The log line follows the addresses serve prints on stdout.
	waitFor(t, "the ready log line naming the signing key "+created.KeyID, func() bool {
		return strings.Contains(p.stderr.String(), `"bundleSigningKey":"`+created.KeyID+`"`)
	})
	check := func(what string) string {
		t.Helper()
		status, sig, body, etag := fetchBundle(t, p, "")
		if status != 200 {
			t.Fatalf("%s: status %d", what, status)
		}
		if err := bundle.VerifySignature([]*ecdsa.PublicKey{pub}, body, sig); err != nil {
			t.Fatalf("%s: signature %q: %v", what, sig, err)
		}
		// Over the exact bytes: one changed byte fails.
		tampered := append([]byte(nil), body...)
		tampered[len(tampered)/2] ^= 1
		if bundle.VerifySignature([]*ecdsa.PublicKey{pub}, tampered, sig) == nil {
			t.Fatalf("%s: the signature also verifies a changed body", what)
		}
		if status, sig, body, _ := fetchBundle(t, p, etag); status != http.StatusNotModified || sig != "" || len(body) != 0 {
			t.Fatalf("%s: revalidation: status %d, signature %q, %d body bytes; want a bare 304", what, status, sig, len(body))
		}
		return etag
	}
	first := check("empty store")
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", "ca1", "--cert", writeFile(t, "ca.pem", root.PEM()))
	if check("after a CA upload") == first {
		t.Fatal("the bundle did not change with the upload")
	}

	// Without the flag nothing is signed.
	plain := startServe(t, t.TempDir())
	if _, sig, _, _ := fetchBundle(t, plain, ""); sig != "" {
		t.Errorf("serve without --bundle-signing-key sent a signature %q", sig)
	}
}

// TestBundleSigningKeyFromOpenSSL: a SEC1 key as `openssl ecparam -genkey`
// writes it (curve parameters first) is taken, and a key file others can
// read is used with a warning.
func TestBundleSigningKeyFromOpenSSL(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...)
	keyFile := filepath.Join(t.TempDir(), "ec.pem")
	if err := os.WriteFile(keyFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(nil, "bundle-key", "public", "--key", keyFile, "--output", "json")
	var doc keyDoc
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &doc) != nil {
		t.Fatalf("bundle-key public of a SEC1 key: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	pub, _, err := bundle.ParsePublicKey([]byte(doc.PublicKey))
	if err != nil || !pub.Equal(&k.PublicKey) {
		t.Fatalf("printed public key %q is not the key's: %v", doc.PublicKey, err)
	}
	p := startServe(t, t.TempDir(), "--bundle-signing-key", keyFile)
	waitFor(t, "a warning about the 0644 key file", func() bool {
		return strings.Contains(p.stderr.String(), "bundle signing key file can be read by other users") && strings.Contains(p.stderr.String(), "chmod 600 "+keyFile)
	})
	_, sig, body, _ := fetchBundle(t, p, "")
	if err := bundle.VerifySignature([]*ecdsa.PublicKey{pub}, body, sig); err != nil {
		t.Fatalf("signature: %v", err)
	}
}

// TestBundleSigningKeyRefused: serve does not start with a key file it
// cannot sign with, and says which file and what to do.
func TestBundleSigningKeyRefused(t *testing.T) {
	rsaCert := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.RSA2048}))
	p384 := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.P384}))
	ed := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.Ed25519}))
	p256 := testpki.Must(testpki.NewRoot(testpki.Options{Key: testpki.P256}))
	pubDER, _ := x509.MarshalPKIXPublicKey(p256.Key.Public())
	for _, c := range []struct {
		name string
		data []byte
		want []string
	}{
		{"rsa", rsaCert.KeyPEM(), []string{"an RSA key", "ECDSA P-256 only", "bundle-key create"}},
		{"p384", p384.KeyPEM(), []string{"ECDSA P-384 key", "ECDSA P-256 only"}},
		{"ed25519", ed.KeyPEM(), []string{"an Ed25519 key"}},
		{"garbage", []byte("not a key\n"), []string{"no PEM private key", "bundle-key create --out FILE"}},
		{"certificate", p256.PEM(), []string{`PEM block "CERTIFICATE" is not a private key`}},
		{"public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), []string{`"PUBLIC KEY" is not a private key`}},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}), []string{"encrypted", "openssl pkey"}},
		{"broken", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}}), []string{"cannot parse the ec private key"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			keyFile := writeFile(t, "key.pem", c.data)
			_, err := tryServe(t, t.TempDir(), "--bundle-signing-key", keyFile)
			if err == nil {
				t.Fatal("serve started")
			}
			for _, w := range append([]string{"--bundle-signing-key " + keyFile}, c.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if c.name == "rsa" {
				r := runCLI(nil, "bundle-key", "public", "--key", keyFile, "--output", "json")
				if r.code != 1 || !strings.Contains(r.stdout, `"error"`) || !strings.Contains(r.stderr, "ECDSA P-256 only") {
					t.Errorf("bundle-key public of an RSA key: exit %d, %s %s", r.code, r.stdout, r.stderr)
				}
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "absent.pem")
	if _, err := tryServe(t, t.TempDir(), "--bundle-signing-key", missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing key file: %v", err)
	}
}
