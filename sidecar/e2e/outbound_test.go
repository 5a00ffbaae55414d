package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

func outboundFiles(t *testing.T, name string) (cert, key string, c *testpki.Chain) {
	t.Helper()
	c = testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: name}))
	// Leaf followed by its intermediate: the chain must be kept.
	cert = writeFile(t, name+".pem", testpki.PEM(c.Leaf, c.Issuer()))
	key = writeFile(t, name+".key", c.Leaf.KeyPEM())
	return cert, key, c
}

// TestOutboundRotation walks the documented rotation order with real SDS
// clients (one state-of-the-world, one delta) that switch their subscription
// the way a redeployed Envoy does.
func TestOutboundRotation(t *testing.T) {
	p := startServe(t, t.TempDir())

	oldCert, oldKey, oldChain := outboundFiles(t, "backend-old")
	var old api.MTLSCertificate
	p.runJSON(t, &old, "mtls-certificate", "create", "--cert", oldCert, "--key", oldKey, "--name", "backend_v1",
		"--environment-type", "development", "--environment-type", "production")
	if !strings.HasPrefix(old.ID, "mtlscert_") || !old.Enabled || !old.Served {
		t.Fatalf("created %+v", old)
	}

	sotw := newSotW(t, p.addrs.SDS, "envoy-1", "payments", "backend_v1")
	delta := newDelta(t, p.addrs.SDS, "envoy-2", "orders", "backend_v1")
	for _, c := range []*sdsClient{sotw, delta} {
		got := c.next("initial outbound secret")
		tc := got.secrets["backend_v1"].GetTlsCertificate()
		if tc.GetCertificateChain().GetInlineString() != string(testpki.PEM(oldChain.Leaf, oldChain.Issuer())) {
			t.Fatalf("certificate chain not served as uploaded: %q", tc.GetCertificateChain().GetInlineString())
		}
		if string(tc.GetPrivateKey().GetInlineBytes()) != string(oldChain.Leaf.KeyPEM()) {
			t.Fatal("private key not served")
		}
		if _, ok := got.secrets["mtlsgate-client-ca"]; ok {
			t.Fatal("a client asking for backend_v1 also got the CA secret")
		}
	}

	// list and describe never carry key material.
	for _, args := range [][]string{{"mtls-certificate", "list"}, {"mtls-certificate", "describe", "--cert-id", old.ID}} {
		for _, out := range []string{"json", "table"} {
			r := p.run(append(args, "--output", out)...)
			keyBody := strings.Split(string(oldChain.Leaf.KeyPEM()), "\n")[1]
			if r.code != 0 || strings.Contains(r.stdout, "PRIVATE") || strings.Contains(r.stdout, keyBody) {
				t.Fatalf("%v --output %s: exit %d, output:\n%s", args, out, r.code, r.stdout)
			}
		}
	}
	var desc api.MTLSCertificate
	p.runJSON(t, &desc, "mtls-certificate", "describe", "--cert-id", old.ID)
	if len(desc.Subscribers) != 2 {
		t.Fatalf("describe lists subscribers %+v, want envoy-1 and envoy-2", desc.Subscribers)
	}

	// Deleting an enabled certificate is refused.
	r := p.run("mtls-certificate", "delete", "--cert-id", old.ID)
	if r.code == 0 || !strings.Contains(r.stderr, "is enabled") || !strings.Contains(r.stderr, "mtls-certificate disable --cert-id "+old.ID) {
		t.Fatalf("delete while enabled: %d %s", r.code, r.stderr)
	}

	// 1. Upload the new certificate under a new name.
	newCert, newKey, newChain := outboundFiles(t, "backend-new")
	var next api.MTLSCertificate
	p.runJSON(t, &next, "mtls-certificate", "create", "--cert", newCert, "--key", newKey, "--name", "backend_v2", "--environment-type", "development")
	// Clients that only name backend_v1 are not disturbed by it in delta.

	// 2. Switch the reference: the Envoys now ask for backend_v2 (the sotw one
	// keeps backend_v1 for now, as an Envoy not yet redeployed would).
	delta.changeDelta([]string{"backend_v2"}, []string{"backend_v1"})
	if got := delta.until("backend_v2 after resubscribe", func(p push) bool { return p.secrets["backend_v2"] != nil }); string(got.secrets["backend_v2"].GetTlsCertificate().GetPrivateKey().GetInlineBytes()) != string(newChain.Leaf.KeyPEM()) {
		t.Fatal("delta client got the wrong key for backend_v2")
	}

	// 3. Disable the old certificate: it leaves SDS at once.
	var disabled api.MTLSCertificate
	p.runJSON(t, &disabled, "mtls-certificate", "disable", "--cert-id", old.ID)
	if disabled.Enabled || disabled.Served {
		t.Fatalf("disable answered %+v", disabled)
	}
	// envoy-1 asks only for backend_v1, which no longer exists: it is not
	// answered (an empty answer is what Envoy rejects, keeping the secret it
	// has, and each rejection used to bring the same answer back). Pushes
	// queued before the disable still carry backend_v1.
	sotw.never("a push without the disabled backend_v1", time.Second, func(p push) bool { return p.secrets["backend_v1"] == nil })

	// Still referenced by envoy-1: refused, naming the subscriber.
	r = p.run("mtls-certificate", "delete", "--cert-id", old.ID)
	if r.code == 0 || !strings.Contains(r.stderr, `node "envoy-1" cluster "payments"`) || strings.Contains(r.stderr, "envoy-2") {
		t.Fatalf("delete while referenced: %d %s", r.code, r.stderr)
	}

	// 4. Redeploy: envoy-1 now asks for backend_v2.
	sotw.resubscribe("backend_v2")
	if got := sotw.until("backend_v2 for the redeployed envoy", func(p push) bool { return p.secrets["backend_v2"] != nil }); got.secrets["backend_v1"] != nil {
		t.Fatal("old certificate still in the response")
	}

	// 5. Delete the old certificate.
	waitFor(t, "envoy-1's resubscription to be recorded", func() bool {
		var d api.MTLSCertificate
		p.runJSON(t, &d, "mtls-certificate", "describe", "--cert-id", old.ID)
		return len(d.Subscribers) == 0
	})
	var deleted api.MTLSCertificate
	p.runJSON(t, &deleted, "mtls-certificate", "delete", "--cert-id", old.ID)
	var list []api.MTLSCertificate
	p.runJSON(t, &list, "mtls-certificate", "list")
	if len(list) != 1 || list[0].ID != next.ID || len(list[0].Subscribers) != 2 {
		t.Fatalf("after rotation: %+v", list)
	}

	logs := p.stderr.String()
	for _, a := range []string{"mtls-certificate.create", "mtls-certificate.disable", "mtls-certificate.delete"} {
		if !strings.Contains(logs, `"action":"`+a+`"`) {
			t.Errorf("no audit line for %s", a)
		}
	}
}

