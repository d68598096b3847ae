package query

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// checkingStore is a Store that answers every query with a little data and
// panics when a handler breaks the contract of a query (buckets off the
// grain, out of order, days that do not refine the buckets, limits out of
// range), so the fuzzer sees contract violations as 500s too.
type checkingStore struct{}

func checkBounds(what string, b []time.Time) {
	if len(b) < 2 {
		panic(what + ": fewer than two bounds")
	}
	for i, t := range b {
		if !onGrain(t) || t.Before(minInstant) || t.After(maxInstant) {
			panic(fmt.Sprintf("%s: bound %s off the grain or range", what, t))
		}
		if i > 0 && !t.After(b[i-1]) {
			panic(what + ": bounds not ascending")
		}
	}
}

func refines(fine, coarse []time.Time) bool {
	set := map[int64]bool{}
	for _, t := range fine {
		set[t.Unix()] = true
	}
	for _, t := range coarse {
		if !set[t.Unix()] {
			return false
		}
	}
	return fine[0].Equal(coarse[0]) && fine[len(fine)-1].Equal(coarse[len(coarse)-1])
}

func (checkingStore) Usage(_ context.Context, q UsageQuery) ([]UsageSum, error) {
	checkBounds("usage", q.Bounds)
	var out []UsageSum
	for b := 0; b+1 < len(q.Bounds) && b < 50; b++ {
		for _, k := range q.Kinds {
			out = append(out, UsageSum{Bucket: b, Kind: k, Group: make([]string, len(q.GroupBy)),
				Quantity: big.NewInt(int64(b) + 1), ByteSeconds: big.NewInt(3600), Events: 1})
		}
	}
	return out, nil
}

func (checkingStore) Licences(_ context.Context, q UsageQuery) ([]LicenceSum, error) {
	checkBounds("licence buckets", q.Bounds)
	checkBounds("licence days", q.Days)
	if !refines(q.Days, q.Bounds) {
		panic("licence days do not refine the buckets")
	}
	return []LicenceSum{{Bucket: 0, Group: make([]string, len(q.GroupBy)), Servers: 2, ServerDays: 3, Events: 1}}, nil
}

func (checkingStore) Readings(_ context.Context, p *Plan) (*Readings, error) {
	checkBounds("segments", p.SegmentBounds())
	checkBounds("days", p.Days)
	r := NewReadings(p)
	for i := range r.BandwidthIn {
		r.BandwidthIn[i].SetInt64(1 << 40)
		r.StorageByteSeconds[i].SetInt64(1 << 50)
	}
	for i := range r.Licensed {
		r.Licensed[i], r.LicensedExternal[i] = 2, 1
	}
	return r, nil
}

func (checkingStore) Events(_ context.Context, q EventsQuery) ([]EventRow, error) {
	if q.Limit < 2 || q.Limit > maxEventsLimit+1 || !q.From.Before(q.To) {
		panic("bad events query")
	}
	var out []EventRow
	for i := 0; i < 3 && i < q.Limit; i++ {
		out = append(out, EventRow{EntryID: fmt.Sprint("urn:uuid:", i), Kind: "storage", Time: q.From, StartTime: q.From,
			EndTime: q.From.Add(time.Hour), Quantity: 5, ByteSeconds: big.NewInt(18000)})
	}
	return out, nil
}

func (checkingStore) TopTenants(_ context.Context, q TopQuery) ([]TenantUsage, error) {
	if q.Limit < 1 || q.Limit > maxTenantLimit || !q.From.Before(q.To) {
		panic("bad ranking query")
	}
	return []TenantUsage{{Tenant: "1001", Value: big.NewInt(7), Events: 2}}, nil
}

func (checkingStore) Ping(context.Context) error { return nil }

