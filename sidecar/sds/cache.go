// Package sds serves the sidecar's trust material to Envoy over the Secret
// Discovery Service. The cache side (this file) turns store state into
// secrets and keeps a go-control-plane snapshot cache in step with the store;
// server.go is the gRPC transport and subscribers.go records who listens.
package sds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// ClientCASecret is the validation-context secret Envoy's listener uses to
// verify client certificates.
const ClientCASecret = "mtlsgate-client-ca"

// State is the store content a snapshot is built from. Outbound entries must
// carry their keys.
type State struct {
	CAs      []store.CA
	CRLs     []store.CRL
	Outbound []store.Outbound
}

// Cache is the SDS view of the store. All Envoys beside one sidecar see the
// same secrets, so one snapshot serves every node.
//
// State-of-the-world streams are answered here rather than by
// go-control-plane's snapshot cache, which answers a request at once even
// when none of the secrets it names exists. Envoy rejects such an empty
// answer ("Missing SDS resources"), and the NACK, carrying the old version,
// made the snapshot cache send the same answer again: tens of thousands of
// responses a second for as long as a secret Envoy asks for is missing (an
// outbound certificate not uploaded yet, disabled, or of another
// environment). Here a stream is answered only when at least one secret it
// names exists and it has not been sent that secret at the current version,
// which also keeps a NACKed version from being sent again. Delta streams
// (which never answer with nothing and track versions per secret) and fetches
// still go to the snapshot cache.
type Cache struct {
	opts Options
	sc   cachev3.SnapshotCache

	mu      sync.Mutex
	version string
	secrets map[string]*anypb.Any
	watches map[int64]*sotwWatch
	nextID  int64
}

// sotwWatch is a state-of-the-world request waiting for secrets it has not
// been sent.
type sotwWatch struct {
	req *cachev3.Request
	sub cachev3.Subscription
	out chan cachev3.Response
}

// snapshotKey is the single node key: allNodes maps every node to it.
const snapshotKey = "mtlsgate"

type allNodes struct{}

func (allNodes) ID(*corev3.Node) string { return snapshotKey }

// Options choose what a cache publishes.
type Options struct {
	// Environment selects the outbound certificates published: those whose
	// environment types include it.
	Environment string
	// CRLs puts the stored CRLs into the validation context, for deployments
	// where Envoy alone checks revocation. Envoy then refuses at the
	// handshake every client whose issuer has no current list among them, so
	// it is off unless asked for: the filter checks revocation from the
	// bundle, CA by CA.
	CRLs bool
}

// NewCache returns a cache that publishes what o selects.
func NewCache(o Options) *Cache {
	return &Cache{
		opts:    o,
		sc:      cachev3.NewSnapshotCache(false, allNodes{}, nil),
		secrets: map[string]*anypb.Any{},
		watches: map[int64]*sotwWatch{},
	}
}

// XDS is the go-control-plane cache the server reads.
func (c *Cache) XDS() cachev3.Cache { return xdsView{c} }

// Version is the version of the current snapshot.
func (c *Cache) Version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// Update publishes st. Watches on the cache are answered before it returns,
// so subscribed streams have the new secrets queued when the API answers.
func (c *Cache) Update(ctx context.Context, st State) error {
	secrets := Secrets(st, c.opts)
	h := sha256.New()
	res := make([]types.Resource, 0, len(secrets))
	anys := make(map[string]*anypb.Any, len(secrets))
	for _, s := range secrets {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		if err != nil {
			return fmt.Errorf("encode secret %s: %w", s.Name, err)
		}
		h.Write(b)
		res = append(res, s)
		anys[s.Name] = &anypb.Any{TypeUrl: resourcev3.SecretType, Value: b}
	}
	// Names are part of the version though no secret carries them, so a
	// rename is pushed too and every subscriber's version moves with the
	// store's records.
	for _, ca := range st.CAs {
		fmt.Fprintf(h, "\x00ca %s %s", ca.ID, ca.Name)
	}
	version := hex.EncodeToString(h.Sum(nil)[:8])
	c.mu.Lock()
	defer c.mu.Unlock()
	if version == c.version {
		return nil
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{resourcev3.SecretType: res})
	if err != nil {
		return fmt.Errorf("build SDS snapshot: %w", err)
	}
	if err := c.sc.SetSnapshot(ctx, snapshotKey, snap); err != nil {
		return fmt.Errorf("publish SDS snapshot: %w", err)
	}
	c.version, c.secrets = version, anys
	for id, w := range c.watches {
		if c.respond(w) {
			delete(c.watches, id)
		}
	}
	return nil
}

// respond sends w the secrets it names at the current version, unless none
// of them exists or the stream was already sent every one of them at this
// version (it acknowledged or rejected them; sending them again would change
// nothing). The caller holds c.mu.
func (c *Cache) respond(w *sotwWatch) bool {
	returned := w.sub.ReturnedResources()
	names := make([]string, 0, len(w.sub.SubscribedResources()))
	for n := range w.sub.SubscribedResources() {
		names = append(names, n)
	}
	sort.Strings(names)
	var resources []*anypb.Any
	sent := map[string]string{}
	news := false
	for _, n := range names {
		a, ok := c.secrets[n]
		if !ok {
			continue
		}
		resources = append(resources, a)
		sent[n] = c.version
		news = news || returned[n] != c.version
	}
	if !news {
		return false
	}
	// The server sends at most one answer per watch and gives each a channel
	// with room for it, so this does not block.
	w.out <- &cachev3.PassthroughResponse{
		Request:           w.req,
		DiscoveryResponse: &discoveryv3.DiscoveryResponse{VersionInfo: c.version, Resources: resources, TypeUrl: resourcev3.SecretType},
		ReturnedResources: sent,
	}
	return true
}

