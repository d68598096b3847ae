package ingest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"

	"github.com/feedmeter/feedmeter/model"
)

// xmlSplit locates the entries of a page that is not well-formed, by their
// tags as text, so that each can be parsed on its own. It serves both
// parsers; on a well-formed page it is never used.
type xmlSplit struct {
	rootStart []byte   // the root's start tag, as written
	rootName  []byte   // the root's qualified name
	rootEntry bool     // the root is atom:entry: the document is one entry
	atomTags  [][]byte // entry tags whose prefix the root binds to Atom
	chunks    [][2]int // byte ranges of the entries
	tags      [][]byte // each entry's qualified tag name
	lines     []int    // the line on which each entry starts
}

var errNoRoot = errors.New("no root element")

// splitXML finds the root start tag and the entries. Entries are found by
// the prefixes the root binds to the Atom namespace.
func splitXML(data []byte) (*xmlSplit, error) {
	start, end, ok := rootStartTag(data)
	if !ok {
		return nil, errNoRoot
	}
	// The copy of the root start tag that wraps an entry must add no line.
	sp := &xmlSplit{rootStart: bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, data[start:end])}
	// Parse the root start tag alone to learn its name and namespaces.
	closed := append([]byte(nil), sp.rootStart...)
	selfClosing := bytes.HasSuffix(closed, []byte("/>"))
	dec := xml.NewDecoder(bytes.NewReader(closed))
	tok, err := dec.RawToken()
	if err != nil {
		return nil, err
	}
	se, ok := tok.(xml.StartElement)
	if !ok {
		return nil, errNoRoot
	}
	qname := se.Name.Local
	if se.Name.Space != "" {
		qname = se.Name.Space + ":" + qname
	}
	sp.rootName = []byte(qname)
	var rootNS string
	for _, a := range se.Attr {
		switch {
		case a.Name.Space == "" && a.Name.Local == "xmlns":
			if a.Value == model.NSAtom {
				sp.atomTags = append(sp.atomTags, []byte("entry"))
			}
			if se.Name.Space == "" {
				rootNS = a.Value
			}
		case a.Name.Space == "xmlns":
			if a.Value == model.NSAtom {
				sp.atomTags = append(sp.atomTags, []byte(a.Name.Local+":entry"))
			}
			if a.Name.Local == se.Name.Space {
				rootNS = a.Value
			}
		}
	}
	if rootNS != model.NSAtom || (se.Name.Local != "feed" && se.Name.Local != "entry") {
		return nil, errNoRoot
	}
	if se.Name.Local == "entry" {
		sp.rootEntry = true
		sp.chunks = [][2]int{{start, len(data)}}
		sp.tags = [][]byte{sp.rootName}
		sp.lines = []int{1}
		return sp, nil
	}
	if selfClosing {
		return sp, nil
	}
	// Entry starts, in order: a tag named entry whose prefix the root or
	// the tag itself binds to Atom (real pages declare xmlns:atom on each
	// entry).
	var starts []int
	for i := end; i < len(data); {
		j := bytes.IndexByte(data[i:], '<')
		if j < 0 {
			break
		}
		i += j + 1
		if tag, ok := sp.entryTag(data[i:]); ok {
			starts = append(starts, i-1)
			sp.tags = append(sp.tags, tag)
		}
	}
	for k, s := range starts {
		limit := len(data)
		if k+1 < len(starts) {
			limit = starts[k+1]
		} else if r := bytes.LastIndex(data, append([]byte("</"), sp.rootName...)); r > s {
			limit = r
		}
		e := limit
		if ce := closeTag(data[s:limit], sp.tags[k]); ce >= 0 {
			e = s + ce
		}
		sp.chunks = append(sp.chunks, [2]int{s, e})
	}
	line, prev := 1, 0
	for _, c := range sp.chunks {
		line += bytes.Count(data[prev:c[0]], []byte("\n"))
		prev = c[0]
		sp.lines = append(sp.lines, line)
	}
	return sp, nil
}

func isTagEnd(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '>' || c == '/'
}

