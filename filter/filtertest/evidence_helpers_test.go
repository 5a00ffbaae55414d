package filtertest

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// Helpers for the benchmarks, the memory test, the spoofing matrix and the
// whole-filter fuzz target.

const noopPkg = "github.com/mtlsgate/mtlsgate/filter/examples/noop"

var (
	noopOnce sync.Once
	noopMod  *hosttest.Module
	noopErr  error
)

// noopModule is the no-op filter built from the same ABI layer: the floor.
func noopModule(tb testing.TB) *hosttest.Module {
	tb.Helper()
	noopOnce.Do(func() {
		var path string
		if path, noopErr = hosttest.BuildWasm(noopPkg); noopErr == nil {
			noopMod, noopErr = hosttest.CompileFile(context.Background(), path)
		}
	})
	if noopErr != nil {
		tb.Fatalf("noop module: %v", noopErr)
	}
	return noopMod
}

// envoyXFCC is the element Envoy's SANITIZE_SET writes with
// set_current_client_cert_details {cert, chain, subject, uri, dns}
// (source/common/router/header_formatter / connection_info_impl_base.cc):
// Hash, Cert and Chain URL-encoded PEM, Subject quoted, one URI, DNS each.
func envoyXFCC(leaf *testpki.Cert, chain []byte) string {
	parts := []string{
		"By=spiffe://gateway.example/envoy",
		"Hash=" + strings.Repeat("ab", 32),
		`Cert="` + envoyPEMEscaper.Replace(string(leaf.PEM())) + `"`,
	}
	if chain != nil {
		parts = append(parts, `Chain="`+envoyPEMEscaper.Replace(string(chain))+`"`)
	}
	parts = append(parts, `Subject="`+strings.ReplaceAll(leaf.Cert.Subject.String(), `"`, `\"`)+`"`, "URI=")
	for _, d := range leaf.Cert.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ";")
}

// presented is the leaf followed by the chain's intermediates, nearest to the
// leaf first: what a client sends in its TLS Certificate message.
func presented(ch *testpki.Chain, leaf *testpki.Cert) []byte {
	out := leaf.PEM()
	for i := len(ch.Intermediates) - 1; i >= 0; i-- {
		out = append(out, ch.Intermediates[i].PEM()...)
	}
	return out
}

// leafPool is a chain plus n distinct leaves from its issuer sharing one key
// (building thousands of keys, or a few RSA-4096 ones, would dominate setup;
// the verifier's work does not depend on whether leaves share a key).
type leafPool struct {
	ch     *testpki.Chain
	leaves []*testpki.Cert
	xfcc   []string
}

var (
	poolMu sync.Mutex
	pools  = map[string]*leafPool{}
)

func newLeafPool(tb testing.TB, k testpki.KeyType, depth, n int) *leafPool {
	tb.Helper()
	poolMu.Lock()
	defer poolMu.Unlock()
	key := k.String() + "/" + strconv.Itoa(depth) + "/" + strconv.Itoa(n)
	if p := pools[key]; p != nil {
		return p
	}
	ch := testpki.Must(testpki.NewChain(k, depth, testpki.Options{CommonName: "bench client", DNSNames: []string{"bench.example"}}))
	p := &leafPool{ch: ch, leaves: testpki.Must(ch.SiblingLeaves(n))}
	for _, leaf := range p.leaves {
		p.xfcc = append(p.xfcc, envoyXFCC(leaf, presented(ch, leaf)))
	}
	pools[key] = p
	return p
}

// benchRequest is the request every benchmark sends, the same shape as
// host-test's BenchmarkNoopFilter: ten request headers (one of them the XFCC
// the listener set), an upstream answer with ten headers.
func benchRequest(xfccValue string) *hosttest.Request {
	return &hosttest.Request{
		Headers: []abi.Header{
			{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/api/v1/things"},
			{Key: ":authority", Value: "api.example.org"}, {Key: ":scheme", Value: "https"},
			{Key: "user-agent", Value: "bench/1.0"}, {Key: "accept", Value: "*/*"},
			{Key: "x-request-id", Value: "0f5e2c1a-7c1d-4b7e-9f2a-1d2e3f4a5b6c"},
			{Key: "x-forwarded-proto", Value: "https"}, {Key: "content-length", Value: "0"},
			{Key: "x-forwarded-client-cert", Value: xfccValue},
		},
		Conn: &hosttest.Connection{ID: 7, Source: netip.MustParseAddrPort("203.0.113.7:51000"),
			Destination: netip.MustParseAddrPort("10.0.0.1:8443")},
		Response: &hosttest.Response{Headers: []abi.Header{
			{Key: ":status", Value: "200"}, {Key: "content-type", Value: "application/json"},
			{Key: "content-length", Value: "2"}, {Key: "date", Value: "Mon, 23 Nov 2026 16:00:00 GMT"},
			{Key: "server", Value: "backend"}, {Key: "cache-control", Value: "no-store"},
			{Key: "x-request-id", Value: "0f5e2c1a-7c1d-4b7e-9f2a-1d2e3f4a5b6c"},
			{Key: "vary", Value: "accept"}, {Key: "etag", Value: "\"1\""}, {Key: "x-trace", Value: "t"},
		}},
	}
}

// filterConfig is a one-policy configuration with an inline bundle of cas.
func filterConfig(options map[string]any, cas ...*testpki.Cert) map[string]any {
	return map[string]any{"policies": []any{policyDoc("mtls", options)}, "trustBundle": inlineBundle(cas)}
}

// bundleDocs fails the benchmark instead of returning testpki.BundleDocs' error.
func bundleDocs(tb testing.TB, n int) [2][]byte {
	tb.Helper()
	docs, err := testpki.BundleDocs(n)
	if err != nil {
		tb.Fatal(err)
	}
	return docs
}
