package query

import (
	"fmt"
	"time"
)

// Granularity is the length of a usage bucket in the requested zone.
type Granularity int

// The granularities of the usage endpoint.
const (
	Hour Granularity = iota
	Day
	Month
)

func (g Granularity) String() string {
	switch g {
	case Hour:
		return "hour"
	case Day:
		return "day"
	case Month:
		return "month"
	}
	return fmt.Sprintf("Granularity(%d)", int(g))
}

// parseGranularity reads hour, day or month.
func parseGranularity(s string) (Granularity, bool) {
	switch s {
	case "hour":
		return Hour, true
	case "day":
		return Day, true
	case "month":
		return Month, true
	}
	return 0, false
}

// InexactError says that a zone's offset puts a bucket boundary where the
// hourly UTC grain of the rollups has none, so the answer could only be
// approximated.
type InexactError struct {
	Zone   string
	At     time.Time // the boundary, UTC
	Offset int       // the zone's offset from UTC in seconds there
	What   string    // what the boundary is: "the start of a day", "an hour"…
}

func (e *InexactError) Error() string {
	return fmt.Sprintf("%s (UTC%s) puts %s at %s, which is not a whole UTC hour: the rollups are stored by UTC hour, so these buckets cannot be computed exactly",
		e.Zone, formatOffset(e.Offset), e.What, e.At.UTC().Format(time.RFC3339))
}

func formatOffset(off int) string {
	sign := '+'
	if off < 0 {
		sign, off = '-', -off
	}
	return fmt.Sprintf("%c%02d:%02d", sign, off/3600, off%3600/60)
}

// onGrain reports whether t is a whole UTC hour.
func onGrain(t time.Time) bool { return t.Unix()%3600 == 0 && t.Nanosecond() == 0 }

// floorDiv is a/b rounded toward minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// bucketKey identifies the local hour, day or month that t falls in.
type bucketKey struct{ y, m, d, h int }

func keyOf(t time.Time, loc *time.Location, g Granularity) bucketKey {
	lt := t.In(loc)
	y, m, d := lt.Date()
	switch g {
	case Hour:
		return bucketKey{y, int(m), d, lt.Hour()}
	case Day:
		return bucketKey{y, int(m), d, 0}
	}
	return bucketKey{y, int(m), 0, 0}
}

// splitBuckets cuts [from, to) into the hours, days or months of loc that it
// overlaps, each clipped to [from, to), and returns the n+1 boundaries of the
// n buckets. A local day is the time between two changes of the local date,
// so days have 23 or 25 hours across daylight-saving changes (and a day
// starting at 01:00 where clocks skip midnight). Hours are the UTC hours,
// which are the local hours wherever the offset is a whole number of hours.
//
// Every boundary must be a whole UTC hour, the grain of the rollups; when the
// zone puts one elsewhere (offsets such as +05:30 or +05:45, or a transition
// in the middle of an hour) splitBuckets returns an *InexactError. from and
// to must be whole UTC hours with from < to (the callers check that first).
func splitBuckets(from, to time.Time, loc *time.Location, g Granularity) ([]time.Time, error) {
	return splitOn(from, to, loc, g, time.Hour)
}

// splitOn is splitBuckets with every boundary on a whole multiple of grain
// (an hour for the rollups; a second for the events, which keep their
// times). from and to must be on the grain.
func splitOn(from, to time.Time, loc *time.Location, g Granularity, grain time.Duration) ([]time.Time, error) {
	from, to = from.UTC(), to.UTC()
	bounds := []time.Time{from}
	add := func(b time.Time, what string, off int) error {
		if b.Truncate(grain) != b {
			return &InexactError{Zone: loc.String(), At: b, Offset: off, What: what}
		}
		if b.After(bounds[len(bounds)-1]) && b.Before(to) {
			bounds = append(bounds, b)
		}
		return nil
	}
	for t := from; t.Before(to); {
		off, end := offsetSpan(t, loc, to)
		// Within [t, end) the offset is constant: local time is UTC + off.
		switch g {
		case Hour:
			if off%3600 != 0 {
				return nil, &InexactError{Zone: loc.String(), At: t, Offset: off, What: "the start of an hour"}
			}
			for b := t.Truncate(time.Hour).Add(time.Hour); b.Before(end); b = b.Add(time.Hour) {
				bounds = append(bounds, b)
			}
		case Day:
			local := t.Unix() + int64(off)
			for day := floorDiv(local, 86400) + 1; ; day++ {
				b := time.Unix(day*86400-int64(off), 0).UTC()
				if !b.Before(end) {
					break
				}
				if err := add(b, "the start of a day", off); err != nil {
					return nil, err
				}
			}
		case Month:
			fixed := time.FixedZone("", off)
			y, m, _ := t.In(fixed).Date()
			for i := 1; ; i++ {
				b := time.Date(y, m+time.Month(i), 1, 0, 0, 0, 0, fixed).UTC()
				if !b.Before(end) {
					break
				}
				if err := add(b, "the start of a month", off); err != nil {
					return nil, err
				}
			}
		}
		if end.Equal(to) {
			break
		}
		// A transition at end: a boundary when the local hour, day or
		// month changes there.
		if g == Hour || keyOf(end.Add(-time.Nanosecond), loc, g) != keyOf(end, loc, g) {
			_, newOff := end.In(loc).Zone()
			if err := add(end, "a change of offset", newOff); err != nil {
				return nil, err
			}
		}
		t = end
	}
	return append(bounds, to), nil
}

