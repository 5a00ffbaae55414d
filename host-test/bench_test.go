package hosttest_test

import (
	"context"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// BenchmarkNoopFilter is the per-request floor: the no-op filter's request
// and response headers callbacks (~10 headers each) plus context create,
// on_log, on_done and on_delete, through the host.
func BenchmarkNoopFilter(b *testing.B) {
	m := module(b, noopPkg)
	vm := newVM(b, m.NewPlugin(hosttest.PluginConfig{Name: "noop"}))
	r := &hosttest.Request{
		Headers: []abi.Header{
			{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/api/v1/things"},
			{Key: ":authority", Value: "api.example.org"}, {Key: ":scheme", Value: "https"},
			{Key: "user-agent", Value: "bench/1.0"}, {Key: "accept", Value: "*/*"},
			{Key: "x-request-id", Value: "0f5e2c1a-7c1d-4b7e-9f2a-1d2e3f4a5b6c"},
			{Key: "x-forwarded-proto", Value: "https"}, {Key: "content-length", Value: "0"},
			{Key: "x-forwarded-client-cert", Value: "By=spiffe://example.org/gw;Hash=abc;Subject=\"CN=client\""},
		},
		Response: &hosttest.Response{Headers: []abi.Header{
			{Key: ":status", Value: "200"}, {Key: "content-type", Value: "application/json"},
			{Key: "content-length", Value: "2"}, {Key: "date", Value: "Mon, 23 Nov 2026 16:00:00 GMT"},
			{Key: "server", Value: "backend"}, {Key: "cache-control", Value: "no-store"},
			{Key: "x-request-id", Value: "0f5e2c1a-7c1d-4b7e-9f2a-1d2e3f4a5b6c"},
			{Key: "vary", Value: "accept"}, {Key: "etag", Value: "\"1\""}, {Key: "x-trace", Value: "t"},
		}},
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := vm.Do(ctx, r)
		if err != nil || res.Status != 200 {
			b.Fatalf("%v %v", res, err)
		}
	}
}
