package ingest

// The fast JSON path: a single-pass scanner that validates the whole page as
// strictly as encoding/json does and extracts the entries on the way,
// without building a tree. Like the fast XML path it gives the reference's
// answer or steps aside (ok=false): on \u escapes, duplicate keys where they
// matter, values of unexpected types, deep nesting and anything invalid.

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf8"

	"github.com/feedmeter/feedmeter/model"
)

func fastJSONPage(data []byte) (*Page, bool) {
	s := jscanner{b: data, page: string(data)}
	p := &Page{}
	s.ws()
	if !s.open('{') {
		return nil, false
	}
	key, done, ok := s.member(true)
	if !ok || done {
		return nil, false
	}
	switch key {
	case "entry":
		p.Entry = true
		o, ok := s.entry()
		if !ok {
			return nil, false
		}
		if o.rej != nil {
			o.rej.Raw = data
		}
		p.add(0, o)
	case "feed":
		if !s.feed(p) {
			return nil, false
		}
	default:
		return nil, false
	}
	if _, done, ok = s.member(false); !ok || !done {
		return nil, false // a second key, or bad syntax
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, false
	}
	return p, true
}

// maxJSONDepth bounds nesting on the fast path (a page nests seven deep).
const maxJSONDepth = 32

type jscanner struct {
	b     []byte
	page  string // one copy of b: the events' strings are its substrings
	i     int
	depth int
	sc    scratch
	buf   []byte // decodes strings with escapes
	// skipping: strings are only validated, their values are not wanted.
	skipping bool
	// bad: a syntax error was met; every read after it fails.
	bad bool

	// Inside an entry the keys of every object are kept (keys, a stack of
	// the objects open): a key given twice rejects the entry, for the
	// reason in repeat. key is the key of the member being read, which
	// names an object in it. Keys are kept as places in the page: a
	// string is a pointer, which costs a write barrier to store.
	inEntry bool
	key     keySpan
	keys    []keySpan
	repeat  string
}

// keySpan is where a key's text is in the page; entryName stands for the
// entry itself.
type keySpan struct{ at, n uint32 }

var entryName = keySpan{at: ^uint32(0)}

// name returns the name of an object whose key is k.
func (s *jscanner) name(k keySpan) string {
	if k == entryName {
		return "entry"
	}
	return s.page[k.at : k.at+k.n]
}

func (s *jscanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\n', '\t', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *jscanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// open consumes c ('{' or '[') and enters it.
func (s *jscanner) open(c byte) bool {
	if s.peek() != c || s.depth >= maxJSONDepth {
		return false
	}
	s.i++
	s.depth++
	return true
}

// member reads the next member's key and colon, or the end of the object
// (done). first says whether a member has been read before.
func (s *jscanner) member(first bool) (key string, done, ok bool) {
	switch c := s.peek(); {
	case c == '}':
		s.i++
		s.depth--
		return "", true, true
	case !first && c == ',':
		s.i++
		if s.peek() != '"' {
			return "", false, false
		}
	case first && c == '"':
	default:
		return "", false, false
	}
	at := s.i + 1
	key, ok = s.str()
	s.key = keySpan{uint32(at), uint32(s.i - 1 - at)}
	if !ok || s.peek() != ':' {
		return "", false, false
	}
	s.i++
	return key, false, true
}

// element reports whether another array element follows (done at ']').
func (s *jscanner) element(first bool) (done, ok bool) {
	switch c := s.peek(); {
	case c == ']':
		s.i++
		s.depth--
		return true, true
	case !first && c == ',':
		s.i++
		return false, true
	case first && c != 0:
		return false, true
	}
	return false, false
}

// scanString returns the index of the first byte from j on that is a quote,
// a backslash, a control character or not ASCII, eight bytes at a time.
func scanString(b []byte, j int) int {
	for ; j+8 <= len(b); j += 8 {
		x := binary.LittleEndian.Uint64(b[j:])
		m := zeroBytes(x^(ones*'"')) | zeroBytes(x^(ones*'\\')) | ^((x|highs)-ones*0x20)&highs | x&highs
		if m != 0 {
			return j + bits.TrailingZeros64(m)/8
		}
	}
	for ; j < len(b); j++ {
		if c := b[j]; c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
			return j
		}
	}
	return j
}

// str reads a string at s.i: a substring of the page, or decoded when it has
// escapes.
func (s *jscanner) str() (string, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start := s.i + 1
	j := start
	ascii := true
	for {
		j = scanString(s.b, j)
		if j >= len(s.b) || s.b[j] < 0x20 {
			return "", false
		}
		if s.b[j] < 0x80 {
			break
		}
		ascii = false
		j++
	}
	if !ascii && !utf8.Valid(s.b[start:j]) {
		return "", false // encoding/json would put U+FFFD in
	}
	if s.b[j] == '"' {
		s.i = j + 1
		return s.page[start:j], true
	}
	buf := append(s.buf[:0], s.b[start:j]...)
	defer func() { s.buf = buf }()
	for j < len(s.b) {
		c := s.b[j]
		switch {
		case c == '"':
			s.i = j + 1
			if !ascii && !utf8.Valid(buf) {
				return "", false
			}
			if s.skipping {
				return "", true
			}
			for _, k := range knownURIs {
				if string(buf) == k {
					return k, true
				}
			}
			return string(buf), true
		case c < 0x20:
			return "", false
		case c != '\\':
			if c >= 0x80 {
				ascii = false
			}
			buf = append(buf, c)
			j++
			continue
		}
		if j+1 >= len(s.b) {
			return "", false
		}
		var d byte
		switch s.b[j+1] {
		case '"', '\\', '/':
			d = s.b[j+1]
		case 'b':
			d = '\b'
		case 'f':
			d = '\f'
		case 'n':
			d = '\n'
		case 'r':
			d = '\r'
		case 't':
			d = '\t'
		default: // \u (left to the reference) or invalid
			return "", false
		}
		buf = append(buf, d)
		j += 2
	}
	return "", false
}

// number reads a number with the grammar of RFC 8259 and returns its text.
func (s *jscanner) number() (string, bool) {
	b, i := s.b, s.i
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return "", false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return "", false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return "", false
		}
	}
	s.i = i
	return s.page[start:i], true
}

