package pki

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestProbeSHA1SelfSignedRootCalledIntermediate: a self-signed root whose
// self-signature is SHA-1 (many long-lived private roots) is refused as
// "an intermediate CA issued by <itself>". A root's self-signature is not
// relied upon by path validation (RFC 5280 6.1; crypto/x509 ignores it), so the
// root should be accepted, or at least refused for what it is.
func TestProbeSHA1SelfSignedRootCalledIntermediate(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "root.pem")
	cmd := exec.Command("openssl", "req", "-x509", "-sha1", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(dir, "k"),
		"-out", out, "-subj", "/CN=SHA1 Root", "-days", "365")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	data, _ := os.ReadFile(out)
	if _, err := CA(data, false, time.Now()); err != nil {
		t.Errorf("SHA-1 self-signed root refused: %v", err)
	}
}
