package ingest

// The reference parsers: etree (over encoding/xml in strict mode) for XML and
// encoding/json for JSON. They define what a page means; the fast parsers in
// fastxml.go and fastjson.go must give the same Page or step aside.
//
// gofeed is not used here although design.md names it: it parses with
// encoding/xml in non-strict mode behind a filter that deletes control
// characters, so it accepts entries that billing must reject, and it hands
// atom:content back as inner XML without the namespace declarations of the
// entry and feed, so the product's namespace cannot be resolved by URI. It
// stays the baseline of the benchmarks.

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/beevik/etree"

	"github.com/feedmeter/feedmeter/model"
)

func readXML(data []byte) (*etree.Document, error) {
	doc := etree.NewDocument()
	doc.ReadSettings.PreserveDuplicateAttrs = true
	if err := doc.ReadFromBytes(data); err != nil {
		return nil, err
	}
	// etree accepts several roots and text beside the root; XML does not.
	var roots int
	for _, t := range doc.Child {
		switch t := t.(type) {
		case *etree.Element:
			roots++
		case *etree.CharData:
			if strings.Trim(t.Data, xmlSpace) != "" {
				return nil, errors.New("text outside the root element")
			}
		}
	}
	if roots != 1 {
		return nil, fmt.Errorf("%d root elements, want 1", roots)
	}
	return doc, nil
}

// xmlReason words an XML error for a reject, with its line in the page.
func xmlReason(err error, firstLine int) string {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("malformed XML at line %d: %s", firstLine+se.Line-1, se.Msg)
	}
	if errors.Is(err, etree.ErrXML) {
		return "malformed XML: an element is not closed, or closed by the wrong end tag"
	}
	return "malformed XML: " + err.Error()
}

func referenceXMLPage(data []byte) (*Page, error) {
	doc, err := readXML(data)
	if err != nil {
		return recoverXMLPage(data, err)
	}
	p := &Page{}
	root := doc.Root()
	ns, local := root.NamespaceURI(), root.Tag
	switch {
	case ns == model.NSAtom && local == "entry":
		p.Entry = true
		p.add(0, refEntry(root))
	case ns == model.NSAtom && local == "feed":
		refFeedChildren(p, root, 0)
	default:
		what := "<" + local + ">"
		if ns != "" {
			what = fmt.Sprintf("<%s> in namespace %q", local, ns)
		}
		return nil, &NotFeedError{Format: FormatXML, What: "the root element is " + what + ", not an Atom feed or entry"}
	}
	return p, nil
}

// refFeedChildren reads the links and entries of a feed element, numbering
// entries from index.
func refFeedChildren(p *Page, feed *etree.Element, index int) int {
	for _, c := range feed.ChildElements() {
		if c.NamespaceURI() != model.NSAtom {
			continue
		}
		switch c.Tag {
		case "link":
			rel, _ := firstAttr(c, "rel")
			href, _ := firstAttr(c, "href")
			p.Links.set(trim(rel), trim(href))
		case "entry":
			p.add(index, refEntry(c))
			index++
		}
	}
	return index
}

func firstAttr(e *etree.Element, name string) (string, bool) {
	for _, a := range e.Attr {
		if a.Space == "" && a.Key == name {
			return a.Value, true
		}
	}
	return "", false
}

// unprefixed collects the attributes without a prefix, which are the fields
// of an event or product.
func unprefixed(e *etree.Element) attrs {
	out := make(attrs, 0, len(e.Attr))
	for _, a := range e.Attr {
		if a.Space == "" && a.Key != "xmlns" {
			out = append(out, attr{name: a.Key, value: a.Value})
		}
	}
	return out
}

// repeatedAttr finds the first element in e (e included, in document order)
// that names an attribute twice. The XML spec makes such a document not
// well-formed, but encoding/xml does not check: the entry is refused
// rather than one of the two read.
func repeatedAttr(e *etree.Element) (string, bool) {
	for i, a := range e.Attr {
		for _, b := range e.Attr[:i] {
			if a.Space == b.Space && a.Key == b.Key {
				return fmt.Sprintf("%s attribute %q is given twice", e.Tag, a.FullKey()), true
			}
		}
	}
	for _, c := range e.ChildElements() {
		if reason, found := repeatedAttr(c); found {
			return reason, true
		}
	}
	return "", false
}