// TestOutboundEnvironmentAndEnable checks that only certificates for the
// sidecar's environment are served, and that enable brings one back.
func TestOutboundEnvironmentAndEnable(t *testing.T) {
	p := startServe(t, t.TempDir(), "--environment", "production")
	prodCert, prodKey, _ := outboundFiles(t, "prod")
	devCert, devKey, _ := outboundFiles(t, "dev")
	var prod, dev api.MTLSCertificate
	p.runJSON(t, &prod, "mtls-certificate", "create", "--cert", prodCert, "--key", prodKey, "--name", "prod_cert", "--environment-type", "production")
	p.runJSON(t, &dev, "mtls-certificate", "create", "--cert", devCert, "--key", devKey, "--name", "dev_cert", "--environment-type", "development", "--environment-type", "preview")
	if !prod.Served || dev.Served {
		t.Fatalf("served flags: prod %v dev %v", prod.Served, dev.Served)
	}
	c := newDelta(t, p.addrs.SDS, "envoy-p", "prod", "prod_cert", "dev_cert")
	first := c.next("initial")
	if first.secrets["prod_cert"] == nil || first.secrets["dev_cert"] != nil {
		t.Fatalf("production sidecar served %v", keys(first.secrets))
	}
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "disable", "--cert-id", prod.ID)
	if got := c.next("disable"); !slices.Contains(got.removed, "prod_cert") {
		t.Fatalf("delta client was not told prod_cert is removed: %+v", got.removed)
	}
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "enable", "--cert-id", prod.ID)
	if got := c.next("enable"); got.secrets["prod_cert"] == nil {
		t.Fatal("re-enabled certificate not pushed")
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestUnixSocketSDS serves SDS on a unix socket, as a sidecar sharing a pod
// with Envoy would.
func TestUnixSocketSDS(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sds.sock")
	p := startServe(t, t.TempDir(), "--sds-listen", "unix:"+sock)
	if p.addrs.SDS != "unix:"+sock {
		t.Fatalf("SDS bound to %s", p.addrs.SDS)
	}
	// Group-writable whatever the umask, so an Envoy running as another user
	// in the group can connect; nobody else.
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("SDS socket mode %v, want 0660", fi.Mode().Perm())
	}
	cert, key, _ := outboundFiles(t, "uds")
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "uds", "--environment-type", "development")
	if got := newSotW(t, "unix://"+sock, "envoy-uds", "edge", "uds").next("secret over unix socket"); got.secrets["uds"] == nil {
		t.Fatal("no secret over the unix socket")
	}
}

