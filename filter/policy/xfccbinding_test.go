package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// sanInjection is a DNS SAN that, written unquoted into XFCC by Envoy, ends
// the element Envoy wrote and starts one carrying victim's certificate.
func sanInjection(victim *testpki.Chain) string {
	return "x,Hash=" + strings.ToLower(strings.ReplaceAll(fingerprint(victim.Leaf.DER), ":", "")) +
		`;Cert="` + envoyURLEncode(string(victim.Leaf.PEM())) + `";Chain="` + envoyURLEncode(string(victim.Presented())) + `"`
}

func digestOf(c *testpki.Cert) string {
	return strings.ToLower(strings.ReplaceAll(fingerprint(c.DER), ":", ""))
}

// TestXFCCBoundToConnection: the listener accepts any client certificate
// (the filter answers with the reason), so anyone can present a self-signed
// certificate whose SAN holds XFCC syntax. Envoy writes SANs unquoted, so
// such a SAN turns into an extra, later element carrying another client's
// (public) certificate. The element read must be the certificate the
// connection presented.
func TestXFCCBoundToConnection(t *testing.T) {
	victim := testpki.Must(testpki.NewChain(testpki.P256, 3, testpki.Options{CommonName: "victim"}))
	attacker := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "attacker", DNSNames: []string{sanInjection(victim)}}))
	now := time.Now()
	forged := xfccFor(attacker, nil)
	if !strings.Contains(forged, ",Hash=") {
		t.Fatalf("the SAN did not split the element: %s", forged)
	}

	e := newEngine(t, "", []*testpki.Cert{victim.Root})
	// The connection's digest on hand, the element Envoy wrote is the one
	// read (the tail's Hash= is the victim's: the attacker cannot put its
	// own certificate's digest inside that certificate): the attacker's
	// self-signed certificate, untrusted.
	staged := newEngine(t, `{"allowUnauthenticatedRequests":true}`, []*testpki.Cert{victim.Root})
	for _, eng := range []*Engine{e, staged} {
		req := xfccReq(forged, now)
		req.PeerCertificateDigest = digestOf(attacker)
		r := eng.Evaluate(req)
		if r.Reason != ReasonUntrustedChain {
			t.Fatalf("forged element: %s %s (%s)", r.Decision, r.Reason, r.Detail())
		}
		if sub, ok := header(r.SetHeaders, "x-user-sub"); ok {
			t.Fatalf("forged element yielded x-user-sub %q", sub)
		}
		if s, _ := header(r.SetHeaders, "x-mtls-subject"); eng == staged && s != "CN=attacker" {
			t.Fatalf("staged rollout labels the request as %q, want the attacker's own subject", s)
		}
	}
	// An element that is not this connection's certificate at all (written
	// by a proxy in front for its client, say) is refused, from the cache
	// too.
	for i := 0; i < 2; i++ {
		req := xfccReq(chainXFCC(victim), now)
		req.PeerCertificateDigest = digestOf(attacker)
		r := e.Evaluate(req)
		expect(t, r, DecisionDeny, ReasonMalformedCertificate)
		if !strings.Contains(r.Detail(), "not the certificate this connection presented") || r.CacheHit != (i == 1) {
			t.Fatalf("request %d: detail %q, cache hit %v", i, r.Detail(), r.CacheHit)
		}
	}
	// Asked for lazily, once, and only on a cache miss.
	p := &countingPeer{digest: digestOf(attacker)}
	req := xfccReq(forged+" ", now)
	req.Peer = p
	if r := e.Evaluate(req); r.Reason != ReasonUntrustedChain {
		t.Fatalf("forged element through Peer: %s", r.Reason)
	}
	req = xfccReq(forged+" ", now)
	req.Peer = p
	e.Evaluate(req)
	if p.n != 1 {
		t.Fatalf("digest read %d times for a miss and a hit, want 1", p.n)
	}

	// The victim's own request is bound to its connection and allowed (a
	// fresh engine: Envoy writes the connection's Hash= into the value, so
	// one value never arrives over connections with different
	// certificates, and the cache is keyed on the value).
	e = newEngine(t, "", []*testpki.Cert{victim.Root})
	req = xfccReq(chainXFCC(victim), now)
	req.PeerCertificateDigest = strings.ToUpper(digestOf(victim.Leaf))
	expect(t, e.Evaluate(req), DecisionAllow, "")

	// xfccElement "first" reads an element a proxy in front wrote, which
	// does not describe this connection: not bound.
	first := newEngine(t, `{"xfccElement":"first","trustedSourceCIDRs":["192.0.2.0/24"]}`, []*testpki.Cert{victim.Root})
	req = xfccReq(chainXFCC(victim), now)
	req.SourceAddress = "192.0.2.7:443"
	req.PeerCertificateDigest = digestOf(attacker)
	expect(t, first.Evaluate(req), DecisionAllow, "")
}

// TestXFCCCommaInSAN: a genuine certificate whose SAN holds a comma splits
// the element Envoy wrote too; with the connection's digest the element
// carrying its Hash= is read, so the client is not refused for its SAN.
func TestXFCCCommaInSAN(t *testing.T) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{CommonName: "odd", DNSNames: []string{"a.example,b.example"}}))
	e := newEngine(t, "", []*testpki.Cert{ch.Root})
	req := xfccReq(chainXFCC(ch), time.Now())
	req.PeerCertificateDigest = digestOf(ch.Leaf)
	r := e.Evaluate(req)
	expect(t, r, DecisionAllow, "")
	if sub, _ := header(r.SetHeaders, "x-user-sub"); sub != "CN=odd" {
		t.Fatalf("x-user-sub %q", sub)
	}
}

type countingPeer struct {
	digest string
	n      int
}

func (c *countingPeer) PeerCertificateDigest() string { c.n++; return c.digest }
