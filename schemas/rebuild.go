package schemas

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// LockTable exists while one Apply runs migrations in its database: CREATE
// TABLE of a name that exists fails, so at most one creator holds it. Its
// column's default names the holder.
const LockTable = "schema_migrations_lock"

// lockWait is how long Apply waits for another Apply's lock before it gives
// up with an error that names the holder (the sink then retries).
var lockWait = 30 * time.Second

// ErrLocked is returned (wrapped, with the holder) when another process holds
// LockTable for longer than Apply waits.
var ErrLocked = errors.New("another process is applying migrations")

// lock takes LockTable, waiting up to lockWait, and returns its release. A
// process that dies holding it leaves it behind: the error says how to drop
// it by hand once that process is known to be gone.
func lock(ctx context.Context, conn driver.Conn) (func(), error) {
	host, _ := os.Hostname()
	holder := strings.Map(func(r rune) rune {
		if r == '\'' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, fmt.Sprintf("%s pid %d at %s", host, os.Getpid(), time.Now().UTC().Format(time.RFC3339)))
	create := "CREATE TABLE " + LockTable + " (holder String DEFAULT '" + holder + "') ENGINE = Memory"
	give := time.Now().Add(lockWait)
	for {
		err := conn.Exec(ctx, create)
		if err == nil {
			return func() {
				// Dropped even when ctx is over: a lock left behind stops
				// every later migration.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				_ = conn.Exec(rctx, "DROP TABLE IF EXISTS "+LockTable)
			}, nil
		}
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != 57 { // TABLE_ALREADY_EXISTS
			return nil, fmt.Errorf("take %s: %w", LockTable, err)
		}
		if time.Now().After(give) {
			var by string
			_ = conn.QueryRow(ctx, "SELECT default_expression FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = 'holder'", LockTable).Scan(&by)
			return nil, fmt.Errorf("%w: %s holds %s (if that process is gone, DROP TABLE %s and run again)", ErrLocked, by, LockTable, LockTable)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", LockTable, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// rebuildPrefix starts a migration statement that rebuilds a table:
//
//	REBUILD TABLE name WITH
//	CREATE TABLE name (…) ENGINE = … SETTINGS …
//
// The table gets the new definition and keeps every row. ClickHouse cannot
// change most table settings in place (18.16 none, and index_granularity
// never), so its rows move into a new table.
const rebuildPrefix = "REBUILD TABLE "

// parseRebuild splits a REBUILD statement into the table and its new CREATE.
func parseRebuild(stmt string) (table, create string, err error) {
	head, create, ok := strings.Cut(strings.TrimPrefix(stmt, rebuildPrefix), "\n")
	f := strings.Fields(head)
	if !ok || len(f) != 2 || f[1] != "WITH" || !ValidDatabase(f[0]) {
		return "", "", fmt.Errorf("REBUILD statement: want %q on its first line, got %q", "REBUILD TABLE <name> WITH", head)
	}
	table, create = f[0], strings.TrimSpace(create)
	if !strings.HasPrefix(create, "CREATE TABLE "+table+" (") {
		return "", "", fmt.Errorf("REBUILD TABLE %s: the second line must start %q", table, "CREATE TABLE "+table+" (")
	}
	return table, create, nil
}

// rebuild gives table the definition create (a CREATE TABLE of table) and
// keeps its rows, exactly, while sinks write and the query service reads.
// It runs under the migrations lock, so no other rebuild or migration runs.
//
//  1. The new table is created as table_rebuild_new.
//  2. table is renamed table_rebuild_old. From then on no table has the
//     name: an INSERT into usage_events whose views write table fails before
//     it writes anything (ClickHouse opens every view's target before it
//     writes a block: checked on 18.16; the current release fails it with
//     UNKNOWN_TABLE too, unless ignore_materialized_views_with_dropped_target_table
//     is set, which feedmeter never sets), and the sink retries it; queries
//     answer 503.
//  3. Inserts that began before the rename write the old table; they are
//     waited out (WaitInserts), after which the old table no longer changes.
//  4. Its rows are copied into the new table, which is renamed table, and
//     the old table is dropped.
//
// Every row is thus in exactly one of the two tables when the copy starts,
// and no reader ever sees a part of them. A run that stops anywhere is
// finished by the next: a half-filled new table is dropped and made again; an
// old table without a table is copied again; an old table beside a table is
// the end of a run that did not drop it yet. A table whose definition is
// already create is left alone. It reports whether it moved rows.
func rebuild(ctx context.Context, conn driver.Conn, table, create string) (bool, error) {
	old, fresh := table+"_rebuild_old", table+"_rebuild_new"
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+fresh); err != nil {
		return false, err
	}
	if err := conn.Exec(ctx, strings.Replace(create, "CREATE TABLE "+table+" (", "CREATE TABLE "+fresh+" (", 1)); err != nil {
		return false, fmt.Errorf("create %s: %w", fresh, err)
	}
	defs, err := definitions(ctx, conn, table, old, fresh)
	if err != nil {
		return false, err
	}
	hasTable, hasOld := defs[table] != "", defs[old] != ""
	switch {
	case hasTable && hasOld:
		// A run renamed the new table and stopped before dropping the old.
		if err := conn.Exec(ctx, "DROP TABLE "+fresh); err != nil {
			return false, err
		}
		return true, conn.Exec(ctx, "DROP TABLE "+old)
	case hasTable:
		if defs[table] == strings.Replace(defs[fresh], fresh, table, 1) {
			return false, conn.Exec(ctx, "DROP TABLE "+fresh) // rebuilt already
		}
		if err := conn.Exec(ctx, "RENAME TABLE "+table+" TO "+old); err != nil {
			return false, fmt.Errorf("rename %s to %s: %w", table, old, err)
		}
	case hasOld:
		// A run stopped between its renames: the rows are all in old.
	default:
		return false, fmt.Errorf("rebuild %s: neither %s nor %s exists", table, table, old)
	}
	if err := WaitInserts(ctx, conn, time.Now()); err != nil {
		return false, err
	}
	var cols []string
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ?", fresh)
	if err != nil {
		return false, fmt.Errorf("columns of %s: %w", fresh, err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return false, err
		}
		cols = append(cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("columns of %s: %w", fresh, err)
	}
	list := strings.Join(cols, ", ")
	if err := conn.Exec(ctx, "INSERT INTO "+fresh+" ("+list+") SELECT "+list+" FROM "+old); err != nil {
		return false, fmt.Errorf("copy %s into %s: %w", old, fresh, err)
	}
	if err := conn.Exec(ctx, "RENAME TABLE "+fresh+" TO "+table); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", fresh, table, err)
	}
	return true, conn.Exec(ctx, "DROP TABLE "+old)
}

// definitions returns the CREATE statement of each of names that exists in
// the current database, without the database's name.
func definitions(ctx context.Context, conn driver.Conn, names ...string) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT name, replaceOne(create_table_query, concat(currentDatabase(), '.'), '') FROM system.tables WHERE database = currentDatabase() AND has(?, name)", names)
	if err != nil {
		return nil, fmt.Errorf("read table definitions: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, q string
		if err := rows.Scan(&n, &q); err != nil {
			return nil, err
		}
		out[n] = q
	}
	return out, rows.Err()
}
