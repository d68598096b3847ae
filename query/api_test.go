package query

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// apiRates is the rate card of the API tests: a default version change on
// October 16 (bandwidth out tiers, storage), and for tenant 1001 a licence
// price from October 10 at noon UTC (mid-day: the hourly rollup answers).
const apiRates = `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0.02"
    bandwidth_out:
      - {up_to: 100, price: "0.12"}
      - {up_to: 1000, price: "0.09"}
      - {price: "0.05"}
    storage: "0.10"
    license: "10.00"
    license_external: "15.00"
  - effective: 2026-10-16
    bandwidth_out:
      - {up_to: 100, price: "0.11"}
      - {price: "0.04"}
    storage: "0.08"
tenants:
  "1001":
    - effective: 2026-10-10T12:00:00Z
      license: "7.50"
`

// apiFixture is one database loaded through the sink and a server on it.
type apiFixture struct {
	store  *ClickHouse
	events map[string][]model.Event // distinct events per tenant
	toks   map[string]string        // tenant (or "admin") -> token
	srv    *httptest.Server
	rates  *RateCard
}

func (f *apiFixture) client(t testing.TB, who string) apiClient {
	return apiClient{t: t, base: f.srv.URL, token: f.toks[who]}
}

var apiTenants = []string{"1001", "1002", "2001"}

func newAPIFixture(t *testing.T) *apiFixture {
	t.Helper()
	db := chtest.NewDB(t, true)
	var all []model.Event
	f := &apiFixture{events: map[string][]model.Event{}}
	for i, tenant := range apiTenants {
		n := 700
		if tenant == "2001" {
			n = 60
		}
		evs := genEvents(uint64(i+1), tenant, n)
		all = append(all, evs...)
		f.events[tenant] = distinctEvents(evs)
	}
	loadThroughSink(t, db, all)
	tokens, toks := testTokens(t, apiTenants...)
	f.toks = toks
	f.rates = mustCard(t, apiRates)
	f.store = NewClickHouse(db.Conn)
	f.srv = newTestServer(t, f.store, f.rates, tokens)
	return f
}

// ---- expected usage, computed from the events

// label names the local bucket of the UTC hour h as the API's start does.
func label(h time.Time, loc *time.Location, g Granularity) string {
	switch g {
	case Hour:
		return h.In(loc).Format(time.RFC3339)
	case Day:
		return h.In(loc).Format("2006-01-02")
	}
	return h.In(loc).Format("2006-01")
}

func rowLabel(start string, g Granularity) string {
	switch g {
	case Day:
		return start[:10]
	case Month:
		return start[:7]
	}
	return start
}

func groupValues(e *model.Event, server string, groupBy []string) []string {
	var out []string
	for _, g := range groupOrder {
		if !slices.Contains(groupBy, g) {
			continue
		}
		switch g {
		case "region":
			out = append(out, e.Region)
		case "data_center":
			out = append(out, e.DataCenter)
		case "resource_id":
			out = append(out, e.ResourceID)
		case "server":
			out = append(out, server)
		}
	}
	return out
}

// expectUsage computes the rows a usage request must answer, keyed
// "label|kind|group", each as "field=value …".
func expectUsage(evs []model.Event, loc *time.Location, g Granularity, from, to time.Time, kinds, groupBy []string) map[string]string {
	type acc struct {
		bytes, bs *big.Int
		servers   map[string]bool
		dayServ   map[string]bool // day label + server
		events    uint64
	}
	accs := map[string]*acc{}
	get := func(key string) *acc {
		a, ok := accs[key]
		if !ok {
			a = &acc{bytes: new(big.Int), bs: new(big.Int), servers: map[string]bool{}, dayServ: map[string]bool{}}
			accs[key] = a
		}
		return a
	}
	seconds := map[string]int64{}
	var labels []string
	for h := from; h.Before(to); h = h.Add(time.Hour) {
		l := label(h, loc, g)
		if seconds[l] == 0 {
			labels = append(labels, l)
		}
		seconds[l] += 3600
	}
	if len(groupBy) == 0 {
		for _, l := range labels {
			for _, k := range kinds {
				get(l + "|" + k + "|")
			}
		}
	}
	for i := range evs {
		e := &evs[i]
		if !slices.Contains(kinds, string(e.Kind)) {
			continue
		}
		for _, p := range pieces(e) {
			if p.hour.Before(from) || !p.hour.Before(to) {
				continue
			}
			l := label(p.hour, loc, g)
			a := get(l + "|" + string(e.Kind) + "|" + strings.Join(groupValues(e, p.server, groupBy), ","))
			a.bytes.Add(a.bytes, p.q)
			a.bs.Add(a.bs, p.bs)
			if p.last {
				a.events++
			}
			a.servers[p.server] = true
			a.dayServ[p.hour.In(loc).Format("2006-01-02")+"|"+p.server] = true
		}
	}
	out := map[string]string{}
	for key, a := range accs {
		l, rest, _ := strings.Cut(key, "|")
		kind, _, _ := strings.Cut(rest, "|")
		var v string
		switch kind {
		case "bandwidthIn", "bandwidthOut":
			v = "bytes=" + a.bytes.String()
		case "storage":
			avg := new(big.Rat).SetFrac(a.bs, big.NewInt(seconds[l]))
			v = "byte_seconds=" + a.bs.String() + " average_bytes=" + testRound(avg, 0)
		case "license":
			v = "servers=" + strconv.Itoa(len(a.servers))
			if g != Hour {
				v += " server_days=" + strconv.Itoa(len(a.dayServ))
			}
		}
		out[key] = v + " events=" + strconv.FormatUint(a.events, 10)
	}
	return out
}