// fuzzSeeds are requests that probe every parameter: the bad requests of
// the API test and good ones around zones, ranges and formats.
func fuzzSeeds() []string {
	var out []string
	for _, b := range badRequests {
		out = append(out, b.path)
	}
	return append(out,
		"/v1/tenants/1001/usage?period=2026-10&tz=Europe/Berlin&granularity=hour",
		"/v1/tenants/1001/usage?from=2026-03-29&to=2026-03-30&tz=Europe/London&granularity=hour&group_by=server",
		"/v1/tenants/1001/usage?from=1970-01-01&to=1970-02-01&tz=Pacific/Kiritimati",
		"/v1/tenants/1001/usage?from=2105-12-01&to=2106-01-01",
		"/v1/tenants/1001/usage?period=2105-12&tz=Pacific/Apia&granularity=month",
		"/v1/tenants/1001/usage?period=1970-01&tz=America/Santiago",
		"/v1/tenants/1001/invoice?period=2026-10&tz=America/Santiago",
		"/v1/tenants/1001/invoice?from=2026-10-16T13:00:00Z&to=2026-10-17T01:00:00Z&format=csv",
		"/v1/tenants/a.b:c-d_e/events?kind=license&limit=1000&tz=Asia/Tokyo",
		"/v1/tenants/1001/events?cursor="+encodeCursor(EventCursor{Time: 1791000000, Kind: "license", EntryID: "urn:uuid:x"}),
		"/v1/usage/tenants?kind=license&limit=1000&from=2026-10-01T05:00:00Z&to=2026-10-03T07:00:00Z",
		"/v1/whoami",
		"/",
		"/ui/app.js",
		"/metrics",
	)
}

// serveOnce runs one request through a Server on checkingStore and
// reports a status that bad input must never cause.
func serveOnce(t *testing.T, s *Server, toks map[string]string, target, accept string, who byte) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://feedmeter.test"+target, nil)
	if err != nil || req.URL.Opaque != "" {
		return // not a request a client can send
	}
	switch who % 4 {
	case 0:
		req.Header.Set("Authorization", "Bearer "+toks["admin"])
	case 1:
		req.Header.Set("Authorization", "Bearer "+toks["1001"])
	case 2:
		req.Header.Set("Authorization", "Bearer "+toks["1002"])
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	switch rec.Code {
	case 200, 301, 307, 308, 400, 401, 403, 404, 405:
	default:
		t.Fatalf("GET %s (who %d, Accept %q): %d %s", target, who%4, accept, rec.Code, rec.Body.String())
	}
	if rec.Code >= 400 {
		var e apiError
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Status != rec.Code || e.Error.Message == "" {
			t.Fatalf("GET %s: %d with a body that is not an error document: %q", target, rec.Code, rec.Body.String())
		}
		if rec.Code == 400 && e.Error.Parameter == "" {
			t.Fatalf("GET %s: 400 naming no parameter: %s", target, rec.Body.String())
		}
		if strings.Contains(rec.Body.String(), "goroutine ") || strings.Contains(rec.Body.String(), ".go:") {
			t.Fatalf("GET %s: the body looks like a stack trace: %s", target, rec.Body.String())
		}
	}
}

