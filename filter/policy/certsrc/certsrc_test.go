package certsrc

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestXFCCQuotingAndSelection(t *testing.T) {
	v := `By=spiffe://a;Hash=11;Subject="CN=x\"y,O=a\\b;c";URI=;DNS=a;DNS=b,By=spiffe://b;Hash=22;Subject="";URI=spiffe://c`
	last, err := SelectXFCC([]string{v}, true)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseXFCCElement(last)
	if err != nil || e.Hash != "22" || e.URI[0] != "spiffe://c" {
		t.Fatalf("last element: %+v %v", e, err)
	}
	first, _ := SelectXFCC([]string{v}, false)
	e, err = ParseXFCCElement(first)
	if err != nil {
		t.Fatal(err)
	}
	if e.Subject != `CN=x"y,O=a\b;c` || len(e.DNS) != 2 || e.Hash != "11" {
		t.Fatalf("first element: %+v", e)
	}
	if _, err := XFCC(e); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("element without Cert: %v", err)
	}
	if _, err := SelectXFCC([]string{`Subject="open`}, true); err == nil {
		t.Fatal("unterminated quote accepted")
	}
	if _, err := SelectXFCC([]string{" , "}, true); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("empty elements: %v", err)
	}
	if _, err := ParseXFCCElement(`Hash=1;Hash=2`); err == nil {
		t.Fatal("repeated Hash accepted")
	}
}

func TestRFC9440Syntax(t *testing.T) {
	good := ":AQID:"
	for _, c := range []struct {
		cert  string
		chain []string
		n     int
		ok    bool
	}{
		{good, nil, 1, true},
		{good, []string{":BAUG:, :BwgJ:"}, 3, true},
		{good, []string{":BAUG:", ":BwgJ:;p=1"}, 3, true},
		{":AQI:", nil, 1, true}, // unpadded base64 tolerated
		{good + " " + good, nil, 0, false},
		{good, []string{":BAUG:,"}, 0, false},
		{good, []string{":BAUG: :BwgJ:"}, 0, false},
		{"AQID", nil, 0, false},
		{"::", nil, 0, false},
		{":!!!:", nil, 0, false},
	} {
		got, err := RFC9440(c.cert, c.chain)
		if (err == nil) != c.ok || (c.ok && len(got) != c.n) {
			t.Errorf("RFC9440(%q, %q) = %d certs, %v", c.cert, c.chain, len(got), err)
		}
	}
}

func TestHeaderLimits(t *testing.T) {
	one := "-----BEGIN CERTIFICATE-----AQID-----END CERTIFICATE-----"
	many := ""
	for i := 0; i <= MaxChain; i++ {
		many += one
	}
	if _, err := Header(many, PEM); !errors.Is(err, ErrTooManyCertificates) {
		t.Fatalf("chain longer than MaxChain: %v", err)
	}
	if got, err := Header(strings.Repeat(one, MaxChain), PEM); err != nil || len(got) != MaxChain {
		t.Fatalf("chain of MaxChain: %d, %v", len(got), err)
	}
	if _, err := Header("-----BEGIN RSA PRIVATE KEY-----x-----END RSA PRIVATE KEY-----", PEM); err == nil {
		t.Fatal("non-certificate PEM accepted")
	}
	if got, err := Header(one, PEM); err != nil || len(got) != 1 {
		t.Fatalf("single-line PEM: %v", err)
	}
	if got, err := Header("AQID, BAUG", Base64DER); err != nil || len(got) != 2 {
		t.Fatalf("base64-der list: %v", err)
	}
}

// TestTooManyCertificates: every source refuses a chain over MaxChain with an
// error matching ErrTooManyCertificates, which the policy answers as a size
// limit; its other errors do not match it.
func TestTooManyCertificates(t *testing.T) {
	one := "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"
	pems := strings.Repeat(one, MaxChain+1)
	ders := strings.TrimSuffix(strings.Repeat("AQID,", MaxChain+1), ",")
	sfs := strings.TrimSuffix(strings.Repeat(":AQID:,", MaxChain), ",")
	xfcc := func(v string) error {
		e, err := ParseXFCCElement(v)
		if err != nil {
			return err
		}
		_, err = XFCC(e)
		return err
	}
	for name, err := range map[string]error{
		"url-encoded-pem": second(Header(url.PathEscape(pems), URLEncodedPEM)),
		"pem":             second(Header(strings.ReplaceAll(pems, "\n", " "), PEM)),
		"base64-der":      second(Header(ders, Base64DER)),
		"rfc9440":         second(RFC9440(":AQID:", []string{sfs})),
		"rfc9440 lines":   second(RFC9440(":AQID:", strings.Split(sfs, ","))),
		"xfcc Chain":      xfcc(`Chain="` + url.PathEscape(pems) + `"`),
		"xfcc Cert Chain": xfcc(`Cert="` + url.PathEscape(one) + `";Chain="` + url.PathEscape(pems) + `"`),
	} {
		if !errors.Is(err, ErrTooManyCertificates) {
			t.Errorf("%s: %v, want ErrTooManyCertificates", name, err)
		}
	}
	for name, err := range map[string]error{
		"garbage":           second(Header("%%%", URLEncodedPEM)),
		"not base64":        second(Header("!!", Base64DER)),
		"two xfcc Cert":     xfcc(`Cert="` + url.PathEscape(one+one) + `"`),
		"rfc9440 separator": second(RFC9440(":AQID:", []string{":AQID: :AQID:"})),
	} {
		if err == nil || errors.Is(err, ErrTooManyCertificates) {
			t.Errorf("%s: %v, want an error other than ErrTooManyCertificates", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }
