package policy

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/crlscope"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// A root renewed with the same name and key is the same CA: the CRL its key
// signs applies to chains ending at either certificate, whichever the bundle
// lists first.
func TestCRLAppliesToRenewedRoot(t *testing.T) {
	oldRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Corp Root", NotBefore: now.Add(-3 * 365 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)}))
	newRoot := must(testpki.NewRoot(testpki.Options{CommonName: "Corp Root", Signer: oldRoot.Key}))
	revoked := must(newRoot.Issue(testpki.Options{CommonName: "revoked-client"}))
	good := must(newRoot.Issue(testpki.Options{CommonName: "good-client"}))
	crl := must(newRoot.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))

	for _, order := range []struct {
		name string
		cas  []*testpki.Cert
	}{{"old root first", []*testpki.Cert{oldRoot, newRoot}}, {"new root first", []*testpki.Cert{newRoot, oldRoot}}} {
		for _, opts := range []string{`{}`, `{"requireCRL":true}`} {
			t.Run(order.name+" "+opts, func(t *testing.T) {
				e := newEngine(t, opts, order.cas, crl)
				expect(t, e.Evaluate(xfccReq(xfccFor(revoked, revoked.PEM()), now)), DecisionDeny, ReasonRevoked)
				// requireCRL is satisfied by the same list.
				expect(t, e.Evaluate(xfccReq(xfccFor(good, good.PEM()), now)), DecisionAllow, "")
			})
		}
	}

	// The client reaches the same CA through a cross-certificate (same name
	// and key, issued by another anchored root) because the anchored
	// self-signed certificate has expired: the CA's CRL still applies.
	t.Run("cross-certificate", func(t *testing.T) {
		bridge := must(testpki.NewRoot(testpki.Options{CommonName: "Bridge Root"}))
		cross := must(bridge.Issue(testpki.Options{CA: true, RawSubject: oldRoot.Cert.RawSubject, Signer: oldRoot.Key}))
		leaf := must(oldRoot.Issue(testpki.Options{CommonName: "via-cross"}))
		crl := must(oldRoot.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}}))
		bridgeCRL := must(bridge.CRL(testpki.CRLOptions{}))
		for _, opts := range []string{`{}`, `{"requireCRL":true}`} {
			e := newEngine(t, opts, []*testpki.Cert{oldRoot, bridge}, crl, bridgeCRL)
			r := e.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, cross)), now))
			expect(t, r, DecisionDeny, ReasonRevoked)
		}
	})
}

