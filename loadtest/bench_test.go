package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGateway: the dev gateway end to end on loopback, each op one
// request from a load generator in the same process (8 connections, 8
// client certificates, keep-alive). filter is the mtlsgate filter with
// verdicts cached (every client seen before); noop the no-op filter; nowasm
// a plain TLS reverse proxy. The target is filter ≥ 85% of noop's req/s.
func BenchmarkGateway(b *testing.B) {
	p, err := NewPKI(8)
	if err != nil {
		b.Fatal(err)
	}
	for _, setup := range []Setup{WithFilter, WithNoop, NoWasm} {
		b.Run(string(setup), func(b *testing.B) {
			st, err := Start(context.Background(), setup, p, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			clients := gatewayClients(p, setup)
			o := Options{URL: st.URL, RootCAs: p.ServerRoot, ServerName: "localhost", Clients: clients}
			// Warm up: handshakes and first verifications out of the timing.
			o.Requests = 64
			if _, err := Run(context.Background(), o); err != nil {
				b.Fatal(err)
			}
			o.Requests = int64(b.N)
			cpu0 := processCPU(b)
			b.ResetTimer()
			res, err := Run(context.Background(), o)
			b.StopTimer()
			cpu := processCPU(b) - cpu0
			if err != nil {
				b.Fatal(err)
			}
			if res.Failed+res.Wrong > 0 {
				b.Fatalf("%s; %v", res, res.Errors)
			}
			b.ReportMetric(res.PerSecond, "req/s")
			b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
			// CPU per request for the whole process (load generator, gateway
			// and upstream). Throughput on saturated cores is their number
			// over this; it moves less than req/s when neighbours on a
			// shared machine take the cores away for a while.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGatewayInterleaved: the filter and no-op gateways side by side,
// loaded in turn in chunks of interleaveChunk requests (order alternating), so
// a change in the machine's speed lands on both alike; separate runs of
// BenchmarkGateway see drift of minutes as a difference between the filters.
// Each op is one request to each gateway. Reports both throughputs, CPU per
// request, and the filter/no-op ratios the ≥ 85 % target is about.
func BenchmarkGatewayInterleaved(b *testing.B) {
	p, err := NewPKI(8)
	if err != nil {
		b.Fatal(err)
	}
	type side struct {
		st   *Stack
		o    Options
		wall time.Duration
		cpu  time.Duration
		n    int64
	}
	var sides [2]*side
	for i, setup := range []Setup{WithFilter, WithNoop} {
		st, err := Start(context.Background(), setup, p, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		s := &side{st: st, o: Options{URL: st.URL, RootCAs: p.ServerRoot, ServerName: "localhost", Clients: gatewayClients(p, setup)}}
		s.o.Requests = 64
		if _, err := Run(context.Background(), s.o); err != nil {
			b.Fatal(err)
		}
		sides[i] = s
	}
	b.ResetTimer()
	for done := int64(0); done < int64(b.N); {
		k := min(int64(interleaveChunk), int64(b.N)-done)
		for j := range sides {
			s := sides[(j+int(done/interleaveChunk))%2]
			s.o.Requests = k
			cpu0 := processCPU(b)
			res, err := Run(context.Background(), s.o)
			s.cpu += processCPU(b) - cpu0
			if err != nil {
				b.Fatal(err)
			}
			if res.Failed+res.Wrong > 0 {
				b.Fatalf("%s; %v", res, res.Errors)
			}
			s.wall += res.Elapsed
			s.n += res.Requests
		}
		done += k
	}
	b.StopTimer()
	f, n := sides[0], sides[1]
	rps := func(s *side) float64 { return float64(s.n) / s.wall.Seconds() }
	cpu := func(s *side) float64 { return float64(s.cpu.Microseconds()) / float64(s.n) }
	b.ReportMetric(rps(f), "filter-req/s")
	b.ReportMetric(rps(n), "noop-req/s")
	b.ReportMetric(cpu(f), "filter-cpu-µs/req")
	b.ReportMetric(cpu(n), "noop-cpu-µs/req")
	b.ReportMetric(100*rps(f)/rps(n), "%-req/s")
	b.ReportMetric(100*cpu(n)/cpu(f), "%-cpu")
}

// interleaveChunk is long enough that the eight connections' handshakes,
// made again for every chunk, stay under 1 % of it.
const interleaveChunk = 4000

// gatewayClients are the eight clients, each checking that its request was
// allowed and, through the filter, that the upstream saw its identity.
func gatewayClients(p *PKI, setup Setup) []Client {
	var clients []Client
	for i := range p.Clients {
		want := p.Leaves[i].Cert.Subject.String()
		clients = append(clients, Client{Cert: &p.Clients[i], Path: "/api/v1/things", Check: func(_ time.Time, r *http.Response, _ []byte) error {
			if r.StatusCode != 200 {
				return fmt.Errorf("status %d", r.StatusCode)
			}
			if setup == WithFilter && r.Header.Get("x-seen-user-sub") != want {
				return fmt.Errorf("upstream saw x-user-sub %q, want %q", r.Header.Get("x-seen-user-sub"), want)
			}
			return nil
		}})
	}
	return clients
}
