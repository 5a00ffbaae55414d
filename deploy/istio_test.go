package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

const istioDir = "deploy/istio"

// gatewayLabels select the ingress gateway pods every manifest targets.
var gatewayLabels = map[string]string{"istio": "ingressgateway"}

// k8sObject is the envelope of a manifest. Decoded strictly, so a misspelt
// metadata field fails here as kubectl's server-side validation would.
type k8sObject struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   k8sMeta         `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

type k8sMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// The part of a Deployment the sidecar patch uses. Kubernetes types are not a
// dependency of this module, so this is a shape check: every field the patch
// sets must be one modelled here (decoded with unknown fields refused).
type deploymentSpec struct {
	Template struct {
		Metadata k8sMeta `json:"metadata"`
		Spec     struct {
			Containers []container `json:"containers"`
			Volumes    []struct {
				Name     string          `json:"name"`
				EmptyDir json.RawMessage `json:"emptyDir,omitempty"`
				Secret   *struct {
					SecretName string `json:"secretName"`
					Optional   bool   `json:"optional,omitempty"`
				} `json:"secret,omitempty"`
			} `json:"volumes"`
		} `json:"spec"`
	} `json:"template"`
}

type container struct {
	Name         string   `json:"name"`
	Image        string   `json:"image"`
	Args         []string `json:"args"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		ReadOnly  bool   `json:"readOnly,omitempty"`
	} `json:"volumeMounts"`
	Resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext struct {
		RunAsNonRoot             bool  `json:"runAsNonRoot"`
		RunAsUser                int64 `json:"runAsUser"`
		AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `json:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext"`
}

// istioFacts is what the manifests declare, gathered for cross-checks.
type istioFacts struct {
	gateways       map[string]*networkingv1alpha3.Gateway        // namespace/name
	services       map[string]*networkingv1alpha3.VirtualService // by name
	serviceEntries []*networkingv1alpha3.ServiceEntry
	destRules      []*networkingv1alpha3.DestinationRule
	wasm           []*extensionsv1alpha1.WasmPlugin
	filters        map[string]*networkingv1alpha3.EnvoyFilter // by name
	deployments    []*deploymentSpec
	clusters       map[string]*clusterv3.Cluster // added by EnvoyFilters
	backends       []*externalBackend            // CLUSTER MERGE patches
	sawTLS, sawHCM bool                          // the gateway listener's patches
	sidecarPatches int                           // Deployment patches adding the mtlsgate container
	proxyMounts    map[string]bool               // read-only Secret mounts in istio-proxy, by path
	pluginJSON     [][]byte
	serveLines     []serveLine
}

// externalBackend is a CLUSTER MERGE patch that gives the gateway's outbound
// cluster for a ServiceEntry host (outbound|<port>||<host>) the client
// certificate from the sidecar, and the verification of the backend.
type externalBackend struct {
	where string
	host  string
	port  uint32
	tls   *tlsv3.UpstreamTlsContext
}

// The transport socket name Istio gives the TLS contexts it generates: a patch
// under the same name is merged into Istio's context rather than replacing it.
const istioTLSSocket = "envoy.transport_sockets.tls"

// splitYAML splits a multi-document YAML file on document separators.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// protoStrict decodes JSON into a proto message the way Istio's CRD validation
// and istioctl do: unknown fields and unknown enum names are errors.
func protoStrict(js []byte, m proto.Message) error {
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(js, m)
}

// loadIstio decodes every manifest under deploy/istio with its Istio API type
// and runs all cross-checks. files maps a file name to its content.
func loadIstio(files map[string][]byte) (*istioFacts, error) {
	f := &istioFacts{
		gateways:    map[string]*networkingv1alpha3.Gateway{},
		filters:     map[string]*networkingv1alpha3.EnvoyFilter{},
		services:    map[string]*networkingv1alpha3.VirtualService{},
		clusters:    map[string]*clusterv3.Cluster{},
		proxyMounts: map[string]bool{},
	}
	var errs []error
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		if lines, err := parseServeLines(string(files[name])); err == nil {
			f.serveLines = append(f.serveLines, lines...)
		}
		for i, doc := range splitYAML(files[name]) {
			where := fmt.Sprintf("%s#%d", name, i)
			if err := f.decode(doc); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		}
	}
	errs = append(errs, f.check()...)
	return f, errors.Join(errs...)
}

func (f *istioFacts) decode(doc []byte) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	var obj k8sObject
	if err := strictJSON(js, &obj); err != nil {
		return fmt.Errorf("manifest envelope: %w", err)
	}
	if obj.Metadata.Name == "" || obj.Metadata.Namespace == "" {
		return errors.New("metadata.name and metadata.namespace are required (the manifests are applied without -n)")
	}
	if obj.Metadata.Namespace != "istio-system" {
		return fmt.Errorf("namespace %q: gateway resources and their EnvoyFilter/WasmPlugin live with the gateway in istio-system", obj.Metadata.Namespace)
	}
	key := obj.APIVersion + " " + obj.Kind
	switch key {
	case "networking.istio.io/v1 Gateway", "networking.istio.io/v1beta1 Gateway", "networking.istio.io/v1alpha3 Gateway":
		g := &networkingv1alpha3.Gateway{}
		if err := protoStrict(obj.Spec, g); err != nil {
			return fmt.Errorf("Gateway spec: %w", err)
		}
		f.gateways[obj.Metadata.Namespace+"/"+obj.Metadata.Name] = g
	case "networking.istio.io/v1 VirtualService", "networking.istio.io/v1beta1 VirtualService", "networking.istio.io/v1alpha3 VirtualService":
		v := &networkingv1alpha3.VirtualService{}
		if err := protoStrict(obj.Spec, v); err != nil {
			return fmt.Errorf("VirtualService spec: %w", err)
		}
		f.services[obj.Metadata.Name] = v
	case "networking.istio.io/v1 ServiceEntry", "networking.istio.io/v1beta1 ServiceEntry", "networking.istio.io/v1alpha3 ServiceEntry":
		se := &networkingv1alpha3.ServiceEntry{}
		if err := protoStrict(obj.Spec, se); err != nil {
			return fmt.Errorf("ServiceEntry spec: %w", err)
		}
		f.serviceEntries = append(f.serviceEntries, se)
	case "networking.istio.io/v1 DestinationRule", "networking.istio.io/v1beta1 DestinationRule", "networking.istio.io/v1alpha3 DestinationRule":
		dr := &networkingv1alpha3.DestinationRule{}
		if err := protoStrict(obj.Spec, dr); err != nil {
			return fmt.Errorf("DestinationRule spec: %w", err)
		}
		f.destRules = append(f.destRules, dr)
	case "extensions.istio.io/v1alpha1 WasmPlugin":
		w := &extensionsv1alpha1.WasmPlugin{}
		if err := protoStrict(obj.Spec, w); err != nil {
			return fmt.Errorf("WasmPlugin spec: %w", err)
		}
		f.wasm = append(f.wasm, w)
	case "networking.istio.io/v1alpha3 EnvoyFilter":
		e := &networkingv1alpha3.EnvoyFilter{}
		if err := protoStrict(obj.Spec, e); err != nil {
			return fmt.Errorf("EnvoyFilter spec: %w", err)
		}
		f.filters[obj.Metadata.Name] = e
	case "apps/v1 Deployment":
		d := &deploymentSpec{}
		if err := strictJSON(obj.Spec, d); err != nil {
			return fmt.Errorf("Deployment spec: %w", err)
		}
		f.deployments = append(f.deployments, d)
	default:
		return fmt.Errorf("unexpected manifest %s", key)
	}
	return nil
}

