package ingest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseBoth parses data with ParsePage and the reference, holds them equal
// and returns ParsePage's page.
func parseBoth(t *testing.T, data []byte) *Page {
	t.Helper()
	p, err := ParsePage(data, FormatAuto)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	ref, err := ReferencePage(data, FormatAuto)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	samePage(t, "page", p, ref)
	for i, r := range p.Rejects {
		if !strings.Contains(ref.Rejects[i].Reason, r.Reason) && !strings.Contains(r.Reason, ref.Rejects[i].Reason) {
			t.Errorf("reject %s: reason %q, reference %q", r.Where(), r.Reason, ref.Rejects[i].Reason)
		}
	}
	return p
}

// TestRepeatedMembersAreRejected: a member given twice in any object of a
// JSON entry rejects that entry (encoding/json kept the last, and billed
// it), as a repeated attribute in XML does; the other entries are read.
func TestRepeatedMembersAreRejected(t *testing.T) {
	good := usageTwin()
	good.id = "urn:uuid:t0"
	cases := []struct {
		name   string
		json   func(string) string // rewrites the JSON of the entry
		reason string
	}{
		{"quantity", func(s string) string {
			return strings.Replace(s, `"bandwidthIn":5`, `"bandwidthIn":1,"bandwidthIn":999999999999`, 1)
		}, `product member "bandwidthIn" is given twice`},
		{"tenantId", func(s string) string {
			return strings.Replace(s, `"tenantId":"9"`, `"tenantId":"9","tenantId":"10"`, 1)
		}, `event member "tenantId" is given twice`},
		{"event id", func(s string) string { return strings.Replace(s, `"id":"e1"`, `"id":"e1","id":"e2"`, 1) }, `event member "id" is given twice`},
		{"entry id", func(s string) string {
			return strings.Replace(s, `"id":"urn:uuid:t1"`, `"id":"urn:uuid:t1","id":"urn:uuid:t2"`, 1)
		}, `entry member "id" is given twice`},
		{"null then value", func(s string) string {
			return strings.Replace(s, `"tenantId":"9"`, `"tenantId":null,"tenantId":"9"`, 1)
		}, `event member "tenantId" is given twice`},
		{"product", func(s string) string {
			return strings.Replace(s, `"product":{`, `"product":{"@type":"x"},"product":{`, 1)
		}, `event member "product" is given twice`},
		{"product @type", func(s string) string {
			return strings.Replace(s, `"product":{`, `"product":{"@type":"x",`, 1)
		}, `product member "@type" is given twice`},
		{"event", func(s string) string {
			return strings.Replace(s, `"content":{`, `"content":{"event":null,`, 1)
		}, `content member "event" is given twice`},
		{"content", func(s string) string {
			return strings.Replace(s, `"content":{`, `"content":null,"content":{`, 1)
		}, `entry member "content" is given twice`},
		{"category term", func(s string) string {
			return strings.Replace(s, `"content":{`, `"category":[{"term":"a"},{"term":"b","term":"c"}],"content":{`, 1)
		}, `category member "term" is given twice`},
		{"escaped key", func(s string) string {
			return strings.Replace(s, `"content":{`, `"link":[{"rel":"self","r\tl":"1","r\tl":"2"}],"content":{`, 1)
		}, `link member "r\tl" is given twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			entry := c.json(usageTwin().json())
			if entry == usageTwin().json() {
				t.Fatal("the case changed nothing")
			}
			page := []byte(`{"feed":{"entry":[` + good.json() + "," + entry + "," + good.json() + `]}}`)
			p := parseBoth(t, page)
			if len(p.Events) != 2 || len(p.Rejects) != 1 || p.Entries != 3 {
				t.Fatalf("%d events, rejects %v; want 2 events and 1 reject", len(p.Events), p.Rejects)
			}
			r := p.Rejects[0]
			if r.Index != 1 || r.EntryID != "urn:uuid:t1" || !strings.Contains(r.Reason, c.reason) || !bytes.Equal(r.Raw, []byte(entry)) {
				t.Fatalf("reject %+v, want entry 1 (urn:uuid:t1) saying %q with its bytes", r, c.reason)
			}
			// The single-entry document too.
			p = parseBoth(t, []byte(`{"entry":`+entry+`}`))
			if len(p.Rejects) != 1 || !strings.Contains(p.Rejects[0].Reason, c.reason) {
				t.Fatalf("entry document: rejects %v", p.Rejects)
			}
		})
	}
}

// TestRepeatedAttributesAreRejected: XML's twin of the above, for any
// element of an entry (the XML spec makes such a document not
// well-formed; encoding/xml does not check).
func TestRepeatedAttributesAreRejected(t *testing.T) {
	u := usageTwin()
	u.event = append(u.event, field{"tenantId", "10"})
	p := parseTwins(t, u)
	if len(p.Rejects) != 1 || !strings.Contains(p.Rejects[0].Reason, `event attribute "tenantId" is given twice`) {
		t.Fatalf("rejects %v", p.Rejects)
	}
	for _, c := range []struct{ from, to, reason string }{
		{`<updated>`, `<category term="a" term="b"/><updated>`, `category attribute "term" is given twice`},
		{`<content type="application/xml">`, `<content type="application/xml" type="text">`, `content attribute "type" is given twice`},
		{`<entry>`, `<entry xmlns:a="urn:a" xmlns:a="urn:b">`, `entry attribute "xmlns:a" is given twice`},
	} {
		x, _ := twinPages(usageTwin())
		data := bytes.Replace(x, []byte(c.from), []byte(c.to), 1)
		p := parseBoth(t, data)
		if len(p.Rejects) != 1 || !strings.Contains(p.Rejects[0].Reason, c.reason) || p.Rejects[0].EntryID != "urn:uuid:t1" {
			t.Errorf("%s: rejects %v, want one saying %q", c.to, p.Rejects, c.reason)
		}
	}
}

// TestRepeatedMembersOutsideEntries: a page whose feed object names
// "entry" or "link" twice is not read as a feed (encoding/json kept the
// last array: the entries of the first vanished); a link object with rel
// or href twice keeps the first, as XML does.
func TestRepeatedMembersOutsideEntries(t *testing.T) {
	e := usageTwin().json()
	for _, page := range []string{
		`{"feed":{"entry":[` + e + `],"entry":[]}}`,
		`{"feed":{"link":[],"entry":[` + e + `],"link":[]}}`,
		`{"feed":{"entry":[]},"feed":{"entry":[` + e + `]}}`,
		`{"entry":` + e + `,"entry":` + e + `}`,
	} {
		for _, parse := range []func([]byte, Format) (*Page, error){ParsePage, ReferencePage} {
			var nf *NotFeedError
			if _, err := parse([]byte(page), FormatAuto); !errors.As(err, &nf) {
				t.Errorf("%.50s…: %v, want not a feed", page, err)
			}
		}
	}
	p := parseBoth(t, []byte(`{"feed":{"link":[{"rel":"self","href":"a","href":"b"}],"entry":[`+e+`]}}`))
	x, _ := twinPages(usageTwin())
	xp := parseBoth(t, bytes.Replace(x, []byte("<entry>"), []byte(`<link rel="self" href="a" href="b"/><entry>`), 1))
	if p.Links.Self != "a" || xp.Links.Self != "a" || len(p.Events) != 1 {
		t.Fatalf("links %+v and XML %+v, want the first href", p.Links, xp.Links)
	}
}

// TestInvalidTextInJSON: invalid UTF-8 and escapes of lone surrogates in a
// JSON entry make it a reject with its bytes, never an event with U+FFFD in
// place (two entry ids that differ in a bad byte became one, and one of
// the two entries vanished); the other entries of the page are read, as
// XML does with its own malformed text.
func TestInvalidTextInJSON(t *testing.T) {
	a, b, c := usageTwin(), usageTwin(), usageTwin()
	a.id, b.id, c.id = "urn:uuid:t-\x01", "urn:uuid:t-\x02", "urn:uuid:t0"
	a.event = with(a.event, "id", "e-a")
	b.event = with(b.event, "id", "e-b")
	c.event = with(c.event, "id", "e-c")
	_, page := twinPages(a, b, c)
	cases := []struct {
		name, a, b string
		reason     string
	}{
		{"bad bytes", "\xff", "\xfe", `invalid UTF-8 in the value of "id" at byte `},
		{"lone surrogates", `\ud800`, `\udc00`, `lone surrogate \ud`},
		{"cut surrogate pair", `\ud83d\u0041`, `\ud83d`, `lone surrogate \ud83d in the value of "id" at byte `},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			data := bytes.Replace(page, []byte(`t-\u0001`), []byte("t-"+cs.a), 1)
			data = bytes.Replace(data, []byte(`t-\u0002`), []byte("t-"+cs.b), 1)
			p := parseBoth(t, data)
			if p.Entries != 3 || len(p.Events) != 1 || len(p.Rejects) != 2 {
				t.Fatalf("%d events, rejects %v; want 1 event and 2 rejects", len(p.Events), p.Rejects)
			}
			for _, e := range p.Events {
				if !utf8.ValidString(e.EntryID) || strings.ContainsRune(e.EntryID, utf8.RuneError) || e.EntryID != "urn:uuid:t0" {
					t.Fatalf("event %s", e.AppendJSON(nil))
				}
			}
			for i, r := range p.Rejects {
				if r.Index != i || !strings.Contains(r.Reason, cs.reason) || !bytes.Contains(r.Raw, []byte(`"e-`+string(rune('a'+i))+`"`)) {
					t.Errorf("reject %d: %+v, want one saying %q with its own bytes", i, r, cs.reason)
				}
			}
			if !strings.Contains(p.Recovered, cs.reason) {
				t.Errorf("recovered %q", p.Recovered)
			}
		})
	}
	// A bad byte in a member the parser does not read still rejects the
	// entry (XML rejects every entry with malformed text), and a single
	// entry document is a reject as XML's is.
	data := bytes.Replace(page, []byte(`"updated":`), []byte("\"title\":\"x\xff\",\"updated\":"), 1)
	if p := parseBoth(t, data); len(p.Rejects) != 1 || !strings.Contains(p.Rejects[0].Reason, `invalid UTF-8 in the value of "title"`) {
		t.Fatalf("rejects %v", p.Rejects)
	}
	entry := []byte(`{"entry":` + strings.Replace(c.json(), "CloudBackup", "Cloud\xffBackup", 1) + `}`)
	p := parseBoth(t, entry)
	if !p.Entry || len(p.Rejects) != 1 || p.Rejects[0].EntryID != "urn:uuid:t0" || !bytes.Equal(p.Rejects[0].Raw, entry) ||
		!strings.Contains(p.Rejects[0].Reason, `invalid UTF-8 in the value of "serviceCode" at byte `) {
		t.Fatalf("entry document: %+v", p.Rejects)
	}
	// XML, for comparison: the same bytes make the same entries rejects.
	x, _ := twinPages(a, b, c)
	x = bytes.Replace(x, []byte("t-\x01"), []byte("t-\xff"), 1)
	x = bytes.Replace(x, []byte("t-\x02"), []byte("t-\xfe"), 1)
	if p := parseBoth(t, x); len(p.Events) != 1 || len(p.Rejects) != 2 {
		t.Fatalf("XML: %d events, rejects %v", len(p.Events), p.Rejects)
	}
}
