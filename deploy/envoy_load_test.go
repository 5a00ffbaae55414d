package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	downstreamconnsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
)

// The extension types envoy.yaml uses. Naming them here is what registers them
// with the protobuf registry: protojson resolves every "@type" through it and
// rejects a typed_config whose type is not linked in, which is exactly the check
// Envoy makes when it looks an extension up by type URL.
var (
	_ = (*hcmv3.HttpConnectionManager)(nil)
	_ = (*routerv3.Router)(nil)
	_ = (*wasmfilterv3.Wasm)(nil)
	_ = (*tlsv3.DownstreamTlsContext)(nil)
	_ = (*tlsv3.UpstreamTlsContext)(nil)
	_ = (*upstreamhttpv3.HttpProtocolOptions)(nil)
	_ = (*fixedheapv3.FixedHeapConfig)(nil)
	_ = (*downstreamconnsv3.DownstreamConnectionsConfig)(nil)
	_ = (*wrapperspb.StringValue)(nil)
)

// Names fixed by the design's contracts (docs and the sidecar rely on them).
const (
	sdsCluster      = "mtlsgate_sds"
	sidecarCluster  = "mtlsgate_sidecar"
	wasmModulePath  = "build/mtlsgate.wasm"
	wasmRootID      = "mtlsgate"
	envoyConfigFile = "envoy.yaml"
)

// The sidecar's own definitions, so a rename on either side fails here rather
// than as a listener warming forever in production: the client CA secret name,
// and the rule outbound certificate names (their SDS secret names) follow.
const clientCASecret = sds.ClientCASecret

func servableSecretName(name string) bool { return pki.ValidName(name) == nil }

// repoRoot is the module root; tests run in deploy/.
func repoRoot() string { return ".." }

func readRepoFile(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(repoRoot(), name))
}

// parseBootstrap turns Envoy YAML into a Bootstrap exactly as strictly as Envoy
// does: duplicate keys, unknown fields and unresolvable Any types are errors.
func parseBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("bootstrap proto: %w", err)
	}
	return b, nil
}

// clusterRef is one place where the config names a cluster.
type clusterRef struct {
	name, where string
}

// sdsRef is one SDS secret the config asks for.
type sdsRef struct {
	name, where string
	validation  bool   // a validation context (CA list) rather than a certificate
	cluster     string // the gRPC cluster serving it; "" when not a GRPC api_config_source
}

// envoyFacts is what the walk over a bootstrap collects.
type envoyFacts struct {
	clusters    map[string]*clusterv3.Cluster
	clusterRefs []clusterRef
	secrets     []sdsRef
	files       []string
	wasm        []*wasmv3.PluginConfig
	downstream  []*tlsv3.DownstreamTlsContext
	upstream    []*tlsv3.UpstreamTlsContext
	hcms        []*hcmv3.HttpConnectionManager
}

