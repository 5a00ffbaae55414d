package e2e

import (
	"strings"
	"testing"
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
