package schemas_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// insertEvents writes n usage events (a third each of license, storage and
// bandwidthIn, over 7 tenants, 40 days and 5 servers) numbered from batch,
// through the views, as the sink would.
func insertEvents(ctx context.Context, conn driver.Conn, batch, n int) error {
	return conn.Exec(ctx, fmt.Sprintf(`INSERT INTO usage_events (tenant_id, entry_id, kind, server, external, time, quantity,
		h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds)
		SELECT toString(number %% 7), concat('e%d-', toString(number)), ['license', 'storage', 'bandwidthIn'][number %% 3 + 1],
		toString(number %% 5), CAST(number %% 11 = 0 AS Nullable(UInt8)), toDateTime('2026-03-01 00:00:00', 'UTC') + (number * 7919 + %d) %% (40 * 86400) AS at,
		number + 1, [at], [toUInt64(number + 1)], [toDecimal128(number * 3, 0)], [toDate(at)], [toUInt64(number + 1)], [toDecimal128(number * 3, 0)]
		FROM numbers(%d)`, batch, batch, n))
}

const (
	rollupSums = `SELECT concat(tenant_id, ' ', toString(day), ' ', kind, ' ', toString(sum(quantity)), ' ', toString(sum(byte_seconds)), ' ', toString(sum(events)), ' ', toString(sum(pieces)))
		FROM usage_daily GROUP BY tenant_id, day, kind ORDER BY tenant_id, day, kind`
	eventSums = `SELECT concat(tenant_id, ' ', toString(d), ' ', kind, ' ', toString(sum(toDecimal128(q, 0))), ' ', toString(sum(bs)), ' ', toString(count()), ' ', toString(count()))
		FROM usage_events ARRAY JOIN d_start AS d, d_quantity AS q, d_byte_seconds AS bs GROUP BY tenant_id, d, kind ORDER BY tenant_id, d, kind`
	rollupFacts = `SELECT concat(tenant_id, ' ', toString(day), ' ', server, ' ', toString(max(external))) FROM license_daily GROUP BY tenant_id, day, server ORDER BY tenant_id, day, server`
	eventFacts  = `SELECT concat(tenant_id, ' ', toString(d), ' ', server, ' ', toString(max(ifNull(external, toUInt8(0))))) FROM usage_events ARRAY JOIN d_start AS d
		WHERE kind = 'license' GROUP BY tenant_id, d, server ORDER BY tenant_id, d, server`
	granularity = `SELECT concat(name, ' ', extract(create_table_query, 'index_granularity = [0-9]+')) FROM system.tables
		WHERE database = currentDatabase() AND name IN ('usage_daily', 'license_daily') ORDER BY name`
)

// TestRebuildWhileInserting: migration 0005 rebuilds the day rollups while
// events keep arriving, retried on failure as the sink does; afterwards
// every rollup sum and licence fact equals what the events say, none twice
// and none missing.
func TestRebuildWhileInserting(t *testing.T) {
	conn := chtest.NewDB(t, false).Conn
	ctx := context.Background()
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (schemas.Migrator{UpTo: 4}).Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 20; b++ {
		if err := insertEvents(ctx, conn, b, 5000); err != nil {
			t.Fatal(err)
		}
	}
	var batches, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		for b := 20; ; b++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			for {
				err := insertEvents(ctx, conn, b, 2000)
				if err == nil {
					break
				}
				var ex *clickhouse.Exception
				if !errors.As(err, &ex) || ex.Code != 60 { // the rollup is being rebuilt
					done <- err
					return
				}
				failed.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
			batches.Add(1)
		}
	}()
	for batches.Load() < 3 {
		time.Sleep(10 * time.Millisecond)
	}
	// Hold each rollup without a name a little, so that inserts meet it.
	applied, err := schemas.Migrator{OnRenameAway: func() { time.Sleep(200 * time.Millisecond) }}.Apply(ctx, conn)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	during := batches.Load()
	for batches.Load() < during+3 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("inserting: %v", err)
	}
	if len(applied) != len(ms)-4 {
		t.Fatalf("Apply ran %d migrations, want %d", len(applied), len(ms)-4)
	}
	t.Logf("%d batches inserted while rebuilding and after, %d attempts failed during the rebuild", batches.Load(), failed.Load())
	if got := chtest.QueryStrings(t, conn, granularity); strings.Join(got, "|") != "license_daily index_granularity = 256|usage_daily index_granularity = 256" {
		t.Errorf("after 0005: %q", got)
	}
	sums, want := chtest.QueryStrings(t, conn, rollupSums), chtest.QueryStrings(t, conn, eventSums)
	if len(want) < 500 {
		t.Fatalf("only %d sums to compare", len(want))
	}
	if diff := firstDiff(sums, want); diff != "" {
		t.Errorf("usage_daily against usage_events: %s", diff)
	}
	if diff := firstDiff(chtest.QueryStrings(t, conn, rollupFacts), chtest.QueryStrings(t, conn, eventFacts)); diff != "" {
		t.Errorf("license_daily against usage_events: %s", diff)
	}
	if failed.Load() == 0 {
		t.Errorf("no insert met the rebuild: the test did not test it")
	}
	if got := chtest.QueryStrings(t, conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND (name LIKE '%rebuild%' OR name = '"+schemas.LockTable+"')"); len(got) != 0 {
		t.Errorf("tables left behind: %q", got)
	}
}