// collect walks every message of the bootstrap, unpacking each Any, validates
// each unpacked message with its protoc-gen-validate rules (Bootstrap.ValidateAll
// does not look inside Any), and gathers the references the checks need.
func collect(b *bootstrapv3.Bootstrap) (*envoyFacts, error) {
	f := &envoyFacts{clusters: map[string]*clusterv3.Cluster{}}
	var errs []error
	if err := b.ValidateAll(); err != nil {
		errs = append(errs, fmt.Errorf("bootstrap: %w", err))
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if _, dup := f.clusters[c.GetName()]; dup {
			errs = append(errs, fmt.Errorf("cluster %q defined twice", c.GetName()))
		}
		f.clusters[c.GetName()] = c
	}
	var visit func(proto.Message, string)
	visit = func(m proto.Message, where string) {
		switch v := m.(type) {
		case *anypb.Any:
			inner, err := v.UnmarshalNew()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				return
			}
			if val, ok := inner.(interface{ ValidateAll() error }); ok {
				if err := val.ValidateAll(); err != nil {
					errs = append(errs, fmt.Errorf("%s (%s): %w", where, v.GetTypeUrl(), err))
				}
			}
			walk(inner.ProtoReflect(), where+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">", visit)
		case *routev3.RouteAction:
			if c := v.GetCluster(); c != "" {
				f.clusterRefs = append(f.clusterRefs, clusterRef{c, where})
			}
			for _, w := range v.GetWeightedClusters().GetClusters() {
				f.clusterRefs = append(f.clusterRefs, clusterRef{w.GetName(), where})
			}
		case *corev3.GrpcService_EnvoyGrpc:
			f.clusterRefs = append(f.clusterRefs, clusterRef{v.GetClusterName(), where})
		case *corev3.ApiConfigSource:
			for _, c := range v.GetClusterNames() {
				f.clusterRefs = append(f.clusterRefs, clusterRef{c, where})
			}
		case *corev3.HttpUri:
			f.clusterRefs = append(f.clusterRefs, clusterRef{v.GetCluster(), where})
		case *corev3.DataSource:
			if fn := v.GetFilename(); fn != "" {
				f.files = append(f.files, fn)
			}
		case *tlsv3.CommonTlsContext:
			for _, s := range v.GetTlsCertificateSdsSecretConfigs() {
				f.secrets = append(f.secrets, sdsOf(s, where+".tls_certificate_sds_secret_configs", false))
			}
			if s := v.GetValidationContextSdsSecretConfig(); s != nil {
				f.secrets = append(f.secrets, sdsOf(s, where+".validation_context_sds_secret_config", true))
			}
			if s := v.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
				f.secrets = append(f.secrets, sdsOf(s, where+".combined_validation_context", true))
			}
		case *tlsv3.DownstreamTlsContext:
			f.downstream = append(f.downstream, v)
		case *tlsv3.UpstreamTlsContext:
			f.upstream = append(f.upstream, v)
		case *hcmv3.HttpConnectionManager:
			f.hcms = append(f.hcms, v)
		case *wasmv3.PluginConfig:
			f.wasm = append(f.wasm, v)
		}
	}
	walk(b.ProtoReflect(), "bootstrap", visit)
	return f, errors.Join(errs...)
}

func sdsOf(s *tlsv3.SdsSecretConfig, where string, validation bool) sdsRef {
	r := sdsRef{name: s.GetName(), where: where, validation: validation}
	api := s.GetSdsConfig().GetApiConfigSource()
	if api.GetApiType() == corev3.ApiConfigSource_GRPC {
		for _, g := range api.GetGrpcServices() {
			r.cluster = g.GetEnvoyGrpc().GetClusterName()
		}
	}
	return r
}

// walk visits m and every message below it, depth first.
func walk(m protoreflect.Message, where string, visit func(proto.Message, string)) {
	visit(m.Interface(), where)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := where + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walk(mv.Message(), fmt.Sprintf("%s[%s]", name, k.String()), visit)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			walk(v.Message(), name, visit)
		}
		return true
	})
}

// checkEnvoy runs every check on a parsed bootstrap and returns what it found
// together with all problems at once, so a failing run lists every defect.
func checkEnvoy(b *bootstrapv3.Bootstrap) (*envoyFacts, error) {
	f, err := collect(b)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}

	for _, r := range f.clusterRefs {
		if _, ok := f.clusters[r.name]; !ok {
			errs = append(errs, fmt.Errorf("%s: cluster %q is not defined", r.where, r.name))
		}
	}

	errs = append(errs, checkSecrets(f)...)
	errs = append(errs, checkListener(f)...)
	errs = append(errs, checkEdgeLimits(b, f)...)
	errs = append(errs, checkSidecarClusters(f)...)

	if len(f.wasm) != 1 {
		errs = append(errs, fmt.Errorf("want exactly one wasm plugin, found %d", len(f.wasm)))
	}
	for _, pc := range f.wasm {
		errs = append(errs, checkWasmPlugin(pc, f)...)
	}
	return f, errors.Join(errs...)
}

