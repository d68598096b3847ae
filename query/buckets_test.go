package query

import (
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"
)

// checkBuckets verifies the defining property of buckets independently of
// how splitBuckets computes them: inside a bucket every hour has the same
// local hour/day/month; consecutive buckets differ; and the key changes at
// the bucket's start (so it is not an arbitrary cut).
func checkBuckets(t *testing.T, bounds []time.Time, loc *time.Location, g Granularity) {
	t.Helper()
	checkBucketsStep(t, bounds, loc, g, time.Minute)
}

func checkBucketsStep(t *testing.T, bounds []time.Time, loc *time.Location, g Granularity, step time.Duration) {
	t.Helper()
	for i := 0; i+1 < len(bounds); i++ {
		a, b := bounds[i], bounds[i+1]
		if !onGrain(a) || !onGrain(b) || !a.Before(b) {
			t.Fatalf("bucket %d [%s, %s) not on the grain or empty", i, a, b)
		}
		k := keyOf(a, loc, g)
		for h := a; h.Before(b); h = h.Add(step) {
			if g != Hour && keyOf(h, loc, g) != k {
				t.Fatalf("bucket %d [%s, %s): %s is in another %s", i, a, b, h, g)
			}
		}
		if i > 0 && g != Hour && keyOf(a.Add(-time.Nanosecond), loc, g) == k {
			t.Fatalf("bucket %d starts at %s but the %s does not change there", i, a, g)
		}
	}
}

