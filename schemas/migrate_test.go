package schemas_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

var (
	createFacts  = regexp.MustCompile(`^CREATE TABLE IF NOT EXISTS (\w+) \(`)
	insertInto   = regexp.MustCompile(`^INSERT INTO (\w+) `)
	dropIfExists = regexp.MustCompile(`^DROP TABLE IF EXISTS (\w+)$`)
	createAny    = regexp.MustCompile(`^CREATE (?:TABLE|VIEW|MATERIALIZED VIEW) (?:IF NOT EXISTS )?(\w+)`)
	alterColumn  = regexp.MustCompile(`^ALTER TABLE \w+ (ADD|MODIFY|COMMENT) COLUMN \w+ `)
)

func TestMigrationsParse(t *testing.T) {
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 3 {
		t.Fatalf("got %d migrations, want at least 3", len(ms))
	}
	for i, m := range ms {
		if m.Version != uint32(i+1) {
			t.Errorf("migration %s has number %d, want %d (no gaps)", m.Name, m.Version, i+1)
		}
		stmts := m.Statements()
		if len(stmts) == 0 {
			t.Errorf("migration %s has no statements", m.Name)
		}
		// A migration that fails half way is run again from its first
		// statement, so each statement must be safe to repeat: a CREATE …
		// IF NOT EXISTS; a CREATE after a DROP … IF EXISTS of the same name;
		// an ALTER that adds a column (the migrator skips it when the column
		// is there) or changes one; an INSERT into a table of facts (a
		// ReplacingMergeTree whose key is the whole row, created in the same
		// migration), where a row written twice means what it meant once,
		// or, between GUARD and UNGUARD, into a table the guarded statements
		// drop and create again before it, so a run again starts it empty.
		facts := map[string]bool{}
		for _, s := range stmts {
			if c := createFacts.FindStringSubmatch(s); c != nil && strings.Contains(s, "ENGINE = ReplacingMergeTree\n") {
				facts[c[1]] = true
			}
		}
		dropped := map[string]bool{} // by a DROP … IF EXISTS before
		remade := map[string]bool{}  // dropped and created again inside the guard
		guarded := ""
		for _, s := range stmts {
			switch {
			case strings.HasPrefix(s, "REBUILD TABLE "):
				// Leaves a table rebuilt already alone, finishes a stopped run.
				if _, _, err := schemas.ParseRebuild(s); err != nil {
					t.Errorf("migration %s: %v", m.Name, err)
				}
				continue
			case strings.HasPrefix(s, "GUARD TABLE "):
				if guarded != "" {
					t.Errorf("migration %s: GUARD inside the guard of %s", m.Name, guarded)
				}
				guarded = strings.TrimPrefix(s, "GUARD TABLE ")
				continue
			case strings.HasPrefix(s, "UNGUARD TABLE "):
				if table := strings.TrimPrefix(s, "UNGUARD TABLE "); table != guarded {
					t.Errorf("migration %s: UNGUARD of %s, guarded %q", m.Name, table, guarded)
				}
				guarded, remade = "", map[string]bool{}
				continue
			}
			if d := dropIfExists.FindStringSubmatch(s); d != nil {
				dropped[d[1]] = true
				continue
			}
			if c := createAny.FindStringSubmatch(s); c != nil && !strings.Contains(s, "IF NOT EXISTS") {
				if !dropped[c[1]] {
					t.Errorf("migration %s: CREATE of %s without IF NOT EXISTS and without a DROP … IF EXISTS of it before", m.Name, c[1])
				}
				if guarded != "" {
					remade[c[1]] = true
				}
				continue
			}
			if ins := insertInto.FindStringSubmatch(s); ins != nil {
				if !facts[ins[1]] && !remade[ins[1]] {
					t.Errorf("migration %s: INSERT into %s, which is neither a table of facts created in it nor one made again under the guard: %.80s", m.Name, ins[1], s)
				}
				continue
			}
			if alterColumn.MatchString(s) {
				continue
			}
			if !strings.Contains(s, "IF NOT EXISTS") {
				t.Errorf("migration %s: statement is not idempotent (no IF NOT EXISTS): %.80s", m.Name, s)
			}
		}
		if guarded != "" {
			t.Errorf("migration %s: GUARD of %s without UNGUARD", m.Name, guarded)
		}
	}
}

