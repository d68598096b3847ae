package querybench

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/internal/cputime"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestSmallRun loads a small data set, checks it against the sink's split
// rule, measures a short round and reports: the command's whole path.
func TestSmallRun(t *testing.T) {
	db := chtest.NewDB(t, false)
	c := Config{ClickHouse: db.Addr, Database: db.Name, Tenants: 3, Agents: 2, Months: 1, Clients: []int{2}, Rates: []float64{40}, Duration: 300 * time.Millisecond,
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
	var n uint64
	var events int64
	if err := db.Conn.QueryRow(ctx, "SELECT count(), (SELECT sum(events) FROM usage_daily) FROM usage_events").Scan(&n, &events); err != nil {
		t.Fatal(err)
	}
	if int64(n) != c.Events() || int64(n) != events {
		t.Fatalf("%d events, %d in the daily rollup, want %d", n, events, c.Events())
	}
	if err := CheckSplit(ctx, db.Conn, 1000); err != nil {
		t.Fatal(err)
	}
	res, err := Measure(ctx, db.Conn, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	if res[0].Clients != 2 || res[0].MaxInFlight > 2 || res[3].Rate != 40 || res[3].Clients != 0 {
		t.Errorf("rounds %+v", res)
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
	if !strings.Contains(b.String(), "invoice (month)") || !strings.Contains(b.String(), "40/s") || !strings.Contains(b.String(), " ms\n") {
		t.Errorf("report:\n%s", b.String())
	}
}

// TestOpenLoop: an open round starts requests when they are due, whatever
// the answers take, and times each from when it was due; a closed round
// has at most its clients' requests open.
func TestOpenLoop(t *testing.T) {
	const rate, wait = 200, 50 * time.Millisecond
	rd := &round{deadline: time.Now().Add(time.Second)}
	var dues []time.Time
	var mu sync.Mutex
	rd.open(context.Background(), rate, func(_ *rand.Rand, due time.Time) {
		mu.Lock()
		dues = append(dues, due)
		mu.Unlock()
		time.Sleep(wait)
		rd.done(due, nil)
	})
	// 200 a second for a second: Poisson, so 200 ± 14 (a standard
	// deviation); answers of 50 ms keep about 10 open.
	if n := len(rd.lat); n < 130 || n > 270 || rd.errs != 0 {
		t.Fatalf("%d requests, %d errors", n, rd.errs)
	}
	if rd.maxInFlight < 5 {
		t.Errorf("at most %d in flight: the round waited for answers", rd.maxInFlight)
	}
	for _, d := range rd.lat {
		if d < wait {
			t.Fatalf("latency %v below the answer's %v", d, wait)
		}
	}
	// Every request was due within the round, each at its own time.
	slices.SortFunc(dues, func(a, b time.Time) int { return a.Compare(b) })
	if dues[len(dues)-1].After(rd.deadline) || len(slices.CompactFunc(dues, time.Time.Equal)) != len(rd.lat) {
		t.Error("due times past the deadline or repeated")
	}

	rd = &round{deadline: time.Now().Add(200 * time.Millisecond)}
	rd.closed(context.Background(), 3, func(_ *rand.Rand, due time.Time) {
		time.Sleep(time.Millisecond)
		rd.done(due, errors.New("boom"))
	})
	if rd.maxInFlight != 3 || rd.errs == 0 || len(rd.lat) != 0 || rd.firstErr == nil {
		t.Errorf("closed round: %d in flight at most, %d errors, %d answers", rd.maxInFlight, rd.errs, len(rd.lat))
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Database: "x-y"}).Validate(); err == nil {
		t.Error("bad database accepted")
	}
	if err := (Config{Clients: []int{0}}).Validate(); err == nil {
		t.Error("0 clients accepted")
	}
	if err := (Config{Rates: []float64{math.NaN()}}).Validate(); err == nil {
		t.Error("rate NaN accepted")
	}
	if n := (Config{}).Events(); n != 106_580_000 {
		t.Errorf("default events %d", n)
	}
}
