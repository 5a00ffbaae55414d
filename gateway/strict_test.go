package gateway_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
)

// strictPluginConfig is policies/basic.json with chainVerification "envoy",
// the filter setting that goes with a listener that verifies.
func strictPluginConfig(t testing.TB) []byte {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(pluginConfig(t, false), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["policies"].([]any)[0].(map[string]any)["handler"].(map[string]any)["options"].(map[string]any)["chainVerification"] = "envoy"
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStrictListener runs envoy.yaml's strict variant in `mtlsgate dev`: the
// listener requires a certificate and verifies it against the sidecar's
// mtlsgate-client-ca validation context over SDS, and the filter, with
// chainVerification "envoy", checks revocation against the bundle.
func TestStrictListener(t *testing.T) {
	t.Run("default", func(t *testing.T) { testStrictListener(t, false) })
	t.Run("serve --sds-crls", func(t *testing.T) { testStrictListener(t, true) })
}

// testStrictListener: with sdsCRLs Envoy gets the CRLs as well and applies
// BoringSSL's rules, which refuse at the handshake a revoked client and
// every client whose issuer has no list.
func testStrictListener(t *testing.T, sdsCRLs bool) {
	cp := newClientPKI(t)
	revoked := testpki.Must(cp.root.Issue(testpki.Options{CommonName: "revoked client"}))
	direct := testpki.Must(cp.root.Issue(testpki.Options{CommonName: "direct client"}))
	crl := testpki.Must(cp.root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	selfSigned := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "self-signed client"}))

	sc := startSidecarWith(t, func(c *daemon.Config) { c.SDSCRLs = sdsCRLs })
	rootID := sc.addCA("client_root", cp.root)
	otherID := sc.addCA("other_root", cp.otherRoot)
	crlFile := filepath.Join(t.TempDir(), "root.crl")
	if err := os.WriteFile(crlFile, crl, 0o600); err != nil {
		t.Fatal(err)
	}
	sc.cli(nil, "crl", "create", "--cert-id", rootID, "--file", crlFile)

	sp := newServerPKI(t)
	up := newEchoUpstream(t, nil)
	g, _ := startGateway(t, gateway.Config{
		Wasm: filterWasm(t), PluginConfig: strictPluginConfig(t), Workers: 2,
		Certificate: sp.cert, Upstream: mustURL(t, up.srv.URL),
		Clusters: map[string]string{"mtlsgate_sidecar": "http://" + sc.addrs.Bundle},
		SDSAddr:  sc.addrs.SDS, ClientCASecret: "mtlsgate-client-ca",
	})
	select {
	case <-g.ClientCAReady():
	case <-time.After(10 * time.Second):
		t.Fatal("the validation context did not arrive over SDS")
	}

	// refused reports whether the handshake failed.
	refused := func(t *testing.T, cert *testpki.Cert, chain ...*testpki.Cert) (bool, reply) {
		t.Helper()
		c := client(sp, nil, false)
		if cert != nil {
			c = client(sp, keyPair(t, append([]*testpki.Cert{cert}, chain...)...), false)
		}
		resp, err := c.Get(gwURL(g, "/resource"))
		if err != nil {
			if !strings.Contains(err.Error(), "tls") && !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("request failed, but not in the handshake: %v", err)
			}
			return true, reply{}
		}
		return false, readReply(t, resp)
	}
	// The filter answers 503 until its first bundle arrives.
	eventually(t, 10*time.Second, "the filter's first bundle", func() (bool, string) {
		ok, r := refused(t, direct)
		return !ok && r.status != 503, string(r.body)
	})
	t.Run("no certificate", func(t *testing.T) {
		if ok, _ := refused(t, nil); !ok {
			t.Error("a client without a certificate completed the handshake")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		if ok, _ := refused(t, selfSigned); !ok {
			t.Error("a self-signed client certificate completed the handshake")
		}
	})
	t.Run("revoked certificate", func(t *testing.T) {
		ok, r := refused(t, revoked)
		if sdsCRLs {
			if !ok {
				t.Errorf("status %d: Envoy given the CRL completed the handshake of a revoked client", r.status)
			}
			return
		}
		if ok {
			t.Fatal("refused at the handshake: Envoy should have been given no CRL")
		}
		if r.status != 401 || r.problem(t).Reason != "REVOKED" {
			t.Errorf("status %d %s, want 401 REVOKED from the filter", r.status, r.body)
		}
	})
	for _, c := range []struct {
		name  string
		certs []*testpki.Cert
		// outage: refused at the handshake when Envoy has the CRLs, the
		// issuer having no list among them.
		outage bool
	}{
		{"client of a CA without a CRL", []*testpki.Cert{cp.stranger}, true},
		{"client of an intermediate", []*testpki.Cert{cp.good, cp.inter}, true},
		{"client of the CA that has the CRL", []*testpki.Cert{direct}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ok, r := refused(t, c.certs[0], c.certs[1:]...)
			if ok != (sdsCRLs && c.outage) {
				t.Fatalf("refused at the handshake: %v, want %v", ok, sdsCRLs && c.outage)
			}
			if sub, _ := r.hdr("x-user-sub"); !ok && (r.status != 200 || sub == "") {
				t.Errorf("status %d, x-user-sub %q: %s", r.status, sub, r.body)
			}
		})
	}
	if sdsCRLs {
		return
	}
	// Removing a CA ends its clients' access on the connection they hold,
	// once the filter's next bundle lacks it: Envoy verified them only at
	// the handshake.
	t.Run("removed CA", func(t *testing.T) {
		c := client(sp, keyPair(t, cp.stranger), false)
		conns := map[string]bool{}
		get := func() reply {
			var local string
			req, _ := http.NewRequest("GET", gwURL(g, "/resource"), nil)
			resp, err := c.Do(req.WithContext(withConnTrace(req.Context(), &local)))
			if err != nil {
				t.Fatal(err)
			}
			conns[local] = true
			return readReply(t, resp)
		}
		if r := get(); r.status != 200 {
			t.Fatalf("status %d before the removal: %s", r.status, r.body)
		}
		sc.cli(nil, "ca-certificate", "delete", "--cert-id", otherID)
		var r reply
		eventually(t, 10*time.Second, "the removal to reach the filter", func() (bool, string) {
			r = get()
			return r.status == 401, string(r.body)
		})
		if reason := r.problem(t).Reason; reason != "UNTRUSTED_CHAIN" {
			t.Errorf("reason %s, want UNTRUSTED_CHAIN", reason)
		}
		if len(conns) != 1 {
			t.Errorf("the requests used %d connections, want one kept alive throughout", len(conns))
		}
	})
}