// testRound rounds x half to even to places decimals, written apart from
// roundHalfEven: big.Rat.FloatString rounds halves away from zero, so only
// exact ties need fixing.
func testRound(x *big.Rat, places int) string {
	scaled := new(big.Rat).Mul(x, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(places)), nil)))
	twice := new(big.Rat).Mul(scaled, big.NewRat(2, 1))
	s := scaled.FloatString(0)
	if twice.IsInt() && !scaled.IsInt() { // a tie: pick the even neighbour
		n, _ := new(big.Int).SetString(s, 10)
		if n.Bit(0) == 1 {
			if scaled.Sign() > 0 {
				n.Sub(n, big.NewInt(1))
			} else {
				n.Add(n, big.NewInt(1))
			}
		}
		s = n.String()
	}
	if places == 0 {
		return s
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for len(s) <= places {
		s = "0" + s
	}
	s = s[:len(s)-places] + "." + s[len(s)-places:]
	if neg && strings.Trim(s, "0.") != "" {
		s = "-" + s
	}
	return s
}

type usageAnswerT struct {
	TenantID string `json:"tenant_id"`
	Rows     []struct {
		Start        string  `json:"start"`
		End          string  `json:"end"`
		Kind         string  `json:"kind"`
		Region       *string `json:"region"`
		DataCenter   *string `json:"data_center"`
		ResourceID   *string `json:"resource_id"`
		Server       *string `json:"server"`
		Bytes        *string `json:"bytes"`
		ByteSeconds  *string `json:"byte_seconds"`
		AverageBytes *string `json:"average_bytes"`
		Servers      *uint64 `json:"servers"`
		ServerDays   *uint64 `json:"server_days"`
		Events       uint64  `json:"events"`
	} `json:"rows"`
}

// gotUsage turns an answer into the form of expectUsage.
func gotUsage(t *testing.T, ans usageAnswerT, g Granularity) map[string]string {
	out := map[string]string{}
	for _, r := range ans.Rows {
		var group []string
		for _, p := range []*string{r.Region, r.DataCenter, r.ResourceID, r.Server} {
			if p != nil {
				group = append(group, *p)
			}
		}
		var v string
		switch r.Kind {
		case "bandwidthIn", "bandwidthOut":
			v = "bytes=" + *r.Bytes
		case "storage":
			v = "byte_seconds=" + *r.ByteSeconds + " average_bytes=" + *r.AverageBytes
		case "license":
			v = "servers=" + strconv.FormatUint(*r.Servers, 10)
			if r.ServerDays != nil {
				v += " server_days=" + strconv.FormatUint(*r.ServerDays, 10)
			}
		}
		key := rowLabel(r.Start, g) + "|" + r.Kind + "|" + strings.Join(group, ",")
		if _, dup := out[key]; dup {
			t.Errorf("row %s twice", key)
		}
		out[key] = v + " events=" + strconv.FormatUint(r.Events, 10)
	}
	return out
}