func (f *istioFacts) check() []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(f.filters)) {
		errs = append(errs, f.checkEnvoyFilter(name, f.filters[name])...)
	}
	if !f.sawTLS || !f.sawHCM {
		errs = append(errs, errors.New("the EnvoyFilters must patch both the gateway's TLS context and its HCM"))
	}
	for _, name := range []string{sdsCluster, sidecarCluster} {
		if f.clusters[name] == nil {
			errs = append(errs, fmt.Errorf("no EnvoyFilter adds cluster %q", name))
		}
	}
	// Deployment patches first: the external backends' checks need the mounts.
	for _, d := range f.deployments {
		errs = append(errs, f.checkDeploymentPatch(d)...)
	}
	// The optional manifests (external backends, CA patch) may be left out;
	// the required ones must each be there once.
	if len(f.gateways) == 0 || len(f.wasm) != 1 || len(f.filters) == 0 || f.sidecarPatches != 1 {
		errs = append(errs, fmt.Errorf("want a Gateway, one WasmPlugin, an EnvoyFilter and one Deployment patch adding the sidecar; found %d, %d, %d, %d",
			len(f.gateways), len(f.wasm), len(f.filters), f.sidecarPatches))
	}
	errs = append(errs, f.checkExternalBackends()...)
	for name, g := range f.gateways {
		if !maps.Equal(g.GetSelector(), gatewayLabels) {
			errs = append(errs, fmt.Errorf("Gateway %s selects %v, want %v", name, g.GetSelector(), gatewayLabels))
		}
		found := false
		for _, s := range g.GetServers() {
			tls := s.GetTls()
			if tls.GetMode() != networkingv1alpha3.ServerTLSSettings_OPTIONAL_MUTUAL {
				continue
			}
			found = true
			if s.GetPort().GetProtocol() != "HTTPS" {
				errs = append(errs, fmt.Errorf("Gateway %s: the OPTIONAL_MUTUAL server must terminate HTTPS, got %q", name, s.GetPort().GetProtocol()))
			}
			if tls.GetCredentialName() == "" && len(tls.GetCredentialNames()) == 0 {
				errs = append(errs, fmt.Errorf("Gateway %s: OPTIONAL_MUTUAL needs credentialName for the server certificate", name))
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("Gateway %s has no server with tls.mode OPTIONAL_MUTUAL; the filter would never see client certificates it is allowed to judge", name))
		}
	}
	for _, v := range f.services {
		for _, gw := range v.GetGateways() {
			if _, ok := f.gateways[gw]; !ok {
				errs = append(errs, fmt.Errorf("VirtualService binds to gateway %q, which is not defined here", gw))
			}
		}
	}
	for _, w := range f.wasm {
		errs = append(errs, f.checkWasmPlugin(w)...)
	}
	if len(f.serveLines) == 0 {
		errs = append(errs, errors.New("no documented mtlsgate serve line in the Istio manifests"))
	}
	for _, s := range f.serveLines[min(1, len(f.serveLines)):] {
		if s != f.serveLines[0] {
			errs = append(errs, fmt.Errorf("the manifests disagree on the sidecar's addresses: %+v vs %+v", f.serveLines[0], s))
		}
	}
	for _, s := range f.serveLines[:min(1, len(f.serveLines))] {
		for name, addr := range map[string]string{sdsCluster: s.sds, sidecarCluster: s.bundle} {
			if c := f.clusters[name]; c != nil && !slices.Equal(clusterEndpoints(c), []string{addr}) {
				errs = append(errs, fmt.Errorf("EnvoyFilter cluster %q points at %v but the sidecar listens on %s", name, clusterEndpoints(c), addr))
			}
		}
	}
	return errs
}

// checkEnvoyFilter decodes each patch value with Envoy's own types: an added
// cluster must be a complete, valid Cluster; a MERGE value must decode as the
// type it merges into (it is partial, so only type-checked), and carry the
// settings the filter depends on.
func (f *istioFacts) checkEnvoyFilter(name string, e *networkingv1alpha3.EnvoyFilter) []error {
	var errs []error
	if !maps.Equal(e.GetWorkloadSelector().GetLabels(), gatewayLabels) {
		errs = append(errs, fmt.Errorf("EnvoyFilter %s selects %v, want %v", name, e.GetWorkloadSelector().GetLabels(), gatewayLabels))
	}
	for i, p := range e.GetConfigPatches() {
		where := fmt.Sprintf("EnvoyFilter %s configPatches[%d]", name, i)
		if p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_GATEWAY {
			errs = append(errs, fmt.Errorf("%s: context %v, want GATEWAY", where, p.GetMatch().GetContext()))
		}
		js, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		op := p.GetPatch().GetOperation()
		switch p.GetApplyTo() {
		case networkingv1alpha3.EnvoyFilter_CLUSTER:
			if op == networkingv1alpha3.EnvoyFilter_Patch_MERGE {
				errs = append(errs, f.checkClusterMerge(p, js, where)...)
				continue
			}
			if op != networkingv1alpha3.EnvoyFilter_Patch_ADD {
				errs = append(errs, fmt.Errorf("%s: CLUSTER operation %v; want ADD (the sidecar's clusters) or MERGE (an external backend)", where, op))
				continue
			}
			c := &clusterv3.Cluster{}
			if err := protoStrict(js, c); err != nil {
				errs = append(errs, fmt.Errorf("%s: cluster: %w", where, err))
				continue
			}
			if err := validateDeep(c); err != nil {
				errs = append(errs, fmt.Errorf("%s: cluster %q: %w", where, c.GetName(), err))
			}
			f.clusters[c.GetName()] = c
		case networkingv1alpha3.EnvoyFilter_FILTER_CHAIN:
			fc := &listenerv3.FilterChain{}
			if err := protoStrict(js, fc); err != nil {
				errs = append(errs, fmt.Errorf("%s: filter chain: %w", where, err))
				continue
			}
			d := &tlsv3.DownstreamTlsContext{}
			if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: transport socket: %w", where, err))
				continue
			}
			f.sawTLS = true
			cvc := d.GetCommonTlsContext().GetCombinedValidationContext()
			if cvc.GetDefaultValidationContext().GetTrustChainVerification() != tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED {
				errs = append(errs, fmt.Errorf("%s: the gateway must accept untrusted certificates (ACCEPT_UNTRUSTED) so the filter decides", where))
			}
			s := sdsOf(cvc.GetValidationContextSdsSecretConfig(), where, true)
			if s.name != clientCASecret || s.cluster != sdsCluster {
				errs = append(errs, fmt.Errorf("%s: validation context must be SDS secret %q from cluster %q, got %q from %q", where, clientCASecret, sdsCluster, s.name, s.cluster))
			}
		case networkingv1alpha3.EnvoyFilter_NETWORK_FILTER:
			nf := &listenerv3.Filter{}
			if err := protoStrict(js, nf); err != nil {
				errs = append(errs, fmt.Errorf("%s: network filter: %w", where, err))
				continue
			}
			h := &hcmv3.HttpConnectionManager{}
			if err := nf.GetTypedConfig().UnmarshalTo(h); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			f.sawHCM = true
			if !h.GetUseRemoteAddress().GetValue() || h.GetXffNumTrustedHops() != 0 {
				errs = append(errs, fmt.Errorf("%s: HCM must set use_remote_address true with xff_num_trusted_hops 0 (else source.address follows the client's X-Forwarded-For)", where))
			}
			errs = append(errs, checkEdgeHCM(where+": HCM", h)...)
			d := h.GetSetCurrentClientCertDetails()
			if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE_SET ||
				!d.GetSubject().GetValue() || !d.GetCert() || !d.GetChain() || d.GetUri() || d.GetDns() {
				errs = append(errs, fmt.Errorf("%s: HCM must set forward_client_cert_details SANITIZE_SET with subject, cert and chain, and not uri or dns (written unquoted), got %v %v", where, h.GetForwardClientCertDetails(), d))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: unexpected applyTo %v", where, p.GetApplyTo()))
		}
	}
	return errs
}

