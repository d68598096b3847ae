package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are ingest's Prometheus metrics.
type Metrics struct {
	pages, entries, rejects, failures *prometheus.CounterVec
	retries                           *prometheus.CounterVec
	lag                               *prometheus.GaugeVec
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
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "feedmeter_ingest_lag_seconds", Help: "Seconds since the tenant's feed was last read to its head."}, []string{"tenant"}),
	}
	if reg != nil {
		reg.MustRegister(m.pages, m.entries, m.rejects, m.failures, m.retries, m.lag)
	}
	return m
}
