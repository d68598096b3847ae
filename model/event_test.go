package model

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func usage(kind Kind, q uint64) Event {
	return Event{
		TenantID: "1234", EntryID: "urn:uuid:1", EventID: "e1", Kind: kind,
		ProductNamespace: NSCloudBackup + string(kind), ProductVersion: "1",
		EventType: TypeUsage, EventVersion: "1", ServerID: "9445", ResourceType: "AGENT",
		StartTime: ts("2026-10-01T00:00:00Z"), EndTime: ts("2026-10-01T01:00:00Z"), Quantity: q,
	}
}

func TestJSONRoundTrip(t *testing.T) {
	f := false
	snap := Event{
		TenantID: "123456", EntryID: "urn:uuid:x", EventID: "e", Kind: KindLicense,
		ProductNamespace: NSCloudBackup + "license", ProductVersion: "3", EventType: TypeUsageSnapshot,
		ServerName: "name \"quoted\" \\ \u2028 \x01 é", External: &f, EventTime: ts("2014-01-24T10:19:52Z"),
		Quantity: 1, Updated: ts("2014-02-03T10:33:10.075Z"), Published: ts("2014-02-03T10:33:10.075Z"),
	}
	for _, e := range []Event{usage(KindStorage, math.MaxUint64), usage(KindBandwidthIn, 0), snap, {EntryID: "x", Kind: KindOther}} {
		b := e.AppendJSON(nil)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %s", b)
		}
		var got Event
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
		}
		// encoding/json reads the same values (and so would any consumer).
		var generic map[string]any
		if err := json.Unmarshal(b, &generic); err != nil {
			t.Fatal(err)
		}
		if generic["server_name"] != e.ServerName {
			t.Errorf("server_name = %q, want %q", generic["server_name"], e.ServerName)
		}
	}
}

func TestQuantityIsExact(t *testing.T) {
	e := usage(KindStorage, math.MaxUint64)
	b := e.AppendJSON(nil)
	if !strings.Contains(string(b), `"quantity":18446744073709551615,`) {
		t.Fatalf("quantity not exact in %s", b)
	}
	e.Quantity = 1<<53 + 1
	var got Event
	if err := json.Unmarshal(e.AppendJSON(nil), &got); err != nil || got.Quantity != 1<<53+1 {
		t.Fatalf("quantity %d (err %v), want %d", got.Quantity, err, uint64(1<<53+1))
	}
}

