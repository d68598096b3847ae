package ingest

// The fast XML path. It reads the subset of XML that Cloud Feeds writes
// (ASCII names, UTF-8 text, the five predefined entities, no comments, CDATA, doctype or
// processing instructions but the XML declaration) with a hand-written
// scanner that allocates about once per entry. On anything outside that
// subset, and on anything that is not well-formed, it steps aside
// (returns ok=false) and the reference parser decides, so that both always
// agree: the differential test and FuzzParseXML hold them to it.

import (
	"bytes"
	"encoding/binary"
	"strings"
	"unicode/utf8"

	"github.com/feedmeter/feedmeter/model"
)

// fastXMLPage parses a page, or reports ok=false for the reference to parse.
func fastXMLPage(data []byte) (p *Page, ok bool) {
	if !plainText(data) {
		return nil, false
	}
	s := xscanner{b: data, page: string(data)}
	if !s.prolog() {
		return nil, false
	}
	t := s.next()
	if t != tokStart {
		return nil, false
	}
	ns := s.elemNS()
	p = &Page{Events: make([]model.Event, 0, len(data)/1024+1)}
	switch {
	case ns == model.NSAtom && s.localIs("feed"):
		if !s.feed(p) {
			return nil, false
		}
	case ns == model.NSAtom && s.localIs("entry"):
		p.Entry = true
		start := s.tagStart
		o, ok := s.entry()
		if !ok {
			return nil, false
		}
		if o.rej != nil {
			o.rej.Raw = data[start:s.i]
		}
		p.add(0, o)
	default:
		return nil, false
	}
	if !s.epilog() {
		return nil, false
	}
	return p, true
}

// plainText reports whether data holds only characters the fast scanner
// and encoding/xml read alike: tab, newline, printable ASCII and valid
// UTF-8 of XML characters (not U+FFFE or U+FFFF). Names must still be ASCII
// (the scanner steps aside on others).
func plainText(data []byte) bool {
	high, ctrl := byteClasses(data, "\n\t")
	if ctrl {
		return false
	}
	if high {
		return utf8.Valid(data) && !bytes.Contains(data, []byte("\uFFFE")) && !bytes.Contains(data, []byte("\uFFFF"))
	}
	return true
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
	lows  = 0x7f7f7f7f7f7f7f7f
)

// zeroBytes sets bit 7 of each byte of the result whose byte in x is 0.
func zeroBytes(x uint64) uint64 { return ^(((x & lows) + lows) | x) & highs }

// byteClasses reports whether data holds a byte >= 0x7f, and a byte < 0x20
// that is not in allowed, eight bytes at a time.
func byteClasses(data []byte, allowed string) (high, ctrl bool) {
	var h, c uint64
	i := 0
	for ; i+8 <= len(data); i += 8 {
		x := binary.LittleEndian.Uint64(data[i:])
		h |= x | (x + ones)                                    // bit 7 for bytes >= 0x80, and for 0x7f (+1 carries into it)
		lt := ^((x | highs) - 0x2020202020202020) & highs &^ x // bytes < 0x20 (not >= 0x80)
		if lt == 0 {
			continue
		}
		for k := 0; k < len(allowed); k++ {
			lt &^= zeroBytes(x ^ (ones * uint64(allowed[k])))
		}
		c |= lt
	}
	for ; i < len(data); i++ {
		b := data[i]
		if b >= 0x7f {
			h = highs
		} else if b < 0x20 && strings.IndexByte(allowed, b) < 0 {
			c = highs
		}
	}
	return h&highs != 0, c&highs != 0
}

type token int

const (
	tokErr token = iota
	tokStart
	tokEnd
	tokText
	tokEOF
)

type span struct{ s, e int }

// maxFastDepth bounds nesting on the fast path; a Cloud Feeds page nests
// five deep.
const maxFastDepth = 32

type xattr struct {
	prefix, local span // prefix.s == prefix.e when there is none
	value         span // raw, entities not decoded
	amp           bool // value holds '&'
}

type nsBinding struct {
	prefix span // empty: the default namespace
	uri    string
	depth  int
}