// text is the character data of a text-only element.
func text(e *etree.Element) (string, error) {
	var b strings.Builder
	for _, t := range e.Child {
		switch t := t.(type) {
		case *etree.CharData:
			b.WriteString(t.Data)
		case *etree.Element:
			return "", fmt.Errorf("atom:%s holds an element", e.Tag)
		}
	}
	return b.String(), nil
}

func refEntry(entry *etree.Element) outcome {
	var r rawEntry
	var content *etree.Element
	var reason string
	for _, c := range entry.ChildElements() {
		if c.NamespaceURI() != model.NSAtom {
			continue
		}
		var dst *string
		var seen *bool
		switch c.Tag {
		case "id":
			dst, seen = &r.id, &r.hasID
		case "updated":
			dst, seen = &r.updated, &r.hasUpdated
		case "published":
			dst, seen = &r.published, &r.hasPublished
		case "content":
			if content != nil && reason == "" {
				reason = "entry has atom:content twice"
			}
			content = c
			continue
		default:
			continue
		}
		if *seen {
			if reason == "" {
				reason = "entry has atom:" + c.Tag + " twice"
			}
			continue
		}
		*seen = true
		s, err := text(c)
		if err != nil && reason == "" {
			reason = err.Error()
		}
		*dst = s
	}
	if reason != "" {
		return rejected(trim(r.id), reason)
	}
	if reason, found := repeatedAttr(entry); found {
		return rejected(trim(r.id), reason)
	}
	if content != nil {
		if err := refContent(&r, content); err != nil {
			return rejected(trim(r.id), err.Error())
		}
	}
	return normalize(&r)
}

func refContent(r *rawEntry, content *etree.Element) error {
	kids := content.ChildElements()
	if len(kids) == 0 {
		return nil
	}
	ev := kids[0]
	if ev.NamespaceURI() != model.NSEvent || ev.Tag != "event" {
		return fmt.Errorf("atom:content holds {%s}%s, not an event", ev.NamespaceURI(), ev.Tag)
	}
	r.hasEvent = true
	r.event = unprefixed(ev)
	for _, c := range ev.ChildElements() {
		if c.Tag == "product" {
			r.hasProduct = true
			r.productNS = c.NamespaceURI()
			r.product = unprefixed(c)
			break
		}
	}
	return nil
}

// recoverXMLPage reads a page that is not well-formed entry by entry, so
// that one broken entry costs only itself.
func recoverXMLPage(data []byte, pageErr error) (*Page, error) {
	sp, err := splitXML(data)
	if err != nil {
		return nil, &NotFeedError{Format: FormatXML, What: xmlReason(pageErr, 1)}
	}
	p := &Page{Recovered: xmlReason(pageErr, 1)}
	if sp.rootEntry {
		p.Entry = true
		p.add(0, rejected(sp.entryID(data, 0), p.Recovered))
		return p, nil
	}
	for i := range sp.chunks {
		doc, err := readXML(sp.wrap(data, i))
		if err != nil {
			p.add(i, rejected(sp.entryID(data, i), xmlReason(err, sp.line(i))))
			continue
		}
		entry := doc.Root().ChildElements()
		if len(entry) != 1 || entry[0].NamespaceURI() != model.NSAtom || entry[0].Tag != "entry" {
			p.add(i, rejected(sp.entryID(data, i), "not an atom:entry"))
			continue
		}
		p.add(i, refEntry(entry[0]))
	}
	doc, err := readXML(sp.skeleton(data))
	if err != nil {
		p.add(-1, rejected("", "the page outside its entries is "+xmlReason(err, 1)+"; its links were not read"))
		return p, nil
	}
	refFeedChildren(p, doc.Root(), len(sp.chunks))
	return p, nil
}