// validateDeep runs protoc-gen-validate rules on m and on every message packed
// in an Any below it (ValidateAll does not look inside Any).
func validateDeep(m proto.Message) error {
	type validator interface{ ValidateAll() error }
	var errs []error
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, err)
		}
	}
	var visit func(proto.Message, string)
	visit = func(pm proto.Message, where string) {
		a, ok := pm.(*anypb.Any)
		if !ok {
			return
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			return
		}
		if v, ok := inner.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		}
		walk(inner.ProtoReflect(), where, visit)
	}
	walk(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()), visit)
	return errors.Join(errs...)
}

func (f *istioFacts) checkWasmPlugin(w *extensionsv1alpha1.WasmPlugin) []error {
	var errs []error
	if !maps.Equal(w.GetSelector().GetMatchLabels(), gatewayLabels) {
		errs = append(errs, fmt.Errorf("WasmPlugin selects %v, want %v", w.GetSelector().GetMatchLabels(), gatewayLabels))
	}
	if w.GetPhase() != extensionsv1alpha1.PluginPhase_AUTHN {
		errs = append(errs, fmt.Errorf("WasmPlugin phase %v, want AUTHN: identity must be established before authorization filters run", w.GetPhase()))
	}
	if w.GetFailStrategy() != extensionsv1alpha1.FailStrategy_FAIL_CLOSE {
		errs = append(errs, fmt.Errorf("WasmPlugin failStrategy %v, want FAIL_CLOSE", w.GetFailStrategy()))
	}
	if w.GetType() != extensionsv1alpha1.PluginType_HTTP {
		errs = append(errs, fmt.Errorf("WasmPlugin type %v, want HTTP", w.GetType()))
	}
	if w.GetPluginName() != wasmRootID {
		errs = append(errs, fmt.Errorf("WasmPlugin pluginName %q, want the module's root id %q", w.GetPluginName(), wasmRootID))
	}
	if u := w.GetUrl(); !strings.HasPrefix(u, "oci://") && !strings.HasPrefix(u, "file://") {
		errs = append(errs, fmt.Errorf("WasmPlugin url %q: want oci:// or file://", u))
	}
	// Istio hands the module pluginConfig as the JSON encoding of the Struct.
	raw, err := protojson.Marshal(w.GetPluginConfig())
	if err != nil || w.GetPluginConfig() == nil {
		return append(errs, fmt.Errorf("WasmPlugin pluginConfig: missing or unencodable (%v)", err))
	}
	f.pluginJSON = append(f.pluginJSON, raw)
	_, perrs := checkPluginConfig(raw, func(c string) bool { return f.clusters[c] != nil })
	for _, e := range perrs {
		errs = append(errs, fmt.Errorf("WasmPlugin pluginConfig: %w", e))
	}
	return errs
}

func (f *istioFacts) checkDeployment(d *deploymentSpec) []error {
	var errs []error
	pc := d.Template.Metadata.Annotations["proxy.istio.io/config"]
	if pc == "" {
		errs = append(errs, errors.New("Deployment patch: no proxy.istio.io/config annotation; Istio's gateway would drop XFCC (SANITIZE)"))
	} else {
		js, err := yaml.YAMLToJSONStrict([]byte(pc))
		cfg := &meshv1alpha1.ProxyConfig{}
		if err == nil {
			err = protoStrict(js, cfg)
		}
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("Deployment patch: proxy.istio.io/config is not a valid ProxyConfig: %w", err))
		case cfg.GetGatewayTopology().GetForwardClientCertDetails() != meshv1alpha1.ForwardClientCertDetails_SANITIZE_SET:
			errs = append(errs, fmt.Errorf("Deployment patch: gatewayTopology.forwardClientCertDetails %v, want SANITIZE_SET", cfg.GetGatewayTopology().GetForwardClientCertDetails()))
		}
	}
	volumes := map[string]bool{}
	secrets := map[string]bool{}
	for _, v := range d.Template.Spec.Volumes {
		volumes[v.Name] = true
		if v.Secret != nil && v.Secret.SecretName != "" {
			secrets[v.Name] = true
		}
	}
	var sidecar *container
	for i := range d.Template.Spec.Containers {
		if d.Template.Spec.Containers[i].Name == "mtlsgate" {
			sidecar = &d.Template.Spec.Containers[i]
		}
	}
	if sidecar == nil {
		return append(errs, errors.New("Deployment patch: no container named mtlsgate"))
	}
	if sidecar.Image == "" {
		errs = append(errs, errors.New("Deployment patch: mtlsgate container has no image"))
	}
	lines, err := parseServeLines("mtlsgate " + strings.Join(sidecar.Args, " "))
	if err != nil {
		errs = append(errs, fmt.Errorf("Deployment patch: container args: %w", err))
	}
	f.serveLines = append(f.serveLines, lines...)
	for _, s := range lines {
		for _, addr := range []string{s.sds, s.bundle, s.admin} {
			if !strings.HasPrefix(addr, "127.0.0.1:") {
				errs = append(errs, fmt.Errorf("Deployment patch: sidecar listens on %s; it must stay on loopback (its admin API manages trust)", addr))
			}
		}
	}
	for _, m := range sidecar.VolumeMounts {
		if !volumes[m.Name] {
			errs = append(errs, fmt.Errorf("Deployment patch: volumeMount %q has no volume", m.Name))
		}
	}
	// The shared trust comes from a Secret mounted read-only at --trust-dir.
	trustDir := ""
	for i, a := range sidecar.Args {
		if a == "--trust-dir" && i+1 < len(sidecar.Args) {
			trustDir = sidecar.Args[i+1]
		}
	}
	mounted := false
	for _, m := range sidecar.VolumeMounts {
		mounted = mounted || (m.MountPath == trustDir && m.ReadOnly && secrets[m.Name])
	}
	if trustDir == "" || !mounted {
		errs = append(errs, fmt.Errorf("Deployment patch: --trust-dir %q must be the read-only mount of a Secret volume, so every replica starts with the same CAs", trustDir))
	}
	sc := sidecar.SecurityContext
	if !sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		errs = append(errs, errors.New("Deployment patch: the sidecar holds CA and outbound private keys; run it non-root, without privilege escalation, all capabilities dropped"))
	}
	return errs
}

