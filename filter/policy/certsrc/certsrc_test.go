package certsrc

import (
	"errors"
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
	if _, err := Header(many, PEM); err == nil {
		t.Fatal("chain longer than MaxChain accepted")
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
