package sink

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/feedmeter/feedmeter/model"
)

// decodeEvent decodes a usage record value. Values exactly as
// model.Event.AppendJSON writes them (its field order, no white space, no
// escapes, UTC times) take a single-pass path about ten times faster than
// encoding/json; anything else is decoded by model.Event.UnmarshalJSON, which
// defines the meaning. FuzzDecodeEvent holds the two equal.
// in, when not nil, collects the strings that repeat.
func decodeEvent(b []byte, e *model.Event, in interner) error {
	if fastDecode(b, e, in) {
		return nil
	}
	return e.UnmarshalJSON(b)
}

type scanner struct {
	b   []byte
	i   int
	bad bool
	in  interner
}

// interner hands out one copy of each string value it has seen, up to
// maxInterned of them: the dimensions of usage events (tenants, regions,
// servers, types) repeat from record to record, and a string not allocated
// per record is one the garbage collector never sees.
type interner map[string]string

const maxInterned = 1 << 14

func (in interner) get(v []byte) string {
	if s, ok := in[string(v)]; ok {
		return s
	}
	s := string(v)
	if in != nil && len(in) < maxInterned {
		in[s] = s
	}
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
func (s *scanner) str() string { return s.strIn(nil) }

// strIn is str, taking the string from in.
func (s *scanner) strIn(in interner) string {
	if s.bad || s.i >= len(s.b) || s.b[s.i] != '"' {
		s.bad = true
		return ""
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
			return ""
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if j >= len(s.b) {
		s.bad = true
		return ""
	}
	v := s.b[s.i+1 : j]
	if !ascii && !utf8.Valid(v) {
		s.bad = true
		return ""
	}
	s.i = j + 1
	return in.get(v)
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

// dim reads "name":"value", the value one that repeats (interned).
func (s *scanner) dim(name string) string {
	s.key(name)
	return s.strIn(s.in)
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
	v := s.str()
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
	if s.bad || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59 ||
		d > time.Date(y, time.Month(mo)+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		s.bad = true
		return time.Time{}
	}
	return time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC)
}

// fastDecode decodes b if it is in the exact form AppendJSON writes.
func fastDecode(b []byte, e *model.Event, in interner) bool {
	s := scanner{b: b, in: in}
	s.lit("{")
	var ev model.Event
	ev.TenantID = s.dim("tenant_id")
	s.lit(",")
	ev.EntryID = s.field("entry_id")
	s.lit(",")
	ev.EventID = s.field("event_id")
	s.lit(",")
	ev.Kind = model.Kind(s.dim("kind"))
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"product_namespace", &ev.ProductNamespace}, {"product_version", &ev.ProductVersion},
		{"event_type", &ev.EventType}, {"event_version", &ev.EventVersion}, {"region", &ev.Region},
		{"data_center", &ev.DataCenter}, {"environment", &ev.Environment}, {"resource_id", &ev.ResourceID},
		{"resource_type", &ev.ResourceType}, {"server_id", &ev.ServerID}, {"server_name", &ev.ServerName},
	} {
		s.lit(",")
		*f.dst = s.dim(f.name)
	}
	s.lit(`,"external":`)
	if !s.bad {
		switch {
		case bytes.HasPrefix(b[s.i:], []byte("null")):
			s.i += 4
		case bytes.HasPrefix(b[s.i:], []byte("true")):
			t := true
			ev.External = &t
			s.i += 4
		case bytes.HasPrefix(b[s.i:], []byte("false")):
			f := false
			ev.External = &f
			s.i += 5
		default:
			s.bad = true
		}
	}
	s.lit(",")
	ev.StartTime = s.time("start_time")
	s.lit(",")
	ev.EndTime = s.time("end_time")
	s.lit(",")
	ev.EventTime = s.time("event_time")
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
		ev.Quantity = q
		s.i = j
	}
	s.lit(",")
	ev.Updated = s.time("updated")
	s.lit(",")
	ev.Published = s.time("published")
	s.lit("}")
	if s.bad || s.i != len(b) {
		return false
	}
	*e = ev
	return true
}