// xdsView is the cache as go-control-plane's server sees it.
type xdsView struct{ c *Cache }

// errWildcard refuses a request for every secret. Envoy names each secret it
// needs; a request without names would hand every outbound private key to
// whoever can reach the SDS listener.
var errWildcard = status.Errorf(codes.InvalidArgument,
	"the SDS request names no secret (or names \"*\"): mtlsgate sends secrets only by name, never all of them; put the secret names in resource_names, e.g. %q or an outbound certificate's name", ClientCASecret)

func checkType(typeURL string) error {
	if typeURL != resourcev3.SecretType {
		return status.Errorf(codes.InvalidArgument, "type %q is not served here: mtlsgate's SDS serves only %s", typeURL, resourcev3.SecretType)
	}
	return nil
}

func (v xdsView) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	if sub.IsWildcard() {
		return nil, errWildcard
	}
	c := v.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &sotwWatch{req: req, sub: sub, out: out}
	if c.respond(w) {
		return func() {}, nil
	}
	c.nextID++
	id := c.nextID
	c.watches[id] = w
	return func() {
		c.mu.Lock()
		delete(c.watches, id)
		c.mu.Unlock()
	}, nil
}

func (v xdsView) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	if sub.IsWildcard() {
		return nil, errWildcard
	}
	return v.c.sc.CreateDeltaWatch(req, sub, out)
}

func (v xdsView) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	if len(req.GetResourceNames()) == 0 || slices.Contains(req.GetResourceNames(), "*") {
		return nil, errWildcard
	}
	return v.c.sc.Fetch(ctx, req)
}

// Secrets builds the SDS resources: the client CA validation context (with
// the CRLs only when o.CRLs is set) and one tls_certificate per enabled
// outbound certificate of o.Environment.
func Secrets(st State, o Options) []*tlsv3.Secret {
	cas := slices.Clone(st.CAs)
	sort.Slice(cas, func(i, j int) bool { return cas[i].ID < cas[j].ID })
	var trusted strings.Builder
	for _, ca := range cas {
		trusted.WriteString(ca.PEM)
	}
	if trusted.Len() == 0 {
		// An empty trusted_ca would make Envoy skip verification (fail open)
		// in deployments that let Envoy verify; an anchor nobody holds the key
		// to keeps every client out until a CA is uploaded.
		trusted.WriteString(placeholderAnchor())
	}
	vc := &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: trusted.String()}},
	}
	var crls []store.CRL
	if o.CRLs {
		crls = slices.Clone(st.CRLs)
	}
	sort.Slice(crls, func(i, j int) bool { return crls[i].ID < crls[j].ID })
	var crlPEM strings.Builder
	for _, c := range crls {
		crlPEM.WriteString(c.PEM)
	}
	if crlPEM.Len() > 0 {
		// Envoy reads every CRL in one concatenated PEM DataSource, and then
		// (when it verifies: VERIFY_TRUST_CHAIN) refuses a client whose
		// leaf's issuer has no list among them, whichever CA the other lists
		// belong to. only_verify_leaf_cert_crl keeps it from also wanting a
		// list for every other certificate of the chain: the list for an
		// uploaded intermediate's own issuer is never here (a list is stored
		// only for the CA that signed it), so without it every client of an
		// intermediate anchor was refused once any list was published, and
		// the check it drops (a root against its own list) catches nothing.
		vc.Crl = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: crlPEM.String()}}
		vc.OnlyVerifyLeafCertCrl = true
	}
	out := []*tlsv3.Secret{{Name: ClientCASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}}
	for _, ob := range st.Outbound {
		if !ob.Enabled || !slices.Contains(ob.EnvironmentTypes, o.Environment) {
			continue
		}
		out = append(out, &tlsv3.Secret{Name: ob.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: ob.ChainPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ob.KeyPEM}},
		}}})
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].Name < out[1+j].Name })
	return out
}

var placeholder = sync.OnceValue(func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("generate placeholder anchor key: %v", err))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: PlaceholderCommonName, Organization: []string{"mtlsgate"}},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(fmt.Sprintf("sign placeholder anchor: %v", err))
	}
	// The key goes out of scope here and is never stored: nothing can chain to it.
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
})

// placeholderAnchor is a CA certificate whose key was discarded at creation.
func placeholderAnchor() string { return placeholder() }

// PlaceholderCommonName is the subject CN of the anchor served while no CA
// certificate is stored. Each process generates its own.
const PlaceholderCommonName = "mtlsgate placeholder: no CA certificate uploaded"

// IsPlaceholder reports whether a trusted_ca value is a no-CA placeholder
// (from any sidecar process).
func IsPlaceholder(trustedCA string) bool {
	b, rest := pem.Decode([]byte(trustedCA))
	if b == nil || len(rest) != 0 {
		return false
	}
	c, err := x509.ParseCertificate(b.Bytes)
	return err == nil && c.Subject.CommonName == PlaceholderCommonName
}
