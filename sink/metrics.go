package sink

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Sink's Prometheus metrics.
type metrics struct {
	records    *prometheus.CounterVec // records read, by topic
	rows       *prometheus.CounterVec // rows inserted, by table
	duplicates *prometheus.CounterVec // events not inserted because their key was there, by table
	rejects    *prometheus.CounterVec // reject rows inserted, by stage
	batches    *prometheus.CounterVec // flushes, by result (ok, abandoned)
	errors     prometheus.Counter     // failed ClickHouse attempts
	commitErrs prometheus.Counter     // failed offset commits
	insertSecs prometheus.Histogram   // duration of a flush's ClickHouse writes
	flushSecs  prometheus.Histogram   // duration of a whole flush, commit included
	lag        *prometheus.GaugeVec   // offsets behind the high watermark (commit markers too), by topic and partition
	buffered   prometheus.Gauge       // records waiting for the next flush
	up         prometheus.Gauge       // 1 when the last ClickHouse attempt succeeded
	cacheLoads prometheus.Counter     // tenants whose key fingerprints were loaded
	cacheHits  prometheus.Counter     // keys whose fingerprint was known, looked up exactly
	misrouted  prometheus.Counter     // usage records whose key is not their tenant
	// Identity and corrections (planUsage).
	republished prometheus.Counter // copies of a counted event under another atom id
	conflicts   prometheus.Counter // copies of an event id that say something else
	corrections prometheus.Counter // events inserted that correct another
	replaced    prometheus.Counter // usage_events rows taken out of the rollups
	partial     prometheus.Counter // rows an insert wrote though the server refused it (a view failed)
}

// newMetrics registers the metrics on reg; cacheKeys reports how many
// fingerprints the dedupe cache holds.
func newMetrics(reg prometheus.Registerer, cacheKeys func() int) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "feedmeter_sink_records_total",
			Help: "Kafka records read, by topic."}, []string{"topic"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "feedmeter_sink_rows_total",
			Help: "Rows inserted into ClickHouse, by table."}, []string{"table"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "feedmeter_sink_duplicates_total",
			Help: "Events not counted again, by table: in usage_events, an event whose identity (tenant, event id, kind) counts already, saying the same (a replay, or a republish: feedmeter_sink_republished_total); in other_events, an entry (tenant, atom id, kind) kept already."}, []string{"table"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "feedmeter_sink_rejects_total",
			Help: "Rows inserted into the rejects table, by stage (ingest: from the dead-letter topic; sink: undecodable or invalid records)."}, []string{"stage"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "feedmeter_sink_batches_total",
			Help: "Flushes, by result: ok (inserted and committed) or abandoned (ClickHouse failed for FlushTimeout; read again)."}, []string{"result"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_clickhouse_errors_total",
			Help: "ClickHouse attempts that failed (each is retried with backoff)."}),
		commitErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_commit_errors_total",
			Help: "Offset commits that failed after the rows were in ClickHouse (the records are read again and skipped as duplicates)."}),
		insertSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "feedmeter_sink_insert_seconds",
			Help: "Time of a flush's ClickHouse work: key lookups, inserts and progress.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		flushSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "feedmeter_sink_flush_seconds",
			Help: "Time of a whole flush, offset commit included.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "feedmeter_sink_lag",
			Help: "Offsets between the last record read and the partition's high watermark. A transactional producer's commit marker takes an offset too, so a sink that has read everything ingest wrote shows 1, not 0: alert on lag that stays above a bound, not on lag above 0."}, []string{"topic", "partition"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "feedmeter_sink_buffered_records",
			Help: "Records read and waiting for the next flush."}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "feedmeter_sink_clickhouse_up",
			Help: "1 when the last ClickHouse attempt succeeded, 0 while it is failing."}),
		cacheLoads: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_key_cache_loads_total",
			Help: "Tenants whose event id fingerprints (usage_ids) were loaded into the dedupe cache (after a start, a rebalance, a failed write or an eviction)."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_key_cache_hits_total",
			Help: "Event ids whose fingerprint the dedupe cache knew, so they were looked up in ClickHouse (copies, corrections, and the rare fingerprint shared by two ids)."}),
		misrouted: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_misrouted_records_total",
			Help: "Usage records whose Kafka key is not their tenant_id: still inserted once, but exactly-once across sinks assumes records keyed by tenant."}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_republished_total",
			Help: "Usage events published again under another atom id (a publisher's retry): not counted again, recorded in usage_copies (v_event_copies)."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_conflicts_total",
			Help: "Usage events whose event id counts already under content that differs: rejected (rejects, dead-letter topic), the first copy counts; recorded in usage_copies."}),
		corrections: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_corrections_total",
			Help: "Usage events inserted that correct another (a referenceId)."}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_replaced_total",
			Help: "usage_events rows taken out of the rollups because a correction replaces them (usage_replaced)."}),
		partial: prometheus.NewCounter(prometheus.CounterOpts{Name: "feedmeter_sink_partial_insert_rows_total",
			Help: "Rows an insert into usage_events or usage_replaced wrote though ClickHouse answered it with an error (one of its views failed after the table was written): the rollups may be wrong for them; compare v_rollup_check. Alert on any."}),
	}
	reg.MustRegister(m.records, m.rows, m.duplicates, m.rejects, m.batches, m.errors, m.commitErrs,
		m.insertSecs, m.flushSecs, m.lag, m.buffered, m.up, m.cacheLoads, m.cacheHits, m.misrouted,
		m.republished, m.conflicts, m.corrections, m.replaced, m.partial,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "feedmeter_sink_key_cache_fingerprints",
			Help: "Key fingerprints held by the dedupe cache (about 20 bytes each)."}, func() float64 { return float64(cacheKeys()) }))
	return m
}
