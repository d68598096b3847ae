package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/feedsim"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/query"
	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/sink"
)

// downstream is the demo's second half: the sink writes the topics that
// ingest filled into ClickHouse, then the query service answers each
// tenant's usage (checked against feedsim's ground truth) and invoice.
type downstream struct {
	addr, database, listen string
	keep                   bool
	rates                  *query.RateCard
	from, to               time.Time // feedsim's days

	// Made by prepare, before the upstream half runs, so that a bad
	// ClickHouse, database or address fails at once.
	conn driver.Conn  // the demo's database, migrated
	ln   net.Listener // the query service's

	truth   feedsim.Truth // as of the end of ingest
	brokers []string
	ends    map[topicPartition]int64 // offset after each partition's last record
	log     *slog.Logger
	out     io.Writer
}

// demoMark is the table by which the demo knows a database as its own: it
// drops and makes its database anew at every run, and refuses one that
// holds tables without it (an operator's `--database feedmeter`).
const demoMark = "feedmeter_demo_made"

// prepare makes the demo's database anew (dropping it if it is the demo's
// or empty), migrates it, and listens for the query service.
func (d *downstream) prepare(ctx context.Context) error {
	if d.database == "default" || d.database == "system" {
		return fmt.Errorf("--database %s: the demo drops its database at every run; name one of its own", d.database)
	}
	boot, err := schemas.Connect(ctx, schemas.ConnOptions(d.addr, "default"))
	if err != nil {
		return err
	}
	defer boot.Close()
	var tables, marks uint64
	if err := boot.QueryRow(ctx, "SELECT count(), countIf(name = ?) FROM system.tables WHERE database = ?", demoMark, d.database).Scan(&tables, &marks); err != nil {
		return fmt.Errorf("look at database %s: %w", d.database, err)
	}
	if tables > 0 && marks == 0 {
		return fmt.Errorf("database %s holds %d tables that feedmeter demo did not make; the demo drops its database at every run, so give it another --database", d.database, tables)
	}
	for _, sql := range []string{
		"DROP DATABASE IF EXISTS " + d.database,
		"CREATE DATABASE " + d.database,
		"CREATE TABLE " + d.database + "." + demoMark + " (made_at DateTime('UTC')) ENGINE = TinyLog",
	} {
		if err := boot.Exec(ctx, sql); err != nil {
			return fmt.Errorf("make the demo database %s anew: %w", d.database, err)
		}
	}
	conn, err := schemas.Connect(ctx, schemas.ConnOptions(d.addr, d.database))
	if err != nil {
		return err
	}
	// The migrations here, not in the sink: every query below meets the tables.
	if _, err := schemas.Apply(ctx, conn); err != nil {
		conn.Close()
		return fmt.Errorf("migrate the demo database %s: %w", d.database, err)
	}
	ln, err := net.Listen("tcp", d.listen)
	if err != nil {
		conn.Close()
		return fmt.Errorf("--listen: %w", err)
	}
	d.conn, d.ln = conn, ln
	return nil
}

// close releases what prepare made.
func (d *downstream) close() {
	if d.conn != nil {
		d.conn.Close()
	}
	if d.ln != nil {
		d.ln.Close()
	}
}

func (d *downstream) run(ctx context.Context) error {
	started := time.Now()
	s, err := sink.New(sink.Config{Brokers: d.brokers, ClickHouse: d.addr, Database: d.database,
		Group: "feedmeter-demo", BatchAge: 200 * time.Millisecond, SkipMigrate: true, Logger: d.log})
	if err != nil {
		return err
	}
	sctx, stopSink := context.WithCancel(ctx)
	// sinkDone is closed when Run has returned, and sinkErr holds its error
	// then: waitSink and stop both wait for it.
	var sinkErr error
	sinkDone := make(chan struct{})
	go func() { sinkErr = s.Run(sctx); close(sinkDone) }()
	stop := func() error {
		stopSink()
		<-sinkDone
		return sinkErr
	}
	defer stop()
	if err := d.waitSink(ctx, sinkDone, func() error { return sinkErr }); err != nil {
		return err
	}
	took := time.Since(started)
	if err := stop(); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	var events, others, rejects uint64
	for _, c := range []struct {
		table string
		n     *uint64
	}{{"usage_events", &events}, {"other_events", &others}, {"rejects", &rejects}} {
		if err := d.conn.QueryRow(ctx, "SELECT count() FROM "+c.table).Scan(c.n); err != nil {
			return fmt.Errorf("count %s: %w", c.table, err)
		}
	}
	fmt.Fprintf(d.out, "\nThe sink wrote the topics into ClickHouse at %s, database %s, in %.1f s: %d usage events, %d other events, %d rejects.\n",
		d.addr, d.database, took.Seconds(), events, others, rejects)

	api, stopAPI, err := serveAPI(d.addr, d.database, d.rates, d.ln, d.log)
	if err != nil {
		return err
	}
	defer stopAPI()

	ok, err := d.checkUsage(ctx, api, others, rejects)
	if err != nil {
		return err
	}
	if err := d.invoices(ctx, api); err != nil {
		return err
	}
	if !ok {
		return errors.New("ClickHouse's rollups differ from feedsim's ground truth (MISMATCH above)")
	}
	fmt.Fprintln(d.out, "\nEvery rollup equals feedsim's ground truth.")
	if d.keep {
		first := d.truth.Tenants[0].Tenant
		fmt.Fprintf(d.out, "\nThe usage page: %s/#tenant=%s&period=%s\nThe API: %s/v1/… (admin token, also for the page: %s)\nCtrl-C stops.\n",
			api.base, first, d.from.Format("2006-01"), api.base, api.token)
		<-ctx.Done()
	}
	return nil
}

