package policy

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// These benchmarks are the native limit the wasm filter is measured against.
// filter/filtertest/bench_test.go runs the same workloads through the compiled
// filter in the host under the same names (BenchmarkHotPath, BenchmarkColdPath,
// BenchmarkBundleRefresh), so the two outputs line up in benchstat:
//
//	benchstat -ignore pkg native=native.txt wasm=wasm.txt

// coldPool is how many distinct leaves the cold benchmarks cycle through and
// coldCache the verdict cache size they run with: cycling more leaves than
// the LRU holds makes every request a miss that also evicts, as a stream of
// new clients does.
const (
	coldPool  = 128
	coldCache = `{"cacheSize":64}`
)

type benchPKI struct {
	ch     *testpki.Chain
	leaves []*testpki.Cert // distinct certificates, one shared key
	xfcc   []string
}

var (
	benchMu   sync.Mutex
	benchPKIs = map[string]*benchPKI{}
)

// benchChain returns a chain of depth certificates of key type k (root and
// leaf included) and coldPool distinct leaves from the same issuer.
func benchChain(b *testing.B, k testpki.KeyType, depth int) *benchPKI {
	benchMu.Lock()
	defer benchMu.Unlock()
	key := k.String() + "/" + strconv.Itoa(depth)
	if p := benchPKIs[key]; p != nil {
		return p
	}
	ch := testpki.Must(testpki.NewChain(k, depth, testpki.Options{CommonName: "bench client", DNSNames: []string{"bench.example"}}))
	p := &benchPKI{ch: ch, leaves: testpki.Must(ch.SiblingLeaves(coldPool))}
	for _, leaf := range p.leaves {
		p.xfcc = append(p.xfcc, xfccFor(leaf, presented(ch, leaf)))
	}
	benchPKIs[key] = p
	return p
}

// presented is what a client with leaf sends: the leaf, then the
// intermediates nearest to it first.
func presented(ch *testpki.Chain, leaf *testpki.Cert) []byte {
	out := leaf.PEM()
	for i := len(ch.Intermediates) - 1; i >= 0; i-- {
		out = append(out, ch.Intermediates[i].PEM()...)
	}
	return out
}

var benchCases = []struct {
	k     testpki.KeyType
	depth int
}{{testpki.P256, 2}, {testpki.P256, 3}, {testpki.RSA2048, 2}, {testpki.RSA2048, 3}, {testpki.RSA4096, 2}, {testpki.RSA4096, 3}}

func caseName(k testpki.KeyType, depth int) string {
	return k.String() + "/depth" + strconv.Itoa(depth)
}

// BenchmarkHotPath: a client seen before, its verdict cached.
func BenchmarkHotPath(b *testing.B) {
	for _, c := range benchCases {
		b.Run(caseName(c.k, c.depth), func(b *testing.B) {
			p := benchChain(b, c.k, c.depth)
			e := newEngine(b, "", []*testpki.Cert{p.ch.Root})
			req := xfccReq(p.xfcc[0], time.Now())
			if r := e.Evaluate(req); r.Decision != DecisionAllow {
				b.Fatalf("%s %s", r.Reason, r.Detail())
			}
			b.ReportAllocs()
			for b.Loop() {
				if r := e.Evaluate(req); !r.CacheHit || r.Decision != DecisionAllow {
					b.Fatal("miss")
				}
			}
		})
	}
}

// BenchmarkColdPath: a certificate not seen before on every request (parse,
// chain building, signatures, EKU, rendering, cache insert and eviction).
func BenchmarkColdPath(b *testing.B) {
	for _, c := range benchCases {
		b.Run(caseName(c.k, c.depth), func(b *testing.B) {
			p := benchChain(b, c.k, c.depth)
			e := newEngine(b, coldCache, []*testpki.Cert{p.ch.Root})
			reqs := make([]*Request, len(p.xfcc))
			for i, x := range p.xfcc {
				reqs[i] = xfccReq(x, time.Now())
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if r := e.Evaluate(reqs[i%len(reqs)]); r.Decision != DecisionAllow || r.CacheHit {
					b.Fatalf("%s hit=%v", r.Reason, r.CacheHit)
				}
				i++
			}
		})
	}
}

// BenchmarkBundleRefresh: parse a /v1/bundle document and swap it in, as the
// filter does when the sidecar's bundle changes. Two documents differing in
// one CA alternate so every swap is a real change.
func BenchmarkBundleRefresh(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("CAs="+strconv.Itoa(n), func(b *testing.B) {
			docs := bundleDocs(b, n)
			cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("p", "") + `],"trustBundle":{"cluster":"sidecar"}}`))
			if err != nil {
				b.Fatal(err)
			}
			e := NewEngine(cfg)
			b.SetBytes(int64(len(docs[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bd, err := bundle.Parse(docs[i%2])
				if err != nil {
					b.Fatal(err)
				}
				if err := e.SetBundle(bd); err != nil {
					b.Fatal(err)
				}
				if e.BundleVersion() != bd.Version {
					b.Fatal("bundle not swapped in")
				}
				i++
			}
		})
	}
}

// bundleDocs fails the benchmark instead of returning testpki.BundleDocs' error.
func bundleDocs(tb testing.TB, n int) [2][]byte {
	tb.Helper()
	docs, err := testpki.BundleDocs(n)
	if err != nil {
		tb.Fatal(err)
	}
	return docs
}

func BenchmarkSampleKey(b *testing.B) {
	p := benchChain(b, testpki.P256, 3)
	s := p.xfcc[0]
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		sampleKey(s)
	}
}

// BenchmarkRoute: routing alone, beside a protected prefix and an open
// catch-all. A plain path takes one check and one match (and allocates
// nothing); escaped ones pay for their readings.
func BenchmarkRoute(b *testing.B) {
	ch := testpki.Must(testpki.NewChain(testpki.P256, 2, testpki.Options{}))
	cfg, err := ParseConfig([]byte(`{"policies":[` + policyJSON("strict", "") + `,` + policyJSON("open", `{"allowUnauthenticatedRequests":true}`) + `],
	"routes":[{"pathPrefix":"/admin/","policy":"strict"},{"path":"/login","policy":"open"},{"pathPrefix":"/","policy":"open"}],"trustBundle":` + inlineBundle([]*testpki.Cert{ch.Root}) + `}`))
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(cfg)
	for _, c := range []struct{ name, path string }{
		{"plain", "/api/v1/orders/12345?expand=items"}, {"unreserved", "/api/v1/%6Frders/12345"},
		{"percent", "/files/100%25"}, {"double", "/%2561dmin/x"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.route("GET", c.path)
			}
		})
	}
}
