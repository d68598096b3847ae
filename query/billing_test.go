package query

import (
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCard(t *testing.T, y string) *RateCard {
	t.Helper()
	rc, err := ParseRateCard([]byte(y))
	if err != nil {
		t.Fatalf("parse rate card: %v", err)
	}
	return rc
}

func utc(s string) time.Time {
	for _, layout := range []string{time.RFC3339, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	panic("bad time " + s)
}

func zone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

const gib = 1 << 30

// flat is a card with one version and flat prices.
const flat = `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0.05"
    bandwidth_out: 0.12
    storage: "0.10"
    license: "10.00"
    license_external: "15.00"
`

// reading describes usage for a test: per billed segment bytes and
// byte-seconds, and per billed day licensed servers; the lead fields the
// same for the lead segments and days (the period's month before it).
type reading struct {
	in, out, bs             []string // per segment, decimal integers
	lic, ext                []int64  // per day; nil means zero
	leadIn, leadOut, leadBs []string
	leadLic                 []int64
}

func (rd reading) build(t *testing.T, p *Plan) *Readings {
	t.Helper()
	r := NewReadings(p)
	lead, leadDays := leadOf(p)
	set := func(dst []*big.Int, src []string) {
		for i, s := range src {
			if _, ok := dst[i].SetString(s, 10); !ok {
				t.Fatalf("bad integer %q", s)
			}
		}
	}
	if len(rd.in) > len(p.Segments)-lead || len(rd.out) > len(p.Segments)-lead || len(rd.bs) > len(p.Segments)-lead ||
		max(len(rd.leadIn), len(rd.leadOut), len(rd.leadBs)) > lead {
		t.Fatalf("readings for %d segments and %d lead ones, the plan has %d and %d",
			max(len(rd.in), len(rd.out), len(rd.bs)), max(len(rd.leadIn), len(rd.leadOut), len(rd.leadBs)), len(p.Segments)-lead, lead)
	}
	if len(rd.lic) > len(p.Days)-1-leadDays || len(rd.ext) > len(p.Days)-1-leadDays || len(rd.leadLic) > leadDays {
		t.Fatalf("licences of %d days and %d lead ones, the plan has %d and %d", max(len(rd.lic), len(rd.ext)), len(rd.leadLic),
			len(p.Days)-1-leadDays, leadDays)
	}
	set(r.BandwidthIn[lead:], rd.in)
	set(r.BandwidthOut[lead:], rd.out)
	set(r.StorageByteSeconds[lead:], rd.bs)
	set(r.BandwidthIn, rd.leadIn)
	set(r.BandwidthOut, rd.leadOut)
	set(r.StorageByteSeconds, rd.leadBs)
	copy(r.Licensed[leadDays:], rd.lic)
	copy(r.LicensedExternal[leadDays:], rd.ext)
	copy(r.Licensed, rd.leadLic)
	return r
}

// leadOf returns the number of lead segments and lead days of p.
func leadOf(p *Plan) (segments, days int) {
	for segments < len(p.Segments) && p.Segments[segments].Lead {
		segments++
	}
	for days+1 < len(p.Days) && !p.Days[days+1].After(p.Period.From) {
		days++ // ends by the period's start
	}
	return segments, days
}

func days(n int, v int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func mul(a ...int64) string {
	r := big.NewInt(1)
	for _, x := range a {
		r.Mul(r, big.NewInt(x))
	}
	return r.String()
}

// lineString renders a line for comparison: item, segment, tier, exact
// quantity, unit price and amount.
// The segments are numbered from the period's first (lead ones apart);
// a line over several segments shows the first and the last.
func lineString(inv *Invoice, l Line) string {
	lead, _ := leadOf(inv.Plan)
	seg := itoa(l.Segment - lead)
	if l.Segments > 1 {
		seg += "-" + itoa(l.Segment-lead+l.Segments-1)
	}
	return string(l.Item) + " s" + seg + " t" + itoa(l.Tier) + " q=" + l.Quantity.RatString() +
		" @" + l.UnitPrice.FloatString(4) + " = " + formatUnits(l.Amount, inv.MinorUnits)
}

func itoa(i int) string { return big.NewInt(int64(i)).String() }

// TestInvoiceTable prices hand-made readings; every expected amount is worked
// out in the comment beside it, not by the code under test.
func TestInvoiceTable(t *testing.T) {
	oct := Period{From: utc("2026-10-01"), To: utc("2026-11-01"), Loc: time.UTC}
	const octSeconds = 31 * 86400 // 2,678,400
	cases := []struct {
		name   string
		card   string
		tenant string
		period Period
		read   reading
		lines  []string
		total  string
	}{
		{
			name: "flat prices, licences prorated by days", card: flat, period: oct,
			read: reading{
				in:  []string{mul(10, gib)},              // 10 GB x 0.05 = 0.50
				out: []string{mul(3, gib/2)},             // 1.5 GB x 0.12 = 0.18
				bs:  []string{mul(100, gib, octSeconds)}, // 100 GB-month x 0.10 = 10.00
				lic: append(days(10, 4), days(21, 3)...), // 3 servers all month + 1 for 10 days = 103/31 server-months x 10 = 33.2258… → 33.23
				ext: append(days(15, 1), days(16, 0)...), // 15/31 x 15 = 7.2580… → 7.26
			},
			lines: []string{
				"bandwidth_in s0 t1 q=10 @0.0500 = 0.50",
				"bandwidth_out s0 t1 q=3/2 @0.1200 = 0.18",
				"storage s0 t1 q=100 @0.1000 = 10.00",
				"license s0 t1 q=103/31 @10.0000 = 33.23",
				"license_external s0 t1 q=15/31 @15.0000 = 7.26",
			},
			total: "51.17", // 0.50 + 0.18 + 10.00 + 33.23 + 7.26
		},
		{
			name: "half to even on every line, total of rounded lines",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0.01"
    bandwidth_out: "0.01"
    storage: "0.01"
    license: "0.31"
    license_external: "0.93"
`, period: oct,
			read: reading{
				in:  []string{mul(gib / 2)},              // 0.5 x 0.01 = 0.005 → 0.00 (even)
				out: []string{mul(3, gib/2)},             // 1.5 x 0.01 = 0.015 → 0.02 (even)
				bs:  []string{mul(5, gib/2, octSeconds)}, // 2.5 x 0.01 = 0.025 → 0.02 (even)
				lic: append(days(1, 1), days(30, 0)...),  // 1/31 x 0.31 = 0.01 exactly
				ext: append(days(1, 1), days(30, 0)...),  // 1/31 x 0.93 = 0.03 exactly
			},
			lines: []string{
				"bandwidth_in s0 t1 q=1/2 @0.0100 = 0.00",
				"bandwidth_out s0 t1 q=3/2 @0.0100 = 0.02",
				"storage s0 t1 q=5/2 @0.0100 = 0.02",
				"license s0 t1 q=1/31 @0.3100 = 0.01",
				"license_external s0 t1 q=1/31 @0.9300 = 0.03",
			},
			total: "0.08", // not round(0.005+0.015+0.025+0.01+0.03 = 0.085) = 0.08 by luck: see the next case
		},
		{
			name: "the total is not the rounded sum",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0.01"
    bandwidth_out: "0.01"
    storage: "0.01"
    license: "0"
    license_external: "0"
`, period: oct,
			read: reading{
				in:  []string{mul(gib / 2)},           // 0.005 → 0.00
				out: []string{mul(gib / 2)},           // 0.005 → 0.00
				bs:  []string{mul(gib/2, octSeconds)}, // 0.005 → 0.00
			},
			lines: []string{
				"bandwidth_in s0 t1 q=1/2 @0.0100 = 0.00",
				"bandwidth_out s0 t1 q=1/2 @0.0100 = 0.00",
				"storage s0 t1 q=1/2 @0.0100 = 0.00",
			},
			total: "0.00", // the unrounded sum 0.015 would round to 0.02
		},
		{
			name: "graduated tiers",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0"
    bandwidth_out:
      - {up_to: 10, price: "0.10"}
      - {up_to: "50", price: "0.08"}
      - {price: "0.05"}
    storage: "0"
    license: "0"
    license_external: "0"
`, period: oct,
			read: reading{out: []string{mul(60, gib)}},
			lines: []string{
				"bandwidth_out s0 t1 q=10 @0.1000 = 1.00", // 10 x 0.10
				"bandwidth_out s0 t2 q=40 @0.0800 = 3.20", // 40 x 0.08
				"bandwidth_out s0 t3 q=10 @0.0500 = 0.50", // 10 x 0.05
			},
			total: "4.70",
		},
		{
			name: "rate change mid-month splits the period; tiers continue across it",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0"
    bandwidth_out:
      - {up_to: 10, price: "0.10"}
      - {price: "0.08"}
    storage: "0.10"
    license: "10.00"
    license_external: "15.00"
  - effective: 2026-10-16
    bandwidth_out:
      - {up_to: 10, price: "0.09"}
      - {price: "0.07"}
    storage: "0.08"
    license: "12.00"
`, period: oct,
			read: reading{
				out: []string{mul(8, gib), mul(7, gib)},
				// 31 GB stored all month: 15 days then 16 days.
				bs:  []string{mul(31, gib, 15*86400), mul(31, gib, 16*86400)},
				lic: days(31, 1),
			},
			lines: []string{
				"bandwidth_out s0 t1 q=8 @0.1000 = 0.80", // 8 x 0.10
				"storage s0 t1 q=15 @0.1000 = 1.50",      // 31 GB x 15/31 month = 15 GB-month x 0.10
				"license s0 t1 q=15/31 @10.0000 = 4.84",  // 15/31 x 10 = 4.8387…
				"bandwidth_out s1 t1 q=2 @0.0900 = 0.18", // positions 8..10 at the new tier 1
				"bandwidth_out s1 t2 q=5 @0.0700 = 0.35", // 10..15 at the new tier 2
				"storage s1 t1 q=16 @0.0800 = 1.28",      // 16 GB-month x 0.08
				"license s1 t1 q=16/31 @12.0000 = 6.19",  // 16/31 x 12 = 6.1935…
			},
			total: "15.14", // 0.80+1.50+4.84+0.18+0.35+1.28+6.19
		},
		{
			name: "a version that changes another item does not cut a line",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0"
    bandwidth_out: "0.01"
    storage: "0.10"
    license: "0"
    license_external: "0"
  - effective: 2026-10-16
    storage: "0.08"
`, period: oct,
			read: reading{
				// Half a GB out before the storage change, half after: one
				// line, 1 x 0.01 = 0.01 (two lines would be 0.005 → 0.00 each).
				out: []string{mul(gib / 2), mul(gib / 2)},
				bs:  []string{mul(31, gib, 15*86400), mul(31, gib, 16*86400)},
			},
			lines: []string{
				"bandwidth_out s0-1 t1 q=1 @0.0100 = 0.01",
				"storage s0 t1 q=15 @0.1000 = 1.50", // 15 GB-month x 0.10
				"storage s1 t1 q=16 @0.0800 = 1.28", // 16 GB-month x 0.08
			},
			total: "2.79",
		},
		{
			name: "a period from mid-month continues the month's tiers",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0"
    bandwidth_out:
      - {up_to: 100, price: "0"}
      - {price: "1"}
    storage:
      - {up_to: 10, price: "0.10"}
      - {price: "0.05"}
    license:
      - {up_to: "0.5", price: "10"}
      - {price: "5"}
    license_external: "0"
`, period: Period{From: utc("2026-10-16"), To: utc("2026-11-01"), Loc: time.UTC},
			read: reading{
				// Oct 1-15, the lead: 60 GB out, 31 GB stored, one server.
				leadOut: []string{mul(60, gib)},
				leadBs:  []string{mul(31, gib, 15*86400)},
				leadLic: days(15, 1),
				out:     []string{mul(100, gib)},
				bs:      []string{mul(31, gib, 16*86400)},
				lic:     days(16, 1),
			},
			lines: []string{
				"bandwidth_out s0 t1 q=40 @0.0000 = 0.00",  // positions 60..100
				"bandwidth_out s0 t2 q=60 @1.0000 = 60.00", // 100..160
				"storage s0 t2 q=16 @0.0500 = 0.80",        // 15..31 GB-month, past 10
				"license s0 t1 q=1/62 @10.0000 = 0.16",     // 15/31..1/2 server-month: 1/62 x 10 = 0.161…
				"license s0 t2 q=1/2 @5.0000 = 2.50",       // 1/2..31/31
			},
			total: "63.46",
		},
		{
			name: "usage from before the rate card counts toward no tier",
			card: `
currency: USD
versions:
  - effective: 2026-10-16
    bandwidth_in: "0"
    bandwidth_out:
      - {up_to: 100, price: "0"}
      - {price: "1"}
    storage: "0"
    license: "3.10"
    license_external: "0"
`, period: Period{From: utc("2026-10-16"), To: utc("2026-11-01"), Loc: time.UTC},
			read: reading{out: []string{mul(100, gib)}, lic: days(16, 1)},
			lines: []string{
				"bandwidth_out s0 t1 q=100 @0.0000 = 0.00",
				"license s0 t1 q=16/31 @3.1000 = 1.60", // Oct 16-31
			},
			total: "1.60",
		},
		{
			name: "tenant override of one item; the rest from the default",
			card: flat + `
tenants:
  "42":
    - effective: 2026-10-01
      storage: "0.05"
  "43":
    - effective: 2026-10-01
      storage: "0.01"
`, tenant: "42", period: oct,
			read: reading{in: []string{mul(gib)}, bs: []string{mul(2, gib, octSeconds)}},
			lines: []string{
				"bandwidth_in s0 t1 q=1 @0.0500 = 0.05",
				"storage s0 t1 q=2 @0.0500 = 0.10",
			},
			total: "0.15",
		},
		{
			name: "tenant override taking effect mid-month splits too",
			card: flat + `
tenants:
  "42":
    - effective: 2026-10-11
      license: "6.20"
`, tenant: "42", period: oct,
			read: reading{lic: days(31, 2)},
			lines: []string{
				"license s0 t1 q=20/31 @10.0000 = 6.45", // 2 servers x 10 days = 20/31 x 10 = 6.4516…
				"license s1 t1 q=42/31 @6.2000 = 8.40",  // 2 x 21 days = 42/31 x 6.20 = 8.40 exactly
			},
			total: "14.85",
		},
		{
			name: "DST month: October in Berlin has 31 days and 2,682,000 seconds",
			card: flat,
			period: func() Period {
				loc := zone(t, "Europe/Berlin")
				return Period{From: utc("2026-09-30T22:00:00Z"), To: utc("2026-10-31T23:00:00Z"), Loc: loc}
			}(),
			read: reading{bs: []string{mul(gib, 2682000)}, lic: days(31, 1)},
			lines: []string{
				"storage s0 t1 q=1 @0.1000 = 0.10",
				"license s0 t1 q=1 @10.0000 = 10.00",
			},
			total: "10.10",
		},
		{
			name: "two months: tiers start again in November",
			card: `
currency: USD
versions:
  - effective: 2026-01-01
    bandwidth_in:
      - {up_to: 1, price: "1"}
      - {price: "0.5"}
    bandwidth_out: "0"
    storage: "0"
    license: "0"
    license_external: "0"
`, period: Period{From: utc("2026-10-31"), To: utc("2026-11-02"), Loc: time.UTC},
			read: reading{in: []string{mul(2, gib), mul(2, gib)}},
			lines: []string{
				"bandwidth_in s0 t1 q=1 @1.0000 = 1.00",
				"bandwidth_in s0 t2 q=1 @0.5000 = 0.50",
				"bandwidth_in s1 t1 q=1 @1.0000 = 1.00",
				"bandwidth_in s1 t2 q=1 @0.5000 = 0.50",
			},
			total: "3.00",
		},
		{
			name: "yen has no minor unit; GB of 10^9 bytes",
			card: `
currency: JPY
gb_bytes: 1000000000
versions:
  - effective: 2026-01-01
    bandwidth_in: "2.5"
    bandwidth_out: "0"
    storage: "0"
    license: "0"
    license_external: "0"
`, period: oct,
			read:  reading{in: []string{"3000000000"}}, // 3 GB x 2.5 = 7.5 → 8 (even)
			lines: []string{"bandwidth_in s0 t1 q=3 @2.5000 = 8"},
			total: "8",
		},
		{
			name: "dinar has three decimals",
			card: `
currency: KWD
versions:
  - effective: 2026-01-01
    bandwidth_in: "0.0125"
    bandwidth_out: "0"
    storage: "0"
    license: "0"
    license_external: "0"
`, period: oct,
			read:  reading{in: []string{mul(gib)}}, // 0.0125 → 0.012 (even)
			lines: []string{"bandwidth_in s0 t1 q=1 @0.0125 = 0.012"},
			total: "0.012",
		},
		{
			name: "huge quantities stay exact",
			card: flat, period: oct,
			// 2^64-1 bytes three times: 3 x (2^64-1) / 2^30 GB x 0.05.
			read: reading{in: []string{"55340232221128654845"}},
			// 55340232221128654845 / 1073741824 = 51539607551.99999999720603227615356445312 GB
			// x 0.05 = 2576980377.5999999998603016138076782226562 → 2576980377.60
			lines: []string{"bandwidth_in s0 t1 q=55340232221128654845/1073741824 @0.0500 = 2576980377.60"},
			total: "2576980377.60",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := mustCard(t, c.card)
			plan, err := rc.Plan(c.tenant, c.period)
			if err != nil {
				t.Fatal(err)
			}
			inv, err := rc.Price(plan, c.read.build(t, plan))
			if err != nil {
				t.Fatal(err)
			}
			want := c.lines
			var got []string
			for _, l := range inv.Lines {
				got = append(got, lineString(inv, l))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("lines:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
			}
			if g := formatUnits(inv.Total, inv.MinorUnits); g != c.total {
				t.Errorf("total %s, want %s", g, c.total)
			}
			sum := new(big.Int)
			for _, l := range inv.Lines {
				sum.Add(sum, l.Amount)
			}
			if sum.Cmp(inv.Total) != 0 {
				t.Errorf("total %s is not the sum of the lines %s", inv.Total, sum)
			}
		})
	}
}

func TestPlanSegments(t *testing.T) {
	rc := mustCard(t, flat+`
  - effective: 2026-10-16T12:00:00Z
    storage: "0.2"
tenants:
  "7":
    - effective: 2026-10-20
      license: "1"
`)
	plan, err := rc.Plan("7", Period{From: utc("2026-10-10"), To: utc("2026-11-05"), Loc: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range plan.Segments {
		if s.Lead {
			got = append(got, s.From.Format(time.RFC3339)+" "+s.To.Format(time.RFC3339)+" "+itoa(s.MonthDays)+" lead")
			continue
		}
		got = append(got, s.From.Format(time.RFC3339)+" "+s.To.Format(time.RFC3339)+" "+itoa(s.MonthDays)+" "+
			s.Prices[ItemStorage][0].Price.FloatString(2)+" "+s.Prices[ItemLicense][0].Price.FloatString(2))
	}
	want := []string{
		"2026-10-01T00:00:00Z 2026-10-10T00:00:00Z 31 lead", // graduated tiers continue from the month's start
		"2026-10-10T00:00:00Z 2026-10-16T12:00:00Z 31 0.10 10.00",
		"2026-10-16T12:00:00Z 2026-10-20T00:00:00Z 31 0.20 10.00",
		"2026-10-20T00:00:00Z 2026-11-01T00:00:00Z 31 0.20 1.00",
		"2026-11-01T00:00:00Z 2026-11-05T00:00:00Z 30 0.20 1.00",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("segments:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Oct 1 to Nov 4: the 9 lead days and the period's 26.
	if n := len(plan.Days) - 1; n != 35 {
		t.Errorf("%d days, want 35", n)
	}
	if _, lead := leadOf(plan); lead != 9 {
		t.Errorf("%d lead days, want 9", lead)
	}
	// A licence day is priced by the segment of its first instant: the
	// day of the storage change (Oct 16) belongs to the period's first.
	if i := plan.segmentAt(plan.Days[15]); i != 1 {
		t.Errorf("Oct 16 in segment %d, want 1", i)
	}
	// A period that begins or ends within a day bills the days that end in
	// it, whole: adjacent periods bill every day once, and no invoice reads
	// past its period.
	for _, c := range []struct {
		from, to  string
		first     string // first billed day
		end       string // end of the last
		billedDay int
	}{
		{"2026-10-01", "2026-10-15T12:00:00Z", "2026-10-01", "2026-10-15", 14},
		{"2026-10-15T12:00:00Z", "2026-11-01", "2026-10-15", "2026-11-01", 17},
		{"2026-10-15T12:00:00Z", "2026-10-15T18:00:00Z", "", "", 0},
	} {
		plan, err := rc.Plan("7", Period{From: utc(c.from), To: utc(c.to), Loc: time.UTC})
		if err != nil {
			t.Fatal(err)
		}
		_, lead := leadOf(plan)
		if n := len(plan.Days) - 1 - lead; n != c.billedDay {
			t.Errorf("%s to %s: %d days billed, want %d", c.from, c.to, n, c.billedDay)
		} else if n > 0 && (!plan.Days[lead].Equal(utc(c.first)) || !plan.Days[len(plan.Days)-1].Equal(utc(c.end))) {
			t.Errorf("%s to %s: days %s to %s, want %s to %s", c.from, c.to, plan.Days[lead], plan.Days[len(plan.Days)-1], c.first, c.end)
		}
	}
}

func TestPlanErrors(t *testing.T) {
	// A month (in the zone) that begins before 1970: the rollups' times
	// cannot say it.
	rc1970 := mustCard(t, strings.Replace(flat, "2026-01-01", "1970-01-01", 1))
	var pe *PeriodError
	if _, err := rc1970.Plan("", Period{From: utc("1970-01-01"), To: utc("1970-01-02"), Loc: zone(t, "America/New_York")}); !errors.As(err, &pe) {
		t.Errorf("a month from December 1969: %v, want PeriodError", err)
	}
	if _, err := rc1970.Plan("", Period{From: utc("1970-01-01"), To: utc("1970-01-02"), Loc: time.UTC}); err != nil {
		t.Errorf("January 1970 in UTC: %v", err)
	}
	rc := mustCard(t, flat)
	_, err := rc.Plan("", Period{From: utc("2025-12-31"), To: utc("2026-01-02"), Loc: time.UTC})
	var np *NoPriceError
	if !errors.As(err, &np) {
		t.Errorf("period before the card: %v, want NoPriceError", err)
	}
	for _, name := range []string{"Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns"} {
		_, err := rc.Plan("", Period{From: utc("2026-10-01"), To: utc("2026-11-01"), Loc: zone(t, name)})
		var ie *InexactError
		if !errors.As(err, &ie) {
			t.Errorf("%s: %v, want InexactError", name, err)
		}
	}
}

func TestRoundHalfEven(t *testing.T) {
	f := func(in string, places int, want string) {
		t.Helper()
		r, err := parseDecimal(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := formatRat(r, places); got != want {
			t.Errorf("round(%s, %d) = %s, want %s", in, places, got, want)
		}
	}
	f("0.005", 2, "0.00")
	f("0.015", 2, "0.02")
	f("0.025", 2, "0.02")
	f("0.0250001", 2, "0.03")
	f("0.0249999", 2, "0.02")
	f("-0.005", 2, "0.00") // -0 prints as 0
	f("-0.015", 2, "-0.02")
	f("-0.025", 2, "-0.02")
	f("2.5", 0, "2")
	f("3.5", 0, "4")
	f("12345678901234567890.125", 2, "12345678901234567890.12")
	f("7", 3, "7.000")
	f("0.1", 0, "0")
	if got := formatRat(big.NewRat(1, 3), 4); got != "0.3333" {
		t.Errorf("1/3 = %s", got)
	}
	if got := formatRat(big.NewRat(2, 3), 4); got != "0.6667" {
		t.Errorf("2/3 = %s", got)
	}
}

func TestParseDecimal(t *testing.T) {
	for _, bad := range []string{"", "-", ".5", "5.", "1e3", "1/3", "0x10", "1,5", "+1", "1.2.3", "NaN", "Inf", " 1 2"} {
		if _, err := parseDecimal(bad); err == nil {
			t.Errorf("parseDecimal(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{"0": "0", "10.50": "21/2", "-0.25": "-1/4", "007": "7", "0.1": "1/10"} {
		r, err := parseDecimal(in)
		if err != nil || r.RatString() != want {
			t.Errorf("parseDecimal(%q) = %v, %v; want %s", in, r, err, want)
		}
	}
}

func TestParseRateCardErrors(t *testing.T) {
	// flat's lines: 2 currency, 4 effective, 5 bandwidth_in, 6 bandwidth_out,
	// 7 storage, 8 license, 9 license_external; appended lines from 10.
	tiered := func(tiers string) string {
		return flat + "  - effective: 2026-10-01\n    bandwidth_out:\n" + tiers
	}
	cases := map[string]struct{ card, want string }{
		"no versions":          {"currency: USD\n", "version"},
		"bad currency":         {"currency: usd\nversions: []\n", "line 1"},
		"first incomplete":     {"currency: USD\nversions:\n  - effective: 2026-01-01\n    storage: 1\n", "bandwidth_in"},
		"unknown field":        {flat + "    storage_typo: 1\n", "line 10"},
		"float-like exponent":  {strings.Replace(flat, `"0.05"`, "5e-2", 1), "line 5"},
		"negative":             {strings.Replace(flat, `"0.05"`, `"-0.05"`, 1), "line 5"},
		"not increasing":       {flat + "  - effective: 2025-01-01\n    storage: 1\n", "line 10"},
		"not whole hour":       {flat + "  - effective: 2026-10-01T12:30:00Z\n    storage: 1\n", "line 10"},
		"tiers without up_to":  {strings.Replace(flat, "bandwidth_out: 0.12", "bandwidth_out: [{price: 1}, {price: 2}]", 1), "line 6"},
		"last tier limited":    {strings.Replace(flat, "bandwidth_out: 0.12", "bandwidth_out: [{up_to: 5, price: 1}]", 1), "line 6"},
		"tiers not increasing": {strings.Replace(flat, "bandwidth_out: 0.12", "bandwidth_out: [{up_to: 5, price: 1}, {up_to: 5, price: 1}, {price: 1}]", 1), "line 6"},
		"gb_bytes zero":        {"gb_bytes: 0\n" + flat, "line 1"},
		"bad tenant id":        {flat + "tenants:\n  \"a b\":\n    - effective: 2026-01-01\n      storage: 1\n", `tenant "a b"`},
		"empty tenant version": {flat + "tenants:\n  \"1\":\n    - effective: 2026-01-01\n", "line 12"},
		// Tiers in block style: each error names the line of the field.
		"tier price with a comma": {tiered("      - {up_to: 10, price: \"0.1\"}\n      - up_to: 20\n        price: \"0,09\"\n      - price: 1\n"), "line 14"},
		"tier up_to not a number": {tiered("      - up_to: 10\n        price: 1\n      - up_to: 1O0\n        price: 1\n      - price: 1\n"), "line 14"},
		"tier unknown field":      {tiered("      - up_to: 10\n        price: 1\n        prize: 2\n      - price: 1\n"), "line 14"},
		"tier field twice":        {tiered("      - up_to: 10\n        price: 1\n        price: 2\n      - price: 1\n"), "line 14"},
		"currency not a code":     {strings.Replace(flat, "USD", "US$", 1), "line 2"},
	}
	for name, c := range cases {
		_, err := ParseRateCard([]byte(c.card))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want it to say %q", name, err, c.want)
		}
	}
	// One mistake, one error: a bad effective time is not also "not after
	// the version before it", nor a version whose price is wrong "sets no
	// price".
	for name, card := range map[string]string{
		"bad effective":  flat + "  - effective: 2026-13-01\n    storage: 1\n",
		"bad only price": flat + "tenants:\n  \"1\":\n    - effective: 2026-01-01\n      storage: \"1,5\"\n",
	} {
		_, err := ParseRateCard([]byte(card))
		if err == nil || strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("%s: %v, want one error", name, err)
		}
	}
	// minor_units sets the minor unit of a currency the table does not know.
	if rc := mustCard(t, "minor_units: 3\n"+strings.Replace(flat, "USD", "XYZ", 1)); rc.MinorUnits != 3 {
		t.Errorf("XYZ: %d minor units, want 3", rc.MinorUnits)
	}
	// The example card parses, from its file and embedded.
	if _, err := LoadRateCard("rates.example.yaml"); err != nil {
		t.Error(err)
	}
	if _, err := ParseRateCard(ExampleRateCard); err != nil {
		t.Error(err)
	}
	// Unquoted numbers are read from their text: 0.1 is exactly 1/10.
	rc := mustCard(t, strings.Replace(flat, `"0.10"`, "0.1", 1))
	if p := rc.Default[0].Prices[ItemStorage][0].Price; p.RatString() != "1/10" {
		t.Errorf("storage price %s, want 1/10", p.RatString())
	}
	// Tenant ids that YAML would read as numbers stay strings.
	rc = mustCard(t, flat+"tenants:\n  1234:\n    - effective: 2026-05-01\n      storage: 1\n")
	if _, ok := rc.Tenants["1234"]; !ok {
		t.Errorf("tenant 1234 missing: %v", rc.Tenants)
	}
}

// hourly is made-up usage: bytes in and out and byte-seconds stored in a
// UTC hour (hours since the epoch), licensed servers inside and outside
// Rackspace on a local day (YYYY-MM-DD).
type hourly struct {
	usage   func(h int64) (in, out, bs *big.Int)
	servers func(day string) (int64, int64)
}

// read measures plan p from u, as the store would from the rollups.
func (u hourly) read(p *Plan) *Readings {
	r := NewReadings(p)
	for i, s := range p.Segments {
		for h := s.From; h.Before(s.To); h = h.Add(time.Hour) {
			in, out, bs := u.usage(h.Unix() / 3600)
			r.BandwidthIn[i].Add(r.BandwidthIn[i], in)
			r.BandwidthOut[i].Add(r.BandwidthOut[i], out)
			r.StorageByteSeconds[i].Add(r.StorageByteSeconds[i], bs)
		}
	}
	if u.servers != nil {
		for d := 0; d < p.days(); d++ {
			r.Licensed[d], r.LicensedExternal[d] = u.servers(p.Days[d].In(p.Period.Loc).Format(time.DateOnly))
		}
	}
	return r
}

// quantities prices u over p and returns the lines' quantities by item,
// tier and unit price.
func quantities(t *testing.T, rc *RateCard, tenant string, p Period, u hourly) map[string]*big.Rat {
	t.Helper()
	plan, err := rc.Plan(tenant, p)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := rc.Price(plan, u.read(plan))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*big.Rat{}
	for _, l := range inv.Lines {
		k := string(l.Item) + " tier " + itoa(l.Tier) + " @" + l.UnitPrice.RatString()
		if out[k] == nil {
			out[k] = new(big.Rat)
		}
		out[k].Add(out[k], l.Quantity)
	}
	return out
}

// TestAdjacentPeriodsAddUp: for made-up hourly usage over two months, cut
// at many hours (in UTC, Berlin and New York, whose Octobers and Novembers
// have the clocks go back), the quantities of the two invoices, per item,
// tier and unit price, add up exactly to those of the whole span's: the
// tiers continue across the cut (the lead), every licence day is billed by
// one of the two, at the same price. Prices change inside days (licences
// too, by the default and by a tenant), and one card starts inside a day.
func TestAdjacentPeriodsAddUp(t *testing.T) {
	const versions = `
    bandwidth_in: "0.02"
    bandwidth_out:
      - {up_to: 3, price: "0.12"}
      - {up_to: 9, price: "0.09"}
      - {price: "0.05"}
    storage:
      - {up_to: 1, price: "0.10"}
      - {price: "0.07"}
    license:
      - {up_to: "1.5", price: "10"}
      - {price: "6"}
    license_external: "15"
  - effective: 2026-10-16T05:00:00Z
    bandwidth_out:
      - {up_to: 5, price: "0.11"}
      - {price: "0.04"}
    license:
      - {up_to: "1", price: "11"}
      - {price: "7"}
tenants:
  "8":
    - effective: 2026-11-10T07:00:00Z
      license_external: "12"
`
	fromJan := mustCard(t, "currency: USD\nversions:\n  - effective: 2026-01-01\n"+versions)
	midDay := mustCard(t, "currency: USD\nversions:\n  - effective: 2026-10-09T17:00:00Z\n"+versions)
	bytesOf := func(h int64, salt int64) *big.Int { return big.NewInt((h*7919 + salt*104729) % (gib / 8)) }
	u := hourly{
		usage: func(h int64) (*big.Int, *big.Int, *big.Int) {
			// About 6 GB-months of storage a month: past the first tier.
			return bytesOf(h, 1), bytesOf(h, 2), new(big.Int).Mul(bytesOf(h, 3), big.NewInt(3600*100))
		},
		servers: func(day string) (int64, int64) {
			n := int64(day[8]-'0')*10 + int64(day[9]-'0')
			return 1 + n%4, 1 + n%3 // licences every day: a day billed at the wrong price shows
		},
	}
	for _, name := range []string{"UTC", "Europe/Berlin", "America/New_York"} {
		loc := zone(t, name)
		for _, c := range []struct {
			rc     *RateCard
			tenant string
			from   time.Time
		}{
			{fromJan, "", time.Date(2026, 10, 1, 0, 0, 0, 0, loc).UTC()},
			{fromJan, "8", time.Date(2026, 10, 1, 0, 0, 0, 0, loc).UTC()},
			{midDay, "8", utc("2026-10-09T17:00:00Z")},
		} {
			to := time.Date(2026, 12, 1, 0, 0, 0, 0, loc).UTC()
			whole := quantities(t, c.rc, c.tenant, Period{From: c.from, To: to, Loc: loc}, u)
			for cut := c.from.Add(time.Hour); cut.Before(to); cut = cut.Add(37 * time.Hour) {
				a := quantities(t, c.rc, c.tenant, Period{From: c.from, To: cut, Loc: loc}, u)
				b := quantities(t, c.rc, c.tenant, Period{From: cut, To: to, Loc: loc}, u)
				for _, k := range notAddingUp(whole, a, b) {
					t.Errorf("%s, tenant %q, from %s, cut at %s: %s: %v + %v, the whole %v", name, c.tenant,
						c.from.Format(time.RFC3339), cut.Format(time.RFC3339), k, a[k], b[k], whole[k])
				}
			}
		}
	}
}

// TestLeadStartsWithTheCard: usage from before the rate card priced the
// tenant counts toward no tier; a tenant whose own versions price every
// item earlier than the default starts there.
func TestLeadStartsWithTheCard(t *testing.T) {
	rc := mustCard(t, `
currency: USD
versions:
  - effective: 2026-10-16
    bandwidth_in: "0"
    bandwidth_out: [{up_to: 100, price: "0"}, {price: "1"}]
    storage: "0"
    license: "0"
    license_external: "0"
tenants:
  "8":
    - effective: 2026-10-01
      bandwidth_in: "0"
      bandwidth_out: [{up_to: 100, price: "0"}, {price: "1"}]
      storage: "0"
      license: "0"
      license_external: "0"
`)
	// 100 GB out in an hour of Oct 5 and in one of Oct 25.
	u := hourly{usage: func(h int64) (*big.Int, *big.Int, *big.Int) {
		out := new(big.Int)
		if t := time.Unix(h*3600, 0).UTC(); t.Hour() == 10 && (t.Day() == 5 || t.Day() == 25) {
			out.SetInt64(100 * gib)
		}
		return new(big.Int), out, new(big.Int)
	}}
	for _, c := range []struct {
		tenant, from string
		want         string
	}{
		{"", "2026-10-16", "bandwidth_out tier 1 @0: 100"},                                // Oct 5 is before the card
		{"8", "2026-10-20", "bandwidth_out tier 2 @1: 100"},                               // Oct 5 used the free tier
		{"8", "2026-10-01", "bandwidth_out tier 1 @0: 100, bandwidth_out tier 2 @1: 100"}, // the month
	} {
		q := quantities(t, rc, c.tenant, Period{From: utc(c.from), To: utc("2026-11-01"), Loc: time.UTC}, u)
		var got []string
		for k, v := range q {
			got = append(got, k+": "+v.RatString())
		}
		slices.Sort(got)
		if g := strings.Join(got, ", "); g != c.want {
			t.Errorf("tenant %q from %s: %s, want %s", c.tenant, c.from, g, c.want)
		}
	}
	if s := rc.Start("8"); !s.Equal(utc("2026-10-01")) {
		t.Errorf("tenant 8 starts %s, want 2026-10-01", s)
	}
	if s := rc.Start("9"); !s.Equal(utc("2026-10-16")) {
		t.Errorf("tenant 9 starts %s, want 2026-10-16", s)
	}
}

// notAddingUp returns the keys (of any of the three) whose quantities in a
// and b do not add up to month's.
func notAddingUp(month, a, b map[string]*big.Rat) []string {
	keys := map[string]bool{}
	for _, m := range []map[string]*big.Rat{month, a, b} {
		for k := range m {
			keys[k] = true
		}
	}
	var bad []string
	for k := range keys {
		sum := new(big.Rat)
		for _, x := range []*big.Rat{a[k], b[k]} {
			if x != nil {
				sum.Add(sum, x)
			}
		}
		if m := month[k]; m == nil || m.Cmp(sum) != 0 {
			bad = append(bad, k)
		}
	}
	slices.Sort(bad)
	return bad
}

// TestRateCardStart: the first instant at which the card prices every item
// for a tenant (the default's first version is on Oct 16).
func TestRateCardStart(t *testing.T) {
	const all = `bandwidth_in: "0", bandwidth_out: "0", storage: "0", license: "0", license_external: "0"`
	const allButLicense = `bandwidth_in: "0", bandwidth_out: "0", storage: "0", license_external: "0"`
	for _, c := range []struct{ name, tenant, want string }{
		{"no versions", ``, "2026-10-16"},
		{"every item earlier", `[{effective: 2026-10-01, ` + all + `}]`, "2026-10-01"},
		{"every item, later", `[{effective: 2026-10-20, ` + all + `}]`, "2026-10-16"},
		{"items first priced at different times: the latest",
			`[{effective: 2026-10-01, ` + allButLicense + `}, {effective: 2026-10-05, license: "0"}]`, "2026-10-05"},
		{"the first version that prices an item, not the last",
			`[{effective: 2026-10-01, ` + all + `}, {effective: 2026-10-20, ` + all + `}]`, "2026-10-01"},
		{"some items only: the default's", `[{effective: 2026-10-01, bandwidth_out: "0"}]`, "2026-10-16"},
		{"year 1 is a date like any other", `[{effective: 0001-01-01, ` + all + `}]`, "0001-01-01"},
	} {
		card := `
currency: USD
versions:
  - {effective: 2026-10-16, ` + all + `}
`
		if c.tenant != "" {
			card += "tenants:\n  \"8\": " + c.tenant + "\n"
		}
		rc := mustCard(t, card)
		if got := rc.Start("8"); !got.Equal(utc(c.want)) {
			t.Errorf("%s: %s, want %s", c.name, got.Format(time.DateOnly), c.want)
		}
	}
	// Versions on 0001-01-01 are ordered like any other.
	if _, err := ParseRateCard([]byte(strings.Replace(flat, "2026-01-01", "0001-01-01", 1) + "  - effective: 0001-01-01\n    storage: 1\n")); err == nil {
		t.Error("two versions on 0001-01-01 were accepted")
	}
}
