package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func der(t *testing.T, k any) []byte {
	t.Helper()
	d, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func pubKeyJSON(t *testing.T, k any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	return string(b)
}

func TestTrustBundlePublicKeys(t *testing.T) {
	a, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pa, pb := pubKeyJSON(t, &a.PublicKey), pubKeyJSON(t, &b.PublicKey)
	conf := func(tb string) string { return `{"policies":[` + policyJSON("a", "") + `],"trustBundle":` + tb + `}` }

	cfg, err := ParseConfig([]byte(conf(`{"cluster":"s","publicKeys":[` + pa + `,` + pb + `]}`)))
	if err != nil {
		t.Fatal(err)
	}
	src := cfg.TrustBundle.Sidecar
	if len(src.PublicKeys) != 2 || !src.PublicKeys[0].Equal(&a.PublicKey) || !src.PublicKeys[1].Equal(&b.PublicKey) ||
		src.KeySetID != bundle.KeySetID([][]byte{der(t, &a.PublicKey), der(t, &b.PublicKey)}) {
		t.Fatalf("parsed source %+v", src)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
	cfg, err = ParseConfig([]byte(conf(`{"cluster":"s"}`)))
	if err != nil || cfg.TrustBundle.Sidecar.PublicKeys != nil || cfg.TrustBundle.Sidecar.KeySetID != "" {
		t.Fatalf("without publicKeys: %v %+v", err, cfg.TrustBundle.Sidecar)
	}

	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	inline := strings.TrimSuffix(inlineBundle([]*testpki.Cert{root}), "}")
	privDER, _ := x509.MarshalPKCS8PrivateKey(a)
	priv, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})))
	for _, c := range []struct{ tb, path, want string }{
		{inline + `,"publicKeys":[` + pa + `]}`, "trustBundle.publicKeys", "needs no signature"},
		{`{"publicKeys":[` + pa + `]}`, "trustBundle.publicKeys", "needs cluster"},
		{`{"cluster":"s","publicKeys":[]}`, "trustBundle.publicKeys", "non-empty array"},
		{`{"cluster":"s","publicKeys":` + pa + `}`, "trustBundle.publicKeys", "non-empty array"},
		{`{"cluster":"s","publicKeys":[` + pa + `,7]}`, "trustBundle.publicKeys[1]", "must be a string"},
		{`{"cluster":"s","publicKeys":["not a key"]}`, "trustBundle.publicKeys[0]", "not PEM"},
		{`{"cluster":"s","publicKeys":[` + pubKeyJSON(t, &p384.PublicKey) + `]}`, "trustBundle.publicKeys[0]", "ECDSA P-384"},
		{`{"cluster":"s","publicKeys":[` + string(priv) + `]}`, "trustBundle.publicKeys[0]", "never the private key"},
		{`{"cluster":"s","publicKeys":[` + pa + `,` + pb + `,` + pa + `]}`, "trustBundle.publicKeys[2]", "same key"},
		{`{"cluster":"s","publicKeys":[` + pa + `],"caCertificates":[]}`, "trustBundle", "mixes"},
	} {
		_, err := ParseConfig([]byte(conf(c.tb)))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Path != c.path || !strings.Contains(ce.Msg, c.want) {
			t.Errorf("%.80s...: err = %v, want a ConfigError at %s saying %q", c.tb, err, c.path, c.want)
		}
	}
}
