package verifycmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	ch := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "cli"}))
	ca := write(t, dir, "ca.pem", ch.Root.PEM())
	// A curl-style bundle: leaf, key, intermediate in one file.
	combined := append(append(ch.Leaf.PEM(), ch.Leaf.KeyPEM()...), ch.Intermediates[0].PEM()...)
	cert := write(t, dir, "client.pem", combined)
	leafOnly := write(t, dir, "leaf.pem", ch.Leaf.PEM())
	chain := write(t, dir, "chain.pem", ch.Intermediates[0].PEM())

	code, out, _ := run("--ca", ca, "--cert", cert, "--output", "json")
	if code != ExitAllowed {
		t.Fatalf("exit %d: %s", code, out)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Decision != "allow" || rep.Status != 200 || rep.Headers["x-user-sub"] != "CN=cli" || rep.Headers["x-mtls-verification-status"] != "SUCCESS" {
		t.Fatalf("%+v", rep)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Fatal("key material printed")
	}
	if code, out, _ := run("--ca", ca, "--cert", leafOnly, "--chain", chain); code != 0 || !strings.Contains(out, "decision: allow") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// Missing intermediate: refused with the reason.
	code, out, _ = run("--ca", ca, "--cert", leafOnly, "--output", "json")
	if code != ExitDenied || !strings.Contains(out, `"UNTRUSTED_CHAIN"`) || !strings.Contains(out, `"deny"`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	// --at after expiry.
	at := ch.Leaf.Cert.NotAfter.Add(time.Hour).Format(time.RFC3339)
	if code, out, _ := run("--ca", ca, "--cert", cert, "--at", at); code != ExitDenied || !strings.Contains(out, "EXPIRED") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// --policy options apply.
	pol := write(t, dir, "policy.json", []byte(`{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"certIssuerDN":"CN=someone else"}}}`))
	if code, out, _ := run("--ca", ca, "--cert", cert, "--policy", pol); code != ExitDenied || !strings.Contains(out, "ISSUER_DN_MISMATCH") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// Revocation via --crl.
	crl := write(t, dir, "crl.pem", testpki.Must(ch.Intermediates[0].CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{ch.Leaf}})))
	if code, out, _ := run("--ca", ca, "--cert", cert, "--crl", crl); code != ExitDenied || !strings.Contains(out, "REVOKED") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestVerifyBadInput(t *testing.T) {
	dir := t.TempDir()
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	ca := write(t, dir, "ca.pem", ch.Root.PEM())
	cert := write(t, dir, "c.pem", ch.Leaf.PEM())
	der := write(t, dir, "c.der", ch.Leaf.DER)
	badPolicy := write(t, dir, "p.json", []byte(`{"name":"p","policyType":"mtls-auth-inbound","handler":{"export":"MTLSAuthInboundPolicy","module":"$import(@zuplo/runtime)","options":{"allowEverything":true}}}`))
	for _, args := range [][]string{
		{},
		{"--cert", cert},
		{"--ca", filepath.Join(dir, "missing.pem"), "--cert", cert},
		{"--ca", ca, "--cert", der},
		{"--ca", cert, "--cert", cert},
		{"--ca", ca, "--cert", cert, "--at", "yesterday"},
		{"--ca", ca, "--cert", cert, "--policy", badPolicy},
		{"--ca", ca, "--cert", cert, "--output", "yaml"},
		{"--ca", ca, "--cert", cert, "--bogus"},
	} {
		code, _, errOut := run(args...)
		if code != ExitBadInput || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "mtlsgate verify: ") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}