// checkClusterMerge decodes a CLUSTER MERGE patch: it must name one outbound
// cluster by its ServiceEntry host and port, and carry only a transport socket
// whose UpstreamTlsContext presents the sidecar's client certificate and
// verifies the backend. Istio sets this socket as it is on a cluster without
// TLS, so it must be complete on its own (checked here); merged into the
// context of the DestinationRule, it is checked again in checkExternalBackends.
func (f *istioFacts) checkClusterMerge(p *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch, js []byte, where string) []error {
	m := p.GetMatch().GetCluster()
	if m.GetService() == "" || m.GetPortNumber() == 0 || m.GetName() != "" || m.GetSubset() != "" {
		return []error{fmt.Errorf("%s: a CLUSTER MERGE must match one outbound cluster (Istio's outbound|<port>||<host>) by service and portNumber, got %v", where, m)}
	}
	c := &clusterv3.Cluster{}
	if err := protoStrict(js, c); err != nil {
		return []error{fmt.Errorf("%s: cluster: %w", where, err)}
	}
	var errs []error
	rest := proto.Clone(c).(*clusterv3.Cluster)
	rest.TransportSocket = nil
	if !proto.Equal(rest, &clusterv3.Cluster{}) {
		errs = append(errs, fmt.Errorf("%s: the patch may set only transport_socket; the rest of the cluster is Istio's", where))
	}
	ts := c.GetTransportSocket()
	if ts.GetName() != istioTLSSocket {
		errs = append(errs, fmt.Errorf("%s: transport_socket %q, want %q (Istio's name for its TLS socket)", where, ts.GetName(), istioTLSSocket))
	}
	u := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
		return append(errs, fmt.Errorf("%s: transport socket: %w", where, err))
	}
	if err := validateDeep(u); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", where, err))
	}
	f.backends = append(f.backends, &externalBackend{where: where, host: m.GetService(), port: m.GetPortNumber(), tls: u})
	return append(errs, checkBackendTLS(u, m.GetService(), where)...)
}

// checkBackendTLS holds an upstream TLS context for an external backend to the
// backend cluster of envoy.yaml: exactly one client certificate, the sidecar's,
// over SDS from mtlsgate_sds; the backend's certificate verified against a CA
// file and a SAN match naming the backend; SNI set to the backend's name.
func checkBackendTLS(u *tlsv3.UpstreamTlsContext, host, where string) []error {
	var errs []error
	c := u.GetCommonTlsContext()
	certs := c.GetTlsCertificateSdsSecretConfigs()
	if len(certs) != 1 || len(c.GetTlsCertificates()) != 0 {
		errs = append(errs, fmt.Errorf("%s: want exactly one client certificate, over SDS; got %d over SDS and %d inline", where, len(certs), len(c.GetTlsCertificates())))
	}
	for _, s := range certs {
		r := sdsOf(s, where, false)
		if r.cluster != sdsCluster {
			errs = append(errs, fmt.Errorf("%s: client certificate %q must come over gRPC from cluster %q (the sidecar), got %q", where, r.name, sdsCluster, r.cluster))
		}
		if !servableSecretName(r.name) {
			errs = append(errs, fmt.Errorf("%s: client certificate %q is not a name the sidecar can serve", where, r.name))
		}
	}
	if u.GetSni() != host {
		errs = append(errs, fmt.Errorf("%s: sni %q, want the backend's name %q", where, u.GetSni(), host))
	}
	vc := c.GetValidationContext()
	if vc == nil {
		// A combined or SDS validation context would merge into Istio's.
		return append(errs, fmt.Errorf("%s: does not verify the backend: want validation_context with trusted_ca and match_typed_subject_alt_names", where))
	}
	if vc.GetTrustedCa().GetFilename() == "" {
		errs = append(errs, fmt.Errorf("%s: validation_context needs trusted_ca from a file (the CA mounted into istio-proxy)", where))
	}
	if vc.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN {
		errs = append(errs, fmt.Errorf("%s: trust_chain_verification %v: the backend's chain must be verified", where, vc.GetTrustChainVerification()))
	}
	sans := vc.GetMatchTypedSubjectAltNames()
	if len(sans) == 0 {
		errs = append(errs, fmt.Errorf("%s: no SAN match: any certificate from the CA would pass as the backend", where))
	}
	for _, m := range sans {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || m.GetMatcher().GetExact() != host {
			errs = append(errs, fmt.Errorf("%s: SAN match %v; want DNS exact %q, the backend's name", where, m, host))
		}
	}
	// Deprecated in Envoy, and what Istio writes.
	if len(vc.GetMatchSubjectAltNames()) > 0 {
		errs = append(errs, fmt.Errorf("%s: match_subject_alt_names beside match_typed_subject_alt_names: Envoy refuses both at once", where))
	}
	return errs
}

// checkExternalBackends holds each external backend together: the ServiceEntry
// that makes Istio build the outbound cluster, the DestinationRule that has
// Istio verify the backend, the patch that adds the client certificate, and
// the CA file both read, mounted into istio-proxy.
func (f *istioFacts) checkExternalBackends() []error {
	type hostPort struct {
		host string
		port uint32
	}
	var errs []error
	var declared []hostPort
	for _, se := range f.serviceEntries {
		where := fmt.Sprintf("ServiceEntry %v", se.GetHosts())
		if se.GetLocation() != networkingv1alpha3.ServiceEntry_MESH_EXTERNAL {
			errs = append(errs, fmt.Errorf("%s: location %v, want MESH_EXTERNAL (a backend in the mesh gets Istio's mutual TLS)", where, se.GetLocation()))
		}
		if r := se.GetResolution(); r != networkingv1alpha3.ServiceEntry_DNS && r != networkingv1alpha3.ServiceEntry_DNS_ROUND_ROBIN {
			errs = append(errs, fmt.Errorf("%s: resolution %v, want DNS", where, r))
		}
		if len(se.GetHosts()) != 1 || strings.Contains(se.GetHosts()[0], "*") {
			errs = append(errs, fmt.Errorf("%s: want one host, no wildcard: SNI and the SAN match name one backend", where))
		}
		if !slices.Equal(se.GetExportTo(), []string{"."}) {
			errs = append(errs, fmt.Errorf("%s: exportTo %v, want [\".\"]: the host is the gateway's, not every sidecar's", where, se.GetExportTo()))
		}
		for _, h := range se.GetHosts() {
			for _, p := range se.GetPorts() {
				declared = append(declared, hostPort{h, p.GetNumber()})
			}
		}
	}
	patched := map[hostPort]bool{}
	for _, b := range f.backends {
		hp := hostPort{b.host, b.port}
		patched[hp] = true
		if !slices.Contains(declared, hp) {
			errs = append(errs, fmt.Errorf("%s: no ServiceEntry declares %s port %d, so there is no cluster outbound|%d||%s to merge into", b.where, b.host, b.port, b.port, b.host))
			continue
		}
		tls, err := f.destinationTLS(b.host, b.port)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.where, err))
			continue
		}
		errs = append(errs, checkDestinationTLS(tls, b)...)
		// Without the patch, Istio's context must verify the backend and
		// present no certificate, so the backend refuses the handshake.
		alone := istioUpstreamTLS(tls)
		cvc := alone.GetCommonTlsContext().GetCombinedValidationContext()
		if n := len(alone.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()); n != 0 {
			errs = append(errs, fmt.Errorf("%s: the DestinationRule alone has Istio present %d client certificate(s) of its own", b.where, n))
		}
		if cvc.GetValidationContextSdsSecretConfig() == nil || len(cvc.GetDefaultValidationContext().GetMatchSubjectAltNames()) == 0 || alone.GetSni() == "" {
			errs = append(errs, fmt.Errorf("%s: the DestinationRule alone does not verify the backend (CA, SAN and SNI)", b.where))
		}
		// With the rule in place, Istio's MERGE combines the two contexts
		// (proto merge: lists append, a oneof member replaces the other).
		merged := istioUpstreamTLS(tls)
		proto.Merge(merged, b.tls)
		errs = append(errs, checkBackendTLS(merged, b.host, b.where+" merged into the DestinationRule's TLS")...)
		ca := b.tls.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename()
		if ca != "" && !f.proxyMounts[path.Dir(ca)] {
			errs = append(errs, fmt.Errorf("%s: trusted_ca %s is not in a read-only Secret mounted into istio-proxy", b.where, ca))
		}
	}
	for _, hp := range declared {
		if !patched[hp] {
			errs = append(errs, fmt.Errorf("ServiceEntry %s port %d: no EnvoyFilter gives its cluster the client certificate", hp.host, hp.port))
		}
	}
	for _, dr := range f.destRules {
		if !slices.ContainsFunc(declared, func(hp hostPort) bool { return hp.host == dr.GetHost() }) {
			errs = append(errs, fmt.Errorf("DestinationRule for %q: no ServiceEntry here declares the host", dr.GetHost()))
		}
	}
	return errs
}

