// Package loadtest drives a TLS endpoint (the dev gateway, `mtlsgate dev`)
// from a Go load generator on loopback and reports throughput and latency,
// and starts the gateway setups the benchmarks and the soak compare: the
// mtlsgate filter, the no-op filter, and a plain TLS reverse proxy with no
// wasm at all.
package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Client is one simulated client: its TLS certificate (nil: none) and the
// requests it sends.
type Client struct {
	Cert *tls.Certificate
	// Header is added to every request (e.g. a certificate header from a
	// front proxy, or spoofed identity headers).
	Header http.Header
	Path   string
	// Check, when set, judges each response to a request sent at start; a
	// non-nil error counts as a wrong answer (Result.Wrong), the first few
	// kept in Result.Errors.
	Check func(start time.Time, resp *http.Response, body []byte) error
}

// Options bound a run: it stops at Duration or after Requests responses,
// whichever comes first (at least one must be set).
type Options struct {
	URL         string
	RootCAs     *x509.CertPool
	ServerName  string
	Clients     []Client
	Concurrency int // connections, each cycling through Clients; default len(Clients)
	Duration    time.Duration
	Requests    int64
}

// Result is what a run measured.
type Result struct {
	Requests  int64
	Elapsed   time.Duration
	PerSecond float64
	P50, P99  time.Duration
	Status    map[int]int64
	// Failed counts transport errors; Wrong counts responses Check refused.
	Failed, Wrong int64
	Errors        []string
}

func (r *Result) String() string {
	return fmt.Sprintf("%d requests in %v: %.0f req/s, p50 %v, p99 %v, status %v, transport errors %d, wrong %d",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.P50, r.P99, r.Status, r.Failed, r.Wrong)
}

// Run sends requests until the bound is reached or ctx ends.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Duration <= 0 && o.Requests <= 0 {
		return nil, errors.New("loadtest: set Duration or Requests")
	}
	if len(o.Clients) == 0 {
		return nil, errors.New("loadtest: no clients")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = len(o.Clients)
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	var (
		sent   atomic.Int64
		mu     sync.Mutex
		res    = &Result{Status: map[int]int64{}}
		lats   []time.Duration
		wg     sync.WaitGroup
		starts = time.Now()
	)
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// One transport per client certificate: TLS client certificates
			// are per connection, so each simulated client keeps its own.
			transports := map[int]*http.Client{}
			defer func() {
				for _, c := range transports {
					c.CloseIdleConnections()
				}
			}()
			local := make([]time.Duration, 0, 1024)
			status := map[int]int64{}
			var failed, wrong int64
			var errs []string
			for i := w; ctx.Err() == nil; i += o.Concurrency {
				if o.Requests > 0 && sent.Add(1) > o.Requests {
					break
				}
				ci := i % len(o.Clients)
				c := &o.Clients[ci]
				hc := transports[ci]
				if hc == nil {
					hc = newHTTPClient(o, c)
					transports[ci] = hc
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, o.URL+c.Path, nil)
				for k, vs := range c.Header {
					req.Header[k] = vs
				}
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed++
						if len(errs) < 5 {
							errs = append(errs, err.Error())
						}
					}
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					if ctx.Err() == nil {
						failed++
					}
					continue
				}
				local = append(local, time.Since(t0))
				status[resp.StatusCode]++
				if c.Check != nil {
					if err := c.Check(t0, resp, body); err != nil {
						wrong++
						if len(errs) < 5 {
							errs = append(errs, err.Error())
						}
					}
				}
			}
			mu.Lock()
			lats = append(lats, local...)
			for k, v := range status {
				res.Status[k] += v
			}
			res.Failed += failed
			res.Wrong += wrong
			res.Errors = append(res.Errors, errs...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	res.Elapsed = time.Since(starts)
	res.Requests = int64(len(lats))
	if res.Elapsed > 0 {
		res.PerSecond = float64(res.Requests) / res.Elapsed.Seconds()
	}
	if len(lats) > 0 {
		slices.Sort(lats)
		res.P50 = lats[len(lats)/2]
		res.P99 = lats[len(lats)*99/100]
	}
	return res, nil
}

func newHTTPClient(o Options, c *Client) *http.Client {
	cfg := &tls.Config{RootCAs: o.RootCAs, ServerName: o.ServerName, MinVersion: tls.VersionTLS12}
	if c.Cert != nil {
		cert := c.Cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: false,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}
}

// PlainProxy is the "no wasm" baseline: the same TLS listener settings as the
// gateway (client certificates requested, any accepted) forwarding to the
// same upstream, with no filter in the path.
type PlainProxy struct {
	ln  net.Listener
	srv *http.Server
}

// NewPlainProxy listens on addr (e.g. "127.0.0.1:0") and proxies to upstream.
func NewPlainProxy(addr string, cert tls.Certificate, upstream *url.URL) (*PlainProxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	// Keep upstream connections like the gateway does; the default of two
	// idle connections per host would make the baseline pay for dials.
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	srv := &http.Server{Handler: rp, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}, ReadHeaderTimeout: 10 * time.Second}
	p := &PlainProxy{ln: ln, srv: srv}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return p, nil
}

// Addr is the listener's address.
func (p *PlainProxy) Addr() net.Addr { return p.ln.Addr() }

// Close stops the proxy.
func (p *PlainProxy) Close() error { return p.srv.Close() }