// checkSecrets holds every SDS request to what the sidecar serves: the client CA
// list under its fixed name, and outbound certificates under identifier names.
// Envoy would otherwise wait for a secret nobody sends and keep the listener or
// cluster warming forever.
func checkSecrets(f *envoyFacts) []error {
	var errs []error
	if len(f.secrets) == 0 {
		errs = append(errs, errors.New("no SDS secrets referenced; the client CA list must come from the sidecar"))
	}
	sawCA := false
	for _, s := range f.secrets {
		if s.cluster != sdsCluster {
			errs = append(errs, fmt.Errorf("%s: secret %q must be fetched over gRPC from cluster %q, got %q", s.where, s.name, sdsCluster, s.cluster))
		}
		switch {
		case s.validation && s.name == clientCASecret:
			sawCA = true
		case s.validation:
			errs = append(errs, fmt.Errorf("%s: validation secret %q: the sidecar serves the client CA list only as %q", s.where, s.name, clientCASecret))
		case !servableSecretName(s.name):
			errs = append(errs, fmt.Errorf("%s: certificate secret %q is not a name the sidecar can serve (outbound certificate names are JavaScript identifiers)", s.where, s.name))
		}
	}
	if !sawCA {
		errs = append(errs, fmt.Errorf("no listener takes its validation context from SDS secret %q", clientCASecret))
	}
	return errs
}

// checkListener holds the listener and HCM to the request path in DESIGN.md.
func checkListener(f *envoyFacts) []error {
	var errs []error
	// Envoy accepts any upstream certificate unless given a CA and a name to
	// match: the backend leg would be open to whoever can intercept it.
	for _, u := range f.upstream {
		vc := u.GetCommonTlsContext().GetValidationContext()
		if vc.GetTrustedCa() == nil || len(vc.GetMatchTypedSubjectAltNames()) == 0 {
			errs = append(errs, fmt.Errorf("upstream TLS context (sni %q) does not verify the server: set validation_context with trusted_ca and match_typed_subject_alt_names", u.GetSni()))
		}
	}
	if len(f.downstream) == 0 {
		errs = append(errs, errors.New("no DownstreamTlsContext: the listener must terminate TLS"))
	}
	for _, d := range f.downstream {
		if d.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != clientCASecret &&
			d.GetCommonTlsContext().GetValidationContextSdsSecretConfig().GetName() != clientCASecret {
			errs = append(errs, fmt.Errorf("downstream TLS context does not take its CA list from %q", clientCASecret))
		}
	}
	if len(f.hcms) == 0 {
		errs = append(errs, errors.New("no http_connection_manager"))
	}
	for _, h := range f.hcms {
		// Anything but SANITIZE_SET lets a client-supplied x-forwarded-client-cert
		// reach the filter as if Envoy had written it.
		if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE_SET {
			errs = append(errs, fmt.Errorf("hcm %q: forward_client_cert_details is %v, want SANITIZE_SET", h.GetStatPrefix(), h.GetForwardClientCertDetails()))
		}
		// Without use_remote_address (or with trusted hops) Envoy's
		// source.address comes from X-Forwarded-For, which the client writes.
		if !h.GetUseRemoteAddress().GetValue() || h.GetXffNumTrustedHops() != 0 {
			errs = append(errs, fmt.Errorf("hcm %q: use_remote_address must be true with xff_num_trusted_hops 0, or source.address follows the client's X-Forwarded-For", h.GetStatPrefix()))
		}
		// uri and dns are written unquoted, so a client's SAN could add an
		// XFCC element; the filter needs only cert and chain.
		d := h.GetSetCurrentClientCertDetails()
		if !d.GetSubject().GetValue() || !d.GetCert() || !d.GetChain() || d.GetUri() || d.GetDns() {
			errs = append(errs, fmt.Errorf("hcm %q: set_current_client_cert_details must set subject, cert and chain, and not uri or dns; got %v", h.GetStatPrefix(), d))
		}
		errs = append(errs, checkEdgeHCM(fmt.Sprintf("hcm %q", h.GetStatPrefix()), h)...)
		filters := h.GetHttpFilters()
		wasmAt, routerAt := -1, -1
		for i, hf := range filters {
			switch hf.GetTypedConfig().GetTypeUrl() {
			case "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm":
				if wasmAt < 0 {
					wasmAt = i
				}
			case "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router":
				routerAt = i
			}
		}
		switch {
		case wasmAt < 0:
			errs = append(errs, fmt.Errorf("hcm %q: no envoy.filters.http.wasm filter", h.GetStatPrefix()))
		case routerAt != len(filters)-1:
			errs = append(errs, fmt.Errorf("hcm %q: the router must be the last http filter", h.GetStatPrefix()))
		case wasmAt > routerAt:
			errs = append(errs, fmt.Errorf("hcm %q: the wasm filter must run before the router", h.GetStatPrefix()))
		}
	}
	return errs
}