// destinationTLS finds the TLS settings Istio applies at the gateway for
// host:port: the one DestinationRule for the host, which must select the
// gateway pods (the ones that mount the CA file), with its port-level TLS for
// the port if it has one.
func (f *istioFacts) destinationTLS(host string, port uint32) (*networkingv1alpha3.ClientTLSSettings, error) {
	var found []*networkingv1alpha3.DestinationRule
	for _, dr := range f.destRules {
		if dr.GetHost() == host {
			found = append(found, dr)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("want one DestinationRule for %s, found %d", host, len(found))
	}
	dr := found[0]
	if !maps.Equal(dr.GetWorkloadSelector().GetMatchLabels(), gatewayLabels) {
		return nil, fmt.Errorf("DestinationRule for %s selects %v, want %v (the pods that mount the CA file)", host, dr.GetWorkloadSelector().GetMatchLabels(), gatewayLabels)
	}
	tls := dr.GetTrafficPolicy().GetTls()
	for _, pl := range dr.GetTrafficPolicy().GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port && pl.GetTls() != nil {
			tls = pl.GetTls()
		}
	}
	if tls == nil {
		return nil, fmt.Errorf("DestinationRule for %s sets no TLS for port %d", host, port)
	}
	return tls, nil
}

// checkDestinationTLS holds the DestinationRule's TLS to what the patch merges
// into: SIMPLE, so Istio adds no client certificate of its own (in MUTUAL it
// does, and with credentialName releases differ), and the same CA file, SAN
// and SNI as the patch, so the backend is verified alike with or without it.
func checkDestinationTLS(tls *networkingv1alpha3.ClientTLSSettings, b *externalBackend) []error {
	var errs []error
	where := b.where + ": DestinationRule"
	if tls.GetMode() != networkingv1alpha3.ClientTLSSettings_SIMPLE {
		errs = append(errs, fmt.Errorf("%s: tls.mode %v, want SIMPLE: the client certificate is the patch's, and Envoy presents one", where, tls.GetMode()))
	}
	if tls.GetCredentialName() != "" {
		errs = append(errs, fmt.Errorf("%s: credentialName %q: Istio releases differ on whether it also becomes a client certificate; use caCertificates", where, tls.GetCredentialName()))
	}
	if tls.GetInsecureSkipVerify().GetValue() {
		errs = append(errs, fmt.Errorf("%s: insecureSkipVerify: the backend must be verified", where))
	}
	vc := b.tls.GetCommonTlsContext().GetValidationContext()
	if ca := vc.GetTrustedCa().GetFilename(); tls.GetCaCertificates() != ca {
		errs = append(errs, fmt.Errorf("%s: caCertificates %q differs from the patch's trusted_ca %q", where, tls.GetCaCertificates(), ca))
	}
	if tls.GetSni() != b.tls.GetSni() {
		errs = append(errs, fmt.Errorf("%s: sni %q differs from the patch's %q", where, tls.GetSni(), b.tls.GetSni()))
	}
	var sans []string
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		sans = append(sans, m.GetMatcher().GetExact())
	}
	if !slices.Equal(tls.GetSubjectAltNames(), sans) {
		errs = append(errs, fmt.Errorf("%s: subjectAltNames %v differ from the patch's SAN match %v", where, tls.GetSubjectAltNames(), sans))
	}
	return errs
}

// istioUpstreamTLS models the UpstreamTlsContext Istio generates at a gateway
// for a DestinationRule's SIMPLE or MUTUAL settings (constructUpstreamTLS in
// pilot/pkg/networking/core/cluster_tls.go, ApplyCustomSDSToClientCommonTLSContext
// in pilot/pkg/security/model/authentication.go): TLS 1.2 to 1.3, the rule's
// SNI, and a combined validation context with its SANs (in the legacy matcher
// field) and its CA. Files are served by istio-agent over SDS ("file-root:",
// "file-cert:"), credentialName by istiod over ADS ("kubernetes://"). A client
// certificate comes with MUTUAL, and with credentialName in any mode in recent
// releases (in MUTUAL only in earlier ones).
func istioUpstreamTLS(tls *networkingv1alpha3.ClientTLSSettings) *tlsv3.UpstreamTlsContext {
	agent := &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"},
			}}},
		}},
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	c := &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}}
	var ca *tlsv3.SdsSecretConfig
	if cred := tls.GetCredentialName(); cred != "" {
		c.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "kubernetes://" + cred, SdsConfig: ads}}
		ca = &tlsv3.SdsSecretConfig{Name: "kubernetes://" + cred + "-cacert", SdsConfig: ads}
	} else {
		if tls.GetMode() == networkingv1alpha3.ClientTLSSettings_MUTUAL {
			c.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{
				Name: "file-cert:" + tls.GetClientCertificate() + "~" + tls.GetPrivateKey(), SdsConfig: agent,
			}}
		}
		ca = &tlsv3.SdsSecretConfig{Name: "file-root:" + tls.GetCaCertificates(), SdsConfig: agent}
	}
	if !tls.GetInsecureSkipVerify().GetValue() {
		var sans []*matcherv3.StringMatcher
		for _, s := range tls.GetSubjectAltNames() {
			sans = append(sans, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
		}
		c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: ca,
			},
		}
	}
	return &tlsv3.UpstreamTlsContext{Sni: tls.GetSni(), CommonTlsContext: c}
}

