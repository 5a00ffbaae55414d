package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

func TestCALifecyclePushesToSDSAndBundle(t *testing.T) {
	p := startServe(t, t.TempDir())
	sotw := newSotW(t, p.addrs.SDS, "envoy-a", "edge", sds.ClientCASecret)
	delta := newDelta(t, p.addrs.SDS, "envoy-b", "edge", sds.ClientCASecret)

	// Before any CA: a placeholder anchor nobody holds the key to, never an
	// empty (accept-all) trusted_ca.
	for _, c := range []*sdsClient{sotw, delta} {
		first := c.next("initial secret")
		if !sds.IsPlaceholder(trustedCA(first)) {
			t.Fatalf("initial trusted_ca is not the placeholder anchor: %q", trustedCA(first))
		}
	}

	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Example Root", Subject: pkixName("Example", "US")}))
	var created api.CACertificate
	p.runJSON(t, &created, "ca-certificate", "create", "--name", "my_ca", "--cert", writeFile(t, "ca.pem", root.PEM()))
	if !strings.HasPrefix(created.ID, "mtlsca_") || created.Name != "my_ca" {
		t.Fatalf("created %+v", created)
	}
	for _, c := range []*sdsClient{sotw, delta} {
		got := c.next("CA create")
		if trustedCA(got) != string(root.PEM()) {
			t.Fatalf("after create trusted_ca = %q", trustedCA(got))
		}
	}

	var desc api.CACertificate
	p.runJSON(t, &desc, "ca-certificate", "describe", "--cert-id", created.ID)
	if desc.Subject != "CN=Example Root,O=Example,C=US" || desc.Issuer != desc.Subject || !desc.SelfSigned {
		t.Errorf("describe subject/issuer = %q / %q", desc.Subject, desc.Issuer)
	}
	if len(desc.Fingerprint) != 95 || strings.ToUpper(desc.Fingerprint) != desc.Fingerprint {
		t.Errorf("fingerprint %q is not uppercase colon hex", desc.Fingerprint)
	}
	human := p.run("ca-certificate", "describe", "--cert-id", created.ID)
	for _, want := range []string{"my_ca", "CN=Example Root,O=Example,C=US", desc.Fingerprint, "CRL:", "none"} {
		if !strings.Contains(human.stdout, want) {
			t.Errorf("describe table lacks %q:\n%s", want, human.stdout)
		}
	}

	// Rename: same material under a new snapshot version. State-of-the-world
	// clients get it re-sent; delta clients get nothing, since no resource
	// changed (their next push below must be the second CA).
	var renamed api.CACertificate
	p.runJSON(t, &renamed, "ca-certificate", "update", "--cert-id", created.ID, "--name", "renamed_ca")
	if renamed.Name != "renamed_ca" || renamed.ID != created.ID {
		t.Errorf("rename answered %+v", renamed)
	}
	if got := sotw.next("CA rename"); trustedCA(got) != string(root.PEM()) {
		t.Fatalf("after rename trusted_ca changed: %q", trustedCA(got))
	}
	b := getBundle(t, p)
	if len(b.CACertificates) != 1 || b.CACertificates[0].Name != "renamed_ca" {
		t.Errorf("bundle after rename: %+v", b.CACertificates)
	}

	// A second CA joins the concatenated trusted_ca.
	root2 := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Second Root"}))
	var second api.CACertificate
	p.runJSON(t, &second, "ca-certificate", "create", "--name", "second", "--cert", writeFile(t, "ca2.pem", root2.PEM()))
	for _, c := range []*sdsClient{sotw, delta} {
		got := c.next("second CA")
		if !strings.Contains(trustedCA(got), string(root.PEM())) || !strings.Contains(trustedCA(got), string(root2.PEM())) {
			t.Fatalf("trusted_ca lacks one of the two CAs")
		}
	}
	var list []api.CACertificate
	p.runJSON(t, &list, "ca-certificate", "list")
	if len(list) != 2 {
		t.Fatalf("list has %d CAs", len(list))
	}

	// Delete: the next push excludes it.
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "delete", "--cert-id", created.ID)
	for _, c := range []*sdsClient{sotw, delta} {
		got := c.next("CA delete")
		if strings.Contains(trustedCA(got), string(root.PEM())) || !strings.Contains(trustedCA(got), string(root2.PEM())) {
			t.Fatalf("after delete trusted_ca = %q", trustedCA(got))
		}
	}
	if b := getBundle(t, p); len(b.CACertificates) != 1 || b.CACertificates[0].ID != second.ID {
		t.Fatalf("bundle after delete: %+v", b.CACertificates)
	}
	if r := p.run("ca-certificate", "describe", "--cert-id", created.ID); r.code == 0 || !strings.Contains(r.stderr, "ca-certificate list") {
		t.Errorf("describe of a deleted CA: %d %s", r.code, r.stderr)
	}

	// The audit log names the token, the action and the ids.
	logs := p.stderr.String()
	for _, action := range []string{"ca-certificate.create", "ca-certificate.update", "ca-certificate.delete"} {
		if !strings.Contains(logs, `"action":"`+action+`"`) {
			t.Errorf("no audit line for %s", action)
		}
	}
	if !strings.Contains(logs, `"actor":"token:`) || !strings.Contains(logs, created.ID) {
		t.Errorf("audit lines lack actor or ids:\n%s", logs)
	}
}

