package dn

import (
	"encoding/asn1"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

type attr struct {
	oid asn1.ObjectIdentifier
	tag int
	val []byte
}

var (
	oidCN    = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO     = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU    = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidC     = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidUID   = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	oidEmail = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidDC    = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	oidOdd   = asn1.ObjectIdentifier{1, 2, 3, 4, 5}
)

const (
	tUTF8      = 12
	tPrintable = 19
	tT61       = 20
	tIA5       = 22
	tBMP       = 30
	tInteger   = 2
)

func utf8v(s string) attr { return attr{oidCN, tUTF8, []byte(s)} }

// rawName encodes RDNs exactly as given (each inner slice one RDN), so tests
// can produce names pkix.Name cannot express.
func rawName(t testing.TB, rdns ...[]attr) []byte {
	type atv struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}
	var seq []asn1.RawValue
	for _, rdn := range rdns {
		var set []byte
		for _, a := range rdn {
			b, err := asn1.Marshal(atv{a.oid, asn1.RawValue{Tag: a.tag, Bytes: a.val}})
			if err != nil {
				t.Fatal(err)
			}
			set = append(set, b...)
		}
		seq = append(seq, asn1.RawValue{Class: 0, Tag: 17, IsCompound: true, Bytes: set})
	}
	out, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func bmp(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r>>8), byte(r))
	}
	return b
}

type dnCase struct {
	name string
	der  []byte
	want string // expected openssl output; checked against openssl too when present
}

func cases(t testing.TB) []dnCase {
	return []dnCase{
		{"plain", rawName(t, []attr{{oidC, tPrintable, []byte("US")}}, []attr{{oidO, tUTF8, []byte("Example")}}, []attr{utf8v("example-ca")}),
			"CN=example-ca,O=Example,C=US"},
		{"specials", rawName(t, []attr{utf8v(`a,b+c"d\e<f>g;h=i/j`)}), `CN=a\,b\+c\"d\\e\<f\>g\;h=i/j`},
		{"leading hash and spaces", rawName(t, []attr{{oidO, tUTF8, []byte("#hash")}}, []attr{utf8v(" spaced  ")}), `CN=\ spaced \ ,O=\#hash`},
		{"inner hash", rawName(t, []attr{utf8v("a#b")}), `CN=a#b`},
		{"utf8", rawName(t, []attr{utf8v("Zoë 日本")}), `CN=Zo\C3\AB \E6\97\A5\E6\9C\AC`},
		{"email", rawName(t, []attr{{oidEmail, tIA5, []byte("ops@example.com")}}, []attr{utf8v("client")}), `CN=client,emailAddress=ops@example.com`},
		{"multi-valued", rawName(t, []attr{{oidDC, tIA5, []byte("example")}}, []attr{utf8v("svc"), {oidUID, tUTF8, []byte("u1")}}), `UID=u1+CN=svc,DC=example`},
		{"unknown oid", rawName(t, []attr{{oidOdd, tUTF8, []byte("xyz")}}, []attr{utf8v("c")}), `CN=c,1.2.3.4.5=#0C0378797A`},
		{"t61 latin1", rawName(t, []attr{{oidOU, tT61, []byte{'c', 0xe9}}}), `OU=c\C3\A9`},
		{"bmp", rawName(t, []attr{{oidOU, tBMP, bmp("Aé")}}), `OU=A\C3\A9`},
		{"control", rawName(t, []attr{utf8v("a\x01b\x7f")}), `CN=a\01b\7F`},
		{"non-string under known oid", rawName(t, []attr{{oidOU, tInteger, []byte{0x05}}}), `OU=#020105`},
		// openssl's last-character rule wins over its first-character one:
		// a lone '#' is not escaped, a lone space is.
		{"lone hash", rawName(t, []attr{utf8v("#")}), `CN=#`},
		{"lone space", rawName(t, []attr{utf8v(" ")}), `CN=\ `},
		{"hash and space", rawName(t, []attr{utf8v("# ")}), `CN=\#\ `},
		{"fax", rawName(t, []attr{{asn1.ObjectIdentifier{2, 5, 4, 23}, tPrintable, []byte("+1 555 0100")}}), `facsimileTelephoneNumber=\+1 555 0100`},
		{"challengePassword", rawName(t, []attr{{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}, tPrintable, []byte("pw")}}), `challengePassword=pw`},
		{"registeredAddress", rawName(t, []attr{{asn1.ObjectIdentifier{2, 5, 4, 26}, tUTF8, []byte("1 Main St")}}), `registeredAddress=1 Main St`},
		{"c3", rawName(t, []attr{{asn1.ObjectIdentifier{2, 5, 4, 98}, tPrintable, []byte("USA")}}), `c3=USA`},
	}
}