func TestAPI(t *testing.T) {
	f := newAPIFixture(t)
	berlin, ny := zone(t, "Europe/Berlin"), zone(t, "America/New_York")

	// An answer of more sums than MaxRows stops with a *TooManyRowsError
	// (the handlers' memory bound); at the limit it is whole.
	t.Run("row limit", func(t *testing.T) {
		ctx := context.Background()
		days, err := splitBuckets(utc("2026-10-01"), utc("2026-11-01"), berlin, Day)
		if err != nil {
			t.Fatal(err)
		}
		months := []time.Time{days[0], days[len(days)-1]}
		q := UsageQuery{Tenant: "1001", Bounds: days, Days: days, Kinds: UsageKinds, GroupBy: []string{"server"}, Zone: berlin}
		all, err := f.store.Usage(ctx, q)
		if err != nil || len(all) < 10 {
			t.Fatalf("%d sums, %v", len(all), err)
		}
		q.MaxRows = len(all)
		if got, err := f.store.Usage(ctx, q); err != nil || len(got) != len(all) {
			t.Errorf("at the limit: %d sums, %v", len(got), err)
		}
		q.MaxRows = len(all) - 1
		var tm *TooManyRowsError
		if _, err := f.store.Usage(ctx, q); !errors.As(err, &tm) || tm.Max != len(all)-1 {
			t.Errorf("past the limit: %v", err)
		}
		lq := UsageQuery{Tenant: "1001", Bounds: months, Days: days, GroupBy: []string{"server"}, Zone: berlin}
		lics, err := f.store.Licences(ctx, lq)
		if err != nil || len(lics) < 2 {
			t.Fatalf("%d licence sums, %v", len(lics), err)
		}
		lq.MaxRows = len(lics) - 1
		if _, err := f.store.Licences(ctx, lq); !errors.As(err, &tm) {
			t.Errorf("licences past the limit: %v", err)
		}
	})

	t.Run("usage", func(t *testing.T) {
		cases := []struct {
			name, tenant, query string
			loc                 *time.Location
			g                   Granularity
			from, to            time.Time
			kinds, groupBy      []string
			rows                int // rows expected without group_by; 0: not checked
		}{
			{"october utc by day", "1001", "period=2026-10", time.UTC, Day, utc("2026-10-01"), utc("2026-11-01"), UsageKinds, nil, 31 * 4},
			{"october berlin by day (25-hour day)", "1001", "period=2026-10&tz=Europe/Berlin", berlin, Day,
				utc("2026-09-30T22:00:00Z"), utc("2026-10-31T23:00:00Z"), UsageKinds, nil, 31 * 4},
			{"other tenant", "1002", "period=2026-10&tz=Europe/Berlin&granularity=day", berlin, Day,
				utc("2026-09-30T22:00:00Z"), utc("2026-10-31T23:00:00Z"), UsageKinds, nil, 31 * 4},
			{"new york fall back by the hour", "1001", "from=2026-11-01&to=2026-11-02&tz=America/New_York&granularity=hour", ny, Hour,
				utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z"), UsageKinds, nil, 25 * 4},
			{"months in berlin", "1002", "from=2026-09-01&to=2026-12-01&tz=Europe/Berlin&granularity=month", berlin, Month,
				utc("2026-08-31T22:00:00Z"), utc("2026-11-30T23:00:00Z"), UsageKinds, nil, 3 * 4},
			{"clipped range, two kinds", "1001", "from=2026-10-03T05:00:00Z&to=2026-10-05T17:00:00Z&kind=storage,license", time.UTC, Day,
				utc("2026-10-03T05:00:00Z"), utc("2026-10-05T17:00:00Z"), []string{"storage", "license"}, nil, 3 * 2},
			{"grouped by server and region", "1001", "period=2026-10&group_by=server,region", time.UTC, Day,
				utc("2026-10-01"), utc("2026-11-01"), UsageKinds, []string{"region", "server"}, 0},
			{"grouped by resource, berlin months", "1001", "from=2026-10-01&to=2026-11-01&tz=Europe/Berlin&granularity=month&group_by=resource_id,data_center&kind=license,bandwidthOut",
				berlin, Month, utc("2026-09-30T22:00:00Z"), utc("2026-10-31T23:00:00Z"), []string{"bandwidthOut", "license"}, []string{"data_center", "resource_id"}, 0},
			{"tokyo by day", "2001", "period=2026-10&tz=Asia/Tokyo", zone(t, "Asia/Tokyo"), Day,
				utc("2026-09-30T15:00:00Z"), utc("2026-10-31T15:00:00Z"), UsageKinds, nil, 31 * 4},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var ans usageAnswerT
				f.client(t, "admin").getJSON("/v1/tenants/"+c.tenant+"/usage?"+c.query, &ans)
				if c.rows > 0 && len(ans.Rows) != c.rows {
					t.Errorf("%d rows, want %d", len(ans.Rows), c.rows)
				}
				want := expectUsage(f.events[c.tenant], c.loc, c.g, c.from, c.to, c.kinds, c.groupBy)
				chtest.CompareRows(t, c.name, gotUsage(t, ans, c.g), want)
				// The tenant's own token gets the same answer.
				var own usageAnswerT
				f.client(t, c.tenant).getJSON("/v1/tenants/"+c.tenant+"/usage?"+c.query, &own)
				if len(own.Rows) != len(ans.Rows) {
					t.Errorf("tenant token: %d rows, admin %d", len(own.Rows), len(ans.Rows))
				}
			})
		}
	})

	t.Run("invoice", func(t *testing.T) {
		for _, c := range []struct {
			tenant, query string
			loc           *time.Location
			from, to      time.Time
		}{
			{"1001", "period=2026-10", time.UTC, utc("2026-10-01"), utc("2026-11-01")},
			{"1002", "period=2026-10", time.UTC, utc("2026-10-01"), utc("2026-11-01")},
			{"1001", "period=2026-10&tz=Europe/Berlin", berlin, utc("2026-09-30T22:00:00Z"), utc("2026-10-31T23:00:00Z")},
			{"1002", "from=2026-10-01&to=2026-11-01&tz=America/New_York", ny, utc("2026-10-01T04:00:00Z"), utc("2026-11-01T04:00:00Z")},
			{"2001", "period=2026-10", time.UTC, utc("2026-10-01"), utc("2026-11-01")},
			// Periods that begin or end inside the month, and inside a day:
			// the tiers count from the month's start, a day is billed by
			// the period that holds its midnight.
			{"1002", "from=2026-10-01&to=2026-10-15T12:00:00Z", time.UTC, utc("2026-10-01"), utc("2026-10-15T12:00:00Z")},
			{"1002", "from=2026-10-15T12:00:00Z&to=2026-11-01", time.UTC, utc("2026-10-15T12:00:00Z"), utc("2026-11-01")},
			{"1001", "from=2026-10-12&to=2026-10-31T13:00:00%2B01:00&tz=Europe/Berlin", berlin, utc("2026-10-11T22:00:00Z"), utc("2026-10-31T12:00:00Z")},
		} {
			t.Run(c.tenant+" "+c.query, func(t *testing.T) {
				var ans invoiceAnswerT
				f.client(t, c.tenant).getJSON("/v1/tenants/"+c.tenant+"/invoice?"+c.query, &ans)
				wantLines, wantTotal := expectInvoice(f.events[c.tenant], c.tenant, c.loc, c.from, c.to)
				got := map[string]string{}
				sum := new(big.Rat)
				for _, l := range ans.Lines {
					got[l.Item+"|"+l.From+"|"+l.To+"|"+strconv.Itoa(l.Tier)] = l.QuantityExact + " @" + l.UnitPrice + " = " + l.Amount
					a, err := parseDecimal(l.Amount)
					if err != nil {
						t.Fatal(err)
					}
					sum.Add(sum, a)
				}
				chtest.CompareRows(t, "invoice lines", got, wantLines)
				if ans.Total != wantTotal {
					t.Errorf("total %s, want %s", ans.Total, wantTotal)
				}
				if s := sum.FloatString(2); s != ans.Total {
					t.Errorf("total %s is not the sum of the lines %s", ans.Total, s)
				}
				if ans.Currency != "USD" {
					t.Errorf("currency %q", ans.Currency)
				}
				// The segments cover the period, the lead the month before it.
				lf := c.from.In(c.loc)
				month := time.Date(lf.Year(), lf.Month(), 1, 0, 0, 0, 0, c.loc)
				checkCover := func(what string, segs []invoiceSegmentT, from, to time.Time) {
					at := from
					for _, sg := range segs {
						f, err1 := time.Parse(time.RFC3339, sg.From)
						e, err2 := time.Parse(time.RFC3339, sg.To)
						if err1 != nil || err2 != nil || !f.Equal(at) || !e.After(f) {
							t.Errorf("%s: segment %s to %s does not follow %s", what, sg.From, sg.To, at.Format(time.RFC3339))
							return
						}
						at = e
					}
					if !at.Equal(to) {
						t.Errorf("%s end at %s, want %s", what, at.Format(time.RFC3339), to.Format(time.RFC3339))
					}
				}
				checkCover("segments", ans.Segments, c.from, c.to)
				if month.Equal(c.from) {
					if len(ans.Lead) != 0 {
						t.Errorf("%d lead segments for a period from the month's start", len(ans.Lead))
					}
				} else {
					checkCover("lead segments", ans.Lead, month, c.from)
				}
				if !c.from.Equal(utc("2026-10-01")) || !c.to.Equal(utc("2026-11-01")) {
					return // the usage endpoint counts the days cut by the period's bounds
				}
				// Licensed server-days agree with the usage endpoint's.
				var u usageAnswerT
				f.client(t, "admin").getJSON("/v1/tenants/"+c.tenant+"/usage?kind=license&granularity=month&"+c.query, &u)
				var usageDays uint64
				for _, r := range u.Rows {
					usageDays += *r.ServerDays
				}
				var invDays int64
				for _, s := range ans.Segments {
					invDays += s.LicenseServerDays + s.LicenseExternalServerDays
				}
				if int64(usageDays) != invDays || usageDays == 0 {
					t.Errorf("usage has %d licensed server-days, the invoice %d", usageDays, invDays)
				}
			})
		}
	})

	t.Run("invoices of adjacent periods add up to the month's", func(t *testing.T) {
		// Split inside a day: the day is billed once, and the tiers of the
		// second period continue from the first's usage.
		type sums struct {
			days  int64
			items map[string]*big.Rat // item and tier -> quantity
		}
		read := func(tenant, query string) sums {
			var ans invoiceAnswerT
			f.client(t, tenant).getJSON("/v1/tenants/"+tenant+"/invoice?"+query, &ans)
			out := sums{items: map[string]*big.Rat{}}
			for _, s := range ans.Segments {
				out.days += s.LicenseServerDays + s.LicenseExternalServerDays
			}
			for _, l := range ans.Lines {
				q, ok := new(big.Rat).SetString(l.QuantityExact)
				if !ok {
					t.Fatalf("quantity %q", l.QuantityExact)
				}
				k := l.Item + " tier " + strconv.Itoa(l.Tier) + " @" + l.UnitPrice
				if out.items[k] == nil {
					out.items[k] = new(big.Rat)
				}
				out.items[k].Add(out.items[k], q)
			}
			return out
		}
		for _, c := range []struct{ tenant, month, at, tz string }{
			{"1002", "2026-10", "2026-10-15T12:00:00Z", ""},
			// Inside the day the clocks go back, in Berlin.
			{"1001", "2026-10", "2026-10-25T12:00:00%2B01:00", "&tz=Europe/Berlin"},
			{"1001", "2026-10", "2026-10-03T05:00:00Z", ""},
			{"1001", "2026-10", "2026-10-10T18:00:00Z", ""}, // the day of 1001's licence price change
		} {
			month := read(c.tenant, "period="+c.month+c.tz)
			start := c.month + "-01"
			end := "2026-11-01"
			a := read(c.tenant, "from="+start+"&to="+c.at+c.tz)
			b := read(c.tenant, "from="+c.at+"&to="+end+c.tz)
			if a.days+b.days != month.days || month.days == 0 {
				t.Errorf("%s at %s: licensed server-days %d + %d, the month %d", c.tenant, c.at, a.days, b.days, month.days)
			}
			for _, k := range notAddingUp(month.items, a.items, b.items) {
				t.Errorf("%s at %s: %s: %v + %v, the month %v", c.tenant, c.at, k, a.items[k], b.items[k], month.items[k])
			}
		}
	})

	t.Run("events paged", func(t *testing.T) {
		// Events keep their times: a half-hour zone's month and dates, and
		// times on any second, are exact (the rollups' hour grain is not
		// theirs).
		ranges := []struct {
			query    string
			from, to time.Time
		}{
			{"period=2026-10", utc("2026-10-01"), utc("2026-11-01")},
			{"period=2026-10&tz=Asia/Kolkata", utc("2026-09-30T18:30:00Z"), utc("2026-10-31T18:30:00Z")},
			{"from=2026-10-05&to=2026-10-20&tz=Asia/Kathmandu", utc("2026-10-04T18:15:00Z"), utc("2026-10-19T18:15:00Z")},
			{"from=2026-10-03T07:21:09Z&to=2026-10-29T23:59:59Z", utc("2026-10-03T07:21:09Z"), utc("2026-10-29T23:59:59Z")},
		}
		for _, tenant := range []string{"1001", "2001"} {
			for _, rg := range ranges {
				var got []string
				cursor := ""
				pages := 0
				for {
					path := "/v1/tenants/" + tenant + "/events?" + rg.query + "&limit=37"
					if cursor != "" {
						path += "&cursor=" + cursor
					}
					var ans struct {
						Events []struct {
							EntryID  string `json:"entry_id"`
							Kind     string `json:"kind"`
							Time     string `json:"time"`
							Quantity string `json:"quantity"`
						} `json:"events"`
						NextCursor *string `json:"next_cursor"`
					}
					f.client(t, tenant).getJSON(path, &ans)
					pages++
					for _, e := range ans.Events {
						got = append(got, e.Time+" "+e.Kind+" "+e.EntryID+" "+e.Quantity)
					}
					if ans.NextCursor == nil {
						break
					}
					if len(ans.Events) != 37 {
						t.Fatalf("a page with a next cursor has %d events", len(ans.Events))
					}
					cursor = *ans.NextCursor
				}
				var want []string
				for _, e := range f.events[tenant] {
					tm := e.StartTime
					if tm.IsZero() {
						tm = e.EventTime
					}
					tm = tm.UTC().Truncate(time.Second)
					if tm.Before(rg.from) || !tm.Before(rg.to) {
						continue
					}
					want = append(want, tm.Format(time.RFC3339)+" "+string(e.Kind)+" "+e.EntryID+" "+strconv.FormatUint(e.Quantity, 10))
				}
				sort.Strings(want) // RFC 3339 UTC sorts by time, then kind, then entry id
				if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("tenant %s, %s: %d events in %d pages, want %d", tenant, rg.query, len(got), pages, len(want))
				}
			}
		}
	})

	t.Run("tenants ranked", func(t *testing.T) {
		for _, kind := range []string{"bandwidthOut", "storage", "license", ""} {
			q := "/v1/usage/tenants?period=2026-10&limit=5"
			if kind != "" {
				q += "&kind=" + kind
			}
			var ans struct {
				Tenants []struct {
					Rank     int    `json:"rank"`
					TenantID string `json:"tenant_id"`
					Value    string `json:"value"`
				} `json:"tenants"`
			}
			f.client(t, "admin").getJSON(q, &ans)
			type tv struct {
				tenant string
				v      *big.Int
			}
			var want []tv
			for _, tenant := range apiTenants {
				v := new(big.Int)
				servers := map[string]bool{}
				for i := range f.events[tenant] {
					e := &f.events[tenant][i]
					if kind != "" && string(e.Kind) != kind {
						continue
					}
					for _, p := range pieces(e) {
						if p.hour.Before(utc("2026-10-01")) || !p.hour.Before(utc("2026-11-01")) {
							continue
						}
						switch kind {
						case "":
							if p.last {
								v.Add(v, big.NewInt(1))
							}
						case "storage":
							v.Add(v, p.bs)
						case "license":
							servers[p.hour.Format("2006-01-02")+p.server] = true
						default:
							v.Add(v, p.q)
						}
					}
				}
				if kind == "license" {
					v.SetInt64(int64(len(servers)))
				}
				if v.Sign() > 0 {
					want = append(want, tv{tenant, v})
				}
			}
			sort.Slice(want, func(i, j int) bool {
				if c := want[i].v.Cmp(want[j].v); c != 0 {
					return c > 0
				}
				return want[i].tenant < want[j].tenant
			})
			var g, w []string
			for _, x := range ans.Tenants {
				g = append(g, strconv.Itoa(x.Rank)+" "+x.TenantID+" "+x.Value)
			}
			for i, x := range want {
				w = append(w, strconv.Itoa(i+1)+" "+x.tenant+" "+x.v.String())
			}
			if strings.Join(g, ", ") != strings.Join(w, ", ") {
				t.Errorf("kind %q: got %v, want %v", kind, g, w)
			}
		}
	})

	t.Run("isolation", func(t *testing.T) {
		paths := []string{"/usage?period=2026-10", "/invoice?period=2026-10", "/events?period=2026-10&limit=1"}
		for _, who := range append([]string{"admin"}, apiTenants...) {
			c := f.client(t, who)
			for _, target := range apiTenants {
				for _, p := range paths {
					code, body, _ := c.get("/v1/tenants/" + target + p)
					want := http.StatusForbidden
					if who == "admin" || who == target {
						want = http.StatusOK
					}
					if code != want {
						t.Errorf("%s reading %s%s: %d, want %d (%s)", who, target, p, code, want, body)
					}
					if code == http.StatusOK && !strings.Contains(string(body), `"tenant_id":"`+target+`"`) {
						t.Errorf("%s reading %s%s: answer is not about %s", who, target, p, target)
					}
					if code == http.StatusForbidden && strings.Contains(string(body), "rows") {
						t.Errorf("403 carries data: %s", body)
					}
				}
			}
			code, _, _ := c.get("/v1/usage/tenants?period=2026-10")
			if want := map[bool]int{true: 200, false: 403}[who == "admin"]; code != want {
				t.Errorf("%s ranking tenants: %d, want %d", who, code, want)
			}
			var me map[string]any
			c.getJSON("/v1/whoami", &me)
			if who == "admin" && me["admin"] != true || who != "admin" && me["tenant_id"] != who {
				t.Errorf("whoami for %s: %v", who, me)
			}
		}
		for _, p := range append(paths, "/usage?tz=Asia/Kolkata") {
			for _, tok := range []string{"", "fm_nope", f.toks["1001"] + "x"} {
				code, _, hdr := apiClient{t: t, base: f.srv.URL, token: tok}.get("/v1/tenants/1001" + p)
				if code != http.StatusUnauthorized {
					t.Errorf("token %q on %s: %d, want 401", tok, p, code)
				}
				if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate")
				}
			}
		}
		// Basic auth, a second Authorization header, a token in the query:
		// none of them is a bearer token.
		for _, h := range [][]string{{"Authorization", "Basic " + f.toks["admin"]}, {"Authorization", f.toks["admin"]}} {
			code, _, _ := apiClient{t: t, base: f.srv.URL}.get("/v1/tenants/1001/usage", h...)
			if code != 401 {
				t.Errorf("%v: %d, want 401", h, code)
			}
		}
	})

	t.Run("csv", func(t *testing.T) {
		c := f.client(t, "1001")
		for _, p := range []string{"/usage?period=2026-10&format=csv", "/invoice?period=2026-10&format=csv", "/events?period=2026-10&format=csv"} {
			for _, accept := range []string{"", "text/csv"} {
				path := "/v1/tenants/1001" + p
				if accept != "" {
					path = strings.Replace(path, "&format=csv", "", 1)
				}
				code, body, hdr := c.get(path, "Accept", accept)
				if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
					t.Fatalf("%s (Accept %q): %d %s", path, accept, code, hdr.Get("Content-Type"))
				}
				recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
				if err != nil || len(recs) < 2 {
					t.Fatalf("%s: %d records, %v", path, len(recs), err)
				}
			}
		}
		// The usage CSV holds the JSON's numbers.
		_, body, _ := c.get("/v1/tenants/1001/usage?period=2026-10&kind=bandwidthIn&format=csv")
		recs, _ := csv.NewReader(strings.NewReader(string(body))).ReadAll()
		var ans usageAnswerT
		c.getJSON("/v1/tenants/1001/usage?period=2026-10&kind=bandwidthIn", &ans)
		if len(recs) != len(ans.Rows)+1 || recs[0][3] != "bytes" {
			t.Fatalf("csv %d rows (header %v), json %d", len(recs), recs[0], len(ans.Rows))
		}
		for i, r := range ans.Rows {
			if recs[i+1][0] != r.Start || recs[i+1][3] != *r.Bytes {
				t.Errorf("csv row %d %v, json %s %s", i, recs[i+1], r.Start, *r.Bytes)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, c := range badRequests {
			code, body, _ := f.client(t, "admin").get(c.path)
			if code != c.status {
				t.Errorf("%s: %d, want %d (%s)", c.path, code, c.status, body)
				continue
			}
			var e struct {
				Error struct {
					Status    int    `json:"status"`
					Parameter string `json:"parameter"`
					Message   string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Status != code || e.Error.Message == "" {
				t.Errorf("%s: body %s is not an error document (%v)", c.path, body, err)
			}
			if e.Error.Parameter != c.param {
				t.Errorf("%s: parameter %q, want %q (%s)", c.path, e.Error.Parameter, c.param, e.Error.Message)
			}
		}
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/tenants/1001/usage", nil)
		req.Header.Set("Authorization", "Bearer "+f.toks["admin"])
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") == "" {
			t.Errorf("POST: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		c := apiClient{t: t, base: f.srv.URL}
		for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.yaml"} {
			if code, body, _ := c.get(p); code != 200 {
				t.Errorf("%s: %d %s", p, code, body)
			}
		}
		_, body, _ := c.get("/metrics")
		if !strings.Contains(string(body), `feedmeter_query_requests_total{code="200",route="GET /v1/tenants/{tid}/usage"}`) {
			t.Errorf("metrics lack the request counter:\n%.2000s", body)
		}
	})
}

// badRequests are requests that must be answered with status and a body
// naming param. They seed the fuzz test too.
var badRequests = []struct {
	path   string
	status int
	param  string
}{
	{"/v1/tenants/1001/usage?tz=Asia/Kolkata", 400, "tz"},
	{"/v1/tenants/1001/usage?tz=Asia/Kathmandu&granularity=hour", 400, "tz"},
	{"/v1/tenants/1001/usage?tz=Australia/Lord_Howe&period=2026-10", 400, "tz"},
	{"/v1/tenants/1001/invoice?tz=Asia/Kolkata", 400, "tz"},
	{"/v1/tenants/1001/usage?tz=Mars/Olympus", 400, "tz"},
	{"/v1/tenants/1001/usage?tz=Local", 400, "tz"},
	{"/v1/tenants/1001/usage?tz=../../etc/passwd", 400, "tz"},
	{"/v1/tenants/1001/usage?period=2026-13", 400, "period"},
	{"/v1/tenants/1001/usage?period=1969-12", 400, "period"},
	{"/v1/tenants/1001/usage?period=2026-10&from=2026-10-01", 400, "period"},
	{"/v1/tenants/1001/usage?from=2026-10-01", 400, "to"},
	{"/v1/tenants/1001/usage?to=2026-10-01", 400, "from"},
	{"/v1/tenants/1001/usage?from=yesterday&to=2026-10-01", 400, "from"},
	{"/v1/tenants/1001/usage?from=2026-10-01T00:30:00Z&to=2026-10-02", 400, "from"},
	{"/v1/tenants/1001/usage?from=2026-10-02&to=2026-10-01", 400, "to"},
	{"/v1/tenants/1001/usage?from=2026-10-01&to=2026-10-01", 400, "to"},
	{"/v1/tenants/1001/usage?from=2000-01-01&to=2026-10-01", 400, "from"},
	{"/v1/tenants/1001/usage?from=2026-01-01&to=2027-12-01&granularity=hour", 400, "granularity"},
	{"/v1/tenants/1001/usage?granularity=week", 400, "granularity"},
	{"/v1/tenants/1001/usage?kind=cpu", 400, "kind"},
	{"/v1/tenants/1001/usage?kind=storage,storage", 400, "kind"},
	{"/v1/tenants/1001/usage?kind=", 400, "kind"},
	{"/v1/tenants/1001/usage?group_by=tenant_id", 400, "group_by"},
	{"/v1/tenants/1001/usage?group_by=server,server", 400, "group_by"},
	{"/v1/tenants/1001/usage?format=xml", 400, "format"},
	{"/v1/tenants/1001/usage?foo=1", 400, "foo"},
	{"/v1/tenants/1001/usage?period=2026-10&period=2026-11", 400, "period"},
	{"/v1/tenants/1001/usage?%zz=1", 400, "query"},
	{"/v1/tenants/1001/invoice?period=2025-06", 400, "period"},
	{"/v1/tenants/1001/invoice?from=2026-01-01&to=2027-06-01", 400, "from"},
	{"/v1/tenants/1001/invoice?granularity=day", 400, "granularity"},
	{"/v1/tenants/1001/invoice?from=1970-01-01T00:00:00Z&to=1970-01-02T00:00:00Z&tz=America/New_York", 400, "from"},
	{"/v1/tenants/1001/events?limit=0", 400, "limit"},
	{"/v1/tenants/1001/events?limit=1001", 400, "limit"},
	{"/v1/tenants/1001/events?limit=ten", 400, "limit"},
	{"/v1/tenants/1001/events?cursor=abc", 400, "cursor"},
	{"/v1/tenants/1001/events?cursor=" + encodeCursor(EventCursor{Time: 1, Kind: "cpu", EntryID: "x"}), 400, "cursor"},
	{"/v1/usage/tenants?kind=storage,license", 400, "kind"},
	{"/v1/usage/tenants?limit=-1", 400, "limit"},
	{"/v1/usage/tenants?tz=Europe/Berlin", 400, "tz"},
	{"/v1/tenants/10%2001/usage", 400, "tid"},
	{"/v1/tenants/" + strings.Repeat("9", 65) + "/usage", 400, "tid"},
	{"/v1/whoami?x=1", 400, "x"},
	{"/v1/tenants/1001", 404, ""},
	{"/v2/tenants/1001/usage", 404, ""},
	{"/ui/../../go.mod", 404, ""},
	{"/ui/secret.txt", 404, ""},
}

// ---- expected invoices, computed from the events for apiRates

type testTier struct {
	upTo  int64 // 0: no limit
	price string
}

// expectInvoice prices the events of [from, to), inside one local month,
// for apiRates, written apart from RateCard.Plan and Price: the cuts,
// prices and tiers of apiRates are spelled out here. Graduated tiers count
// from the month's start; a local day is billed, whole, by the period that
// holds its end; an item's line runs over consecutive segments while its
// price stays the same.
func expectInvoice(evs []model.Event, tenant string, loc *time.Location, from, to time.Time) (map[string]string, string) {
	lf := from.In(loc)
	month := time.Date(lf.Year(), lf.Month(), 1, 0, 0, 0, 0, loc).UTC()
	next := time.Date(lf.Year(), lf.Month()+1, 1, 0, 0, 0, 0, loc).UTC()
	if to.After(next) {
		panic("expectInvoice: the period leaves its month")
	}
	// The end of the last day that ends by to (a day is billed by the
	// period that holds its end).
	lt := to.In(loc)
	days := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, loc).UTC()
	cuts := []time.Time{month}
	if from.After(month) {
		cuts = append(cuts, from) // before it: the lead, which tiers count from
	}
	for _, c := range []time.Time{utc("2026-10-10T12:00:00Z"), utc("2026-10-16T00:00:00Z")} {
		if c.Equal(utc("2026-10-10T12:00:00Z")) && tenant != "1001" {
			continue
		}
		if c.After(from) && c.Before(to) {
			cuts = append(cuts, c)
		}
	}
	cuts = append(cuts, to)
	segOf := func(t time.Time) int {
		for i := 0; i+1 < len(cuts); i++ {
			if !t.Before(cuts[i]) && t.Before(cuts[i+1]) {
				return i
			}
		}
		return -1
	}
	n := len(cuts) - 1
	in, out, bs := make([]*big.Int, n), make([]*big.Int, n), make([]*big.Int, n)
	for i := range in {
		in[i], out[i], bs[i] = new(big.Int), new(big.Int), new(big.Int)
	}
	licensed := map[string]map[string]bool{} // local day -> server -> external
	for i := range evs {
		e := &evs[i]
		for _, p := range pieces(e) {
			if e.Kind == model.KindLicense {
				if !p.hour.Before(month) && p.hour.Before(days) {
					d := p.hour.In(loc).Format("2006-01-02")
					if licensed[d] == nil {
						licensed[d] = map[string]bool{}
					}
					licensed[d][p.server] = licensed[d][p.server] || e.IsExternal()
				}
				continue
			}
			if p.hour.Before(month) || !p.hour.Before(to) {
				continue
			}
			s := segOf(p.hour)
			switch e.Kind {
			case model.KindBandwidthIn:
				in[s].Add(in[s], p.q)
			case model.KindBandwidthOut:
				out[s].Add(out[s], p.q)
			case model.KindStorage:
				bs[s].Add(bs[s], p.bs)
			}
		}
	}
	lic, ext := make([]int64, n), make([]int64, n)
	for d, servers := range licensed {
		day, err := time.ParseInLocation("2006-01-02", d, loc)
		if err != nil {
			panic(err)
		}
		// Priced by the segment of its last instant.
		s := segOf(day.AddDate(0, 0, 1).UTC().Add(-time.Nanosecond))
		for _, x := range servers {
			if x {
				ext[s]++
			} else {
				lic[s]++
			}
		}
	}
	monthDays := int64(next.In(loc).AddDate(0, 0, -1).Day())
	monthSeconds := int64(next.Sub(month) / time.Second)
	gb := new(big.Rat).SetInt64(1 << 30)
	lines := map[string]string{}
	total := new(big.Rat)
	type item struct {
		qty   *big.Rat
		tiers []testTier
	}
	itemsOf := func(s int) map[string]item {
		newPrices := !cuts[s].Before(utc("2026-10-16T00:00:00Z"))
		tiersOut := []testTier{{100, "0.12"}, {1000, "0.09"}, {0, "0.05"}}
		storage := "0.10"
		if newPrices {
			tiersOut = []testTier{{100, "0.11"}, {0, "0.04"}}
			storage = "0.08"
		}
		license := "10.00"
		if tenant == "1001" && !cuts[s].Before(utc("2026-10-10T12:00:00Z")) {
			license = "7.50"
		}
		return map[string]item{
			"bandwidth_in":     {new(big.Rat).Quo(new(big.Rat).SetInt(in[s]), gb), []testTier{{0, "0.02"}}},
			"bandwidth_out":    {new(big.Rat).Quo(new(big.Rat).SetInt(out[s]), gb), tiersOut},
			"storage":          {new(big.Rat).Quo(new(big.Rat).SetInt(bs[s]), new(big.Rat).Mul(gb, big.NewRat(monthSeconds, 1))), []testTier{{0, storage}}},
			"license":          {big.NewRat(lic[s], monthDays), []testTier{{0, license}}},
			"license_external": {big.NewRat(ext[s], monthDays), []testTier{{0, "15.00"}}},
		}
	}
	for _, name := range []string{"bandwidth_in", "bandwidth_out", "storage", "license", "license_external"} {
		pos := new(big.Rat)
		for s := 0; s < n; {
			it := itemsOf(s)[name]
			run := s + 1
			if cuts[s].Before(from) { // the lead: counted, not billed
				pos.Add(pos, it.qty)
				s = run
				continue
			}
			qty := new(big.Rat).Set(it.qty)
			for ; run < n && slices.Equal(itemsOf(run)[name].tiers, it.tiers); run++ {
				qty.Add(qty, itemsOf(run)[name].qty)
			}
			start := new(big.Rat).Set(pos)
			end := new(big.Rat).Add(start, qty)
			lo := new(big.Rat)
			for ti, tier := range it.tiers {
				hi := new(big.Rat).SetInt64(tier.upTo)
				a := start
				if lo.Cmp(a) > 0 {
					a = lo
				}
				b := end
				if tier.upTo != 0 && hi.Cmp(b) < 0 {
					b = hi
				}
				if part := new(big.Rat).Sub(b, a); part.Sign() > 0 {
					price, _ := new(big.Rat).SetString(tier.price)
					amount := testRound(new(big.Rat).Mul(part, price), 2)
					am, _ := new(big.Rat).SetString(amount)
					total.Add(total, am)
					lines[name+"|"+cuts[s].In(loc).Format(time.RFC3339)+"|"+cuts[run].In(loc).Format(time.RFC3339)+"|"+strconv.Itoa(ti+1)] =
						part.RatString() + " @" + strings.TrimRight(strings.TrimRight(price.FloatString(4), "0"), ".") + " = " + amount
				}
				if tier.upTo != 0 {
					lo = hi
				}
			}
			pos = end
			s = run
		}
	}
	return lines, total.FloatString(2)
}

type invoiceAnswerT struct {
	Currency string `json:"currency"`
	Total    string `json:"total"`
	Lines    []struct {
		Item          string `json:"item"`
		From          string `json:"from"`
		To            string `json:"to"`
		Tier          int    `json:"tier"`
		QuantityExact string `json:"quantity_exact"`
		UnitPrice     string `json:"unit_price"`
		Amount        string `json:"amount"`
	} `json:"lines"`
	Segments []invoiceSegmentT `json:"segments"`
	Lead     []invoiceSegmentT `json:"lead_segments"`
}

type invoiceSegmentT struct {
	From                      string `json:"from"`
	To                        string `json:"to"`
	LicenseServerDays         int64  `json:"license_server_days"`
	LicenseExternalServerDays int64  `json:"license_external_server_days"`
}

// TestUnavailable: with ClickHouse unreachable, data endpoints answer 503
// and /readyz too, while /healthz still answers.
func TestUnavailable(t *testing.T) {
	conn, err := OpenClickHouse("127.0.0.1:1", "feedmeter", "default", "")
	if err != nil {
		t.Fatal(err)
	}
	tokens, toks := testTokens(t, "1001")
	srv := newTestServer(t, NewClickHouse(conn), mustCard(t, apiRates), tokens)
	c := apiClient{t: t, base: srv.URL, token: toks["admin"]}
	for _, p := range []string{"/v1/tenants/1001/usage", "/v1/tenants/1001/invoice", "/v1/tenants/1001/events", "/v1/usage/tenants", "/readyz"} {
		code, body, hdr := c.get(p)
		if code != http.StatusServiceUnavailable {
			t.Errorf("%s: %d, want 503 (%s)", p, code, body)
		}
		if p != "/readyz" && hdr.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", p)
		}
	}
	// Bad input is still a 400, not a 503: parameters are checked first.
	if code, _, _ := c.get("/v1/tenants/1001/usage?tz=Asia/Kolkata"); code != 400 {
		t.Errorf("bad tz with ClickHouse down: %d", code)
	}
	if code, _, _ := c.get("/healthz"); code != 200 {
		t.Errorf("healthz: %d", code)
	}
}

