// Package querybench measures `feedmeter serve`: it loads synthetic usage
// events into the sink's table usage_events (the rollups follow through the
// schema's materialized views, as in production), then times a tenant's
// month invoice and daily usage over HTTP with concurrent clients and
// reports p50 and p99 latency.
//
// The events are made by ClickHouse itself (INSERT … SELECT FROM numbers),
// which is the only way to write a hundred million rows quickly on a small
// machine; every event lies inside one UTC hour, so its hourly and daily
// pieces are the event itself, exactly what model.SplitEvent gives (Load
// checks a sample of rows against it).
package querybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/internal/cputime"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/query"
	"github.com/feedmeter/feedmeter/schemas"
)

// Config describes the data set and the measurement. Zero values mean the
// defaults beside the fields.
type Config struct {
	ClickHouse string // native address; default 127.0.0.1:9000
	Database   string // default feedmeter_bench (created and migrated)

	Tenants int // default 2000
	Agents  int // backup agents (servers) per tenant; default 2
	Months  int // months of hourly usage from January 2026; default 12
	// Every agent reports bandwidthIn, bandwidthOut and storage every hour
	// and a licence snapshot every day: events = tenants x agents x
	// (3 x hours + days). The defaults make 106,580,000.

	Clients []int // concurrent clients per round (closed loop); default 1, 4, 16 when Rates is empty too
	// Rates are open-loop rounds: requests a second, arriving at random
	// (Poisson) whatever the answers take, each timed from the moment it
	// was due, so a slow answer delays no later request's clock (no
	// coordinated omission). Closed-loop clients measure the service at
	// saturation; a rate measures it at a load.
	Rates    []float64
	Slots    int           // the server's ClickHouse query slots (serve --clickhouse-slots); 0: no bound
	Duration time.Duration // per round; default 20 s
	Reload   bool          // drop and load the data again even when it is there
	Logger   *slog.Logger  // progress; default discards

	// ClickHousePID, when the server runs on this machine, makes each
	// result carry ClickHouse's CPU time over its round; 0: not measured.
	ClickHousePID int
}