// checkEdgeHCM holds an HCM to how it must parse and rewrite what a client
// sends before the filter sees it; the Istio patch is held to it too.
func checkEdgeHCM(where string, h *hcmv3.HttpConnectionManager) []error {
	var errs []error
	// The filter and the route table match one path only if Envoy resolves dot
	// segments, merges slashes and does not leave %2F/%5C for the upstream to read
	// as separators where Envoy and the route table did not.
	if !h.GetNormalizePath().GetValue() || !h.GetMergeSlashes() {
		errs = append(errs, fmt.Errorf("%s: normalize_path and merge_slashes must be on, or Envoy routes a path the upstream resolves differently", where))
	}
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, hcmv3.HttpConnectionManager_REJECT_REQUEST:
	default:
		errs = append(errs, fmt.Errorf("%s: path_with_escaped_slashes_action is %v, want UNESCAPE_AND_REDIRECT or REJECT_REQUEST (%%2F read as a separator upstream but not by Envoy)", where, h.GetPathWithEscapedSlashesAction()))
	}
	// CGI-style upstreams read x_user_sub as x-user-sub.
	if h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_REJECT_REQUEST {
		errs = append(errs, fmt.Errorf("%s: common_http_protocol_options.headers_with_underscores_action must be REJECT_REQUEST", where))
	}
	// Off by default: HTTP/1.0 without Host, and Transfer-Encoding beside
	// Content-Length, are request-smuggling material, and the dev gateway
	// answers them as Envoy does with both off.
	if o := h.GetHttpProtocolOptions(); o.GetAcceptHttp_10() || o.GetAllowChunkedLength() {
		errs = append(errs, fmt.Errorf("%s: http_protocol_options must leave accept_http_10 and allow_chunked_length off", where))
	}
	return errs
}

// checkEdgeLimits holds envoy.yaml to Envoy's edge-proxy guidance: bounded
// connections, buffers, header time and HTTP/2 windows, and TLS 1.2 or later on
// both legs.
func checkEdgeLimits(b *bootstrapv3.Bootstrap, f *envoyFacts) []error {
	var errs []error
	monitors := map[string]bool{}
	for _, m := range b.GetOverloadManager().GetResourceMonitors() {
		monitors[m.GetName()] = true
	}
	for _, name := range []string{"envoy.resource_monitors.fixed_heap", "envoy.resource_monitors.global_downstream_max_connections"} {
		if !monitors[name] {
			errs = append(errs, fmt.Errorf("overload_manager: no %s resource monitor (edge proxies bound heap and downstream connections)", name))
		}
	}
	const bufferLimit = 32 << 10
	for _, l := range b.GetStaticResources().GetListeners() {
		if v := l.GetPerConnectionBufferLimitBytes(); v == nil || v.GetValue() > bufferLimit {
			errs = append(errs, fmt.Errorf("listener %q: per_connection_buffer_limit_bytes must be at most 32 KiB", l.GetName()))
		}
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetTransportSocket() == nil {
			continue // the sidecar's loopback clusters
		}
		if v := c.GetPerConnectionBufferLimitBytes(); v == nil || v.GetValue() > bufferLimit {
			errs = append(errs, fmt.Errorf("cluster %q: per_connection_buffer_limit_bytes must be at most 32 KiB", c.GetName()))
		}
	}
	for _, h := range f.hcms {
		if h.GetRequestHeadersTimeout().AsDuration() <= 0 {
			errs = append(errs, fmt.Errorf("hcm %q: request_headers_timeout must be set (Envoy otherwise waits for headers forever)", h.GetStatPrefix()))
		}
		if h.GetStreamIdleTimeout().AsDuration() <= 0 || h.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration() <= 0 {
			errs = append(errs, fmt.Errorf("hcm %q: stream_idle_timeout and common_http_protocol_options.idle_timeout must be set and non-zero", h.GetStatPrefix()))
		}
		h2 := h.GetHttp2ProtocolOptions()
		if v := h2.GetMaxConcurrentStreams(); v == nil || v.GetValue() > 100 {
			errs = append(errs, fmt.Errorf("hcm %q: http2_protocol_options.max_concurrent_streams must be at most 100", h.GetStatPrefix()))
		}
		if v := h2.GetInitialStreamWindowSize(); v == nil || v.GetValue() > 64<<10 {
			errs = append(errs, fmt.Errorf("hcm %q: http2_protocol_options.initial_stream_window_size must be at most 64 KiB", h.GetStatPrefix()))
		}
		if v := h2.GetInitialConnectionWindowSize(); v == nil || v.GetValue() > 1<<20 {
			errs = append(errs, fmt.Errorf("hcm %q: http2_protocol_options.initial_connection_window_size must be at most 1 MiB", h.GetStatPrefix()))
		}
	}
	for _, d := range f.downstream {
		errs = append(errs, checkTLSParams("downstream TLS context", d.GetCommonTlsContext().GetTlsParams(), true)...)
	}
	for _, u := range f.upstream {
		errs = append(errs, checkTLSParams(fmt.Sprintf("upstream TLS context (sni %q)", u.GetSni()), u.GetCommonTlsContext().GetTlsParams(), false)...)
		if u.GetSni() == "" {
			errs = append(errs, errors.New("upstream TLS context: sni must name the backend"))
		}
	}
	return errs
}

