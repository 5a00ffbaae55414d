package trustdir

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

type fixture struct {
	t     *testing.T
	dir   string
	store *store.Store
	sync  *Syncer
	// changes counts store writes, each of which republishes in the daemon.
	changes int
	// check, when set, runs after every store write: what the daemon would
	// publish at that moment.
	check func()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: filepath.Join(t.TempDir(), "trust")}
	if err := os.Mkdir(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SetOnChange(func() {
		f.changes++
		if f.check != nil {
			f.check()
		}
	})
	f.store = st
	f.sync = &Syncer{Dir: f.dir, Store: st}
	return f
}

func (f *fixture) write(name string, data []byte) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), data, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) remove(name string) {
	f.t.Helper()
	if err := os.Remove(filepath.Join(f.dir, name)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) syncOK() Result {
	f.t.Helper()
	res, err := f.sync.Sync()
	if err != nil {
		f.t.Fatalf("sync: %v", err)
	}
	return res
}

// cas returns the stored CAs' subjects and whether each is managed.
func (f *fixture) cas() []string {
	f.t.Helper()
	list, err := f.store.ListCAs()
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, c := range list {
		out = append(out, c.Subject+"|"+c.ManagedBy)
	}
	sort.Strings(out)
	return out
}

func (f *fixture) crls() []store.CRL {
	f.t.Helper()
	list, err := f.store.ListCRLs()
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

func root(t *testing.T, cn string) *testpki.Cert {
	t.Helper()
	return testpki.Must(testpki.NewRoot(testpki.Options{CommonName: cn}))
}

func crl(t *testing.T, ca *testpki.Cert, number int64, revoked ...*testpki.Cert) []byte {
	t.Helper()
	return testpki.Must(ca.CRL(testpki.CRLOptions{Number: big.NewInt(number), Revoked: revoked,
		ThisUpdate: time.Now().Add(time.Duration(number-100) * time.Minute)}))
}

// incompleteCRL is a DER delta CRL (on base number 1) when delta is set,
// else one limited to user certificates by an issuingDistributionPoint.
func incompleteCRL(t *testing.T, ca *testpki.Cert, delta bool) []byte {
	t.Helper()
	ext := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 0x03, 0x81, 0x01, 0xff}} // onlyContainsUserCerts
	if delta {
		ext = pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{0x02, 0x01, 0x01}} // base CRL number 1
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(2), ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(time.Hour), ExtraExtensions: []pkix.Extension{ext}}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func eq(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stored CAs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSyncFollowsTheDirectory(t *testing.T) {
	f := newFixture(t)
	a, b := root(t, "partners A"), root(t, "partners B")
	// One CA added by an operator through the admin API's store call: the
	// directory must never touch it.
	manual := root(t, "manual")
	if _, err := f.store.CreateCA(store.CA{Name: "manual", PEM: string(manual.PEM()), Subject: "CN=manual", Fingerprint: pki.Fingerprint(manual.DER)}, nil); err != nil {
		t.Fatal(err)
	}

	// A Secret key holding two CAs in one file, and a CRL for one of them.
	f.write("ca.crt", append(a.PEM(), b.PEM()...))
	f.write("partners-a.crl", crl(t, a, 100))
	if r := f.syncOK(); r != (Result{CAsAdded: 2, CRLsAdded: 1}) {
		t.Fatalf("first sync: %+v", r)
	}
	eq(t, f.cas(), "CN=manual|", "CN=partners A|trust-dir", "CN=partners B|trust-dir")
	if c := f.crls(); len(c) != 1 || c[0].Number != "100" || c[0].ManagedBy != store.ManagedByTrustDir {
		t.Fatalf("CRLs: %+v", c)
	}
	list, _ := f.store.ListCAs()
	for _, c := range list {
		if c.ManagedBy != "" && (!strings.HasPrefix(c.Name, "ca_") || pki.ValidName(c.Name) != nil) {
			t.Errorf("managed CA name %q: want ca_<fingerprint prefix>, a valid name", c.Name)
		}
	}

	// Unchanged directory: nothing is written.
	before := f.changes
	if r := f.syncOK(); r.Changed() || f.changes != before {
		t.Fatalf("unchanged directory wrote: %+v, %d writes", r, f.changes-before)
	}

	// A newer CRL replaces the list in place.
	f.write("partners-a.crl", crl(t, a, 101, a))
	if r := f.syncOK(); r != (Result{CRLsUpdated: 1}) {
		t.Fatalf("CRL update: %+v", r)
	}
	if c := f.crls(); len(c) != 1 || c[0].Number != "101" || c[0].RevokedCount != 1 {
		t.Fatalf("CRLs: %+v", c)
	}

	// Rotation in place: the file now holds a new A. The new one is added
	// before the old one (and its CRL) goes.
	a2 := root(t, "partners A")
	f.write("ca.crt", append(a2.PEM(), b.PEM()...))
	f.remove("partners-a.crl")
	f.check = func() {
		n := 0
		for _, c := range f.cas() {
			if strings.HasPrefix(c, "CN=partners A|") {
				n++
			}
		}
		if n == 0 {
			t.Error("a write during rotation left no partners A CA to publish")
		}
	}
	// One write: the old CA's CRL goes with it, and Envoy and the filter
	// see the new CA in the same publish that drops the old one.
	w := f.changes
	if r := f.syncOK(); r != (Result{CAsAdded: 1, CAsRemoved: 1}) || f.changes != w+1 {
		t.Fatalf("rotation: %+v in %d writes", r, f.changes-w)
	}
	f.check = nil
	eq(t, f.cas(), "CN=manual|", "CN=partners A|trust-dir", "CN=partners B|trust-dir")
	if c := f.crls(); len(c) != 0 {
		t.Fatalf("CRLs after rotation: %+v", c)
	}
	stored, _ := f.store.ListCAs()
	for _, c := range stored {
		if c.Subject == "CN=partners A" && c.Fingerprint != pki.Fingerprint(a2.DER) {
			t.Fatal("old partners A still stored")
		}
	}

	// Emptying the directory withdraws what it added, nothing else.
	f.remove("ca.crt")
	if r := f.syncOK(); r != (Result{CAsRemoved: 2}) {
		t.Fatalf("empty directory: %+v", r)
	}
	eq(t, f.cas(), "CN=manual|")
}

// TestSyncAllOrNothing: a directory with any bad file changes nothing, and
// says which file and what to do.
func TestSyncAllOrNothing(t *testing.T) {
	a, other := root(t, "partners A"), root(t, "other")
	leaf := testpki.Must(a.Issue(testpki.Options{CommonName: "client"}))
	inter := testpki.Must(a.Issue(testpki.Options{CommonName: "intermediate", CA: true}))
	for _, c := range []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"client certificate", map[string][]byte{"client.pem": leaf.PEM()}, "client.pem"},
		{"intermediate", map[string][]byte{"inter.pem": inter.PEM()}, "self-signed root"},
		{"private key", map[string][]byte{"tls.key": leaf.KeyPEM()}, "private key"},
		{"not PEM", map[string][]byte{"notes.txt": []byte("hello")}, "neither a PEM block nor a DER CRL"},
		{"DER", map[string][]byte{"ca.der": a.DER}, "openssl x509 -inform der"},
		{"same CA twice", map[string][]byte{"one.pem": a.PEM(), "two.pem": a.PEM()}, "same CA certificate"},
		{"CRL of an unknown CA", map[string][]byte{"x.crl": crl(t, other, 1)}, "signed by none of the trusted CAs"},
		{"two CRLs of one CA", map[string][]byte{"a1.crl": crl(t, a, 1), "a2.crl": crl(t, a, 2)}, "both hold a CRL"},
		{"delta CRL", map[string][]byte{"delta.crl": incompleteCRL(t, a, true)}, "is a delta CRL"},
		{"partitioned CRL", map[string][]byte{"users.crl": incompleteCRL(t, a, false)}, "issuingDistributionPoint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.write("good.pem", a.PEM())
			f.syncOK()
			before := f.cas()
			for n, d := range c.files {
				f.write(n, d)
			}
			w := f.changes
			_, err := f.sync.Sync()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if f.changes != w {
				t.Fatalf("%d writes from a refused directory", f.changes-w)
			}
			eq(t, f.cas(), before...)
		})
	}
}

