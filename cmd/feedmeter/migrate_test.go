package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

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
