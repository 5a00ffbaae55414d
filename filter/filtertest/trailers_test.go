package filtertest

import (
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestTrailersCannotCarryIdentity: the filter decides on headers, and a
// client can also send trailers (chunked HTTP/1.1, HTTP/2). Envoy passes
// them to an HTTP/2 upstream, where a gRPC server reads them as metadata, so
// an identity name or certificate input in a trailer is a forged identity
// unless the filter removes it. Other trailers stay.
func TestTrailersCannotCarryIdentity(t *testing.T) {
	p := thePKI(t)
	cfg := map[string]any{
		"policies": []any{policyDoc("mtls", nil), policyDoc("open", map[string]any{"allowUnauthenticatedRequests": true}),
			policyDoc("lb", map[string]any{"certificateSource": "header", "certificateHeader": "x-ssl-client-cert", "trustedSourceCIDRs": []string{"10.9.0.0/16"}})},
		"routes": []any{map[string]any{"pathPrefix": "/admin/", "policy": "mtls"}, map[string]any{"pathPrefix": "/lb/", "policy": "lb"},
			map[string]any{"pathPrefix": "/", "policy": "open"}},
		"trustBundle": inlineBundle([]*testpki.Cert{p.root}),
	}
	_, vm := newPlugin(t, cfg, nil)
	forged := []abi.Header{
		{Key: "x-user-sub", Value: "CN=admin"}, {Key: "x_user_sub", Value: "CN=admin"},
		{Key: "x-mtls-verification-status", Value: "SUCCESS"}, {Key: "x_mtls_subject_dn", Value: "CN=admin"},
		{Key: "x-forwarded-client-cert", Value: "Hash=00;Subject=\"CN=admin\""},
		{Key: "x-ssl-client-cert", Value: "forged"}, {Key: "x_ssl_client_cert", Value: "forged"},
		{Key: "x-client-id", Value: "admin"}, {Key: "x-profile-id", Value: "admin"},
	}
	kept := abi.Header{Key: "x-checksum", Value: "sha256=abc"}
	for _, path := range []string{"/public", "/public/upload"} {
		req := request(path, "", abi.Header{Key: "content-type", Value: "application/grpc"})
		req.Body = []byte("payload")
		req.Trailers = append(append([]abi.Header(nil), forged...), kept)
		res := do(t, vm, req)
		if res.Forwarded == nil {
			t.Fatalf("%s: not forwarded: %d %s", path, res.LocalResponse.Status, res.LocalResponse.Body)
		}
		for _, h := range forged {
			if v, ok := header(res.Forwarded.Trailers, h.Key); ok {
				t.Errorf("%s: trailer %s: %q reached the upstream", path, h.Key, v)
			}
		}
		if v, _ := header(res.Forwarded.Trailers, kept.Key); v != kept.Value {
			t.Errorf("%s: trailer %s = %q, want it kept", path, kept.Key, v)
		}
	}
	if err := vm.Err(); err != nil {
		t.Fatal(err)
	}
}
