package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
)

// adminReq sends one admin API request with the serve's first token.
func adminReq(t *testing.T, p *serveProc, method, path, body string) (int, string) {
	t.Helper()
	data, err := os.ReadFile(p.addrs.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, "http://"+p.addrs.Admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admintoken.Parse(data)[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminJSONIsExact protects the admin API's promise that a body is
// exactly the documented JSON (README: "an unknown field is refused with
// bad_json"). encoding/json on its own takes field names in any case (NAME
// for name) and ignores whatever follows the first document, so a body
// could say something else than what is applied, and clients written
// against that leniency would break with any stricter reader. Both are
// refused with bad_json naming the field or the trailing data.
func TestAdminJSONIsExact(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Lax Root"}))
	pemText := fmt.Sprintf("%q", root.PEM())
	refused := func(what, method, path, body string, want ...string) {
		t.Helper()
		code, answer := adminReq(t, p, method, path, body)
		var doc struct{ Code, Detail string }
		if code != 400 || json.Unmarshal([]byte(answer), &doc) != nil || doc.Code != "bad_json" {
			t.Errorf("%s: %d %s", what, code, answer)
			return
		}
		for _, w := range want {
			if !strings.Contains(doc.Detail, w) {
				t.Errorf("%s: detail %q does not name %q", what, doc.Detail, w)
			}
		}
	}
	refused("fields NAME/CERTPEM", "POST", "/v1/ca-certificates", `{"NAME":"lax_a","CERTPEM":`+pemText+`}`, `"CERTPEM"`, `use "certPem"`)
	refused("field Name", "POST", "/v1/ca-certificates", `{"Name":"lax_a","certPem":`+pemText+`}`, `"Name"`, `use "name"`)
	refused("field TOVERSION", "POST", "/v1/profiles/rollback", `{"TOVERSION":1}`, `"TOVERSION"`, `use "toVersion"`)
	refused("a second document", "POST", "/v1/ca-certificates", `{"name":"lax_b","certPem":`+pemText+`} {"name":"ignored"} garbage`, "data after its JSON object", `ignored\"} garbage`)
	refused("trailing garbage", "PATCH", "/v1/ca-certificates/mtlsca_x", `{"name":"x"}]`, `"]"`)

	// The documented body, trailing whitespace included, is taken.
	if code, answer := adminReq(t, p, "POST", "/v1/ca-certificates", `{"name":"exact","certPem":`+pemText+"}\n\t "); code != 201 {
		t.Errorf("documented body refused: %d %s", code, answer)
	}
	if out := p.run("ca-certificate", "list"); strings.Contains(out.stdout, "lax_") {
		t.Errorf("a refused body was applied: %s", out.stdout)
	}
}
