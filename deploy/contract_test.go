package deploy

import (
	"testing"

	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
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