// TestDatabaseNotYetMade: serve started before the sink or migrate made
// its database answers 503 with Retry-After (not 500), /readyz says why
// (no database, then no tables), and both answer once it is migrated.
func TestDatabaseNotYetMade(t *testing.T) {
	addr := chtest.Addr(t)
	name := chtest.NewDatabaseName("fmtest_later")
	tokens, toks := testTokens(t, "1001")
	conn, err := OpenClickHouse(addr, name, "default", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv := newTestServer(t, NewClickHouse(conn), mustCard(t, apiRates), tokens)
	c := apiClient{t: t, base: srv.URL, token: toks["admin"]}
	paths := []string{"/v1/tenants/1001/usage?period=2026-03", "/v1/tenants/1001/invoice?period=2026-03",
		"/v1/tenants/1001/events?period=2026-03", "/v1/usage/tenants?period=2026-03"}
	for _, p := range paths {
		if code, body, hdr := c.get(p); code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Errorf("%s before the database: %d (Retry-After %q), want 503 with Retry-After: %s", p, code, hdr.Get("Retry-After"), body)
		}
	}
	if code, body, _ := c.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "does not exist yet") {
		t.Errorf("/readyz before the database: %d %s", code, body)
	}
	ctx := context.Background()
	boot, err := schemas.Connect(ctx, schemas.ConnOptions(addr, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		boot.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
		boot.Close()
	})
	// Made but not migrated: not ready either.
	if code, body, _ := c.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "holds 0 of the 5 tables") {
		t.Errorf("/readyz before the migrations: %d %s", code, body)
	}
	if _, err := schemas.Apply(ctx, boot); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(paths, "/readyz") {
		if code, body, _ := c.get(p); code != http.StatusOK {
			t.Errorf("%s once migrated: %d %s", p, code, body)
		}
	}
}

