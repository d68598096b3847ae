package schemas

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// A guard stops every INSERT into a table while a migration rebuilds what
// that table's views write:
//
//	GUARD TABLE name
//	… statements …
//	UNGUARD TABLE name
//
// GUARD gives the table a materialized view whose target table is missing
// (name_migration_guard_mv, to name_migration_guard). ClickHouse opens the
// target of every view of a table before it writes a block, on 18.16 and on
// the current release alike, so each INSERT into the table fails with
// UNKNOWN_TABLE before writing anything (the sink retries it), and then the
// inserts already running are waited out. UNGUARD drops the view. A run
// stopped in between leaves the guard on: nothing is written until a later
// run gets past UNGUARD, so the guarded statements must all be safe to run
// again, and GUARD finding a guard already on leaves it as it is (making the
// target again to build the view would let inserts through meanwhile).
const (
	guardPrefix   = "GUARD TABLE "
	unguardPrefix = "UNGUARD TABLE "
	guardSuffix   = "_migration_guard"
)

// guardTable parses a GUARD or UNGUARD statement's table.
func guardTable(stmt, prefix string) (string, error) {
	t := strings.TrimSpace(strings.TrimPrefix(stmt, prefix))
	if !ValidDatabase(t) {
		return "", fmt.Errorf("%q: want %s<table>", stmt, prefix)
	}
	return t, nil
}

// guard blocks the inserts into table (see guardPrefix) and waits out those
// that began before.
func guard(ctx context.Context, conn driver.Conn, table string) error {
	target, view := table+guardSuffix, table+guardSuffix+"_mv"
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", view).Scan(&n); err != nil {
		return fmt.Errorf("guard %s: %w", table, err)
	}
	began := time.Now()
	if n == 0 {
		if err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+target+" (x UInt8) ENGINE = Memory"); err != nil {
			return fmt.Errorf("guard %s: %w", table, err)
		}
		if err := conn.Exec(ctx, "CREATE MATERIALIZED VIEW "+view+" TO "+target+
			" AS SELECT toUInt8(0) AS x FROM "+table+" WHERE 0"); err != nil {
			return fmt.Errorf("guard %s: %w", table, err)
		}
		began = time.Now()
	}
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+target); err != nil {
		return fmt.Errorf("guard %s: %w", table, err)
	}
	return WaitInserts(ctx, conn, began, table)
}

// unguard lets inserts into table through again.
func unguard(ctx context.Context, conn driver.Conn, table string) error {
	for _, t := range []string{table + guardSuffix + "_mv", table + guardSuffix} {
		if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return fmt.Errorf("unguard %s: %w", table, err)
		}
	}
	return nil
}

// addColumnPrefix starts a statement that adds a column. 18.16 has no ADD
// COLUMN IF NOT EXISTS, so the migrator skips it when the column is there:
// a migration run again after a stop is not refused by its own first step.
const addColumnPrefix = "ALTER TABLE "

// addedColumn returns the table and column of "ALTER TABLE t ADD COLUMN c
// …", ok false for any other statement. (An ALTER that adds several
// columns is applied whole or not at all: its first column tells.)
func addedColumn(stmt string) (table, column string, ok bool) {
	f := strings.Fields(stmt)
	if len(f) < 6 || f[0] != "ALTER" || f[1] != "TABLE" || f[3] != "ADD" || f[4] != "COLUMN" {
		return "", "", false
	}
	return f[2], f[5], ValidDatabase(f[2]) && ValidDatabase(f[5])
}

// hasColumn reports whether table has column.
func hasColumn(ctx context.Context, conn driver.Conn, table, column string) (bool, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?", table, column).Scan(&n)
	return n > 0, err
}
