package sds

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// server is a real SDS gRPC server on a loopback port, fed through Update
// as the daemon feeds it from the store.
type server struct {
	t       *testing.T
	cache   *Cache
	tracker *Tracker
	conn    *grpc.ClientConn
}

func startServer(t *testing.T, st State) *server {
	t.Helper()
	return startServerWith(t, st, Options{Environment: "development"})
}

// startServerWith is startServer with a cache configured by o.
func startServerWith(t *testing.T, st State, o Options) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := NewCache(o)
	if err := c.Update(ctx, st); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker()
	g := NewGRPCServer(ctx, c, tr)
	go func() { _ = g.Serve(l) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		g.Stop()
	})
	return &server{t: t, cache: c, tracker: tr, conn: conn}
}

func (s *server) update(st State) {
	s.t.Helper()
	if err := s.cache.Update(context.Background(), st); err != nil {
		s.t.Fatal(err)
	}
}

func outbound(name string, enabled bool, chain string) store.Outbound {
	return store.Outbound{ID: "mtlscert_" + name, Name: name, Enabled: enabled, EnvironmentTypes: []string{"development"},
		ChainPEM: chain, KeyPEM: []byte("key for " + chain)}
}

func ca(id string) store.CA {
	return store.CA{ID: id, Name: id, PEM: "-----BEGIN CERTIFICATE-----\n" + id + "\n-----END CERTIFICATE-----\n"}
}

// response is one answer a test client received, decoded.
type response struct {
	version, nonce string
	secrets        map[string]*tlsv3.Secret
	removed        []string
}

func (r response) names() []string {
	var out []string
	for n := range r.secrets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// client is a test SDS client, state of the world or delta. It answers
// nothing by itself: each test sends the ACKs and NACKs Envoy would.
type client struct {
	t     *testing.T
	sotw  secretv3.SecretDiscoveryService_StreamSecretsClient
	delta secretv3.SecretDiscoveryService_DeltaSecretsClient
	resps chan response
	err   chan error
}

func (s *server) openSotW(names ...string) *client {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	st, err := secretv3.NewSecretDiscoveryServiceClient(s.conn).StreamSecrets(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	c := &client{t: s.t, sotw: st, resps: make(chan response, 1024), err: make(chan error, 1)}
	c.sendSotW(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy-1", Cluster: "edge"}, TypeUrl: resourcev3.SecretType, ResourceNames: names})
	c.pump(func() (response, []*anypb.Any, error) {
		resp, err := st.Recv()
		return response{version: resp.GetVersionInfo(), nonce: resp.GetNonce()}, resp.GetResources(), err
	})
	return c
}

// pump hands the stream's responses, secrets decoded, to c.resps until the
// stream ends.
func (c *client) pump(recv func() (response, []*anypb.Any, error)) {
	go func() {
		for {
			r, anys, err := recv()
			if err != nil {
				c.err <- err
				return
			}
			r.secrets = map[string]*tlsv3.Secret{}
			for _, a := range anys {
				var sec tlsv3.Secret
				if err := a.UnmarshalTo(&sec); err != nil {
					c.err <- err
					return
				}
				r.secrets[sec.GetName()] = &sec
			}
			c.resps <- r
		}
	}()
}

func (s *server) openDelta(names ...string) *client {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	st, err := secretv3.NewSecretDiscoveryServiceClient(s.conn).DeltaSecrets(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	c := &client{t: s.t, delta: st, resps: make(chan response, 1024), err: make(chan error, 1)}
	c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "envoy-2", Cluster: "edge"}, TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: names})
	c.pump(func() (response, []*anypb.Any, error) {
		resp, err := st.Recv()
		var anys []*anypb.Any
		for _, res := range resp.GetResources() {
			anys = append(anys, res.GetResource())
		}
		return response{version: resp.GetSystemVersionInfo(), nonce: resp.GetNonce(), removed: resp.GetRemovedResources()}, anys, err
	})
	return c
}

func (c *client) sendSotW(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.sotw.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) sendDelta(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.delta.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// ack accepts r on a state-of-the-world stream subscribed to names.
func (c *client) ack(r response, names ...string) {
	c.t.Helper()
	c.sendSotW(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: names, VersionInfo: r.version, ResponseNonce: r.nonce})
}

// nack rejects r the way Envoy's SdsApi does: the last accepted version, the
// nonce of the rejected answer and an error.
func (c *client) nack(r response, accepted string, names ...string) {
	c.t.Helper()
	c.sendSotW(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: names, VersionInfo: accepted, ResponseNonce: r.nonce,
		ErrorDetail: &status.Status{Code: 3, Message: "Missing SDS resources for " + names[0] + " in onConfigUpdate()"}})
}

