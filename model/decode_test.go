package model

import (
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// shared is an interner kept across checks, as a decoder keeps one across
// records and batches.
var shared = NewInterner()

// checkDecode fails when DecodeJSON (with and without an interner) and
// Event.UnmarshalJSON disagree.
func checkDecode(t *testing.T, b []byte) {
	t.Helper()
	var fast, interned, ref Event
	ferr := DecodeJSON(b, &fast, nil)
	if ierr := DecodeJSON(b, &interned, shared); (ierr == nil) != (ferr == nil) || !reflect.DeepEqual(fast, interned) {
		t.Fatalf("%q: interned %+v (%v), not %+v (%v)", b, interned, ierr, fast, ferr)
	}
	rerr := ref.UnmarshalJSON(b)
	if (ferr == nil) != (rerr == nil) {
		t.Fatalf("%q: fast error %v, reference error %v", b, ferr, rerr)
	}
	if rerr == nil && !reflect.DeepEqual(fast, ref) {
		t.Fatalf("%q:\nfast      %+v\nreference %+v", b, fast, ref)
	}
}

func TestDecodeEventEqualsReference(t *testing.T) {
	values := sampleValues(3, 3000)
	fastHits := 0
	for _, v := range values {
		checkDecode(t, v)
		var e Event
		if fastDecode(v, &e, nil) {
			fastHits++
		}
	}
	if fastHits < len(values)*8/10 {
		t.Errorf("fast path took %d of %d records, want most", fastHits, len(values))
	}
}

// sampleValues makes n event encodings of every shape a usage record has
// (kinds, snapshots, externals, absent times, fractions of a second, large
// quantities, text that needs escaping), a tenth of them not in
// AppendJSON's form (the fallback's half of the differential).
func sampleValues(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	base := time.Date(2026, 9, 28, 0, 0, 0, 0, time.UTC)
	kinds := []Kind{KindBandwidthIn, KindBandwidthOut, KindStorage, KindLicense, KindOther}
	out := make([][]byte, 0, n)
	for i := range n {
		e := Event{TenantID: strconv.Itoa(1000 + r.IntN(12)), EntryID: "urn:uuid:" + strconv.Itoa(i), EventID: "ev-" + strconv.Itoa(i),
			Kind: kinds[r.IntN(len(kinds))], ProductVersion: "1", EventType: TypeUsage, EventVersion: "1",
			Region: []string{"DFW", "ORD", "IAD", "LON", "SYD", "HKG", "Zürich", `q"uote`}[r.IntN(8)], DataCenter: "DC1", Environment: "PROD",
			ResourceID: "agent-" + strconv.Itoa(r.IntN(4)), ResourceType: "AGENT", ServerID: strconv.Itoa(r.IntN(5)),
			Quantity: r.Uint64() >> r.IntN(64), Updated: base, Published: base}
		if r.IntN(5) == 0 {
			e.ReferenceID = "ev-" + strconv.Itoa(r.IntN(i+1))
		}
		e.StartTime = base.Add(time.Duration(r.Int64N(int64(72 * time.Hour))))
		e.EndTime = e.StartTime.Add(time.Duration(1 + r.Int64N(int64(24*time.Hour))))
		if r.IntN(3) == 0 {
			ext := r.IntN(2) == 0
			e.External, e.EventType = &ext, TypeUsageSnapshot
			e.EventTime, e.StartTime, e.EndTime = e.StartTime, time.Time{}, time.Time{}
		}
		if r.IntN(10) == 0 {
			e.Updated = time.Time{}
		}
		v := e.AppendJSON(nil)
		if r.IntN(20) == 0 { // valid JSON, not AppendJSON's form
			v = append([]byte("{ "), v[1:]...)
		}
		out = append(out, v)
	}
	return out
}

func FuzzDecodeEvent(f *testing.F) {
	for _, v := range sampleValues(4, 200) {
		f.Add(v)
	}
	f.Add([]byte(`{"tenant_id":"1","entry_id":"e","event_id":"","kind":"storage","product_namespace":"","product_version":"","event_type":"USAGE","event_version":"","region":"","data_center":"","environment":"","resource_id":"","resource_type":"","server_id":"","server_name":"é","external":true,"start_time":"2024-02-29T23:59:59.5Z","end_time":"2024-03-01T00:00:00.000000001Z","event_time":null,"quantity":18446744073709551615,"updated":null,"published":null}`))
	f.Add([]byte(`{"tenant_id":"1","entry_id":"e","event_id":"","kind":"storage","product_namespace":"","product_version":"","event_type":"USAGE","event_version":"","region":"","data_center":"","environment":"","resource_id":"","resource_type":"","server_id":"","server_name":"","external":false,"start_time":"2023-02-29T23:59:60Z","end_time":"2024-13-01T00:00:00Z","event_time":null,"quantity":18446744073709551616,"updated":null,"published":null}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b) })
}

// TestDaysSinceEpoch holds the decoder's date arithmetic equal to time.Date
// on every day of the years a feed can write (0000-9999).
func TestDaysSinceEpoch(t *testing.T) {
	for d := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() < 10000; d = d.AddDate(0, 0, 1) {
		if got, want := daysSinceEpoch(d.Year(), int(d.Month()), d.Day()), d.Unix()/86400; got != want {
			t.Fatalf("%s: %d days, want %d", d.Format(time.DateOnly), got, want)
		}
		if d.Day() == 1 {
			if got, want := daysIn(d.Year(), int(d.Month())), d.AddDate(0, 1, -1).Day(); got != want {
				t.Fatalf("%s: %d days in the month, want %d", d.Format("2006-01"), got, want)
			}
		}
	}
}

// TestInternerStartsAgainWhenFull: past maxInterned distinct values the
// interner forgets the old ones rather than stop interning new ones.
func TestInternerStartsAgainWhenFull(t *testing.T) {
	in := NewInterner()
	for i := range maxInterned + 10 {
		in.get(dimTenant, []byte(strconv.Itoa(i)))
	}
	if n := len(in.m); n > maxInterned {
		t.Fatalf("%d values kept, more than %d", n, maxInterned)
	}
	a := in.get(dimOther, []byte("a tenant seen only now"))
	for i := range 8 { // push it out of the field's recent values
		in.get(dimOther, []byte(strconv.Itoa(-i)))
	}
	if b := in.get(dimOther, []byte("a tenant seen only now")); unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("a value seen after the interner filled up is not interned")
	}
}
