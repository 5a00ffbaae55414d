package sds

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// TestServedCRLsVerifyAsEnvoyReadsThem: deployments that let Envoy verify
// (VERIFY_TRUST_CHAIN, the strict variant in envoy.yaml) and ask for the
// CRLs over SDS (serve --sds-crls) check clients
// against the served validation context the way Envoy's default validator
// sets up BoringSSL: trusted_ca as the store with X509_V_FLAG_PARTIAL_CHAIN
// (an uploaded intermediate anchors at itself), the CRLs, and CRL_CHECK, plus
// CRL_CHECK_ALL unless only_verify_leaf_cert_crl is set. With CRL_CHECK_ALL
// every certificate of the chain needs its issuer's list, so a client of an
// intermediate anchor (uploaded with --allow-intermediate because its root is
// not trusted) needed the root's list, which the sidecar never holds (a list
// is attached only to the CA that signed it): every such client was refused
// at the handshake, revoked or not, as soon as any CRL was published.
//
// OpenSSL's verifier stands in for BoringSSL here; the two share this part
// (check_revocation and the flags above).
func TestServedCRLsVerifyAsEnvoyReadsThem(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	rootA := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Root A"}))
	// Root R is not trusted; only its intermediate I is.
	rootR := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Root R"}))
	inter := testpki.Must(rootR.Issue(testpki.Options{CommonName: "Intermediate I", CA: true}))
	leafA := testpki.Must(rootA.Issue(testpki.Options{CommonName: "client of A"}))
	revokedA := testpki.Must(rootA.Issue(testpki.Options{CommonName: "revoked client of A"}))
	leafI := testpki.Must(inter.Issue(testpki.Options{CommonName: "client of I"}))
	revokedI := testpki.Must(inter.Issue(testpki.Options{CommonName: "revoked client of I"}))

	st := State{
		CAs: []store.CA{
			{ID: "mtlsca_a", Name: "a", PEM: string(rootA.PEM())},
			{ID: "mtlsca_i", Name: "i", PEM: string(inter.PEM())},
		},
		CRLs: []store.CRL{
			{ID: "mtlscrl_a", CAID: "mtlsca_a", PEM: string(testpki.Must(rootA.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revokedA}})))},
			{ID: "mtlscrl_i", CAID: "mtlsca_i", PEM: string(testpki.Must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revokedI}})))},
		},
	}
	s := startServerWith(t, st, Options{Environment: "development", CRLs: true})
	c := s.openSotW(ClientCASecret)
	vc := c.next("the validation context").secrets[ClientCASecret].GetValidationContext()
	if vc == nil {
		t.Fatal("no validation context served")
	}

	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"verify", "-partial_chain",
		"-CAfile", write("trusted.pem", vc.GetTrustedCa().GetInlineString()),
		"-CRLfile", write("crl.pem", vc.GetCrl().GetInlineString())}
	if vc.GetOnlyVerifyLeafCertCrl() {
		args = append(args, "-crl_check")
	} else {
		args = append(args, "-crl_check_all")
	}
	for _, tc := range []struct {
		leaf *testpki.Cert
		ok   bool
	}{{leafA, true}, {revokedA, false}, {leafI, true}, {revokedI, false}} {
		cn := tc.leaf.Cert.Subject.CommonName
		out, err := exec.Command(openssl, append(args, write(strings.ReplaceAll(cn, " ", "_")+".pem", string(tc.leaf.PEM())))...).CombinedOutput()
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s refused (%s): %s", cn, strings.Join(args[1:], " "), out)
		case !tc.ok && err == nil:
			t.Errorf("%s accepted, want revoked", cn)
		case !tc.ok && !strings.Contains(string(out), "revoked"):
			t.Errorf("%s refused for another reason than revocation: %s", cn, out)
		}
	}
}
