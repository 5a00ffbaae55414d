package crlrefresh

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// fixture is a store on disk with one CA whose CRL comes from a URL served
// by a real HTTP server.
type fixture struct {
	t     *testing.T
	st    *store.Store
	ca    *testpki.Cert
	caID  string
	srv   *httptest.Server
	r     *Refresher
	mu    sync.Mutex
	body  []byte
	hook  func() // runs inside the handler before it answers
	crlID string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, ca: testpki.Must(testpki.NewRoot(testpki.Options{CA: true, CommonName: "Refresh CA"}))}
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	ca, err := st.CreateCA(pki.CARecord("refresh_ca", f.ca.Cert, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.caID = ca.ID
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		body, hook := f.body, f.hook
		f.mu.Unlock()
		if hook != nil {
			hook()
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(f.srv.Close)
	f.r = &Refresher{Store: st, Client: f.srv.Client(), Log: slog.New(slog.DiscardHandler), M: metrics.New(), MinInterval: time.Second, MaxInterval: time.Hour}
	f.r.Init()
	return f
}

func (f *fixture) serve(body []byte, hook func()) {
	f.mu.Lock()
	f.body, f.hook = body, hook
	f.mu.Unlock()
}

// record stores list as the CA's CRL, refreshed from the fixture's URL.
func (f *fixture) record(list []byte) store.CRL {
	f.t.Helper()
	rl, p, err := pki.CRL(list, f.ca.Cert)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := store.CRL{CAID: f.caID, URL: f.srv.URL}
	Apply(&rec, rl, p)
	c, err := f.st.CreateCRL(rec, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.crlID = c.ID
	return c
}

// operatorUpdate does what `crl update` does (admin.replaceCRL): the list
// replaced in one store update, refused if older, URL set to url.
func (f *fixture) operatorUpdate(list []byte, url string) {
	f.t.Helper()
	rl, p, err := pki.CRL(list, f.ca.Cert)
	if err != nil {
		f.t.Fatal(err)
	}
	var rec store.CRL
	Apply(&rec, rl, p)
	if _, err := f.st.UpdateCRL(f.crlID, func(c *store.CRL) error {
		if Older(rec, *c) {
			f.t.Fatalf("operator's list %s refused as older than %s", rec.Number, c.Number)
		}
		c.URL, c.PEM, c.Number, c.ThisUpdate, c.NextUpdate, c.RevokedCount = url, rec.PEM, rec.Number, rec.ThisUpdate, rec.NextUpdate, rec.RevokedCount
		return nil
	}, nil); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) stored() store.CRL {
	f.t.Helper()
	c, err := f.st.GetCRL(f.crlID)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) crl(number int64, thisUpdate time.Time, revoked ...int64) []byte {
	f.t.Helper()
	var serials []*big.Int
	for _, s := range revoked {
		serials = append(serials, big.NewInt(s))
	}
	return testpki.Must(f.ca.CRL(testpki.CRLOptions{Number: big.NewInt(number), ThisUpdate: thisUpdate, RevokedSerials: serials}))
}

// numberlessCRL is a list without the CRL number extension, as some CAs
// publish; Go's CreateRevocationList always writes one, so it is built and
// signed here.
func numberlessCRL(t *testing.T, ca *testpki.Cert, thisUpdate time.Time) []byte {
	t.Helper()
	alg := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}} // ecdsa-with-SHA256
	tbs := pkix.TBSCertificateList{
		Version:    1,
		Signature:  alg,
		Issuer:     ca.Cert.Subject.ToRDNSequence(),
		ThisUpdate: thisUpdate.UTC(),
		NextUpdate: thisUpdate.Add(7 * 24 * time.Hour).UTC(),
	}
	raw, err := asn1.Marshal(tbs)
	if err != nil {
		t.Fatal(err)
	}
	tbs.Raw = raw
	digest := sha256.Sum256(raw)
	sig, err := ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(pkix.CertificateList{TBSCertList: tbs, SignatureAlgorithm: alg, SignatureValue: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil || rl.Number != nil || rl.CheckSignatureFrom(ca.Cert) != nil {
		t.Fatalf("hand-built CRL: %v, number %v", err, rl.Number)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestRefreshKeepsListStoredDuringDownload: while a slow distribution point
// answers with list 1, the operator stores list 2 (which revokes serial 42).
// The download must not replace it: with a file the URL is gone, and no
// later refresh would ever bring list 2 back.
func TestRefreshKeepsListStoredDuringDownload(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(f *fixture) string
	}{
		{"crl update --file", func(*fixture) string { return "" }},
		{"crl update --url with the same URL", func(f *fixture) string { return f.srv.URL }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			now := time.Now().Truncate(time.Second)
			list1, list2 := f.crl(1, now.Add(-time.Hour)), f.crl(2, now, 42)
			c := f.record(list1)
			started, release := make(chan struct{}), make(chan struct{})
			f.serve(list1, func() { close(started); <-release })
			done := make(chan struct{})
			go func() { f.r.refresh(context.Background(), c); close(done) }()
			<-started
			f.operatorUpdate(list2, tc.url(f))
			close(release)
			<-done
			got := f.stored()
			if got.Number != "2" || got.RevokedCount != 1 || got.URL != tc.url(f) {
				t.Fatalf("after the download: number %s, %d revoked, URL %q; want list 2 (1 revoked) and URL %q", got.Number, got.RevokedCount, got.URL, tc.url(f))
			}
			if got.LastError != "" {
				t.Fatalf("a discarded download recorded an error: %s", got.LastError)
			}
		})
	}
}

// TestRefreshRefusesOlderList: a downloaded list older than the stored one
// (by number, or by thisUpdate when either has no number, the rule `crl
// update` applies) is not stored, and the error is recorded.
func TestRefreshRefusesOlderList(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	for _, tc := range []struct {
		name   string
		served func(f *fixture) []byte
		stored bool // whether the download replaces list 5
	}{
		{"lower number", func(f *fixture) []byte { return f.crl(3, now) }, false},
		{"no number, earlier thisUpdate", func(f *fixture) []byte { return numberlessCRL(f.t, f.ca, now.Add(-2*time.Hour)) }, false},
		{"no number, later thisUpdate", func(f *fixture) []byte { return numberlessCRL(f.t, f.ca, now) }, true},
		{"higher number", func(f *fixture) []byte { return f.crl(6, now) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.record(f.crl(5, now.Add(-time.Hour), 42))
			served := tc.served(f)
			f.serve(served, nil)
			f.r.refresh(context.Background(), c)
			got := f.stored()
			if !tc.stored {
				if got.Number != "5" || got.RevokedCount != 1 {
					t.Fatalf("older list stored: number %q, %d revoked", got.Number, got.RevokedCount)
				}
				if !strings.Contains(got.LastError, "older than the stored one") || got.LastErrorAt.IsZero() {
					t.Fatalf("last error %q", got.LastError)
				}
				return
			}
			if got.PEM != string(served) {
				t.Fatalf("newer list not stored: number %q", got.Number)
			}
			if got.LastError != "" || got.LastFetchAt.IsZero() {
				t.Fatalf("after a good download: last error %q, last fetch %v", got.LastError, got.LastFetchAt)
			}
		})
	}
}

// TestRefreshFailureAfterSourceChange: a download that fails after the
// operator replaced the URL with a file is not recorded against the file.
func TestRefreshFailureAfterSourceChange(t *testing.T) {
	f := newFixture(t)
	now := time.Now().Truncate(time.Second)
	c := f.record(f.crl(1, now.Add(-time.Hour)))
	started, release := make(chan struct{}), make(chan struct{})
	f.serve([]byte("not a CRL"), func() { close(started); <-release })
	done := make(chan struct{})
	go func() { f.r.refresh(context.Background(), c); close(done) }()
	<-started
	f.operatorUpdate(f.crl(2, now), "")
	close(release)
	<-done
	if got := f.stored(); got.LastError != "" || got.Number != "2" {
		t.Fatalf("after the failed download: number %s, last error %q", got.Number, got.LastError)
	}
}
