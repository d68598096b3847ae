package ingest

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are ingest's Prometheus metrics.
type Metrics struct {
	pages, entries, rejects, failures *prometheus.CounterVec
	retries                           *prometheus.CounterVec
	lag                               *lagCollector
}

// NewMetrics registers the metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "feedmeter_ingest_pages_total", Help: "Feed pages published, by tenant."}, []string{"tenant"}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "feedmeter_ingest_entries_total", Help: "Usage events published, by tenant."}, []string{"tenant"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "feedmeter_ingest_rejects_total", Help: "Entries sent to the dead-letter topic, by tenant."}, []string{"tenant"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "feedmeter_ingest_poll_failures_total", Help: "Polls that ended in an error, by tenant."}, []string{"tenant"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "feedmeter_ingest_retries_total", Help: "Feed requests retried, by HTTP status (transport: no answer or a cut body)."}, []string{"status"}),
		lag: &lagCollector{desc: prometheus.NewDesc("feedmeter_ingest_lag_seconds",
			"Seconds since the tenant's feed was last read to its head (or, before that, since this process took the tenant), for the tenants this process owns. It grows while polls fail.",
			[]string{"tenant"}, nil)},
	}
	if reg != nil {
		reg.MustRegister(m.pages, m.entries, m.rejects, m.failures, m.retries, m.lag)
	}
	return m
}

// lagCollector computes each owned tenant's lag when scraped, so that it
// grows between polls and while they fail.
type lagCollector struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	src  func() map[string]time.Time // tenant -> since when it lags; nil until a runner uses the metrics
}

func (c *lagCollector) setSource(src func() map[string]time.Time) {
	c.mu.Lock()
	c.src = src
	c.mu.Unlock()
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.src
	c.mu.Unlock()
	if src == nil {
		return
	}
	now := time.Now()
	for tenant, since := range src() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, max(now.Sub(since).Seconds(), 0), tenant)
	}
}