// checkDeploymentPatch tells the gateway Deployment patches apart: the one that
// adds the mtlsgate container, and the optional one that mounts an external
// backend's CA into the gateway's own istio-proxy container.
func (f *istioFacts) checkDeploymentPatch(d *deploymentSpec) []error {
	var names []string
	for _, c := range d.Template.Spec.Containers {
		names = append(names, c.Name)
	}
	switch {
	case slices.Contains(names, "mtlsgate"):
		f.sidecarPatches++
		return f.checkDeployment(d)
	case slices.Equal(names, []string{"istio-proxy"}):
		return f.checkProxyMounts(d)
	}
	return []error{fmt.Errorf("Deployment patch with containers %v: want the mtlsgate sidecar, or mounts for istio-proxy", names)}
}

// checkProxyMounts checks a patch that only mounts Secrets, read-only, into
// istio-proxy, and records the mount paths.
func (f *istioFacts) checkProxyMounts(d *deploymentSpec) []error {
	var errs []error
	c := d.Template.Spec.Containers[0]
	if c.Image != "" || len(c.Args) > 0 || len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 || len(d.Template.Metadata.Annotations) > 0 {
		errs = append(errs, errors.New("Deployment patch for istio-proxy: it may only add volume mounts; Istio owns the rest of the container"))
	}
	secrets := map[string]bool{}
	for _, v := range d.Template.Spec.Volumes {
		switch {
		case v.Secret == nil || v.Secret.SecretName == "":
			errs = append(errs, fmt.Errorf("Deployment patch for istio-proxy: volume %q is not a Secret", v.Name))
		case v.Secret.Optional:
			errs = append(errs, fmt.Errorf("Deployment patch for istio-proxy: Secret volume %q is optional; the gateway would start without the CA it verifies the backend with", v.Name))
		default:
			secrets[v.Name] = true
		}
	}
	if len(c.VolumeMounts) == 0 {
		errs = append(errs, errors.New("Deployment patch for istio-proxy mounts nothing"))
	}
	for _, m := range c.VolumeMounts {
		switch {
		case !secrets[m.Name]:
			errs = append(errs, fmt.Errorf("Deployment patch for istio-proxy: volumeMount %q has no Secret volume", m.Name))
		case !m.ReadOnly:
			errs = append(errs, fmt.Errorf("Deployment patch for istio-proxy: volumeMount %q must be read-only", m.Name))
		default:
			f.proxyMounts[path.Clean(m.MountPath)] = true
		}
	}
	return errs
}

func readIstioFiles(t *testing.T) map[string][]byte {
	t.Helper()
	dir := filepath.Join(repoRoot(), istioDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = data
		}
	}
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", dir)
	}
	return files
}

// checkAgainstEnvoy holds the Istio deployment to envoy.yaml: the same plugin
// configuration and the same sidecar addresses.
func checkAgainstEnvoy(f *istioFacts, envoyYAML []byte) []error {
	var errs []error
	b, err := parseBootstrap(envoyYAML)
	if err != nil {
		return []error{err}
	}
	ef, _ := collect(b)
	// The external backends present the certificate envoy.yaml's backend
	// cluster presents: one outbound certificate, loaded once per pod.
	var backendCerts []string
	for _, u := range ef.upstream {
		for _, s := range u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
			backendCerts = append(backendCerts, s.GetName())
		}
	}
	for _, eb := range f.backends {
		for _, s := range eb.tls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
			if !slices.Contains(backendCerts, s.GetName()) {
				errs = append(errs, fmt.Errorf("%s: client certificate %q is not the one envoy.yaml's backend cluster presents %v", eb.where, s.GetName(), backendCerts))
			}
		}
	}
	lines, _ := parseServeLines(string(envoyYAML))
	if len(lines) > 0 && len(f.serveLines) > 0 && lines[0] != f.serveLines[0] {
		errs = append(errs, fmt.Errorf("sidecar addresses differ: envoy.yaml %+v, Istio %+v", lines[0], f.serveLines[0]))
	}
	for _, pc := range ef.wasm {
		want, err := pluginJSON(pc)
		if err != nil {
			return append(errs, err)
		}
		wantC, _ := canonicalJSON(want)
		for _, got := range f.pluginJSON {
			gotC, _ := canonicalJSON(got)
			if gotC != wantC {
				errs = append(errs, fmt.Errorf("WasmPlugin pluginConfig differs from envoy.yaml's plugin configuration:\n istio: %s\n envoy: %s", gotC, wantC))
			}
		}
	}
	return errs
}

func TestIstioManifestsValid(t *testing.T) {
	f, err := loadIstio(readIstioFiles(t))
	if err != nil {
		t.Fatalf("deploy/istio:\n%v", err)
	}
	if errs := checkAgainstEnvoy(f, loadEnvoyText(t)); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if len(f.serveLines) < 2 || len(f.pluginJSON) != 1 || len(f.clusters) != 2 ||
		len(f.backends) != 1 || len(f.serviceEntries) != 1 || len(f.destRules) != 1 || len(f.proxyMounts) != 1 {
		t.Fatalf("decoded too little to trust the checks: %d serve lines, %d plugin configs, %d clusters, %d external backends (%d ServiceEntries, %d DestinationRules, %d istio-proxy mounts)",
			len(f.serveLines), len(f.pluginJSON), len(f.clusters), len(f.backends), len(f.serviceEntries), len(f.destRules), len(f.proxyMounts))
	}
}

// vsPatchRE finds the VirtualService patch of deploy/istio/README.md, step 5.
var vsPatchRE = regexp.MustCompile(`patch virtualservice (\S+) --type merge -p \\?\s*'([^']+)'`)

// checkReadmeRoute decodes the README's VirtualService patch as a
// VirtualService and holds its one route to an external backend's host and
// port, with the authority rewritten to the backend's name.
func checkReadmeRoute(readme []byte, f *istioFacts) error {
	m := vsPatchRE.FindSubmatch(readme)
	if m == nil {
		return errors.New("no `kubectl patch virtualservice <name> --type merge -p '...'` in the README")
	}
	if f.services[string(m[1])] == nil {
		return fmt.Errorf("the README patches VirtualService %q, which the manifests do not define", m[1])
	}
	var patch struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := strictJSON(m[2], &patch); err != nil {
		return fmt.Errorf("VirtualService patch: %w", err)
	}
	vs := &networkingv1alpha3.VirtualService{}
	if err := protoStrict(patch.Spec, vs); err != nil {
		return fmt.Errorf("VirtualService patch: %w", err)
	}
	if len(vs.GetHttp()) != 1 || len(vs.GetHttp()[0].GetRoute()) != 1 {
		return fmt.Errorf("VirtualService patch: want one http route with one destination, got %v", vs.GetHttp())
	}
	r := vs.GetHttp()[0]
	d := r.GetRoute()[0].GetDestination()
	if !slices.ContainsFunc(f.backends, func(b *externalBackend) bool { return b.host == d.GetHost() && b.port == d.GetPort().GetNumber() }) {
		return fmt.Errorf("VirtualService patch routes to %s port %d, which is no external backend here", d.GetHost(), d.GetPort().GetNumber())
	}
	if r.GetRewrite().GetAuthority() != d.GetHost() {
		return fmt.Errorf("VirtualService patch: rewrite.authority %q, want %q (the backend's own name as Host)", r.GetRewrite().GetAuthority(), d.GetHost())
	}
	return nil
}