// crlWith signs a CRL from ca listing leaf, with extra CRL and entry
// extensions. Its thisUpdate is half an hour after testpki's default, so it
// is the newest list of its issuer.
func crlWith(t *testing.T, ca, leaf *testpki.Cert, number int64, exts, entryExts []pkix.Extension) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{
		ThisUpdate: now.Add(-30 * time.Minute), NextUpdate: now.Add(24 * time.Hour), Number: big.NewInt(number),
		ExtraExtensions: exts,
		RevokedCertificateEntries: []x509.RevocationListEntry{{
			SerialNumber: leaf.Cert.SerialNumber, RevocationTime: now.Add(-30 * time.Minute), ExtraExtensions: entryExts,
		}},
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// Delta, partitioned and indirect CRLs, and CRLs with critical extensions the
// filter does not process, are not complete lists of a CA's revocations. Used
// as one ("the newest wins") a delta would un-revoke everything it does not
// repeat; the bundle is refused instead, like one with a forged CRL.
func TestIncompleteCRLsRefused(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Root"}))
	inter := must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing"}))
	leaf := must(inter.Issue(testpki.Options{}))
	other := must(inter.Issue(testpki.Options{}))
	base := must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{leaf}, Number: big.NewInt(10)}))
	rootCRL := must(root.CRL(testpki.CRLOptions{}))
	baseNumber, _ := asn1.Marshal(10)
	private := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}

	for _, c := range []struct {
		name      string
		exts      []pkix.Extension
		entryExts []pkix.Extension
		want      string
	}{
		{"delta", []pkix.Extension{{Id: crlscope.DeltaCRLIndicator, Critical: true, Value: baseNumber}}, nil, "is a delta CRL"},
		{"delta not marked critical", []pkix.Extension{{Id: crlscope.DeltaCRLIndicator, Value: baseNumber}}, nil, "is a delta CRL"},
		// onlyContainsUserCerts: a partition without the CA certificates.
		{"partitioned", []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: []byte{0x30, 0x03, 0x81, 0x01, 0xff}}}, nil, "issuingDistributionPoint"},
		// A distribution point and onlySomeReasons (keyCompromise).
		{"some reasons", []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, "", []byte{0x83, 0x02, 0x06, 0x40})}}, nil, "issuingDistributionPoint"},
		// indirectCRL.
		{"indirect flag", []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, "", []byte{0x84, 0x01, 0xff})}}, nil, "issuingDistributionPoint"},
		{"garbled", []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: []byte{0x30, 0x05, 0xa0}}}, nil, "issuingDistributionPoint"},
		{"unknown critical extension", []pkix.Extension{{Id: private, Critical: true, Value: []byte{0x05, 0x00}}}, nil, "critical extension 1.3.6.1.4.1.99999.1"},
		{"indirect", nil, []pkix.Extension{{Id: crlscope.CertificateIssuer, Critical: true, Value: []byte{0x30, 0x00}}}, "indirect CRL"},
		{"unknown critical entry extension", nil, []pkix.Extension{{Id: private, Critical: true, Value: []byte{0x05, 0x00}}}, "entry with a critical extension 1.3.6.1.4.1.99999.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Newer than base and not listing leaf: taken for a complete list
			// it would un-revoke leaf.
			bad := crlWith(t, inter, other, 11, c.exts, c.entryExts)
			e := newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, rootCRL, base)
			err := e.SetBundle(mustBundle(t, []*testpki.Cert{root}, rootCRL, base, bad))
			if err == nil || !strings.Contains(err.Error(), "crls[2]: CRL of CN=Issuing ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("SetBundle error = %v, want one naming crls[2] and %q", err, c.want)
			}
			// The previous bundle stays, base CRL included.
			expect(t, e.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, inter)), now)), DecisionDeny, ReasonRevoked)
			// Inline, it is a configuration error.
			if _, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", "") + `],"trustBundle":` + inlineBundle([]*testpki.Cert{root}, bad) + `}`)); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseConfig error = %v, want %q", err, c.want)
			}
		})
	}

	t.Run("a list naming its distribution point covers the certificates naming it", func(t *testing.T) {
		// What AD CS writes on its full CRLs: the point, nothing else. A CA
		// may publish one such list per point, so the newest list of the
		// issuer must not stand for another point's.
		pointA, pointB := "http://crl.example/a.crl", "http://crl.example/b.crl"
		inA := must(inter.Issue(testpki.Options{CommonName: "in a", CRLDistributionPoints: []string{pointA}}))
		revokedInA := must(inter.Issue(testpki.Options{CommonName: "revoked in a", CRLDistributionPoints: []string{pointA}}))
		inB := must(inter.Issue(testpki.Options{CommonName: "in b", CRLDistributionPoints: []string{pointB}}))
		noPoint := must(inter.Issue(testpki.Options{CommonName: "no point"}))
		// Listed in C's list but naming no point, or C's in other letters:
		// still revoked (a serial is the CA's).
		listedNoPoint := must(inter.Issue(testpki.Options{CommonName: "listed, no point"}))
		pointC := "http://crl.example/c.crl"
		listedOtherCase := must(inter.Issue(testpki.Options{CommonName: "listed, other case", CRLDistributionPoints: []string{"HTTP://CRL.EXAMPLE/c.crl"}}))
		listA := crlWith(t, inter, revokedInA, 11, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointA)}}, nil)
		listB := crlWith(t, inter, inB, 12, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointB)}}, nil)
		listC := crlWith(t, inter, listedNoPoint, 13, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointC)}}, nil)
		listD := crlWith(t, inter, listedOtherCase, 14, []pkix.Extension{{Id: crlscope.IssuingDistributionPoint, Critical: true, Value: idpValue(t, pointC+"?d")}}, nil)
		e := newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, rootCRL, listA, listB, listC, listD)
		for _, c := range []struct {
			leaf   *testpki.Cert
			reason Reason
		}{{inA, ""}, {revokedInA, ReasonRevoked}, {inB, ReasonRevoked}, {noPoint, ""}, {listedNoPoint, ReasonRevoked}, {listedOtherCase, ReasonRevoked}} {
			r := e.Evaluate(xfccReq(xfccFor(c.leaf, testpki.PEM(c.leaf, inter)), now))
			if r.Reason != c.reason {
				t.Errorf("%s: %s %q (%s), want %q", c.leaf.Cert.Subject, r.Decision, r.Reason, r.Detail(), c.reason)
			}
		}
	})

	t.Run("non-critical private extension is fine", func(t *testing.T) {
		ok := crlWith(t, inter, leaf, 11, []pkix.Extension{{Id: private, Value: []byte{0x05, 0x00}}}, []pkix.Extension{{Id: private, Value: []byte{0x05, 0x00}}})
		e := newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root}, rootCRL, base, ok)
		expect(t, e.Evaluate(xfccReq(xfccFor(leaf, testpki.PEM(leaf, inter)), now)), DecisionDeny, ReasonRevoked)
		expect(t, e.Evaluate(xfccReq(xfccFor(other, testpki.PEM(other, inter)), now)), DecisionAllow, "")
	})
}