// jsonObject is a decoded JSON object: its members in the order of the
// text, a repeated one included (encoding/json's maps keep only the last,
// so a repeated member would be read and billed unseen).
type jsonObject []jsonMember

type jsonMember struct {
	key string
	val any
}

// get returns the value of the first member named key.
func (o jsonObject) get(key string) (any, bool) {
	for _, m := range o {
		if m.key == key {
			return m.val, true
		}
	}
	return nil, false
}

// count returns how many members are named key.
func (o jsonObject) count(key string) int {
	n := 0
	for _, m := range o {
		if m.key == key {
			n++
		}
	}
	return n
}

// repeated finds the first member, in the order of the text, that an object
// in v (v itself included) names twice. where is the object's name: the key
// that holds it (in an array, the array's key), name for v itself.
func repeated(v any, name string) (where, key string, found bool) {
	switch v := v.(type) {
	case jsonObject:
		for i, m := range v {
			for _, n := range v[:i] {
				if n.key == m.key {
					return name, m.key, true
				}
			}
			if where, key, found = repeated(m.val, m.key); found {
				return where, key, true
			}
		}
	case []any:
		for _, x := range v {
			if where, key, found = repeated(x, name); found {
				return where, key, true
			}
		}
	}
	return "", "", false
}

func repeatedReason(where, key string) string {
	return fmt.Sprintf("%s member %q is given twice", where, key)
}

// maxJSONNesting is encoding/json's limit on nesting.
const maxJSONNesting = 10000

// decodeJSON decodes one JSON value that is all of data, with encoding/json's
// tokenizer: objects as jsonObject, arrays as []any, numbers as json.Number.
// The error says what is malformed; base is data's offset in the page, for
// the byte offsets it names. When only the text is (see badJSONText), the
// value comes back too, with U+FFFD in place of the bad text, and the error
// is a *jsonTextError.
func decodeJSON(data []byte, base int) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := jsonValue(dec, 0)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, errors.New("malformed JSON: " + err.Error())
	}
	if len(bytes.Trim(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, errors.New("malformed JSON: data after the top-level value")
	}
	return v, badJSONText(data, base)
}

func jsonValue(dec *json.Decoder, depth int) (any, error) {
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := t.(json.Delim)
	if !ok {
		return t, nil
	}
	if depth++; depth > maxJSONNesting {
		return nil, errors.New("exceeded max depth")
	}
	var v any
	switch d {
	case '{':
		o := jsonObject{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := k.(string) // the tokenizer allows only strings here
			x, err := jsonValue(dec, depth)
			if err != nil {
				return nil, err
			}
			o = append(o, jsonMember{key, x})
		}
		v = o
	case '[':
		a := []any{}
		for dec.More() {
			x, err := jsonValue(dec, depth)
			if err != nil {
				return nil, err
			}
			a = append(a, x)
		}
		v = a
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, err
	}
	return v, nil
}

// jsonTextError is text that a JSON decoder would repair silently.
type jsonTextError struct{ reason string }

func (e *jsonTextError) Error() string { return "malformed JSON: " + e.reason }

// badJSONText finds, in data that is otherwise valid JSON, the first text
// that encoding/json would replace by U+FFFD: bytes that are not UTF-8, or
// a \u escape of a surrogate that is not half of a pair. Replaced, two
// distinct ids could become one; XML refuses such text outright. The
// error names the member and the byte offset (base is data's in the page).
func badJSONText(data []byte, base int) error {
	if utf8.Valid(data) && !bytes.Contains(data, []byte(`\u`)) {
		return nil
	}
	var keys []string // the key being read, by depth
	key := ""
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{', '[':
			keys = append(keys, key)
		case '}', ']':
			if n := len(keys); n > 0 {
				key, keys = keys[n-1], keys[:n-1]
			}
		case '"':
			end := stringEnd(data, i)
			if end < 0 {
				return nil // not valid JSON: not the case here
			}
			at, what := badString(data[i+1 : end])
			next := end + 1
			for next < len(data) && jsonSpace(data[next]) {
				next++
			}
			isKey := next < len(data) && data[next] == ':'
			if at >= 0 {
				where := "in a member name"
				if !isKey {
					where = fmt.Sprintf("in the value of %q", key)
				}
				return &jsonTextError{fmt.Sprintf("%s %s at byte %d", what, where, base+i+1+at)}
			}
			if isKey {
				key = string(data[i+1 : end])
			}
			i = end
		}
	}
	return nil
}