// entryTag reports whether b (just after a '<') starts an Atom entry's
// start tag, and returns its qualified name.
func (sp *xmlSplit) entryTag(b []byte) ([]byte, bool) {
	n := 0
	for n < len(b) && !isTagEnd(b[n]) {
		n++
	}
	if n == len(b) {
		return nil, false
	}
	name := b[:n]
	prefix, local, found := bytes.Cut(name, []byte(":"))
	if !found {
		prefix, local = nil, name
	}
	if string(local) != "entry" {
		return nil, false
	}
	for _, t := range sp.atomTags {
		if bytes.Equal(t, name) {
			return name, true
		}
	}
	// Declared on the tag itself?
	end := bytes.IndexByte(b, '>')
	if end < 0 {
		end = len(b)
	}
	decl := []byte("xmlns")
	if found {
		decl = append(append(decl, ':'), prefix...)
	}
	tag := b[n:end]
	for _, q := range []string{`"`, `'`} {
		for _, eq := range []string{"=", " = ", "= ", " ="} {
			if bytes.Contains(tag, []byte(" "+string(decl)+eq+q+model.NSAtom+q)) ||
				bytes.Contains(tag, []byte("\n"+string(decl)+eq+q+model.NSAtom+q)) ||
				bytes.Contains(tag, []byte("\t"+string(decl)+eq+q+model.NSAtom+q)) {
				return name, true
			}
		}
	}
	return nil, false
}

// closeTag returns the end of the first end tag named tag in b (or of b's
// first element when it closes itself), or -1.
func closeTag(b, tag []byte) int {
	best := -1
	end := append([]byte("</"), tag...)
	for off := 0; ; {
		i := bytes.Index(b[off:], end)
		if i < 0 {
			break
		}
		i += off + len(end)
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
			i++
		}
		if i < len(b) && b[i] == '>' {
			best = i + 1
			break
		}
		off = i
	}
	// A self-closing entry has no end tag.
	if gt := bytes.IndexByte(b, '>'); gt > 0 && b[gt-1] == '/' && (best < 0 || gt+1 < best) {
		return gt + 1
	}
	return best
}

// rootStartTag returns the byte range of the first element's start tag,
// skipping the XML declaration, comments, processing instructions and a
// doctype.
func rootStartTag(data []byte) (int, int, bool) {
	i := 0
	for {
		j := bytes.IndexByte(data[i:], '<')
		if j < 0 {
			return 0, 0, false
		}
		i += j
		rest := data[i:]
		switch {
		case bytes.HasPrefix(rest, []byte("<?")):
			k := bytes.Index(rest, []byte("?>"))
			if k < 0 {
				return 0, 0, false
			}
			i += k + 2
		case bytes.HasPrefix(rest, []byte("<!--")):
			k := bytes.Index(rest, []byte("-->"))
			if k < 0 {
				return 0, 0, false
			}
			i += k + 3
		case bytes.HasPrefix(rest, []byte("<!")):
			k := bytes.IndexByte(rest, '>')
			if k < 0 {
				return 0, 0, false
			}
			i += k + 1
		default:
			var quote byte
			for k := 1; k < len(rest); k++ {
				c := rest[k]
				switch {
				case quote != 0:
					if c == quote {
						quote = 0
					}
				case c == '"' || c == '\'':
					quote = c
				case c == '>':
					return i, i + k + 1, true
				case c == '<':
					return 0, 0, false
				}
			}
			return 0, 0, false
		}
	}
}

// wrap returns entry i inside a copy of the root start tag, so that it sees
// the root's namespace declarations. The wrapper adds no line.
func (sp *xmlSplit) wrap(data []byte, i int) []byte {
	c := sp.chunks[i]
	out := make([]byte, 0, len(sp.rootStart)+c[1]-c[0]+len(sp.rootName)+3)
	out = append(out, sp.rootStart...)
	out = append(out, data[c[0]:c[1]]...)
	out = append(out, "</"...)
	out = append(out, sp.rootName...)
	return append(out, '>')
}

// skeleton returns the page without its entries.
func (sp *xmlSplit) skeleton(data []byte) []byte {
	out := make([]byte, 0, len(data))
	prev := 0
	for _, c := range sp.chunks {
		out = append(out, data[prev:c[0]]...)
		prev = c[1]
	}
	return append(out, data[prev:]...)
}