// TestRebuildFinishesStoppedRuns: a rebuild that stopped at any point is
// finished by the next one, with every row once; and a table already
// rebuilt is left alone.
func TestRebuildFinishesStoppedRuns(t *testing.T) {
	conn := chtest.NewDB(t, false).Conn
	ctx := context.Background()
	create := "CREATE TABLE r (k UInt32, v UInt64) ENGINE = SummingMergeTree(v) ORDER BY k SETTINGS index_granularity = 256"
	const before = "(k UInt32, v UInt64) ENGINE = SummingMergeTree(v) ORDER BY k" // 8192-row granules
	exec := func(q string) {
		t.Helper()
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// fill adds 1 to each of 100 keys, n times.
	fill := func(table string, n int) {
		t.Helper()
		exec(fmt.Sprintf("INSERT INTO %s (k, v) SELECT number %% 100, 1 FROM numbers(%d)", table, 100*n))
	}
	const sums = "SELECT concat(toString(k), ' ', toString(sum(v))) FROM r GROUP BY k ORDER BY k"
	check := func(state string, wantMoved bool, each int) {
		t.Helper()
		moved, err := schemas.Rebuild(ctx, conn, "r", create, nil)
		if err != nil {
			t.Fatalf("%s: rebuild: %v", state, err)
		}
		if moved != wantMoved {
			t.Errorf("%s: rebuild copied rows: %v, want %v", state, moved, wantMoved)
		}
		got := chtest.QueryStrings(t, conn, sums)
		if w := fmt.Sprintf("%d", each); len(got) != 100 || got[0] != "0 "+w || got[99] != "99 "+w {
			t.Errorf("%s: sums %q…, want 100 keys of %d", state, got[:min(3, len(got))], each)
		}
		if left := chtest.QueryStrings(t, conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'r_rebuild%'"); len(left) != 0 {
			t.Errorf("%s: left %q", state, left)
		}
		if g := chtest.QueryStrings(t, conn, "SELECT extract(create_table_query, 'index_granularity = [0-9]+') FROM system.tables WHERE database = currentDatabase() AND name = 'r'"); len(g) != 1 || g[0] != "index_granularity = 256" {
			t.Errorf("%s: r has %q", state, g)
		}
	}

	marker := func() { exec("CREATE TABLE r_rebuild_copied (copied UInt8) ENGINE = Memory") }

	// The plain case: a table of another granularity.
	exec("CREATE TABLE r " + before)
	fill("r", 10)
	check("8192 to 256", true, 10)

	// Rebuilt already: nothing moves (a copy would count nothing twice, but
	// it would cost the time and the 503s).
	check("rebuilt already", false, 10)

	// A run that renamed the new table and stopped before dropping the old:
	// its rows are in r already, whatever r's definition says.
	exec("CREATE TABLE r_rebuild_old " + before)
	fill("r_rebuild_old", 10)
	marker()
	check("stopped before dropping the old table", true, 10)

	// A run that copied and stopped before renaming the new table.
	exec("RENAME TABLE r TO r_rebuild_new")
	exec("CREATE TABLE r_rebuild_old " + before)
	fill("r_rebuild_old", 10)
	marker()
	check("stopped before renaming the new table", true, 10)

	// A run that renamed the table and stopped while copying.
	exec("RENAME TABLE r TO r_rebuild_old")
	exec(strings.Replace(create, "TABLE r ", "TABLE r_rebuild_new ", 1))
	fill("r_rebuild_new", 4)
	check("stopped while copying", true, 10)

	// The same, and then a release without the lock created r as it was
	// before (an earlier migration's CREATE … IF NOT EXISTS), and rows
	// arrived there: both are kept, none twice.
	exec("RENAME TABLE r TO r_rebuild_old")
	exec("CREATE TABLE r " + before)
	fill("r", 3)
	check("a table created since", true, 13)

	// Old tables are found by name, even with a gap in their numbers.
	exec("RENAME TABLE r TO r_rebuild_old_3")
	check("an old table numbered 3", true, 13)

	// A copy that fails (ClickHouse cannot cast r's UInt32 keys to the new k's FixedString)
	// puts the old table back as it was.
	bad := strings.Replace(create, "k UInt32", "k FixedString(1)", 1)
	if _, err := schemas.Rebuild(ctx, conn, "r", bad, nil); err == nil {
		t.Fatal("rebuild into a table whose k cannot hold r's: no error")
	}
	if got := chtest.QueryStrings(t, conn, sums); len(got) != 100 || got[0] != "0 13" {
		t.Errorf("after a failed copy: sums %q…, want r back with 100 keys of 13", got[:min(3, len(got))])
	}
	if left := chtest.QueryStrings(t, conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'r_rebuild_old%'"); len(left) != 0 {
		t.Errorf("after a failed copy: %q left", left)
	}

	// A MATERIALIZED column is computed, not copied.
	if _, err := schemas.Rebuild(ctx, conn, "r", strings.Replace(create, "v UInt64", "v UInt64, w UInt64 MATERIALIZED v * 2", 1), nil); err != nil {
		t.Fatalf("rebuild with a MATERIALIZED column: %v", err)
	}
	if _, err := schemas.Rebuild(ctx, conn, "r", strings.Replace(create, "v UInt64", "v UInt64, w UInt64 MATERIALIZED v * 3", 1), nil); err != nil {
		t.Fatalf("rebuild of a table with a MATERIALIZED column: %v", err)
	}
	if got := chtest.QueryStrings(t, conn, "SELECT toString(sum(w)) FROM r"); got[0] != "3900" {
		t.Errorf("MATERIALIZED w after two rebuilds: sum %s, want 3 x 1300", got[0])
	}

	// A column new in the table (0006's kafka_topic_id) takes its default in
	// the rows copied; the others keep their values.
	withU := strings.Replace(create, "v UInt64", "v UInt64, u String DEFAULT 'old'", 1)
	if _, err := schemas.Rebuild(ctx, conn, "r", withU, nil); err != nil {
		t.Fatalf("rebuild with a new column: %v", err)
	}
	if got := chtest.QueryStrings(t, conn, "SELECT concat(toString(uniqExact(k)), ' ', toString(sum(v)), ' ', toString(groupUniqArray(u))) FROM r"); got[0] != "100 1300 ['old']" {
		t.Errorf("after a rebuild with a new column: %q, want 100 keys, v summing to 1300, u 'old'", got[0])
	}
	// A rebuild that would drop u's data, or add a column without a
	// DEFAULT, fails and leaves r as it was.
	for _, bad := range []string{
		strings.Replace(create, "v UInt64", "v UInt64, w UInt64 MATERIALIZED v * 3", 1),
		strings.Replace(create, "v UInt64", "v UInt64, u String, z UInt8", 1),
	} {
		if _, err := schemas.Rebuild(ctx, conn, "r", bad, nil); err == nil {
			t.Errorf("rebuild into %q: no error", bad)
		}
		if got := chtest.QueryStrings(t, conn, "SELECT concat(toString(uniqExact(k)), ' ', toString(sum(v)), ' ', toString(groupUniqArray(u))) FROM r"); got[0] != "100 1300 ['old']" {
			t.Errorf("after the refused rebuild into %q: %q", bad, got[0])
		}
	}
	if _, err := schemas.Rebuild(ctx, conn, "r", strings.Replace(create, "v UInt64", "v UInt64, u String, w UInt64 MATERIALIZED v * 3", 1), nil); err != nil {
		t.Fatalf("rebuild keeping u: %v", err)
	}

	// A context that ends right after the rename (before the copy): the
	// table is put back as it was.
	cctx, cancel := context.WithCancel(ctx)
	_, err := schemas.Rebuild(cctx, conn, "r", strings.Replace(create, "256", "512", 1), cancel)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("rebuild cancelled after the rename: %v, want context.Canceled", err)
	}
	if got := chtest.QueryStrings(t, conn, "SELECT concat(extract(create_table_query, 'index_granularity = [0-9]+'), ' ', toString((SELECT sum(v) FROM r))) FROM system.tables WHERE database = currentDatabase() AND name = 'r'"); len(got) != 1 || got[0] != "index_granularity = 256 1300" {
		t.Errorf("after a cancel: r is %q, want it back as it was (256, 1300)", got)
	}
}

