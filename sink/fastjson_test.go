package sink

import (
	"reflect"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/feedmeter/feedmeter/model"
)

// shared is an interner kept across checks, as a decoder keeps one across
// records and batches.
var shared = newInterner()

// checkDecode fails when decodeEvent (with and without an interner) and
// model.Event.UnmarshalJSON disagree.
func checkDecode(t *testing.T, b []byte) {
	t.Helper()
	var fast, interned, ref model.Event
	ferr := decodeEvent(b, &fast, nil)
	if ierr := decodeEvent(b, &interned, shared); (ierr == nil) != (ferr == nil) || !reflect.DeepEqual(fast, interned) {
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
	w := genWorkload(3, 3000)
	fastHits := 0
	for _, r := range w.records {
		checkDecode(t, r.Value)
		var e model.Event
		if fastDecode(r.Value, &e, nil) {
			fastHits++
		}
	}
	if fastHits < len(w.records)*8/10 {
		t.Errorf("fast path took %d of %d records, want most", fastHits, len(w.records))
	}
	for _, r := range benchEvents(200) {
		checkDecode(t, r.Value)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, r := range genWorkload(4, 200).records {
		f.Add(r.Value)
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
	in := newInterner()
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
