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
// answer a byte off, or a reject too many, is a MISMATCH.
func TestDemoMismatch(t *testing.T) {
	cfg := feedsim.DefaultConfig()
	cfg.Tenants, cfg.Days = 1, 2
	sim, err := feedsim.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	tt := sim.Truth().Tenants[0]
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
	for _, c := range []struct {
		name    string
		off     int
		rejects uint64
		ok      bool
	}{
		{"equal", 0, malformed, true},
		{"a byte more", 1, malformed, false},
		{"a reject more", 0, malformed + 1, false},
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
			d := &downstream{sim: sim, out: &out, from: cfg.Start, to: cfg.Start.Add(48 * time.Hour)}
			ok, err := d.checkUsage(apiGetter{base: api.URL, token: "tok"}, c.rejects)
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
