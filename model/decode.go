package model

import (
	"bytes"
	"time"
	"unicode/utf8"
)

// DecodeJSON decodes a usage record value. Values exactly as
// Event.AppendJSON writes them (its field order, no white space, no
// escapes, UTC times) take a single-pass path about ten times faster than
// encoding/json; anything else is decoded by Event.UnmarshalJSON, which
// defines the meaning. FuzzDecodeEvent holds the two equal.
// in, when not nil, collects the strings that repeat.
// Either way *e is written whole (the fields b lacks zero).
func DecodeJSON(b []byte, e *Event, in *Interner) error {
	if fastDecode(b, e, in) {
		return nil
	}
	*e = Event{} // fastDecode may have written part of it
	return e.UnmarshalJSON(b)
}

type scanner struct {
	b   []byte
	i   int
	bad bool
	in  *Interner
}

// Interner hands out one copy of each string value it has seen, of the
// last maxInterned or so: the dimensions of usage events (tenants, regions,
// servers, types) repeat from record to record, and a string not allocated
// per record is one the garbage collector never sees. A decoder keeps one
// across batches. Before its map it asks the field's last few values: most
// fields repeat a value of the last few records (a partition's kinds take
// turns), and comparing a few bytes costs a fraction of a map lookup.
type Interner struct {
	m      map[string]string
	recent [dimFields][4]string
	next   [dimFields]uint8
}

const maxInterned = 1 << 14

// The fields fastDecode interns, numbered for Interner.recent.
const (
	dimTenant = iota
	dimKind
	dimOther  // the first of the 11 string fields that follow kind
	dimFields = dimOther + 11
)

func NewInterner() *Interner { return &Interner{m: map[string]string{}} }

// get returns v as a string, the same one for the same bytes; field says
// which of the event's fields v is. A nil interner allocates every time.
func (in *Interner) get(field int, v []byte) string {
	if in == nil {
		return string(v)
	}
	r := &in.recent[field]
	for _, s := range r {
		if s == string(v) {
			return s
		}
	}
	s, ok := in.m[string(v)]
	if !ok {
		s = string(v)
		if len(in.m) >= maxInterned {
			// Full: start again, so that the values of now are interned
			// (tenants come and go) and memory stays bounded.
			clear(in.m)
		}
		in.m[s] = s
	}
	r[in.next[field]%4] = s
	in.next[field]++
	return s
}

func (s *scanner) lit(l string) {
	if s.bad || !bytes.HasPrefix(s.b[s.i:], []byte(l)) {
		s.bad = true
		return
	}
	s.i += len(l)
}

// str reads a JSON string without escapes, of valid UTF-8.
func (s *scanner) str() string { return string(s.raw()) }