// badString returns the offset in s (the inside of a JSON string) of the
// first invalid UTF-8 or lone surrogate escape and says which, or -1.
func badString(s []byte) (int, string) {
	for j := 0; j < len(s); {
		c := s[j]
		switch {
		case c == '\\' && j+5 < len(s) && s[j+1] == 'u':
			r, ok := hex4(s[j+2 : j+6])
			switch {
			case !ok || !utf16.IsSurrogate(r):
			case r < 0xdc00 && j+11 < len(s) && s[j+6] == '\\' && s[j+7] == 'u':
				if r2, ok := hex4(s[j+8 : j+12]); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
					j += 12
					continue
				}
				fallthrough
			default:
				return j, "lone surrogate " + string(s[j:j+6])
			}
			j += 6
		case c == '\\':
			j += 2
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(s[j:])
			if r == utf8.RuneError && size == 1 {
				return j, "invalid UTF-8"
			}
			j += size
		default:
			j++
		}
	}
	return -1, ""
}

// hex4 reads four hexadecimal digits.
func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func referenceJSONPage(data []byte) (*Page, error) {
	top, err := decodeJSON(data, 0)
	var text *jsonTextError
	if errors.As(err, &text) {
		// An entry document whose only fault is its text is that entry's
		// reject, as XML's is.
		if o, _ := top.(jsonObject); len(o) == 1 && o[0].key == "entry" {
			p := &Page{Entry: true, Recovered: err.Error()}
			p.add(0, rejected(jsonEntryID(o[0].val), err.Error()))
			return p, nil
		}
	}
	if err != nil {
		return recoverJSONPage(data, err)
	}
	return jsonFeedPage(top)
}

// jsonFeedPage reads a decoded page or entry document.
func jsonFeedPage(top any) (*Page, error) {
	obj, _ := top.(jsonObject)
	p := &Page{}
	if len(obj) == 1 && obj[0].key == "entry" {
		p.Entry = true
		p.add(0, refJSONEntry(obj[0].val))
		return p, nil
	}
	feed, ok := jsonObject(nil), false
	if len(obj) == 1 && obj[0].key == "feed" {
		feed, ok = obj[0].val.(jsonObject)
	}
	if !ok {
		return nil, &NotFeedError{Format: FormatJSON, What: `the top-level value is not {"feed":{…}} or {"entry":{…}}`}
	}
	for _, k := range []string{"link", "entry"} {
		if feed.count(k) > 1 {
			// Which array would be the page's?
			return nil, &NotFeedError{Format: FormatJSON, What: repeatedReason("feed", k)}
		}
	}
	if links, ok := feed.get("link"); ok {
		links, _ := links.([]any)
		for _, l := range links {
			lo, _ := l.(jsonObject)
			rel, _ := lo.get("rel")
			href, _ := lo.get("href")
			rs, _ := rel.(string)
			hs, _ := href.(string)
			p.Links.set(trim(rs), trim(hs))
		}
	}
	if entries, ok := feed.get("entry"); ok {
		list, ok := entries.([]any)
		if !ok {
			return nil, &NotFeedError{Format: FormatJSON, What: `"feed"."entry" is not an array`}
		}
		for i, e := range list {
			p.add(i, refJSONEntry(e))
		}
	}
	return p, nil
}

