package ingest

import (
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// TestParseTime: every form xs:dateTime gives a UTC time is read, other
// zones are converted, and nothing is rounded or guessed.
func TestParseTime(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	ok := []struct{ in, want string }{
		{"2014-07-14T10:00:00Z", "2014-07-14T10:00:00Z"},
		{"2014-07-14T10:00:00+00:00", "2014-07-14T10:00:00Z"},
		{"2014-07-14T10:00:00-00:00", "2014-07-14T10:00:00Z"},
		{" \n2014-07-14T10:00:00Z\t", "2014-07-14T10:00:00Z"},
		{"2014-07-14T24:00:00Z", "2014-07-15T00:00:00Z"},
		{"2014-07-14T24:00:00.000+00:00", "2014-07-15T00:00:00Z"},
		{"2014-12-31T24:00:00Z", "2015-01-01T00:00:00Z"},
		{"2016-02-28T24:00:00-00:00", "2016-02-29T00:00:00Z"},
		{"2016-02-29T10:00:00Z", "2016-02-29T10:00:00Z"},
		{"2014-07-14T10:00:00.5Z", "2014-07-14T10:00:00.5Z"},
		{"2014-07-14T10:00:00.123456789Z", "2014-07-14T10:00:00.123456789Z"},
		{"2014-07-14T10:00:00.123456789000000Z", "2014-07-14T10:00:00.123456789Z"},
		{"2014-07-14T10:00:00.000000000000Z", "2014-07-14T10:00:00Z"},
		{"2014-07-14T10:00:00+02:00", "2014-07-14T08:00:00Z"},
		{"2014-07-14T10:00:00-05:30", "2014-07-14T15:30:00Z"},
		{"2014-07-14T10:00:00+14:00", "2014-07-13T20:00:00Z"},
		{"2014-07-14T24:00:00+02:00", "2014-07-14T22:00:00Z"},
	}
	for _, c := range ok {
		got, err := parseTime("event endTime", c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if want := utc(c.want); !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%q: got %s, want %s", c.in, got, want)
		}
	}
	bad := []struct{ in, want string }{
		{"2014-07-14T10:00:00", "has no time zone"},
		{"2014-07-14T10:00:00.5", "has no time zone"},
		{"2014-07-14T24:00:01Z", "24:00:00"},
		{"2014-07-14T24:01:00Z", "24:00:00"},
		{"2014-07-14T24:00:00.5Z", "24:00:00"},
		{"2014-07-14T25:00:00Z", "hour"},
		{"2014-07-14T10:60:00Z", "minute"},
		{"2014-07-14T10:00:60Z", "second"},
		{"2014-02-29T10:00:00Z", "day"},
		{"2014-13-01T10:00:00Z", "month"},
		{"2014-07-14T10:00:00.1234567891Z", "finer than a nanosecond"},
		{"2014-07-14T10:00:00.0000000001Z", "finer than a nanosecond"},
		{"2014-07-14T10:00:00.Z", "not an xs:dateTime"},
		{"2014-07-14T10:00:00,5Z", "not an xs:dateTime"},
		{"2014-07-14T1:00:00Z", "not an xs:dateTime"},
		{"2014-07-14t10:00:00z", "not an xs:dateTime"},
		{"2014-07-14T10:00:00z", "not an xs:dateTime"},
		{"2014-07-14 10:00:00Z", "not an xs:dateTime"},
		{"2014-07-14T10:00:00+0100", "not an xs:dateTime"},
		{"2014-07-14T10:00:00+01", "not an xs:dateTime"},
		{"2014-07-14T10:00:00+01:60", "zone"},
		{"2014-07-14T10:00:00+14:01", "zone"},
		{"2014-07-14T10:00:00+15:00", "zone"},
		{"2014-07-14T10:00:00ZZ", "not an xs:dateTime"},
		{"0001-01-01T00:00:00Z", "zero time"},
		{"0000-06-01T00:00:00Z", "year"},
		{"", "not an xs:dateTime"},
	}
	for _, c := range bad {
		_, err := parseTime("event endTime", c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "event endTime ") {
			t.Errorf("%q: error %v, want one naming the field and saying %q", c.in, err, c.want)
		}
	}
}

// TestEndOfDayIsBilled: a USAGE event that ends at 24:00:00, in any UTC
// form, is read and billed, in XML and JSON.
func TestEndOfDayIsBilled(t *testing.T) {
	for _, end := range []string{"2014-07-14T24:00:00Z", "2014-07-14T24:00:00+00:00", "2014-07-14T24:00:00.000-00:00"} {
		u := usageTwin()
		u.event = with(u.event, "startTime", "2014-07-14T23:00:00+00:00", "endTime", end)
		p := parseTwins(t, u)
		if len(p.Events) != 1 {
			t.Fatalf("%s: rejects %v", end, p.Rejects)
		}
		e := p.Events[0]
		if e.Kind != model.KindBandwidthIn || e.Quantity != 5 || model.FormatTime(e.EndTime) != "2014-07-15T00:00:00Z" ||
			model.FormatTime(e.StartTime) != "2014-07-14T23:00:00Z" {
			t.Fatalf("%s: %s", end, e.AppendJSON(nil))
		}
	}
}
