package deploy

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/filter/policy"
)

// TestFilterAcceptsDeployedConfig runs the filter's own configuration parser
// over every plugin configuration the deployables ship: envoy.yaml's, its
// strict variant's and the Istio WasmPlugin's. The filter refuses to start on
// a configuration it rejects, and Envoy would then fail closed on every request.
func TestFilterAcceptsDeployedConfig(t *testing.T) {
	data := loadEnvoyText(t)
	b, err := parseBootstrap(data)
	if err != nil {
		t.Fatal(err)
	}
	envoyJSON := pluginOf(t, b)

	_, strictPolicy := strictVariant(t, data)
	editPlugin(t, b, func(c map[string]any) { c["policies"] = []any{rawJSON(t, strictPolicy)} })
	strictJSON := pluginOf(t, b)

	f, err := loadIstio(readIstioFiles(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.pluginJSON) != 1 {
		t.Fatalf("want one WasmPlugin configuration, got %d", len(f.pluginJSON))
	}

	for _, tc := range []struct {
		name  string
		json  []byte
		chain string
	}{
		{"envoy.yaml", envoyJSON, "filter"},
		{"envoy.yaml strict variant", strictJSON, "envoy"},
		{"istio WasmPlugin", f.pluginJSON[0], "filter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := policy.ParseConfig(tc.json)
			if err != nil {
				t.Fatalf("filter rejects the configuration: %v\n%s", err, tc.json)
			}
			p := cfg.Policy("mtls-inbound")
			if p == nil || p.Options.ChainVerification != tc.chain || p.Options.AllowUnauthenticatedRequests {
				t.Fatalf("policy mtls-inbound parsed as %+v", p)
			}
			s := cfg.TrustBundle.Sidecar
			if s == nil || s.Cluster != sidecarCluster || s.Path != "/v1/bundle" || s.Refresh != 10*time.Second {
				t.Fatalf("trust bundle source parsed as %+v", s)
			}
		})
	}

	// The parser is the last word on keys this package's shape check leaves
	// open; make sure it is really consulted by showing it rejects a typo.
	bad := strings.Replace(string(envoyJSON), `"refreshSeconds"`, `"refreshSecs"`, 1)
	if bad == string(envoyJSON) {
		t.Fatal("mutation anchor not found")
	}
	if _, err := policy.ParseConfig([]byte(bad)); err == nil {
		t.Fatal("filter parser accepted trustBundle.refreshSecs")
	}
}
