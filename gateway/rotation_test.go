package gateway_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestOutboundCertificateUpdatedInPlace: `mtlsgate mtls-certificate update`
// against a real sidecar replaces the certificate behind the secret name the
// gateway subscribes to, and the upstream, which requires a client
// certificate, sees the new one without the gateway being touched.
func TestOutboundCertificateUpdatedInPlace(t *testing.T) {
	sc := startSidecar(t)
	sp, cp := newServerPKI(t), newClientPKI(t)
	sc.addCA("client_root", cp.root)
	be := newBackend(t)
	dir := t.TempDir()
	files := func(c *testpki.Cert, name string) (cert, key string) {
		cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		if err := writeFile(cert, c.PEM()); err != nil {
			t.Fatal(err)
		}
		if err := writeFile(key, c.KeyPEM()); err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	cert1, key1 := files(testpki.Must(be.ca.Issue(testpki.Options{CommonName: "gateway outbound 1"})), "one")
	cert2, key2 := files(testpki.Must(be.ca.Issue(testpki.Options{CommonName: "gateway outbound 2"})), "two")
	var created struct{ ID string }
	sc.cli(&created, "mtls-certificate", "create", "--name", "backend_client_cert", "--cert", cert1, "--key", key1, "--environment-type", "development")

	g, _ := startGateway(t, gateway.Config{
		Wasm: filterWasm(t), PluginConfig: pluginConfig(t, false), Workers: 1,
		Certificate: sp.cert, Upstream: mustURL(t, be.url()), UpstreamCAs: be.pool,
		Clusters: map[string]string{"mtlsgate_sidecar": "http://" + sc.addrs.Bundle},
		SDSAddr:  sc.addrs.SDS, UpstreamMTLSCert: "backend_client_cert", NodeID: "rotation-in-place",
	})
	select {
	case <-g.SDSReady():
	case <-time.After(20 * time.Second):
		t.Fatal("no SDS secret within 20s")
	}
	c := client(sp, keyPair(t, cp.good, cp.inter), false)
	presented := func() (string, string) {
		r := do(t, c, "GET", gwURL(g, "/rotate"), nil, nil)
		if r.status != 200 || r.echo == nil {
			return "", fmt.Sprintf("status %d: %s", r.status, r.body)
		}
		return r.echo.GatewayCert, r.echo.GatewayCert
	}
	// Polled only until the filter has its first trust bundle.
	eventually(t, 20*time.Second, "upstream sees certificate 1", func() (bool, string) {
		got, msg := presented()
		return got == "CN=gateway outbound 1", msg
	})
	v1 := g.SDSVersion()

	var updated struct{ ID, Name, Sha256Fingerprint string }
	sc.cli(&updated, "mtls-certificate", "update", "--cert-id", created.ID, "--cert", cert2, "--key", key2)
	if updated.ID != created.ID || updated.Name != "backend_client_cert" {
		t.Fatalf("update answered %+v", updated)
	}
	eventually(t, 20*time.Second, "upstream sees certificate 2", func() (bool, string) {
		got, msg := presented()
		return got == "CN=gateway outbound 2", msg
	})
	if g.SDSVersion() == v1 {
		t.Errorf("the gateway presents the new certificate but its SDS version did not move from %s", v1)
	}
	// Settled: every later request presents certificate 2.
	for i := 0; i < 3; i++ {
		if got, msg := presented(); got != "CN=gateway outbound 2" {
			t.Fatalf("request %d after the rotation: %s", i, msg)
		}
	}
	// Still one subscription, to the same name: nothing was re-pointed.
	var list []struct {
		ID          string
		Subscribers []struct{ NodeID string }
	}
	sc.cli(&list, "mtls-certificate", "list")
	if len(list) != 1 || list[0].ID != created.ID || len(list[0].Subscribers) != 1 || list[0].Subscribers[0].NodeID != "rotation-in-place" {
		t.Errorf("after the rotation the sidecar lists %+v", list)
	}
}