// TestApplyLock: while another process holds the lock, Apply waits and then
// says who holds it; two Apply at once both succeed, one after the other.
func TestApplyLock(t *testing.T) {
	conn := chtest.NewDB(t, false).Conn
	ctx := context.Background()
	short := schemas.Migrator{LockWait: 300 * time.Millisecond}
	// Another process of the same host name and process id (containers
	// that share a host name are all pid 1): not this process's lock.
	host, pid, _ := strings.Cut(schemas.Self, " pid ")
	pid, _, _ = strings.Cut(pid, " ")
	other := host + " pid " + pid + " 0123456789ab since 2026-01-01T00:00:00Z"
	if err := conn.Exec(ctx, "CREATE TABLE "+schemas.LockTable+" (holder String DEFAULT '"+other+"') ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	_, err := short.Apply(ctx, conn)
	if !errors.Is(err, schemas.ErrLocked) || !strings.Contains(err.Error(), other) {
		t.Fatalf("Apply under another's lock: %v, want ErrLocked naming %s", err, other)
	}
	if n := chtest.QueryStrings(t, conn, "SELECT toString(count()) FROM system.tables WHERE database = currentDatabase() AND name = 'usage_events'"); n[0] != "0" {
		t.Fatalf("Apply ran migrations without the lock")
	}
	if err := conn.Exec(ctx, "DROP TABLE "+schemas.LockTable); err != nil {
		t.Fatal(err)
	}
	// A lock of this process (a release that failed) is taken over, and
	// dropped by the next Apply even when nothing is pending.
	ownLock := "CREATE TABLE " + schemas.LockTable + " (holder String DEFAULT '" + schemas.Self + " since 2026-01-01T00:00:00Z') ENGINE = Memory"
	if err := conn.Exec(ctx, ownLock); err != nil {
		t.Fatal(err)
	}
	if a, err := (schemas.Migrator{UpTo: 1}).Apply(ctx, conn); err != nil || len(a) != 1 {
		t.Fatalf("Apply under this process's own lock: %v, %v", a, err)
	}
	if n := chtest.QueryStrings(t, conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND name = '"+schemas.LockTable+"'"); len(n) != 0 {
		t.Fatalf("the lock is still there after Apply")
	}
	if err := conn.Exec(ctx, ownLock); err != nil {
		t.Fatal(err)
	}
	if a, err := (schemas.Migrator{UpTo: 1}).Apply(ctx, conn); err != nil || len(a) != 0 {
		t.Fatalf("Apply with nothing pending: %v, %v", a, err)
	}
	if n := chtest.QueryStrings(t, conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND name = '"+schemas.LockTable+"'"); len(n) != 0 {
		t.Fatalf("this process's lock is still there after an Apply with nothing pending")
	}
	errs := make(chan error, 2)
	ran := make(chan int, 2)
	for range 2 {
		go func() {
			a, err := schemas.Apply(ctx, conn)
			ran <- len(a)
			errs <- err
		}()
	}
	ms, _ := schemas.Migrations()
	total := 0
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Apply: %v", err)
		}
		total += <-ran
	}
	if total != len(ms)-1 {
		t.Errorf("two concurrent Apply ran %d migrations in all, want %d (each once)", total, len(ms)-1)
	}
	if got := chtest.QueryStrings(t, conn, granularity); len(got) != 2 {
		t.Errorf("day rollups after concurrent Apply: %q", got)
	}
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("row %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d rows, want %d", len(got), len(want))
	}
	return ""
}
