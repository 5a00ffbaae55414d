package e2e

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
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

// TestStoredIncompleteCRLWithheld: a store written before delta and
// partitioned lists were refused may hold one. Published, it would make the
// filter refuse the whole bundle; serve withholds it instead, marks its CA
// revocationUnknown, says which list and what to do, counts it in
// mtlsgate_crls_withheld, and publishes everything else.
func TestStoredIncompleteCRLWithheld(t *testing.T) {
	dir := t.TempDir()
	a := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Delta CA"}))
	b := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Plain CA"}))
	base, _ := asn1.Marshal(big.NewInt(1))
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(2), ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(time.Hour), ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: base}}}, a.Cert, a.Key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	caA, err := st.CreateCA(pki.CARecord("delta_ca", a.Cert, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	caB, err := st.CreateCA(pki.CARecord("plain_ca", b.Cert, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	delta, err := st.CreateCRL(store.CRL{CAID: caA.ID, PEM: string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})),
		Number: "2", ThisUpdate: time.Now().Add(-time.Hour).UTC(), NextUpdate: time.Now().Add(time.Hour).UTC()}, nil)

	if err != nil {
		t.Fatal(err)
	}
	plain := testpki.Must(b.CRL(testpki.CRLOptions{Number: big.NewInt(5)}))
	if _, err := st.CreateCRL(store.CRL{CAID: caB.ID, PEM: string(plain)}, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	p := startServe(t, dir)
	bd := getBundle(t, p)
	if len(bd.CRLs) != 1 || strings.TrimSpace(bd.CRLs[0].PEM) != strings.TrimSpace(string(plain)) {
		t.Fatalf("bundle CRLs %+v, want only the plain CA's", bd.CRLs)
	}
	if len(bd.CACertificates) != 2 {
		t.Fatalf("bundle has %d CAs, want both", len(bd.CACertificates))
	}
	// The CA of the withheld list is marked, so the filter takes its
	// revocation status as unknown, not as absent.
	for _, c := range bd.CACertificates {
		if c.RevocationUnknown != (c.ID == caA.ID) {
			t.Fatalf("CA %s (%s) revocationUnknown %v", c.ID, c.Name, c.RevocationUnknown)
		}
	}
	if !strings.Contains(p.stderr.String(), "CRL withheld") || !strings.Contains(p.stderr.String(), delta.ID) || !strings.Contains(p.stderr.String(), "delta CRL") {
		t.Fatalf("serve did not say which list it withheld:\n%s", p.stderr.String())
	}
	if m := string(httpBody(t, "http://"+p.addrs.Admin+"/metrics")); !strings.Contains(m, "mtlsgate_crls_withheld 1") {
		t.Fatalf("metrics lack mtlsgate_crls_withheld 1")
	}
	// The way out the log names: the CA's complete list, though its number
	// (1) is below the delta's (2), as a base's is.
	full := testpki.Must(a.CRL(testpki.CRLOptions{Number: big.NewInt(1)}))
	var upd api.CRL
	p.runJSON(t, &upd, "crl", "update", "--crl-id", delta.ID, "--file", writeFile(t, "full.crl", full))
	if upd.Number != "1" {
		t.Fatalf("after the update the CRL is number %s, want 1", upd.Number)
	}
	if bd := getBundle(t, p); len(bd.CRLs) != 2 || bd.CACertificates[0].RevocationUnknown || bd.CACertificates[1].RevocationUnknown {
		t.Fatalf("after the replacement: %d CRLs (want 2), CAs %+v", len(bd.CRLs), bd.CACertificates)
	}
	if m := string(httpBody(t, "http://"+p.addrs.Admin+"/metrics")); !strings.Contains(m, "mtlsgate_crls_withheld 0") {
		t.Fatalf("metrics lack mtlsgate_crls_withheld 0 after the replacement")
	}
}
