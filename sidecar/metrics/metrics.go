// Package metrics holds the sidecar's Prometheus instruments, registered on
// a private registry so tests can run several servers in one process.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the sidecar's instruments.
type Metrics struct {
	Registry       *prometheus.Registry
	AdminRequests  *prometheus.CounterVec
	Changes        *prometheus.CounterVec
	PublishSeconds prometheus.Histogram
	CRLFetches     *prometheus.CounterVec
	CACertificates prometheus.Gauge
	StaleCRLs      prometheus.Gauge
	WithheldCRLs   prometheus.Gauge
	MTLSCerts      prometheus.Gauge
	WithheldMTLS   prometheus.Gauge
	SDSStreams     prometheus.Gauge
	SDSRejections  prometheus.Counter
	TrustDirInSync prometheus.Gauge
	RewritePending prometheus.Gauge
}

// New creates and registers the instruments.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		AdminRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtlsgate_admin_requests_total", Help: "Admin API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		Changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtlsgate_trust_changes_total", Help: "Committed management changes by action.",
		}, []string{"action"}),
		PublishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mtlsgate_publish_seconds", Help: "Time to rebuild and publish the SDS snapshot and bundle after a committed change.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		CRLFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtlsgate_crl_fetches_total", Help: "CRL downloads by result (ok, error).",
		}, []string{"result"}),
		CACertificates: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_ca_certificates", Help: "Stored CA certificates."}),
		StaleCRLs:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_crls_stale", Help: "CRLs past their nextUpdate, or without one and older than --crl-max-age-without-next-update."}),
		WithheldCRLs: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_crls_withheld",
			Help: "Stored CRLs not published because they are not complete lists (delta, partitioned, indirect); replace them."}),
		MTLSCerts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_mtls_certificates_served", Help: "Outbound certificates published over SDS."}),
		WithheldMTLS: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_mtls_certificates_withheld",
			Help: "Enabled outbound certificates of this environment not published because Envoy refuses their key; upload a supported one."}),
		SDSStreams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_sds_streams", Help: "Open SDS streams."}),
		SDSRejections: prometheus.NewCounter(prometheus.CounterOpts{Name: "mtlsgate_sds_rejections_total",
			Help: "SDS answers a client rejected (NACK); it keeps its previous secrets. GET /v1/sds/subscriptions says which and why."}),
		TrustDirInSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_trust_dir_in_sync",
			Help: "1 when the last read of --trust-dir was applied, 0 when it was refused (the previous state stays in force)."}),
		RewritePending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mtlsgate_store_rewrite_pending",
			Help: "1 when the store file still holds private keys in clear in its free pages because the rewrite after sealing failed at start; free space in --data-dir and restart serve."}),
	}
	m.Registry.MustRegister(m.AdminRequests, m.Changes, m.PublishSeconds, m.CRLFetches,
		m.CACertificates, m.StaleCRLs, m.WithheldCRLs, m.MTLSCerts, m.WithheldMTLS, m.SDSStreams, m.SDSRejections, m.TrustDirInSync, m.RewritePending,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Both results exported at 0 from the start, so an alert on errors
	// (or on downloads that stopped) has a series before the first download.
	m.CRLFetches.WithLabelValues("ok")
	m.CRLFetches.WithLabelValues("error")
	return m
}