func TestFormat(t *testing.T) {
	for _, c := range cases(t) {
		got, err := Format(c.der)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: Format = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestFormatMatchesOpenSSL puts each name in a real certificate and compares
// with what openssl prints for it.
func TestFormatMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: the byte-for-byte comparison with openssl -nameopt RFC2253 needs it")
	}
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	dir := t.TempDir()
	for i, c := range cases(t) {
		leaf, err := root.Issue(testpki.Options{RawSubject: c.der})
		if err != nil {
			// crypto/x509 refuses some names openssl accepts (a non-string
			// value); such a certificate never reaches the policy anyway.
			t.Logf("%s: %v", c.name, err)
			continue
		}
		p := filepath.Join(dir, "c"+string(rune('a'+i))+".pem")
		if err := os.WriteFile(p, leaf.PEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "x509", "-in", p, "-noout", "-subject", "-nameopt", "RFC2253").Output()
		if err != nil {
			t.Fatalf("%s: openssl: %v", c.name, err)
		}
		want := strings.TrimPrefix(strings.TrimRight(string(out), "\n"), "subject=")
		got, err := Format(leaf.Cert.RawSubject)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: Format = %q, openssl prints %q", c.name, got, want)
		}
		// Whatever openssl prints must pin the same name.
		pat, err := ParsePattern("subject=" + want)
		if err != nil {
			t.Fatalf("%s: ParsePattern(%q): %v", c.name, want, err)
		}
		if !pat.Match(leaf.Cert.RawSubject) {
			t.Errorf("%s: pattern %q does not match its own name", c.name, want)
		}
	}
}

// TestShortNamesMatchOpenSSL prints one name holding every attribute of the
// short-name table (a UTF8String each) and compares with openssl, so each
// name in the table is checked against the tool operators copy DNs from.
func TestShortNamesMatchOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: the comparison with openssl -nameopt RFC2253 needs it")
	}
	oids := make([]string, 0, len(shortNames))
	for oid := range shortNames {
		oids = append(oids, oid)
	}
	sort.Strings(oids)
	var rdns [][]attr
	for _, s := range oids {
		var oid asn1.ObjectIdentifier
		for _, part := range strings.Split(s, ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				t.Fatalf("table OID %q: %v", s, err)
			}
			oid = append(oid, n)
		}
		rdns = append(rdns, []attr{{oid, tUTF8, []byte("v")}})
	}
	der := rawName(t, rdns...)
	leaf := testpki.Must(testpki.Must(testpki.NewRoot(testpki.Options{})).Issue(testpki.Options{RawSubject: der}))
	p := filepath.Join(t.TempDir(), "all.pem")
	if err := os.WriteFile(p, leaf.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "x509", "-in", p, "-noout", "-subject", "-nameopt", "RFC2253").Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	want := strings.Split(strings.TrimPrefix(strings.TrimRight(string(out), "\n"), "subject="), ",")
	got := strings.Split(testpki.Must(Format(der)), ",")
	if len(got) != len(want) {
		t.Fatalf("Format printed %d RDNs, openssl %d:\n%s\n%s", len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("Format prints %q, openssl %q", got[i], want[i])
		}
	}
}

// TestAttributeNamesUnambiguous: configured DNs read attribute names
// case-insensitively, so no two printed names may differ only in case, and
// each must read back as its own OID.
func TestAttributeNamesUnambiguous(t *testing.T) {
	seen := map[string]string{}
	for oid, name := range shortNames {
		if other, dup := seen[strings.ToLower(name)]; dup {
			t.Errorf("%s (%s) and %s print names equal but for case", oid, name, other)
		}
		seen[strings.ToLower(name)] = oid
		if got, err := attrOID(name); err != nil || got != oid {
			t.Errorf("attrOID(%q) = %q, %v; want %s", name, got, err, oid)
		}
	}
	// openssl prints uniqueIdentifier as "uid"; read case-insensitively that
	// is userId's "UID", so it keeps its dotted form (and "uid" means userId).
	uniqueID := rawName(t, []attr{{asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 44}, tUTF8, []byte("u")}})
	if got := testpki.Must(Format(uniqueID)); got != "0.9.2342.19200300.100.1.44=#0C0175" {
		t.Errorf("uniqueIdentifier printed as %q", got)
	}
	if oid, _ := attrOID("uid"); oid != "0.9.2342.19200300.100.1.1" {
		t.Errorf(`"uid" reads as %s, want userId`, oid)
	}
}

