package query

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestBatchedQueriesAnswerAsAlone: tenant queries that wait for a slot are
// answered by fewer ClickHouse queries, and each gets exactly what it gets
// alone: different tenants, months and zones, the same tenant-month twice,
// a tenant with no rows, usage by the day and by the month, invoices.
func TestBatchedQueriesAnswerAsAlone(t *testing.T) {
	db := chtest.NewDB(t, true)
	var events []model.Event
	for i, tenant := range []string{"1", "2", "3"} {
		events = append(events, genEvents(uint64(60+i), tenant, 300)...)
	}
	loadThroughSink(t, db, events)
	rc := mustCard(t, flat+`
  - effective: 2026-10-16T12:00:00Z
    storage: "0.2"
`)

	// Each ask is one request's store calls, printed in a canonical order.
	type ask struct {
		name string
		run  func(*ClickHouse) (string, error)
	}
	var asks []ask
	for _, tenant := range []string{"1", "2", "3", "9", "1"} {
		for _, z := range []string{"UTC", "America/New_York"} {
			loc := zone(t, z)
			for _, month := range []time.Month{9, 10, 11} {
				from := time.Date(2026, month, 1, 0, 0, 0, 0, loc)
				to := from.AddDate(0, 1, 0)
				days, err := splitBuckets(from, to, loc, Day)
				if err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("tenant %s %s %s", tenant, z, month)
				daily := UsageQuery{Tenant: tenant, Bounds: days, Days: days, Kinds: UsageKinds}
				monthly := UsageQuery{Tenant: tenant, Bounds: []time.Time{from, to}, Days: days, Kinds: UsageKinds, GroupBy: []string{"region"}}
				plan, err := rc.Plan(tenant, Period{From: from, To: to, Loc: loc})
				if err != nil {
					t.Fatal(err)
				}
				asks = append(asks,
					ask{name + " daily usage", func(c *ClickHouse) (string, error) {
						sums, err := c.Usage(context.Background(), daily)
						return sumsText(sums), err
					}},
					ask{name + " monthly usage by region", func(c *ClickHouse) (string, error) {
						sums, err := c.Usage(context.Background(), monthly)
						return sumsText(sums), err
					}},
					ask{name + " invoice readings", func(c *ClickHouse) (string, error) {
						r, err := c.Readings(context.Background(), plan)
						return fmt.Sprintf("%v", r), err
					}})
			}
		}
	}

	// Ranges of one tenant that overlap without being equal, by the day and
	// by the hour (New York days on the hourly rollup), grouped.
	d := func(m time.Month, day int) time.Time { return time.Date(2026, m, day, 0, 0, 0, 0, time.UTC) }
	ny := zone(t, "America/New_York")
	nyDays := func(from, to time.Time) []time.Time {
		b, err := splitBuckets(from, to, ny, Day)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, q := range []UsageQuery{
		{Tenant: "1", Bounds: []time.Time{d(9, 28), d(10, 10), d(10, 20)}, Kinds: []string{"bandwidthIn"}, GroupBy: []string{"server"}},
		{Tenant: "1", Bounds: []time.Time{d(10, 15), d(11, 3)}, Kinds: []string{"storage", "bandwidthOut"}, GroupBy: []string{"server"}},
		{Tenant: "1", Bounds: []time.Time{d(10, 1), d(11, 1)}, Kinds: []string{"bandwidthIn", "storage"}, GroupBy: []string{"server"}},
		{Tenant: "1", Bounds: nyDays(time.Date(2026, 10, 1, 0, 0, 0, 0, ny), time.Date(2026, 10, 15, 0, 0, 0, 0, ny)), Kinds: []string{"storage"}},
		{Tenant: "1", Bounds: nyDays(time.Date(2026, 10, 10, 0, 0, 0, 0, ny), time.Date(2026, 11, 2, 0, 0, 0, 0, ny)), Kinds: []string{"storage"}},
		// Ten buckets, two of their bounds inside UTC days: whole days from
		// the daily rollup, the two cut ones from the hourly rollup by the
		// hour, which batches with the New York days above (their other
		// days must not count twice).
		{Tenant: "1", Bounds: []time.Time{d(10, 1), d(10, 2).Add(12 * time.Hour), d(10, 5), d(10, 8), d(10, 11), d(10, 14),
			d(10, 17), d(10, 20), d(10, 23), d(10, 26), d(10, 29).Add(6 * time.Hour)}, Kinds: []string{"storage"}},
	} {
		asks = append(asks, ask{fmt.Sprintf("overlapping range %d", i), func(c *ClickHouse) (string, error) {
			sums, err := c.Usage(context.Background(), q)
			return sumsText(sums), err
		}})
	}

	alone := NewClickHouse(db.Conn)
	want := make([]string, len(asks))
	nonEmpty := 0
	for i, a := range asks {
		got, err := a.run(alone)
		if err != nil {
			t.Fatalf("%s alone: %v", a.name, err)
		}
		want[i] = got
		if strings.Contains(a.name, "daily") && !strings.HasPrefix(a.name, "tenant 9") && got != "" {
			nonEmpty++
		}
	}
	if nonEmpty == 0 {
		t.Fatal("every answer is empty: the test compares nothing")
	}
	runsAlone := alone.runs.Load()

	c := NewClickHouse(db.Conn)
	c.SetConcurrency(1)
	c.maxBatch = len(asks) // one batch per shape, whatever order the goroutines start in
	c.slots <- struct{}{}  // a query of someone else's holds the only slot
	got := make([]string, len(asks))
	errs := make([]error, len(asks))
	var wg sync.WaitGroup
	for i, a := range asks {
		wg.Go(func() { got[i], errs[i] = a.run(c) })
	}
	// Every tenant query (two per invoice) waits in a batch, then the slot
	// is freed.
	tenantQueries := int64(alone.tenantQueries.Load())
	for deadline := time.Now().Add(10 * time.Second); c.waitingQueries.Load() < tenantQueries; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tenant queries waiting", c.waitingQueries.Load(), tenantQueries)
		}
		time.Sleep(time.Millisecond)
	}
	<-c.slots
	wg.Wait()
	for i, a := range asks {
		if errs[i] != nil {
			t.Errorf("%s batched: %v", a.name, errs[i])
		} else if got[i] != want[i] {
			t.Errorf("%s batched:\n got %s\nwant %s", a.name, got[i], want[i])
		}
	}
	if runs := c.runs.Load(); runs*4 > runsAlone {
		t.Errorf("batched: %d ClickHouse queries for %d tenant queries (alone: %d)", runs, c.tenantQueries.Load(), runsAlone)
	}
	if n := len(c.slots); n != 0 || c.waitingQueries.Load() != 0 {
		t.Errorf("after the batches: %d slots taken, %d queries waiting", n, c.waitingQueries.Load())
	}
}

