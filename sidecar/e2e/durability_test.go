package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestKill9LosesNothingAcknowledged writes from several clients at once,
// kills the server with SIGKILL mid-stream, restarts it on the same data dir
// and checks that every write the API acknowledged is there.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	const writers, perWriter = 4, 60
	roots := make([][]string, writers)
	for w := range writers {
		for range perWriter {
			roots[w] = append(roots[w], string(testpki.Must(testpki.NewRoot(testpki.Options{})).PEM()))
		}
	}
	var (
		mu    sync.Mutex
		acked = map[string]string{} // id -> name
		count atomic.Int64
		wg    sync.WaitGroup
	)
	killAt := int64(writers * perWriter / 3)
	killed := make(chan struct{})
	var once sync.Once
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := p.client(t)
			for i, pem := range roots[w] {
				name := fmt.Sprintf("w%d_%d", w, i)
				var ca api.CACertificate
				if err := cl.Do(http.MethodPost, api.PathCAs, api.CreateCA{Name: name, CertPEM: pem}, &ca); err != nil {
					return // the server is gone: this write was never acknowledged
				}
				mu.Lock()
				acked[ca.ID] = name
				mu.Unlock()
				if count.Add(1) == killAt {
					once.Do(func() { p.kill9(); close(killed) })
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("all writes finished before the kill; the test proved nothing")
	}
	t.Logf("%d writes acknowledged before SIGKILL", len(acked))

	p2 := startServe(t, dir)
	var list []api.CACertificate
	p2.runJSON(t, &list, "ca-certificate", "list")
	have := map[string]string{}
	for _, ca := range list {
		have[ca.ID] = ca.Name
	}
	for id, name := range acked {
		if have[id] != name {
			t.Errorf("acknowledged CA %s (%s) lost after kill -9", id, name)
		}
	}
	// At most the in-flight writes (one per writer) may have committed
	// without their answer arriving.
	if extra := len(have) - len(acked); extra < 0 || extra > writers {
		t.Errorf("%d stored vs %d acknowledged", len(have), len(acked))
	}
	// The audit trail matches the store exactly, in-flight writes included:
	// a record for every CA stored, and none for a write the kill undid.
	recorded := map[string]bool{}
	for _, e := range storedAudit(t, p2, "ca-certificate.create") {
		id, _ := e.After.(map[string]any)["id"].(string)
		if _, ok := have[id]; !ok {
			t.Errorf("audit record for CA %s, which is not stored", id)
		}
		recorded[id] = true
	}
	for id, name := range have {
		if !recorded[id] {
			t.Errorf("CA %s (%s) stored without its audit record", id, name)
		}
	}
}

// TestConcurrentCLIClients races CLI processes; names stay unique and every
// distinct upload lands.
func TestConcurrentCLIClients(t *testing.T) {
	p := startServe(t, t.TempDir())
	const n = 8
	var wg sync.WaitGroup
	same := make([]result, n)
	distinct := make([]result, n)
	for i := range n {
		same1 := writeFile(t, fmt.Sprintf("s%d.pem", i), testpki.Must(testpki.NewRoot(testpki.Options{})).PEM())
		dist := writeFile(t, fmt.Sprintf("d%d.pem", i), testpki.Must(testpki.NewRoot(testpki.Options{})).PEM())
		wg.Add(2)
		go func() {
			defer wg.Done()
			same[i] = p.run("ca-certificate", "create", "--name", "contested", "--cert", same1)
		}()
		go func() {
			defer wg.Done()
			distinct[i] = p.run("ca-certificate", "create", "--name", fmt.Sprintf("ca_%d", i), "--cert", dist)
		}()
	}
	wg.Wait()
	wins := 0
	for _, r := range same {
		switch {
		case r.code == 0:
			wins++
		case !strings.Contains(r.stderr, `named "contested" already exists`):
			t.Errorf("losing create said: %s", r.stderr)
		}
	}
	if wins != 1 {
		t.Errorf("%d creates of the same name succeeded, want 1", wins)
	}
	for i, r := range distinct {
		if r.code != 0 {
			t.Errorf("create ca_%d: %s", i, r.stderr)
		}
	}
	var list []api.CACertificate
	p.runJSON(t, &list, "ca-certificate", "list")
	if len(list) != n+1 {
		t.Errorf("%d CAs stored, want %d", len(list), n+1)
	}
}

// TestEncryptionKeyRequired starts serve with an encryption key, stores an
// outbound key, and checks restarts without or with a wrong key are refused
// with a message, and the right key serves the certificate again.
func TestEncryptionKeyRequired(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, "key.hex", []byte(strings.Repeat("ab", 32)+"\n"))
	wrong := writeFile(t, "wrong.hex", []byte(strings.Repeat("cd", 32)))
	p := startServe(t, dir, "--encryption-key-file", keyFile)
	cert, key, chain := outboundFiles(t, "sealed")
	p.runJSON(t, &api.MTLSCertificate{}, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "sealed", "--environment-type", "development")
	p.stop()

	raw, err := os.ReadFile(filepath.Join(dir, "mtlsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if keyInClear(raw, chain.Leaf.KeyPEM()) {
		t.Fatal("private key stored in clear")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no encryption key was given"},
		{[]string{"--encryption-key-file", wrong}, "wrong --encryption-key-file"},
	} {
		_, err := tryServe(t, dir, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: %v, want %q", c.args, err, c.want)
		}
	}
	p2 := startServe(t, dir, "--encryption-key-file", keyFile)
	got := newSotW(t, p2.addrs.SDS, "envoy", "c", "sealed").next("sealed secret")
	if string(got.secrets["sealed"].GetTlsCertificate().GetPrivateKey().GetInlineBytes()) != string(chain.Leaf.KeyPEM()) {
		t.Fatal("sealed key not served after restart")
	}
}
