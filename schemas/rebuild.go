package schemas

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// rebuildPrefix starts a migration statement that rebuilds a table:
//
//	REBUILD TABLE name WITH
//	CREATE TABLE name (…) ENGINE = … SETTINGS …
//
// The table gets the new definition and keeps every row. ClickHouse cannot
// change most table settings in place (18.16 none, and index_granularity
// never), so its rows move into a new table.
const rebuildPrefix = "REBUILD TABLE "

// rebuildSuffix starts the suffix of the tables a rebuild of t works with:
// t_rebuild_new, t_rebuild_old (and _old_2, …) and t_rebuild_copied.
const rebuildSuffix = "_rebuild_"

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
//  3. Inserts that began before the rename and may still write the old
//     table (inserts naming it or a table whose views write it) are waited
//     out; then the old table no longer changes.
//  4. Its rows are copied into the new table. A marker table,
//     table_rebuild_copied, then says so; the new table is renamed table,
//     the old one dropped, the marker last.
//
// Every row is thus in exactly one old table when the copy starts, and no
// reader sees a part of them. Until the copy begins, a failure or the end of
// ctx puts the old table back; from then on the work goes on whatever ctx
// says, and a failed copy puts the old table back too. A run that stopped
// anyway (a killed process, ClickHouse restarting) is finished by the next,
// from the tables' names alone: with the marker, the old tables are copied
// and the rest of step 4 is done; without it, a new table is made again and
// filled from every old table. A table beside old tables and no marker was
// created while the rollup had no name (by a release without the lock,
// running an earlier migration's CREATE … IF NOT EXISTS) and holds only
// rows written since: it becomes one more old table, table_rebuild_old_2,
// …. A table alone whose definition is already create is left as it is
// (the comparison only spares work: a rebuild of a rebuilt table is exact).
// rebuild reports whether it copied rows. onRenameAway, when not nil, runs
// right after the rename (Migrator.OnRenameAway).
func rebuild(ctx context.Context, conn driver.Conn, table, create string, onRenameAway func()) (bool, error) {
	fresh, marker := table+rebuildSuffix+"new", table+rebuildSuffix+"copied"
	defs, err := definitions(ctx, conn, table)
	if err != nil {
		return false, err
	}
	olds := oldTables(defs, table)
	_, hasTable := defs[table]
	_, hasFresh := defs[fresh]
	if _, copied := defs[marker]; copied {
		if hasTable && hasFresh {
			return false, fmt.Errorf("%s, %s and %s all exist: a table %s was created while a rebuild was stopped; "+
				"%s holds every row from before it, %s those written since; merge them by hand", table, fresh, marker, table, fresh, table)
		}
		return true, finish(context.WithoutCancel(ctx), conn, table, fresh, marker, olds, !hasTable)
	}
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+fresh); err != nil {
		return false, err
	}
	if err := conn.Exec(ctx, strings.Replace(create, "CREATE TABLE "+table+" (", "CREATE TABLE "+fresh+" (", 1)); err != nil {
		return false, fmt.Errorf("create %s: %w", fresh, err)
	}
	switch {
	case hasTable && len(olds) == 0:
		now, err := definitions(ctx, conn, table)
		if err != nil {
			return false, err
		}
		if now[table] == strings.Replace(now[fresh], fresh, table, 1) {
			return false, conn.Exec(ctx, "DROP TABLE "+fresh) // rebuilt already
		}
	case !hasTable && len(olds) == 0:
		return false, fmt.Errorf("neither %s nor %s exists", table, table+rebuildSuffix+"old")
	}
	if hasTable {
		next := table + rebuildSuffix + "old"
		if len(olds) > 0 {
			n, _ := oldNumber(olds[len(olds)-1], table)
			next += "_" + strconv.Itoa(n+1)
		}
		if err := conn.Exec(ctx, "RENAME TABLE "+table+" TO "+next); err != nil {
			return false, fmt.Errorf("rename %s to %s: %w", table, next, err)
		}
		olds = append(olds, next)
		if onRenameAway != nil {
			onRenameAway()
		}
	}
	// putBack undoes the rename when there is one old table (with more, the
	// newest holds only rows written since the rebuild stopped, and the
	// rollup stays without a name until a run finishes it).
	putBack := func(err error) error {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if len(olds) == 1 {
			rerr := conn.Exec(pctx, "RENAME TABLE "+olds[0]+" TO "+table)
			if rerr == nil {
				return fmt.Errorf("%w (%s put back)", err, table)
			}
			err = errors.Join(err, fmt.Errorf("put %s back: %w", olds[0], rerr))
		}
		return fmt.Errorf("%w; %s has no table of that name until `feedmeter migrate` runs again", err, table)
	}
	writers, err := writersOf(ctx, conn, table)
	if err != nil {
		return false, putBack(err)
	}
	if err := WaitInserts(ctx, conn, time.Now(), append(writers, append(olds, table)...)...); err != nil {
		return false, putBack(err)
	}
	dctx := context.WithoutCancel(ctx)
	if err := copyRows(dctx, conn, olds, fresh); err != nil {
		return false, putBack(err)
	}
	if err := conn.Exec(dctx, "CREATE TABLE "+marker+" (copied UInt8) ENGINE = Memory"); err != nil {
		return false, putBack(fmt.Errorf("create %s: %w", marker, err))
	}
	return true, finish(dctx, conn, table, fresh, marker, olds, true)
}

