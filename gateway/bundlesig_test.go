package gateway_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/gateway"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/bundlekey"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
)

// squatter is what binds the sidecar's bundle address while serve is down:
// it answers every poll with a well-formed bundle naming its own CA, and
// signs it with a key of its own.
type squatter struct {
	body []byte
	sig  string
	gets atomic.Int32
}

func newSquatter(t *testing.T, ca *testpki.Cert) *squatter {
	b := bundle.New([]bundle.CA{{ID: "ca_squat", Name: "client_root", PEM: string(ca.PEM())}}, nil, nil, 0, time.Now())
	body, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	own, err := bundlekey.Create(filepath.Join(t.TempDir(), "own.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := bundle.Sign(own, body)
	if err != nil {
		t.Fatal(err)
	}
	return &squatter{body: body, sig: sig}
}

func (s *squatter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.gets.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(bundle.SignatureHeader, s.sig)
	_, _ = w.Write(s.body)
}

// bundleAddress is the address the filter's bundle cluster names. Whichever
// handler is current answers on it: the real sidecar while it runs, a
// squatter while it is down.
type bundleAddress struct {
	h   atomic.Pointer[http.Handler]
	srv *httptest.Server
}

func newBundleAddress(t *testing.T, h http.Handler) *bundleAddress {
	a := &bundleAddress{}
	a.set(h)
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*a.h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *bundleAddress) set(h http.Handler) { a.h.Store(&h) }

// squatEnv is a gateway whose bundle cluster names addr, a sidecar started
// with a signing key, and a squatter.
type squatEnv struct {
	addr      *bundleAddress
	sidecar   http.Handler
	sq        *squatter
	filterLog *syncbuf.Buffer
	get       func(cert *tls.Certificate) reply
}

func newSquatEnv(t *testing.T, keyFile string, publicKeys []string, clientRoot, evilRoot *testpki.Cert) *squatEnv {
	t.Helper()
	sc := startSidecarWith(t, func(c *daemon.Config) { c.BundleSigningKeyFile = keyFile })
	sc.addCA("client_root", clientRoot)
	e := &squatEnv{
		sidecar:   httputil.NewSingleHostReverseProxy(mustURL(t, "http://"+sc.addrs.Bundle)),
		sq:        newSquatter(t, evilRoot),
		filterLog: &syncbuf.Buffer{},
	}
	// serve is down when the gateway starts: the squatter holds the address.
	e.addr = newBundleAddress(t, e.sq)
	cfg := pluginConfig(t, false)
	if publicKeys != nil {
		var doc map[string]any
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
		doc["trustBundle"].(map[string]any)["publicKeys"] = publicKeys
		cfg, _ = json.Marshal(doc)
	}
	sp := newServerPKI(t)
	up := newEchoUpstream(t, nil)
	g, _ := startGateway(t, gateway.Config{
		Wasm: filterWasm(t), PluginConfig: cfg, Workers: 2,
		Certificate: sp.cert, Upstream: mustURL(t, up.srv.URL),
		Clusters: map[string]string{"mtlsgate_sidecar": e.addr.srv.URL},
		Log:      io.MultiWriter(e.filterLog, testWriter{t}),
	})
	e.get = func(cert *tls.Certificate) reply {
		return do(t, client(sp, cert, false), "GET", gwURL(g, "/resource"), nil, nil)
	}
	return e
}

// polled waits until the squatter has answered n more polls.
func (e *squatEnv) polled(t *testing.T, n int32) {
	t.Helper()
	target := e.sq.gets.Load() + n
	eventually(t, 20*time.Second, fmt.Sprintf("%d polls of the squatter", n), func() (bool, string) {
		return e.sq.gets.Load() >= target, fmt.Sprintf("%d polls", e.sq.gets.Load())
	})
}

func verdictOf(t *testing.T, r reply) string {
	if r.status == 200 {
		return "ok"
	}
	return fmt.Sprintf("%d %s", r.status, r.problem(t).Reason)
}

// TestSignedBundleDefeatsSquatter: with trustBundle.publicKeys listing the
// sidecar's key, a process holding the bundle address while serve is down
// cannot get its CA's clients accepted, before the first bundle or after
// it, and the real sidecar's signed bundle works. Without publicKeys the
// same squatter gets them accepted, which is what the signature is for.
func TestSignedBundleDefeatsSquatter(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "bundle-key.pem")
	key, err := bundlekey.Create(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cp := newClientPKI(t)
	// The attacker's CA, named like the real one, and a client certificate
	// it issued that claims the good client's name.
	evilRoot := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "gateway test client root"}))
	evil := keyPair(t, testpki.Must(evilRoot.Issue(testpki.Options{Subject: pkix.Name{CommonName: "good client", Organization: []string{"Acme"}}})))
	good := keyPair(t, cp.good, cp.inter)

	t.Run("publicKeys", func(t *testing.T) {
		e := newSquatEnv(t, keyFile, []string{bundlekey.PublicPEM(key)}, cp.root, evilRoot)
		e.polled(t, 2)
		if got := verdictOf(t, e.get(evil)); got != "503 TRUST_BUNDLE_UNAVAILABLE" {
			t.Fatalf("squatter's client before the first good bundle: %s, want 503 TRUST_BUNDLE_UNAVAILABLE", got)
		}
		if !strings.Contains(e.filterLog.String(), "does not verify with any of the 1 listed public keys") {
			t.Errorf("the refused bundle was not logged:\n%s", e.filterLog.String())
		}

		// serve is back: its signed bundle is taken.
		e.addr.set(e.sidecar)
		eventually(t, 20*time.Second, "the sidecar's signed bundle taken", func() (bool, string) {
			got := verdictOf(t, e.get(good))
			return got == "ok", got
		})
		if got := verdictOf(t, e.get(evil)); got != "401 UNTRUSTED_CHAIN" {
			t.Fatalf("squatter's client with the sidecar's bundle: %s", got)
		}

		// serve restarts, and the squatter gets the address again.
		e.addr.set(e.sq)
		e.polled(t, 2)
		if got := verdictOf(t, e.get(evil)); got != "401 UNTRUSTED_CHAIN" {
			t.Fatalf("squatter's client after the squatter answered polls: %s, want 401 UNTRUSTED_CHAIN", got)
		}
		if got := verdictOf(t, e.get(good)); got != "ok" {
			t.Fatalf("the sidecar's bundle was not kept: the good client got %s", got)
		}
	})

	// What the test above defends against: the same squatter, a filter
	// without publicKeys.
	t.Run("without publicKeys", func(t *testing.T) {
		e := newSquatEnv(t, keyFile, nil, cp.root, evilRoot)
		eventually(t, 20*time.Second, "the squatter's bundle taken", func() (bool, string) {
			got := verdictOf(t, e.get(evil))
			return got == "ok", got
		})
	})
}