// TestRebuildingRollup: while a migration rebuilds a day rollup (schemas
// 0005) the table has no name; the endpoints that read it answer 503 with
// Retry-After, not 500, and answer again once it is back.
func TestRebuildingRollup(t *testing.T) {
	db := chtest.NewDB(t, true)
	tokens, toks := testTokens(t, "1001")
	conn, err := OpenClickHouse(db.Addr, db.Name, "default", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv := newTestServer(t, NewClickHouse(conn), mustCard(t, apiRates), tokens)
	c := apiClient{t: t, base: srv.URL, token: toks["admin"]}
	paths := []string{"/v1/tenants/1001/usage?period=2026-03&granularity=day", "/v1/tenants/1001/invoice?period=2026-03"}
	ctx := context.Background()
	for _, step := range []struct {
		sql  string
		want int
	}{
		{"RENAME TABLE usage_daily TO usage_daily_rebuild_old", http.StatusServiceUnavailable},
		{"RENAME TABLE usage_daily_rebuild_old TO usage_daily", http.StatusOK},
	} {
		if err := db.Conn.Exec(ctx, step.sql); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			code, body, hdr := c.get(p)
			if code != step.want {
				t.Errorf("after %s: %s: %d, want %d (%s)", step.sql, p, code, step.want, body)
			}
			if code == http.StatusServiceUnavailable && hdr.Get("Retry-After") == "" {
				t.Errorf("%s: 503 without Retry-After", p)
			}
		}
	}
}
