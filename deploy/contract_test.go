package deploy

import (
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// TestServeLineMatchesSidecarDefaults keeps the documented invocation and the
// sidecar's defaults together: the README tells operators to run a bare
// `mtlsgate serve`, and the CLI's default --server is the default admin address,
// so envoy.yaml must point where a default sidecar listens.
func TestServeLineMatchesSidecarDefaults(t *testing.T) {
	lines, err := parseServeLines(string(loadEnvoyText(t)))
	if err != nil {
		t.Fatal(err)
	}
	want := serveLine{sds: daemon.DefaultSDSListen, bundle: daemon.DefaultBundleListen, admin: daemon.DefaultAdminListen}
	for _, got := range lines {
		if got != want {
			t.Errorf("envoy.yaml documents sidecar addresses %+v but `mtlsgate serve` defaults to %+v", got, want)
		}
	}
}

// TestSidecarSecretsMergeIntoListener builds the secrets the sidecar really
// serves and combines them with envoy.yaml's static validation context the way
// Envoy does (ContextConfigImpl::getCombinedValidationContextConfig copies the
// default context and MergeFrom()s the SDS one). The result must keep
// ACCEPT_UNTRUSTED — the filter decides — and carry the sidecar's CA list; in
// the strict variant it must keep VERIFY_TRUST_CHAIN. Every secret envoy.yaml
// asks for must be one the sidecar produces.
func TestSidecarSecretsMergeIntoListener(t *testing.T) {
	data := loadEnvoyText(t)
	f, err := checkEnvoyText(data)
	if err != nil {
		t.Fatal(err)
	}
	state := sds.State{}
	for _, s := range f.secrets {
		if !s.validation {
			state.Outbound = append(state.Outbound, store.Outbound{
				Name: s.name, ChainPEM: "chain", KeyPEM: []byte("key"),
				EnvironmentTypes: []string{daemon.DefaultEnvironment}, Enabled: true,
			})
		}
	}
	served := map[string]*tlsv3.Secret{}
	for _, s := range sds.Secrets(state, sds.Options{Environment: daemon.DefaultEnvironment}) {
		if err := s.ValidateAll(); err != nil {
			t.Errorf("sidecar secret %q fails Envoy's validation: %v", s.GetName(), err)
		}
		served[s.GetName()] = s
	}
	for _, s := range f.secrets {
		sec := served[s.name]
		switch {
		case sec == nil:
			t.Errorf("%s: envoy.yaml asks for secret %q, which the sidecar does not serve", s.where, s.name)
		case s.validation && sec.GetValidationContext() == nil:
			t.Errorf("%s: secret %q is not a validation context", s.where, s.name)
		case !s.validation && sec.GetTlsCertificate() == nil:
			t.Errorf("%s: secret %q is not a TLS certificate", s.where, s.name)
		}
	}

	dynamic := served[clientCASecret].GetValidationContext()
	if dynamic.GetTrustedCa() == nil {
		t.Fatal("the sidecar's validation context carries no trusted_ca")
	}
	merged := func(d *tlsv3.DownstreamTlsContext) *tlsv3.CertificateValidationContext {
		c := proto.Clone(d.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext()).(*tlsv3.CertificateValidationContext)
		proto.Merge(c, dynamic)
		return c
	}
	got := merged(f.downstream[0])
	if got.GetTrustChainVerification() != tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED || !proto.Equal(got.GetTrustedCa(), dynamic.GetTrustedCa()) {
		t.Errorf("merged validation context %v: want ACCEPT_UNTRUSTED with the sidecar's CAs", got)
	}

	ts, _ := strictVariant(t, data)
	strict := &tlsv3.DownstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(strict); err != nil {
		t.Fatal(err)
	}
	if got := merged(strict); got.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN || got.GetTrustedCa() == nil {
		t.Errorf("strict variant merged validation context %v: want VERIFY_TRUST_CHAIN with the sidecar's CAs", got)
	}
}
