package e2e

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// TestDeltaAndPartitionedCRLsRefused: through the admin API, a delta CRL
// or one with an issuingDistributionPoint (a partition) is refused on create
// and on update, and the complete list in force stays.
func TestDeltaAndPartitionedCRLsRefused(t *testing.T) {
	p := startServe(t, t.TempDir())
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Delta CA"}))
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "delta_ca", "--cert", writeFile(t, "root.pem", root.PEM()))

	list := func(number int64, exts ...pkix.Extension) string {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour),
			ExtraExtensions: exts,
		}, root.Cert, root.Key)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, "list.crl", der)
	}
	base, err := asn1.Marshal(big.NewInt(1))
	if err != nil {
		t.Fatal(err)
	}
	delta := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: base}
	onlyUsers, err := asn1.Marshal(struct {
		OnlyUserCerts bool `asn1:"optional,tag:1"`
	}{true})
	if err != nil {
		t.Fatal(err)
	}
	partition := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: onlyUsers}

	refused := func(what string, args ...string) {
		t.Helper()
		r := p.run(append(args, "--output", "json")...)
		var out struct{ Error struct{ Code, Detail string } }
		if r.code != 1 || json.Unmarshal([]byte(r.stdout), &out) != nil || out.Error.Code != "crl_not_complete" || !strings.Contains(r.stderr, "complete") {
			t.Fatalf("%s: exit %d, %q %q", what, r.code, r.stdout, r.stderr)
		}
	}
	refused("create with a delta CRL", "crl", "create", "--cert-id", ca.ID, "--file", list(2, delta))
	refused("create with a partitioned CRL", "crl", "create", "--cert-id", ca.ID, "--file", list(2, partition))

	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--file", list(1))
	refused("update with a delta CRL", "crl", "update", "--crl-id", crl.ID, "--file", list(3, delta))
	refused("update with a partitioned CRL", "crl", "update", "--crl-id", crl.ID, "--file", list(3, partition))
	var kept api.CRL
	p.runJSON(t, &kept, "crl", "describe", "--crl-id", crl.ID)
	if kept.Number != "1" {
		t.Fatalf("after the refused updates the CRL is number %s, want 1", kept.Number)
	}
}
