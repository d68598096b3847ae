package sink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

const testPartitions = 4

// newCluster starts an in-process Kafka with the usage and dead-letter
// topics, closed when the test ends.
func newCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(testPartitions, model.TopicUsage, model.TopicDeadLetter),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// testLogger writes the sink's log to the test log when -v, else discards.
func testLogger(t testing.TB) *slog.Logger {
	if t == nil || testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a sink config with short timeouts for tests.
func testConfig(t testing.TB, brokers []string, chAddr, db string) Config {
	return Config{
		Brokers: brokers, ClickHouse: chAddr, Database: db,
		BatchRows: 700, BatchAge: 100 * time.Millisecond,
		FlushTimeout: 3 * time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		RebalanceTimeout: 15 * time.Second, SessionTimeout: 1500 * time.Millisecond,
		Logger:       testLogger(t),
		KafkaOptions: []kgo.Opt{kgo.HeartbeatInterval(200 * time.Millisecond)},
	}
}

// decodeRecords decodes recs as the sink would, the i-th at offset i of
// partition i mod testPartitions.
func decodeRecords(recs []*kgo.Record) *decoded {
	var d decoded
	for i, r := range recs {
		r.Partition, r.Offset = int32(i%testPartitions), int64(i)
		d.decodeUsage(r, time.Now())
	}
	return &d
}

// runSink runs a sink in a goroutine; the returned stop cancels it and waits.
func runSink(t testing.TB, cfg Config) (s *Sink, stop func()) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sink Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// workload is what a test produces and what it expects to find.
type workload struct {
	records []*kgo.Record // in produce order
	events  []model.Event // the first copy of every distinct valid usage event (by identity), in order
	rejects int           // records that must become rejects (sink and ingest)
	other   int           // distinct kind other events
	// conflicts are the values of records that copy a counted event id
	// with other content: each such record is a reject.
	conflicts map[string]bool
}

// genWorkload makes n usage records for a few tenants: bandwidth, storage
// and license events over intervals crossing hours and days, snapshots,
// other events, duplicates of earlier records, invalid records, and ingest
// dead letters.
func genWorkload(seed uint64, n int) *workload {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := &workload{conflicts: map[string]bool{}}
	seen := map[model.DedupeKey]bool{}
	ids := map[model.Identity]bool{}
	byGroup := map[string][]model.Event{} // usage events sent, by tenant and kind
	var usageSent []model.Event
	base := time.Date(2026, 9, 28, 0, 0, 0, 0, time.UTC)
	var sent [][]byte // values already produced, for duplicates
	var sentKeys []string
	add := func(key string, value []byte, kind, entry string) {
		rec := &kgo.Record{Topic: model.TopicUsage, Key: []byte(key), Value: value,
			Headers: []kgo.RecordHeader{{Key: model.HeaderKind, Value: []byte(kind)}, {Key: model.HeaderEntryID, Value: []byte(entry)}}}
		w.records = append(w.records, rec)
		sent = append(sent, value)
		sentKeys = append(sentKeys, key)
	}
	kinds := []model.Kind{model.KindBandwidthIn, model.KindBandwidthOut, model.KindStorage, model.KindLicense}
	for i := 0; i < n; i++ {
		tenant := strconv.Itoa(1000 + r.IntN(12))
		switch x := r.IntN(100); {
		case x < 8 && len(sent) > 0: // a duplicate of an earlier record
			j := r.IntN(len(sent))
			w.records = append(w.records, &kgo.Record{Topic: model.TopicUsage, Key: []byte(sentKeys[j]), Value: sent[j]})
			continue
		case x < 10: // garbage
			w.records = append(w.records, &kgo.Record{Topic: model.TopicUsage, Key: []byte(tenant), Value: []byte(`{"tenant_id":"` + tenant + `","oops`)})
			w.rejects++
			continue
		case x < 11: // an ingest dead letter
			dl := model.DeadLetter{Stage: model.StageIngest, Feed: "https://feeds.example/backup/events/" + tenant, TenantID: tenant,
				Marker: "urn:uuid:m", Index: i, Reason: "malformed XML at line 3", Raw: []byte("<entry><broken"), Time: base}
			v, _ := dl.MarshalJSON()
			w.records = append(w.records, &kgo.Record{Topic: model.TopicDeadLetter, Key: []byte(tenant), Value: v})
			w.rejects++
			continue
		case x < 13 && len(usageSent) > 0: // a republish: an event sent before, under a new atom id
			e := usageSent[r.IntN(len(usageSent))]
			e.EntryID = fmt.Sprintf("urn:uuid:%08x-0001-4000-8000-%012x", r.Uint32(), i)
			e.Published = base.Add(time.Duration(i) * time.Second)
			add(e.TenantID, e.AppendJSON(nil), string(e.Kind), e.EntryID)
			continue
		case x < 14 && len(usageSent) > 0: // a conflict: an event id sent before, saying other
			e := usageSent[r.IntN(len(usageSent))]
			e.EntryID = fmt.Sprintf("urn:uuid:%08x-0002-4000-8000-%012x", r.Uint32(), i)
			e.Published = base.Add(time.Duration(i) * time.Second)
			if e.Kind == model.KindLicense {
				e.ServerID += "x"
			} else {
				e.Quantity ^= 1 + r.Uint64N(1000)
			}
			v := e.AppendJSON(nil)
			w.conflicts[string(v)] = true
			add(e.TenantID, v, string(e.Kind), e.EntryID)
			continue
		}
		e := model.Event{
			TenantID: tenant, EntryID: fmt.Sprintf("urn:uuid:%08x-0000-4000-8000-%012x", r.Uint32(), i), EventID: fmt.Sprintf("ev-%d-%d", seed, i),
			Kind: kinds[r.IntN(len(kinds))], ProductVersion: "1", EventType: model.TypeUsage, EventVersion: "1",
			Region: []string{"DFW", "ORD", "IAD"}[r.IntN(3)], DataCenter: "DC" + strconv.Itoa(r.IntN(2)), Environment: "PROD",
			ResourceID: "agent-" + strconv.Itoa(r.IntN(4)), ResourceType: "AGENT", ServerID: strconv.Itoa(r.IntN(5)),
			Updated: base.Add(time.Duration(i) * time.Second), Published: base.Add(time.Duration(i) * time.Second),
		}
		e.ProductNamespace = model.NSCloudBackup + string(e.Kind)
		start := base.Add(time.Duration(r.Int64N(int64(3*24*time.Hour))) / time.Second * time.Second)
		if r.IntN(4) == 0 {
			start = start.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
		}
		e.StartTime = start
		e.EndTime = start.Add(time.Duration(1+r.Int64N(int64(6*time.Hour/time.Second))) * time.Second)
		if r.IntN(10) == 0 {
			e.EndTime = start.Add(24 * time.Hour)
		}
		switch e.Kind {
		case model.KindLicense:
			e.Quantity = 1
			if r.IntN(2) == 0 {
				e.EventType, e.ProductVersion = model.TypeUsageSnapshot, "3"
				e.EventTime, e.StartTime, e.EndTime = e.StartTime, time.Time{}, time.Time{}
				e.ServerName = "srv-" + e.ServerID
				if r.IntN(3) == 0 {
					ext := true
					e.External, e.ServerID = &ext, ""
				}
			}
		case model.KindStorage:
			e.Quantity = r.Uint64() >> r.IntN(64)
		default:
			e.Quantity = r.Uint64N(1 << 40)
			if r.IntN(50) == 0 {
				e.Quantity = ^uint64(0) - r.Uint64N(10)
			}
		}
		switch y := r.IntN(100); {
		case y < 3: // other event
			e.Kind, e.EventType, e.Quantity, e.ProductNamespace = model.KindOther, "INFO", 0, ""
		case y >= 90: // a correction of an earlier event of its tenant and kind, or of one never sent
			if g := byGroup[e.TenantID+"|"+string(e.Kind)]; len(g) > 0 && y < 98 {
				e.ReferenceID = g[r.IntN(len(g))].EventID
			} else {
				e.ReferenceID = fmt.Sprintf("ev-%d-missing-%d", seed, r.IntN(3))
			}
		case y < 5: // invalid: interval backwards
			if e.EventType == model.TypeUsage {
				e.StartTime, e.EndTime = e.EndTime, e.StartTime
				w.rejects++
				v := e.AppendJSON(nil)
				add(tenant, v, string(e.Kind), e.EntryID)
				// Invalid records repeat their reject only per record; the
				// duplicate branch above may copy this one: count it there.
				continue
			}
		}
		v := e.AppendJSON(nil)
		add(tenant, v, string(e.Kind), e.EntryID)
		switch {
		case e.Kind == model.KindOther:
			if !seen[e.Key()] {
				seen[e.Key()] = true
				w.other++
			}
		case !ids[e.Identity()]:
			ids[e.Identity()] = true
			w.events = append(w.events, e)
			usageSent = append(usageSent, e)
			k := e.TenantID + "|" + string(e.Kind)
			byGroup[k] = append(byGroup[k], e)
		}
	}
	w.rejects = w.rejectsOf(w.records)
	return w
}

// counted returns the events of w that count: of each correction tree (per
// tenant and kind), the one reached from its root through the latest
// published child (the rule of sink/identity.go, computed here on its own).
func (w *workload) counted() []model.Event {
	groups := map[string][]model.Event{}
	var order []string
	for _, e := range w.events {
		k := e.TenantID + "|" + string(e.Kind)
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], e)
	}
	var out []model.Event
	for _, k := range order {
		in := countedOf(groups[k])
		for _, e := range groups[k] {
			if in[e.EventID] {
				out = append(out, e)
			}
		}
	}
	return out
}

