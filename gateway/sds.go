package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// secretTypeURL is the SDS resource type (go-control-plane resource.SecretType).
const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sdsClient keeps one secret current over an SDS stream, the way Envoy's
// SdsApi does for a transport socket: subscribe by name with a node identity,
// ACK each push, and swap the secret in place so new connections use the
// latest one. The secret is a tls_certificate (presented upstream) or a
// validation_context (verifying clients at the listener).
type sdsClient struct {
	addr, name, node string
	onUpdate         func()
	logf             func(format string, args ...any)

	// validation: the secret is a validation_context, not a tls_certificate.
	validation bool

	mu      sync.RWMutex
	cert    *tls.Certificate
	trust   *clientTrust
	version string
	ready   chan struct{}
	once    sync.Once
}

func newSDSClient(addr, name, node string, logf func(string, ...any), onUpdate func()) *sdsClient {
	return &sdsClient{addr: addr, name: name, node: node, logf: logf, onUpdate: onUpdate, ready: make(chan struct{})}
}

// Certificate returns the latest secret; it suits tls.Config.GetClientCertificate.
func (c *sdsClient) Certificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.cert == nil {
		// Envoy keeps such a cluster warming; failing the handshake here is
		// the closest a per-request client can get.
		return nil, fmt.Errorf("SDS secret %q not received yet from %s", c.name, c.addr)
	}
	return c.cert, nil
}

// Trust returns the latest validation context, or nil before the first.
func (c *sdsClient) Trust() *clientTrust {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.trust
}

// Version is the version_info of the secret in use.
func (c *sdsClient) Version() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// Ready is closed once the first secret has arrived.
func (c *sdsClient) Ready() <-chan struct{} { return c.ready }

// run keeps a stream open until ctx ends, reconnecting with backoff as Envoy
// does when the SDS server goes away.
func (c *sdsClient) run(ctx context.Context) {
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.logf("sds: %v", err)
		return
	}
	defer conn.Close()
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.stream(ctx, client)
		if ctx.Err() != nil {
			return
		}
		c.logf("sds: stream to %s for %q ended: %v; retrying in %s", c.addr, c.name, err, backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (c *sdsClient) stream(ctx context.Context, client secretv3.SecretDiscoveryServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.StreamSecrets(ctx)
	if err != nil {
		return fmt.Errorf("open StreamSecrets: %w", err)
	}
	node := &corev3.Node{Id: c.node, Cluster: "mtlsgate-dev"}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: secretTypeURL, ResourceNames: []string{c.name}, VersionInfo: c.Version()}
	if err := st.Send(req); err != nil {
		return fmt.Errorf("send subscription: %w", err)
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("server closed the stream")
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		ack := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: secretTypeURL, ResourceNames: []string{c.name},
			ResponseNonce: resp.GetNonce()}
		if err := c.apply(resp); err != nil {
			// A NACK keeps the previous version, as Envoy does with a secret
			// it cannot load.
			c.logf("sds: rejecting version %s of %q: %v", resp.GetVersionInfo(), c.name, err)
			ack.VersionInfo = c.Version()
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		} else {
			ack.VersionInfo = resp.GetVersionInfo()
		}
		if err := st.Send(ack); err != nil {
			return fmt.Errorf("send ack: %w", err)
		}
	}
}

func (c *sdsClient) apply(resp *discoveryv3.DiscoveryResponse) error {
	for _, res := range resp.GetResources() {
		var s tlsv3.Secret
		if err := res.UnmarshalTo(&s); err != nil {
			return fmt.Errorf("decode secret: %w", err)
		}
		if s.GetName() != c.name {
			continue
		}
		if c.validation {
			vc := s.GetValidationContext()
			if vc == nil {
				return fmt.Errorf("secret %q is not a validation_context", c.name)
			}
			ct, err := parseValidationContext(vc)
			if err != nil {
				return err
			}
			c.swap(resp.GetVersionInfo(), nil, ct, fmt.Sprintf("%d CAs, %d CRLs", ct.cas, len(ct.crls)))
			return nil
		}
		tc := s.GetTlsCertificate()
		if tc == nil {
			return fmt.Errorf("secret %q is not a tls_certificate", c.name)
		}
		chain, err := dataSource(tc.GetCertificateChain())
		if err != nil {
			return fmt.Errorf("certificate_chain: %w", err)
		}
		key, err := dataSource(tc.GetPrivateKey())
		if err != nil {
			return fmt.Errorf("private_key: %w", err)
		}
		cert, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return fmt.Errorf("load key pair: %w", err)
		}
		c.swap(resp.GetVersionInfo(), &cert, nil, "subject "+cert.Leaf.Subject.String())
		return nil
	}
	// State of the world: a response without our resource means the server
	// has none by that name (yet); keep what we have.
	return nil
}

// swap puts a new version of the secret in use.
func (c *sdsClient) swap(version string, cert *tls.Certificate, trust *clientTrust, what string) {
	c.mu.Lock()
	c.cert, c.trust, c.version = cert, trust, version
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })
	c.logf("sds: secret %q version %s in use (%s)", c.name, version, what)
	if c.onUpdate != nil {
		c.onUpdate()
	}
}

func dataSource(ds *corev3.DataSource) ([]byte, error) {
	switch {
	case ds == nil:
		return nil, errors.New("missing")
	case ds.GetInlineBytes() != nil:
		return ds.GetInlineBytes(), nil
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString()), nil
	}
	return nil, errors.New("only inline_bytes and inline_string data sources are supported")
}
