package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/internal/cputime"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// benchEvents makes n distinct valid usage events over tenants and agents,
// a third of them crossing an hour boundary, as ingest would publish them.
func benchEvents(n int) []*kgo.Record {
	r := rand.New(rand.NewPCG(7, 7))
	base := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	kinds := []model.Kind{model.KindBandwidthIn, model.KindBandwidthOut, model.KindStorage, model.KindLicense}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		tenant := strconv.Itoa(100000 + r.IntN(2000))
		k := kinds[i%4]
		start := base.Add(time.Duration(r.IntN(30*24)) * time.Hour)
		if r.IntN(3) == 0 {
			start = start.Add(time.Duration(r.IntN(3600)) * time.Second)
		}
		e := model.Event{TenantID: tenant, EntryID: fmt.Sprintf("urn:uuid:%08x-%04x-4000-8000-%012x", r.Uint32(), i%4, i),
			EventID: strconv.Itoa(i), Kind: k, ProductNamespace: model.NSCloudBackup + string(k), ProductVersion: "1",
			EventType: model.TypeUsage, EventVersion: "1", Region: "DFW", DataCenter: "DFW1", Environment: "PROD",
			ResourceID: "agent-" + strconv.Itoa(r.IntN(5)), ResourceType: "AGENT", ServerID: strconv.Itoa(r.IntN(1000)),
			StartTime: start, EndTime: start.Add(time.Hour), Quantity: r.Uint64N(1 << 36), Updated: start.Add(time.Hour), Published: start.Add(time.Hour)}
		if k == model.KindLicense {
			e.Quantity = 1
		}
		recs[i] = &kgo.Record{Topic: model.TopicUsage, Key: []byte(tenant), Value: e.AppendJSON(nil),
			Headers: []kgo.RecordHeader{{Key: model.HeaderKind, Value: []byte(k)}, {Key: model.HeaderEntryID, Value: []byte(e.EntryID)}}}
	}
	return recs
}

