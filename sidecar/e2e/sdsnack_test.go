package e2e

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

// TestServeCountsAndLogsNacks: an Envoy that cannot load a secret NACKs it
// and keeps what it had; the running sidecar must say so where operators
// look (its log and mtlsgate_sds_rejections_total), not only in the
// subscriptions listing.
func TestServeCountsAndLogsNacks(t *testing.T) {
	p := startServe(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(dial(t, p.addrs.SDS)).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-nack", Cluster: "edge"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: []string{sds.ClientCASecret}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	const msg = "Failed to load trusted CA certificates from <inline>"
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: []string{sds.ClientCASecret},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &status.Status{Code: 13, Message: msg}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NACK counted", func() bool {
		return strings.Contains(string(httpBody(t, "http://"+p.addrs.Admin+"/metrics")), "mtlsgate_sds_rejections_total 1")
	})
	waitFor(t, "the NACK logged", func() bool {
		log := p.stderr.String()
		return strings.Contains(log, msg) && strings.Contains(log, "envoy-nack")
	})
}
