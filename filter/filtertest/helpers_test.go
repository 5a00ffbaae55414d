package filtertest

import (
	"context"
	"encoding/json"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

var (
	modOnce sync.Once
	mod     *hosttest.Module
	modErr  error
)

// filterModule compiles the filter once per test binary: the artifact `make
// build` wrote when MTLSGATE_WASM names it, else a cached build of ./filter.
func filterModule(tb testing.TB) *hosttest.Module {
	tb.Helper()
	modOnce.Do(func() {
		path := os.Getenv("MTLSGATE_WASM")
		if path == "" {
			path, modErr = hosttest.BuildWasm("github.com/mtlsgate/mtlsgate/filter")
			if modErr != nil {
				return
			}
		}
		mod, modErr = hosttest.CompileFile(context.Background(), path)
	})
	if modErr != nil {
		tb.Fatalf("filter module: %v", modErr)
	}
	return mod
}

// newPlugin starts the filter with cfg (marshalled to JSON) and returns one VM.
func newPlugin(tb testing.TB, cfg any, clusters map[string]hosttest.Upstream) (*hosttest.Plugin, *hosttest.VM) {
	tb.Helper()
	p := filterModule(tb).NewPlugin(hosttest.PluginConfig{
		Name: "mtlsgate", RootID: "mtlsgate", VMID: "mtlsgate",
		Configuration: mustJSON(tb, cfg), Clusters: clusters, LogLevel: abi.LogInfo,
	})
	return p, newVM(tb, p)
}

func newVM(tb testing.TB, p *hosttest.Plugin) *hosttest.VM {
	tb.Helper()
	vm, err := p.NewVM(context.Background())
	if err != nil {
		tb.Fatalf("start filter: %v", err)
	}
	tb.Cleanup(func() { _ = vm.Close(context.Background()) })
	return vm
}

// tick runs the VM's timer once and waits for the HTTP calls it made (the
// bundle fetch) to be answered.
func tick(t *testing.T, vm *hosttest.VM) {
	t.Helper()
	if err := vm.Tick(); err != nil {
		t.Fatal(err)
	}
	if err := vm.WaitHTTPCalls(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	if b, ok := v.([]byte); ok {
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// policyDoc is one policy in the reference policies.json shape.
func policyDoc(name string, options map[string]any) map[string]any {
	if options == nil {
		options = map[string]any{}
	}
	return map[string]any{
		"name":       name,
		"policyType": "mtls-auth-inbound",
		"handler": map[string]any{
			"export":  "MTLSAuthInboundPolicy",
			"module":  "$import(@zuplo/runtime)",
			"options": options,
		},
	}
}

func inlineBundle(cas []*testpki.Cert, crls ...[]byte) map[string]any {
	pems := []string{}
	for _, c := range cas {
		pems = append(pems, string(c.PEM()))
	}
	lists := []string{}
	for _, c := range crls {
		lists = append(lists, string(c))
	}
	return map[string]any{"caCertificates": pems, "crls": lists}
}

// envoyPEMEscaper is the URL-encoding Envoy applies to PEM in XFCC
// (source/common/tls/connection_info_impl_base.cc).
var envoyPEMEscaper = strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D")

// xfcc renders what Envoy's SANITIZE_SET puts in x-forwarded-client-cert for a
// client that presented leaf and intermediates.
func xfcc(leaf *testpki.Cert, chain []byte) string {
	v := `Hash=00;Cert="` + envoyPEMEscaper.Replace(string(leaf.PEM())) + `"`
	if chain != nil {
		v += `;Chain="` + envoyPEMEscaper.Replace(string(chain)) + `"`
	}
	return v + `;Subject="CN=x"`
}

func xfccChain(ch *testpki.Chain) string { return xfcc(ch.Leaf, ch.Presented()) }

// request builds a GET for path from source with extra headers.
func request(path, source string, extra ...abi.Header) *hosttest.Request {
	hs := []abi.Header{
		{Key: ":method", Value: "GET"}, {Key: ":path", Value: path},
		{Key: ":authority", Value: "api.example.com"}, {Key: ":scheme", Value: "https"},
		{Key: "user-agent", Value: "filtertest"},
	}
	hs = append(hs, extra...)
	if source == "" {
		source = "203.0.113.7:51000"
	}
	return &hosttest.Request{Headers: hs, Conn: &hosttest.Connection{ID: 1,
		Source: netip.MustParseAddrPort(source), Destination: netip.MustParseAddrPort("10.0.0.1:8443")}}
}

func do(tb testing.TB, vm *hosttest.VM, r *hosttest.Request) *hosttest.Result {
	tb.Helper()
	res, err := vm.Do(context.Background(), r)
	if err != nil {
		tb.Fatalf("request: %v", err)
	}
	return res
}

func header(hs []abi.Header, k string) (string, bool) { return hosttest.Get(hs, k) }

// problem decodes a local response's problem+json body.
func problem(tb testing.TB, res *hosttest.Result) map[string]any {
	tb.Helper()
	if res.LocalResponse == nil {
		tb.Fatalf("expected a local response, request was forwarded with %v", res.Forwarded.Headers)
	}
	if ct, _ := header(res.LocalResponse.Headers, "content-type"); ct != "application/problem+json" {
		tb.Fatalf("content-type %q, want application/problem+json", ct)
	}
	var p map[string]any
	if err := json.Unmarshal(res.LocalResponse.Body, &p); err != nil {
		tb.Fatalf("problem body %q: %v", res.LocalResponse.Body, err)
	}
	return p
}

func unescapeXFCC(s string) string { v, _ := url.PathUnescape(s); return v }

func hostConfig(cfg []byte) hosttest.PluginConfig {
	return hosttest.PluginConfig{Name: "mtlsgate", RootID: "mtlsgate", VMID: "mtlsgate", Configuration: cfg, LogLevel: abi.LogInfo}
}

// decisionRecords returns the decision log lines among logs, decoded.
func decisionRecords(t *testing.T, logs []hosttest.LogEntry) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range logs {
		if !strings.HasPrefix(l.Message, `{"msg":"mtls decision"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l.Message), &m); err != nil {
			t.Fatalf("decision record is not JSON: %v: %s", err, l.Message)
		}
		out = append(out, m)
	}
	return out
}