func TestSplitBucketsDST(t *testing.T) {
	berlin := zone(t, "Europe/Berlin")
	f := func(name string, from, to string, loc *time.Location, g Granularity, n int, hours map[int]int) {
		t.Helper()
		b, err := splitBuckets(utc(from), utc(to), loc, g)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkBuckets(t, b, loc, g)
		if len(b)-1 != n {
			t.Errorf("%s: %d buckets, want %d", name, len(b)-1, n)
		}
		for i, h := range hours {
			if got := int(b[i+1].Sub(b[i]) / time.Hour); got != h {
				t.Errorf("%s: bucket %d (%s) has %d hours, want %d", name, i, b[i].In(loc).Format(time.RFC3339), got, h)
			}
		}
	}
	// October 2026 in Berlin: 2026-09-30T22:00Z to 2026-10-31T23:00Z; the
	// 25th (index 24) has 25 hours.
	f("berlin october days", "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z", berlin, Day, 31, map[int]int{0: 24, 23: 24, 24: 25, 25: 24})
	// March 2026: the 29th has 23 hours.
	f("berlin march days", "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z", berlin, Day, 31, map[int]int{27: 24, 28: 23, 29: 24})
	// The 25th of October by the hour: 25 buckets.
	f("berlin oct 25 hours", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", berlin, Hour, 25, nil)
	f("berlin year months", "2025-12-31T23:00:00Z", "2026-12-31T23:00:00Z", berlin, Month, 12, map[int]int{2: 31*24 - 1, 9: 31*24 + 1})
	// Clipping: a range starting mid-day gives a short first bucket.
	f("clipped", "2026-10-01T10:00:00Z", "2026-10-03T05:00:00Z", time.UTC, Day, 3, map[int]int{0: 14, 1: 24, 2: 5})
	// New York, November 1 2026 (fall back): 25 hours.
	ny := zone(t, "America/New_York")
	f("new york", "2026-11-01T04:00:00Z", "2026-11-03T05:00:00Z", ny, Day, 2, map[int]int{0: 25, 1: 24})
	// Santiago: clocks skip from 24:00 to 01:00; the day after starts at 01:00.
	f("santiago", "2026-08-01T04:00:00Z", "2026-10-01T03:00:00Z", zone(t, "America/Santiago"), Day, 61, nil)
	// Whole-hour zones far from UTC.
	f("kiritimati", "2026-09-30T10:00:00Z", "2026-10-31T10:00:00Z", zone(t, "Pacific/Kiritimati"), Day, 31, nil)
	// Pyongyang was on +08:30 from 2015-08-15 to 2018-05-04: 2014 is exact.
	f("pyongyang 2014", "2014-09-30T15:00:00Z", "2014-10-31T15:00:00Z", zone(t, "Asia/Pyongyang"), Day, 31, nil)
}

func TestSplitBucketsInexact(t *testing.T) {
	cases := []struct {
		zone     string
		from, to string
		g        Granularity
	}{
		{"Asia/Kolkata", "2026-10-01T00:00:00Z", "2026-10-05T00:00:00Z", Day},   // +05:30
		{"Asia/Kolkata", "2026-10-01T00:00:00Z", "2026-10-01T05:00:00Z", Hour},  // local hours start at :30
		{"Asia/Kolkata", "2026-09-01T00:00:00Z", "2026-12-01T00:00:00Z", Month}, // months start at 18:30Z
		{"Asia/Kathmandu", "2026-10-01T00:00:00Z", "2026-10-03T00:00:00Z", Day}, // +05:45
		{"Australia/Lord_Howe", "2026-10-01T00:00:00Z", "2026-10-03T00:00:00Z", Day},
		{"America/St_Johns", "2026-10-01T00:00:00Z", "2026-10-03T00:00:00Z", Day}, // -02:30 in October
		{"Pacific/Chatham", "2026-10-01T00:00:00Z", "2026-10-03T00:00:00Z", Hour},
		{"Asia/Pyongyang", "2016-10-01T00:00:00Z", "2016-10-03T00:00:00Z", Day}, // +08:30 then
	}
	for _, c := range cases {
		_, err := splitBuckets(utc(c.from), utc(c.to), zone(t, c.zone), c.g)
		var ie *InexactError
		if !errors.As(err, &ie) {
			t.Errorf("%s %s %s: err %v, want InexactError", c.zone, c.from, c.g, err)
			continue
		}
		if onGrain(ie.At) && ie.What != "the start of an hour" {
			t.Errorf("%s: boundary %s is on the grain", c.zone, ie.At)
		}
	}
	// Kolkata by the hour is inexact even inside one UTC hour's range: the
	// local hour changes at :30.
	if _, err := splitBuckets(utc("2026-10-01T00:00:00Z"), utc("2026-10-01T01:00:00Z"), zone(t, "Asia/Kolkata"), Hour); err == nil {
		t.Error("Kolkata hour accepted")
	}
	// A range of whole UTC days is no help: Kolkata's local midnight falls
	// at 18:30Z, inside a UTC hour.
	if _, err := splitBuckets(utc("2026-10-01T00:00:00Z"), utc("2026-10-02T00:00:00Z"), zone(t, "Asia/Kolkata"), Day); err == nil {
		t.Error("Kolkata day accepted")
	}
}

func TestLocalDateAndMonth(t *testing.T) {
	berlin := zone(t, "Europe/Berlin")
	d, err := localDate(2026, 10, 25, berlin, time.Hour)
	if err != nil || !d.Equal(utc("2026-10-24T22:00:00Z")) {
		t.Errorf("Berlin 2026-10-25 starts %s (%v)", d, err)
	}
	s, e, err := localMonth(2026, 10, berlin, time.Hour)
	if err != nil || !s.Equal(utc("2026-09-30T22:00:00Z")) || !e.Equal(utc("2026-10-31T23:00:00Z")) {
		t.Errorf("Berlin October: %s %s %v", s, e, err)
	}
	s, e, err = localMonth(2026, 12, time.UTC, time.Hour)
	if err != nil || !s.Equal(utc("2026-12-01")) || !e.Equal(utc("2027-01-01")) {
		t.Errorf("UTC December: %s %s %v", s, e, err)
	}
	// A zone off the hourly grain: the error names the date's own start
	// (it named the first boundary of a window three days wide).
	var ie *InexactError
	if _, err := localDate(2026, 10, 10, zone(t, "Asia/Kolkata"), time.Hour); !errors.As(err, &ie) || !ie.At.Equal(utc("2026-10-09T18:30:00Z")) {
		t.Errorf("Kolkata 2026-10-10: %v, want an error at its start, 2026-10-09T18:30:00Z", err)
	}
	// By the second (the events), the same date and month are exact.
	if d, err := localDate(2026, 10, 10, zone(t, "Asia/Kolkata"), time.Second); err != nil || !d.Equal(utc("2026-10-09T18:30:00Z")) {
		t.Errorf("Kolkata 2026-10-10 by the second starts %s (%v)", d, err)
	}
	if s, e, err := localMonth(2026, 10, zone(t, "Asia/Kathmandu"), time.Second); err != nil || !s.Equal(utc("2026-09-30T18:15:00Z")) || !e.Equal(utc("2026-10-31T18:15:00Z")) {
		t.Errorf("Kathmandu October by the second: %s %s (%v)", s, e, err)
	}
	// Santiago 2026-09-06: clocks go from 24:00 on the 5th to 01:00 on
	// the 6th; the 6th starts at 01:00 local, 04:00Z.
	d, err = localDate(2026, 9, 6, zone(t, "America/Santiago"), time.Hour)
	if err != nil || !d.Equal(utc("2026-09-06T04:00:00Z")) {
		t.Errorf("Santiago 2026-09-06 starts %s (%v)", d, err)
	}
	if !daysAligned([]time.Time{utc("2026-10-01"), utc("2026-10-02")}) || daysAligned([]time.Time{utc("2026-10-01T01:00:00Z")}) {
		t.Error("daysAligned")
	}
}

// TestSplitBucketsEveryZone checks the defining property of day and month
// buckets in every zone of the system's tz database, in 2026 and at the far
// end of the range (where Go computes transitions from the zone's rule).
func TestSplitBucketsEveryZone(t *testing.T) {
	for _, name := range systemZones(t) {
		loc := zone(t, name)
		for _, r := range [][2]string{{"2026-09-20T00:00:00Z", "2026-11-10T00:00:00Z"}, {"2105-10-01T00:00:00Z", "2106-01-01T00:00:00Z"}} {
			for _, g := range []Granularity{Day, Month} {
				b, err := splitBuckets(utc(r[0]), utc(r[1]), loc, g)
				if err != nil {
					var ie *InexactError
					if !errors.As(err, &ie) {
						t.Errorf("%s %s: %v", name, r[0], err)
					}
					continue
				}
				checkBucketsStep(t, b, loc, g, 15*time.Minute)
			}
		}
	}
}

// TestByLocal: the local-day and local-month bucketing that replaces a
// comparison per row and bucket puts every hour of a range in the bucket
// whose bounds hold it — days and months, zones with and without daylight
// saving, southern ones, one that skipped a day (Apia, 2011), one whose DST
// began at midnight (São Paulo) — with one offset branch per offset change.
func TestByLocal(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Pacific/Apia", "America/Sao_Paulo", "Asia/Tokyo", "Etc/GMT+12", "Europe/London"}
	checked := 0
	for _, z := range zones {
		loc, err := time.LoadLocation(z)
		if err != nil {
			t.Fatal(err)
		}
		for range 40 {
			from := time.Unix(3600*int64(r.IntN(24*365*60)), 0).UTC() // an hour of 1970-2029
			to := from.Add(time.Duration(1+r.IntN(24*400)) * time.Hour)
			for _, g := range []Granularity{Day, Month} {
				bounds, err := splitBuckets(from, to, loc, g)
				if err != nil {
					continue // a zone off the hourly grain then
				}
				bk, ok := byLocal(bounds, loc, "ts")
				if !ok {
					t.Fatalf("%s %v..%v: bounds not local midnights", z, from, to)
				}
				// The offset branches: (end, offset) pairs, then the last offset.
				changes := 0
				for h := from; h.Before(to); h = h.Add(time.Hour) {
					if offsetAt(h, loc) != offsetAt(h.Add(-time.Hour), loc) && h.After(from) {
						changes++
					}
				}
				if len(bk.args) != 2*changes+1 {
					t.Fatalf("%s %v..%v: %d arguments for %d offset changes", z, from, to, len(bk.args), changes)
				}
				for h := from; h.Before(to); h = h.Add(time.Hour) {
					want := sort.Search(len(bounds), func(i int) bool { return bounds[i].After(h) }) - 1
					if got := bk.index(evalLocal(bk, h.Unix())); got != want {
						t.Fatalf("%s %v..%v by %v: hour %v in bucket %d, want %d", z, from, to, g, h, got, want)
					}
					checked++
				}
			}
		}
	}
	if checked < 100000 {
		t.Errorf("only %d hours checked", checked)
	}
	// Fixed cases: one day (both a day and a month), a part of a day, days
	// that each begin a month, Apia's skipped day, Casey's repeated date
	// (2010-03-05: +11 to +08 at 02:00, so a later bucket has an earlier
	// date: not by local date at all).
	for _, c := range []struct {
		zone     string
		from, to time.Time
		g        Granularity
		byLocal  bool
	}{
		{"Europe/Berlin", utc("2026-10-15T22:00:00Z"), utc("2026-10-16T22:00:00Z"), Day, true},
		{"Europe/Berlin", utc("2026-10-15T22:00:00Z"), utc("2026-10-16T22:00:00Z"), Month, true},
		{"Europe/Berlin", utc("2026-10-30T23:00:00Z"), utc("2026-11-01T23:00:00Z"), Day, true},
		{"UTC", utc("2026-10-16T10:00:00Z"), utc("2026-10-16T15:00:00Z"), Day, true},
		{"Pacific/Apia", utc("2011-12-25"), utc("2012-01-05"), Day, true},
		{"Antarctica/Casey", utc("2010-03-01"), utc("2010-03-10"), Day, false},
	} {
		loc := zone(t, c.zone)
		bounds, err := splitBuckets(c.from, c.to, loc, c.g)
		if err != nil {
			t.Fatal(err)
		}
		bk, ok := byLocal(bounds, loc, "ts")
		if ok != c.byLocal {
			t.Errorf("%s %v..%v by %v: byLocal %v, want %v", c.zone, c.from, c.to, c.g, ok, c.byLocal)
			continue
		}
		for h := c.from; ok && h.Before(c.to); h = h.Add(time.Hour) {
			want := sort.Search(len(bounds), func(i int) bool { return bounds[i].After(h) }) - 1
			if got := bk.index(evalLocal(bk, h.Unix())); got != want {
				t.Fatalf("%s %v..%v by %v: hour %v in bucket %d, want %d", c.zone, c.from, c.to, c.g, h, got, want)
			}
		}
	}
	// A bound inside a local day (an invoice's rate period): not by day.
	day := time.Date(2026, 10, 16, 0, 0, 0, 0, time.UTC)
	if _, ok := byLocal([]time.Time{day, day.Add(12 * time.Hour), day.AddDate(0, 0, 1)}, time.UTC, "ts"); ok {
		t.Error("a bound at noon bucketed by day")
	}
	// Two months in one bucket: neither by day nor by month.
	if _, ok := byLocal([]time.Time{day, day.AddDate(0, 2, 0)}, time.UTC, "ts"); ok {
		t.Error("a bucket of two months bucketed by month")
	}
}

// evalLocal computes in Go what byLocal's expression makes ClickHouse
// return for a row whose grain starts at ts (TestByLocalOnClickHouse runs
// the expression itself).
func evalLocal(bk bucketing, ts int64) uint32 {
	off := bk.args[len(bk.args)-1].(int64)
	for i := 0; i+1 < len(bk.args); i += 2 {
		if ts < int64(bk.args[i].(uint32)) {
			off = bk.args[i+1].(int64)
			break
		}
	}
	if strings.HasPrefix(bk.expr, "toYYYYMM(") {
		y, m, _ := time.Unix(ts+off, 0).UTC().Date()
		return uint32(y*100 + int(m))
	}
	return uint32((ts + off + 86400) / 86400) // as ClickHouse's intDiv of a non-negative
}