// waitSink waits until sink_progress holds every partition's end, at most
// two minutes.
func (d *downstream) waitSink(ctx context.Context, sinkDone <-chan struct{}, sinkErr func() error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		at, err := sinkProgress(ctx, d.conn)
		if err != nil {
			return err
		}
		var behind []string
		for tp, end := range d.ends {
			if at[tp] < end {
				behind = append(behind, fmt.Sprintf("%s/%d at %d of %d", tp.topic, tp.partition, at[tp], end))
			}
		}
		if len(behind) == 0 {
			return nil
		}
		sort.Strings(behind)
		select {
		case <-sinkDone:
			return fmt.Errorf("the sink stopped before it had written everything (%s): %v", strings.Join(behind, ", "), sinkErr())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sink has not written everything after two minutes: %s", strings.Join(behind, ", "))
		}
	}
}

// sinkProgress reads where the sink stands in each partition.
func sinkProgress(ctx context.Context, conn driver.Conn) (map[topicPartition]int64, error) {
	rows, err := conn.Query(ctx, "SELECT kafka_topic, kafka_partition, max(next_offset) FROM sink_progress GROUP BY kafka_topic, kafka_partition")
	if err != nil {
		return nil, fmt.Errorf("read sink_progress: %w", err)
	}
	defer rows.Close()
	at := map[topicPartition]int64{}
	for rows.Next() {
		var tp topicPartition
		var n uint64
		if err := rows.Scan(&tp.topic, &tp.partition, &n); err != nil {
			return nil, fmt.Errorf("read sink_progress: %w", err)
		}
		at[tp] = int64(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read sink_progress: %w", err)
	}
	return at, nil
}

// checkUsage asks the usage API for every tenant's days (a day more on
// each side, so that every interval's pieces are in) and prints the sums
// beside feedsim's ground truth; it also holds the rejects to the entries
// feedsim served malformed.
func (d *downstream) checkUsage(ctx context.Context, api apiGetter, others, rejects uint64) (bool, error) {
	fmt.Fprintf(d.out, "\nThe query service's usage of %s – %s (GET /v1/tenants/{tid}/usage), beside feedsim's ground truth:\n\n",
		d.from.Format(time.DateOnly), d.to.AddDate(0, 0, -1).Format(time.DateOnly))
	tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\tkind\tevents\ttruth\tmeasure\tvalue\ttruth\t")
	ok := true
	malformed := 0
	var otherTruth uint64
	for _, tt := range d.truth.Tenants {
		malformed += len(tt.Malformed)
		var ans struct {
			Rows []struct {
				Kind        string  `json:"kind"`
				Bytes       string  `json:"bytes"`
				ByteSeconds string  `json:"byte_seconds"`
				ServerDays  *uint64 `json:"server_days"`
				Events      uint64  `json:"events"`
			} `json:"rows"`
		}
		v := url.Values{"granularity": {"day"}, "from": {d.from.AddDate(0, 0, -1).Format(time.DateOnly)},
			"to": {d.to.AddDate(0, 0, 1).Format(time.DateOnly)}}
		if err := api.get(ctx, "/v1/tenants/"+url.PathEscape(tt.Tenant)+"/usage?"+v.Encode(), &ans); err != nil {
			return false, err
		}
		type sums struct {
			events uint64
			value  big.Int
		}
		got, want := map[string]*sums{}, map[string]*sums{}
		add := func(m map[string]*sums, kind string, events uint64, value string) error {
			s := m[kind]
			if s == nil {
				s = new(sums)
				m[kind] = s
			}
			s.events += events
			if value == "" {
				return nil
			}
			x, ok := new(big.Int).SetString(value, 10)
			if !ok {
				return fmt.Errorf("tenant %s, %s: %q is not an integer", tt.Tenant, kind, value)
			}
			s.value.Add(&s.value, x)
			return nil
		}
		for _, r := range ans.Rows {
			value := r.Bytes
			switch {
			case r.Kind == string(model.KindStorage):
				value = r.ByteSeconds
			case r.ServerDays != nil:
				value = fmt.Sprint(*r.ServerDays)
			}
			if err := add(got, r.Kind, r.Events, value); err != nil {
				return false, err
			}
		}
		for _, day := range tt.Days {
			if day.Kind == string(model.KindOther) {
				otherTruth += uint64(day.Entries)
				continue
			}
			value := day.BandwidthBytes
			switch day.Kind {
			case string(model.KindStorage):
				value = day.StorageByteSeconds
			case string(model.KindLicense):
				value = fmt.Sprint(day.LicensedServers)
			}
			if err := add(want, day.Kind, uint64(day.Entries), value); err != nil {
				return false, err
			}
		}
		for _, kind := range []string{string(model.KindBandwidthIn), string(model.KindBandwidthOut), string(model.KindStorage), string(model.KindLicense)} {
			g, w := got[kind], want[kind]
			if g == nil {
				g = new(sums)
			}
			if w == nil {
				w = new(sums)
			}
			measure := map[string]string{string(model.KindStorage): "byte-seconds", string(model.KindLicense): "server-days"}[kind]
			if measure == "" {
				measure = "bytes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", tt.Tenant, kind, g.events, w.events, measure, g.value.String(), w.value.String())
			if g.events != w.events || g.value.Cmp(&w.value) != 0 {
				ok = false
			}
		}
	}
	tw.Flush()
	// The truth leaves out the entries it served malformed (it lists
	// them): those are rejects. System entries (kind other) have no usage,
	// only their table.
	fmt.Fprintf(d.out, "\nother events in ClickHouse: %d (feedsim served %d)\n", others, otherTruth)
	fmt.Fprintf(d.out, "rejects in ClickHouse: %d (feedsim served %d entries malformed)\n", rejects, malformed)
	if others != otherTruth || rejects != uint64(malformed) {
		ok = false
	}
	if !ok {
		fmt.Fprintln(d.out, "MISMATCH")
	}
	return ok, nil
}

// invoices prints every tenant's invoice for feedsim's days.
func (d *downstream) invoices(ctx context.Context, api apiGetter) error {
	fmt.Fprintf(d.out, "\nInvoices for the same days (GET /v1/tenants/{tid}/invoice, the rate card's %s):\n", d.rates.Currency)
	for _, tt := range d.truth.Tenants {
		var inv struct {
			Lines []struct {
				From      string `json:"from"`
				To        string `json:"to"`
				Item      string `json:"item"`
				Quantity  string `json:"quantity"`
				Unit      string `json:"unit"`
				UnitPrice string `json:"unit_price"`
				Amount    string `json:"amount"`
			} `json:"lines"`
			Total    string `json:"total"`
			Currency string `json:"currency"`
		}
		v := url.Values{"from": {d.from.Format(time.DateOnly)}, "to": {d.to.Format(time.DateOnly)}}
		if err := api.get(ctx, "/v1/tenants/"+url.PathEscape(tt.Tenant)+"/invoice?"+v.Encode(), &inv); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "\ntenant %s\n", tt.Tenant)
		tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "from\tto\titem\tquantity\tunit\tunit price\tamount\t")
		for _, l := range inv.Lines {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", day(l.From), day(l.To), l.Item, l.Quantity, l.Unit, l.UnitPrice, l.Amount)
		}
		fmt.Fprintf(tw, "total\t\t\t\t\t\t%s %s\t\n", inv.Total, inv.Currency)
		tw.Flush()
	}
	return nil
}