// xscanner is a pull scanner over one document.
type xscanner struct {
	b        []byte
	page     string // one copy of b: the events' strings are its substrings
	i        int
	depth    int // elements open (after a start tag, including it)
	open     []span
	ns       []nsBinding
	popAfter bool // the last start tag closed itself

	// The current start tag.
	tagStart      int
	prefix, local span
	attrs         []xattr
	selfClosing   bool
	// The current text.
	text    span
	textAmp bool

	sc scratch
	// bad: the document is not well-formed (or not plain); see children.
	bad bool
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' }

func (s *xscanner) skipSpace() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// nameClass: 1 for bytes that may start a name, 2 for those that may
// follow. Non-ASCII bytes are in neither class.
var nameClass = func() (t [256]byte) {
	for c := range 256 {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
			t[c] = 1 | 2
		case c >= '0' && c <= '9', c == '.', c == '-', c == ':':
			t[c] = 2
		}
	}
	return t
}()

func isNameStart(c byte) bool { return nameClass[c]&1 != 0 }

func isNameByte(c byte) bool { return nameClass[c]&2 != 0 }

// name scans a qualified name: prefix (possibly empty) and local part.
func (s *xscanner) name() (prefix, local span, ok bool) {
	start := s.i
	if s.i >= len(s.b) || !isNameStart(s.b[s.i]) {
		return span{}, span{}, false
	}
	colon := -1
	for s.i < len(s.b) && isNameByte(s.b[s.i]) {
		if s.b[s.i] == ':' {
			if colon >= 0 {
				return span{}, span{}, false
			}
			colon = s.i
		}
		s.i++
	}
	if colon < 0 {
		return span{start, start}, span{start, s.i}, true
	}
	if colon == s.i-1 || !isNameStart(s.b[colon+1]) {
		return span{}, span{}, false
	}
	return span{start, colon}, span{colon + 1, s.i}, true
}

// prolog reads white space and an optional XML declaration.
func (s *xscanner) prolog() bool {
	s.skipSpace()
	if !bytes.HasPrefix(s.b[s.i:], []byte("<?xml")) {
		return true
	}
	end := bytes.Index(s.b[s.i:], []byte("?>"))
	if end < 0 {
		return false
	}
	decl := s.b[s.i+len("<?xml") : s.i+end]
	s.i += end + 2
	s.skipSpace()
	return plainDecl(decl)
}

// plainDecl accepts ` version="1.0"` with an optional encoding and
// standalone, double-quoted, as encoding/xml would.
func plainDecl(d []byte) bool {
	want := []string{"version", "encoding", "standalone"}
	seenVersion := false
	for len(d) > 0 {
		if !isSpace(d[0]) {
			return false
		}
		d = bytes.TrimLeft(d, " \t\n")
		if len(d) == 0 {
			break
		}
		eq := bytes.IndexByte(d, '=')
		if eq < 0 || len(d) < eq+2 || d[eq+1] != '"' {
			return false
		}
		key := string(d[:eq])
		rest := d[eq+2:]
		q := bytes.IndexByte(rest, '"')
		if q < 0 {
			return false
		}
		val := rest[:q]
		d = rest[q+1:]
		for len(want) > 0 && want[0] != key {
			want = want[1:]
		}
		if len(want) == 0 {
			return false
		}
		want = want[1:]
		switch key {
		case "version":
			if string(val) != "1.0" {
				return false
			}
			seenVersion = true
		case "encoding":
			if !bytes.EqualFold(val, []byte("utf-8")) && !bytes.EqualFold(val, []byte("us-ascii")) {
				return false
			}
		case "standalone":
			if string(val) != "yes" && string(val) != "no" {
				return false
			}
		}
	}
	return seenVersion
}

// epilog accepts only white space after the root element.
func (s *xscanner) epilog() bool {
	s.skipSpace()
	return s.i == len(s.b)
}

