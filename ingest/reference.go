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
	"regexp"
	"slices"
	"strings"

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
// of an event or product; a repeated one is an error.
func unprefixed(e *etree.Element, what string) (attrs, error) {
	out := make(attrs, 0, len(e.Attr))
	for _, a := range e.Attr {
		if a.Space != "" || a.Key == "xmlns" {
			continue
		}
		for _, b := range out {
			if b.name == a.Key {
				return nil, fmt.Errorf("%s has the attribute %s twice", what, a.Key)
			}
		}
		out = append(out, attr{name: a.Key, value: a.Value})
	}
	return out, nil
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
	var err error
	r.hasEvent = true
	if r.event, err = unprefixed(ev, "event"); err != nil {
		return err
	}
	for _, c := range ev.ChildElements() {
		if c.Tag != "product" {
			continue
		}
		r.hasProduct = true
		r.productNS = c.NamespaceURI()
		r.product, err = unprefixed(c, "product")
		return err
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

// decodeJSON decodes one JSON value that is all of data, numbers as
// json.Number; the error says what is malformed.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errors.New("malformed JSON: " + err.Error())
	}
	if len(bytes.Trim(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, errors.New("malformed JSON: data after the top-level value")
	}
	return v, nil
}

func referenceJSONPage(data []byte) (*Page, error) {
	top, err := decodeJSON(data)
	if err != nil {
		return recoverJSONPage(data, err)
	}
	return jsonFeedPage(top)
}

// jsonFeedPage reads a decoded page or entry document.
func jsonFeedPage(top any) (*Page, error) {
	obj, _ := top.(map[string]any)
	p := &Page{}
	if e, ok := obj["entry"]; ok && len(obj) == 1 {
		p.Entry = true
		p.add(0, refJSONEntry(e))
		return p, nil
	}
	feed, ok := obj["feed"].(map[string]any)
	if !ok || len(obj) != 1 {
		return nil, &NotFeedError{Format: FormatJSON, What: `the top-level value is not {"feed":{…}} or {"entry":{…}}`}
	}
	if links, ok := feed["link"].([]any); ok {
		for _, l := range links {
			lo, _ := l.(map[string]any)
			rel, _ := lo["rel"].(string)
			href, _ := lo["href"].(string)
			p.Links.set(trim(rel), trim(href))
		}
	}
	if entries, ok := feed["entry"]; ok {
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
	top, err := decodeJSON(skeleton)
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
		v, err := decodeJSON(raw)
		if err != nil {
			if len(entryIDs.FindAllIndex(raw, 2)) > 1 {
				// More than one entry in what was cut as one (a quote
				// left unescaped turns strings inside out): entries would
				// be lost in one reject. The page is refused whole.
				return nil, notFeed
			}
			p.add(i, rejected(looseJSONID(raw), err.Error()))
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

func jsonAttrs(o map[string]any, skip string) attrs {
	out := make(attrs, 0, len(o))
	for k, v := range o {
		if k == "@type" || k == skip || v == nil {
			continue
		}
		s, ok := jsonScalar(v)
		out = append(out, attr{name: k, value: s, bad: !ok})
	}
	return out
}

func refJSONEntry(v any) outcome {
	var r rawEntry
	o, ok := v.(map[string]any)
	if !ok {
		return rejected("", "entry is not a JSON object")
	}
	for _, f := range []struct {
		name string
		dst  *string
		seen *bool
	}{{"id", &r.id, &r.hasID}, {"updated", &r.updated, &r.hasUpdated}, {"published", &r.published, &r.hasPublished}} {
		x, ok := o[f.name]
		if !ok || x == nil {
			continue
		}
		s, ok := x.(string)
		if !ok {
			return rejected(trim(r.id), fmt.Sprintf("entry %s is not a string", f.name))
		}
		*f.dst, *f.seen = s, true
	}
	if c, ok := o["content"]; ok && c != nil {
		co, ok := c.(map[string]any)
		if !ok {
			return rejected(trim(r.id), "entry content is not an object")
		}
		if ev, ok := co["event"]; ok && ev != nil {
			eo, ok := ev.(map[string]any)
			if !ok {
				return rejected(trim(r.id), "entry content.event is not an object")
			}
			r.hasEvent = true
			r.event = jsonAttrs(eo, "product")
			if pv, ok := eo["product"]; ok && pv != nil {
				po, ok := pv.(map[string]any)
				if !ok {
					return rejected(trim(r.id), "event product is not an object")
				}
				r.hasProduct = true
				if t, ok := po["@type"]; ok && t != nil {
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