// next waits for an answer. The deadline only bounds a broken build.
func (c *client) next(what string) response {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case err := <-c.err:
		c.t.Fatalf("stream failed waiting for %s: %v", what, err)
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no answer for %s", what)
	}
	return response{}
}

// quiet asserts that no answer comes for d, rejecting every answer that does
// come as Envoy would (an answer without the secret is a NACK, so a server
// that resends on NACK shows here as a count in the thousands).
func (c *client) quiet(what string, d time.Duration, names ...string) {
	c.t.Helper()
	n := 0
	var first response
	deadline := time.After(d)
	for {
		select {
		case r := <-c.resps:
			if n == 0 {
				first = r
			}
			n++
			if c.sotw != nil {
				c.nack(r, "", names...)
			}
		case err := <-c.err:
			c.t.Fatalf("stream failed while %s: %v", what, err)
		case <-deadline:
			if n > 0 {
				c.t.Fatalf("%s: %d answers in %v, the first with secrets %v (removed %v); want none", what, n, d, first.names(), first.removed)
			}
			return
		}
	}
}

// TestSotWWaitsForMissingSecret: Envoy started before its outbound
// certificate was uploaded asks for a name the store does not have. The
// request is held, not answered empty, and answered when the certificate
// arrives.
func TestSotWWaitsForMissingSecret(t *testing.T) {
	s := startServer(t, State{})
	c := s.openSotW("backend_client_cert")
	c.quiet("asking for a secret that does not exist", time.Second, "backend_client_cert")

	s.update(State{Outbound: []store.Outbound{outbound("backend_client_cert", true, "chain-1")}})
	r := c.next("the uploaded certificate")
	if got := r.names(); !slices.Equal(got, []string{"backend_client_cert"}) {
		t.Fatalf("answer carries %v", got)
	}
	if chain := r.secrets["backend_client_cert"].GetTlsCertificate().GetCertificateChain().GetInlineString(); chain != "chain-1" {
		t.Fatalf("chain %q", chain)
	}
	if r.version != s.cache.Version() {
		t.Fatalf("answer version %q, cache at %q", r.version, s.cache.Version())
	}
	c.ack(r, "backend_client_cert")
	c.quiet("after the ACK", 200*time.Millisecond, "backend_client_cert")
}

// TestSotWDisableDoesNotFlood: disabling a certificate an Envoy subscribes to
// takes it out of the snapshot. The stream gets no empty answer (Envoy would
// reject it and keep the old secret anyway), and the next material under the
// name reaches it.
func TestSotWDisableDoesNotFlood(t *testing.T) {
	s := startServer(t, State{Outbound: []store.Outbound{outbound("backend_client_cert", true, "chain-1")}})
	c := s.openSotW("backend_client_cert")
	first := c.next("the certificate")
	c.ack(first, "backend_client_cert")

	s.update(State{Outbound: []store.Outbound{outbound("backend_client_cert", false, "chain-1")}})
	c.quiet("after disable", time.Second, "backend_client_cert")

	// Rotated while disabled, then enabled again.
	s.update(State{Outbound: []store.Outbound{outbound("backend_client_cert", true, "chain-2")}})
	r := c.next("the re-enabled certificate")
	if chain := r.secrets["backend_client_cert"].GetTlsCertificate().GetCertificateChain().GetInlineString(); chain != "chain-2" {
		t.Fatalf("chain %q after enable", chain)
	}
}

// TestSotWNackIsNotAnsweredWithTheSameVersion: a rejected answer is not sent
// again; the next version is.
func TestSotWNackIsNotAnsweredWithTheSameVersion(t *testing.T) {
	s := startServer(t, State{CAs: []store.CA{ca("mtlsca_1")}})
	c := s.openSotW(ClientCASecret)
	r := c.next("the validation context")
	c.nack(r, "", ClientCASecret)
	c.quiet("after a NACK", time.Second, ClientCASecret)

	s.update(State{CAs: []store.CA{ca("mtlsca_1"), ca("mtlsca_2")}})
	r2 := c.next("the next version")
	if r2.version == r.version || r2.secrets[ClientCASecret] == nil {
		t.Fatalf("after the NACK got version %q (rejected %q) with %v", r2.version, r.version, r2.names())
	}
}