func TestStatementsSplit(t *testing.T) {
	m := schemas.Migration{SQL: "-- head\nCREATE TABLE IF NOT EXISTS a (x UInt8 COMMENT 'a -- b')\nENGINE = Memory;\n\n  -- between\nCREATE VIEW IF NOT EXISTS v AS SELECT 1;\n-- tail\n"}
	got := m.Statements()
	want := []string{"CREATE TABLE IF NOT EXISTS a (x UInt8 COMMENT 'a -- b')\nENGINE = Memory", "CREATE VIEW IF NOT EXISTS v AS SELECT 1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Statements() = %q, want %q", got, want)
	}
}

// TestApplyTwice applies the migrations, then again: the second run does
// nothing, and a changed migration is refused.
func TestApplyTwice(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	first, err := schemas.Apply(ctx, db.Conn)
	if err != nil {
		t.Fatalf("first Apply: %v", err)
	}
	ms, _ := schemas.Migrations()
	if len(first) != len(ms) {
		t.Fatalf("first Apply ran %d migrations, want %d", len(first), len(ms))
	}
	second, err := schemas.Apply(ctx, db.Conn)
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if len(second) != 0 {
		t.Fatalf("second Apply ran %d migrations, want 0", len(second))
	}
	// Every statement is idempotent by itself too: a migration stopped half
	// way is run again from its first statement, on the schema it left.
	again := chtest.NewDB(t, false)
	for _, m := range ms {
		if _, err := (schemas.Migrator{UpTo: m.Version}).Apply(ctx, again.Conn); err != nil {
			t.Fatalf("Apply up to %s: %v", m.Name, err)
		}
		for _, s := range m.Statements() {
			if err := schemas.RunStatement(ctx, again.Conn, s, time.Time{}); err != nil {
				t.Fatalf("re-running %s: %v", m.Name, err)
			}
		}
	}
	if err := db.Conn.Exec(ctx, "ALTER TABLE "+schemas.MigrationsTable+" UPDATE checksum = 'x' WHERE version = 1"); err != nil {
		t.Fatalf("change a recorded checksum: %v", err)
	} else {
		// 18.16 runs mutations asynchronously; wait until it is done.
		for i := 0; i < 100; i++ {
			rows := chtest.QueryStrings(t, db.Conn, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0")
			if rows[0] == "0" {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := schemas.Apply(ctx, db.Conn); !errors.Is(err, schemas.ErrChanged) {
			t.Fatalf("Apply after a checksum change: %v, want ErrChanged", err)
		}
	}
}

// TestViewsRun runs every analyst view and checks that every column of every
// view has a comment.
func TestViewsRun(t *testing.T) {
	db := chtest.NewDB(t, true)
	views := chtest.QueryStrings(t, db.Conn, "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'View' ORDER BY name")
	if len(views) < 6 {
		t.Fatalf("found views %q, want at least 6", views)
	}
	for _, v := range views {
		t.Run(v, func(t *testing.T) {
			chtest.QueryStrings(t, db.Conn, "SELECT * FROM "+v+" LIMIT 10")
			missing := chtest.QueryStrings(t, db.Conn, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? AND comment = ''", v)
			if len(missing) > 0 {
				t.Errorf("view %s: columns without a comment: %q", v, missing)
			}
		})
	}
	// The tables' columns are commented too.
	missing := chtest.QueryStrings(t, db.Conn, `SELECT concat(table, '.', name) FROM system.columns
		WHERE database = currentDatabase() AND comment = '' AND table NOT LIKE '.inner%'
		AND table IN (SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree')`)
	if len(missing) > 0 {
		t.Errorf("table columns without a comment: %q", missing)
	}
}

// TestLicenceBackfill: licence events written before migration 0004 existed
// reach license_daily through its backfill, those written
// after it through its views, and a fact written by both reads as one.
func TestLicenceBackfill(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	// The schema as it was before 0004.
	for _, m := range ms[:3] {
		for _, s := range m.Statements() {
			if err := db.Conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
		}
	}
	// insert writes an event of kind and tenant in one hour for server,
	// with external as given ('NULL', '0' or '1').
	insert := func(kind, tenant, entry, server, external, hour string) {
		t.Helper()
		at := "toDateTime('" + hour + "', 'UTC')"
		q := `INSERT INTO usage_events (tenant_id, entry_id, kind, server_id, server, external, time, quantity,
			h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds)
			SELECT '` + tenant + `', '` + entry + `', '` + kind + `', '` + server + `', '` + server + `', CAST(` + external + ` AS Nullable(UInt8)),
			` + at + `, 1, [` + at + `], [toUInt64(1)], [toDecimal128(0, 0)], [toDate(` + at + `)], [toUInt64(1)], [toDecimal128(0, 0)]`
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatalf("insert %s: %v", entry, err)
		}
	}
	insert("license", "t1", "e1", "s1", "NULL", "2026-03-01 10:00:00")
	insert("license", "t1", "e2", "s1", "1", "2026-03-01 11:00:00")
	insert("license", "t1", "e3", "s2", "0", "2026-03-02 00:00:00")
	insert("license", "t2", "e4", "s1", "NULL", "2026-03-01 10:00:00")
	insert("bandwidthIn", "t1", "b1", "bw", "NULL", "2026-03-01 10:00:00")
	applied, err := schemas.Apply(ctx, db.Conn)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if n := len(applied); n != len(ms) {
		t.Fatalf("Apply ran %d migrations, want %d (all: none was recorded)", n, len(ms))
	}
	// After 0004: a new fact, and one the backfill wrote already.
	insert("license", "t1", "e5", "s3", "0", "2026-03-02 05:00:00")
	insert("license", "t1", "e6", "s1", "1", "2026-03-01 11:00:00")

	got := chtest.QueryStrings(t, db.Conn, "SELECT concat(tenant_id, ' ', toString(day), ' ', server, ' ', toString(ext)) FROM "+
		"(SELECT tenant_id, day, server, max(external) AS ext FROM license_daily GROUP BY tenant_id, day, server) ORDER BY tenant_id, day, server")
	want := []string{"t1 2026-03-01 s1 1", "t1 2026-03-02 s2 0", "t1 2026-03-02 s3 0", "t2 2026-03-01 s1 0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("license_daily:\n got %q\nwant %q", got, want)
	}
}

// TestCompact: after Compact, every partition of the day rollups is one
// part, and every sum reads as before.
func TestCompact(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	// Licence and storage events over two years, in several INSERTs (parts).
	for i := 0; i < 4; i++ {
		q := `INSERT INTO usage_events (tenant_id, entry_id, kind, server, external, time, quantity,
			h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds)
			SELECT toString(number % 3), concat('e', toString(number), '-` + strconv.Itoa(i) + `'), if(number % 2 = 0, 'license', 'storage'),
			toString(number % 5), CAST(number % 7 = 0 AS Nullable(UInt8)), toDateTime('2025-12-31 00:00:00', 'UTC') + number * 3600 AS at,
			1, [at], [toUInt64(1)], [toDecimal128(number, 0)], [toDate(at)], [toUInt64(1)], [toDecimal128(number, 0)]
			FROM numbers(100)`
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	sums := `SELECT concat(tenant_id, ' ', toString(day), ' ', kind, ' ', server, ' ', toString(sum(quantity)), ' ', toString(sum(byte_seconds)), ' ', toString(sum(events)))
		FROM usage_daily GROUP BY tenant_id, day, kind, server ORDER BY tenant_id, day, kind, server`
	facts := `SELECT concat(tenant_id, ' ', toString(day), ' ', server, ' ', toString(max(external))) FROM license_daily GROUP BY tenant_id, day, server ORDER BY tenant_id, day, server`
	parts := `SELECT concat(table, ' ', partition, ' ', toString(count())) FROM system.parts
		WHERE database = currentDatabase() AND active AND table IN ('usage_daily', 'license_daily') GROUP BY table, partition ORDER BY table, partition`
	beforeSums, beforeFacts := chtest.QueryStrings(t, db.Conn, sums), chtest.QueryStrings(t, db.Conn, facts)
	done, err := schemas.Compact(ctx, db.Conn)
	if err != nil || len(done) != len(schemas.CompactTables) {
		t.Fatalf("Compact: %v, %v", done, err)
	}
	if got := chtest.QueryStrings(t, db.Conn, parts); len(got) != 4 || strings.Join(got, "|") !=
		"license_daily 2025 1|license_daily 2026 1|usage_daily 2025 1|usage_daily 2026 1" {
		t.Errorf("parts after Compact: %q, want one per table and year", got)
	}
	if got := chtest.QueryStrings(t, db.Conn, sums); strings.Join(got, "|") != strings.Join(beforeSums, "|") {
		t.Errorf("usage_daily sums changed by Compact:\n got %q\nwant %q", got, beforeSums)
	}
	if got := chtest.QueryStrings(t, db.Conn, facts); strings.Join(got, "|") != strings.Join(beforeFacts, "|") {
		t.Errorf("license_daily facts changed by Compact:\n got %q\nwant %q", got, beforeFacts)
	}
	if len(beforeSums) < 100 || len(beforeFacts) < 50 {
		t.Fatalf("too little data to compare: %d sums, %d facts", len(beforeSums), len(beforeFacts))
	}
}