// An intermediate uploaded as an anchor next to its root is still revoked
// by the root's CRL: chain building stops at the first anchor, and trusting
// one more certificate must not weaken revocation.
func TestAnchoredIntermediateCheckedAgainstItsIssuer(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Root"}))
	inter := must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing"}))
	leaf := must(inter.Issue(testpki.Options{CommonName: "client"}))
	revokesInter := must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{inter}}))
	emptyRootCRL := must(root.CRL(testpki.CRLOptions{}))
	interCRL := must(inter.CRL(testpki.CRLOptions{}))
	withInter := xfccFor(leaf, testpki.PEM(leaf, inter))
	leafOnly := xfccFor(leaf, leaf.PEM())

	for _, cas := range [][]*testpki.Cert{{root, inter}, {inter, root}} {
		for _, opts := range []string{`{}`, `{"requireCRL":true}`, `{"allowRevokedCertificates":true}`} {
			e := newEngine(t, opts, cas, revokesInter, interCRL)
			for _, x := range []string{withInter, leafOnly} {
				r := e.Evaluate(xfccReq(x, now))
				expect(t, r, DecisionDeny, ReasonRevoked)
				if !strings.Contains(r.Detail(), "trusted CA CN=Issuing") {
					t.Errorf("detail does not name the revoked anchor: %s", r.Detail())
				}
			}
		}
	}
	// Not revoked: allowed, and the anchor is not reported as a presented
	// intermediate.
	e := newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root, inter}, emptyRootCRL, interCRL)
	r := e.Evaluate(xfccReq(withInter, now))
	expect(t, r, DecisionAllow, "")
	if _, ok := header(r.SetHeaders, "client-cert-chain"); ok {
		t.Error("client-cert-chain names the anchor")
	}
	// requireCRL asks for the root's list too, as it does with the root
	// anchored alone.
	e = newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{root, inter}, interCRL)
	expect(t, e.Evaluate(xfccReq(withInter, now)), DecisionDeny, ReasonRevocationUnknown)
	// With the root absent from the bundle nothing above the intermediate is
	// known, as before.
	e = newEngine(t, `{"requireCRL":true}`, []*testpki.Cert{inter}, revokesInter, interCRL)
	expect(t, e.Evaluate(xfccReq(withInter, now)), DecisionAllow, "")

	t.Run("two anchored levels", func(t *testing.T) {
		i1 := must(root.Issue(testpki.Options{CA: true, CommonName: "Policy CA"}))
		i2 := must(i1.Issue(testpki.Options{CA: true, CommonName: "Issuing 2"}))
		l2 := must(i2.Issue(testpki.Options{}))
		crl := must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{i1}}))
		e := newEngine(t, "", []*testpki.Cert{i2, i1, root}, crl)
		r := e.Evaluate(xfccReq(xfccFor(l2, l2.PEM()), now))
		expect(t, r, DecisionDeny, ReasonRevoked)
		if !strings.Contains(r.Detail(), "trusted CA CN=Policy CA") {
			t.Errorf("detail: %s", r.Detail())
		}
	})
	t.Run("cross-signed anchors do not loop", func(t *testing.T) {
		a := must(testpki.NewRoot(testpki.Options{CommonName: "A"}))
		b := must(testpki.NewRoot(testpki.Options{CommonName: "B"}))
		aByB := must(b.Issue(testpki.Options{CA: true, RawSubject: a.Cert.RawSubject, Signer: a.Key}))
		bByA := must(a.Issue(testpki.Options{CA: true, RawSubject: b.Cert.RawSubject, Signer: b.Key}))
		l := must(a.Issue(testpki.Options{}))
		e := newEngine(t, "", []*testpki.Cert{aByB, bByA}, must(a.CRL(testpki.CRLOptions{})), must(b.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{aByB}})))
		// Each anchor is issued by the other's key: the chain ends at aByB,
		// which B's CRL revokes; the walk up stops where it started.
		expect(t, e.Evaluate(xfccReq(xfccFor(l, l.PEM()), now)), DecisionDeny, ReasonRevoked)
	})
}