// next reads the next token inside the root element (or the root itself).
func (s *xscanner) next() token {
	if s.popAfter {
		s.popAfter = false
		s.closeScope()
	}
	if s.i >= len(s.b) {
		return tokEOF
	}
	if s.b[s.i] != '<' {
		if s.depth == 0 {
			return tokErr
		}
		start := s.i
		j := bytes.IndexByte(s.b[s.i:], '<')
		if j < 0 {
			return tokErr
		}
		s.i += j
		s.text = span{start, s.i}
		s.textAmp = bytes.IndexByte(s.b[start:s.i], '&') >= 0
		if s.textAmp && !validEntities(s.b[start:s.i]) {
			return tokErr
		}
		return tokText
	}
	if s.i+1 >= len(s.b) {
		return tokErr
	}
	switch s.b[s.i+1] {
	case '/':
		s.i += 2
		prefix, local, ok := s.name()
		if !ok || s.depth == 0 {
			return tokErr
		}
		top := s.open[len(s.open)-1]
		if !bytes.Equal(s.b[top.s:top.e], s.b[prefix.s:local.e]) {
			return tokErr
		}
		s.skipSpace()
		if s.i >= len(s.b) || s.b[s.i] != '>' {
			return tokErr
		}
		s.i++
		s.open = s.open[:len(s.open)-1]
		s.closeScope()
		return tokEnd
	case '?', '!':
		return tokErr
	}
	s.tagStart = s.i
	s.i++
	var ok bool
	if s.prefix, s.local, ok = s.name(); !ok {
		return tokErr
	}
	s.attrs = s.attrs[:0]
	for {
		sp := s.i
		s.skipSpace()
		if s.i >= len(s.b) {
			return tokErr
		}
		switch s.b[s.i] {
		case '>':
			s.i++
			s.selfClosing = false
			if !s.noDuplicates() {
				return tokErr // the reference words the reject
			}
			return s.openScope()
		case '/':
			if s.i+1 >= len(s.b) || s.b[s.i+1] != '>' || !s.noDuplicates() {
				return tokErr
			}
			s.i += 2
			s.selfClosing = true
			t := s.openScope()
			s.open = s.open[:len(s.open)-1]
			s.popAfter = true
			return t
		}
		if s.i == sp {
			return tokErr // attributes must be separated by white space
		}
		var a xattr
		if a.prefix, a.local, ok = s.name(); !ok {
			return tokErr
		}
		s.skipSpace()
		if s.i >= len(s.b) || s.b[s.i] != '=' {
			return tokErr
		}
		s.i++
		s.skipSpace()
		if s.i >= len(s.b) || (s.b[s.i] != '"' && s.b[s.i] != '\'') {
			return tokErr
		}
		q := s.b[s.i]
		s.i++
		j := bytes.IndexByte(s.b[s.i:], q)
		if j < 0 {
			return tokErr
		}
		v := s.b[s.i : s.i+j]
		if bytes.IndexByte(v, '<') >= 0 {
			return tokErr
		}
		a.value = span{s.i, s.i + j}
		a.amp = bytes.IndexByte(v, '&') >= 0
		if a.amp && !validEntities(v) {
			return tokErr
		}
		s.i += j + 1
		s.attrs = append(s.attrs, a)
	}
}

// openScope pushes the current start tag: its name and its namespace
// declarations.
func (s *xscanner) openScope() token {
	if s.depth >= maxFastDepth {
		return tokErr
	}
	s.depth++
	s.open = append(s.open, span{s.prefix.s, s.local.e})
	for _, a := range s.attrs {
		switch {
		case a.prefix.s == a.prefix.e && s.is(a.local, "xmlns"):
			s.ns = append(s.ns, nsBinding{prefix: span{}, uri: s.uri(a), depth: s.depth})
		case s.is(a.prefix, "xmlns"):
			s.ns = append(s.ns, nsBinding{prefix: a.local, uri: s.uri(a), depth: s.depth})
		}
	}
	return tokStart
}

func (s *xscanner) closeScope() {
	s.depth--
	for len(s.ns) > 0 && s.ns[len(s.ns)-1].depth > s.depth {
		s.ns = s.ns[:len(s.ns)-1]
	}
}

// knownURIs are interned so that resolving them does not allocate.
var knownURIs = []string{
	model.NSAtom, model.NSEvent, "http://www.w3.org/2001/XMLSchema",
	model.NSCloudBackup + "bandwidthIn", model.NSCloudBackup + "bandwidthOut",
	model.NSCloudBackup + "storage", model.NSCloudBackup + "license",
}

