package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/tetratelabs/wazero"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

// checkEnvoyText is the whole validation of an envoy.yaml document: the proto
// parse, every structural and cross-reference check, and agreement between the
// documented "mtlsgate serve" line and the sidecar clusters.
func checkEnvoyText(data []byte) (*envoyFacts, error) {
	b, err := parseBootstrap(data)
	if err != nil {
		return nil, err
	}
	f, err := checkEnvoy(b)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	lines, serr := parseServeLines(string(data))
	if serr != nil {
		errs = append(errs, serr)
	}
	for _, s := range lines {
		for cluster, addr := range map[string]string{sdsCluster: s.sds, sidecarCluster: s.bundle} {
			c := f.clusters[cluster]
			if c == nil {
				continue // reported by checkEnvoy
			}
			if got := clusterEndpoints(c); !slices.Equal(got, []string{addr}) {
				errs = append(errs, fmt.Errorf("cluster %q points at %v but the documented sidecar listens on %s", cluster, got, addr))
			}
		}
	}
	return f, errors.Join(errs...)
}

func loadEnvoyText(t *testing.T) []byte {
	t.Helper()
	data, err := readRepoFile(envoyConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEnvoyConfigValid(t *testing.T) {
	f, err := checkEnvoyText(loadEnvoyText(t))
	if err != nil {
		t.Fatalf("envoy.yaml:\n%v", err)
	}
	// Guard the guard: a walk that silently visited nothing would pass every
	// check above vacuously.
	if len(f.clusterRefs) < 3 || len(f.secrets) != 2 || len(f.hcms) != 1 || len(f.downstream) != 1 {
		t.Fatalf("walk found too little: %d cluster refs, %d secrets, %d hcms, %d downstream TLS contexts",
			len(f.clusterRefs), len(f.secrets), len(f.hcms), len(f.downstream))
	}
	if !acceptsUntrusted(f) {
		t.Error("the default listener must leave verification to the filter (ACCEPT_UNTRUSTED)")
	}
	for _, d := range f.downstream {
		if d.GetRequireClientCertificate().GetValue() {
			t.Error("require_client_certificate must be false so a missing certificate gets a 401 with a reason, not a TLS alert")
		}
	}
}

// TestEnvoyConfigFiles lists the local files Envoy opens at startup and holds
// them to the generated directories, so the config runs from any checkout.
func TestEnvoyConfigFiles(t *testing.T) {
	f, err := checkEnvoyText(loadEnvoyText(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"build/mtlsgate.wasm", "certs/backend-ca.pem", "certs/server.key", "certs/server.pem"}
	got := slices.Clone(f.files)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("envoy.yaml reads files %v, want %v (update this list and scripts/e2e-envoy.sh together)", got, want)
	}
	for _, fn := range got {
		if filepath.IsAbs(fn) {
			t.Errorf("%s: absolute paths tie the config to one machine", fn)
		}
	}
}

// TestEnvoyConfigWasmModule checks that the module envoy.yaml loads exists and is
// one Envoy will accept: a valid wasm binary exporting the ABI version marker
// Envoy looks for and the _initialize a c-shared Go module needs called first.
func TestEnvoyConfigWasmModule(t *testing.T) {
	path := os.Getenv("MTLSGATE_WASM")
	if path == "" {
		path = filepath.Join(repoRoot(), wasmModulePath)
	}
	code, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not built; run `make build` (make test builds it first) to check the module envoy.yaml loads", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, code)
	if err != nil {
		t.Fatalf("%s is not a valid wasm module: %v", path, err)
	}
	exports := cm.ExportedFunctions()
	for _, name := range []string{"proxy_abi_version_0_2_1", "_initialize", "proxy_on_context_create", "proxy_on_memory_allocate"} {
		if _, ok := exports[name]; !ok {
			t.Errorf("%s does not export %s", path, name)
		}
	}
}

// strictVariant extracts the commented strict variant from envoy.yaml: the
// transport socket (lines prefixed "#strict ") and the policy ("#strict-policy ").
func strictVariant(t *testing.T, data []byte) (*corev3.TransportSocket, []byte) {
	t.Helper()
	var sock bytes.Buffer
	var policy []byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " ")
		switch {
		case strings.HasPrefix(line, "#strict "):
			sock.WriteString(strings.TrimPrefix(line, "#strict ") + "\n")
		case strings.HasPrefix(line, "#strict-policy "):
			policy = []byte(strings.TrimPrefix(line, "#strict-policy "))
		}
	}
	if sock.Len() == 0 || policy == nil {
		t.Fatal("envoy.yaml has no commented strict variant (#strict / #strict-policy lines)")
	}
	js, err := yaml.YAMLToJSONStrict(sock.Bytes())
	if err != nil {
		t.Fatalf("strict variant: %v", err)
	}
	var wrapper map[string]json.RawMessage
	if err := json.Unmarshal(js, &wrapper); err != nil || len(wrapper) != 1 || wrapper["transport_socket"] == nil {
		t.Fatalf("strict variant must be a single transport_socket block, got %s", js)
	}
	ts := &corev3.TransportSocket{}
	if err := protojson.Unmarshal(wrapper["transport_socket"], ts); err != nil {
		t.Fatalf("strict variant: %v", err)
	}
	return ts, policy
}