func (s *jscanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

// kind of the value at the cursor.
const (
	jInvalid = iota
	jObject
	jArray
	jString
	jNumber
	jTrue
	jFalse
	jNull
)

func (s *jscanner) kind() int {
	switch c := s.peek(); {
	case c == '{':
		return jObject
	case c == '[':
		return jArray
	case c == '"':
		return jString
	case c == 't':
		return jTrue
	case c == 'f':
		return jFalse
	case c == 'n':
		return jNull
	case c == '-' || c >= '0' && c <= '9':
		return jNumber
	}
	return jInvalid
}

// scalar reads a string, number or boolean as the text its XML twin would
// carry; null gives ok with null set.
func (s *jscanner) scalar(k int) (v string, null, ok bool) {
	switch k {
	case jString:
		v, ok = s.str()
	case jNumber:
		v, ok = s.number()
	case jTrue:
		v, ok = "true", s.literal("true")
	case jFalse:
		v, ok = "false", s.literal("false")
	case jNull:
		null, ok = true, s.literal("null")
	}
	return v, null, ok
}

// object ranges over the members of the object at the cursor, yielding
// each key with the cursor at its value, which the loop body must read or
// skip. A syntax error ends the loop and marks the scanner bad. Inside an
// entry, a key given twice sets the entry's repeat.
func (s *jscanner) object(yield func(key string) bool) {
	if !s.open('{') {
		s.bad = true
		return
	}
	name, track, base := s.key, s.inEntry, len(s.keys)
	var bloom uint64
	for first := true; ; first = false {
		key, done, ok := s.member(first) // sets s.key
		if !ok {
			s.bad = true
			break
		}
		if done {
			break
		}
		if track {
			if len(key) != int(s.key.n) {
				s.bad = true // a key with escapes: left to the reference
				break
			}
			bit := nameBit(key)
			if bloom&bit != 0 && s.repeat == "" && s.seenKey(base, key) {
				s.repeat = repeatedReason(s.name(name), key)
			}
			bloom |= bit
			s.keys = append(s.keys, s.key)
		}
		if !yield(key) {
			break
		}
	}
	s.keys = s.keys[:base]
	s.key = name
}

// seenKey reports whether key is among the keys from base on.
func (s *jscanner) seenKey(base int, key string) bool {
	for _, k := range s.keys[base:] {
		if s.page[k.at:k.at+k.n] == key {
			return true
		}
	}
	return false
}

// array ranges over the elements of the array at the cursor, as object does.
func (s *jscanner) array(yield func(i int) bool) {
	if !s.open('[') {
		s.bad = true
		return
	}
	for i := 0; ; i++ {
		done, ok := s.element(i == 0)
		if !ok {
			s.bad = true
			return
		}
		if done || !yield(i) {
			return
		}
	}
}

// skip validates and passes over any value.
func (s *jscanner) skip() bool {
	if !s.skipping {
		s.skipping = true
		defer func() { s.skipping = false }()
	}
	switch k := s.kind(); k {
	case jObject:
		for range s.object {
			if !s.skip() {
				return false
			}
		}
	case jArray:
		for range s.array {
			if !s.skip() {
				return false
			}
		}
	default:
		if _, _, ok := s.scalar(k); !ok {
			s.bad = true
		}
	}
	return !s.bad
}

// seen tracks keys an object may hold once: a repeated one is left to the
// reference (encoding/json keeps the last).
type seen uint32

func (m *seen) first(bit int) bool {
	if *m&(1<<bit) != 0 {
		return false
	}
	*m |= 1 << bit
	return true
}

func (s *jscanner) feed(p *Page) bool {
	var keys seen
	for key := range s.object {
		var ok bool
		switch key {
		case "link":
			ok = keys.first(0) && s.links(p)
		case "entry":
			ok = keys.first(1) && s.entries(p)
		default:
			ok = s.skip()
		}
		if !ok {
			return false
		}
	}
	return !s.bad
}

// links reads the link array (anything else is skipped, as the reference
// ignores it).
func (s *jscanner) links(p *Page) bool {
	if s.kind() != jArray {
		return s.skip()
	}
	for range s.array {
		if s.kind() != jObject {
			if !s.skip() {
				return false
			}
			continue
		}
		var rel, href string
		var keys seen
		for key := range s.object {
			var dst *string
			ok := true
			switch key {
			case "rel":
				dst, ok = &rel, keys.first(0)
			case "href":
				dst, ok = &href, keys.first(1)
			}
			switch {
			case !ok:
				return false
			case dst == nil || s.kind() != jString:
				ok = s.skip()
			default:
				*dst, ok = s.str()
			}
			if !ok {
				return false
			}
		}
		p.Links.set(trim(rel), trim(href))
	}
	return !s.bad
}

func (s *jscanner) entries(p *Page) bool {
	p.Events = make([]model.Event, 0, len(s.b)/1024+1)
	for i := range s.array {
		s.ws()
		start := s.i
		o, ok := s.entry()
		if !ok {
			return false
		}
		if o.rej != nil {
			o.rej.Raw = s.b[start:s.i]
		}
		p.add(i, o)
	}
	return !s.bad
}

// entry reads one entry object. A key given twice in any object of it
// makes it a reject; its fields are read from their first occurrences, as
// the reference reads them.
func (s *jscanner) entry() (outcome, bool) {
	if s.kind() != jObject {
		return outcome{}, false
	}
	var r rawEntry
	s.sc.begin(&r)
	defer s.sc.end(&r)
	s.inEntry, s.key, s.repeat = true, entryName, ""
	defer func() { s.inEntry = false }()
	var keys seen
	for key := range s.object {
		var dst *string
		var has *bool
		bit := -1
		switch key {
		case "id":
			dst, has, bit = &r.id, &r.hasID, 0
		case "updated":
			dst, has, bit = &r.updated, &r.hasUpdated, 1
		case "published":
			dst, has, bit = &r.published, &r.hasPublished, 2
		case "content":
			bit = 3
		}
		var ok bool
		switch k := s.kind(); {
		case bit < 0 || !keys.first(bit): // another key, or one given again
			ok = s.skip()
		case key == "content":
			ok = s.content(&r)
		case k == jNull:
			ok = s.literal("null")
		case k == jString:
			*dst, ok = s.str()
			*has = true
		}
		if !ok {
			return outcome{}, false
		}
	}
	switch {
	case s.bad:
		return outcome{}, false
	case s.repeat != "":
		return rejected(trim(r.id), s.repeat), true
	}
	return normalize(&r), true
}

// content reads atom:content: null, or an object whose event is read.
func (s *jscanner) content(r *rawEntry) bool {
	switch s.kind() {
	case jNull:
		return s.literal("null")
	case jObject:
	default:
		return false
	}
	var keys seen
	for key := range s.object {
		ok := true
		switch k := s.kind(); {
		case key != "event" || !keys.first(0):
			ok = s.skip()
		case k == jNull:
			ok = s.literal("null")
		case k == jObject:
			r.hasEvent = true
			ok = s.fields(&r.event, r)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
	return !s.bad
}

// fields reads the members of an event (r != nil: "product" is the
// product) or of a product (r == nil) as attributes.
func (s *jscanner) fields(dst *attrs, r *rawEntry) bool {
	out := (*dst)[:0]
	defer func() { *dst = out }()
	var keys seen
	for key := range s.object {
		switch {
		case key == "@type" && (r != nil || !keys.first(0)), key == "product" && r != nil && !keys.first(1):
			// The event's @type, or a @type or product given again (the
			// entry is then a reject): passed over.
			if !s.skip() {
				return false
			}
			continue
		case key == "@type":
			// A product's @type is its namespace; the caller reads it from
			// the attribute list.
		case key == "product" && r != nil:
			if !s.product(r) {
				return false
			}
			continue
		}
		k := s.kind()
		if k == jObject || k == jArray {
			if key == "@type" || !s.skip() {
				return false
			}
			out = append(out, attr{name: key, bad: true})
			continue
		}
		v, null, ok := s.scalar(k)
		if !ok || (key == "@type" && k != jString && !null) {
			return false
		}
		if !null {
			out = append(out, attr{name: key, value: v})
		}
	}
	return !s.bad
}

// product reads an event's product: null, or an object of attributes whose
// "@type" is the namespace.
func (s *jscanner) product(r *rawEntry) bool {
	switch s.kind() {
	case jNull:
		return s.literal("null")
	case jObject:
	default:
		return false
	}
	r.hasProduct = true
	if !s.fields(&r.product, nil) {
		return false
	}
	for i, a := range r.product {
		if a.name == "@type" {
			r.productNS = a.value
			r.product = append(r.product[:i], r.product[i+1:]...)
			break
		}
	}
	return true
}

// nameBit is a name's bit in a one-word Bloom filter of names.
func nameBit[T string | []byte](n T) uint64 {
	if len(n) == 0 {
		return 1
	}
	return 1 << ((uint(len(n))*7 + uint(n[0])*3 + uint(n[len(n)-1])) & 63)
}
