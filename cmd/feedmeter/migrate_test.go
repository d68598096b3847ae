package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

func TestMigrateTwice(t *testing.T) {
	db := chtest.NewDB(t, false)
	for i, want := range []string{"applied 0001_events.sql", "is up to date"} {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"migrate", "--clickhouse", db.Addr, "--database", db.Name}, nil, &out, &errb)
		if code != 0 || !strings.Contains(out.String(), want) {
			t.Fatalf("run %d: exit %d, stdout %q, stderr %q; want exit 0 and %q", i+1, code, out.String(), errb.String(), want)
		}
	}
}

func TestMigrateCompact(t *testing.T) {
	db := chtest.NewDB(t, false)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"migrate", "--clickhouse", db.Addr, "--database", db.Name, "--compact"}, nil, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "compacted usage_daily") || !strings.Contains(out.String(), "compacted license_daily") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want both day rollups compacted", code, out.String(), errb.String())
	}
}

func TestMigrateBadDatabase(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"migrate", "--database", "no-dashes"}, nil, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
	}
}

func TestSinkFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"sink", "--batch-rows", "-1"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "batch rows") {
		t.Fatalf("exit %d, stderr %q; want 2 and a batch rows error", code, errb.String())
	}
	if code := run(context.Background(), []string{"migrate", "--list"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "0002_rollups.sql") {
		t.Fatalf("migrate --list: exit %d, stdout %q", code, out.String())
	}
}

// TestMigrateReleaseLock: a lock left by a dead process stops migrate, which
// names its holder; --release-lock drops it, and migrate then runs.
func TestMigrateReleaseLock(t *testing.T) {
	db := chtest.NewDB(t, false)
	if err := db.Conn.Exec(context.Background(), "CREATE TABLE "+schemas.LockTable+" (holder String DEFAULT 'gone-host pid 9 since 2026-01-01T00:00:00Z') ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	args := []string{"migrate", "--clickhouse", db.Addr, "--database", db.Name, "--lock-wait", "200ms"}
	for _, step := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{args, 1, "", "gone-host pid 9 since 2026-01-01T00:00:00Z holds"},
		{append(args, "--release-lock"), 0, "released the migrations lock of gone-host pid 9", ""},
		{append(args, "--release-lock"), 0, "no migrations lock", ""},
		{args, 0, "applied 0005_day_rollups_granularity.sql", ""},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), step.args, nil, &out, &errb)
		if code != step.code || !strings.Contains(out.String(), step.out) || !strings.Contains(errb.String(), step.errs) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d, %q, %q", step.args[6:], code, out.String(), errb.String(), step.code, step.out, step.errs)
		}
	}
}

// TestMigrateStatus: --status says what is pending, who holds the lock and
// which rebuild stopped, and exits 3 until the database needs nothing.
func TestMigrateStatus(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	if _, err := (schemas.Migrator{UpTo: 4}).Apply(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	status := func(want int, lines ...string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(ctx, []string{"migrate", "--clickhouse", db.Addr, "--database", db.Name, "--status"}, nil, &out, &errb)
		if code != want {
			t.Errorf("exit %d, want %d; stdout %q, stderr %q", code, want, out.String(), errb.String())
		}
		for _, l := range lines {
			if !strings.Contains(out.String(), l) {
				t.Errorf("stdout %q lacks %q", out.String(), l)
			}
		}
	}
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	status(3, fmt.Sprintf("4 migrations applied, %d pending", len(ms)-4), "pending 0005_day_rollups_granularity.sql")
	// A rebuild of 0005 that stopped after renaming usage_daily away, with
	// its process's lock left behind.
	for _, q := range []string{
		"RENAME TABLE usage_daily TO usage_daily_rebuild_old",
		"CREATE TABLE " + schemas.LockTable + " (holder String DEFAULT 'gone-host pid 9 since 2026-01-01T00:00:00Z') ENGINE = Memory",
	} {
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	status(3, "locked by gone-host pid 9", "stopped rebuild: usage_daily_rebuild_old exists")
	if _, err := schemas.ReleaseLock(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	if _, err := schemas.Apply(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	status(0, fmt.Sprintf("%d migrations applied, 0 pending", len(ms)))
}
