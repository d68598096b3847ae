package schemas

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// LockTable exists while one Apply runs migrations in its database: CREATE
// TABLE of a name that exists fails, so at most one creator holds it. Its
// column's default names the holder.
const LockTable = "schema_migrations_lock"

// LockWait is how long Apply waits for another process's lock before it
// gives up with an error that names the holder (the sink then retries).
var LockWait = 30 * time.Second

// ErrLocked is returned (wrapped, with the holder) when another process holds
// LockTable for longer than Apply waits.
var ErrLocked = errors.New("another process is applying migrations")

// applyMu serializes the migration runs of this process. So a lock whose
// holder is this process's host name and process id is this process's own:
// a release that failed (ClickHouse was down), or a former life of it (a
// container restarted under the same name, where the process id is 1 again).
// lock takes such a lock over. (Host names must differ between processes
// that migrate one database, as containers' and hosts' do.)
var applyMu sync.Mutex

// holder names this process in LockTable.
func holder() string {
	host, _ := os.Hostname()
	return strings.Map(func(r rune) rune {
		if r == '\'' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, fmt.Sprintf("%s pid %d", host, os.Getpid()))
}

// lock takes LockTable, waiting up to LockWait, and returns its release;
// the caller holds applyMu. Another process that dies holding it leaves it
// behind: the error names it and says how to drop it.
func lock(ctx context.Context, conn driver.Conn) (func() error, error) {
	me := holder()
	create := "CREATE TABLE " + LockTable + " (holder String DEFAULT '" + me + " since " +
		time.Now().UTC().Format(time.RFC3339) + "') ENGINE = Memory"
	release := func() error {
		// Dropped even when ctx is over: a lock left behind stops every
		// later migration of other processes.
		var err error
		for try := 0; try < 3; try++ {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err = conn.Exec(rctx, "DROP TABLE IF EXISTS "+LockTable)
			cancel()
			if err == nil {
				return nil
			}
			time.Sleep(time.Second)
		}
		return fmt.Errorf("release %s: %w", LockTable, err)
	}
	give := time.Now().Add(LockWait)
	for {
		err := conn.Exec(ctx, create)
		if err == nil {
			return release, nil
		}
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != 57 { // TABLE_ALREADY_EXISTS
			return nil, fmt.Errorf("take %s: %w", LockTable, err)
		}
		var by string
		if err := conn.QueryRow(ctx, "SELECT default_expression FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = 'holder'", LockTable).Scan(&by); err == nil &&
			strings.HasPrefix(strings.Trim(by, "'"), me+" since ") {
			return release, nil // this process's own (see applyMu)
		}
		if time.Now().After(give) {
			return nil, fmt.Errorf("%w: %s holds %s (if that process is gone, release it with %s and run again)", ErrLocked, strings.Trim(by, "'"), LockTable, "`feedmeter migrate --release-lock`")
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", LockTable, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ReleaseLock drops LockTable, left behind by a process that died holding
// it, and returns who held it ("" when nobody did). Run it only when that
// process is known to be gone: a live holder goes on migrating unlocked.
func ReleaseLock(ctx context.Context, conn driver.Conn) (string, error) {
	var by string
	err := conn.QueryRow(ctx, "SELECT default_expression FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = 'holder'", LockTable).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", LockTable, err)
	}
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+LockTable); err != nil {
		return "", fmt.Errorf("drop %s: %w", LockTable, err)
	}
	return strings.Trim(by, "'"), nil
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
// It runs under the migrations lock (Apply), so no other run of a current
// release migrates meanwhile.
//
//  1. The new table is created as table_rebuild_new.
//  2. table is renamed table_rebuild_old. From then on no table has the
//     name: an INSERT into usage_events whose views write table fails before
//     it writes anything (ClickHouse opens every view's target before it
//     writes a block: checked on 18.16, whose RENAME also waits for running
//     inserts; the current release fails it with UNKNOWN_TABLE too, unless
//     ignore_materialized_views_with_dropped_target_table is set, which
//     feedmeter never sets), and the sink retries it; queries answer 503.
//  3. Inserts that began before the rename and still write the old table
//     are waited out (WaitInserts); then the old table no longer changes.
//  4. Its rows are copied into the new table, which is renamed table, and
//     the old table is dropped.
//
// Every row is thus in exactly one old table when the copy starts, and no
// reader ever sees a part of them. From step 2 on the work goes on when ctx
// ends (the rollup has no name until it is over), and a failed copy puts the
// old table back. A run that stopped anyway (a killed process) is finished by
// the next: a half-filled new table is made again; old tables without a
// table are copied again; a table of the new definition beside them is the
// end of a run that did not drop them yet. A table of another definition
// beside them was created since (by a release without the lock, running an
// earlier migration's CREATE … IF NOT EXISTS) and holds only rows written
// since: it becomes one more old table, table_rebuild_old_2, …, copied with
// the others. A table of the new definition alone is left as it is. rebuild
// reports whether it copied rows.
func rebuild(ctx context.Context, conn driver.Conn, table, create string) (bool, error) {
	old, fresh := table+"_rebuild_old", table+"_rebuild_new"
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+fresh); err != nil {
		return false, err
	}
	if err := conn.Exec(ctx, strings.Replace(create, "CREATE TABLE "+table+" (", "CREATE TABLE "+fresh+" (", 1)); err != nil {
		return false, fmt.Errorf("create %s: %w", fresh, err)
	}
	defs, err := definitions(ctx, conn, table)
	if err != nil {
		return false, err
	}
	want := strings.Replace(defs[fresh], fresh, table, 1)
	var olds []string // the old tables, in the order they were renamed
	for i := 1; ; i++ {
		name := old
		if i > 1 {
			name = fmt.Sprintf("%s_%d", old, i)
		}
		if _, ok := defs[name]; !ok {
			break
		}
		olds = append(olds, name)
	}
	if defs[table] == want {
		// Rebuilt already; any old tables are copied in it.
		for _, t := range append(olds, fresh) {
			if err := conn.Exec(ctx, "DROP TABLE "+t); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	if len(olds) == 0 && defs[table] == "" {
		return false, fmt.Errorf("neither %s nor %s exists", table, old)
	}
	// From here on the rollup has no name: finish whatever ctx says.
	ctx = context.WithoutCancel(ctx)
	if defs[table] != "" {
		next := old
		if len(olds) > 0 {
			next = fmt.Sprintf("%s_%d", old, len(olds)+1)
		}
		if err := conn.Exec(ctx, "RENAME TABLE "+table+" TO "+next); err != nil {
			return false, fmt.Errorf("rename %s to %s: %w", table, next, err)
		}
		olds = append(olds, next)
	}
	err = moveRows(ctx, conn, olds, fresh)
	if err == nil {
		if err = conn.Exec(ctx, "RENAME TABLE "+fresh+" TO "+table); err != nil {
			err = fmt.Errorf("rename %s to %s: %w", fresh, table, err)
		}
	}
	if err != nil {
		if len(olds) == 1 {
			// Put the old table back: the sink and the query service go on
			// as before, and the next run tries again.
			if rerr := conn.Exec(ctx, "RENAME TABLE "+olds[0]+" TO "+table); rerr != nil {
				err = errors.Join(err, fmt.Errorf("put %s back: %w", olds[0], rerr))
			}
		}
		return false, err
	}
	for _, t := range olds {
		if err := conn.Exec(ctx, "DROP TABLE "+t); err != nil {
			return true, err
		}
	}
	return true, nil
}

// moveRows waits until no insert can still write the old tables and copies
// their rows into fresh.
func moveRows(ctx context.Context, conn driver.Conn, olds []string, fresh string) error {
	if err := WaitInserts(ctx, conn, time.Now()); err != nil {
		return err
	}
	var cols []string
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ?", fresh)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", fresh, err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		cols = append(cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("columns of %s: %w", fresh, err)
	}
	if len(cols) == 0 {
		return fmt.Errorf("columns of %s: none found", fresh)
	}
	list := strings.Join(cols, ", ")
	for _, t := range olds {
		if err := conn.Exec(ctx, "INSERT INTO "+fresh+" ("+list+") SELECT "+list+" FROM "+t); err != nil {
			return fmt.Errorf("copy %s into %s: %w", t, fresh, err)
		}
	}
	return nil
}

// definitions returns the CREATE statement, without the database's name,
// of table and of every table_rebuild_… of the current database, by name.
func definitions(ctx context.Context, conn driver.Conn, table string) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT name, replaceOne(create_table_query, concat(currentDatabase(), '.'), '') FROM system.tables"+
		" WHERE database = currentDatabase() AND (name = ? OR startsWith(name, ?))", table, table+"_rebuild_")
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