// TestPushLatency measures the time from the admin API's answer to the SDS
// push arriving at a subscribed client. It is reported, not asserted.
func TestPushLatency(t *testing.T) {
	p := startServe(t, t.TempDir())
	sotw := newSotW(t, p.addrs.SDS, "envoy-lat", "edge", sds.ClientCASecret)
	delta := newDelta(t, p.addrs.SDS, "envoy-lat-d", "edge", sds.ClientCASecret)
	sotw.next("initial")
	delta.next("initial")
	cl := p.client(t)
	var fromSend, fromAnswer, deltaFromAnswer []time.Duration
	for i := range 20 {
		root := testpki.Must(testpki.NewRoot(testpki.Options{}))
		start := time.Now()
		var ca api.CACertificate
		if err := cl.Do(http.MethodPost, api.PathCAs, api.CreateCA{Name: "lat" + string(rune('a'+i)), CertPEM: string(root.PEM())}, &ca); err != nil {
			t.Fatal(err)
		}
		answered := time.Now()
		got := sotw.next("create")
		d := delta.next("create")
		fromSend = append(fromSend, got.at.Sub(start))
		fromAnswer = append(fromAnswer, got.at.Sub(answered))
		deltaFromAnswer = append(deltaFromAnswer, d.at.Sub(answered))
	}
	t.Logf("CA create -> SDS push, sotw: request sent->push %s; API answer->push %s (negative: the push arrived before the answer); delta: API answer->push %s",
		stats(fromSend), stats(fromAnswer), stats(deltaFromAnswer))
}

func stats(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return "median " + s[len(s)/2].String() + " max " + s[len(s)-1].String()
}

func getBundle(t *testing.T, p *serveProc) *bundle.Bundle {
	t.Helper()
	body := httpBody(t, "http://"+p.addrs.Bundle+"/v1/bundle")
	b, err := bundle.Parse(body)
	if err != nil {
		t.Fatalf("bundle %s: %v", body, err)
	}
	return b
}

// httpBody GETs url and returns the body, whatever the status.
func httpBody(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestBundleETag(t *testing.T) {
	p := startServe(t, t.TempDir())
	url := "http://" + p.addrs.Bundle + "/v1/bundle"
	get := func(inm string) (*http.Response, []byte) { return bundleResponse(t, p, inm) }
	resp, body := get("")
	etag := resp.Header.Get("ETag")
	var doc struct{ Version string }
	_ = json.Unmarshal(body, &doc)
	if resp.StatusCode != 200 || etag != `W/"`+doc.Version+`"` || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET: %d etag %q version %q cache-control %q", resp.StatusCode, etag, doc.Version, resp.Header.Get("Cache-Control"))
	}
	if r, b := get(etag); r.StatusCode != http.StatusNotModified || len(b) != 0 || r.Header.Get("ETag") != etag {
		t.Fatalf("revalidation: %d %q", r.StatusCode, b)
	}
	if r, _ := get(`"other", ` + etag); r.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match list: %d", r.StatusCode)
	}
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	p.runJSON(t, &api.CACertificate{}, "ca-certificate", "create", "--name", "ca1", "--cert", writeFile(t, "ca.pem", root.PEM()))
	r, b := get(etag)
	if r.StatusCode != 200 || r.Header.Get("ETag") == etag {
		t.Fatalf("after a change the old ETag still matches: %d %q", r.StatusCode, r.Header.Get("ETag"))
	}
	parsed, err := bundle.Parse(b)
	if err != nil || len(parsed.CACertificates) != 1 || parsed.CACertificates[0].PEM != string(root.PEM()) {
		t.Fatalf("bundle after create: %v %+v", err, parsed)
	}
	if strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatal("bundle carries key material")
	}
	if r, _ := get(""); r.Header.Get("ETag") != `W/"`+parsed.Version+`"` {
		t.Fatal("ETag is not the bundle version")
	}
	// The filter revalidates with the version it read from the body.
	if r, _ := get(`"` + parsed.Version + `"`); r.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation with the quoted version: %d", r.StatusCode)
	}
	if resp, err := http.Post(url, "application/json", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the read-only bundle endpoint: %v %v", resp.StatusCode, err)
	}
}