func TestPatternMatch(t *testing.T) {
	name := rawName(t, []attr{{oidC, tPrintable, []byte("US")}}, []attr{{oidO, tUTF8, []byte("Example  Corp")}}, []attr{utf8v("example-ca")})
	multi := rawName(t, []attr{utf8v("svc"), {oidUID, tUTF8, []byte("u1")}})
	for _, c := range []struct {
		pattern string
		der     []byte
		want    bool
	}{
		{"CN=example-ca,O=Example Corp,C=US", name, true},
		{"cn=EXAMPLE-CA, o = example corp ;  c=us", name, true},
		{"commonName=example-ca,organizationName=Example Corp,countryName=US", name, true},
		{"2.5.4.3=example-ca,O=Example Corp,C=US", name, true},
		{"issuer=CN=example-ca,O=Example Corp,C=US", name, true},
		{`CN="example-ca",O=Example Corp,C=US`, name, true},
		{"C=US,O=Example Corp,CN=example-ca", name, false}, // order matters
		{"CN=example-ca,O=ExampleCorp,C=US", name, false},  // whitespace folded, not removed
		{"CN=example-ca,O=Example Corp", name, false},      // missing RDN
		{"CN=example-ca,O=Example Corp,C=US,DC=x", name, false},
		{"CN=svc+UID=u1", multi, true},
		{"UID=u1+CN=svc", multi, true},
		{"CN=svc,UID=u1", multi, false},
		{"CN=Zo\\C3\\AB", rawName(t, []attr{utf8v("ZOË")}), true},
		{"1.2.3.4.5=#0C0378797A", rawName(t, []attr{{oidOdd, tUTF8, []byte("xyz")}}), true},
		{"CN=#", rawName(t, []attr{utf8v("#")}), true},
		{`CN=\#`, rawName(t, []attr{utf8v("#")}), true},
		{"CN=#", rawName(t, []attr{utf8v("")}), false},
		{`CN=\ `, rawName(t, []attr{utf8v(" ")}), true},
		{`CN=a\\ `, rawName(t, []attr{utf8v(`a\`)}), true},
		// A name that became known still matches the dotted form printed before.
		{`facsimileTelephoneNumber=\+1 555 0100`, rawName(t, []attr{{asn1.ObjectIdentifier{2, 5, 4, 23}, tPrintable, []byte("+1  555 0100")}}), true},
		{"2.5.4.23=#130C2B3120203535352030313030", rawName(t, []attr{{asn1.ObjectIdentifier{2, 5, 4, 23}, tPrintable, []byte("+1  555 0100")}}), true},
		{"CHALLENGEPASSWORD=PW", rawName(t, []attr{{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}, tPrintable, []byte("pw")}}), true},
	} {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", c.pattern, err)
		}
		if got := p.Match(c.der); got != c.want {
			t.Errorf("%q.Match = %v, want %v", c.pattern, got, c.want)
		}
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, s := range []string{"", "   ", "CN", "XX=1", "CN=a,", `CN="open`, "CN=a\\", "CN=#zz", "1.2.x=3"} {
		if _, err := ParsePattern(s); err == nil {
			t.Errorf("ParsePattern(%q) accepted", s)
		}
	}
}

func TestMalformedDER(t *testing.T) {
	for _, b := range [][]byte{nil, {0x30}, {0x30, 0x05, 0x31}, {0x30, 0x84, 0xff, 0xff, 0xff, 0xff}, {0x31, 0x00}, {0x30, 0x02, 0x31, 0x00}} {
		if _, err := Format(b); err == nil {
			t.Errorf("Format(% x) accepted malformed DER", b)
		}
	}
}

func FuzzDN(f *testing.F) {
	for _, c := range cases(f) {
		f.Add(c.der, c.want)
	}
	f.Add([]byte{0x30, 0x00}, `CN=a\`)
	f.Fuzz(func(t *testing.T, der []byte, pattern string) {
		s, err := Format(der)
		if err == nil && s != "" {
			p, perr := ParsePattern(s)
			if perr == nil && !p.Match(der) {
				// A formatted name must pin itself; values that fold to the same
				// text are fine, a miss is not.
				t.Errorf("formatted name %q does not match its own DER", s)
			}
		}
		if p, err := ParsePattern(pattern); err == nil {
			p.Match(der)
		}
	})
}
