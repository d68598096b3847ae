package querybench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/internal/cputime"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestSmallRun loads a small data set, checks it against the sink's split
// rule, measures a short round and reports: the command's whole path.
func TestSmallRun(t *testing.T) {
	db := chtest.NewDB(t, false)
	c := Config{ClickHouse: db.Addr, Database: db.Name, Tenants: 3, Agents: 2, Months: 1, Clients: []int{2}, Duration: 300 * time.Millisecond,
		ClickHousePID: cputime.ScriptServer()}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	took, err := Load(ctx, db.Conn, c)
	if err != nil {
		t.Fatal(err)
	}
	if took == 0 {
		t.Error("first load skipped")
	}
	if took, err := Load(ctx, db.Conn, c); err != nil || took != 0 {
		t.Errorf("second load: %v, %v (want skipped)", took, err)
	}
	// Every event of the hourly and the licence insert: the rollups hold
	// them all.
	var n, events uint64
	if err := db.Conn.QueryRow(ctx, "SELECT count(), (SELECT sum(events) FROM usage_daily) FROM usage_events").Scan(&n, &events); err != nil {
		t.Fatal(err)
	}
	if int64(n) != c.Events() || n != events {
		t.Fatalf("%d events, %d in the daily rollup, want %d", n, events, c.Events())
	}
	if err := CheckSplit(ctx, db.Conn, 1000); err != nil {
		t.Fatal(err)
	}
	res, err := Measure(ctx, db.Conn, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.Requests == 0 || r.Errors != 0 || r.P99 < r.P50 || r.GoCPU <= 0 {
			t.Errorf("%+v", r)
		}
		if c.ClickHousePID != 0 && r.ClickHouseCPU <= 0 {
			t.Errorf("%s: ClickHouse (pid %d) used no CPU", r.Endpoint, c.ClickHousePID)
		}
	}
	var b strings.Builder
	Report(&b, c, "test", c.Events(), took, res)
	if !strings.Contains(b.String(), "invoice (month)") || !strings.Contains(b.String(), " ms\n") {
		t.Errorf("report:\n%s", b.String())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Database: "x-y"}).Validate(); err == nil {
		t.Error("bad database accepted")
	}
	if err := (Config{Clients: []int{0}}).Validate(); err == nil {
		t.Error("0 clients accepted")
	}
	if n := (Config{}).Events(); n != 106_580_000 {
		t.Errorf("default events %d", n)
	}
}
