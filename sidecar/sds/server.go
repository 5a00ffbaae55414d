package sds

import (
	"context"
	"time"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// NewGRPCServer returns a gRPC server offering the SecretDiscoveryService
// (state of the world, delta and fetch) from c, reporting subscriptions to t.
// ctx bounds the xDS server's lifetime.
func NewGRPCServer(ctx context.Context, c *Cache, t *Tracker) *grpc.Server {
	g := grpc.NewServer(
		// Envoy keeps SDS streams open for its lifetime; keepalives let us
		// notice a vanished Envoy and drop its subscriptions.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	secretv3.RegisterSecretDiscoveryServiceServer(g, serverv3.NewServer(ctx, c.XDS(), t.Callbacks()))
	return g
}