// countedOf returns the ids that count among evs, events of one tenant and
// kind with distinct ids.
func countedOf(evs []model.Event) map[string]bool {
	byID := map[string]model.Event{}
	kids := map[string][]model.Event{}
	for _, e := range evs {
		byID[e.EventID] = e
		if e.ReferenceID != "" {
			kids[e.ReferenceID] = append(kids[e.ReferenceID], e)
		}
	}
	out := map[string]bool{}
	var down func(id string)
	down = func(id string) {
		ks := kids[id]
		if len(ks) == 0 {
			out[id] = true
			return
		}
		best := ks[0]
		for _, k := range ks[1:] {
			bp, kp := best.Published.Truncate(time.Second), k.Published.Truncate(time.Second)
			if kp.After(bp) || kp.Equal(bp) && k.EventID > best.EventID {
				best = k
			}
		}
		down(best.EventID)
	}
	for _, e := range evs {
		if e.ReferenceID == "" {
			down(e.EventID)
		} else if _, ok := byID[e.ReferenceID]; !ok {
			down(e.ReferenceID)
		}
	}
	return out
}

// rejectsOf counts the rejects recs make once produced: one per bad
// record (the same bad bytes produced twice are two records, two rejects),
// conflicting copies of an event id included.
func (w *workload) rejectsOf(recs []*kgo.Record) int {
	n := 0
	for _, rec := range recs {
		if w.conflicts[string(rec.Value)] {
			n++
			continue
		}
		var d decoded
		if rec.Topic == model.TopicDeadLetter {
			d.decodeDeadLetter(rec, time.Now())
		} else {
			d.decodeUsage(rec, time.Now())
		}
		n += len(d.rejects)
	}
	return n
}

