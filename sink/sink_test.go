package sink

import (
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestSinkDuplicatesAndReplay produces events with duplicates, invalid
// records and ingest dead letters, then the whole stream again (a full
// replay), and checks every rollup against sums computed from the distinct
// events.
func TestSinkDuplicatesAndReplay(t *testing.T) {
	db := chtest.NewDB(t, false)
	c := newCluster(t)
	brokers := c.ListenAddrs()
	w := genWorkload(1, 6000)
	produce(t, brokers, w.records)
	s, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	waitDrained(t, db.Conn, brokers, time.Minute)
	verify(t, db.Conn, w)
	produce(t, brokers, w.records) // full replay
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	verify(t, db.Conn, w)
	_ = s
}