// serveAPI serves the query service on ln from database on addr, priced by
// rates, with an admin token of its own, until stop is called (which
// closes ln too).
func serveAPI(addr, database string, rates *query.RateCard, ln net.Listener, log *slog.Logger) (api apiGetter, stop func(), err error) {
	qconn, err := query.OpenClickHouse(addr, database, "default", "")
	if err != nil {
		return apiGetter{}, nil, err
	}
	fail := func(err error) (apiGetter, func(), error) {
		qconn.Close()
		return apiGetter{}, nil, err
	}
	token, hash, err := query.NewToken()
	if err != nil {
		return fail(err)
	}
	tokens, err := query.ParseTokens([]byte("tokens:\n" + query.TokenLine(hash, query.Principal{Admin: true, Name: "demo"}) + "\n"))
	if err != nil {
		return fail(err)
	}
	srv, err := query.New(query.Config{Store: query.NewClickHouse(qconn), Rates: rates, Tokens: tokens, Logger: log})
	if err != nil {
		return fail(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	return apiGetter{base: "http://" + ln.Addr().String(), token: token}, func() { hs.Close(); qconn.Close() }, nil
}

// day shortens an RFC 3339 time at a UTC midnight to its date.
func day(ts string) string { return strings.TrimSuffix(ts, "T00:00:00Z") }

// apiGetter asks the demo's query service with its admin token.
type apiGetter struct{ base, token string }

func (a apiGetter) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}