// again returns recs, to be produced once more (an upstream or ingest
// publishing them again): their usage events change nothing, their bad
// records are more rejects.
func (w *workload) again(recs []*kgo.Record) []*kgo.Record {
	w.rejects += w.rejectsOf(recs)
	return recs
}

// produce sends recs keyed by tenant (partitioned by key hash, as ingest
// does) and returns the end offset of every partition written.
func produce(t testing.TB, brokers []string, recs []*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(0), kgo.MaxBufferedRecords(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Copy: a record can be produced only once.
	cp := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		cp[i] = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	if err := cl.ProduceSync(ctx, cp...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// endOffsets returns the high watermark of every partition of both topics.
func endOffsets(t testing.TB, brokers []string) map[source]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[source]int64{}
	for _, topic := range []string{model.TopicUsage, model.TopicDeadLetter} {
		for p := int32(0); p < testPartitions; p++ {
			out[source{topic: topic, partition: p}] = 0
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, model.TopicUsage, model.TopicDeadLetter)
	if err != nil {
		t.Fatalf("list end offsets: %v", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		out[source{topic: o.Topic, partition: o.Partition}] = o.Offset
	})
	return out
}

// waitDrained waits until sink_progress reaches the end of every partition.
func waitDrained(t testing.TB, conn driver.Conn, brokers []string, within time.Duration) {
	t.Helper()
	waitDrainedEvery(t, conn, brokers, within, 100*time.Millisecond)
}

// waitDrainedEvery is waitDrained, asking every so often.
func waitDrainedEvery(t testing.TB, conn driver.Conn, brokers []string, within, every time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var behind []string
	for time.Now().Before(deadline) {
		end := endOffsets(t, brokers)
		prog := map[source]int64{}
		rows, err := conn.Query(context.Background(), "SELECT kafka_topic, kafka_partition, max(next_offset) FROM sink_progress GROUP BY kafka_topic, kafka_partition")
		if err == nil {
			for rows.Next() {
				var s source
				var n uint64
				if rows.Scan(&s.topic, &s.partition, &n) == nil {
					prog[s] = int64(n)
				}
			}
			rows.Close()
		}
		behind = behind[:0]
		for s, e := range end {
			if e > 0 && prog[s] < e {
				behind = append(behind, fmt.Sprintf("%s/%d at %d of %d", s.topic, s.partition, prog[s], e))
			}
		}
		if len(behind) == 0 {
			return
		}
		time.Sleep(every)
	}
	sort.Strings(behind)
	t.Fatalf("sink did not drain within %v: %s", within, strings.Join(behind, ", "))
}

// expected are the sums computed independently from the distinct events:
// big integers, a second implementation of the split rule.
type expected struct {
	total  map[string][3]*big.Int // tenant|kind -> quantity, byte-seconds, events
	hourly map[string][2]*big.Int // tenant|kind|hour unix -> quantity, byte-seconds
	daily  map[string][2]*big.Int // tenant|kind|YYYY-MM-DD -> quantity, byte-seconds
	lic    map[string]int         // tenant|YYYY-MM-DD -> distinct licensed servers
}

func expect(events []model.Event) *expected {
	x := &expected{total: map[string][3]*big.Int{}, hourly: map[string][2]*big.Int{}, daily: map[string][2]*big.Int{}, lic: map[string]int{}}
	licSets := map[string]map[string]bool{}
	add2 := func(m map[string][2]*big.Int, k string, q, bs *big.Int) {
		v, ok := m[k]
		if !ok {
			v = [2]*big.Int{new(big.Int), new(big.Int)}
			m[k] = v
		}
		v[0].Add(v[0], q)
		v[1].Add(v[1], bs)
	}
	for i := range events {
		e := &events[i]
		tk := e.TenantID + "|" + string(e.Kind)
		tot, ok := x.total[tk]
		if !ok {
			tot = [3]*big.Int{new(big.Int), new(big.Int), new(big.Int)}
			x.total[tk] = tot
		}
		q := new(big.Int).SetUint64(e.Quantity)
		tot[0].Add(tot[0], q)
		tot[2].Add(tot[2], big.NewInt(1))
		server := e.ServerID
		if server == "" {
			server = "name:" + e.ServerName
		}
		// Hour pieces: [from, to) in ns since the epoch.
		type piece struct {
			hour   int64
			q, bsv *big.Int
		}
		var pieces []piece
		if e.EventType != model.TypeUsage {
			h := e.EventTime.Unix() / 3600 * 3600
			pieces = []piece{{h, q, new(big.Int)}}
		} else {
			from, to := big.NewInt(e.StartTime.UnixNano()), big.NewInt(e.EndTime.UnixNano())
			dur := new(big.Int).Sub(to, from)
			bsTotal := new(big.Int)
			if e.Kind == model.KindStorage {
				bsTotal.Mul(q, dur).Quo(bsTotal, big.NewInt(1e9))
			}
			tot[1].Add(tot[1], bsTotal)
			qLeft, bsLeft := new(big.Int).Set(q), new(big.Int).Set(bsTotal)
			for h := e.StartTime.Unix() / 3600 * 3600; h*1e9 < e.EndTime.UnixNano(); h += 3600 {
				lo := new(big.Int).Mul(big.NewInt(h), big.NewInt(1e9))
				if lo.Cmp(from) < 0 {
					lo = from
				}
				hi := new(big.Int).Mul(big.NewInt(h+3600), big.NewInt(1e9))
				if hi.Cmp(to) >= 0 { // last hour: the remainder
					pieces = append(pieces, piece{h, qLeft, bsLeft})
					break
				}
				ov := new(big.Int).Sub(hi, lo)
				pq := new(big.Int).Mul(q, ov)
				pq.Quo(pq, dur)
				pb := new(big.Int)
				if e.Kind == model.KindStorage {
					pb.Mul(q, ov).Quo(pb, big.NewInt(1e9))
				}
				qLeft = new(big.Int).Sub(qLeft, pq)
				bsLeft = new(big.Int).Sub(bsLeft, pb)
				pieces = append(pieces, piece{h, pq, pb})
			}
		}
		for _, p := range pieces {
			add2(x.hourly, tk+"|"+strconv.FormatInt(p.hour, 10), p.q, p.bsv)
			d := time.Unix(p.hour, 0).UTC().Format("2006-01-02")
			add2(x.daily, tk+"|"+d, p.q, p.bsv)
			if e.Kind == model.KindLicense {
				lk := e.TenantID + "|" + d
				if licSets[lk] == nil {
					licSets[lk] = map[string]bool{}
				}
				licSets[lk][server] = true
			}
		}
	}
	for k, set := range licSets {
		x.lic[k] = len(set)
	}
	return x
}

// verify compares every rollup and table of db with w.
func verify(t testing.TB, conn driver.Conn, w *workload) {
	t.Helper()
	x := expect(w.counted())
	q := func(query string) map[string]string {
		out := map[string]string{}
		rows, err := conn.Query(context.Background(), query)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		defer rows.Close()
		for rows.Next() {
			vals := make([]any, len(rows.ColumnTypes()))
			for i, ct := range rows.ColumnTypes() {
				vals[i] = reflect.New(ct.ScanType()).Interface()
			}
			if err := rows.Scan(vals...); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			var parts []string
			for _, v := range vals[1:] {
				parts = append(parts, fmt.Sprint(reflect.ValueOf(v).Elem().Interface()))
			}
			out[fmt.Sprint(reflect.ValueOf(vals[0]).Elem().Interface())] = strings.Join(parts, " ")
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return out
	}
	wantTotal := map[string]string{}
	for k, v := range x.total {
		wantTotal[k] = v[0].String() + " " + v[1].String() + " " + v[2].String()
	}
	// A bucket (or a tenant's kind) whose events were all replaced sums to
	// nothing: it is not there.
	const tot = " sum(quantity), sum(byte_seconds), sum(events)"
	chtest.CompareRows(t, "hourly totals", q("SELECT tenant_id || '|' || kind,"+tot+" FROM usage_hourly GROUP BY tenant_id, kind HAVING sum(pieces) != 0"), wantTotal)
	chtest.CompareRows(t, "daily totals", q("SELECT tenant_id || '|' || kind,"+tot+" FROM usage_daily GROUP BY tenant_id, kind HAVING sum(pieces) != 0"), wantTotal)
	chtest.CompareRows(t, "event totals", q("SELECT tenant_id || '|' || kind, sum(q), sum(bs), sum(n) FROM ("+
		"SELECT tenant_id, kind, toDecimal128(quantity, 0) AS q, byte_seconds AS bs, toInt64(1) AS n FROM usage_events"+
		" UNION ALL SELECT tenant_id, kind, -toDecimal128(quantity, 0), -byte_seconds, toInt64(-1) FROM usage_replaced)"+
		" GROUP BY tenant_id, kind HAVING sum(n) != 0"), wantTotal)
	wantH := map[string]string{}
	for k, v := range x.hourly {
		wantH[k] = v[0].String() + " " + v[1].String()
	}
	chtest.CompareRows(t, "hours", q("SELECT tenant_id || '|' || kind || '|' || toString(toUnixTimestamp(hour)), sum(quantity), sum(byte_seconds) FROM usage_hourly GROUP BY tenant_id, kind, hour HAVING sum(pieces) != 0"), wantH)
	wantD := map[string]string{}
	for k, v := range x.daily {
		wantD[k] = v[0].String() + " " + v[1].String()
	}
	chtest.CompareRows(t, "days", q("SELECT tenant_id || '|' || kind || '|' || toString(day), sum(quantity), sum(byte_seconds) FROM usage_daily GROUP BY tenant_id, kind, day HAVING sum(pieces) != 0"), wantD)
	wantL := map[string]string{}
	for k, v := range x.lic {
		wantL[k] = strconv.Itoa(v)
	}
	chtest.CompareRows(t, "licensed servers", q("SELECT tenant_id || '|' || toString(day), toString(licensed_servers) FROM v_tenant_daily WHERE licensed_servers > 0"), wantL)
	chtest.CompareRows(t, "licence facts", q("SELECT tenant_id || '|' || toString(day), toString(count()) FROM ("+
		"SELECT tenant_id, day, server FROM license_daily GROUP BY tenant_id, day, server HAVING sum(pieces) > 0) GROUP BY tenant_id, day"), wantL)
	chtest.CompareRows(t, "counts", q(`SELECT 'usage', toString(count()) FROM usage_events UNION ALL SELECT 'distinct', toString(uniqExact(tenant_id, entry_id, kind)) FROM usage_events
		UNION ALL SELECT 'other', toString(uniqExact(tenant_id, entry_id, kind)) FROM other_events UNION ALL SELECT 'other rows', toString(count()) FROM other_events
		UNION ALL SELECT 'rejects', toString(count()) FROM rejects`),
		map[string]string{"usage": strconv.Itoa(len(w.events)), "distinct": strconv.Itoa(len(w.events)),
			"other": strconv.Itoa(w.other), "other rows": strconv.Itoa(w.other), "rejects": strconv.Itoa(w.rejects)})
	// The analysts' check view agrees.
	bad := q("SELECT tenant_id || '|' || kind, 'x' FROM v_rollup_check WHERE event_quantity != hourly_quantity OR event_quantity != daily_quantity OR event_count != hourly_events OR event_count != daily_events")
	if len(bad) > 0 {
		t.Errorf("v_rollup_check finds differences: %v", bad)
	}
}