// TestBatchCallersGiveUp: a batch whose callers all gave up leaves the
// queue without waiting for a slot, and a running one is cancelled, which
// gives its slot back.
func TestBatchCallersGiveUp(t *testing.T) {
	db := chtest.NewDB(t, true)
	c := NewClickHouse(db.Conn)
	c.SetConcurrency(1)
	day := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	q := UsageQuery{Tenant: "1", Bounds: []time.Time{day, day.AddDate(0, 0, 1)}, Kinds: []string{"storage"}}

	// Waiting: the caller cancels while the slot is someone else's.
	c.slots <- struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Usage(ctx, q)
		errc <- err
	}()
	var b *batch
	for b == nil {
		c.mu.Lock()
		for _, w := range c.waiting {
			b = w
		}
		c.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Usage: %v", err)
	}
	select {
	case <-b.done: // left without the slot, which is still held here
	case <-time.After(10 * time.Second):
		t.Fatal("an abandoned batch still waits for a slot")
	}
	if n := c.waitingQueries.Load(); n != 0 || len(c.waiting) != 0 {
		t.Fatalf("after the abandoned batch: %d queries, %d batches waiting", n, len(c.waiting))
	}
	// A context already over: the caller gets the context's error, never
	// an empty answer without one. (One that ends while the query joins a
	// batch abandons the batch at once; ask then returns the context's
	// error whichever of the two the select sees first.)
	over, end := context.WithCancel(context.Background())
	end()
	for range 200 {
		if sums, err := c.Usage(over, q); !errors.Is(err, context.Canceled) {
			t.Fatalf("Usage with a context already over: %d sums, error %v", len(sums), err)
		}
	}
	<-c.slots

	// Running: a query that takes three seconds in ClickHouse (a row to
	// sleep on), whose only caller cancels once it runs.
	if err := db.Conn.Exec(context.Background(), "INSERT INTO usage_daily (day, tenant_id, kind, region, data_center, resource_id, server, "+
		"quantity, byte_seconds, events, pieces) SELECT toDate('2026-10-01'), '1', 'storage', 'DFW', 'DFW1', 'agent-1', '1', "+
		"toDecimal128(1, 0), toDecimal128(1, 0), 1, 1"); err != nil {
		t.Fatal(err)
	}
	type row struct{}
	sh := &shape[row]{sel: "max(sleep(3))", from: "usage_daily", group: "kind",
		scan: func(rows driver.Rows) (string, row, error) {
			var tenant string
			var slept uint8
			err := rows.Scan(&tenant, &slept)
			return tenant, row{}, err
		}}
	c.slots <- struct{}{}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		errc <- ask(ctx, c, sh, &tenantQuery[row]{tenant: "1", cond: "1", take: func(row) (bool, error) { return true, nil }})
	}()
	for c.waitingQueries.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	<-c.slots // the batch takes the slot and runs
	for c.runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the query is in ClickHouse
	cancelled := time.Now()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ask: %v", err)
	}
	for len(c.slots) != 0 {
		time.Sleep(time.Millisecond)
	}
	// Not a speed check: uncancelled, the slot would come back when the
	// query's three seconds are over.
	if held := time.Since(cancelled); held > 2*time.Second {
		t.Fatalf("the slot came back %v after the only caller cancelled: the query was not cancelled", held)
	}
}