// BenchmarkSink measures the whole sink — Kafka (kfake) fetch, decode,
// dedupe lookup, insert into usage_events with both rollup views, progress
// and commit — and, in the same run, a raw clickhouse-go batch insert of
// the same rows into the same table (same views) of a second database.
// Run: scripts/clickhouse.sh run -- go test -run '^$' -bench BenchmarkSink -benchtime 1x ./sink/
// (FEEDMETER_BENCH_ROWS sets the number of events, default 500,000;
// FEEDMETER_BENCH_RAW=0 leaves out the raw insert; FEEDMETER_BENCH_PROFILE=file
// writes a CPU profile of the sink's run alone).
func BenchmarkSink(b *testing.B) {
	n := 500000
	if v, err := strconv.Atoi(os.Getenv("FEEDMETER_BENCH_ROWS")); err == nil && v > 0 {
		n = v
	}
	var sinkRate, steadyRate, rawRate, rawSortedRate, sinkCPU, serverCPUPerRow, rawServerCPUPerRow, batches float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// Sink: Kafka to ClickHouse.
		db := chtest.NewDB(b, true)
		c := newCluster(b)
		brokers := c.ListenAddrs()
		produce(b, brokers, benchEvents(n))
		// The records are made again for the raw insert below: a sink does
		// not hold the topic in its heap, and a million records held here
		// made every collection during the run mark a gigabyte more.
		runtime.GC()
		cfg := testConfig(b, brokers, db.Addr, db.Name)
		cfg.BatchRows, cfg.BatchAge, cfg.FlushTimeout = 50000, time.Second, 30*time.Second
		cfg.SessionTimeout, cfg.RebalanceTimeout = 10*time.Second, 70*time.Second
		cfg.KafkaOptions = []kgo.Opt{kgo.FetchMaxBytes(64 << 20), kgo.FetchMaxPartitionBytes(16 << 20)}
		b.StartTimer()
		// ClickHouse's CPU is read when it is the server that
		// scripts/clickhouse.sh started.
		start, cpu0 := time.Now(), cputime.Self()
		server := cputime.Start(cputime.ScriptServer())
		stopProfile := profileWindow(b)
		s, stop := runSink(b, cfg)
		// Steady state: from the first committed batch to the end, without
		// the start-up (ClickHouse connect, migrations check, group join).
		firstAt, firstRows := make(chan time.Time, 1), make(chan float64, 1)
		go func() {
			for {
				if v := testutil.ToFloat64(s.m.rows.WithLabelValues("usage_events")); v > 0 {
					firstAt <- time.Now()
					firstRows <- v
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		// The end: every event inserted, read from the sink's own counter
		// (polling sink_progress and Kafka's end offsets every 100 ms, as
		// the tests do, cost ClickHouse about 7 ms a poll during the run),
		// then the last progress row in ClickHouse.
		for deadline := time.Now().Add(10 * time.Minute); testutil.ToFloat64(s.m.rows.WithLabelValues("usage_events")) < float64(n); {
			if time.Now().After(deadline) {
				b.Fatalf("the sink inserted %v of %d events in 10 minutes", testutil.ToFloat64(s.m.rows.WithLabelValues("usage_events")), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitDrainedEvery(b, db.Conn, brokers, time.Minute, 5*time.Millisecond)
		end, cpu1 := time.Now(), cputime.Self()
		stopProfile()
		sinkCPU = (cpu1 - cpu0).Seconds() / float64(n) * 1e6
		batches = testutil.ToFloat64(s.m.batches.WithLabelValues("ok"))
		if used, ok := server.Used(); ok {
			serverCPUPerRow = used.Seconds() / float64(n) * 1e6
		}
		b.StopTimer()
		stop()
		sinkRate = float64(n) / end.Sub(start).Seconds()
		t1, r1 := <-firstAt, <-firstRows
		steadyRate = (float64(n) - r1) / end.Sub(t1).Seconds()

		if os.Getenv("FEEDMETER_BENCH_RAW") == "0" {
			b.StartTimer()
			continue // the sink alone, for profiling it
		}
		// The rows as the sink builds them, for the raw insert (decoded
		// only now, so that they are not live heap while the sink runs).
		d := decodeRecords(benchEvents(n))
		if len(d.usage) != n {
			b.Fatalf("decoded %d of %d events", len(d.usage), n)
		}
		// Raw: the same rows, batches of 50,000, into a fresh database:
		// once in the order they arrive (what a hand-rolled sink sends), once
		// each batch sorted by the table's key as the sink sends it.
		rawRate, _ = rawInsert(b, d.usage, func(r []eventRow) []eventRow { return r })
		rawSortedRate, rawServerCPUPerRow = rawInsert(b, d.usage, sortRows)
		b.StartTimer()
	}
	b.ReportMetric(sinkRate, "sink-rows/s")
	// The sink's INSERTs (each makes a part per table and partition that
	// ClickHouse merges later: fewer, larger batches cost it less).
	b.ReportMetric(batches, "sink-batches")
	b.ReportMetric(rawRate, "raw-rows/s")
	b.ReportMetric(steadyRate, "sink-steady-rows/s")
	b.ReportMetric(rawSortedRate, "raw-sorted-rows/s")
	// The CPU time of this process (sink, kfake, Go runtime) per event.
	b.ReportMetric(sinkCPU, "sink-process-cpu-us/row")
	// And ClickHouse's over the same time (inserts, views, lookups, merges),
	// when it is the server scripts/clickhouse.sh started.
	b.ReportMetric(serverCPUPerRow, "clickhouse-cpu-us/row")
	// And during the sorted raw insert: what the sink makes ClickHouse do
	// beyond the insert itself shows as the difference.
	b.ReportMetric(rawServerCPUPerRow, "raw-clickhouse-cpu-us/row")
	// Against the faster of the two raw inserts.
	best := max(rawRate, rawSortedRate)
	b.ReportMetric(sinkRate/best*100, "sink-%-of-raw")
	b.ReportMetric(steadyRate/best*100, "steady-%-of-raw")
	b.ReportMetric(0, "ns/op")
}

// profileWindow writes a CPU profile of the sink's run alone (not of
// making and producing the records) to FEEDMETER_BENCH_PROFILE, when set;
// the returned func stops it.
func profileWindow(b *testing.B) func() {
	path := os.Getenv("FEEDMETER_BENCH_PROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// rawInsert inserts rows with clickhouse-go alone, in batches of 50,000
// each put in order by order, into usage_events of a fresh database, and
// returns the rows per second (building the columns included) and
// ClickHouse's CPU per row meanwhile (0 when it cannot be read).
func rawInsert(b *testing.B, rows []eventRow, order func([]eventRow) []eventRow) (rate, serverCPUPerRow float64) {
	raw := chtest.NewDB(b, true)
	ctx := context.Background()
	st := &store{conn: raw.Conn}
	start := time.Now()
	server := cputime.Start(cputime.ScriptServer())
	for lo := 0; lo < len(rows); lo += 50000 {
		batch := order(rows[lo:min(lo+50000, len(rows))])
		if err := st.insert(ctx, newQueryID(), "usage_events", usageColumns, fillUsage(batch, time.Now())); err != nil {
			b.Fatal(err)
		}
	}
	rate = float64(len(rows)) / time.Since(start).Seconds()
	if used, ok := server.Used(); ok {
		serverCPUPerRow = used.Seconds() / float64(len(rows)) * 1e6
	}
	return rate, serverCPUPerRow
}

// BenchmarkDecode measures what the sink does to a batch of 50,000 records
// before it asks ClickHouse anything: decode (two halves at once, as the
// loop does), then sort. The records are in 4 partitions as Kafka hands
// them out (a partition's records together), so the interners see a
// partition's run of records as the sink does.
// The same records every iteration: after the first, the interners know
// every repeating value, as a running sink's know its tenants (a tenant seen
// for the first time costs a string allocation more per field).
// Run: go test -run '^$' -bench BenchmarkDecode -benchmem ./sink/
func BenchmarkDecode(b *testing.B) {
	s, err := New(testConfig(b, []string{"127.0.0.1:1"}, "127.0.0.1:1", "bench"))
	if err != nil {
		b.Fatal(err)
	}
	const n = 50000
	recs := benchEvents(n)
	byPartition := make([]*kgo.Record, 0, n)
	for p := range int32(4) {
		for i, r := range recs {
			if int32(i%4) == p {
				r.Topic, r.Partition, r.Offset = model.TopicUsage, p, int64(len(byPartition))
				byPartition = append(byPartition, r)
			}
		}
	}
	now := time.Now()
	b.ResetTimer()
	for range b.N {
		d := s.decode(byPartition, now)
		if len(d.usage) != n {
			b.Fatalf("decoded %d usage rows of %d records", len(d.usage), n)
		}
		sortRows(d.usage)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}