// TestEnvoyConfigStrictVariant applies the commented strict variant to the real
// config and runs every check on the result, so the comment stays a working
// configuration rather than drifting documentation.
func TestEnvoyConfigStrictVariant(t *testing.T) {
	data := loadEnvoyText(t)
	ts, policy := strictVariant(t, data)
	b, err := parseBootstrap(data)
	if err != nil {
		t.Fatal(err)
	}
	b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].TransportSocket = ts
	editPlugin(t, b, func(cfg map[string]any) {
		var p any
		if err := json.Unmarshal(policy, &p); err != nil {
			t.Fatalf("strict policy line: %v", err)
		}
		cfg["policies"] = []any{p}
	})
	f, err := checkEnvoy(b)
	if err != nil {
		t.Fatalf("strict variant:\n%v", err)
	}
	if acceptsUntrusted(f) {
		t.Error("strict variant must verify the chain in Envoy (VERIFY_TRUST_CHAIN)")
	}
	if !f.downstream[0].GetRequireClientCertificate().GetValue() {
		t.Error("strict variant must require a client certificate")
	}
	cfg := pluginOf(t, b)
	if pols, _ := checkPluginConfig(cfg, func(string) bool { return true }); len(pols.Policies) != 1 || pols.Policies[0].ChainVerification != "envoy" {
		t.Errorf("strict policy must set chainVerification \"envoy\", got %+v", pols.Policies)
	}
}

// editHCM applies fn to the (first) HTTP connection manager, repacking its Any.
func editHCM(t *testing.T, b *bootstrapv3.Bootstrap, fn func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	filter := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := filter.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	fn(h)
	a, err := anypb.New(h)
	if err != nil {
		t.Fatal(err)
	}
	filter.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

// editWasm applies fn to the wasm filter's PluginConfig.
func editWasm(t *testing.T, b *bootstrapv3.Bootstrap, fn func(*wasmfilterv3.Wasm)) {
	t.Helper()
	editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
		for _, hf := range h.GetHttpFilters() {
			w := &wasmfilterv3.Wasm{}
			if hf.GetTypedConfig().UnmarshalTo(w) != nil {
				continue
			}
			fn(w)
			a, err := anypb.New(w)
			if err != nil {
				t.Fatal(err)
			}
			hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
			return
		}
		t.Fatal("no wasm filter to edit")
	})
}

// editPlugin applies fn to the decoded plugin JSON and stores it back.
func editPlugin(t *testing.T, b *bootstrapv3.Bootstrap, fn func(map[string]any)) {
	t.Helper()
	editWasm(t, b, func(w *wasmfilterv3.Wasm) {
		raw, err := pluginJSON(w.GetConfig())
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		fn(cfg)
		out, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		a, err := anypb.New(wrapperspb.String(string(out)))
		if err != nil {
			t.Fatal(err)
		}
		w.GetConfig().Configuration = a
	})
}

func pluginOf(t *testing.T, b *bootstrapv3.Bootstrap) []byte {
	t.Helper()
	var raw []byte
	editWasm(t, b, func(w *wasmfilterv3.Wasm) {
		var err error
		if raw, err = pluginJSON(w.GetConfig()); err != nil {
			t.Fatal(err)
		}
	})
	return raw
}