func TestSyncRefusesAnOlderCRL(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners A")
	f.write("a.pem", a.PEM())
	f.write("a.crl", crl(t, a, 7))
	f.syncOK()
	f.write("a.crl", crl(t, a, 6))
	if _, err := f.sync.Sync(); err == nil || !strings.Contains(err.Error(), "older") {
		t.Fatalf("older CRL: %v", err)
	}
	if c := f.crls(); len(c) != 1 || c[0].Number != "7" {
		t.Fatalf("CRLs: %+v", c)
	}
}

func TestSyncLeavesAdminCRLsAlone(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners A")
	f.write("a.pem", a.PEM())
	f.syncOK()
	list, _ := f.store.ListCAs()
	if _, err := f.store.CreateCRL(store.CRL{CAID: list[0].ID, PEM: string(crl(t, a, 1)), Number: "1"}, nil); err != nil {
		t.Fatal(err)
	}
	f.write("a.crl", crl(t, a, 2))
	if _, err := f.sync.Sync(); err == nil || !strings.Contains(err.Error(), "crl delete") {
		t.Fatalf("CRL over an admin one: %v", err)
	}
	// Removing the directory's files does not remove the admin CRL either
	// (its CA goes, and the store takes the CA's lists with it).
	f.remove("a.crl")
	f.syncOK()
	if c := f.crls(); len(c) != 1 || c[0].Number != "1" {
		t.Fatalf("CRLs: %+v", c)
	}
}

