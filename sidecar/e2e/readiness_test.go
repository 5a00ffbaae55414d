package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestUnpublishableStoreIsNotReady protects what ready means: the store's
// current state is what Envoy and the filter have. One record the store
// cannot decode (a damaged or hand-edited store) makes every publish fail,
// so nothing is published, not even the readable CAs, and the bundle
// endpoint serves the empty start-up bundle, which the filter takes as "no
// CA trusted". /readyz used to answer ready all the same; it must answer 503
// with the reason, and the log must say it too.
func TestUnpublishableStoreIsNotReady(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Good Root"}))
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", "good", "--cert", writeFile(t, "r.pem", root.PEM()))
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
		t.Fatalf("serve reports ready but publishes nothing: bundle has %d CAs", len(getBundle(t, p2).CACertificates))
	}
	if !strings.Contains(r.stderr, "503") || !strings.Contains(r.stderr, "mtlscert_damaged") || !strings.Contains(r.stderr, "could not be published") {
		t.Errorf("health does not say why serve is not ready: %s", r.stderr)
	}
	if log := p2.stderr.String(); !strings.Contains(log, "publish trust material failed") || !strings.Contains(log, "mtlscert_damaged") {
		t.Errorf("the failed publish is not in the log: %.500s", log)
	}
}