// editDownstreamTLS applies fn to the listener's DownstreamTlsContext.
func editDownstreamTLS(t *testing.T, b *bootstrapv3.Bootstrap, fn func(*tlsv3.DownstreamTlsContext)) {
	t.Helper()
	ts := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetTransportSocket()
	d := &tlsv3.DownstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
		t.Fatal(err)
	}
	fn(d)
	a, err := anypb.New(d)
	if err != nil {
		t.Fatal(err)
	}
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
}

func cluster(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// TestEnvoyConfigMutationsFail proves each check can fail: every case breaks
// envoy.yaml in one way and the validation must reject it with a message that
// names the defect. Text mutations exercise the parse (YAML, unknown fields and
// Any types, validation rules); proto mutations reach what text edits cannot
// isolate cleanly.
func TestEnvoyConfigMutationsFail(t *testing.T) {
	base := string(loadEnvoyText(t))
	if _, err := checkEnvoyText([]byte(base)); err != nil {
		t.Fatalf("baseline must pass before mutations mean anything: %v", err)
	}

	text := []struct {
		name, old, new, want string
	}{
		{"unregistered typed_config type", "envoy.extensions.filters.http.router.v3.Router\n", "envoy.extensions.filters.http.router.v3.Routerr\n", "Routerr"},
		{"unknown field", "forward_client_cert_details: SANITIZE_SET", "forward_client_cert_detail: SANITIZE_SET", "forward_client_cert_detail"},
		{"validation rule inside an Any", "stat_prefix: mtls_ingress", `stat_prefix: ""`, "StatPrefix"},
		{"validation rule in the bootstrap", "port_value: 8443 }", "port_value: 70000 }", "PortValue"},
		{"xfcc passed through from the client", "forward_client_cert_details: SANITIZE_SET", "forward_client_cert_details: APPEND_FORWARD", "SANITIZE_SET"},
		{"no chain in xfcc", "            chain: true\n", "            chain: false\n", "chain"},
		{"source from xff", "          use_remote_address: true\n", "          use_remote_address: false\n", "X-Forwarded-For"},
		{"uri in xfcc", "            chain: true\n", "            chain: true\n            uri: true\n", "not uri or dns"},
		{"backend not verified", "            trusted_ca: { filename: certs/backend-ca.pem }\n", "", "does not verify the server"},
		{"backend name not matched", "            match_typed_subject_alt_names:\n            - san_type: DNS\n              matcher: { exact: backend.local }\n", "            match_subject_alt_names: []\n", "does not verify the server"},
		{"paths not normalized", "normalize_path: true", "normalize_path: false", "normalize_path and merge_slashes"},
		{"slashes not merged", "merge_slashes: true", "merge_slashes: false", "normalize_path and merge_slashes"},
		{"escaped slashes kept", "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", "path_with_escaped_slashes_action: KEEP_UNCHANGED", "path_with_escaped_slashes_action"},
		{"escaped slashes at Envoy's default", "          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n", "", "IMPLEMENTATION_SPECIFIC_DEFAULT"},
		{"underscore headers allowed", "headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: DROP_HEADER", "headers_with_underscores_action"},
		{"http/1.0 accepted", "          request_headers_timeout: 30s\n", "          request_headers_timeout: 30s\n          http_protocol_options: { accept_http_10: true }\n", "accept_http_10"},
		{"chunked beside content-length", "          request_headers_timeout: 30s\n", "          request_headers_timeout: 30s\n          http_protocol_options: { allow_chunked_length: true }\n", "allow_chunked_length"},
		{"no header timeout", "          request_headers_timeout: 30s\n", "", "request_headers_timeout"},
		{"stream idle timeout disabled", "stream_idle_timeout: 300s", "stream_idle_timeout: 0s", "stream_idle_timeout"},
		{"connection idle timeout disabled", "idle_timeout: 3600s", "idle_timeout: 0s", "idle_timeout must be set"},
		{"h2 streams unbounded", "max_concurrent_streams: 100", "max_concurrent_streams: 2147483647", "max_concurrent_streams"},
		{"h2 stream window at the default", "            initial_stream_window_size: 65536 # 64 KiB\n", "", "initial_stream_window_size"},
		{"h2 connection window at the default", "            initial_connection_window_size: 1048576 # 1 MiB\n", "", "initial_connection_window_size"},
		{"listener buffers 1 MiB", "    per_connection_buffer_limit_bytes: 32768\n    filter_chains:", "    filter_chains:", `listener "mtls_ingress": per_connection_buffer_limit_bytes`},
		{"backend buffers 1 MiB", "    connect_timeout: 2s\n    per_connection_buffer_limit_bytes: 32768\n", "    connect_timeout: 2s\n", `cluster "backend": per_connection_buffer_limit_bytes`},
		{"no downstream connection limit", "  - name: envoy.resource_monitors.global_downstream_max_connections\n", "  - name: envoy.resource_monitors.global_downstream_connections\n", "global_downstream_max_connections resource monitor"},
		{"no backend sni", "        sni: backend.local\n", "", "sni must name the backend"},
		{"wasm fails open (deprecated field)", "fail_open: false", "fail_open: true", "fail closed"},
		{"wasm fails open", "failure_policy: FAIL_CLOSED", "failure_policy: FAIL_OPEN", "fail closed"},
		{"wrong root id", "root_id: mtlsgate\n", "root_id: mtlsgate_root\n", "root_id"},
		{"wrong module path", "filename: build/mtlsgate.wasm", "filename: build/noop.wasm", "code.local.filename"},
		{"plugin JSON invalid", `"refreshSeconds": 10`, `"refreshSeconds": 10,`, "not a JSON object"},
		{"bundle cluster undefined", `"cluster": "mtlsgate_sidecar"`, `"cluster": "mtlsgate_bundle"`, `"mtlsgate_bundle" is not defined`},
		{"key spelt with the wrong case", `"cluster": "mtlsgate_sidecar"`, `"Cluster": "mtlsgate_sidecar"`, "trustBundle.cluster is missing"},
		{"bundle refresh missing", `"refreshSeconds": 10`, `"refreshSeconds": 0`, "refreshSeconds"},
		{"route to undefined policy", `{ "pathPrefix": "/", "policy": "mtls-inbound" }`, `{ "pathPrefix": "/", "policy": "mtls-outbound" }`, `"mtls-outbound" is not defined`},
		{"policy not in reference shape", `"export": "MTLSAuthInboundPolicy"`, `"exports": "MTLSAuthInboundPolicy"`, "unexpected [exports]"},
		{"policy option wrong type", `"allowExpiredCertificates": false`, `"allowExpiredCertificates": "no"`, "allowExpiredCertificates must be a boolean"},
		{"nobody verifies the chain", `"allowRevokedCertificates": false`, `"allowRevokedCertificates": false, "chainVerification": "envoy"`, "no one would verify"},
		{"outbound secret not an identifier", "- name: backend_client_cert", "- name: backend-client-cert", "JavaScript identifiers"},
		{"sds cluster port differs from the serve line", "port_value: 9912 }", "port_value: 9922 }", "documented sidecar listens on 127.0.0.1:9912"},
		{"bundle port differs from the serve line", "port_value: 9913 }", "port_value: 9923 }", "documented sidecar listens on 127.0.0.1:9913"},
		{"serve line loses a flag", " --admin-listen 127.0.0.1:9911", "", "explicitly"},
	}
	for _, tc := range text {
		t.Run(tc.name, func(t *testing.T) {
			if n := strings.Count(base, tc.old); n != 1 {
				t.Fatalf("mutation anchor %q occurs %d times in envoy.yaml, want exactly 1", tc.old, n)
			}
			_, err := checkEnvoyText([]byte(strings.Replace(base, tc.old, tc.new, 1)))
			if err == nil {
				t.Fatal("mutated config passed validation")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not mention %q:\n%v", tc.want, err)
			}
		})
	}

	structural := []struct {
		name   string
		mutate func(*testing.T, *bootstrapv3.Bootstrap)
		want   string
	}{
		{"sds cluster removed", func(t *testing.T, b *bootstrapv3.Bootstrap) { removeCluster(b, sdsCluster) }, `"mtlsgate_sds" is not defined`},
		{"backend cluster removed", func(t *testing.T, b *bootstrapv3.Bootstrap) { removeCluster(b, "backend") }, `"backend" is not defined`},
		{"bundle cluster removed", func(t *testing.T, b *bootstrapv3.Bootstrap) { removeCluster(b, sidecarCluster) }, `"mtlsgate_sidecar" is not defined`},
		{"duplicate cluster", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			b.StaticResources.Clusters = append(b.StaticResources.Clusters, proto.Clone(cluster(b, "backend")).(*clusterv3.Cluster))
		}, "defined twice"},
		{"sds cluster speaks HTTP/1", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, sdsCluster).TypedExtensionProtocolOptions = nil
		}, "HTTP/2"},
		{"CA secret renamed", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editDownstreamTLS(t, b, func(d *tlsv3.DownstreamTlsContext) {
				d.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().Name = "client-ca"
			})
		}, `"client-ca"`},
		{"CA secret from another SDS server", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editDownstreamTLS(t, b, func(d *tlsv3.DownstreamTlsContext) {
				d.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetSdsConfig().
					GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().ClusterName = "backend"
			})
		}, `must be fetched over gRPC from cluster "mtlsgate_sds"`},
		{"listener allows TLS 1.0", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editDownstreamTLS(t, b, func(d *tlsv3.DownstreamTlsContext) {
				d.GetCommonTlsContext().GetTlsParams().TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_0
			})
		}, "downstream TLS context: tls_params.tls_minimum_protocol_version"},
		{"listener minimum version left to Envoy", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editDownstreamTLS(t, b, func(d *tlsv3.DownstreamTlsContext) { d.GetCommonTlsContext().TlsParams = nil })
		}, "want TLSv1_2 or later, explicitly"},
		{"listener allows a CBC suite", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editDownstreamTLS(t, b, func(d *tlsv3.DownstreamTlsContext) {
				d.GetCommonTlsContext().GetTlsParams().CipherSuites = []string{"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"}
			})
		}, `"ECDHE-RSA-AES128-SHA" is not ECDHE with an AEAD`},
		{"listener sets signature algorithms", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editDownstreamTLS(t, b, func(d *tlsv3.DownstreamTlsContext) {
				d.GetCommonTlsContext().GetTlsParams().SignatureAlgorithms = []string{"ed25519", "ecdsa_secp256r1_sha256"}
			})
		}, "signature_algorithms must stay at Envoy's default"},
		{"backend allows TLS 1.1", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			ts := cluster(b, "backend").GetTransportSocket()
			u := &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
				t.Fatal(err)
			}
			u.GetCommonTlsContext().GetTlsParams().TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_1
			a, err := anypb.New(u)
			if err != nil {
				t.Fatal(err)
			}
			ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
		}, `upstream TLS context (sni "backend.local"): tls_params.tls_minimum_protocol_version`},
		{"no overload manager", func(t *testing.T, b *bootstrapv3.Bootstrap) { b.OverloadManager = nil }, "fixed_heap resource monitor"},
		{"router before wasm", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { slices.Reverse(h.HttpFilters) })
		}, "router must be the last"},
		{"wasm filter removed", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = h.HttpFilters[1:] })
		}, "no envoy.filters.http.wasm"},
		{"plugin without policies", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editPlugin(t, b, func(c map[string]any) { delete(c, "policies") })
		}, `"policies" must be a non-empty array`},
		{"plugin without trust bundle", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editPlugin(t, b, func(c map[string]any) { delete(c, "trustBundle") })
		}, `no "trustBundle"`},
		{"plugin configuration not a string", func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editWasm(t, b, func(w *wasmfilterv3.Wasm) {
				a, _ := anypb.New(wrapperspb.Int64(1))
				w.GetConfig().Configuration = a
			})
		}, "StringValue"},
	}
	for _, tc := range structural {
		t.Run(tc.name, func(t *testing.T) {
			b, err := parseBootstrap([]byte(base))
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, b)
			_, err = checkEnvoy(b)
			if err == nil {
				t.Fatal("mutated config passed validation")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not mention %q:\n%v", tc.want, err)
			}
		})
	}
}

func removeCluster(b *bootstrapv3.Bootstrap, name string) {
	b.StaticResources.Clusters = slices.DeleteFunc(b.StaticResources.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == name })
}
