package sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestSinkDuplicatesAndReplay produces events with duplicates, invalid
// records and ingest dead letters, then the whole stream again (a full
// replay), and checks every rollup against sums computed from the distinct
// events: with the dedupe key cache, with a cache so small that it drops
// and reloads tenants all the time, and without it.
func TestSinkDuplicatesAndReplay(t *testing.T) {
	for _, c := range []struct {
		name string
		keys int
	}{{"cache", 0}, {"tiny cache", 50}, {"no cache", -1}} {
		t.Run(c.name, func(t *testing.T) {
			db := chtest.NewDB(t, false)
			cl := newCluster(t)
			brokers := cl.ListenAddrs()
			w := genWorkload(1, 6000)
			produce(t, brokers, w.records)
			cfg := testConfig(t, brokers, db.Addr, db.Name)
			cfg.KeyCacheKeys = c.keys
			s, stop := runSink(t, cfg)
			waitDrained(t, db.Conn, brokers, time.Minute)
			verify(t, db.Conn, w)
			produce(t, brokers, w.again(w.records)) // full replay
			waitDrained(t, db.Conn, brokers, time.Minute)
			stop()
			verify(t, db.Conn, w)
			hits, loads := testutil.ToFloat64(s.m.cacheHits), testutil.ToFloat64(s.m.cacheLoads)
			tenants := map[string]bool{}
			for _, e := range w.events {
				tenants[e.TenantID] = true
			}
			if c.keys > 0 && loads <= float64(len(tenants)) {
				// Fifty fingerprints hold no two tenants: each one's
				// return is a reload.
				t.Errorf("tiny cache: %v tenant loads for %d tenants, want it dropping and reloading", loads, len(tenants))
			}
			if c.keys == 0 && loads < float64(len(tenants)) {
				t.Errorf("%v tenant loads, want at least one for each of %d tenants", loads, len(tenants))
			}
			switch {
			case c.keys < 0 && hits != 0:
				t.Errorf("no cache, but %v cache hits", hits)
			case c.keys >= 0 && hits < float64(len(w.events)):
				// Every replayed event is known to the cache, so it is
				// looked up exactly (and found).
				t.Errorf("%v cache hits, want at least the %d distinct events replayed", hits, len(w.events))
			}
		})
	}
}

// TestSinkThroughRebuild: a migration that rebuilds both day rollups
// (REBUILD, as 0005 did) runs while the sink writes; the sink's inserts
// fail while a rollup has no name and are retried, and every rollup is
// exact when it is over.
func TestSinkThroughRebuild(t *testing.T) {
	ctx := context.Background()
	db, brokers, w, cfg := beforeRebuild(t, 5, 6000)
	cfg.BatchRows, cfg.BatchAge = 60, 10*time.Millisecond
	s, stop := runSink(t, cfg)
	var n uint64
	for n == 0 {
		if err := db.Conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	// Hold each rollup without a name a little, so that flushes meet it.
	applied, err := schemas.Migrator{Extra: rebuildDays, OnRenameAway: func() { time.Sleep(300 * time.Millisecond) }}.Apply(ctx, db.Conn)
	if err != nil || len(applied) != 1 || applied[0].Version != rebuildDays[0].Version {
		t.Fatalf("Apply while the sink writes: %d migrations, %v; want the rebuild", len(applied), err)
	}
	var after uint64
	if err := db.Conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&after); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, w)
	if got := chtest.QueryStrings(t, db.Conn, "SELECT extract(create_table_query, 'index_granularity = [0-9]+') FROM system.tables WHERE database = currentDatabase() AND name = 'usage_daily'"); got[0] != "index_granularity = 512" {
		t.Errorf("usage_daily after the rebuild: %q", got)
	}
	t.Logf("%d events before the rebuild, %d when it ended, %d distinct in all; %v failed writes retried",
		n, after, len(w.events), testutil.ToFloat64(s.m.errors))
	if testutil.ToFloat64(s.m.errors) == 0 {
		t.Errorf("no write failed: the sink never met the rebuild")
	}
	if after >= uint64(len(w.events)) {
		t.Errorf("the sink had written everything (%d events) before the rebuild ended: nothing written through it", after)
	}
}

// TestSinkFinishesStoppedRebuild: a rebuild stopped after renaming
// usage_daily away (its process killed, its lock released by hand) is
// finished by the next run of the migrations, and the rollups stay exact
// through a full replay afterwards.
func TestSinkFinishesStoppedRebuild(t *testing.T) {
	ctx := context.Background()
	db, brokers, w, cfg := beforeRebuild(t, 9, 3000)
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	if err := db.Conn.Exec(ctx, "RENAME TABLE usage_daily TO usage_daily_rebuild_old"); err != nil {
		t.Fatal(err)
	}
	if _, err := (schemas.Migrator{Extra: rebuildDays}).Apply(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	_, stop = runSink(t, cfg)
	produce(t, brokers, w.again(w.records)) // a full replay: changes no event
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, w)
	got := chtest.QueryStrings(t, db.Conn, "SELECT concat(name, ' ', extract(create_table_query, 'index_granularity = [0-9]+')) FROM system.tables"+
		" WHERE database = currentDatabase() AND (name LIKE 'usage_daily%' OR name LIKE 'license_daily%') AND engine != 'MaterializedView' ORDER BY name")
	if strings.Join(got, "|") != "license_daily index_granularity = 512|usage_daily index_granularity = 512" {
		t.Errorf("after the migrations: %q, want both day rollups rebuilt and nothing left over", got)
	}
}

// rebuildDays is a migration after the embedded ones that rebuilds both
// day rollups with another index granularity: what 0005 did, on the
// schema the sink runs on now.
var rebuildDays = []schemas.Migration{{Version: 9001, Name: "9001_test_rebuild_days.sql", SQL: `
REBUILD TABLE usage_daily WITH
CREATE TABLE usage_daily (
    day Date, tenant_id String, kind String, region String, data_center String, resource_id String, server String,
    quantity Decimal128(0), byte_seconds Decimal128(0), events Int64, pieces Int64
)
ENGINE = SummingMergeTree((quantity, byte_seconds, events, pieces))
PARTITION BY toYear(day)
ORDER BY (tenant_id, day, kind, region, data_center, resource_id, server)
SETTINGS index_granularity = 512;

REBUILD TABLE license_daily WITH
CREATE TABLE license_daily (day Date, tenant_id String, server String, external UInt8, pieces Int64)
ENGINE = SummingMergeTree(pieces)
PARTITION BY toYear(day)
ORDER BY (tenant_id, day, server, external)
SETTINGS index_granularity = 512;
`}}

// beforeRebuild is a migrated database, a kfake cluster holding a workload
// of n records, and a sink configuration for them.
func beforeRebuild(t *testing.T, seed uint64, n int) (*chtest.DB, []string, *workload, Config) {
	t.Helper()
	db := chtest.NewDB(t, true)
	brokers := newCluster(t).ListenAddrs()
	w := genWorkload(seed, n)
	produce(t, brokers, w.records)
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	return db, brokers, w, cfg
}