// raw reads a JSON string without escapes, of valid UTF-8, and returns its
// bytes (a window on s.b).
func (s *scanner) raw() []byte {
	if s.bad || s.i >= len(s.b) || s.b[s.i] != '"' {
		s.bad = true
		return nil
	}
	j := s.i + 1
	ascii := true
	for ; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 {
			s.bad = true
			return nil
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if j >= len(s.b) {
		s.bad = true
		return nil
	}
	v := s.b[s.i+1 : j]
	if !ascii && !utf8.Valid(v) {
		s.bad = true
		return nil
	}
	s.i = j + 1
	return v
}

// key reads "name":.
func (s *scanner) key(name string) {
	if s.bad || s.i+len(name)+3 > len(s.b) || s.b[s.i] != '"' || string(s.b[s.i+1:s.i+1+len(name)]) != name ||
		s.b[s.i+1+len(name)] != '"' || s.b[s.i+2+len(name)] != ':' {
		s.bad = true
		return
	}
	s.i += len(name) + 3
}

// field reads "name":"value", the value unique to the event.
func (s *scanner) field(name string) string {
	s.key(name)
	return s.str()
}

// dim reads "name":"value", the value one that repeats (interned as the
// interner's field number field).
func (s *scanner) dim(field int, name string) string {
	s.key(name)
	v := s.raw()
	if s.bad {
		return ""
	}
	return s.in.get(field, v)
}

// time reads null or "YYYY-MM-DDTHH:MM:SS[.f…]Z".
func (s *scanner) time(name string) time.Time {
	s.key(name)
	if s.bad {
		return time.Time{}
	}
	if bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		s.i += 4
		return time.Time{}
	}
	v := s.raw()
	if s.bad || len(v) < 20 || v[len(v)-1] != 'Z' || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' {
		s.bad = true
		return time.Time{}
	}
	num := func(a, b int) int {
		n := 0
		for k := a; k < b; k++ {
			c := v[k]
			if c < '0' || c > '9' {
				s.bad = true
				return 0
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	y, mo, d, h, mi, sec := num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19)
	ns := 0
	if len(v) > 20 {
		if v[19] != '.' || len(v) > 30 || len(v) == 21 {
			s.bad = true
			return time.Time{}
		}
		ns = num(20, len(v)-1)
		for k := len(v) - 1 - 20; k < 9; k++ {
			ns *= 10
		}
	} else if v[19] != 'Z' {
		s.bad = true
	}
	if s.bad || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59 || d > daysIn(y, mo) {
		s.bad = true
		return time.Time{}
	}
	// time.Date, without its normalisation (the fields are in range):
	// it took a fifth of the decoding.
	return time.Unix(daysSinceEpoch(y, mo, d)*86400+int64(h*3600+mi*60+sec), int64(ns)).UTC()
}

// daysIn returns the number of days of month mo (1-12) of year y.
func daysIn(y, mo int) int {
	switch mo {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysSinceEpoch returns the days from 1970-01-01 to the date y-mo-d of the
// proleptic Gregorian calendar (H. Hinnant's days_from_civil).
func daysSinceEpoch(y, mo, d int) int64 {
	if mo <= 2 {
		y--
	}
	era := y / 400
	if y < 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400                             // [0, 399]
	doy := (153*((mo+9)%12)+2)/5 + d - 1           // [0, 365], the year starting in March
	doe := yoe*365 + yoe/4 - yoe/100 + doy         // [0, 146096]
	return int64(era)*146097 + int64(doe) - 719468 // 719468: 0000-03-01 to 1970-01-01
}

// fastDecode decodes b into e if it is in the exact form AppendJSON writes
// (else e holds part of it).
func fastDecode(b []byte, e *Event, in *Interner) bool {
	s := scanner{b: b, in: in}
	s.lit("{")
	*e = Event{}
	e.TenantID = s.dim(dimTenant, "tenant_id")
	s.lit(",")
	e.EntryID = s.field("entry_id")
	s.lit(",")
	e.EventID = s.field("event_id")
	s.lit(",")
	e.ReferenceID = s.field("reference_id")
	s.lit(",")
	e.Kind = Kind(s.dim(dimKind, "kind"))
	for i, f := range []struct {
		name string
		dst  *string
	}{
		{"product_namespace", &e.ProductNamespace}, {"product_version", &e.ProductVersion},
		{"event_type", &e.EventType}, {"event_version", &e.EventVersion}, {"region", &e.Region},
		{"data_center", &e.DataCenter}, {"environment", &e.Environment}, {"resource_id", &e.ResourceID},
		{"resource_type", &e.ResourceType}, {"server_id", &e.ServerID}, {"server_name", &e.ServerName},
	} {
		s.lit(",")
		*f.dst = s.dim(dimOther+i, f.name)
	}
	s.lit(`,"external":`)
	if !s.bad {
		switch {
		case bytes.HasPrefix(b[s.i:], []byte("null")):
			s.i += 4
		case bytes.HasPrefix(b[s.i:], []byte("true")):
			t := true
			e.External = &t
			s.i += 4
		case bytes.HasPrefix(b[s.i:], []byte("false")):
			f := false
			e.External = &f
			s.i += 5
		default:
			s.bad = true
		}
	}
	s.lit(",")
	e.StartTime = s.time("start_time")
	s.lit(",")
	e.EndTime = s.time("end_time")
	s.lit(",")
	e.EventTime = s.time("event_time")
	s.lit(`,"quantity":`)
	if !s.bad {
		j := s.i
		var q uint64
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			d := uint64(b[j] - '0')
			if q > (^uint64(0)-d)/10 {
				return false
			}
			q = q*10 + d
		}
		if j == s.i || (b[s.i] == '0' && j > s.i+1) {
			return false
		}
		e.Quantity = q
		s.i = j
	}
	s.lit(",")
	e.Updated = s.time("updated")
	s.lit(",")
	e.Published = s.time("published")
	s.lit("}")
	if s.bad || s.i != len(b) {
		return false
	}
	return true
}
