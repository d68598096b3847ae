// Package ingest turns Cloud Feeds pages into model events and (in later
// files) pages through tenants' feeds. Parsing never touches Kafka: it takes
// bytes and returns a Page.
package ingest

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/feedmeter/feedmeter/model"
)

// Format is the encoding of a page.
type Format int

// The formats. FormatAuto detects XML or JSON from the first byte that is not
// white space.
const (
	FormatAuto Format = iota
	FormatXML
	FormatJSON
)

// ParseFormat reads "auto", "xml" or "json".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "auto", "":
		return FormatAuto, nil
	case "xml":
		return FormatXML, nil
	case "json":
		return FormatJSON, nil
	}
	return 0, fmt.Errorf("format %q is not one of auto, xml, json", s)
}

func (f Format) String() string {
	switch f {
	case FormatXML:
		return "xml"
	case FormatJSON:
		return "json"
	}
	return "auto"
}

// Links are a page's Atom links by relation; "" when the page has none.
type Links struct {
	Current  string `json:"current,omitempty"`
	Self     string `json:"self,omitempty"`
	Previous string `json:"previous,omitempty"`
	Next     string `json:"next,omitempty"`
	Last     string `json:"last,omitempty"`
}

// set records href under rel; the first link of a relation wins.
func (l *Links) set(rel, href string) {
	var p *string
	switch rel {
	case "current":
		p = &l.Current
	case "self":
		p = &l.Self
	case "previous":
		p = &l.Previous
	case "next":
		p = &l.Next
	case "last":
		p = &l.Last
	default:
		return
	}
	if *p == "" {
		*p = href
	}
}

// Reject is an entry that could not become an event.
type Reject struct {
	EntryID string // the trimmed atom id, "" when it could not be read
	Index   int    // position of the entry on the page, from 0 in feed order
	Reason  string
	Raw     []byte // the entry's bytes as served (nil when they cannot be told apart)
}

// Where names the entry: its id when known, else #index.
func (r Reject) Where() string {
	if r.EntryID != "" {
		return r.EntryID
	}
	return "#" + strconv.Itoa(r.Index)
}

func (r Reject) String() string { return "reject " + r.Where() + ": " + r.Reason }

// Page is the result of parsing one feed page or one entry document.
type Page struct {
	Format Format
	// Entry is true when the input was a single entry document
	// ({"entry":…} or a root atom:entry) rather than a feed.
	Entry bool
	Links Links
	// Events are the entries that parsed, in feed order (newest first on a
	// Cloud Feeds page).
	Events []model.Event
	// Indexes holds, for each event, its entry's position on the page.
	Indexes []int
	// Rejects are the entries that failed, in feed order.
	Rejects []Reject
	// Entries is how many entries the page held: len(Events)+len(Rejects).
	Entries int
	// Recovered is set when the page as a whole was not well-formed XML or
	// valid JSON and its entries were recovered one by one; it says what
	// was wrong.
	Recovered string
}

// NotFeedError says that the input is not a feed page or an entry at all.
type NotFeedError struct {
	Format Format
	What   string
}

func (e *NotFeedError) Error() string {
	if e.Format == FormatAuto {
		return "not a feed page or entry: " + e.What
	}
	return "not a " + e.Format.String() + " feed page or entry: " + e.What
}

// ParsePage parses a feed page or a single entry, in XML or JSON. One bad
// entry never spoils the others: it becomes a Reject. The error is non-nil
// only when data is not a feed page or an entry at all (*NotFeedError).
//
// The result equals ReferencePage's (gofeed's strictness aside, see
// reference.go); a faster parser serves the common case.
func ParsePage(data []byte, f Format) (*Page, error) {
	f = detect(data, f)
	var p *Page
	var err error
	var ok bool
	switch f {
	case FormatXML:
		if p, ok = fastXMLPage(data); !ok {
			p, err = ReferencePage(data, f)
		}
	case FormatJSON:
		if p, ok = fastJSONPage(data); !ok {
			p, err = ReferencePage(data, f)
		}
	default:
		return nil, &NotFeedError{What: describeStart(data)}
	}
	if err != nil {
		return nil, err
	}
	p.Format = f
	p.Entries = len(p.Events) + len(p.Rejects)
	return p, nil
}

// ReferencePage parses like ParsePage but only with the reference parsers
// (etree over encoding/xml; encoding/json). Tests hold the two equal.
func ReferencePage(data []byte, f Format) (*Page, error) {
	f = detect(data, f)
	var p *Page
	var err error
	switch f {
	case FormatXML:
		p, err = referenceXMLPage(data)
	case FormatJSON:
		p, err = referenceJSONPage(data)
	default:
		return nil, &NotFeedError{What: describeStart(data)}
	}
	if err != nil {
		return nil, err
	}
	p.Format = f
	p.Entries = len(p.Events) + len(p.Rejects)
	fillRaw(p, data)
	return p, nil
}

// fillRaw gives the reference's rejects the bytes of their entries, for the
// dead-letter topic.
func fillRaw(p *Page, data []byte) {
	if len(p.Rejects) == 0 {
		return
	}
	if p.Entry {
		p.Rejects[0].Raw = data
		return
	}
	var raw func(i int) []byte
	switch p.Format {
	case FormatXML:
		sp, err := splitXML(data)
		if err != nil {
			return
		}
		raw = func(i int) []byte {
			if i < 0 || i >= len(sp.chunks) {
				return nil
			}
			return data[sp.chunks[i][0]:sp.chunks[i][1]]
		}
	case FormatJSON:
		_, _, spans, _ := looseJSON(data) // as a recovered page was cut
		raw = func(i int) []byte {
			if i < 0 || i >= len(spans) {
				return nil
			}
			return data[spans[i][0]:spans[i][1]]
		}
	}
	for i := range p.Rejects {
		p.Rejects[i].Raw = raw(p.Rejects[i].Index)
	}
}

func detect(data []byte, f Format) Format {
	if f != FormatAuto {
		return f
	}
	data = bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(data) == 0 {
		return FormatAuto
	}
	switch data[0] {
	case '<':
		return FormatXML
	case '{', '[':
		return FormatJSON
	}
	return FormatAuto
}

func describeStart(data []byte) string {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 {
		return "the input is empty"
	}
	if len(data) > 20 {
		data = data[:20]
	}
	return fmt.Sprintf("it starts with %q, neither XML nor JSON", data)
}

// outcome is what became of one entry: an event, or a reject.
type outcome struct {
	ev  model.Event
	rej *Reject
}

func rejected(id, reason string) outcome {
	return outcome{rej: &Reject{EntryID: id, Reason: reason}}
}

// add appends the outcome of the entry at index.
func (p *Page) add(index int, o outcome) {
	ev, rej := o.ev, o.rej
	if rej != nil {
		rej.Index = index
		p.Rejects = append(p.Rejects, *rej)
		return
	}
	p.Events = append(p.Events, ev)
	p.Indexes = append(p.Indexes, index)
}