func (c *Config) defaults() {
	if c.ClickHouse == "" {
		c.ClickHouse = "127.0.0.1:9000"
	}
	if c.Database == "" {
		c.Database = "feedmeter_bench"
	}
	if c.Tenants == 0 {
		c.Tenants = 2000
	}
	if c.Agents == 0 {
		c.Agents = 2
	}
	if c.Months == 0 {
		c.Months = 12
	}
	if len(c.Clients) == 0 && len(c.Rates) == 0 {
		c.Clients = []int{1, 4, 16}
	}
	if c.Duration == 0 {
		c.Duration = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	c.defaults()
	var errs []error
	if !schemas.ValidDatabase(c.Database) {
		errs = append(errs, fmt.Errorf("database %q is not a plain identifier", c.Database))
	}
	if c.Tenants < 1 || c.Tenants > 1_000_000 || c.Agents < 1 || c.Agents > 10 || c.Months < 1 || c.Months > 24 {
		errs = append(errs, errors.New("want 1..1,000,000 tenants, 1..10 agents, 1..24 months"))
	}
	if c.Slots < 0 || c.Slots > 256 {
		errs = append(errs, fmt.Errorf("clickhouse slots %d not in 0..256", c.Slots))
	}
	for _, n := range c.Clients {
		if n < 1 || n > 256 {
			errs = append(errs, fmt.Errorf("clients %d not in 1..256", n))
		}
	}
	for _, r := range c.Rates {
		if !(r >= 1 && r <= 100_000) {
			errs = append(errs, fmt.Errorf("rate %g not in 1..100,000 requests a second", r))
		}
	}
	return errors.Join(errs...)
}

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Events returns how many events the configuration loads.
func (c Config) Events() int64 {
	c.defaults()
	end := start.AddDate(0, c.Months, 0)
	hours := int64(end.Sub(start) / time.Hour)
	return int64(c.Tenants) * int64(c.Agents) * (3*hours + hours/24)
}

// Rates is the rate card of the benchmark: graduated bandwidth, a price
// change in the middle of every month from October, a tenant override.
const Rates = `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0.01"
    bandwidth_out:
      - {up_to: 1024, price: "0.12"}
      - {up_to: 10240, price: "0.09"}
      - {price: "0.05"}
    storage: "0.10"
    license: "10.00"
    license_external: "15.00"
  - effective: 2026-06-16
    storage: "0.09"
  - effective: 2026-10-16T12:00:00Z
    bandwidth_out:
      - {up_to: 1024, price: "0.11"}
      - {price: "0.04"}
tenants:
  "100001":
    - effective: 2026-03-10
      license: "8.00"
`

const usageCols = "tenant_id, entry_id, kind, event_id, event_type, event_version, product_namespace, product_version, " +
	"region, data_center, environment, resource_id, resource_type, server_id, server_name, external, " +
	"start_time, start_time_ns, end_time, end_time_ns, event_time, event_time_ns, time, quantity, updated, published, " +
	"server, byte_seconds, h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds, " +
	"kafka_topic, kafka_partition, kafka_offset, inserted_at"

// hourlySQL makes the hourly events numbered [?, ? + ?): event n is hour
// n / (T·A·3), tenant, agent and kind from the rest. Bandwidth is up to
// 2 GB an hour, storage a level of up to 1 TB held for the hour.
const hourlySQL = `INSERT INTO usage_events (` + usageCols + `)
SELECT tenant_id, concat('urn:bench:h:', toString(n)), kd, toString(n), 'USAGE', '1',
  concat('http://docs.rackspace.com/usage/cloudbackup/', kd), '1', 'DFW', 'DFW1', 'PROD',
  concat('agent-', toString(ag)), 'AGENT', srv, '', CAST(NULL AS Nullable(UInt8)),
  st, toUInt32(0), toDateTime(toUInt32(st) + 3600), toUInt32(0), CAST(NULL AS Nullable(DateTime('UTC'))), toUInt32(0), st,
  q, toDateTime(toUInt32(st) + 3600), toDateTime(toUInt32(st) + 3600), srv, bs,
  [st], [q], [bs], [toDate(st)], [q], [bs], 'bench', toInt32(0), toInt64(n), now()
FROM (
  SELECT n, kd, ag, st, q, toString(100000 + tn) AS tenant_id, toString((100000 + tn) * 10 + ag) AS srv,
    toDecimal128(if(kd = 'storage', q * 3600, 0), 0) AS bs
  FROM (
    SELECT number + ? AS n, ? AS tenants, ? AS agents,
      intDiv(n % (tenants * agents * 3), agents * 3) AS tn,
      intDiv(n % (agents * 3), 3) AS ag,
      ['bandwidthIn', 'bandwidthOut', 'storage'][n % 3 + 1] AS kd,
      toDateTime(toUInt32(?) + toUInt32(intDiv(n, tenants * agents * 3)) * 3600, 'UTC') AS st,
      if(kd = 'storage', (intHash64(n) % 1000000000000) + 1, intHash64(n) % 2000000000) AS q
    FROM numbers(?)
  )
)`

// licenceSQL makes the daily licence snapshots numbered [?, ? + ?): one per
// agent and day at a random second of the day's first hour; the second
// agent of every fifth tenant is outside Rackspace (no server id).
const licenceSQL = `INSERT INTO usage_events (` + usageCols + `)
SELECT tenant_id, concat('urn:bench:l:', toString(n)), 'license', toString(n), 'USAGE_SNAPSHOT', '1',
  'http://docs.rackspace.com/usage/cloudbackup/license', '3', 'DFW', 'DFW1', 'PROD',
  concat('agent-', toString(ag)), 'AGENT', if(ext = 1, '', srvid), concat('srv-', srvid), CAST(ext AS Nullable(UInt8)),
  CAST(NULL AS Nullable(DateTime('UTC'))), toUInt32(0), CAST(NULL AS Nullable(DateTime('UTC'))), toUInt32(0), et, toUInt32(0), et,
  toUInt64(1), et, et, if(ext = 1, concat('name:srv-', srvid), srvid), toDecimal128(0, 0),
  [toStartOfHour(et)], [toUInt64(1)], [toDecimal128(0, 0)], [toDate(et)], [toUInt64(1)], [toDecimal128(0, 0)],
  'bench', toInt32(0), toInt64(n), now()
FROM (
  SELECT n, ag, et, toString(100000 + tn) AS tenant_id, toString((100000 + tn) * 10 + ag) AS srvid,
    toUInt8(ag = 1 AND tn % 5 = 0) AS ext
  FROM (
    SELECT number + ? AS n, ? AS tenants, ? AS agents,
      intDiv(n % (tenants * agents), agents) AS tn,
      n % agents AS ag,
      toDateTime(toUInt32(?) + toUInt32(intDiv(n, tenants * agents)) * 86400 + intHash32(n) % 3600, 'UTC') AS et
    FROM numbers(?)
  )
)`

// Load fills the database (after applying the migrations) unless it already
// holds the configured number of events; it returns how long loading took
// (0 when it was skipped).
func Load(ctx context.Context, conn driver.Conn, c Config) (time.Duration, error) {
	c.defaults()
	if _, err := schemas.Apply(ctx, conn); err != nil {
		return 0, err
	}
	var have uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&have); err != nil {
		return 0, fmt.Errorf("count events: %w", err)
	}
	want := c.Events()
	if int64(have) == want && !c.Reload {
		c.Logger.Info("data already loaded", "events", have)
		return 0, nil
	}
	for _, t := range []string{"usage_events", "usage_ids", "usage_replaced", "usage_copies", "usage_hourly", "usage_daily", "license_daily"} {
		if err := conn.Exec(ctx, "TRUNCATE TABLE "+t); err != nil {
			return 0, fmt.Errorf("truncate %s: %w", t, err)
		}
	}
	began := time.Now()
	hours := int64(start.AddDate(0, c.Months, 0).Sub(start) / time.Hour)
	perHour := int64(c.Tenants) * int64(c.Agents) * 3
	total := hours * perHour
	// Chunks of whole hours, about 2 million events: each INSERT's block
	// goes through both views, as the sink's inserts do.
	chunkHours := max(1, 2_000_000/perHour)
	for h := int64(0); h < hours; h += chunkHours {
		n := min(chunkHours, hours-h) * perHour
		if err := conn.Exec(ctx, hourlySQL, uint64(h*perHour), uint64(c.Tenants), uint64(c.Agents), uint32(start.Unix()), uint64(n)); err != nil {
			return 0, fmt.Errorf("insert hourly events from hour %d: %w", h, err)
		}
		done := (h + min(chunkHours, hours-h)) * perHour
		el := time.Since(began)
		c.Logger.Info("loading", "events", done, "of", total, "rate", int(float64(done)/el.Seconds()),
			"eta", (time.Duration(float64(el) / float64(done) * float64(total-done))).Round(time.Second))
	}
	days := hours / 24
	perDay := int64(c.Tenants) * int64(c.Agents)
	if err := conn.Exec(ctx, licenceSQL, uint64(0), uint64(c.Tenants), uint64(c.Agents), uint32(start.Unix()), uint64(days*perDay)); err != nil {
		return 0, fmt.Errorf("insert licence events: %w", err)
	}
	took := time.Since(began)
	if err := conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&have); err != nil {
		return 0, fmt.Errorf("count events: %w", err)
	}
	if int64(have) != want {
		return 0, fmt.Errorf("loaded %d events, want %d", have, want)
	}
	return took, nil
}

