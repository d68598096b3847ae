package sink

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
			produce(t, brokers, w.records) // full replay
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
