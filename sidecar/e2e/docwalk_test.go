package e2e

import (
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestServeHelpShowsFlagTypes: a usage string with a back-quoted part makes
// the flag package print that part as the flag's argument, so `serve -h`
// read "-audit-retention mtlsgate audit list" instead of "-audit-retention int"
// (and profile rollback -h "-to-version mtlsgate").
func TestServeHelpShowsFlagTypes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "-h"}, "-audit-retention int"},
		{[]string{"serve", "-h"}, "-crl-max-age-without-next-update duration"},
		{[]string{"profile", "rollback", "-h"}, "-to-version int"},
		// The directory takes DER CRLs as the CA publishes them (sidecar/README.md).
		{[]string{"serve", "-h"}, "(PEM; a CRL also DER)"},
		// Turning the CRLs on over SDS says what it costs.
		{[]string{"serve", "-h"}, "Envoy then refuses every client of a CA that has no CRL"},
		{[]string{"serve", "-h"}, "-bundle-signing-key string"},
	} {
		if r := runCLI(nil, c.args...); !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s does not show %q:\n%s", strings.Join(c.args, " "), c.want, r.stderr)
		}
	}
}

// TestAdminTokenEnvIsTheToken: MTLSGATE_ADMIN_TOKEN holds the token, not a
// file name; the help and the refusal say so, since a file name there is
// refused as a wrong token.
func TestAdminTokenEnvIsTheToken(t *testing.T) {
	p := startServe(t, t.TempDir())
	r := runCLI([]string{"MTLSGATE_SERVER=http://" + p.addrs.Admin, "MTLSGATE_ADMIN_TOKEN=" + p.addrs.TokenFile}, "ca-certificate", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "MTLSGATE_ADMIN_TOKEN to the token itself (not a file name)") {
		t.Errorf("token file name in MTLSGATE_ADMIN_TOKEN: exit %d: %s", r.code, r.stderr)
	}
	if h := runCLI(nil, "audit", "list", "-h"); !strings.Contains(h.stderr, "the token itself from $MTLSGATE_ADMIN_TOKEN") {
		t.Errorf("audit list -h: %s", h.stderr)
	}
}

// TestCRLFetchMetricBeforeFirstDownload: the metrics table lists
// mtlsgate_crl_fetches_total; it is exported at 0 before any download, so
// an alert on it has a series to read.
func TestCRLFetchMetricBeforeFirstDownload(t *testing.T) {
	p := startServe(t, t.TempDir())
	m := metricsText(t, p)
	for _, want := range []string{`mtlsgate_crl_fetches_total{result="ok"} 0`, `mtlsgate_crl_fetches_total{result="error"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestOutboundEd25519Refused: an outbound certificate must be RSA (2048 bits
// or more) or ECDSA on a NIST curve; anything else is refused at upload with
// unsupported_key, Ed25519 included.
func TestOutboundEd25519Refused(t *testing.T) {
	p := startServe(t, t.TempDir())
	c := testpki.Must(testpki.NewChain(testpki.Ed25519, 2, testpki.Options{Key: testpki.Ed25519, CommonName: "ed"}))
	cert := writeFile(t, "ed.pem", testpki.PEM(c.Leaf))
	key := writeFile(t, "ed.key", c.Leaf.KeyPEM())
	r := p.run("mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "ed", "--environment-type", "development", "--output", "json")
	if r.code != 1 || !strings.Contains(r.stdout, `"code": "unsupported_key"`) || !strings.Contains(r.stdout, "an Ed25519 key") {
		t.Errorf("Ed25519 outbound certificate: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}
