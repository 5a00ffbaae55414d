package bundlesrv

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

type reply struct {
	status int
	etag   string
	body   string
}

func get(t *testing.T, url, ifNoneMatch string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", ifNoneMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header.Get("ETag"), string(b)}
}

// TestETagNeverNamesTwoBodiesStrongly: a rename or a stale flag changes the
// body but not the bundle version. The tag must not then claim, as a strong
// one does, that the bodies are byte for byte the same; and the filter's
// revalidation, which quotes the version from the body it holds, must still
// get a 304.
func TestETagNeverNamesTwoBodiesStrongly(t *testing.T) {
	s := New()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	url := srv.URL + "/v1/bundle"
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Bundle CA"}))
	ca := store.CA{ID: "mtlsca_1", Name: "first_name", PEM: string(root.PEM())}
	now := time.Now()
	crl := store.CRL{ID: "mtlscrl_1", CAID: ca.ID, PEM: string(testpki.Must(root.CRL(testpki.CRLOptions{}))), NextUpdate: now.Add(time.Hour)}

	var seen []reply
	for i, step := range []struct {
		ca  store.CA
		now time.Time
	}{
		{ca, now},
		{store.CA{ID: ca.ID, Name: "renamed", PEM: ca.PEM}, now},                    // rename
		{store.CA{ID: ca.ID, Name: "renamed", PEM: ca.PEM}, now.Add(2 * time.Hour)}, // the CRL goes stale
	} {
		if err := s.Update([]store.CA{step.ca}, []store.CRL{crl}, nil, nil, 0, step.now); err != nil {
			t.Fatal(err)
		}
		r := get(t, url, "")
		if r.status != 200 {
			t.Fatalf("step %d: %d %s", i, r.status, r.body)
		}
		for _, prev := range seen {
			if prev.etag == r.etag && prev.body != r.body && !strings.HasPrefix(r.etag, "W/") {
				t.Fatalf("step %d: strong ETag %s names two different bodies", i, r.etag)
			}
		}
		seen = append(seen, r)
	}
	if !strings.Contains(seen[1].body, "renamed") || !strings.Contains(seen[2].body, `"stale":true`) {
		t.Fatalf("the bodies do not show the rename and the stale flag:\n%s\n%s", seen[1].body, seen[2].body)
	}

	doc, err := bundle.Parse([]byte(seen[2].body))
	if err != nil {
		t.Fatal(err)
	}
	if seen[2].etag != `W/"`+doc.Version+`"` {
		t.Fatalf("ETag %s, bundle version %s", seen[2].etag, doc.Version)
	}
	// The filter sends the version it holds, quoted; caches send the tag.
	for _, inm := range []string{strconv.Quote(doc.Version), seen[2].etag, `"other", ` + strconv.Quote(doc.Version)} {
		if r := get(t, url, inm); r.status != http.StatusNotModified || r.body != "" || r.etag != seen[2].etag {
			t.Fatalf("If-None-Match %s: %d %q, ETag %s", inm, r.status, r.body, r.etag)
		}
	}
	if r := get(t, url, `"other"`); r.status != 200 {
		t.Fatalf("If-None-Match of another version: %d", r.status)
	}

	// New trust material: a new tag.
	other := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Other CA"}))
	if err := s.Update([]store.CA{ca, {ID: "mtlsca_2", Name: "other", PEM: string(other.PEM())}}, []store.CRL{crl}, nil, nil, 0, now); err != nil {
		t.Fatal(err)
	}
	if r := get(t, url, strconv.Quote(doc.Version)); r.status != 200 || r.etag == seen[2].etag {
		t.Fatalf("after a new CA: %d, ETag %s", r.status, r.etag)
	}
}

// TestNothingServedBeforeFirstPublish: until the sidecar has published its
// store, it has no bundle to give. It used to serve an empty one, which the
// filter installs (an empty CA list from the sidecar means the last CA was
// deleted): a filter that kept its bundle across a sidecar restart then
// dropped every CA when the restarted sidecar could not publish. A 503 makes
// the filter keep what it has; a fetch after the first publish gets it.
func TestNothingServedBeforeFirstPublish(t *testing.T) {
	s := New()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	url := srv.URL + "/v1/bundle"
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Bundle CA"}))
	published := bundle.New([]bundle.CA{{PEM: string(root.PEM())}}, nil, nil, 0, time.Now())

	// A filter holding a bundle from before the restart revalidates with its
	// version; a fresh one asks without.
	for _, inm := range []string{"", strconv.Quote(published.Version)} {
		r := get(t, url, inm)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("before the first publish (If-None-Match %q): %d %s, want 503", inm, r.status, r.body)
		}
		if r.etag != "" || strings.Contains(r.body, "caCertificates") {
			t.Fatalf("before the first publish: ETag %q, body %s", r.etag, r.body)
		}
	}
	if v := s.Version(); v != "" {
		t.Fatalf("Version before the first publish: %q", v)
	}

	if err := s.Update([]store.CA{{ID: "mtlsca_1", Name: "one", PEM: string(root.PEM())}}, nil, nil, nil, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := get(t, url, "")
	doc, err := bundle.Parse([]byte(r.body))
	if r.status != 200 || err != nil || len(doc.CACertificates) != 1 || doc.Version != published.Version || s.Version() != doc.Version {
		t.Fatalf("after the first publish: %d %v %s", r.status, err, r.body)
	}

	// An empty store, once published, is served: it is the sidecar's word.
	if err := s.Update(nil, nil, nil, nil, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r := get(t, url, ""); r.status != 200 || !strings.Contains(r.body, `"caCertificates":[]`) {
		t.Fatalf("after publishing an empty store: %d %s", r.status, r.body)
	}
}
