package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
)

func adminReq(t *testing.T, p *serveProc, method, path, body string) (int, string) {
	t.Helper()
	data, _ := os.ReadFile(p.addrs.TokenFile)
	req, _ := http.NewRequest(method, "http://"+p.addrs.Admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admintoken.Parse(data)[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProbeAdminJSONLaxness: README: "an unknown field is refused with
// bad_json". Field names that differ from the documented ones only in case,
// and data after the JSON document, are taken.
func TestProbeAdminJSONLaxness(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Lax Root"}))
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	code, body := adminReq(t, p, "POST", "/v1/ca-certificates", `{"NAME":"lax_a","CERTPEM":`+q(string(root.PEM()))+`}`)
	if code == 201 {
		t.Errorf("fields NAME/CERTPEM (not the documented name/certPem) accepted: %d", code)
	}
	root2 := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Lax Root 2"}))
	code, body = adminReq(t, p, "POST", "/v1/ca-certificates", `{"name":"lax_b","certPem":`+q(string(root2.PEM()))+`} {"name":"ignored"} garbage`)
	if code == 201 {
		t.Errorf("trailing data after the JSON body accepted: %d", code)
	}
	_ = body
}

// TestProbeAdminOddRequests: refusals that held up (kept as evidence).
func TestProbeAdminOddRequests(t *testing.T) {
	p := startServe(t, t.TempDir())
	deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/v1/profiles", `{"profiles":` + deep + `}`},
		{"PUT", "/v1/profiles", `{"profiles":[{"id":"a","clients":["x"],"clients":["*"]}]}`},
		{"POST", "/v1/profiles/rollback", `{"toVersion":-9223372036854775808}`},
		{"GET", "/v1/ca-certificates/..%2f..%2fmetrics", ""},
		{"POST", "/v1/crls", `{"caId":"x","url":"file:///etc/passwd"}`},
		{"POST", "/v1/ca-certificates", `{"name":"a","certPem":"` + strings.Repeat("A", 17<<20) + `"}`},
	} {
		code, body := adminReq(t, p, c.method, c.path, c.body)
		if code < 400 || code >= 500 {
			t.Errorf("%s %s: %d %.200s", c.method, c.path, code, body)
		}
		t.Logf("%s %s -> %d %.120s", c.method, c.path, code, body)
	}
	for _, h := range []string{"Bearer ", "Bearer    ", "bearer x", "Basic Zm9v"} {
		req, _ := http.NewRequest("GET", "http://"+p.addrs.Admin+"/v1/ca-certificates", nil)
		req.Header.Set("Authorization", h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("Authorization %q: %d", h, resp.StatusCode)
		}
	}
}