// line is the line of the page on which entry i starts (wrap puts the root
// start tag on that same line).
func (sp *xmlSplit) line(i int) int { return sp.lines[i] }

// entryID reads the atom:id of entry i as text, for a reject of an entry that
// cannot be parsed.
func (sp *xmlSplit) entryID(data []byte, i int) string {
	c := data[sp.chunks[i][0]:sp.chunks[i][1]]
	tag := sp.tags[i]
	prefix := tag[:len(tag)-len("entry")]
	open := append(append([]byte("<"), prefix...), "id>"...)
	s := bytes.Index(c, open)
	if s < 0 {
		return ""
	}
	rest := c[s+len(open):]
	e := bytes.IndexByte(rest, '<')
	if e < 0 {
		return ""
	}
	return trim(string(rest[:e]))
}

// looseJSON finds, in a JSON feed page that may not be valid JSON, the
// array of "feed"."entry" (the bytes from its '[' to its ']') and the
// span of each element, by strings and brackets alone: an entry with a bad
// token (a trailing comma, a bare word, a missing value) is still cut out
// whole, and an entry ends at its closing bracket even when no comma
// follows. ok is false unless the page's brackets balance and nothing but
// white space follows the top-level object (a page cut short is not
// recovered).
func looseJSON(data []byte) (open, close int, spans [][2]int, ok bool) {
	type frame struct {
		obj bool
		key string // the key whose value is being read (objects)
	}
	var stack []frame
	var last string // the last string read: a key when ':' follows
	open, close, start := -1, -1, -1
	inEntries := func() bool { return open >= 0 && close < 0 && len(stack) == 3 }
	end := func(i int) { // the element that began at start ends before i
		if start >= 0 {
			spans = append(spans, [2]int{start, start + len(bytes.TrimRight(data[start:i], " \t\r\n"))})
			start = -1
		}
	}
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inEntries() && start < 0 && c != ',' && c != ']' && !jsonSpace(c) {
			start = i
		}
		switch c {
		case '"':
			j := stringEnd(data, i)
			if j < 0 {
				return 0, 0, nil, false
			}
			last, i = string(data[i+1:j]), j
		case ':':
			if n := len(stack); n > 0 && stack[n-1].obj {
				stack[n-1].key = last
			}
		case '{', '[':
			if c == '[' && open < 0 && len(stack) == 2 && stack[0].obj && stack[0].key == "feed" && stack[1].obj && stack[1].key == "entry" {
				open = i
			}
			stack = append(stack, frame{obj: c == '{'})
		case '}', ']':
			if len(stack) == 0 || stack[len(stack)-1].obj != (c == '}') {
				return 0, 0, nil, false
			}
			if c == ']' && inEntries() {
				end(i)
				close = i
			}
			stack = stack[:len(stack)-1]
			if inEntries() {
				end(i + 1) // an entry's own bracket ends it, comma or not
			}
			if len(stack) == 0 {
				ok = open >= 0 && close >= 0 && len(bytes.Trim(data[i+1:], " \t\r\n")) == 0
				return open, close, spans, ok
			}
		case ',':
			if inEntries() {
				end(i)
			}
		}
	}
	return 0, 0, nil, false
}

// looseJSONID returns the string value of the "id" key of the object in
// span (not of the objects inside it), or "".
func looseJSONID(span []byte) string {
	depth, key := 0, false
	for i := 0; i < len(span); i++ {
		switch span[i] {
		case '"':
			j := stringEnd(span, i)
			if j < 0 {
				return ""
			}
			s := string(span[i+1 : j])
			if key && depth == 1 {
				if err := json.Unmarshal(span[i:j+1], &s); err != nil {
					return ""
				}
				return trim(s)
			}
			i = j
			if depth == 1 && s == "id" {
				k := i + 1
				for k < len(span) && jsonSpace(span[k]) {
					k++
				}
				key = k < len(span) && span[k] == ':'
			}
		case '{', '[':
			depth++
			key = false
		case '}', ']':
			depth--
		case ',':
			key = false
		}
	}
	return ""
}

// stringEnd returns the index of the quote that closes the JSON string
// whose opening quote is at data[i], or -1 when none does.
func stringEnd(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

// jsonSpace reports whether c is JSON white space.
func jsonSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
