package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/feedsim"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/query"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestDemo runs the whole pipeline as make run does: feedsim with faults
// and its identity facts (republished events, conflicting copies,
// corrections), ingest, Kafka, the sink, ClickHouse and the query service,
// with the demo's own check of every rollup against feedsim's truth. The
// facts must be in the run: with events replaced, the figures a bill counts
// are not the figures served, so a demo that held ClickHouse to the served
// ones would fail here (TestDemoMismatch shows it without ClickHouse).
func TestDemo(t *testing.T) {
	db := chtest.NewDB(t, false) // the demo drops and makes it anew; the test drops it at the end
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"demo", "--clickhouse", db.Addr, "--database", db.Name,
		"--tenants", "2", "--days", "3", "--format", "json"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"every entry counted once.", "Every rollup equals feedsim's ground truth.", "cuf " + demoCUF} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out.String())
		}
	}
	if n := len(regexp.MustCompile(`(?m)^\s*total\s+[0-9]+\.[0-9]{2} USD\s*$`).FindAllString(out.String(), -1)); n != 2 {
		t.Errorf("%d invoice totals, want 2:\n%s", n, out.String())
	}
	// What the demo says it wrote is in its database.
	m := regexp.MustCompile(`: ([0-9]+) usage events`).FindStringSubmatch(out.String())
	got := chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM "+db.Name+".usage_events")
	if m == nil || len(got) != 1 || got[0] != m[1] || m[1] == "0" {
		t.Errorf("usage_events holds %v rows; the demo said %v", got, m)
	}
	// The run's truth had every fact: the demo prints it per tenant.
	facts := servedFacts(t, out.String())
	if len(facts) != 2 {
		t.Fatalf("identity facts of %d tenants, want 2:\n%s", len(facts), out.String())
	}
	var sum [4]int
	for _, f := range facts {
		for i := range sum {
			sum[i] += f[i]
		}
	}
	for i, name := range []string{"republished", "conflicts", "corrections", "replaced"} {
		if sum[i] == 0 {
			t.Errorf("no %s in the run:\n%s", name, out.String())
		}
	}
}

