package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestAdminOddRequestsRefused: bodies nested 200,000 deep, duplicate keys,
// extreme versions, encoded path traversal, file:// CRL URLs and a 17 MB
// body are all refused with a client error, never a crash or a 5xx.
func TestAdminOddRequestsRefused(t *testing.T) {
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