func TestJSONFieldOrderAndNulls(t *testing.T) {
	e := Event{EntryID: "urn:uuid:1", Kind: KindOther, EventType: "UP"}
	got := string(e.AppendJSON(nil))
	want := `{"tenant_id":"","entry_id":"urn:uuid:1","event_id":"","reference_id":"","kind":"other","product_namespace":"","product_version":"","event_type":"UP","event_version":"","region":"","data_center":"","environment":"","resource_id":"","resource_type":"","server_id":"","server_name":"","external":null,"start_time":null,"end_time":null,"event_time":null,"quantity":0,"updated":null,"published":null}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	for _, in := range []string{
		`{"kind":"storage","quantity":1}`,
		`{"entry_id":"x","quantity":1}`,
		`{"entry_id":"x","kind":"storage"}`,
		`{"entry_id":"x","kind":"storage","quantity":-1}`,
		`{"entry_id":"x","kind":"storage","quantity":1.5}`,
		`{"entry_id":"x","kind":"storage","quantity":18446744073709551616}`,
		`{"entry_id":"x","kind":"storage","quantity":1,"bogus":1}`,
		`{"entry_id":"x","kind":"storage","quantity":1,"start_time":"yesterday"}`,
		`{"entry_id":"x","kind":"storage","quantity":1} {}`,
	} {
		var e Event
		if err := json.Unmarshal([]byte(in), &e); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

func TestValidate(t *testing.T) {
	tr := true
	cases := []struct {
		name string
		mod  func(*Event)
		want string // "" = valid
	}{
		{"bandwidth ok", func(e *Event) {}, ""},
		{"no tenant", func(e *Event) { e.TenantID = "" }, "no tenantId"},
		{"no entry", func(e *Event) { e.EntryID = "" }, "entry_id is empty"},
		{"no event id", func(e *Event) { e.EventID = "" }, "no id"},
		{"start == end", func(e *Event) { e.EndTime = e.StartTime }, "is not before endTime"},
		{"no start", func(e *Event) { e.StartTime = time.Time{} }, "no startTime"},
		{"over a day", func(e *Event) { e.EndTime = e.StartTime.Add(MaxUsageInterval + time.Second) }, "longer than a day"},
		{"exactly a day", func(e *Event) { e.EndTime = e.StartTime.Add(MaxUsageInterval) }, ""},
		{"no server", func(e *Event) { e.ServerID = "" }, "no serverID"},
		{"snapshot bandwidth", func(e *Event) { snapshot(e); e.Kind, e.Quantity = KindBandwidthOut, 5 }, "cannot have event type"},
		{"bad kind", func(e *Event) { e.Kind = "disk" }, "kind \"disk\""},
		{"license v1", func(e *Event) { e.Kind = KindLicense; e.Quantity = 1 }, ""},
		{"license quantity", func(e *Event) { e.Kind = KindLicense; e.Quantity = 2 }, "not 1"},
		{"snapshot ok", snapshot, ""},
		{"snapshot no name", func(e *Event) { snapshot(e); e.ServerName = "" }, "no serverName"},
		{"snapshot no time", func(e *Event) { snapshot(e); e.EventTime = time.Time{} }, "USAGE_SNAPSHOT event has no eventTime"},
		{"snapshot external no server", func(e *Event) { snapshot(e); e.ServerID, e.External = "", &tr }, ""},
		{"snapshot internal no server", func(e *Event) { snapshot(e); e.ServerID = "" }, "no serverID and is not external"},
		{"other system event", func(e *Event) { *e = Event{EntryID: "x", Kind: KindOther, EventType: "UP"} }, ""},
		{"other usage without tenant", func(e *Event) { *e = Event{EntryID: "x", Kind: KindOther, EventType: TypeUsage} }, "no tenantId"},

		// The rules core.xsd asserts of every usage event, billed or not.
		{"eventTime and startTime", func(e *Event) { e.EventTime = e.StartTime }, "has eventTime and also startTime or endTime"},
		{"snapshot with endTime", func(e *Event) { snapshot(e); e.EndTime = e.EventTime.Add(time.Hour) }, "has eventTime and also startTime or endTime"},
		{"no end", func(e *Event) { e.EndTime = time.Time{} }, "USAGE event has startTime but no endTime"},
		{"usage with eventTime only", func(e *Event) { e.EventTime, e.StartTime, e.EndTime = e.StartTime, time.Time{}, time.Time{} }, "USAGE event has no startTime"},
		{"summary without times", func(e *Event) { other(e, TypeUsageSummary); e.StartTime, e.EndTime = time.Time{}, time.Time{} }, "USAGE_SUMMARY event has neither eventTime nor startTime and endTime"},
		{"summary end without start", func(e *Event) { other(e, TypeUsageSummary); e.StartTime = time.Time{} }, "USAGE_SUMMARY event has endTime but no startTime"},
		{"summary start after end", func(e *Event) { other(e, TypeUsageSummary); e.StartTime = e.EndTime.Add(time.Second) }, "is not before endTime"},
		{"summary of a week", func(e *Event) { other(e, TypeUsageSummary); e.EndTime = e.StartTime.Add(7 * MaxUsageInterval) }, ""},
		{"summary snapshot-like", func(e *Event) {
			other(e, TypeUsageSummary)
			e.EventTime, e.StartTime, e.EndTime = e.StartTime, time.Time{}, time.Time{}
		}, ""},
		{"other usage over a day", func(e *Event) { other(e, TypeUsage); e.EndTime = e.StartTime.Add(MaxUsageInterval + 1) }, "longer than a day"},
		{"other usage start == end", func(e *Event) { other(e, TypeUsage); e.EndTime = e.StartTime }, "is not before endTime"},
		{"other snapshot without eventTime", func(e *Event) { other(e, TypeUsageSnapshot) }, "USAGE_SNAPSHOT event has no eventTime"},
		{"other system event with any times", func(e *Event) { other(e, "UP"); e.EventTime, e.TenantID = e.StartTime, "" }, ""},
		{"version 1 across midnight", interval("1", "2026-10-01T23:00:00Z", "2026-10-02T01:00:00Z"), ""},
		{"version 2 across midnight", interval("2", "2026-10-01T23:00:00Z", "2026-10-02T01:00:00Z"),
			"USAGE event of version 2 goes beyond midnight: startTime 2026-10-01T23:00:00Z, endTime 2026-10-02T01:00:00Z"},
		{"other version 3 across midnight", func(e *Event) {
			other(e, TypeUsage)
			interval("3", "2026-10-01T12:00:00Z", "2026-10-02T00:00:01Z")(e)
		}, "beyond midnight"},
		{"version 2 to midnight", interval("2", "2026-10-01T23:00:00Z", "2026-10-02T00:00:00Z"), ""},
		{"version 2 a whole day", interval("2", "2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z"), ""},
		{"version 2 to within a second of midnight", interval("+02", "2026-10-01T23:00:00Z", "2026-10-02T00:00:00.999Z"), ""},
		{"version 2 summary across midnight", func(e *Event) {
			other(e, TypeUsageSummary)
			interval("2", "2026-10-01T23:00:00Z", "2026-10-02T01:00:00Z")(e)
		}, ""},
		{"version not an integer", func(e *Event) { e.EventVersion = "2.0" }, `USAGE event version "2.0" is not an integer`},
		{"version negative", func(e *Event) { e.EventVersion = "-7" }, ""},
		{"version huge", interval("99999999999999999999", "2026-10-01T23:00:00Z", "2026-10-02T01:00:00Z"), "beyond midnight"},
		{"referenceId", func(e *Event) { e.ReferenceID = "e0" }, ""},
		{"referenceId is its own id", func(e *Event) { e.ReferenceID = e.EventID }, `referenceId "e1" is the event's own id`},
		{"system event referenceId is its own id", func(e *Event) { other(e, "UPDATE"); e.ReferenceID = e.EventID }, "own id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := usage(KindBandwidthOut, 5)
			c.mod(&e)
			err := e.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("no error, want %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// snapshot makes e a valid license snapshot.
func snapshot(e *Event) {
	e.Kind, e.Quantity, e.EventType, e.ServerName = KindLicense, 1, TypeUsageSnapshot, "n"
	e.EventTime, e.StartTime, e.EndTime = e.StartTime, time.Time{}, time.Time{}
}

// interval returns a change of e's event version and interval.
func interval(version, start, end string) func(*Event) {
	return func(e *Event) { e.EventVersion, e.StartTime, e.EndTime = version, ts(start), ts(end) }
}

// other makes e an event of an unknown product, of type typ.
func other(e *Event, typ string) {
	e.Kind, e.Quantity, e.EventType, e.ProductNamespace = KindOther, 0, typ, "http://docs.rackspace.com/usage/cloudfiles"
}

func TestKey(t *testing.T) {
	a, b := usage(KindBandwidthIn, 1), usage(KindBandwidthOut, 1)
	if a.Key() == b.Key() {
		t.Fatal("bandwidthIn and bandwidthOut with one entry id share a key")
	}
	c := usage(KindBandwidthIn, 99)
	if a.Key() != c.Key() {
		t.Fatal("same tenant, entry and kind differ in key")
	}
}

func TestDeadLetterRoundTrip(t *testing.T) {
	d := DeadLetter{Stage: StageIngest, Feed: "http://127.0.0.1:8900/backup/events/1", TenantID: "1",
		Marker: "last", EntryID: "urn:uuid:x", Index: 3, Reason: "malformed XML at line 2",
		Raw: []byte("<atom:entry>\x00\xff"), Time: time.Date(2026, 10, 1, 2, 0, 0, 0, time.FixedZone("x", 3600))}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"time":"2026-10-01T01:00:00Z"`) {
		t.Fatalf("time not in UTC: %s", b)
	}
	got, err := DecodeDeadLetter(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Raw) != string(d.Raw) || got.Reason != d.Reason || !got.Time.Equal(d.Time) || got.Index != 3 {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := DecodeDeadLetter([]byte(`{"stage":"elsewhere"}`)); err == nil {
		t.Fatal("unknown stage accepted")
	}
}

// TestTextBytesCountsEveryString: TextBytes covers every string field of
// Event (a field added later and left out would let an oversized event past
// ingest's cheap size check), and 6 x TextBytes + 1 KiB bounds the JSON.
func TestTextBytesCountsEveryString(t *testing.T) {
	var e Event
	v := reflect.ValueOf(&e).Elem()
	want := 0
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String {
			n := 1 << i // a length of its own per field
			f.SetString(strings.Repeat("\x01", n))
			want += n
		}
	}
	if got := e.TextBytes(); got != want {
		t.Fatalf("TextBytes %d, want %d: a string field is not counted", got, want)
	}
	now := time.Date(2026, 10, 1, 0, 0, 0, 123456789, time.UTC)
	ext := true
	e.External, e.StartTime, e.EndTime, e.EventTime, e.Updated, e.Published, e.Quantity = &ext, now, now, now, now, now, 1<<64-1
	if n := len(e.AppendJSON(nil)); n > 6*e.TextBytes()+1024 {
		t.Errorf("JSON of %d bytes over the bound %d", n, 6*e.TextBytes()+1024)
	}
}