// rawCRL signs a CRL by hand (testpki.RawCRL): crypto/x509 always writes
// nextUpdate and refuses issuers without the cRLSign key usage (a v1 root
// has no extensions at all). nextUpdate is omitted when zero.
func rawCRL(t *testing.T, issuer *testpki.Cert, thisUpdate, nextUpdate time.Time, revoked ...*testpki.Cert) []byte {
	t.Helper()
	crl, err := issuer.RawCRL(thisUpdate, nextUpdate, revoked...)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// A CRL without nextUpdate (which RFC 5280 requires of issuers) and
// without the sidecar's staleAfter (an inline bundle) is fresh until
// replaced, in strict mode too: the filter has no lifetime to infer. Verdicts need no time limit
// for it: the list changes only with the bundle, and a new bundle version
// drops every cached verdict.
func TestCRLWithoutNextUpdate(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	inter := must(root.Issue(testpki.Options{CA: true}))
	leaf := must(inter.Issue(testpki.Options{}))
	other := must(inter.Issue(testpki.Options{}))
	rootCRL := must(root.CRL(testpki.CRLOptions{NextUpdate: now.Add(365 * 24 * time.Hour)}))
	crl := rawCRL(t, inter, now.Add(-30*24*time.Hour), time.Time{}, other)
	if l, err := x509.ParseRevocationList(must(pemBlock(crl))); err != nil {
		t.Fatalf("test CRL: %v", err)
	} else if !l.NextUpdate.IsZero() {
		t.Fatalf("test CRL has nextUpdate %v", l.NextUpdate)
	}
	x := xfccFor(leaf, testpki.PEM(leaf, inter))
	e := newEngine(t, `{"revocationCheck":"strict","requireCRL":true}`, []*testpki.Cert{root}, rootCRL, crl)
	expect(t, e.Evaluate(xfccReq(x, now)), DecisionAllow, "")
	expect(t, e.Evaluate(xfccReq(xfccFor(other, testpki.PEM(other, inter)), now)), DecisionDeny, ReasonRevoked)
	if r := e.Evaluate(xfccReq(x, now.Add(100*24*time.Hour))); !r.CacheHit || r.Decision != DecisionAllow {
		t.Fatalf("verdict under a CRL without nextUpdate: %s cached=%v", r.Decision, r.CacheHit)
	}
	// A new list revoking leaf takes effect with the bundle that brings it.
	if err := e.SetBundle(mustBundle(t, []*testpki.Cert{root}, rootCRL, rawCRL(t, inter, now, time.Time{}, leaf, other))); err != nil {
		t.Fatal(err)
	}
	r := e.Evaluate(xfccReq(x, now))
	expect(t, r, DecisionDeny, ReasonRevoked)
	if r.CacheHit {
		t.Fatal("allow cached across a bundle change")
	}
}

// The sidecar gives a CRL without nextUpdate a staleAfter (its thisUpdate
// plus --crl-max-age-without-next-update); the filter takes it as the
// list's nextUpdate: current before it, verdicts cached no longer than it,
// REVOCATION_UNKNOWN after it under strict, by its own clock.
func TestCRLWithoutNextUpdateGoesStaleAtStaleAfter(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{}))
	leaf := must(root.Issue(testpki.Options{}))
	crl := rawCRL(t, root, now.Add(-time.Hour), time.Time{})
	staleAfter := now.Add(24 * time.Hour)
	b := mustBundle(t, []*testpki.Cert{root}, crl)
	b.CRLs[0].StaleAfter = staleAfter
	b.Version = bundle.ComputeVersion(b.CACertificates, b.CRLs, b.Profiles, b.ProfilesVersion)
	e := newEngine(t, `{"revocationCheck":"strict","requireCRL":true}`, []*testpki.Cert{root}, crl)
	if err := e.SetBundle(b); err != nil {
		t.Fatal(err)
	}
	x := xfccFor(leaf, leaf.PEM())
	expect(t, e.Evaluate(xfccReq(x, now)), DecisionAllow, "")
	r := e.Evaluate(xfccReq(x, staleAfter.Add(2*time.Second)))
	expect(t, r, DecisionDeny, ReasonRevocationUnknown)
	if r.CacheHit {
		t.Fatal("allow cached past the list's staleAfter")
	}
	if !strings.Contains(r.Detail(), "no nextUpdate") {
		t.Errorf("detail %q does not say why the list is stale", r.Detail())
	}
	// best-effort lets the client through, saying so.
	e = newEngine(t, `{"revocationCheck":"best-effort"}`, []*testpki.Cert{root}, crl)
	if err := e.SetBundle(b); err != nil {
		t.Fatal(err)
	}
	if r := e.Evaluate(xfccReq(x, staleAfter.Add(2*time.Second))); r.Decision != DecisionAllow || r.Reason != ReasonRevocationUnknown {
		t.Fatalf("best-effort past staleAfter: %s %s", r.Decision, r.Reason)
	}
}