// finish ends a rebuild whose old tables are copied into fresh: fresh
// becomes table (unless it is already, rename false), the old tables and the
// marker go.
func finish(ctx context.Context, conn driver.Conn, table, fresh, marker string, olds []string, rename bool) error {
	if rename {
		if err := conn.Exec(ctx, "RENAME TABLE "+fresh+" TO "+table); err != nil {
			return fmt.Errorf("rename %s to %s (every row is in %s; run `feedmeter migrate` again): %w", fresh, table, fresh, err)
		}
	}
	for _, t := range append(olds, marker) {
		if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return fmt.Errorf("drop %s (copied already): %w", t, err)
		}
	}
	return nil
}

// oldTables returns the old tables among defs, table_rebuild_old and
// table_rebuild_old_N, oldest first.
func oldTables(defs map[string]string, table string) []string {
	var olds []string
	for name := range defs {
		if _, ok := oldNumber(name, table); ok {
			olds = append(olds, name)
		}
	}
	slices.SortFunc(olds, func(a, b string) int {
		x, _ := oldNumber(a, table)
		y, _ := oldNumber(b, table)
		return x - y
	})
	return olds
}

// oldNumber returns N of table_rebuild_old_N (1 for table_rebuild_old).
func oldNumber(name, table string) (int, bool) {
	rest, ok := strings.CutPrefix(name, table+rebuildSuffix+"old")
	if !ok {
		return 0, false
	}
	if rest == "" {
		return 1, true
	}
	n, err := strconv.Atoi(strings.TrimPrefix(rest, "_"))
	return n, err == nil && strings.HasPrefix(rest, "_") && n > 1
}

// writersOf returns the tables whose materialized views write table: an
// INSERT into one of them writes table too.
func writersOf(ctx context.Context, conn driver.Conn, table string) ([]string, error) {
	out, err := queryNames(ctx, conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND hasAny(dependencies_table, "+
		"(SELECT groupArray(name) FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'"+
		" AND position(create_table_query, concat(' TO ', currentDatabase(), '.', ?, ' ')) > 0))", table)
	if err != nil {
		return nil, fmt.Errorf("tables whose views write %s: %w", table, err)
	}
	return out, nil
}

// copyRows copies the rows of the old tables into fresh: their ordinary
// columns (MATERIALIZED and ALIAS ones are computed). A column new in
// fresh must have a DEFAULT, which the rows copied get; a column of an old
// table that fresh lacks is an error: a rebuild loses no data.
func copyRows(ctx context.Context, conn driver.Conn, olds []string, fresh string) error {
	const columns = "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')"
	cols, err := queryNames(ctx, conn, columns, fresh)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", fresh, err)
	}
	if len(cols) == 0 {
		return fmt.Errorf("columns of %s: none found", fresh)
	}
	defaults, err := queryNames(ctx, conn, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? AND default_kind = 'DEFAULT'", fresh)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", fresh, err)
	}
	for _, t := range olds {
		had, err := queryNames(ctx, conn, columns, t)
		if err != nil {
			return fmt.Errorf("columns of %s: %w", t, err)
		}
		for _, c := range had {
			if !slices.Contains(cols, c) {
				return fmt.Errorf("copy %s into %s: the new table has no column %s: a rebuild may not drop data", t, fresh, c)
			}
		}
		var both []string
		for _, c := range cols {
			switch {
			case slices.Contains(had, c):
				both = append(both, c)
			case !slices.Contains(defaults, c):
				return fmt.Errorf("copy %s into %s: column %s is new and has no DEFAULT for the rows copied", t, fresh, c)
			}
		}
		list := strings.Join(both, ", ")
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
		" WHERE database = currentDatabase() AND (name = ? OR startsWith(name, ?))", table, table+rebuildSuffix)
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

// queryNames returns the one String column of q's rows.
func queryNames(ctx context.Context, conn driver.Conn, q string, args ...any) ([]string, error) {
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
