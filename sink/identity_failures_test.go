package sink

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// rowsString is idRows as sorted lines, to compare.
func rowsString(rs []idRow) []string {
	var out []string
	for _, r := range rs {
		pub := int64(0)
		if !r.published.IsZero() {
			pub = r.published.Unix()
		}
		out = append(out, fmt.Sprintf("%s/%s/%s role=%d ev=%s entry=%s ref=%s pub=%d", r.tenant, r.kind, r.id, r.role, r.eventID, r.entryID, r.ref, pub))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestForestOnClickHouse: the forest query returns every row a
// tree can hold (roots that never arrived, corrections of corrections,
// originals named only by a correction), none of other tenants or kinds,
// exactly as memIDs does for the same events.
func TestForestOnClickHouse(t *testing.T) {
	db := chtest.NewDB(t, true)
	brokers := newCluster(t).ListenAddrs()
	inKind := func(e model.Event, k model.Kind) model.Event {
		e.Kind, e.ProductNamespace = k, model.NSCloudBackup+string(k)
		e.EntryID += "-" + string(k)
		return e
	}
	evs := []model.Event{
		cufEvent("7401", "o", "", 10, 0),     // an original
		cufEvent("7401", "c1", "o", 9, 1),    // its correction
		cufEvent("7401", "c2", "c1", 8, 2),   // a correction of the correction
		cufEvent("7401", "c3", "c2", 7, 3),   // and another
		cufEvent("7401", "x", "never", 6, 4), // root that never arrived
		cufEvent("7401", "y", "never", 5, 5), // its sibling
		cufEvent("7401", "z", "", 4, 0),      // a plain event: in no tree
		cufEvent("7401", "p", "", 3, 0),      // plain here, named in another kind only
		inKind(cufEvent("7401", "q", "p", 2, 1), model.KindBandwidthIn),
		cufEvent("7402", "w", "o", 1, 1), // another tenant names o
	}
	var recs []*kgo.Record
	for _, e := range evs {
		recs = append(recs, recordOf(e))
	}
	produce(t, brokers, recs)
	sinkOnce(t, brokers, db)
	st, err := newStore(context.Background(), db.Conn)
	if err != nil {
		t.Fatal(err)
	}
	m := newMemIDs()
	for _, e := range evs {
		m.events[rowKey{e.TenantID, e.Kind, e.EventID, e.EntryID}] = e
	}
	for _, gs := range [][]group{
		{{"7401", model.KindBandwidthOut}},
		{{"7401", model.KindBandwidthIn}},
		{{"7401", model.KindBandwidthOut}, {"7402", model.KindBandwidthOut}},
	} {
		got, err := st.forest(context.Background(), gs)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := m.forest(context.Background(), gs)
		g, w := rowsString(got), rowsString(want)
		if !slices.Equal(g, w) {
			t.Errorf("forest %v:\n got  %q\n want %q", gs, g, w)
		}
	}
}

// waitRows waits until q (a count) answers more than 0.
func waitRows(t *testing.T, db *chtest.DB, q string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for chtest.QueryStrings(t, db.Conn, q)[0] == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still 0", q)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refuseIDs makes every insert into usage_ids of tenant fail before the
// table is written, as TOO_MANY_PARTS on usage_ids would (a column whose
// default throws; a view of usage_ids would fail only after its table was
// written).
func refuseIDs(t *testing.T, db *chtest.DB, tenant string) (undo func()) {
	t.Helper()
	ctx := context.Background()
	if err := db.Conn.Exec(ctx, "ALTER TABLE usage_ids ADD COLUMN refuse UInt8 DEFAULT throwIf(tenant_id = '"+tenant+"')"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := db.Conn.Exec(ctx, "ALTER TABLE usage_ids DROP COLUMN refuse"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailedInsertAbandonedIsNotInsertedTwice: usage_ids refuses inserts
// for longer than FlushTimeout (TOO_MANY_PARTS on it): the insert into
// usage_events fails in usage_ids' view, after the table and the rollups'
// views were written, and the batch is abandoned and read again into a new
// batch, which knows nothing of the attempts before. The partition is
// dirty, so its batches are reconciled (the event's usage_ids rows written
// from usage_events), and the event counts once.
func TestFailedInsertAbandonedIsNotInsertedTwice(t *testing.T) {
	db := chtest.NewDB(t, true)
	undo := refuseIDs(t, db, "7403")
	brokers := newCluster(t).ListenAddrs()
	e := cufEvent("7403", "a", "", 666, 0)
	produce(t, brokers, []*kgo.Record{recordOf(e)})
	_, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	defer stop()
	time.Sleep(5 * time.Second) // past FlushTimeout (3 s): the batch is abandoned
	undo()
	// A record of another tenant: the loop rewinds an abandoned batch only
	// when it has another to write (noticed: without one it waits).
	produce(t, brokers, []*kgo.Record{recordOf(cufEvent("7499", "kick", "", 1, 0))})
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	for q, want := range map[string]string{
		"SELECT toString(count()) FROM usage_events WHERE tenant_id = '7403'":       "1",
		"SELECT toString(sum(quantity)) FROM usage_daily WHERE tenant_id = '7403'":  "666",
		"SELECT toString(sum(quantity)) FROM usage_hourly WHERE tenant_id = '7403'": "666",
	} {
		if got := chtest.QueryStrings(t, db.Conn, q); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, want %s", q, got, want)
		}
	}
}

// TestCorrectionFailingInAViewCountsOnce: a view that fails after
// usage_ids_mv and before usage_ids_ref_mv (views run in the order of their
// names) leaves a correction b in usage_events with its own usage_ids row
// but not the row that links it under a; usage_ids then refuses inserts
// until the batch is abandoned. The batch read again is reconciled: b's link
// is written from usage_events, the tree of a holds b, and b alone counts.
func TestCorrectionFailingInAViewCountsOnce(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	brokers := newCluster(t).ListenAddrs()
	a := cufEvent("7404", "a", "", 100, 0)
	produce(t, brokers, []*kgo.Record{recordOf(a)})
	sinkOnce(t, brokers, db)
	for _, q := range []string{
		"CREATE TABLE usage_ids_mz_fail (x UInt64) ENGINE = Memory",
		"CREATE MATERIALIZED VIEW usage_ids_mz_fail_mv TO usage_ids_mz_fail AS SELECT quantity + throwIf(quantity = 42) AS x FROM usage_events",
	} {
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	b := cufEvent("7404", "b", "a", 42, 10) // corrects a
	produce(t, brokers, []*kgo.Record{recordOf(b)})
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	cfg.BackoffMin, cfg.BackoffMax = time.Second, time.Second
	_, stop := runSink(t, cfg)
	defer stop()
	waitRows(t, db, "SELECT toString(count()) FROM usage_events WHERE event_id = 'b'")
	undo := refuseIDs(t, db, "7404") // before the retry's repair
	time.Sleep(5 * time.Second)      // past FlushTimeout: abandoned
	undo()
	if err := db.Conn.Exec(ctx, "DROP TABLE usage_ids_mz_fail_mv"); err != nil {
		t.Fatal(err)
	}
	produce(t, brokers, []*kgo.Record{recordOf(cufEvent("7499", "kick", "", 1, 0))})
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	for q, want := range map[string]string{
		"SELECT toString(count()) FROM usage_events WHERE tenant_id = '7404'":                         "2",
		"SELECT toString(sum(quantity)) FROM usage_daily WHERE tenant_id = '7404'":                    "42",
		"SELECT toString(sum(quantity)) FROM usage_hourly WHERE tenant_id = '7404'":                   "42",
		"SELECT toString(sum(quantity)) FROM v_usage_events WHERE counted = 1 AND tenant_id = '7404'": "42",
	} {
		if got := chtest.QueryStrings(t, db.Conn, q); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, want %s", q, got, want)
		}
	}
}

// TestAbandonedBatchIsReadAgainWithoutNewRecords: a batch abandoned
// after FlushTimeout is rewound only when the loop has a next batch to
// write (finish is called from there, or on a rebalance): on a quiet
// partition its records wait, unbilled and with Kafka lag 0, until some
// other record arrives.
func TestAbandonedBatchIsReadAgainWithoutNewRecords(t *testing.T) {
	db := chtest.NewDB(t, true)
	undo := refuseIDs(t, db, "7405")
	brokers := newCluster(t).ListenAddrs()
	produce(t, brokers, []*kgo.Record{recordOf(cufEvent("7405", "a", "", 5, 0))})
	_, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	defer stop()
	time.Sleep(5 * time.Second) // past FlushTimeout (3 s): abandoned
	undo()
	waitDrained(t, db.Conn, brokers, 20*time.Second)
}