// servedFacts reads the demo's table of identity facts served: per tenant,
// republished, conflicts, corrections and replaced.
func servedFacts(t *testing.T, out string) map[string][4]int {
	t.Helper()
	_, table, ok := strings.Cut(out, "Identity facts served")
	if !ok {
		t.Fatalf("no table of identity facts:\n%s", out)
	}
	table, _, _ = strings.Cut(table, "A republished entry")
	facts := map[string][4]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*([0-9]+)\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)\s*$`).FindAllStringSubmatch(table, -1) {
		var f [4]int
		for i := range f {
			f[i], _ = strconv.Atoi(m[i+2])
		}
		facts[m[1]] = f
	}
	return facts
}

// TestDemoMismatch holds the demo's comparison to what it checks, with the
// identity facts on: usage and invoices that equal what the truth bills
// pass; a byte off, or the figures served (every copy, replaced events
// too) where the billed ones belong, a reject, a copy or a replaced event
// too many or too few, a conflict whose reject does not name the copy that
// counts, or a system event too many, is a MISMATCH.
func TestDemoMismatch(t *testing.T) {
	cfg := feedsim.DefaultConfig()
	cfg.Tenants, cfg.Days = 1, 2
	var err error
	cfg.CUF, err = feedsim.ParseCUF("republish=0.1,conflict=0.05,correct=0.1,chain=0.3,early=0.2,sibling=0.2,orphan=0.1,midnight=0.1,summary=0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Faults.Malformed = 0.01
	sim, err := feedsim.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	truth := sim.Truth()
	tt := truth.Tenants[0]
	from, to := cfg.Start, cfg.Start.AddDate(0, 0, cfg.Days)
	republished, conflicts, replaced := facts(tt)
	if republished == 0 || conflicts == 0 || replaced == 0 || len(tt.Malformed) == 0 {
		t.Fatalf("the truth lacks a fact the test needs: %d republished, %d conflicts, %d replaced, %d malformed",
			republished, conflicts, replaced, len(tt.Malformed))
	}
	figures := func(d feedsim.DayTruth, served bool) feedsim.Usage {
		if served {
			return d.Usage
		}
		return d.Billed
	}
	// The truth as the usage API would answer it, day by day.
	usageOf := func(served bool, off int) string {
		var rows []string
		for _, d := range tt.Days {
			u := figures(d, served)
			var v string
			switch model.Kind(d.Kind) {
			case model.KindOther:
				continue
			case model.KindStorage:
				v = fmt.Sprintf(`"byte_seconds":%q`, u.StorageByteSeconds)
			case model.KindLicense:
				v = fmt.Sprintf(`"server_days":%d`, u.LicensedServers)
			default:
				v = fmt.Sprintf(`"bytes":%q`, u.BandwidthBytes)
			}
			rows = append(rows, fmt.Sprintf(`{"kind":%q,%s,"events":%d}`, d.Kind, v, u.Entries))
		}
		if off != 0 {
			rows = append(rows, fmt.Sprintf(`{"kind":"bandwidthOut","bytes":"%d","events":0}`, off))
		}
		return `{"rows":[` + strings.Join(rows, ",") + `]}`
	}
	// The truth as the invoice would measure it, in one segment.
	invoiceOf := func(served bool) string {
		var in, out, secs big.Int
		var servers int
		for _, d := range tt.Days {
			u := figures(d, served)
			for _, m := range []struct {
				kind model.Kind
				sum  *big.Int
				v    string
			}{{model.KindBandwidthIn, &in, u.BandwidthBytes}, {model.KindBandwidthOut, &out, u.BandwidthBytes}, {model.KindStorage, &secs, u.StorageByteSeconds}} {
				if x, ok := new(big.Int).SetString(m.v, 10); ok && d.Kind == string(m.kind) {
					m.sum.Add(m.sum, x)
				}
			}
			if d.Kind == string(model.KindLicense) {
				servers += u.LicensedServers
			}
		}
		return fmt.Sprintf(`{"lines":[],"total":"0.00","currency":"USD","segments":[{"bandwidth_in_bytes":%q,"bandwidth_out_bytes":%q,"storage_byte_seconds":%q,"license_server_days":%d,"license_external_server_days":0}]}`,
			in.String(), out.String(), secs.String(), servers)
	}
	// What the sink writes of the truth.
	writtenOf := func() *written {
		w := &written{identity: map[string]*identityCounts{tt.Tenant: {uint64(republished), uint64(conflicts), 5, uint64(replaced)}}}
		for _, d := range tt.Days {
			if d.Kind == string(model.KindOther) {
				w.others += uint64(d.Billed.Entries)
			}
		}
		for _, m := range tt.Malformed {
			w.rejects = append(w.rejects, writtenReject{model.StageIngest, m.ID, "malformed"})
		}
		for _, c := range tt.Conflicts {
			w.rejects = append(w.rejects, writtenReject{model.StageSink, c.ID, "conflicting copy of event " + c.EventID + ": entry " + c.ID + " says other than entry " + c.KeptID})
		}
		return w
	}
	rates, err := query.ParseRateCard(query.ExampleRateCard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name                       string
		servedUsage, servedInvoice bool
		off                        int
		change                     func(w *written)
		ok                         bool
	}{
		{name: "equal", ok: true},
		{name: "a byte more", off: 1},
		{name: "the usage served", servedUsage: true},
		{name: "the invoice's measures served", servedInvoice: true},
		{name: "a reject more", change: func(w *written) { w.rejects = append(w.rejects, w.rejects[0]) }},
		{name: "a conflict's reject that names one entry", change: func(w *written) {
			r := &w.rejects[len(w.rejects)-1]
			r.reason = strings.ReplaceAll(r.reason, tt.Conflicts[len(tt.Conflicts)-1].KeptID, "another entry")
		}},
		{name: "an other event more", change: func(w *written) { w.others++ }},
		{name: "a republish uncounted", change: func(w *written) { w.identity[tt.Tenant].republished-- }},
		{name: "a replaced event more", change: func(w *written) { w.identity[tt.Tenant].replaced++ }},
		{name: "a correction more", change: func(w *written) { w.identity[tt.Tenant].corrections++ }},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok" {
					http.Error(w, "no token", http.StatusUnauthorized)
					return
				}
				if strings.HasSuffix(r.URL.Path, "/invoice") {
					io.WriteString(w, invoiceOf(c.servedInvoice))
					return
				}
				io.WriteString(w, usageOf(c.servedUsage, c.off))
			}))
			defer api.Close()
			var out bytes.Buffer
			d := &downstream{truth: truth, corrections: map[string]int{tt.Tenant: 5}, rates: rates, out: &out, from: from, to: to}
			w := writtenOf()
			if c.change != nil {
				c.change(w)
			}
			usageOK, err := d.checkUsage(context.Background(), apiGetter{base: api.URL, token: "tok"}, w)
			if err != nil {
				t.Fatal(err)
			}
			invoicesOK, err := d.invoices(context.Background(), apiGetter{base: api.URL, token: "tok"})
			if err != nil {
				t.Fatal(err)
			}
			if ok := usageOK && invoicesOK; ok != c.ok || strings.Contains(out.String(), "MISMATCH") == c.ok {
				t.Errorf("ok %v, want %v:\n%s", ok, c.ok, out.String())
			}
		})
	}
}

// TestDemoRefusesAnotherDatabase: the demo drops its database at every
// run, so it refuses one that holds tables it did not make (an operator's
// --database feedmeter), and leaves that database as it was.
func TestDemoRefusesAnotherDatabase(t *testing.T) {
	db := chtest.NewDB(t, true) // migrated: the tables of a real pipeline
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"demo", "--clickhouse", db.Addr, "--database", db.Name,
		"--tenants", "1", "--days", "1"}, nil, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "feedmeter demo did not make") {
		t.Fatalf("exit %d, stderr %q; want a refusal", code, errb.String())
	}
	if got := chtest.QueryStrings(t, db.Conn, "SELECT name FROM system.tables WHERE database = '"+db.Name+"' AND name = 'usage_events'"); len(got) != 1 {
		t.Errorf("usage_events after the refusal: %v", got)
	}
}

// TestDemoSinkStopsEarly: a sink that stops before it has written
// everything (here: a broker address its Kafka client refuses) ends the
// demo with the reason, and does not hang it.
func TestDemoSinkStopsEarly(t *testing.T) {
	db := chtest.NewDB(t, false)
	d := &downstream{addr: db.Addr, database: db.Name, listen: "127.0.0.1:0",
		brokers: []string{"127.0.0.1:notaport"},
		ends:    map[topicPartition]int64{{"feedmeter.usage.v1", 0}: 1},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)), out: io.Discard}
	if err := d.prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	done := make(chan error, 1)
	go func() { done <- d.run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "the sink stopped") {
			t.Errorf("run: %v, want the sink stopped", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo hangs after its sink stopped early")
	}
}

// TestDemoFlags: flags the demo cannot use are refused before it starts.
func TestDemoFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--days", "0"},
		{"--database", "no-dashes", "--clickhouse", "127.0.0.1:1"},
		{"--rates", "/nonexistent/rates.yaml"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"demo"}, args...), nil, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
	// --database default: refused before anything is dropped.
	db := chtest.NewDB(t, false)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"demo", "--clickhouse", db.Addr, "--database", "default"}, nil, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "name one of its own") || strings.Contains(out.String(), "feedsim at") {
		t.Errorf("--database default: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