// FuzzHandlers sends arbitrary paths, query strings, Accept headers and
// tokens to the handlers: no input may produce a 500 (or a panic, or an
// error without a JSON body naming what is wrong).
//
//	go test -run '^$' -fuzz FuzzHandlers -fuzztime 2m ./query/
func FuzzHandlers(f *testing.F) {
	tokens, toks := testTokens(f, "1001", "1002")
	s, err := New(Config{Store: checkingStore{}, Rates: mustCardF(f, apiRates), Tokens: tokens, Logger: quietLogger(),
		Now: func() time.Time { return time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		f.Fatal(err)
	}
	for i, seed := range fuzzSeeds() {
		path, query, _ := strings.Cut(seed, "?")
		f.Add(path, query, []string{"", "text/csv", "application/json;q=0.5, text/csv"}[i%3], byte(i))
	}
	f.Fuzz(func(t *testing.T, path, query, accept string, who byte) {
		if len(path) > 2000 || len(query) > 4000 || len(accept) > 200 {
			return
		}
		if !strings.HasPrefix(path, "/") {
			path = "/v1/tenants/" + url.PathEscape(path) + "/usage"
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		serveOnce(t, s, toks, target, accept, who)
	})
}

func mustCardF(tb testing.TB, y string) *RateCard {
	rc, err := ParseRateCard([]byte(y))
	if err != nil {
		tb.Fatal(err)
	}
	return rc
}

// TestParametersOnClickHouse sends the fuzz seeds, and variations of each
// parameter, to a server on the real ClickHouse: whatever the handlers let
// through, ClickHouse must answer (no 500 from a query it rejects).
func TestParametersOnClickHouse(t *testing.T) {
	db := chtest.NewDB(t, true)
	loadThroughSink(t, db, genEvents(9, "1001", 80))
	tokens, toks := testTokens(t, "1001", "1002")
	s, err := New(Config{Store: NewClickHouse(db.Conn), Rates: mustCard(t, apiRates), Tokens: tokens, Logger: quietLogger(),
		Now: func() time.Time { return time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	targets := fuzzSeeds()
	for _, tenant := range []string{"1001", "a.b:c-d_e", "Z", strings.Repeat("9", 64), "x'y", "x%27%29--"} {
		for _, ep := range []string{"usage", "invoice", "events"} {
			targets = append(targets, "/v1/tenants/"+tenant+"/"+ep+"?period=2026-10&tz=Europe/Berlin")
		}
	}
	for _, g := range []string{"hour", "day", "month"} {
		for _, tz := range []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Pacific/Apia", "Asia/Kolkata"} {
			for _, groupBy := range []string{"", "server", "region,data_center,resource_id,server"} {
				targets = append(targets, "/v1/tenants/1001/usage?period=2026-10&granularity="+g+"&tz="+tz+"&group_by="+groupBy)
			}
		}
	}
	for _, kind := range append(UsageKinds, "") {
		targets = append(targets, "/v1/usage/tenants?from=2026-09-30T05:00:00Z&to=2026-11-02T07:00:00Z&limit=1000&kind="+kind,
			"/v1/tenants/1001/events?from=2026-09-30T05:00:00Z&to=2026-11-02T07:00:00Z&limit=1000&kind="+kind)
	}
	for i, target := range targets {
		serveOnce(t, s, toks, target, "", byte(i))
		serveOnce(t, s, toks, target, "text/csv", 0)
	}
}

// TestEveryZone asks for days, hours and months in every zone of the
// system's tz database, around daylight-saving changes and at the edges of
// the range: each answer is 200, or 400 naming tz; never anything else.
func TestEveryZone(t *testing.T) {
	zones := systemZones(t)
	tokens, toks := testTokens(t, "1001")
	s, err := New(Config{Store: checkingStore{}, Rates: mustCard(t, apiRates), Tokens: tokens, Logger: quietLogger(),
		Now: func() time.Time { return time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	queries := []string{
		"/v1/tenants/1001/usage?period=2026-03&granularity=day",
		"/v1/tenants/1001/usage?from=2026-10-24&to=2026-10-27&granularity=hour",
		"/v1/tenants/1001/usage?from=1970-01-02&to=1972-01-01&granularity=month",
		"/v1/tenants/1001/usage?from=2104-11-01&to=2105-12-31&granularity=month",
		"/v1/tenants/1001/invoice?period=2026-10",
		"/v1/tenants/1001/events?period=2026-04&limit=2",
	}
	exact := 0
	for _, z := range zones {
		for _, q := range queries {
			req := httptest.NewRequest("GET", q+"&tz="+url.QueryEscape(z), nil)
			req.Header.Set("Authorization", "Bearer "+toks["admin"])
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			switch rec.Code {
			case 200:
				exact++
			case 400:
				var e apiError
				if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Parameter != "tz" {
					t.Errorf("%s in %s: 400 not about tz: %s", q, z, rec.Body.String())
				}
			default:
				t.Errorf("%s in %s: %d %s", q, z, rec.Code, rec.Body.String())
			}
		}
	}
	t.Logf("%d zones, %d exact answers of %d", len(zones), exact, len(zones)*len(queries))
	if len(zones) > 300 && exact < len(zones)*len(queries)/2 {
		t.Errorf("only %d of %d answers were exact", exact, len(zones)*len(queries))
	}
}

// systemZones lists the zone names under /usr/share/zoneinfo (skips the
// test when there is no tz database).
func systemZones(t *testing.T) []string {
	root := "/usr/share/zoneinfo"
	var zones []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root+"/")
		if d.IsDir() {
			if rel == "posix" || rel == "right" { // copies, and leap-second tables (notZone)
				return filepath.SkipDir
			}
			return nil
		}
		if !zoneName.MatchString(rel) || strings.Contains(rel, ".") || notZone(rel) {
			return nil
		}
		if _, err := time.LoadLocation(rel); err == nil {
			zones = append(zones, rel)
		}
		return nil
	})
	if err != nil || len(zones) == 0 {
		t.Skipf("no tz database under %s: %v", root, err)
	}
	return zones
}
