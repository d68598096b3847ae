package query

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestSlotsBoundQueries: with every slot taken a tenant query waits, and
// gives up at its deadline; a slot comes back when the query's rows are
// closed, whether it succeeded or failed.
func TestSlotsBoundQueries(t *testing.T) {
	db := chtest.NewDB(t, true)
	c := NewClickHouse(db.Conn)
	c.SetConcurrency(1)
	day := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	q := UsageQuery{Tenant: "1", Bounds: []time.Time{day, day.AddDate(0, 0, 1)}, Days: []time.Time{day, day.AddDate(0, 0, 1)},
		Kinds: []string{"storage", "license"}}

	c.slots <- struct{}{} // someone else's query
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := c.Usage(ctx, q)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Usage with no free slot: %v, want the deadline", err)
	}
	<-c.slots

	for range 3 { // more queries than slots, one after another
		if _, err := c.Usage(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Licences(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Events(context.Background(), EventsQuery{Tenant: "1", From: day, To: day.AddDate(0, 0, 1), Limit: 10}); err != nil {
		t.Fatal(err)
	}
	// A failing query gives its slot back too.
	c.conn.Exec(context.Background(), "DROP TABLE usage_daily")
	if _, err := c.Usage(context.Background(), q); err == nil {
		t.Fatal("Usage without its table succeeded")
	}
	if n := len(c.slots); n != 0 {
		t.Fatalf("%d slots still taken after every query ended", n)
	}
	c.SetConcurrency(0)
	if c.slots != nil {
		t.Fatal("SetConcurrency(0) left a bound")
	}
}