// TestUploadsFromStdin: "-" reads a flag's file from stdin, and --cert -
// --key - one stream holding both, so a container with no shell to copy
// files into (distroless) is managed with kubectl exec -i and a pipe.
func TestUploadsFromStdin(t *testing.T) {
	p := startServe(t, t.TempDir())
	withStdin := func(in []byte, args ...string) result {
		t.Helper()
		cmd := exec.Command(binary, append(args, "--server", "http://"+p.addrs.Admin, "--admin-token-file", p.addrs.TokenFile, "--output", "json")...)
		cmd.Stdin = bytes.NewReader(in)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		code := 0
		if err := cmd.Run(); err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		return result{out.String(), errb.String(), code}
	}

	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Stdin Root"}))
	r := withStdin(root.PEM(), "ca-certificate", "create", "--name", "stdin_ca", "--cert", "-")
	var ca api.CACertificate
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ca) != nil || ca.PEM != string(root.PEM()) {
		t.Fatalf("ca-certificate create --cert -: exit %d %s %s", r.code, r.stdout, r.stderr)
	}

	c := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "stdin client"}))
	chain := testpki.PEM(c.Leaf, c.Issuer())
	r = withStdin(append(append([]byte{}, chain...), c.Leaf.KeyPEM()...),
		"mtls-certificate", "create", "--name", "stdin_cert", "--cert", "-", "--key", "-", "--environment-type", "development")
	var m api.MTLSCertificate
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &m) != nil || m.ChainPEM != string(chain) {
		t.Fatalf("mtls-certificate create --cert - --key -: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	got := newSotW(t, p.addrs.SDS, "envoy-stdin", "payments", "stdin_cert").next("the certificate uploaded from stdin")
	if key := got.secrets["stdin_cert"].GetTlsCertificate().GetPrivateKey().GetInlineBytes(); string(key) != string(c.Leaf.KeyPEM()) {
		t.Fatalf("served key is not the one piped in: %q", key)
	}

	// A key alone on stdin, the certificate from a file, works too; an empty
	// stdin is refused as a file with no certificate would be.
	certFile := writeFile(t, "stdin-leaf.pem", chain)
	r = withStdin(c.Leaf.KeyPEM(), "mtls-certificate", "update", "--cert-id", m.ID, "--cert", certFile, "--key", "-")
	if r.code != 0 {
		t.Fatalf("update --key -: exit %d %s", r.code, r.stderr)
	}
	r = withStdin(nil, "ca-certificate", "create", "--name", "empty", "--cert", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "no PEM certificate") {
		t.Fatalf("empty stdin: exit %d %s", r.code, r.stderr)
	}
}