func (s *xscanner) uri(a xattr) string {
	v := s.str(a.value, a.amp)
	for _, k := range knownURIs {
		if v == k {
			return k
		}
	}
	return v
}

func (s *xscanner) is(sp span, lit string) bool { return string(s.b[sp.s:sp.e]) == lit }

func (s *xscanner) localIs(lit string) bool { return s.is(s.local, lit) }

// elemNS resolves the namespace of the current start tag.
func (s *xscanner) elemNS() string {
	p := s.b[s.prefix.s:s.prefix.e]
	for k := len(s.ns) - 1; k >= 0; k-- {
		b := s.ns[k].prefix
		if bytes.Equal(s.b[b.s:b.e], p) {
			return s.ns[k].uri
		}
	}
	return ""
}

// skip reads to the end of the element whose start tag was just read.
func (s *xscanner) skip() bool {
	if s.selfClosing {
		return true
	}
	d := s.depth
	for {
		switch s.next() {
		case tokErr, tokEOF:
			return false
		case tokEnd:
			if s.depth < d {
				return true
			}
		}
	}
}

// textContent reads the text of a text-only element whose start tag was just
// read.
func (s *xscanner) textContent() (string, bool) {
	if s.selfClosing {
		return "", true
	}
	var text string
	var parts []byte // only when the text comes in several pieces
	n := 0
	for {
		switch s.next() {
		case tokText:
			t := s.str(s.text, s.textAmp)
			if n++; n == 1 {
				text = t
			} else {
				if n == 2 {
					parts = append(parts, text...)
				}
				parts = append(parts, t...)
			}
		case tokEnd:
			if n > 1 {
				return string(parts), true
			}
			return text, true
		default:
			return "", false
		}
	}
}

// firstAttr returns the decoded value of the first unprefixed attribute
// named name.
func (s *xscanner) firstAttr(name string) (string, bool) {
	for _, a := range s.attrs {
		if a.prefix.s == a.prefix.e && s.is(a.local, name) {
			return s.str(a.value, a.amp), true
		}
	}
	return "", false
}

// noDuplicates reports whether the current start tag names no attribute
// twice (by its qualified name, as written).
func (s *xscanner) noDuplicates() bool {
	var seen uint64 // a one-word Bloom filter of the names so far
	for i, a := range s.attrs {
		name := s.b[a.prefix.s:a.local.e]
		bit := nameBit(name)
		if seen&bit != 0 {
			for _, b := range s.attrs[:i] {
				if bytes.Equal(name, s.b[b.prefix.s:b.local.e]) {
					return false
				}
			}
		}
		seen |= bit
	}
	return true
}

func (s *xscanner) feed(p *Page) bool {
	index := 0
	for range s.children {
		ns := s.elemNS()
		switch {
		case ns == model.NSAtom && s.localIs("link"):
			rel, _ := s.firstAttr("rel")
			href, _ := s.firstAttr("href")
			p.Links.set(trim(rel), trim(href))
			if !s.skip() {
				return false
			}
		case ns == model.NSAtom && s.localIs("entry"):
			start := s.tagStart
			o, ok := s.entry()
			if !ok {
				return false
			}
			if o.rej != nil {
				o.rej.Raw = s.b[start:s.i]
			}
			p.add(index, o)
			index++
		default:
			if !s.skip() {
				return false
			}
		}
	}
	return !s.bad
}

// children ranges over the child elements of the element whose start tag
// was just read, yielding at each child's start tag; the loop body must read
// the child to its end (skip, or a reader that does). Text between children
// is passed over. Anything not well-formed ends the loop and marks the
// scanner bad.
func (s *xscanner) children(yield func() bool) {
	if s.selfClosing {
		return
	}
	d := s.depth
	for {
		switch s.next() {
		case tokText:
		case tokEnd:
			if s.depth < d {
				return
			}
		case tokStart:
			if !yield() {
				return
			}
		default:
			s.bad = true
			return
		}
	}
}

// scratch holds the attribute lists, reused from entry to entry of a page
// (normalize copies what it keeps).
type scratch struct{ event, product attrs }