// checkTLSParams wants TLS 1.2 or later spelt out, and no cipher suite outside
// ECDHE with an AEAD. On the listener, signature_algorithms stays at BoringSSL's
// default, which leaves Ed25519 out: mtlsgate dev and DESIGN-DECISIONS §29 count
// an Ed25519 client certificate as none, as Envoy does with the default.
func checkTLSParams(where string, p *tlsv3.TlsParameters, downstream bool) []error {
	var errs []error
	if v := p.GetTlsMinimumProtocolVersion(); v < tlsv3.TlsParameters_TLSv1_2 {
		errs = append(errs, fmt.Errorf("%s: tls_params.tls_minimum_protocol_version is %v, want TLSv1_2 or later, explicitly", where, v))
	}
	for _, c := range p.GetCipherSuites() {
		if !strings.HasPrefix(strings.Trim(c, "[]"), "ECDHE-") || !(strings.Contains(c, "GCM") || strings.Contains(c, "CHACHA20")) {
			errs = append(errs, fmt.Errorf("%s: cipher suite %q is not ECDHE with an AEAD", where, c))
		}
	}
	if downstream && len(p.GetSignatureAlgorithms()) > 0 {
		errs = append(errs, fmt.Errorf("%s: signature_algorithms must stay at Envoy's default (no Ed25519, as mtlsgate dev assumes), got %v", where, p.GetSignatureAlgorithms()))
	}
	return errs
}

// acceptsUntrusted reports how Envoy treats an untrusted client
// certificate on the listener(s): true when it accepts it and leaves the verdict
// to the filter.
func acceptsUntrusted(f *envoyFacts) bool {
	for _, d := range f.downstream {
		c := d.GetCommonTlsContext()
		v := c.GetCombinedValidationContext().GetDefaultValidationContext()
		if v == nil {
			v = c.GetValidationContext()
		}
		if v.GetTrustChainVerification() != tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED {
			return false
		}
	}
	return len(f.downstream) > 0
}