// recoverJSONPage reads a feed page that is not valid JSON entry by entry
// (looseJSON cuts them out), as recoverXMLPage does for XML: one broken
// entry costs only itself. The page without its entries must be valid.
func recoverJSONPage(data []byte, pageErr error) (*Page, error) {
	notFeed := &NotFeedError{Format: FormatJSON, What: pageErr.Error()}
	open, close, spans, ok := looseJSON(data)
	if !ok {
		return nil, notFeed
	}
	skeleton := append(append(slices.Clip(data[:open+1]), ' '), data[close:]...)
	top, err := decodeJSON(skeleton, 0)
	if err != nil {
		return nil, notFeed
	}
	p, err := jsonFeedPage(top)
	if err != nil {
		return nil, err
	}
	if p.Entry || p.Entries > 0 || len(p.Events)+len(p.Rejects) > 0 {
		return nil, notFeed // entries outside the array looseJSON cut (a second "entry" key)
	}
	p.Recovered = pageErr.Error()
	for i, sp := range spans {
		raw := data[sp[0]:sp[1]]
		v, err := decodeJSON(raw, sp[0])
		var text *jsonTextError
		if err != nil && !errors.As(err, &text) {
			if len(entryIDs.FindAllIndex(raw, 2)) > 1 {
				// More than one entry in what was cut as one (a quote
				// left unescaped turns strings inside out): entries would
				// be lost in one reject. The page is refused whole.
				return nil, notFeed
			}
			p.add(i, rejected(looseJSONID(raw), err.Error()))
			continue
		}
		if err != nil {
			p.add(i, rejected(jsonEntryID(v), err.Error()))
			continue
		}
		p.add(i, refJSONEntry(v))
	}
	return p, nil
}

// entryIDs matches an entry's id in JSON: the key "id" with a urn value
// (the ids of the events inside are bare UUIDs).
var entryIDs = regexp.MustCompile(`"id"\s*:\s*"(\s|\\[nrt])*urn:`)

// jsonScalar renders a JSON scalar as the text its XML twin would carry.
func jsonScalar(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return string(v), true
	case bool:
		if v {
			return "true", true
		}
		return "false", true
	}
	return "", false
}

func jsonAttrs(o jsonObject, skip string) attrs {
	out := make(attrs, 0, len(o))
	for _, m := range o {
		if m.key == "@type" || m.key == skip || m.val == nil {
			continue
		}
		s, ok := jsonScalar(m.val)
		out = append(out, attr{name: m.key, value: s, bad: !ok})
	}
	return out
}

// jsonEntryID is the trimmed id of a decoded entry, "" when it has none
// that is a string.
func jsonEntryID(v any) string {
	o, _ := v.(jsonObject)
	id, _ := o.get("id")
	s, _ := id.(string)
	return trim(s)
}

func refJSONEntry(v any) outcome {
	var r rawEntry
	o, ok := v.(jsonObject)
	if !ok {
		return rejected("", "entry is not a JSON object")
	}
	if where, key, found := repeated(o, "entry"); found {
		return rejected(jsonEntryID(o), repeatedReason(where, key))
	}
	for _, f := range []struct {
		name string
		dst  *string
		seen *bool
	}{{"id", &r.id, &r.hasID}, {"updated", &r.updated, &r.hasUpdated}, {"published", &r.published, &r.hasPublished}} {
		x, _ := o.get(f.name)
		if x == nil {
			continue
		}
		s, ok := x.(string)
		if !ok {
			return rejected(trim(r.id), fmt.Sprintf("entry %s is not a string", f.name))
		}
		*f.dst, *f.seen = s, true
	}
	if c, _ := o.get("content"); c != nil {
		co, ok := c.(jsonObject)
		if !ok {
			return rejected(trim(r.id), "entry content is not an object")
		}
		if ev, _ := co.get("event"); ev != nil {
			eo, ok := ev.(jsonObject)
			if !ok {
				return rejected(trim(r.id), "entry content.event is not an object")
			}
			r.hasEvent = true
			r.event = jsonAttrs(eo, "product")
			if pv, _ := eo.get("product"); pv != nil {
				po, ok := pv.(jsonObject)
				if !ok {
					return rejected(trim(r.id), "event product is not an object")
				}
				r.hasProduct = true
				if t, _ := po.get("@type"); t != nil {
					s, ok := t.(string)
					if !ok {
						return rejected(trim(r.id), "product @type is not a string")
					}
					r.productNS = s
				}
				r.product = jsonAttrs(po, "")
			}
		}
	}
	return normalize(&r)
}