// TestIstioReadmeRoutesToExternalBackend checks the README's route to the
// external backend against the manifests, and that the check can fail.
func TestIstioReadmeRoutesToExternalBackend(t *testing.T) {
	readme, err := readRepoFile(filepath.Join(istioDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := loadIstio(readIstioFiles(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkReadmeRoute(readme, f); err != nil {
		t.Fatalf("deploy/istio/README.md: %v", err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`"number":443`, `"number":8443`, "no external backend here"},
		{`"authority":"backend.example.com"`, `"authority":"gateway.example.com"`, "rewrite.authority"},
		{`"destination":{"host"`, `"destination":{"hots"`, `unknown field "hots"`},
		{"patch virtualservice mtlsgate-backend", "patch virtualservice backend", "which the manifests do not define"},
	} {
		if strings.Count(string(readme), tc.old) != 1 {
			t.Fatalf("mutation anchor %q occurs %d times in the README, want exactly 1", tc.old, strings.Count(string(readme), tc.old))
		}
		mutated := strings.Replace(string(readme), tc.old, tc.new, 1)
		if err := checkReadmeRoute([]byte(mutated), f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("README with %q changed: got %v, want an error mentioning %q", tc.old, err, tc.want)
		}
	}
}

// TestIstioManifestsOptionalFiles checks that the external backend's manifests
// are optional: the required ones pass without them.
func TestIstioManifestsOptionalFiles(t *testing.T) {
	files := readIstioFiles(t)
	for _, name := range []string{"external-backend.yaml", "external-backend-ca-patch.yaml"} {
		if files[name] == nil {
			t.Fatalf("%s is missing", name)
		}
		delete(files, name)
	}
	f, err := loadIstio(files)
	if err != nil {
		t.Fatalf("without the optional manifests:\n%v", err)
	}
	if errs := checkAgainstEnvoy(f, loadEnvoyText(t)); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if len(f.backends) != 0 || f.sidecarPatches != 1 {
		t.Fatalf("want no external backend and one sidecar patch, got %d and %d", len(f.backends), f.sidecarPatches)
	}
}

// TestIstioManifestsMutationsFail proves the Istio checks can fail: each case
// breaks one manifest in one way.
func TestIstioManifestsMutationsFail(t *testing.T) {
	base := readIstioFiles(t)
	envoyYAML := loadEnvoyText(t)
	if _, err := loadIstio(base); err != nil {
		t.Fatalf("baseline must pass before mutations mean anything: %v", err)
	}
	cases := []struct {
		name, file, old, new, want string
	}{
		{"unknown WasmPlugin field", "wasmplugin.yaml", "  pluginConfig:", "  pluginConfg:", "pluginConfg"},
		{"unknown enum value", "wasmplugin.yaml", "phase: AUTHN", "phase: AUTHENTICATE", "AUTHENTICATE"},
		{"wrong phase", "wasmplugin.yaml", "phase: AUTHN", "phase: STATS", "want AUTHN"},
		{"fails open", "wasmplugin.yaml", "failStrategy: FAIL_CLOSE", "failStrategy: FAIL_OPEN", "FAIL_CLOSE"},
		{"other gateway", "wasmplugin.yaml", "      istio: ingressgateway", "      istio: egressgateway", "WasmPlugin selects"},
		{"bundle cluster not added", "wasmplugin.yaml", "cluster: mtlsgate_sidecar", "cluster: mtlsgate_bundle", `"mtlsgate_bundle" is not defined`},
		{"policy not in reference shape", "wasmplugin.yaml", "        export: MTLSAuthInboundPolicy", "        exports: MTLSAuthInboundPolicy", "unexpected [exports]"},
		{"plugin config drifts from envoy.yaml", "wasmplugin.yaml", "refreshSeconds: 10", "refreshSeconds: 30", "differs from envoy.yaml"},
		{"gateway not optional mutual", "gateway.yaml", "mode: OPTIONAL_MUTUAL", "mode: SIMPLE", "OPTIONAL_MUTUAL"},
		{"unknown Gateway field", "gateway.yaml", "credentialName: mtlsgate-server-cert", "credentialNam: mtlsgate-server-cert", "credentialNam"},
		{"virtual service on a missing gateway", "gateway.yaml", "- istio-system/mtlsgate", "- istio-system/other", "not defined here"},
		{"unknown metadata field", "gateway.yaml", "  name: mtlsgate\n", "  name: mtlsgate\n  nmespace: x\n", "nmespace"},
		{"cluster fails Envoy validation", "envoyfilter.yaml", "port_value: 9913 }", "port_value: 99999 }", "PortValue"},
		{"cluster port differs from the sidecar", "envoyfilter.yaml", "port_value: 9912 }", "port_value: 9922 }", "sidecar listens on 127.0.0.1:9912"},
		{"unregistered Any type", "envoyfilter.yaml", "upstreams.http.v3.HttpProtocolOptions\n", "upstreams.http.v3.HttpProtocolOption\n", "HttpProtocolOption"},
		{"unknown field in a merge patch", "envoyfilter.yaml", "forward_client_cert_details:", "forward_client_cert_detail:", "forward_client_cert_detail"},
		{"gateway verifies the chain itself", "envoyfilter.yaml", "trust_chain_verification: ACCEPT_UNTRUSTED", "trust_chain_verification: VERIFY_TRUST_CHAIN", "ACCEPT_UNTRUSTED"},
		{"wrong CA secret", "envoyfilter.yaml", "name: mtlsgate-client-ca", "name: kubernetes://mtlsgate-cacert", "validation context must be SDS secret"},
		{"no chain in xfcc", "envoyfilter.yaml", "chain: true", "chain: false", "subject, cert and chain"},
		{"source from xff", "envoyfilter.yaml", "use_remote_address: true", "use_remote_address: false", "X-Forwarded-For"},
		{"paths not normalized", "envoyfilter.yaml", "normalize_path: true", "normalize_path: false", "normalize_path and merge_slashes"},
		{"slashes not merged", "envoyfilter.yaml", "merge_slashes: true", "merge_slashes: false", "normalize_path and merge_slashes"},
		{"escaped slashes kept", "envoyfilter.yaml", "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", "path_with_escaped_slashes_action: KEEP_UNCHANGED", "path_with_escaped_slashes_action"},
		{"escaped slashes unescaped and forwarded", "envoyfilter.yaml", "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", "UNESCAPE_AND_FORWARD"},
		{"underscore headers allowed", "envoyfilter.yaml", "headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: ALLOW", "headers_with_underscores_action"},
		{"dns in xfcc", "envoyfilter.yaml", "chain: true\n", "chain: true\n            dns: true\n", "not uri or dns"},
		{"sidecar args drift", "gateway-sidecar-patch.yaml", "- 127.0.0.1:9913", "- 127.0.0.1:9923", "disagree"},
		{"sidecar off loopback", "gateway-sidecar-patch.yaml", "- 127.0.0.1:9911", "- 0.0.0.0:9911", "loopback"},
		{"xfcc sanitized", "gateway-sidecar-patch.yaml", `"forwardClientCertDetails": "SANITIZE_SET"`, `"forwardClientCertDetails": "SANITIZE"`, "want SANITIZE_SET"},
		{"annotation not a ProxyConfig", "gateway-sidecar-patch.yaml", `"gatewayTopology"`, `"gatewayTopolgy"`, "not a valid ProxyConfig"},
		{"unknown container field", "gateway-sidecar-patch.yaml", "mountPath: /var/lib/mtlsgate", "mountpath: /var/lib/mtlsgate", "mountpath"},
		{"mount without volume", "gateway-sidecar-patch.yaml", "      - name: mtlsgate-data\n        emptyDir", "      - name: mtlsgate-state\n        emptyDir", "has no volume"},
		{"trust dir not mounted", "gateway-sidecar-patch.yaml", "        - /etc/mtlsgate/trust\n", "        - /etc/mtlsgate/other\n", "--trust-dir"},
		{"trust dir writable", "gateway-sidecar-patch.yaml", "          readOnly: true\n", "", "read-only mount of a Secret"},
		{"privileged sidecar", "gateway-sidecar-patch.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "non-root"},
		{"external backend inside the mesh", "external-backend.yaml", "location: MESH_EXTERNAL", "location: MESH_INTERNAL", "want MESH_EXTERNAL"},
		{"external host exported to every sidecar", "external-backend.yaml", "  exportTo:\n  - \".\"\n", "", "exportTo"},
		{"patch matches another port", "external-backend.yaml", "        portNumber: 443", "        portNumber: 8443", "no ServiceEntry declares"},
		{"patch sets more than the socket", "external-backend.yaml", "        transport_socket:\n", "        connect_timeout: 1s\n        transport_socket:\n", "only transport_socket"},
		{"socket not Istio's TLS socket", "external-backend.yaml", "name: envoy.transport_sockets.tls", "name: tls", "Istio's name for its TLS socket"},
		{"wrong client certificate", "external-backend.yaml", "- name: backend_client_cert", "- name: backend_cert", "is not the one envoy.yaml's backend cluster presents"},
		{"client certificate from another SDS server", "external-backend.yaml", "cluster_name: mtlsgate_sds", "cluster_name: sds-grpc", `must come over gRPC from cluster "mtlsgate_sds"`},
		{"no SNI", "external-backend.yaml", "\n            sni: backend.example.com\n", "\n", `sni ""`},
		{"backend validation removed", "external-backend.yaml",
			"              validation_context:\n                trusted_ca: { filename: /etc/mtlsgate/backend-ca/ca.crt }\n                match_typed_subject_alt_names:\n                - san_type: DNS\n                  matcher: { exact: backend.example.com }\n",
			"", "does not verify the backend"},
		{"backend CA removed", "external-backend.yaml", "                trusted_ca: { filename: /etc/mtlsgate/backend-ca/ca.crt }\n", "", "needs trusted_ca"},
		{"backend chain accepted untrusted", "external-backend.yaml", "              validation_context:\n", "              validation_context:\n                trust_chain_verification: ACCEPT_UNTRUSTED\n", "must be verified"},
		{"no SAN match", "external-backend.yaml", "                match_typed_subject_alt_names:\n                - san_type: DNS\n                  matcher: { exact: backend.example.com }\n", "", "no SAN match"},
		{"SAN match names another host", "external-backend.yaml", "matcher: { exact: backend.example.com }", "matcher: { exact: other.example.com }", `want DNS exact "backend.example.com"`},
		{"no DestinationRule for the host", "external-backend.yaml", "  host: backend.example.com\n", "  host: other.example.com\n", "want one DestinationRule for backend.example.com, found 0"},
		{"DestinationRule on other pods", "external-backend.yaml", "    matchLabels:\n      istio: ingressgateway", "    matchLabels:\n      istio: egressgateway", "the pods that mount the CA file"},
		{"DestinationRule in MUTUAL mode", "external-backend.yaml", "mode: SIMPLE", "mode: MUTUAL", "want SIMPLE"},
		{"DestinationRule with credentialName", "external-backend.yaml", "      mode: SIMPLE\n", "      mode: SIMPLE\n      credentialName: mtlsgate-backend-ca\n", "credentialName"},
		{"Istio adds a second client certificate", "external-backend.yaml", "      mode: SIMPLE\n", "      mode: MUTUAL\n      credentialName: mtlsgate-backend-ca\n",
			"merged into the DestinationRule's TLS: want exactly one client certificate, over SDS; got 2"},
		{"DestinationRule skips verification", "external-backend.yaml", "      mode: SIMPLE\n", "      mode: SIMPLE\n      insecureSkipVerify: true\n", "insecureSkipVerify"},
		{"DestinationRule alone does not verify", "external-backend.yaml", "      mode: SIMPLE\n", "      mode: SIMPLE\n      insecureSkipVerify: true\n", "the DestinationRule alone does not verify"},
		{"DestinationRule alone presents a certificate", "external-backend.yaml", "      mode: SIMPLE\n", "      mode: MUTUAL\n      clientCertificate: /etc/c.pem\n      privateKey: /etc/c.key\n", "the DestinationRule alone has Istio present 1 client certificate"},
		{"DestinationRule trusts another CA", "external-backend.yaml", "caCertificates: /etc/mtlsgate/backend-ca/ca.crt", "caCertificates: /etc/ssl/certs/ca-certificates.crt", "differs from the patch's trusted_ca"},
		{"DestinationRule SNI differs", "external-backend.yaml", "\n      sni: backend.example.com\n", "\n      sni: www.example.com\n", "differs from the patch's"},
		{"DestinationRule SAN differs", "external-backend.yaml", "      subjectAltNames:\n      - backend.example.com\n", "      subjectAltNames:\n      - www.example.com\n", "differ from the patch's SAN match"},
		{"backend CA not mounted where read", "external-backend-ca-patch.yaml", "mountPath: /etc/mtlsgate/backend-ca", "mountPath: /etc/backend-ca", "not in a read-only Secret mounted into istio-proxy"},
		{"backend CA mount writable", "external-backend-ca-patch.yaml", "          readOnly: true\n", "", "must be read-only"},
		{"backend CA Secret optional", "external-backend-ca-patch.yaml", "          secretName: mtlsgate-backend-ca\n", "          secretName: mtlsgate-backend-ca\n          optional: true\n", "optional"},
		{"CA patch changes istio-proxy", "external-backend-ca-patch.yaml", "      - name: istio-proxy\n", "      - name: istio-proxy\n        image: auto\n", "may only add volume mounts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := string(base[tc.file])
			if n := strings.Count(src, tc.old); n != 1 {
				t.Fatalf("mutation anchor %q occurs %d times in %s, want exactly 1", tc.old, n, tc.file)
			}
			files := maps.Clone(base)
			files[tc.file] = []byte(strings.Replace(src, tc.old, tc.new, 1))
			f, err := loadIstio(files)
			errs := []error{err}
			if f != nil {
				errs = append(errs, checkAgainstEnvoy(f, envoyYAML)...)
			}
			all := errors.Join(errs...)
			if all == nil {
				t.Fatal("mutated manifests passed validation")
			}
			if !strings.Contains(all.Error(), tc.want) {
				t.Fatalf("error does not mention %q:\n%v", tc.want, all)
			}
		})
	}
}