// begin readies the scratch for a new entry.
func (sc *scratch) begin(r *rawEntry) { r.event, r.product = sc.event[:0], sc.product[:0] }

// end keeps what the entry grew for the next one.
func (sc *scratch) end(r *rawEntry) { sc.event, sc.product = r.event, r.product }

// str returns the text of sp: a substring of the page's single string
// copy, decoded only when it holds an entity.
func (s *xscanner) str(sp span, amp bool) string {
	if amp {
		return string(appendUnescaped(nil, s.b[sp.s:sp.e]))
	}
	return s.page[sp.s:sp.e]
}

// entry reads an atom:entry whose start tag was just read.
func (s *xscanner) entry() (outcome, bool) {
	var r rawEntry
	s.sc.begin(&r)
	defer s.sc.end(&r)
	hasContent := false
	for range s.children {
		if s.elemNS() != model.NSAtom {
			if !s.skip() {
				return outcome{}, false
			}
			continue
		}
		var dst *string
		var seen *bool
		switch {
		case s.localIs("id"):
			dst, seen = &r.id, &r.hasID
		case s.localIs("updated"):
			dst, seen = &r.updated, &r.hasUpdated
		case s.localIs("published"):
			dst, seen = &r.published, &r.hasPublished
		case s.localIs("content"):
			if hasContent || !s.content(&r) {
				return outcome{}, false
			}
			hasContent = true
			continue
		default:
			if !s.skip() {
				return outcome{}, false
			}
			continue
		}
		if *seen {
			return outcome{}, false
		}
		*seen = true
		var ok bool
		if *dst, ok = s.textContent(); !ok {
			return outcome{}, false
		}
	}
	if s.bad {
		return outcome{}, false
	}
	return normalize(&r), true
}

// content reads atom:content: its first element must be the event.
func (s *xscanner) content(r *rawEntry) bool {
	first := true
	for range s.children {
		if !first {
			if !s.skip() {
				return false
			}
			continue
		}
		first = false
		if s.elemNS() != model.NSEvent || !s.localIs("event") {
			return false // the reference words the reject
		}
		r.hasEvent = true
		s.fields(&r.event)
		if !s.event(r) {
			return false
		}
	}
	return !s.bad
}

// fields copies the current start tag's unprefixed attributes.
func (s *xscanner) fields(dst *attrs) {
	out := (*dst)[:0]
	for _, a := range s.attrs {
		if a.prefix.s != a.prefix.e || s.is(a.local, "xmlns") {
			continue
		}
		out = append(out, attr{name: s.page[a.local.s:a.local.e], value: s.str(a.value, a.amp)})
	}
	*dst = out
}

// event reads the children of the event element: the first product.
func (s *xscanner) event(r *rawEntry) bool {
	for range s.children {
		if !r.hasProduct && s.localIs("product") {
			r.hasProduct = true
			r.productNS = s.elemNS()
			s.fields(&r.product)
		}
		if !s.skip() {
			return false
		}
	}
	return !s.bad
}

// validEntities reports whether every '&' in v starts one of the five
// predefined entities (the only references the fast path decodes).
func validEntities(v []byte) bool {
	for {
		i := bytes.IndexByte(v, '&')
		if i < 0 {
			return true
		}
		v = v[i:]
		n := entityLen(v)
		if n == 0 {
			return false
		}
		v = v[n:]
	}
}

var entities = [...]struct {
	name string
	c    byte
}{{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}}

func entityLen(v []byte) int {
	for _, e := range entities {
		if bytes.HasPrefix(v, []byte(e.name)) {
			return len(e.name)
		}
	}
	return 0
}

// appendUnescaped appends v with its predefined entities decoded (v has
// passed validEntities).
func appendUnescaped(dst, v []byte) []byte {
	for {
		i := bytes.IndexByte(v, '&')
		if i < 0 {
			return append(dst, v...)
		}
		dst = append(dst, v[:i]...)
		v = v[i:]
		for _, e := range entities {
			if bytes.HasPrefix(v, []byte(e.name)) {
				dst = append(dst, e.c)
				v = v[len(e.name):]
				break
			}
		}
	}
}