// TestSotWSomeNamesMissing: a stream naming several secrets gets those that
// exist, so a missing outbound certificate does not hold back CA changes,
// and gets the missing one when it is added.
func TestSotWSomeNamesMissing(t *testing.T) {
	names := []string{ClientCASecret, "backend_client_cert"}
	s := startServer(t, State{CAs: []store.CA{ca("mtlsca_1")}})
	c := s.openSotW(names...)
	r := c.next("the existing secret")
	if got := r.names(); !slices.Equal(got, []string{ClientCASecret}) {
		t.Fatalf("answer carries %v", got)
	}
	c.ack(r, names...)
	c.quiet("after the ACK", 300*time.Millisecond, names...)

	s.update(State{CAs: []store.CA{ca("mtlsca_1")}, Outbound: []store.Outbound{outbound("backend_client_cert", true, "chain-1")}})
	if got := c.next("both secrets").names(); !slices.Equal(got, []string{"backend_client_cert", ClientCASecret}) {
		t.Fatalf("answer carries %v", got)
	}
}

// TestDeltaWaitsAndRemoves: delta streams keep go-control-plane's behaviour,
// which already holds a request for a missing name, reports a removal once
// and does not answer a NACK.
func TestDeltaWaitsAndRemoves(t *testing.T) {
	s := startServer(t, State{})
	c := s.openDelta("backend_client_cert")
	c.quiet("asking for a secret that does not exist", time.Second)

	s.update(State{Outbound: []store.Outbound{outbound("backend_client_cert", true, "chain-1")}})
	r := c.next("the uploaded certificate")
	if got := r.names(); !slices.Equal(got, []string{"backend_client_cert"}) {
		t.Fatalf("answer carries %v", got)
	}
	c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: r.nonce})

	s.update(State{Outbound: []store.Outbound{outbound("backend_client_cert", false, "chain-1")}})
	r = c.next("the removal")
	if !slices.Equal(r.removed, []string{"backend_client_cert"}) || len(r.secrets) != 0 {
		t.Fatalf("after disable: secrets %v removed %v", r.names(), r.removed)
	}
	c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: r.nonce,
		ErrorDetail: &status.Status{Code: 3, Message: "Missing SDS resources for backend_client_cert in onConfigUpdate()"}})
	c.quiet("after a NACK of the removal", time.Second)
}

// TestWildcardRefused: a request that names no secret, or "*", would get
// every outbound private key. Every form of it is refused with a message
// that says to name the secrets.
func TestWildcardRefused(t *testing.T) {
	const key = "key for chain-1"
	s := startServer(t, State{CAs: []store.CA{ca("mtlsca_1")}, Outbound: []store.Outbound{outbound("backend_client_cert", true, "chain-1")}})
	client := secretv3.NewSecretDiscoveryServiceClient(s.conn)
	refused := func(what string, err error) {
		t.Helper()
		if st, _ := grpcstatus.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "resource_names") {
			t.Errorf("%s: got %v, want InvalidArgument saying to name the secrets", what, err)
		}
	}

	for _, names := range [][]string{nil, {"*"}, {"*", "backend_client_cert"}} {
		resp, err := client.FetchSecrets(context.Background(), &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "anyone"}, ResourceNames: names})
		if strings.Contains(resp.String(), key) {
			t.Fatalf("FetchSecrets %q handed out a private key", names)
		}
		refused(fmt.Sprintf("FetchSecrets %q", names), err)

		c := s.openSotW(names...)
		select {
		case r := <-c.resps:
			t.Fatalf("StreamSecrets %q answered with %v", names, r.names())
		case err := <-c.err:
			refused(fmt.Sprintf("StreamSecrets %q", names), err)
		case <-time.After(10 * time.Second):
			t.Fatalf("StreamSecrets %q: neither answered nor refused", names)
		}

		d := s.openDelta(names...)
		select {
		case r := <-d.resps:
			t.Fatalf("DeltaSecrets %q answered with %v", names, r.names())
		case err := <-d.err:
			refused(fmt.Sprintf("DeltaSecrets %q", names), err)
		case <-time.After(10 * time.Second):
			t.Fatalf("DeltaSecrets %q: neither answered nor refused", names)
		}
	}

	// A named fetch still works.
	resp, err := client.FetchSecrets(context.Background(), &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, ResourceNames: []string{ClientCASecret}})
	if err != nil || len(resp.GetResources()) != 1 {
		t.Fatalf("named FetchSecrets: %v, %d resources", err, len(resp.GetResources()))
	}

	// A stream that drops all its names later subscribes to nothing: it is
	// not answered, and certainly not with every secret.
	c := s.openSotW("backend_client_cert")
	r := c.next("the named secret")
	c.sendSotW(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, VersionInfo: r.version, ResponseNonce: r.nonce})
	c.quiet("after dropping every name", 500*time.Millisecond, "backend_client_cert")
}