func pemBlock(p []byte) ([]byte, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	return b.Bytes, nil
}

// idpValue is an issuingDistributionPoint naming the URI point (by default
// http://crl.example/issuing.crl), followed by the given extra fields.
func idpValue(t *testing.T, point string, extra ...[]byte) []byte {
	t.Helper()
	if point == "" {
		point = "http://crl.example/issuing.crl"
	}
	uri := []byte(point)
	gn := append([]byte{0x86, byte(len(uri))}, uri...)   // [6] uniformResourceIdentifier
	full := append([]byte{0xa0, byte(len(gn))}, gn...)   // [0] fullName
	dp := append([]byte{0xa0, byte(len(full))}, full...) // [0] distributionPoint
	body := dp
	for _, x := range extra {
		body = append(body, x...)
	}
	return append([]byte{0x30, byte(len(body))}, body...)
}

// TestWithheldCRLIsUnknownRevocation: a CA the sidecar marks
// revocationUnknown (its stored CRL is not a complete list and is withheld)
// is not a CA without a CRL: its certificates' revocation status is unknown,
// refused under strict, let through and labelled under best-effort.
func TestWithheldCRLIsUnknownRevocation(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Withheld"}))
	leaf := must(root.Issue(testpki.Options{CommonName: "client"}))
	x := xfccFor(leaf, leaf.PEM())
	for _, c := range []struct {
		options string
		flagged bool
		want    Reason
		allowed bool
	}{
		{`{}`, true, ReasonRevocationUnknown, false},
		{`{"revocationCheck":"best-effort"}`, true, ReasonRevocationUnknown, true},
		{`{"revocationCheck":"off"}`, true, "", true},
		{`{}`, false, "", true}, // unmarked and without a CRL: as before
	} {
		e := newEngine(t, c.options, []*testpki.Cert{root})
		// Through the wire format, as the filter receives it.
		doc, err := bundle.New([]bundle.CA{{ID: "mtlsca_1", PEM: string(root.PEM()), RevocationUnknown: c.flagged}}, nil, nil, 0, now).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b, err := bundle.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SetBundle(b); err != nil {
			t.Fatal(err)
		}
		r := e.Evaluate(xfccReq(x, now))
		if r.Reason != c.want || (r.Decision == DecisionAllow) != c.allowed {
			t.Errorf("%s flagged=%v: %s %q (%s), want reason %q allowed %v", c.options, c.flagged, r.Decision, r.Reason, r.Detail(), c.want, c.allowed)
		}
	}
	// The flag is part of the bundle's version: setting it drops cached
	// verdicts.
	b := mustBundle(t, []*testpki.Cert{root})
	v := bundle.ComputeVersion(b.CACertificates, nil, nil, 0)
	b.CACertificates[0].RevocationUnknown = true
	if bundle.ComputeVersion(b.CACertificates, nil, nil, 0) == v {
		t.Fatal("revocationUnknown does not change the bundle version")
	}
}