// SettleMerges waits (at most max) until ClickHouse runs no merge in the
// database, so that the measurement sees the steady state rather than the
// load's aftermath; it returns how long it waited.
func SettleMerges(ctx context.Context, conn driver.Conn, database string, max time.Duration, log *slog.Logger) (time.Duration, error) {
	began := time.Now()
	quiet := 0
	for time.Since(began) < max {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merges WHERE database = ?", database).Scan(&n); err != nil {
			return 0, fmt.Errorf("read system.merges: %w", err)
		}
		if n == 0 {
			if quiet++; quiet == 3 {
				return time.Since(began), nil
			}
		} else {
			quiet = 0
			log.Info("waiting for merges", "running", n)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return time.Since(began), nil
}

// CheckSplit reads n random events back and checks that their hourly and
// daily pieces are what model.SplitEvent makes of them, so the synthetic
// rows obey the sink's rule.
func CheckSplit(ctx context.Context, conn driver.Conn, n int) error {
	var total uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&total); err != nil {
		return fmt.Errorf("count events: %w", err)
	}
	every := max(1, total/uint64(max(n, 1)))
	rows, err := conn.Query(ctx, `SELECT tenant_id, entry_id, kind, event_type, start_time, end_time, event_time, quantity,
		arrayMap(x -> toUInt32(x), h_start), h_quantity, arrayMap(x -> toUInt32(x), d_start), d_quantity
		FROM usage_events WHERE rand() % ? = 0 LIMIT ?`, every, n)
	if err != nil {
		return fmt.Errorf("sample events: %w", err)
	}
	defer rows.Close()
	checked := 0
	for rows.Next() {
		var e model.Event
		var kind string
		var st, et, vt *time.Time
		var hs, ds []uint32
		var hq, dq []uint64
		if err := rows.Scan(&e.TenantID, &e.EntryID, &kind, &e.EventType, &st, &et, &vt, &e.Quantity, &hs, &hq, &ds, &dq); err != nil {
			return fmt.Errorf("sample events: %w", err)
		}
		e.Kind = model.Kind(kind)
		for _, p := range []struct {
			dst *time.Time
			src *time.Time
		}{{&e.StartTime, st}, {&e.EndTime, et}, {&e.EventTime, vt}} {
			if p.src != nil {
				*p.dst = p.src.UTC()
			}
		}
		sp := model.SplitEvent(&e)
		if len(sp.Hours) != len(hs) || len(sp.Days) != len(ds) {
			return fmt.Errorf("event %s: %d hours and %d days stored, the sink makes %d and %d", e.EntryID, len(hs), len(ds), len(sp.Hours), len(sp.Days))
		}
		for i, p := range sp.Hours {
			if uint32(p.Start.Unix()) != hs[i] || p.Quantity != hq[i] {
				return fmt.Errorf("event %s: hour piece %d differs from the sink's", e.EntryID, i)
			}
		}
		for i, p := range sp.Days {
			// d_start is a Date: days since the epoch.
			if uint32(p.Start.Unix()/86400) != ds[i] || p.Quantity != dq[i] {
				return fmt.Errorf("event %s: day piece %d differs from the sink's", e.EntryID, i)
			}
		}
		checked++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if checked == 0 {
		return errors.New("no events sampled")
	}
	return nil
}

// Result is the latency of one endpoint at one load.
type Result struct {
	Endpoint string
	Clients  int     // closed loop: concurrent clients
	Rate     float64 // open loop: requests due a second
	// MaxInFlight is the most requests open at once (a closed loop: at
	// most Clients).
	MaxInFlight int
	Requests    int
	Errors      int
	Elapsed     time.Duration
	P50, P90    time.Duration
	P99, Max    time.Duration
	// CPU time over the round: this process (the server, its ClickHouse
	// client and the load generator) and ClickHouse (0: not measured).
	GoCPU, ClickHouseCPU time.Duration
}

// Measure runs, for each load (c.Clients, then c.Rates) and for the
// invoice and the daily usage, c.Duration of requests, each for a random
// tenant and a random loaded month, through a real HTTP server on loopback.
func Measure(ctx context.Context, conn driver.Conn, c Config) ([]Result, error) {
	c.defaults()
	rates, err := query.ParseRateCard([]byte(Rates))
	if err != nil {
		return nil, err
	}
	tok, hash, err := query.NewToken()
	if err != nil {
		return nil, err
	}
	tokens, err := query.ParseTokens([]byte("tokens:\n" + query.TokenLine(hash, query.Principal{Admin: true}) + "\n"))
	if err != nil {
		return nil, err
	}
	store := query.NewClickHouse(conn)
	store.SetConcurrency(c.Slots)
	srv, err := query.New(query.Config{Store: store, Rates: rates, Tokens: tokens, Logger: c.Logger, QueryTimeout: time.Minute})
	if err != nil {
		return nil, err
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}, Timeout: time.Minute}
	endpoints := []struct {
		name string
		path func(tenant, month string) string
	}{
		{"invoice (month)", func(t, m string) string { return "/v1/tenants/" + t + "/invoice?period=" + m }},
		{"usage (daily, month)", func(t, m string) string {
			return "/v1/tenants/" + t + "/usage?granularity=day&period=" + m
		}},
	}
	get := func(path string) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, res.Status)
		}
		return nil
	}
	// One request of each kind first: fails fast on a broken setup.
	for _, ep := range endpoints {
		if err := get(ep.path("100001", "2026-10")); err != nil {
			return nil, err
		}
	}
	type load struct {
		clients int
		rate    float64
	}
	var loads []load
	for _, n := range c.Clients {
		loads = append(loads, load{clients: n})
	}
	for _, r := range c.Rates {
		loads = append(loads, load{rate: r})
	}
	var results []Result
	for _, l := range loads {
		for _, ep := range endpoints {
			rd := &round{deadline: time.Now().Add(c.Duration)}
			began, cpu0 := time.Now(), cputime.Self()
			ch := cputime.Start(c.ClickHousePID)
			do := func(r *rand.Rand, due time.Time) {
				tenant := strconv.Itoa(100000 + r.IntN(c.Tenants))
				month := start.AddDate(0, r.IntN(c.Months), 0).Format("2006-01")
				rd.done(due, get(ep.path(tenant, month)))
			}
			if l.rate > 0 {
				rd.open(ctx, l.rate, do)
			} else {
				rd.closed(ctx, l.clients, do)
			}
			if ctx.Err() != nil {
				return results, ctx.Err()
			}
			if rd.firstErr != nil {
				c.Logger.Warn("requests failed", "endpoint", ep.name, "errors", rd.errs, "first", rd.firstErr)
			}
			res := Result{Endpoint: ep.name, Clients: l.clients, Rate: l.rate, MaxInFlight: rd.maxInFlight,
				Requests: len(rd.lat), Errors: rd.errs, Elapsed: time.Since(began), GoCPU: cputime.Self() - cpu0}
			if used, ok := ch.Used(); ok {
				res.ClickHouseCPU = used
			}
			if lat := rd.lat; len(lat) > 0 {
				slices.Sort(lat)
				q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
				res.P50, res.P90, res.P99, res.Max = q(0.50), q(0.90), q(0.99), lat[len(lat)-1]
			}
			results = append(results, res)
			c.Logger.Info("measured", "endpoint", ep.name, "load", res.Load(), "requests", res.Requests, "p50", res.P50, "p99", res.P99)
		}
	}
	return results, nil
}