// sumsText prints usage sums in a canonical order.
func sumsText(sums []UsageSum) string {
	var lines []string
	for _, s := range sums {
		lines = append(lines, fmt.Sprintf("%d %s %v q=%s bs=%s ev=%d srv=%d", s.Bucket, s.Kind, s.Group, s.Quantity, s.ByteSeconds, s.Events, s.Servers))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestDecimalBytes: sums read through reinterpretAsString come back exact,
// from zero to the largest Decimal128(0), as ClickHouse writes them.
func TestDecimalBytes(t *testing.T) {
	db := chtest.NewDB(t, false)
	for _, v := range []string{"0", "1", "255", "256", "18446744073709551615", "18446744073709551616",
		"36893488147419103231", "4058686227531600", "99999999999999999999999999999999999999"} {
		var le string
		if err := db.Conn.QueryRow(context.Background(), "SELECT reinterpretAsString(sum(toDecimal128(?, 0)))", v).Scan(&le); err != nil {
			t.Fatal(err)
		}
		got, err := decimalBytes(le)
		if err != nil || got.String() != v {
			t.Errorf("%s: got %v, %v (bytes %x)", v, got, err, le)
		}
	}
	for _, bad := range []string{strings.Repeat("\xff", 16), strings.Repeat("\x01", 17)} {
		if v, err := decimalBytes(bad); err == nil {
			t.Errorf("%x read as %v", bad, v)
		}
	}
}