// checkWasmPlugin checks the wasm filter's own settings and its embedded plugin
// JSON.
func checkWasmPlugin(pc *wasmv3.PluginConfig, f *envoyFacts) []error {
	var errs []error
	if pc.GetRootId() != wasmRootID {
		errs = append(errs, fmt.Errorf("wasm: root_id %q, want %q", pc.GetRootId(), wasmRootID))
	}
	if pc.GetFailOpen() || pc.GetFailurePolicy() == wasmv3.FailurePolicy_FAIL_OPEN {
		errs = append(errs, errors.New("wasm: the filter must fail closed; a broken VM would otherwise pass every request unauthenticated"))
	}
	vm := pc.GetVmConfig()
	if vm.GetRuntime() != "envoy.wasm.runtime.v8" {
		errs = append(errs, fmt.Errorf("wasm: runtime %q, want envoy.wasm.runtime.v8", vm.GetRuntime()))
	}
	if fn := vm.GetCode().GetLocal().GetFilename(); fn != wasmModulePath {
		errs = append(errs, fmt.Errorf("wasm: code.local.filename %q, want %q", fn, wasmModulePath))
	}
	raw, err := pluginJSON(pc)
	if err != nil {
		return append(errs, err)
	}
	pcfg, perrs := checkPluginConfig(raw, func(c string) bool { _, ok := f.clusters[c]; return ok })
	errs = append(errs, perrs...)
	// With Envoy accepting untrusted certificates, a policy that trusts Envoy's
	// verdict would let any self-signed certificate through: nobody verifies.
	if pcfg != nil && acceptsUntrusted(f) {
		for _, p := range pcfg.Policies {
			if p.ChainVerification == "envoy" {
				errs = append(errs, fmt.Errorf("policy %q sets chainVerification \"envoy\" but the listener accepts untrusted certificates (ACCEPT_UNTRUSTED): no one would verify the chain", p.Name))
			}
		}
	}
	return errs
}

// pluginJSON extracts the plugin configuration the filter receives: Envoy hands
// the module the bytes of a StringValue's value (or BytesValue), not the Any.
func pluginJSON(pc *wasmv3.PluginConfig) ([]byte, error) {
	a := pc.GetConfiguration()
	if a == nil {
		return nil, errors.New("wasm: no configuration")
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("wasm configuration: %w", err)
	}
	switch v := m.(type) {
	case *wrapperspb.StringValue:
		return []byte(v.GetValue()), nil
	case *wrapperspb.BytesValue:
		return v.GetValue(), nil
	}
	return nil, fmt.Errorf("wasm configuration is %s; the module reads JSON from a google.protobuf.StringValue", a.GetTypeUrl())
}

// checkSidecarClusters ties the cluster endpoints to the "mtlsgate serve" line in
// envoy.yaml's header comment, so an operator who copies that line gets a sidecar
// Envoy can reach.
func checkSidecarClusters(f *envoyFacts) []error {
	var errs []error
	for name, c := range map[string]*clusterv3.Cluster{sdsCluster: f.clusters[sdsCluster], sidecarCluster: f.clusters[sidecarCluster]} {
		if c == nil {
			errs = append(errs, fmt.Errorf("cluster %q is not defined", name))
		}
	}
	if c := f.clusters[sdsCluster]; c != nil {
		opts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
		var hpo upstreamhttpv3.HttpProtocolOptions
		if opts == nil || opts.UnmarshalTo(&hpo) != nil || hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			errs = append(errs, fmt.Errorf("cluster %q must speak HTTP/2 (explicit_http_config.http2_protocol_options) to carry gRPC", sdsCluster))
		}
	}
	return errs
}

// clusterEndpoints lists "host:port" for every endpoint of a cluster.
func clusterEndpoints(c *clusterv3.Cluster) []string {
	var out []string
	for _, e := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range e.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	sort.Strings(out)
	return out
}

// serveLine is the sidecar invocation documented in a file, parsed into its
// listen flags.
type serveLine struct {
	sds, bundle, admin string
}

var serveRE = regexp.MustCompile(`mtlsgate serve((?:\s+--[a-z-]+[ =]\S+)+)`)

// parseServeLines finds every documented "mtlsgate serve --flag value ..." in text.
func parseServeLines(text string) ([]serveLine, error) {
	var out []serveLine
	for _, m := range serveRE.FindAllStringSubmatch(text, -1) {
		var s serveLine
		fields := strings.Fields(strings.ReplaceAll(m[1], "=", " "))
		for i := 0; i+1 < len(fields); i += 2 {
			v := strings.Trim(fields[i+1], `"',`)
			switch fields[i] {
			case "--sds-listen":
				s.sds = v
			case "--bundle-listen":
				s.bundle = v
			case "--admin-listen":
				s.admin = v
			}
		}
		if s.sds == "" || s.bundle == "" || s.admin == "" {
			return nil, fmt.Errorf("serve line %q must give --sds-listen, --bundle-listen and --admin-listen explicitly", strings.TrimSpace(m[0]))
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New(`no "mtlsgate serve --sds-listen … --bundle-listen … --admin-listen …" line found`)
	}
	return out, nil
}
