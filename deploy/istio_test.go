package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
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
	gateways    map[string]*networkingv1alpha3.Gateway // namespace/name
	services    []*networkingv1alpha3.VirtualService
	wasm        []*extensionsv1alpha1.WasmPlugin
	filters     []*networkingv1alpha3.EnvoyFilter
	deployments []*deploymentSpec
	clusters    map[string]*clusterv3.Cluster // added by EnvoyFilters
	pluginJSON  [][]byte
	serveLines  []serveLine
}

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
	f := &istioFacts{gateways: map[string]*networkingv1alpha3.Gateway{}, clusters: map[string]*clusterv3.Cluster{}}
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
		f.services = append(f.services, v)
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
		f.filters = append(f.filters, e)
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
	if len(f.gateways) == 0 || len(f.wasm) != 1 || len(f.filters) != 1 || len(f.deployments) != 1 {
		errs = append(errs, fmt.Errorf("want a Gateway, one WasmPlugin, one EnvoyFilter and one Deployment patch; found %d, %d, %d, %d",
			len(f.gateways), len(f.wasm), len(f.filters), len(f.deployments)))
	}
	for _, e := range f.filters {
		errs = append(errs, f.checkEnvoyFilter(e)...)
	}
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
	for _, d := range f.deployments {
		errs = append(errs, f.checkDeployment(d)...)
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
func (f *istioFacts) checkEnvoyFilter(e *networkingv1alpha3.EnvoyFilter) []error {
	var errs []error
	if !maps.Equal(e.GetWorkloadSelector().GetLabels(), gatewayLabels) {
		errs = append(errs, fmt.Errorf("EnvoyFilter selects %v, want %v", e.GetWorkloadSelector().GetLabels(), gatewayLabels))
	}
	sawTLS, sawHCM := false, false
	for i, p := range e.GetConfigPatches() {
		where := fmt.Sprintf("EnvoyFilter configPatches[%d]", i)
		if p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_GATEWAY {
			errs = append(errs, fmt.Errorf("%s: context %v, want GATEWAY", where, p.GetMatch().GetContext()))
		}
		js, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		switch p.GetApplyTo() {
		case networkingv1alpha3.EnvoyFilter_CLUSTER:
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
			sawTLS = true
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
			sawHCM = true
			if !h.GetUseRemoteAddress().GetValue() || h.GetXffNumTrustedHops() != 0 {
				errs = append(errs, fmt.Errorf("%s: HCM must set use_remote_address true with xff_num_trusted_hops 0 (else source.address follows the client's X-Forwarded-For)", where))
			}
			d := h.GetSetCurrentClientCertDetails()
			if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE_SET ||
				!d.GetSubject().GetValue() || !d.GetCert() || !d.GetChain() || d.GetUri() || d.GetDns() {
				errs = append(errs, fmt.Errorf("%s: HCM must set forward_client_cert_details SANITIZE_SET with subject, cert and chain, and not uri or dns (written unquoted), got %v %v", where, h.GetForwardClientCertDetails(), d))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: unexpected applyTo %v", where, p.GetApplyTo()))
		}
	}
	if !sawTLS || !sawHCM {
		errs = append(errs, errors.New("EnvoyFilter must patch both the gateway's TLS context and its HCM"))
	}
	for _, name := range []string{sdsCluster, sidecarCluster} {
		if f.clusters[name] == nil {
			errs = append(errs, fmt.Errorf("EnvoyFilter does not add cluster %q", name))
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
	if len(f.serveLines) < 2 || len(f.pluginJSON) != 1 || len(f.clusters) != 2 {
		t.Fatalf("decoded too little to trust the checks: %d serve lines, %d plugin configs, %d clusters",
			len(f.serveLines), len(f.pluginJSON), len(f.clusters))
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
