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
	"slices"
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

	truth       feedsim.Truth  // as of the end of ingest
	corrections map[string]int // by tenant: usage events in Kafka with a referenceId
	brokers     []string
	ends        map[topicPartition]int64 // offset after each partition's last record
	log         *slog.Logger
	out         io.Writer
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
	w, err := readWritten(ctx, d.conn)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\nThe sink wrote the topics into ClickHouse at %s, database %s, in %.1f s: %d usage events, %d other events, %d rejects.\n",
		d.addr, d.database, took.Seconds(), w.events, w.others, len(w.rejects))

	api, stopAPI, err := serveAPI(d.addr, d.database, d.rates, d.ln, d.log)
	if err != nil {
		return err
	}
	defer stopAPI()

	ok, err := d.checkUsage(ctx, api, w)
	if err != nil {
		return err
	}
	invoicesOK, err := d.invoices(ctx, api)
	if err != nil {
		return err
	}
	if !ok || !invoicesOK {
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
	at := map[topicPartition]int64{}
	err := scanRows(ctx, conn, "SELECT kafka_topic, kafka_partition, max(next_offset) FROM sink_progress GROUP BY kafka_topic, kafka_partition", func(rows driver.Rows) error {
		var tp topicPartition
		var n uint64
		err := rows.Scan(&tp.topic, &tp.partition, &n)
		at[tp] = int64(n)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read sink_progress: %w", err)
	}
	return at, nil
}

// written is what the sink wrote into ClickHouse, besides the rollups
// that the query service reads.
type written struct {
	events, others uint64 // rows of usage_events and other_events
	rejects        []writtenReject
	identity       map[string]*identityCounts // by tenant
}

// writtenReject is a row of rejects.
type writtenReject struct{ stage, entryID, reason string }

// identityCounts is what a tenant's identity facts left in ClickHouse:
// copies that were not counted (v_event_copies: republished, or
// conflicts), and events with a referenceId (corrections) or replaced by
// one (v_usage_events).
type identityCounts struct{ republished, conflicts, corrections, replaced uint64 }

// readWritten reads what the sink wrote.
func readWritten(ctx context.Context, conn driver.Conn) (*written, error) {
	w := &written{identity: map[string]*identityCounts{}}
	for _, c := range []struct {
		table string
		n     *uint64
	}{{"usage_events", &w.events}, {"other_events", &w.others}} {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+c.table).Scan(c.n); err != nil {
			return nil, fmt.Errorf("count %s: %w", c.table, err)
		}
	}
	err := scanRows(ctx, conn, "SELECT stage, entry_id, reason FROM rejects", func(rows driver.Rows) error {
		var r writtenReject
		err := rows.Scan(&r.stage, &r.entryID, &r.reason)
		w.rejects = append(w.rejects, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, q := range []struct {
		sql string
		set func(c *identityCounts, a, b uint64)
	}{
		{"SELECT tenant_id, countIf(conflict = 0), countIf(conflict = 1) FROM v_event_copies GROUP BY tenant_id",
			func(c *identityCounts, a, b uint64) { c.republished, c.conflicts = a, b }},
		{"SELECT tenant_id, countIf(reference_id != ''), countIf(counted = 0) FROM v_usage_events GROUP BY tenant_id",
			func(c *identityCounts, a, b uint64) { c.corrections, c.replaced = a, b }},
	} {
		err := scanRows(ctx, conn, q.sql, func(rows driver.Rows) error {
			var tenant string
			var a, b uint64
			if err := rows.Scan(&tenant, &a, &b); err != nil {
				return err
			}
			c := w.identity[tenant]
			if c == nil {
				c = new(identityCounts)
				w.identity[tenant] = c
			}
			q.set(c, a, b)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

// scanRows runs sql and calls scan on each row.
func scanRows(ctx context.Context, conn driver.Conn, sql string, scan func(driver.Rows) error) error {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// billedKinds are the kinds the usage API and the invoices measure, in
// the order the demo prints them.
var billedKinds = []model.Kind{model.KindBandwidthIn, model.KindBandwidthOut, model.KindStorage, model.KindLicense}

// measures are a kind's figures: events, and the kind's measure (bytes,
// byte-seconds or licensed server-days; none for kind other).
type measures struct {
	events uint64
	value  big.Int
}

// measureName names what measures.value counts for a kind.
func measureName(k model.Kind) string {
	switch k {
	case model.KindStorage:
		return "byte-seconds"
	case model.KindLicense:
		return "server-days"
	}
	return "bytes"
}

// addMeasures adds events and a decimal value (none when empty) to m's sums of kind.
func addMeasures(m map[model.Kind]*measures, kind model.Kind, events uint64, value string) error {
	s := m[kind]
	if s == nil {
		s = new(measures)
		m[kind] = s
	}
	s.events += events
	if value == "" {
		return nil
	}
	x, ok := new(big.Int).SetString(value, 10)
	if !ok {
		return fmt.Errorf("%s: %q is not an integer", kind, value)
	}
	s.value.Add(&s.value, x)
	return nil
}

// billed sums what a bill counts of a tenant's truth per kind, over the
// days in [from, to): each event once, corrections applied (Billed; the
// served figures count every copy).
func billed(tt feedsim.TenantTruth, from, to time.Time) (map[model.Kind]*measures, error) {
	out := map[model.Kind]*measures{}
	for _, d := range tt.Days {
		if d.Day < from.Format(time.DateOnly) || d.Day >= to.Format(time.DateOnly) {
			continue
		}
		b := d.Billed
		value := b.BandwidthBytes
		switch model.Kind(d.Kind) {
		case model.KindStorage:
			value = b.StorageByteSeconds
		case model.KindLicense:
			value = fmt.Sprint(b.LicensedServers)
		case model.KindOther:
			value = ""
		}
		if err := addMeasures(out, model.Kind(d.Kind), uint64(b.Entries), value); err != nil {
			return nil, fmt.Errorf("feedsim's truth of tenant %s on %s: %w", tt.Tenant, d.Day, err)
		}
	}
	return out, nil
}

// checkUsage asks the usage API for every tenant's days (a day more on
// each side, so that every interval's pieces are in) and prints the sums
// beside what feedsim's ground truth says a bill counts; it holds what the
// sink wrote of the identity facts (copies, conflicts, corrections) to the
// truth, and the rejects to the entries feedsim served malformed and the
// conflicting copies, each of which must name the copy that counts.
func (d *downstream) checkUsage(ctx context.Context, api apiGetter, w *written) (bool, error) {
	fmt.Fprintf(d.out, "\nThe query service's usage of %s – %s (GET /v1/tenants/{tid}/usage), beside feedsim's ground truth\n(billed: each event once, corrections applied):\n\n",
		d.from.Format(time.DateOnly), d.to.AddDate(0, 0, -1).Format(time.DateOnly))
	tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\tkind\tevents\ttruth\tmeasure\tvalue\ttruth\t")
	ok := true
	var otherTruth uint64
	for _, tt := range d.truth.Tenants {
		var ans struct {
			Rows []struct {
				Kind        model.Kind `json:"kind"`
				Bytes       string     `json:"bytes"`
				ByteSeconds string     `json:"byte_seconds"`
				ServerDays  *uint64    `json:"server_days"`
				Events      uint64     `json:"events"`
			} `json:"rows"`
		}
		v := url.Values{"granularity": {"day"}, "from": {d.from.AddDate(0, 0, -1).Format(time.DateOnly)},
			"to": {d.to.AddDate(0, 0, 1).Format(time.DateOnly)}}
		if err := api.get(ctx, "/v1/tenants/"+url.PathEscape(tt.Tenant)+"/usage?"+v.Encode(), &ans); err != nil {
			return false, err
		}
		got := map[model.Kind]*measures{}
		for _, r := range ans.Rows {
			value := r.Bytes
			switch {
			case r.Kind == model.KindStorage:
				value = r.ByteSeconds
			case r.ServerDays != nil:
				value = fmt.Sprint(*r.ServerDays)
			}
			if err := addMeasures(got, r.Kind, r.Events, value); err != nil {
				return false, fmt.Errorf("usage of tenant %s: %w", tt.Tenant, err)
			}
		}
		want, err := billed(tt, time.Time{}, d.to.AddDate(0, 0, 1))
		if err != nil {
			return false, err
		}
		if o := want[model.KindOther]; o != nil {
			otherTruth += o.events
		}
		for _, kind := range billedKinds {
			g, w := got[kind], want[kind]
			if g == nil {
				g = new(measures)
			}
			if w == nil {
				w = new(measures)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", tt.Tenant, kind, g.events, w.events, measureName(kind), g.value.String(), w.value.String())
			if g.events != w.events || g.value.Cmp(&w.value) != 0 {
				ok = false
			}
		}
	}
	tw.Flush()
	if !d.checkIdentity(w) {
		ok = false
	}
	// The truth leaves out the entries it served malformed (it lists
	// them): those are rejects, as are the conflicting copies. System
	// entries and summaries (kind other) have no usage, only their table.
	fmt.Fprintf(d.out, "\nother events in ClickHouse: %d (feedsim's truth: %d)\n", w.others, otherTruth)
	if w.others != otherTruth {
		ok = false
	}
	if !d.checkRejects(w.rejects) {
		ok = false
	}
	if !ok {
		fmt.Fprintln(d.out, "MISMATCH")
	}
	return ok, nil
}

// checkIdentity prints per tenant the copies, conflicts, corrections and
// replaced events that ClickHouse holds (v_event_copies, v_usage_events)
// beside feedsim's truth (corrections: beside Kafka's usage events with a
// referenceId), and reports whether they are equal.
func (d *downstream) checkIdentity(w *written) bool {
	fmt.Fprintf(d.out, "\nIdentity facts in ClickHouse (v_event_copies, v_usage_events), beside feedsim's truth and Kafka:\n\n")
	tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\trepublished\ttruth\tconflicts\ttruth\tcorrections\tKafka\treplaced\ttruth\t")
	ok := true
	for _, tt := range d.truth.Tenants {
		g := w.identity[tt.Tenant]
		if g == nil {
			g = new(identityCounts)
		}
		republished, conflicts, replaced := facts(tt)
		want := identityCounts{uint64(republished), uint64(conflicts), uint64(d.corrections[tt.Tenant]), uint64(replaced)}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", tt.Tenant, g.republished, want.republished,
			g.conflicts, want.conflicts, g.corrections, want.corrections, g.replaced, want.replaced)
		if *g != want {
			ok = false
		}
	}
	tw.Flush()
	return ok
}

// checkRejects holds the rejects to the truth: one per entry served
// malformed and one per conflicting copy, whose reason names both the copy
// and the copy that counts.
func (d *downstream) checkRejects(rejects []writtenReject) bool {
	reasons := map[string][]string{} // of the sink's rejects, by entry id
	for _, r := range rejects {
		if r.stage == model.StageSink {
			reasons[r.entryID] = append(reasons[r.entryID], r.reason)
		}
	}
	malformed, conflicts, named := 0, 0, 0
	var unnamed []string
	for _, tt := range d.truth.Tenants {
		malformed += len(tt.Malformed)
		for _, c := range tt.Conflicts {
			conflicts++
			if slices.ContainsFunc(reasons[c.ID], func(reason string) bool {
				return strings.Contains(reason, c.ID) && strings.Contains(reason, c.KeptID)
			}) {
				named++
			} else if len(unnamed) < 3 {
				unnamed = append(unnamed, fmt.Sprintf("%s (event %s, %s; counts: %s)", c.ID, c.EventID, c.Kind, c.KeptID))
			}
		}
	}
	fmt.Fprintf(d.out, "rejects in ClickHouse: %d (feedsim served %d entries malformed and %d conflicting copies; %d rejects name a conflicting copy and the copy that counts)\n",
		len(rejects), malformed, conflicts, named)
	if len(unnamed) > 0 {
		fmt.Fprintf(d.out, "conflicting copies without a reject that names them and the copy that counts: %s\n", strings.Join(unnamed, ", "))
	}
	return len(rejects) == malformed+conflicts && named == conflicts
}

// invoices prints every tenant's invoice for feedsim's days, and the
// measures it priced (its segments) beside what feedsim's ground truth
// says a bill counts of those days; it reports whether they are equal.
func (d *downstream) invoices(ctx context.Context, api apiGetter) (bool, error) {
	fmt.Fprintf(d.out, "\nInvoices for the same days (GET /v1/tenants/{tid}/invoice, the rate card's %s):\n", d.rates.Currency)
	type measured struct {
		tenant string
		got    map[model.Kind]*measures
	}
	var all []measured
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
			Segments []struct {
				BandwidthInBytes          string `json:"bandwidth_in_bytes"`
				BandwidthOutBytes         string `json:"bandwidth_out_bytes"`
				StorageByteSeconds        string `json:"storage_byte_seconds"`
				LicenseServerDays         uint64 `json:"license_server_days"`
				LicenseExternalServerDays uint64 `json:"license_external_server_days"`
			} `json:"segments"`
		}
		v := url.Values{"from": {d.from.Format(time.DateOnly)}, "to": {d.to.Format(time.DateOnly)}}
		if err := api.get(ctx, "/v1/tenants/"+url.PathEscape(tt.Tenant)+"/invoice?"+v.Encode(), &inv); err != nil {
			return false, err
		}
		fmt.Fprintf(d.out, "\ntenant %s\n", tt.Tenant)
		tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "from\tto\titem\tquantity\tunit\tunit price\tamount\t")
		for _, l := range inv.Lines {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", day(l.From), day(l.To), l.Item, l.Quantity, l.Unit, l.UnitPrice, l.Amount)
		}
		fmt.Fprintf(tw, "total\t\t\t\t\t\t%s %s\t\n", inv.Total, inv.Currency)
		tw.Flush()
		got := map[model.Kind]*measures{}
		for _, s := range inv.Segments {
			for _, m := range []struct {
				kind  model.Kind
				value string
			}{
				{model.KindBandwidthIn, s.BandwidthInBytes}, {model.KindBandwidthOut, s.BandwidthOutBytes},
				{model.KindStorage, s.StorageByteSeconds}, {model.KindLicense, fmt.Sprint(s.LicenseServerDays + s.LicenseExternalServerDays)},
			} {
				if err := addMeasures(got, m.kind, 0, m.value); err != nil {
					return false, fmt.Errorf("invoice of tenant %s: %w", tt.Tenant, err)
				}
			}
		}
		all = append(all, measured{tt.Tenant, got})
	}
	fmt.Fprintf(d.out, "\nWhat the invoices measured (their segments), beside feedsim's ground truth (billed):\n\n")
	tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\tkind\tmeasure\tinvoice\ttruth\t")
	ok := true
	for i, m := range all {
		want, err := billed(d.truth.Tenants[i], d.from, d.to)
		if err != nil {
			return false, err
		}
		for _, kind := range billedKinds {
			g, w := m.got[kind], want[kind]
			if g == nil {
				g = new(measures)
			}
			if w == nil {
				w = new(measures)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", m.tenant, kind, measureName(kind), g.value.String(), w.value.String())
			if g.value.Cmp(&w.value) != 0 {
				ok = false
			}
		}
	}
	tw.Flush()
	if !ok {
		fmt.Fprintln(d.out, "MISMATCH")
	}
	return ok, nil
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