// TestSyncKubernetesSecretLayout reads a directory laid out as the kubelet
// mounts a Secret: the keys are symlinks into a hidden, timestamped
// directory that an update replaces by swapping the ..data link.
func TestSyncKubernetesSecretLayout(t *testing.T) {
	f := newFixture(t)
	a, b := root(t, "partners A"), root(t, "partners B")
	version := func(stamp string, files map[string][]byte) {
		d := filepath.Join(f.dir, "..2026_12_01_"+stamp)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for n, data := range files {
			if err := os.WriteFile(filepath.Join(d, n), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		tmp := filepath.Join(f.dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(d), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(f.dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("01", map[string][]byte{"ca.crt": a.PEM()})
	if err := os.Symlink(filepath.Join("..data", "ca.crt"), filepath.Join(f.dir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	f.syncOK()
	eq(t, f.cas(), "CN=partners A|trust-dir")
	version("02", map[string][]byte{"ca.crt": b.PEM()})
	f.syncOK()
	eq(t, f.cas(), "CN=partners B|trust-dir")
	// A version with other keys, read right after the ..data swap and
	// before the kubelet has fixed the top-level links (ca.crt now dangles,
	// a.crt is not linked yet): the new version is read as a whole.
	version("03", map[string][]byte{"a.crt": a.PEM(), "b.crt": b.PEM()})
	f.syncOK()
	eq(t, f.cas(), "CN=partners A|trust-dir", "CN=partners B|trust-dir")
}

func TestSyncSkipsExpiredCAs(t *testing.T) {
	f := newFixture(t)
	old := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	a := root(t, "partners A")
	f.write("old.pem", old.PEM())
	f.write("a.pem", a.PEM())
	if r := f.syncOK(); r != (Result{CAsAdded: 1}) {
		t.Fatalf("%+v", r)
	}
	eq(t, f.cas(), "CN=partners A|trust-dir")
}

func TestSyncMissingDirectory(t *testing.T) {
	f := newFixture(t)
	f.write("a.pem", root(t, "partners A").PEM())
	f.syncOK()
	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync.Sync(); err == nil || !strings.Contains(err.Error(), "--trust-dir") {
		t.Fatalf("missing directory: %v", err)
	}
	// A directory that vanished is not an empty one: trust stays.
	eq(t, f.cas(), "CN=partners A|trust-dir")
}

// TestSyncAdoptsAnAdminCA: a CA stored through the admin API and also listed
// in the directory becomes the directory's (not stored twice), so removing
// its file withdraws it; and a managed CA deleted around the directory comes
// back at the next read.
func TestSyncAdoptsAnAdminCA(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners A")
	admin, err := f.store.CreateCA(store.CA{Name: "by_hand", PEM: string(a.PEM()), Subject: "CN=partners A", Fingerprint: pki.Fingerprint(a.DER)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.write("a.pem", a.PEM())
	if r := f.syncOK(); r != (Result{CAsAdopted: 1}) {
		t.Fatalf("adoption: %+v", r)
	}
	eq(t, f.cas(), "CN=partners A|trust-dir")
	if got, _ := f.store.GetCA(admin.ID); got.Name != "by_hand" {
		t.Fatalf("adopted CA renamed or replaced: %+v", got)
	}
	if _, _, err := f.store.DeleteCA(admin.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	if r := f.syncOK(); r != (Result{CAsAdded: 1}) {
		t.Fatalf("after a deletion around the directory: %+v", r)
	}
	f.remove("a.pem")
	if r := f.syncOK(); r != (Result{CAsRemoved: 1}) {
		t.Fatalf("withdrawal: %+v", r)
	}
	eq(t, f.cas())
}

// TestSyncSkipsCRLsOfLeavingCAs: a CRL whose CA expired or was removed from
// the directory is skipped, not a reason to freeze every other change (a
// CA that is not trusted lets nothing through that its list could stop).
func TestSyncSkipsCRLsOfLeavingCAs(t *testing.T) {
	f := newFixture(t)
	short := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "short-lived", NotAfter: time.Now().Add(time.Hour)}))
	b, c := root(t, "partners B"), root(t, "partners C")
	f.write("short.pem", short.PEM())
	f.write("short.crl", crl(t, short, 1))
	f.write("b.pem", b.PEM())
	f.write("b.crl", crl(t, b, 1))
	if r := f.syncOK(); r != (Result{CAsAdded: 2, CRLsAdded: 2}) {
		t.Fatalf("%+v", r)
	}
	// Two hours on, the short-lived CA has expired; C is added meanwhile.
	f.sync.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	f.write("c.pem", c.PEM())
	if r := f.syncOK(); r != (Result{CAsAdded: 1, CAsRemoved: 1}) {
		t.Fatalf("after expiry: %+v", r)
	}
	eq(t, f.cas(), "CN=partners B|trust-dir", "CN=partners C|trust-dir")
	// B is withdrawn but its CRL file forgotten: B goes all the same.
	f.remove("b.pem")
	if r := f.syncOK(); r != (Result{CAsRemoved: 1}) {
		t.Fatalf("withdrawal with the CRL left: %+v", r)
	}
	eq(t, f.cas(), "CN=partners C|trust-dir")
	if c := f.crls(); len(c) != 0 {
		t.Fatalf("CRLs left: %+v", c)
	}
}

// TestSyncWithConcurrentAdminWrites runs syncs of a changing directory
// while another writer adds and deletes CAs of its own: every sync either
// applies whole or fails whole, and the store ends matching the directory.
func TestSyncWithConcurrentAdminWrites(t *testing.T) {
	f := newFixture(t)
	roots := []*testpki.Cert{root(t, "dir 0"), root(t, "dir 1"), root(t, "dir 2")}
	other := root(t, "admin's")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			ca, err := f.store.CreateCA(store.CA{Name: "admins", PEM: string(other.PEM()), Subject: "CN=admin's", Fingerprint: pki.Fingerprint(other.DER)}, nil)
			if err == nil {
				_, _, err = f.store.DeleteCA(ca.ID, nil, nil)
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 60; i++ {
		// The directory holds two of the three roots, a different pair each time.
		for j, r := range roots {
			name := fmt.Sprintf("r%d.pem", j)
			if j == i%3 {
				os.Remove(filepath.Join(f.dir, name))
				continue
			}
			f.write(name, r.PEM())
		}
		if _, err := f.sync.Sync(); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		var managed []string
		for _, c := range f.cas() {
			if strings.HasSuffix(c, "|trust-dir") {
				managed = append(managed, c)
			}
		}
		if len(managed) != 2 {
			t.Fatalf("sync %d left %v", i, managed)
		}
	}
	<-done
}

// TestSyncTakesDERCRLs: a revocation list as CAs publish it, DER, is taken
// as the admin API takes it, and stored as PEM like any other; a DER CA
// certificate is still refused with the command that converts it.
func TestSyncTakesDERCRLs(t *testing.T) {
	f := newFixture(t)
	a := root(t, "partners A")
	revoked := testpki.Must(a.Issue(testpki.Options{CommonName: "gone"}))
	der := testpki.Must(a.CRLDER(testpki.CRLOptions{Number: big.NewInt(7), Revoked: []*testpki.Cert{revoked}}))
	f.write("a.pem", a.PEM())
	f.write("a.crl", der)
	if r := f.syncOK(); r != (Result{CAsAdded: 1, CRLsAdded: 1}) {
		t.Fatalf("%+v", r)
	}
	c := f.crls()
	if len(c) != 1 || c[0].Number != "7" || c[0].RevokedCount != 1 || !strings.HasPrefix(c[0].PEM, "-----BEGIN X509 CRL-----") {
		t.Fatalf("stored CRLs: %+v", c)
	}
	// The same list, now in PEM: nothing to change.
	f.write("a.crl", testpki.Must(a.CRL(testpki.CRLOptions{Number: big.NewInt(7), Revoked: []*testpki.Cert{revoked}})))
	w := f.changes
	f.syncOK()
	if got := f.crls(); got[0].Number != "7" || f.changes > w+1 {
		t.Fatalf("after PEM of list 7: %+v, %d writes", got, f.changes-w)
	}
	f.write("b.der", root(t, "partners B").DER)
	_, err := f.sync.Sync()
	if err == nil || !strings.Contains(err.Error(), "openssl x509 -inform der -in b.der -out b.pem") {
		t.Fatalf("DER CA: %v", err)
	}
	f.remove("b.der")
	f.write("junk.crl", append([]byte{0x30, 0x82}, der[2:len(der)/2]...))
	if _, err := f.sync.Sync(); err == nil || !strings.Contains(err.Error(), "junk.crl") {
		t.Fatalf("truncated DER CRL: %v", err)
	}
}

// TestSyncUnchangedDirectoryAfterExpiry: an unchanged directory is not
// parsed again on every tick (the expired CA's warning comes once), yet a
// CA that expires while nothing changes is still withdrawn on time.
func TestSyncUnchangedDirectoryAfterExpiry(t *testing.T) {
	f := newFixture(t)
	var logs strings.Builder
	f.sync.Log = slog.New(slog.NewTextHandler(&logs, nil))
	clock := time.Now()
	f.sync.Now = func() time.Time { return clock }
	short := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "short-lived", NotAfter: clock.Add(time.Hour)}))
	old := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "old", NotBefore: clock.Add(-48 * time.Hour), NotAfter: clock.Add(-time.Hour)}))
	b := root(t, "partners B")
	f.write("short.pem", short.PEM())
	f.write("old.pem", old.PEM())
	f.write("old.crl", crl(t, old, 1))
	f.write("b.pem", b.PEM())
	if r := f.syncOK(); r != (Result{CAsAdded: 2}) {
		t.Fatalf("%+v", r)
	}
	for i := 0; i < 3; i++ {
		clock = clock.Add(10 * time.Minute)
		if r := f.syncOK(); r.Changed() {
			t.Fatalf("unchanged directory changed the store: %+v", r)
		}
	}
	if n := strings.Count(logs.String(), "expired CA certificate skipped"); n != 1 {
		t.Fatalf("expired CA warned about %d times over 4 syncs of the same files, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "CRL in old.crl skipped"); n != 1 {
		t.Fatalf("skipped CRL warned about %d times over 4 syncs, want once:\n%s", n, logs.String())
	}
	clock = clock.Add(time.Hour)
	if r := f.syncOK(); r != (Result{CAsRemoved: 1}) {
		t.Fatalf("after the short-lived CA expired: %+v", r)
	}
	eq(t, f.cas(), "CN=partners B|trust-dir")
}

// TestSyncVersion1Root: a self-signed version 1 root is a CA like any
// other: taken while valid, skipped (not a reason to refuse the directory)
// once expired.
func TestSyncVersion1Root(t *testing.T) {
	f := newFixture(t)
	v1 := testpki.Must(testpki.NewVersion1("Legacy Root", nil))
	b := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "partners B", NotAfter: time.Now().AddDate(5, 0, 0)}))
	f.write("legacy.pem", v1.PEM())
	f.write("b.pem", b.PEM())
	if r := f.syncOK(); r != (Result{CAsAdded: 2}) {
		t.Fatalf("%+v", r)
	}
	f.sync.Now = func() time.Time { return v1.Cert.NotAfter.Add(time.Hour) }
	if r := f.syncOK(); r != (Result{CAsRemoved: 1}) {
		t.Fatalf("after the version 1 root expired: %+v", r)
	}
	eq(t, f.cas(), "CN=partners B|trust-dir")
}
