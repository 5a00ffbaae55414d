package bundlesrv

import (
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// A list without nextUpdate carries the moment it goes stale (thisUpdate
// plus the max age) and is flagged stale after it, like a list past its
// nextUpdate; a list with nextUpdate carries nothing new, so its bundle
// version stays what it was.
func TestCRLWithoutNextUpdateCarriesStaleAfter(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{}))
	thisUpdate := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	pemBytes := testpki.Must(root.CRLWithoutNextUpdate(thisUpdate))
	ca := store.CA{ID: "mtlsca_1", Name: "root", PEM: string(root.PEM())}
	crl := store.CRL{ID: "mtlscrl_1", CAID: ca.ID, PEM: string(pemBytes), ThisUpdate: thisUpdate}

	s := New()
	s.MaxAgeWithoutNextUpdate = 24 * time.Hour
	if err := s.Update([]store.CA{ca}, []store.CRL{crl}, nil, nil, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Parse(s.cur.Load().body)
	if err != nil {
		t.Fatal(err)
	}
	want := thisUpdate.Add(24 * time.Hour)
	if len(b.CRLs) != 1 || !b.CRLs[0].StaleAfter.Equal(want) || b.CRLs[0].Stale {
		t.Fatalf("bundle CRL %+v, want staleAfter %s and not stale", b.CRLs, want)
	}
	fresh := s.Version()

	// Past the max age: flagged stale, and the filter has the time itself.
	b = Build([]store.CA{ca}, []store.CRL{crl}, nil, nil, 0, 24*time.Hour, want.Add(time.Second))
	if !b.CRLs[0].Stale {
		t.Fatal("list past its max age not flagged stale")
	}
	// Another max age is another verdict: another version, which makes the
	// filter fetch the body and drop its cached verdicts.
	if other := Build([]store.CA{ca}, []store.CRL{crl}, nil, nil, 0, time.Hour, time.Now()); other.Version == fresh {
		t.Fatal("bundle version ignores staleAfter")
	}

	// A list with nextUpdate: no staleAfter, version as computed before.
	dated := crl
	dated.NextUpdate = thisUpdate.Add(time.Hour)
	b = Build([]store.CA{ca}, []store.CRL{dated}, nil, nil, 0, 24*time.Hour, time.Now())
	if !b.CRLs[0].StaleAfter.IsZero() {
		t.Errorf("list with nextUpdate got staleAfter %s", b.CRLs[0].StaleAfter)
	}
	if v := bundle.ComputeVersion(b.CACertificates, []bundle.CRL{{PEM: crl.PEM}}, nil, 0); v != b.Version {
		t.Errorf("version of a bundle without staleAfter changed: %s, want %s", b.Version, v)
	}
}
