package schemas_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
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
		for _, s := range stmts {
			if !strings.Contains(s, "IF NOT EXISTS") {
				t.Errorf("migration %s: statement is not idempotent (no IF NOT EXISTS): %.80s", m.Name, s)
			}
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
	// Every statement is idempotent by itself too: run them all again.
	for _, m := range ms {
		for _, s := range m.Statements() {
			if err := db.Conn.Exec(ctx, s); err != nil {
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
