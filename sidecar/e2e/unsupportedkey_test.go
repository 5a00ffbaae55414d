package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// TestUnsupportedKeyFromAnOlderStoreIsWithheld: uploads refuse a key Envoy
// cannot load, but a store written before that check may hold one. Sent
// over SDS it would be NACKed, and with it every other secret of the same
// answer (here the validation context), while Envoy kept presenting what it
// had. serve withholds it instead, says so in the log once, in the metrics
// and in list/describe, and serves the certificate as soon as a supported
// key replaces it.
func TestUnsupportedKeyFromAnOlderStoreIsWithheld(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	cert, key, _ := outboundFiles(t, "fresh")
	var fresh api.MTLSCertificate
	p.runJSON(t, &fresh, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "fresh_client", "--environment-type", "development")
	p.stop()

	// What an older sidecar stored: an RSA-1024 certificate, enabled.
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Legacy Root"}))
	leaf := testpki.Must(root.Issue(testpki.Options{CommonName: "legacy client", Signer: weak}))
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := s.CreateOutbound(store.Outbound{Name: "legacy_client", ChainPEM: string(leaf.PEM()), KeyPEM: leaf.KeyPEM(),
		Subject: "CN=legacy client", Fingerprint: "legacy", NotBefore: leaf.Cert.NotBefore, NotAfter: leaf.Cert.NotAfter,
		EnvironmentTypes: []string{"development"}, Enabled: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	p = startServe(t, dir)
	warning := func() int {
		n := 0
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(l, "mTLS certificate withheld from Envoy") && strings.Contains(l, legacy.ID) &&
				strings.Contains(l, "a 1024-bit RSA key") && strings.Contains(l, "mtls-certificate update --cert-id "+legacy.ID) {
				n++
			}
		}
		return n
	}
	if warning() != 1 {
		t.Fatalf("no start-up warning naming %s and what to do:\n%s", legacy.ID, p.stderr.String())
	}
	c := newSotW(t, p.addrs.SDS, "envoy", "edge", sds.ClientCASecret, "fresh_client", "legacy_client")
	first := c.next("initial")
	if first.secrets["legacy_client"] != nil || first.secrets["fresh_client"] == nil || first.secrets[sds.ClientCASecret] == nil {
		t.Fatalf("first answer carries %v; want the validation context and fresh_client, not legacy_client", keys(first.secrets))
	}
	if m := metricsText(t, p); !strings.Contains(m, "mtlsgate_mtls_certificates_withheld 1") || !strings.Contains(m, "mtlsgate_mtls_certificates_served 1") {
		t.Errorf("metrics do not count the withheld certificate:\n%s", m)
	}
	var got api.MTLSCertificate
	p.runJSON(t, &got, "mtls-certificate", "describe", "--cert-id", legacy.ID)
	if got.Served || got.UnsupportedKey != "a 1024-bit RSA key" || !got.Enabled {
		t.Errorf("describe --output json: %+v", got)
	}
	if r := p.run("mtls-certificate", "describe", "--cert-id", legacy.ID); !strings.Contains(r.stdout, "no (unsupported key)") || !strings.Contains(r.stdout, "mtls-certificate update --cert-id "+legacy.ID) {
		t.Errorf("describe:\n%s%s", r.stdout, r.stderr)
	}
	if r := p.run("mtls-certificate", "list"); !strings.Contains(r.stdout, "no (unsupported key)") {
		t.Errorf("list:\n%s%s", r.stdout, r.stderr)
	}
	// Other changes publish again; the warning is not repeated for them.
	p.runJSON(t, &fresh, "mtls-certificate", "disable", "--cert-id", fresh.ID)
	c.never("legacy_client", time.Second, func(x push) bool { return x.secrets["legacy_client"] != nil })
	if n := warning(); n != 1 {
		t.Errorf("warning logged %d times, want once", n)
	}

	// A supported key replaces it in place: served, counted, no longer flagged.
	cert2, key2, _ := outboundFiles(t, "legacy")
	p.runJSON(t, &got, "mtls-certificate", "update", "--cert-id", legacy.ID, "--cert", cert2, "--key", key2)
	if !got.Served || got.UnsupportedKey != "" {
		t.Errorf("after the update: %+v", got)
	}
	c.until("legacy_client with its new key", func(x push) bool { return x.secrets["legacy_client"] != nil })
	if m := metricsText(t, p); !strings.Contains(m, "mtlsgate_mtls_certificates_withheld 0") {
		t.Errorf("metrics after the update:\n%s", m)
	}
}
