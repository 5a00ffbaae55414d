package testpki

import (
	"strconv"
	"sync"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
)

var (
	bundleMu    sync.Mutex
	bundleRoots []*Cert
)

// BundleDocs returns two /v1/bundle documents of n CA roots each that differ
// in one CA, so alternating them makes every refresh a real change. The roots
// (P-256: the parse cost per CA barely depends on the key type) are generated
// once per process and shared by every caller.
func BundleDocs(n int) ([2][]byte, error) {
	bundleMu.Lock()
	defer bundleMu.Unlock()
	for len(bundleRoots) < n+1 {
		r, err := NewRoot(Options{CommonName: "bench CA " + strconv.Itoa(len(bundleRoots))})
		if err != nil {
			return [2][]byte{}, err
		}
		bundleRoots = append(bundleRoots, r)
	}
	var out [2][]byte
	for j := range out {
		var cas []bundle.CA
		for _, c := range bundleRoots[j : j+n] {
			cas = append(cas, bundle.CA{ID: c.Cert.SerialNumber.String(), Name: c.Cert.Subject.CommonName, PEM: string(c.PEM())})
		}
		doc, err := bundle.New(cas, nil, nil, 0, time.Now()).Marshal()
		if err != nil {
			return [2][]byte{}, err
		}
		out[j] = doc
	}
	return out, nil
}