// TestEnvoyModeChecksRevocation: with chainVerification "envoy" the filter
// finds the path Envoy verified among the presented certificates and the
// bundle's anchors and checks it against the bundle's CRLs, so Envoy itself
// can be given none, and a CA without a list no longer costs its clients
// their handshake.
func TestEnvoyModeChecksRevocation(t *testing.T) {
	root := must(testpki.NewRoot(testpki.Options{CommonName: "Root"}))
	inter := must(root.Issue(testpki.Options{CA: true, CommonName: "Issuing"}))
	good := must(inter.Issue(testpki.Options{CommonName: "good"}))
	revoked := must(inter.Issue(testpki.Options{CommonName: "revoked"}))
	direct := must(root.Issue(testpki.Options{CommonName: "direct"}))
	badInter := must(root.Issue(testpki.Options{CA: true, CommonName: "Revoked Issuing"}))
	underBad := must(badInter.Issue(testpki.Options{CommonName: "under-revoked-intermediate"}))
	rootCRL := must(root.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{direct, badInter}}))
	interCRL := must(inter.CRL(testpki.CRLOptions{Revoked: []*testpki.Cert{revoked}}))
	other := must(testpki.NewRoot(testpki.Options{CommonName: "Other Root"}))
	ofOther := must(other.Issue(testpki.Options{CommonName: "other-client"}))
	// A CA named like Root with another key: its client is not Root's, and
	// Root's list says nothing about it.
	impostor := must(testpki.NewRoot(testpki.Options{RawSubject: root.Cert.RawSubject}))
	ofImpostor := must(impostor.Issue(testpki.Options{CommonName: "impostor-client"}))
	interByOther := must(other.Issue(testpki.Options{CA: true, RawSubject: inter.Cert.RawSubject, Signer: inter.Key}))
	x := func(leaf *testpki.Cert, chain ...*testpki.Cert) string {
		return xfccFor(leaf, testpki.PEM(append([]*testpki.Cert{leaf}, chain...)...))
	}

	cases := []struct {
		name, opts string
		cas        []*testpki.Cert
		crls       [][]byte
		xfcc       string
		decision   string
		reason     Reason
		detail     string
	}{
		{"leaf revoked by its presented issuer's list", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked, inter), DecisionDeny, ReasonRevoked, "certificate is revoked"},
		{"leaf not revoked", `{"requireCRL":true}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(good, inter), DecisionAllow, "", ""},
		{"leaf issued by the anchor, revoked", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(direct), DecisionDeny, ReasonRevoked, ""},
		{"allowRevokedCertificates", `{"allowRevokedCertificates":true}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked, inter), DecisionAllow, ReasonRevoked, ""},
		{"presented intermediate revoked", `{"allowRevokedCertificates":true}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(underBad, badInter), DecisionDeny, ReasonRevoked, "intermediate CA CN=Revoked Issuing"},
		{"anchored intermediate revoked by the root above it", `{}`, []*testpki.Cert{badInter, root}, [][]byte{rootCRL}, x(underBad), DecisionDeny, ReasonRevoked, "trusted CA CN=Revoked Issuing"},
		// The outage this replaces: one CA with a list, another without.
		{"CA without a CRL beside one with", `{}`, []*testpki.Cert{root, other}, [][]byte{rootCRL}, x(ofOther), DecisionAllow, "", ""},
		{"CA without a CRL, requireCRL", `{"requireCRL":true}`, []*testpki.Cert{root, other}, [][]byte{rootCRL}, x(ofOther), DecisionDeny, ReasonRevocationUnknown, "no CRL from CN=Other Root"},
		// A CA removed from the bundle (or one the bundle has not caught up
		// with): its clients are refused, as in filter mode, whatever Envoy
		// accepted at their handshake.
		{"issuer not in the bundle", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(ofOther), DecisionDeny, ReasonUntrustedChain, "does not chain to a CA in the trust bundle"},
		{"issuer not in the bundle, best-effort", `{"revocationCheck":"best-effort"}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(ofOther), DecisionDeny, ReasonUntrustedChain, ""},
		{"intermediate not presented", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked), DecisionDeny, ReasonUntrustedChain, ""},
		{"same name, another key", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(ofImpostor), DecisionDeny, ReasonUntrustedChain, ""},
		{"same name, another key, presented", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(ofImpostor, impostor), DecisionDeny, ReasonUntrustedChain, ""},
		// Two certificates of the intermediate's name and key, the first
		// issued by a root the bundle does not hold: the path goes through
		// the second.
		{"path found past a dead end", `{}`, []*testpki.Cert{root}, [][]byte{rootCRL, interCRL}, x(revoked, interByOther, inter), DecisionDeny, ReasonRevoked, "certificate is revoked"},
		{"stale list", `{}`, []*testpki.Cert{root}, [][]byte{must(root.CRL(testpki.CRLOptions{ThisUpdate: now.Add(-48 * time.Hour), NextUpdate: now.Add(-time.Hour)}))}, x(direct), DecisionDeny, ReasonRevocationUnknown, "stale"},
		{"revocationCheck off", `{"revocationCheck":"off"}`, []*testpki.Cert{root}, [][]byte{rootCRL}, x(direct), DecisionAllow, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := `{"chainVerification":"envoy",` + strings.TrimPrefix(c.opts, "{")
			if c.opts == `{}` {
				opts = `{"chainVerification":"envoy"}`
			}
			e := newEngine(t, opts, c.cas, c.crls...)
			r := e.Evaluate(xfccReq(c.xfcc, now))
			expect(t, r, c.decision, c.reason)
			if !strings.Contains(r.Detail(), c.detail) {
				t.Errorf("detail %q, want it to contain %q", r.Detail(), c.detail)
			}
			if _, ok := header(r.SetHeaders, "client-cert-chain"); ok {
				t.Error("envoy mode forwards a chain it did not verify")
			}
		})
	}

	t.Run("no bundle loaded yet", func(t *testing.T) {
		e := NewEngine(must(ParseConfig([]byte(`{"policies":[` + policyJSON("p", `{"chainVerification":"envoy"}`) + `],"trustBundle":{"cluster":"mtlsgate"}}`))))
		r := e.Evaluate(xfccReq(x(good, inter), now))
		expect(t, r, DecisionDeny, ReasonTrustBundleUnavailable)
		if r.Status != 503 {
			t.Errorf("status %d, want 503", r.Status)
		}
	})
	t.Run("a removed CA's clients are refused from the next bundle on", func(t *testing.T) {
		e := newEngine(t, `{"chainVerification":"envoy"}`, []*testpki.Cert{root, other})
		expect(t, e.Evaluate(xfccReq(x(ofOther), now)), DecisionAllow, "")
		if err := e.SetBundle(mustBundle(t, []*testpki.Cert{root})); err != nil {
			t.Fatal(err)
		}
		expect(t, e.Evaluate(xfccReq(x(ofOther), now)), DecisionDeny, ReasonUntrustedChain)
	})
	t.Run("a new bundle applies at once", func(t *testing.T) {
		e := newEngine(t, `{"chainVerification":"envoy"}`, []*testpki.Cert{root})
		expect(t, e.Evaluate(xfccReq(x(revoked, inter), now)), DecisionAllow, "")
		if err := e.SetBundle(mustBundle(t, []*testpki.Cert{root}, rootCRL, interCRL)); err != nil {
			t.Fatal(err)
		}
		expect(t, e.Evaluate(xfccReq(x(revoked, inter), now)), DecisionDeny, ReasonRevoked)
	})
}