// round is one round's requests: their latencies and errors.
type round struct {
	deadline    time.Time
	mu          sync.Mutex
	lat         []time.Duration
	errs        int
	firstErr    error
	inFlight    int
	maxInFlight int
}

// done records a request that was due at due.
func (rd *round) done(due time.Time, err error) {
	d := time.Since(due)
	rd.mu.Lock()
	defer rd.mu.Unlock()
	rd.inFlight--
	if err != nil {
		rd.errs++
		if rd.firstErr == nil {
			rd.firstErr = err
		}
		return
	}
	rd.lat = append(rd.lat, d)
}

func (rd *round) started() {
	rd.mu.Lock()
	rd.inFlight++
	rd.maxInFlight = max(rd.maxInFlight, rd.inFlight)
	rd.mu.Unlock()
}

// closed runs clients that each ask, one request after another, until the
// deadline.
func (rd *round) closed(ctx context.Context, clients int, do func(*rand.Rand, time.Time)) {
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w+1), uint64(clients)))
			for time.Now().Before(rd.deadline) && ctx.Err() == nil {
				rd.started()
				do(r, time.Now())
			}
		})
	}
	wg.Wait()
}

// open starts requests at random times, rate a second on average, until
// the deadline, each on its own, and waits for them all. A request is timed
// from when it was due: when the machine is too busy to start it on time,
// the delay counts.
func (rd *round) open(ctx context.Context, rate float64, do func(*rand.Rand, time.Time)) {
	r := rand.New(rand.NewPCG(uint64(rate), 1))
	var wg sync.WaitGroup
	for due := time.Now(); ctx.Err() == nil; {
		due = due.Add(time.Duration(r.ExpFloat64() / rate * float64(time.Second)))
		if !due.Before(rd.deadline) {
			break
		}
		time.Sleep(time.Until(due))
		// The request's own generator: r belongs to this loop.
		own := rand.New(rand.NewPCG(r.Uint64(), 2))
		rd.started()
		wg.Go(func() { do(own, due) })
	}
	wg.Wait()
}

