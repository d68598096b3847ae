package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/feedsim"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestDemo runs the whole pipeline as make run does: feedsim with faults,
// ingest, Kafka, the sink, ClickHouse and the query service, with the
// demo's own check of every rollup against feedsim's truth.
func TestDemo(t *testing.T) {
	db := chtest.NewDB(t, false) // the demo drops and makes it anew; the test drops it at the end
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"demo", "--clickhouse", db.Addr, "--database", db.Name,
		"--tenants", "2", "--days", "3", "--format", "json"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"every entry counted once.", "Every rollup equals feedsim's ground truth."} {
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
}

// TestDemoMismatch holds the demo's comparison to what it checks: a usage
// answer a byte off, a reject or a system event too many, is a MISMATCH.
func TestDemoMismatch(t *testing.T) {
	cfg := feedsim.DefaultConfig()
	cfg.Tenants, cfg.Days = 1, 2
	sim, err := feedsim.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	truth := sim.Truth()
	tt := truth.Tenants[0]
	// The truth as the usage API would answer it, day by day.
	rowsOf := func(off int) string {
		var rows []string
		for _, d := range tt.Days {
			var v string
			switch d.Kind {
			case "other":
				continue
			case "storage":
				v = fmt.Sprintf(`"byte_seconds":%q`, d.StorageByteSeconds)
			case "license":
				v = fmt.Sprintf(`"server_days":%d`, d.LicensedServers)
			default:
				v = fmt.Sprintf(`"bytes":%q`, d.BandwidthBytes)
			}
			rows = append(rows, fmt.Sprintf(`{"kind":%q,%s,"events":%d}`, d.Kind, v, d.Entries))
		}
		if off != 0 {
			rows = append(rows, fmt.Sprintf(`{"kind":"bandwidthOut","bytes":"%d","events":0}`, off))
		}
		return `{"rows":[` + strings.Join(rows, ",") + `]}`
	}
	malformed := uint64(len(tt.Malformed))
	var others uint64
	for _, d := range tt.Days {
		if d.Kind == "other" {
			others += uint64(d.Entries)
		}
	}
	for _, c := range []struct {
		name            string
		off             int
		others, rejects uint64
		ok              bool
	}{
		{"equal", 0, others, malformed, true},
		{"a byte more", 1, others, malformed, false},
		{"a reject more", 0, others, malformed + 1, false},
		{"an other event more", 0, others + 1, malformed, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok" {
					http.Error(w, "no token", http.StatusUnauthorized)
					return
				}
				io.WriteString(w, rowsOf(c.off))
			}))
			defer api.Close()
			var out bytes.Buffer
			d := &downstream{truth: truth, out: &out, from: cfg.Start, to: cfg.Start.Add(48 * time.Hour)}
			ok, err := d.checkUsage(context.Background(), apiGetter{base: api.URL, token: "tok"}, c.others, c.rejects)
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.ok || strings.Contains(out.String(), "MISMATCH") == c.ok {
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