// offsetSpan returns loc's offset at t and an instant after t, at most
// limit, until which that offset holds. It trusts time.Time.ZoneBounds only
// as far as it can check it: past the last transition of the tz data, Go
// computes periods from the zone's rule year by year, and at some year ends
// ZoneBounds returns a period that ends at t itself; then (or when the
// offset just before the reported end differs) it advances by one hour, on
// which the offset at t is checked again by the next call.
func offsetSpan(t time.Time, loc *time.Location, limit time.Time) (int, time.Time) {
	lt := t.In(loc)
	_, off := lt.Zone()
	_, end := lt.ZoneBounds()
	if end.IsZero() || end.After(limit) {
		end = limit
	}
	if !end.After(t) || offsetAt(end.Add(-time.Nanosecond), loc) != off {
		end = t.Truncate(time.Hour).Add(time.Hour)
		if end.After(limit) {
			end = limit
		}
	}
	return off, end
}

func offsetAt(t time.Time, loc *time.Location) int {
	_, off := t.In(loc).Zone()
	return off
}

// daysAligned reports whether every boundary is a UTC midnight, so that the
// daily rollup can answer instead of the hourly one.
func daysAligned(bounds []time.Time) bool {
	for _, b := range bounds {
		if b.Unix()%86400 != 0 {
			return false
		}
	}
	return true
}

// enclosing returns the bounds of the local day or month (g) of loc that
// contains the instant t, computed with splitBuckets so that the same rules
// (and the same *InexactError) apply. It looks in a window around t just
// wide enough for the day's or the month's own bounds, so that an error
// names one of them (not a boundary days before), and in a wider one for a
// day next to one a zone skipped.
func enclosing(t time.Time, loc *time.Location, g Granularity, grain time.Duration) (start, end time.Time, err error) {
	spans := []time.Duration{27 * time.Hour, 3 * 24 * time.Hour}
	if g == Month {
		spans = []time.Duration{33 * 24 * time.Hour}
	}
	for _, span := range spans {
		lo := t.Add(-span).Truncate(time.Hour)
		hi := t.Add(span).Truncate(time.Hour)
		bounds, err := splitOn(lo, hi, loc, g, grain)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		for i := 0; i+1 < len(bounds); i++ {
			if !t.Before(bounds[i]) && t.Before(bounds[i+1]) {
				if i == 0 || i+2 == len(bounds) {
					break // clipped by the window: try a wider one
				}
				return bounds[i], bounds[i+1], nil
			}
		}
	}
	return time.Time{}, time.Time{}, fmt.Errorf("no %s of %s around %s", g, loc, t.UTC().Format(time.RFC3339))
}

// localDate returns the start of the local date y-m-d in loc: the first
// instant whose local date it is (or, for a date a zone skipped, the start of
// the next one).
func localDate(y int, m time.Month, d int, loc *time.Location, grain time.Duration) (time.Time, error) {
	noon := time.Date(y, m, d, 12, 0, 0, 0, loc)
	start, _, err := enclosing(noon, loc, Day, grain)
	return start, err
}

// localMonth returns the bounds of the local month y-m in loc.
func localMonth(y int, m time.Month, loc *time.Location, grain time.Duration) (start, end time.Time, err error) {
	return enclosing(time.Date(y, m, 15, 12, 0, 0, 0, loc), loc, Month, grain)
}