// Load is the round's load as the report shows it: "16 clients" or "200/s".
func (r Result) Load() string {
	if r.Rate > 0 {
		return strconv.FormatFloat(r.Rate, 'f', -1, 64) + "/s"
	}
	if r.Clients == 1 {
		return "1 client"
	}
	return strconv.Itoa(r.Clients) + " clients"
}

// Report writes the results as a table.
func Report(w io.Writer, c Config, serverVersion string, loaded int64, took time.Duration, results []Result) {
	c.defaults()
	fmt.Fprintf(w, "feedmeter bench query — %s, Go %s, %d CPUs, ClickHouse %s (same machine)\n",
		time.Now().UTC().Format("2006-01-02"), runtime.Version(), runtime.NumCPU(), serverVersion)
	fmt.Fprintf(w, "data: %s events in usage_events (%d tenants x %d agents x %d months: bandwidthIn, bandwidthOut, storage hourly; a licence snapshot daily)\n",
		group(loaded), c.Tenants, c.Agents, c.Months)
	if took > 0 {
		fmt.Fprintf(w, "load: %s in %s (%s events/s, INSERT … SELECT through both rollup views)\n",
			group(loaded), took.Round(time.Second), group(int64(float64(loaded)/took.Seconds())))
	}
	fmt.Fprintf(w, "each round: %s; every request a random tenant and month, over HTTP on loopback\n\n", c.Duration)
	fmt.Fprintf(w, "%-22s %10s %9s %8s %9s %9s %9s %9s %6s %9s %13s\n", "endpoint", "load", "requests", "req/s", "p50", "p90", "p99", "max", "errors", "in flight", "cpu/req go+ch")
	for _, r := range results {
		cpu := "-"
		if r.Requests > 0 {
			per := func(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()*1000/float64(r.Requests)) }
			cpu = per(r.GoCPU) + "+"
			if r.ClickHouseCPU > 0 {
				cpu += per(r.ClickHouseCPU)
			} else {
				cpu += "?"
			}
			cpu += " ms"
		}
		fmt.Fprintf(w, "%-22s %10s %9d %8.0f %9s %9s %9s %9s %6d %9d %13s\n", r.Endpoint, r.Load(), r.Requests,
			float64(r.Requests)/r.Elapsed.Seconds(), ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max), r.Errors, r.MaxInFlight, cpu)
	}
	fmt.Fprintln(w, "\nload: N clients asking one request after another (closed loop), or N/s requests due at random times whatever the answers take (open loop, timed from when each was due)")
	fmt.Fprintln(w, "in flight: the most requests open at once")
	fmt.Fprintln(w, "cpu/req: CPU time per answered request over the round, of this process (server and load generator) and of ClickHouse (--clickhouse-pid; ? when not given or unreadable)")
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
