package e2e

import (
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestUnpublishableStoreIsNotReady protects what ready means: the store's
// current state is what Envoy and the filter have. One record the store
// cannot decode (a damaged or hand-edited store) makes every publish fail,
// so nothing is published, not even the readable CAs. /readyz used to answer
// ready all the same; it must answer 503 with the reason, and the log must
// say it too. The bundle endpoint used to serve an empty start-up bundle,
// which the filter installs as "no CA trusted" (dropping the bundle it kept
// across the restart); it must answer 503, on which the filter keeps it.
func TestUnpublishableStoreIsNotReady(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Good Root"}))
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", "good", "--cert", writeFile(t, "r.pem", root.PEM()))
	held := getBundle(t, p).Version
	p.stop()

	db, err := bolt.Open(filepath.Join(dir, "mtlsgate.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("mtls_certificates")).Put([]byte("mtlscert_damaged"), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	p2 := startServe(t, dir)
	r := runCLI(nil, "health", "--server", "http://"+p2.addrs.Admin)
	if r.code == 0 {
		t.Fatal("serve reports ready but publishes nothing")
	}
	// What the filter's poll gets: it sends the version it holds.
	req, err := http.NewRequest(http.MethodGet, "http://"+p2.addrs.Bundle+"/v1/bundle", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("If-None-Match", strconv.Quote(held))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("bundle endpoint of a serve that published nothing answers %d %s; want 503, so the filter keeps the bundle it has", resp.StatusCode, body)
	}
	if !strings.Contains(r.stderr, "503") || !strings.Contains(r.stderr, "mtlscert_damaged") || !strings.Contains(r.stderr, "could not be published") {
		t.Errorf("health does not say why serve is not ready: %s", r.stderr)
	}
	if log := p2.stderr.String(); !strings.Contains(log, "publish trust material failed") || !strings.Contains(log, "mtlscert_damaged") {
		t.Errorf("the failed publish is not in the log: %.500s", log)
	}
}
