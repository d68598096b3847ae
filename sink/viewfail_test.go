package sink

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestInsertFailingInAViewIsNotInsertedTwice: ClickHouse writes an INSERT's
// block into the table, then into its views one by one, and a view that
// fails (TOO_MANY_PARTS or MEMORY_LIMIT_EXCEEDED on a view's target, here
// a view made to throw) returns an exception with the table and the views
// before it already written; usage_ids, the sink's index, is such a view.
// The retry reconciles the batch (the event's usage_ids rows written from
// usage_events) and inserts nothing again.
func TestInsertFailingInAViewIsNotInsertedTwice(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	// Views of a table run in the order of their names on 18.16: this one
	// runs after usage_daily_mv and usage_hourly_mv, before usage_ids_mv.
	for _, q := range []string{
		"CREATE TABLE usage_hz_fail (x UInt64) ENGINE = Memory",
		"CREATE MATERIALIZED VIEW usage_hz_fail_mv TO usage_hz_fail AS SELECT quantity + throwIf(quantity = 666) AS x FROM usage_events",
	} {
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	brokers := newCluster(t).ListenAddrs()
	e := cufEvent("7301", "a", "", 666, 0)
	produce(t, brokers, []*kgo.Record{recordOf(e)})
	_, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	defer stop()
	// Wait for a failed attempt (its row is in usage_events), then let the
	// view pass, as a merge backlog clears.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if rows := chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM usage_events"); rows[0] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no attempt reached usage_events")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if err := db.Conn.Exec(ctx, "DROP TABLE usage_hz_fail_mv"); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	for q, want := range map[string]string{
		"SELECT toString(count()) FROM usage_events":                     "1",
		"SELECT toString(sum(quantity)) FROM usage_daily":                "666",
		"SELECT toString(sum(quantity)) FROM usage_hourly":               "666",
		"SELECT toString(count()) FROM v_usage_events WHERE counted = 1": "1",
	} {
		if got := chtest.QueryStrings(t, db.Conn, q); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, want %s", q, got, want)
		}
	}
}
