package policy

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// These benchmarks are the native limit the wasm filter is measured against.

var (
	benchMu     sync.Mutex
	benchChains = map[string]*testpki.Chain{}
)

func benchChain(b *testing.B, k testpki.KeyType, depth int) *testpki.Chain {
	benchMu.Lock()
	defer benchMu.Unlock()
	key := k.String() + "/" + strconv.Itoa(depth)
	if ch := benchChains[key]; ch != nil {
		return ch
	}
	ch := testpki.Must(testpki.NewChain(k, depth, testpki.Options{CommonName: "bench client", DNSNames: []string{"bench.example"}}))
	benchChains[key] = ch
	return ch
}

var benchCases = []struct {
	k     testpki.KeyType
	depth int
}{{testpki.P256, 2}, {testpki.P256, 3}, {testpki.RSA2048, 2}, {testpki.RSA2048, 3}, {testpki.RSA4096, 2}, {testpki.RSA4096, 3}}

func BenchmarkEvaluateCached(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.k.String()+"/depth"+strconv.Itoa(c.depth), func(b *testing.B) {
			ch := benchChain(b, c.k, c.depth)
			e := newEngine(b, "", []*testpki.Cert{ch.Root})
			req := xfccReq(chainXFCC(ch), time.Now())
			if r := e.Evaluate(req); r.Decision != DecisionAllow {
				b.Fatalf("%s %s", r.Reason, r.Detail())
			}
			b.SetBytes(int64(len(req.Headers[len(req.Headers)-1].Value)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := e.Evaluate(req); !r.CacheHit {
					b.Fatal("miss")
				}
			}
		})
	}
}

func BenchmarkEvaluateCold(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.k.String()+"/depth"+strconv.Itoa(c.depth), func(b *testing.B) {
			ch := benchChain(b, c.k, c.depth)
			e := newEngine(b, `{"cacheSize":0}`, []*testpki.Cert{ch.Root})
			req := xfccReq(chainXFCC(ch), time.Now())
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := e.Evaluate(req); r.Decision != DecisionAllow || r.CacheHit {
					b.Fatal(r.Reason)
				}
			}
		})
	}
}

func BenchmarkSampleKey(b *testing.B) {
	ch := benchChain(b, testpki.P256, 3)
	s := chainXFCC(ch)
	b.SetBytes(int64(len(s)))
	for i := 0; i < b.N; i++ {
		sampleKey(s)
	}
}
