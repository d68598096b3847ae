package sink

import (
	"cmp"
	"context"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSortRows: rows come out in (tenant_id, kind, entry_id) order, rows with
// equal keys in the order they came in (the first read is the one kept).
func TestSortRows(t *testing.T) {
	row := func(tenant string, kind model.Kind, entry string, offset int64) eventRow {
		return eventRow{ev: model.Event{TenantID: tenant, Kind: kind, EntryID: entry}, src: source{offset: offset}}
	}
	in := []eventRow{
		row("2", "storage", "a", 0),
		row("10", "storage", "b", 1),
		row("2", "license", "z", 2),
		row("2", "storage", "a", 3),
		row("10", "bandwidthIn", "c", 4),
		row("2", "storage", "a", 5),
	}
	var got []int64
	for _, r := range sortRows(slices.Clone(in)) {
		got = append(got, r.src.offset)
	}
	want := []int64{4, 1, 2, 0, 3, 5} // "10" < "2" as strings, as ClickHouse compares them
	if !slices.Equal(got, want) {
		t.Fatalf("sorted offsets %v, want %v", got, want)
	}
	if len(sortRows(nil)) != 0 || len(sortRows(in[:1])) != 1 {
		t.Fatal("sortRows of 0 or 1 rows changed their number")
	}

	// Random batches against the plain definition: entry ids that share
	// long prefixes, differ only after eight bytes, end early or repeat.
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	for round := range 200 {
		rows := make([]eventRow, 1+r.IntN(300))
		for i := range rows {
			entry := pick("urn:uuid:", "urn:uuid:0000000", "urn:uuid:00000000", "") + pick("", "a", "ab", "\x00", "abcdefgh", "abcdefghi", "abcdefgh\x00", "zz") + pick("", "1", "2")
			if round%3 == 0 {
				entry = "urn:uuid:" + entry
			}
			rows[i] = row(pick("2", "10", "", "2a"), model.Kind(pick("storage", "license", "bandwidthIn")), entry, int64(i))
		}
		want := slices.Clone(rows)
		slices.SortStableFunc(want, func(a, b eventRow) int {
			return cmp.Or(strings.Compare(a.ev.TenantID, b.ev.TenantID), strings.Compare(string(a.ev.Kind), string(b.ev.Kind)),
				strings.Compare(a.ev.EntryID, b.ev.EntryID))
		})
		got := sortRows(slices.Clone(rows))
		for i := range want {
			if got[i].src.offset != want[i].src.offset {
				t.Fatalf("round %d: row %d is offset %d (%q), want %d (%q)", round, i, got[i].src.offset, got[i].ev.EntryID, want[i].src.offset, want[i].ev.EntryID)
			}
		}
	}
}

// TestSettleAfterCutInsert: an INSERT left after one of its blocks was sent
// (its connection closed, as when a flush is abandoned) is waited out by
// settle, even while it cannot be killed yet, and what it wrote is whole
// blocks: the first block's keys all there or all missing, the second's
// (never sent) missing.
func TestSettleAfterCutInsert(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	rows := sortRows(decodeRecords(benchEvents(20000)).usage)
	first, second := rows[:10000], rows[10000:]
	st := &store{conn: db.Conn}
	id := newQueryID()
	b, err := db.Conn.PrepareBatch(clickhouse.Context(ctx, clickhouse.WithQueryID(id)), "INSERT INTO usage_events ("+usageColumns+")")
	if err != nil {
		t.Fatal(err)
	}
	if err := appendColumns(b, usageCols(first, time.Now())...); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := appendColumns(b, usageCols(second, time.Now())...); err != nil {
		t.Fatal(err)
	}
	b.Abort() // closes the connection without sending the second block
	if err := st.settle(ctx, id); err != nil {
		t.Fatalf("settle: %v", err)
	}
	count := func(rows []eventRow) int {
		found, err := st.existingKeys(ctx, "usage_events", rowKeys(rows))
		if err != nil {
			t.Fatal(err)
		}
		return len(found)
	}
	if n := count(first); n != 0 && n != len(first) {
		t.Errorf("first block: %d of %d keys written, want all or none", n, len(first))
	}
	if n := count(second); n != 0 {
		t.Errorf("second block (never sent): %d keys written", n)
	}
}

// TestAbsentTimesAreNull: times an event does not have are NULL in
// ClickHouse, not 1970; present ones keep their nanoseconds apart.
func TestAbsentTimesAreNull(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	at := time.Date(2026, 10, 5, 12, 0, 0, 250, time.UTC)
	lic := model.Event{TenantID: "1", EntryID: "urn:uuid:lic", Kind: model.KindLicense, EventType: model.TypeUsageSnapshot,
		ServerID: "7", EventTime: at, Quantity: 1}
	bw := model.Event{TenantID: "1", EntryID: "urn:uuid:bw", Kind: model.KindBandwidthIn, EventType: model.TypeUsage,
		StartTime: at, EndTime: at.Add(time.Hour), Quantity: 10, Updated: at.Add(time.Hour)}
	rows := []eventRow{{ev: lic, split: model.SplitEvent(&lic)}, {ev: bw, split: model.SplitEvent(&bw)}}
	st := &store{conn: db.Conn}
	if err := st.insert(ctx, newQueryID(), "usage_events", usageColumns, fillUsage(rows, time.Now().UTC().Truncate(time.Second))); err != nil {
		t.Fatal(err)
	}
	got := chtest.QueryStrings(t, db.Conn, `SELECT concat(entry_id, ' ', toString(isNull(start_time)), toString(isNull(end_time)),
		toString(isNull(event_time)), toString(isNull(updated)), toString(isNull(published)), ' ', toString(start_time_ns), ' ', toString(event_time_ns))
		FROM usage_events ORDER BY entry_id`)
	want := []string{"urn:uuid:bw 00101 250 0", "urn:uuid:lic 11011 0 250"}
	if !slices.Equal(got, want) {
		t.Fatalf("null flags (start end event updated published) and nanoseconds:\n got %q\nwant %q", got, want)
	}
}

// TestMisroutedRecordCounted: a usage record whose Kafka key is not its
// tenant is still decoded and kept (its dedupe key is whole), and counted.
func TestMisroutedRecordCounted(t *testing.T) {
	recs := benchEvents(3)
	recs[1].Key = []byte("someone-else")
	d := decodeRecords(recs)
	if len(d.usage) != 3 || len(d.rejects) != 0 {
		t.Fatalf("%d usage rows and %d rejects, want 3 and 0", len(d.usage), len(d.rejects))
	}
	if d.misrouted != 1 || d.first.offset != 1 {
		t.Fatalf("misrouted %d, first at offset %d; want 1 at offset 1", d.misrouted, d.first.offset)
	}
}

// TestDecodeHalves: a batch of 2,000 records or more is decoded in two
// halves at once (Sink.decode); its rows, other events, rejects and dead
// letters equal one pass's over the same records, in the same order. And
// decoding the next batch, with the interners the sink keeps, while this
// one is written leaves this one's rows as they were.
func TestDecodeHalves(t *testing.T) {
	s, err := New(testConfig(t, []string{"127.0.0.1:1"}, "127.0.0.1:1", "x"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 9, 30, 0, 0, 0, 0, time.UTC)
	records := func(seed uint64, n int) []*kgo.Record {
		w := genWorkload(seed, n)
		for i, r := range w.records {
			r.Partition, r.Offset = int32(i%testPartitions), int64(i)
		}
		return w.records
	}
	// Rows with their own copies of the pieces (which point into a
	// batch-wide slice).
	clone := func(rows []eventRow) []eventRow {
		out := slices.Clone(rows)
		for i := range out {
			out[i].split.Hours = slices.Clone(out[i].split.Hours)
			out[i].split.Days = slices.Clone(out[i].split.Days)
		}
		return out
	}
	for _, n := range []int{1999, 2000, 2001, 5001} {
		recs := records(uint64(n), n)
		one := decoded{in: model.NewInterner()}
		for _, r := range recs {
			if r.Topic == s.cfg.DeadLetterTopic {
				one.decodeDeadLetter(r, now)
			} else {
				one.decodeUsage(r, now)
			}
		}
		d := s.decode(recs, now)
		if len(d.usage) == 0 || len(d.rejects) == 0 || len(d.other) == 0 {
			t.Fatalf("n=%d: the workload lacks a kind of record: %d rows, %d rejects, %d other", n, len(d.usage), len(d.rejects), len(d.other))
		}
		if !reflect.DeepEqual(clone(d.usage), clone(one.usage)) || !reflect.DeepEqual(d.other, one.other) ||
			!reflect.DeepEqual(d.rejects, one.rejects) || !reflect.DeepEqual(d.deadLetters, one.deadLetters) {
			t.Fatalf("n=%d: two halves decoded %d rows, %d other, %d rejects, %d dead letters; one pass %d, %d, %d, %d",
				n, len(d.usage), len(d.other), len(d.rejects), len(d.deadLetters), len(one.usage), len(one.other), len(one.rejects), len(one.deadLetters))
		}
		d.usage = sortRows(d.usage)
		written := clone(d.usage)
		next := s.decode(records(uint64(n)+100, n), now)
		sortRows(next.usage)
		if !reflect.DeepEqual(written, clone(d.usage)) {
			t.Fatalf("n=%d: decoding the next batch changed this one's rows", n)
		}
	}
}
