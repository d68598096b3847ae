package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/beevik/etree"

	"github.com/feedmeter/feedmeter/model"
)

// testdataFiles lists every XML and JSON sample of the project.
func testdataFiles(t testing.TB) []string {
	var files []string
	for _, pattern := range []string{"../testdata/*/*.xml", "../testdata/*/*.json", "../feedsim/testdata/*.xml", "../feedsim/testdata/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d testdata files", len(files))
	}
	return files
}

func formatOf(name string) Format {
	if strings.HasSuffix(name, ".json") {
		return FormatJSON
	}
	return FormatXML
}

// fast runs only the fast parser; ok=false when it stepped aside.
func fast(data []byte, f Format) (*Page, bool) {
	var p *Page
	var ok bool
	if f == FormatJSON {
		p, ok = fastJSONPage(data)
	} else {
		p, ok = fastXMLPage(data)
	}
	if ok {
		p.Format = f
		p.Entries = len(p.Events) + len(p.Rejects)
	}
	return p, ok
}

// comparable strips what the two parsers may word differently.
func comparable(p *Page) *Page {
	c := *p
	c.Rejects = nil
	for _, r := range p.Rejects {
		c.Rejects = append(c.Rejects, Reject{EntryID: r.EntryID, Index: r.Index})
	}
	c.Recovered = ""
	if len(c.Events) == 0 {
		c.Events, c.Indexes = nil, nil
	}
	return &c
}

// samePage fails unless the fast parser (or ParsePage) and the reference
// agree on every event, every reject's entry and index, and the links.
func samePage(t testing.TB, name string, got, want *Page) {
	t.Helper()
	g, w := comparable(got), comparable(want)
	if reflect.DeepEqual(g, w) {
		return
	}
	if len(g.Events) != len(w.Events) {
		t.Fatalf("%s: %d events, reference %d", name, len(g.Events), len(w.Events))
	}
	for i := range g.Events {
		if !reflect.DeepEqual(g.Events[i], w.Events[i]) {
			t.Fatalf("%s: event %d:\n got %s\nwant %s", name, i, g.Events[i].AppendJSON(nil), w.Events[i].AppendJSON(nil))
		}
	}
	t.Fatalf("%s: pages differ:\n got %+v\nwant %+v", name, g, w)
}

// malformed lists the testdata files that are not well-formed on purpose:
// there the fast path must step aside.
var malformed = map[string]bool{"storage.xml": true, "feed-broken-entry.xml": true, "feed-bad-text.xml": true, "feed-bad-text.json": true}

// stepsAside lists well-formed testdata files that the fast parser leaves
// to the reference, and why.
var stepsAside = map[string]string{"feed-cuf.xml": "an entry names an attribute twice"}

func TestFastEqualsReference(t *testing.T) {
	for _, name := range testdataFiles(t) {
		t.Run(filepath.Base(name), func(t *testing.T) {
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			f := formatOf(name)
			want, err := ReferencePage(data, f)
			if err != nil {
				t.Fatalf("reference: %v", err)
			}
			got, ok := fast(data, f)
			if why := stepsAside[filepath.Base(name)]; malformed[filepath.Base(name)] || why != "" {
				if ok {
					t.Fatalf("the fast parser took a page it must leave to the reference (malformed, or %s)", why)
				}
			} else {
				if !ok {
					t.Fatal("the fast parser stepped aside on a well-formed page")
				}
				samePage(t, name, got, want)
			}
			pub, err := ParsePage(data, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			samePage(t, name, pub, want)
		})
	}
}

// TestXMLAndJSONTwins: a page in XML and its JSON twin give the same events.
func TestXMLAndJSONTwins(t *testing.T) {
	for _, name := range testdataFiles(t) {
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		twin := strings.TrimSuffix(name, ".json") + ".xml"
		if malformed[filepath.Base(twin)] {
			continue
		}
		xdata, err := os.ReadFile(twin)
		if err != nil {
			continue
		}
		jdata, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		x, err := ParsePage(xdata, FormatAuto)
		if err != nil {
			t.Fatal(err)
		}
		j, err := ParsePage(jdata, FormatAuto)
		if err != nil {
			t.Fatal(err)
		}
		if x.Format != FormatXML || j.Format != FormatJSON {
			t.Fatalf("formats detected as %v and %v", x.Format, j.Format)
		}
		x.Format, j.Format = 0, 0
		// Twins carry the same entries; the JSON ones may add rejects.
		for i := range x.Events {
			found := false
			for k := range j.Events {
				if reflect.DeepEqual(x.Events[i], j.Events[k]) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: event %s of the XML twin is missing or differs", name, x.Events[i].AppendJSON(nil))
			}
		}
		if x.Links != j.Links {
			t.Errorf("%s: links %+v, XML twin %+v", name, j.Links, x.Links)
		}
	}
}

// TestGoldenTwinsAgree: the golden pages of the rules of issue 16 give the
// same events and the same rejects (by entry and index) in XML and JSON.
func TestGoldenTwinsAgree(t *testing.T) {
	for _, name := range []string{"feed-cuf", "feed-bad-text"} {
		var pages []*Page
		for _, ext := range []string{".xml", ".json"} {
			data, err := os.ReadFile("../testdata/pages/" + name + ext)
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePage(data, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			c := comparable(p)
			c.Format = 0
			for i := range c.Rejects {
				c.Rejects[i].EntryID = strings.ToValidUTF8(c.Rejects[i].EntryID, "\uFFFD")
			}
			pages = append(pages, c)
		}
		if !reflect.DeepEqual(pages[0], pages[1]) {
			t.Errorf("%s: XML and JSON differ:\n xml %+v\njson %+v", name, pages[0], pages[1])
		}
		if len(pages[0].Events) == 0 || len(pages[0].Rejects) == 0 {
			t.Errorf("%s: %d events, %d rejects: the page tests nothing", name, len(pages[0].Events), len(pages[0].Rejects))
		}
	}
}

func TestLinks(t *testing.T) {
	for _, name := range []string{"../testdata/pages/feed-head.xml", "../testdata/pages/feed-head.json"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePage(data, FormatAuto)
		if err != nil {
			t.Fatal(err)
		}
		base := "https://ord.feeds.api.rackspacecloud.com/backup/events/1234"
		want := Links{
			Current:  base,
			Self:     base + "?limit=25",
			Previous: base + "?marker=urn:uuid:4a1f6a62-0f1e-4c57-8d55-1b0a8c6d0001&direction=forward&limit=25",
			Next:     base + "?marker=urn:uuid:4a1f6a62-0f1e-4c57-8d55-1b0a8c6d0005&direction=backward&limit=25",
			Last:     base + "?marker=last&direction=backward&limit=25",
		}
		if p.Links != want {
			t.Errorf("%s: links\n got %+v\nwant %+v", name, p.Links, want)
		}
		if p.Entries != 5 || len(p.Events) != 5 {
			t.Errorf("%s: %d entries, %d events; want 5, 5", name, p.Entries, len(p.Events))
		}
	}
}

func TestBrokenEntryCostsOnlyItself(t *testing.T) {
	data, err := os.ReadFile("../testdata/pages/feed-broken-entry.xml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePage(data, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || len(p.Rejects) != 1 || p.Entries != 3 {
		t.Fatalf("%d events, %d rejects; want 2 and 1", len(p.Events), len(p.Rejects))
	}
	r := p.Rejects[0]
	if r.EntryID != "urn:uuid:00000000-0000-4000-8000-000000000102" || r.Index != 1 {
		t.Errorf("reject %+v names the wrong entry", r)
	}
	if !strings.Contains(r.Reason, "line 18") || !strings.Contains(r.Reason, "expected />") {
		t.Errorf("reason %q does not name the problem and its line", r.Reason)
	}
	if !bytes.HasPrefix(r.Raw, []byte("<atom:entry")) || !bytes.HasSuffix(r.Raw, []byte("</atom:entry>")) ||
		!bytes.Contains(r.Raw, []byte("e102")) || bytes.Contains(r.Raw, []byte("e101")) {
		t.Errorf("raw bytes are not the broken entry's: %q", r.Raw)
	}
	if p.Links.Current != "http://127.0.0.1:8900/backup/events/88" {
		t.Errorf("links of a recovered page not read: %+v", p.Links)
	}
	if p.Indexes[0] != 0 || p.Indexes[1] != 2 {
		t.Errorf("event indexes %v, want [0 2]", p.Indexes)
	}
}

func TestSeedStorageXMLIsRejectedWithItsLine(t *testing.T) {
	data, err := os.ReadFile("../testdata/seed/storage.xml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePage(data, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Entry || len(p.Events) != 0 || len(p.Rejects) != 1 {
		t.Fatalf("got %d events, %d rejects", len(p.Events), len(p.Rejects))
	}
	r := p.Rejects[0]
	if r.EntryID != "urn:uuid:8d89673c-c989-11e1-895a-0b3d632a8a89" || !strings.Contains(r.Reason, "line 13") ||
		!strings.Contains(r.Reason, "expected />") || !bytes.Equal(r.Raw, data) {
		t.Fatalf("reject %+v", r)
	}
}

func TestRejectRawBytes(t *testing.T) {
	for _, name := range []string{"../testdata/pages/feed-rejects.xml", "../testdata/pages/feed-rejects.json"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, parse := range []func([]byte, Format) (*Page, error){ParsePage, ReferencePage} {
			p, err := parse(data, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Rejects) < 9 {
				t.Fatalf("%s: %d rejects", name, len(p.Rejects))
			}
			for _, r := range p.Rejects {
				if r.EntryID != "" && !bytes.Contains(r.Raw, []byte(r.EntryID)) {
					t.Errorf("%s: raw of %s does not hold its id: %q", name, r.EntryID, r.Raw)
				}
				if len(r.Raw) == 0 {
					t.Errorf("%s: reject %s has no raw bytes", name, r.Where())
				}
			}
		}
	}
}

func TestNotAFeed(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "empty"},
		{"   \n", "empty"},
		{"hello", "neither XML nor JSON"},
		{"<html><body/></html>", "root element is <html>, not an Atom feed or entry"},
		{`<feed xmlns="http://example.com/not-atom"/>`, `root element is <feed> in namespace "http://example.com/not-atom", not an Atom feed`},
		{"<feed", "malformed XML"},
		{"[1,2]", `not {"feed":{…}}`},
		{`{"foo":1}`, `not {"feed":{…}}`},
		{`{"feed":{"entry":{}}}`, "is not an array"},
		{`{"feed":`, "malformed JSON"},
		{`{"feed":{}} x`, "malformed JSON"},
	}
	for _, c := range cases {
		_, err := ParsePage([]byte(c.in), FormatAuto)
		var nf *NotFeedError
		if !errors.As(err, &nf) {
			t.Errorf("%q: error %v, want a NotFeedError", c.in, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q does not say %q", c.in, err, c.want)
		}
	}
}

// entryXML builds a one-entry feed around an event and product.
func entryXML(event, product string) []byte {
	return []byte(`<feed xmlns="http://www.w3.org/2005/Atom"><entry><id> urn:uuid:t1 </id><updated>2026-10-01T02:00:00Z</updated>` +
		`<content type="application/xml"><event xmlns="http://docs.rackspace.com/core/event" id="e1" version="1" tenantId="9" ` + event + `>` +
		product + `</event></content></entry></feed>`)
}

const hourly = `type="USAGE" startTime="2026-10-01T00:00:00Z" endTime="2026-10-01T01:00:00Z"`

func product(kind, attrs string) string {
	return fmt.Sprintf(`<product xmlns="http://docs.rackspace.com/usage/cloudbackup/%s" serviceCode="CloudBackup" resourceType="AGENT" %s/>`, kind, attrs)
}

func TestRules(t *testing.T) {
	cases := []struct {
		name           string
		event, product string
		kind           model.Kind
		quantity       uint64
		reject         string
	}{
		{"bandwidthIn", hourly, product("bandwidthIn", `version="1" serverID="1" bandwidthIn="+0018"`), model.KindBandwidthIn, 18, ""},
		{"max unsignedLong", hourly, product("storage", `version="1" serverID="1" storage="18446744073709551615"`), model.KindStorage, 1<<64 - 1, ""},
		{"over unsignedLong", hourly, product("storage", `version="1" serverID="1" storage="18446744073709551616"`), "", 0, "larger than an unsignedLong"},
		{"float quantity", hourly, product("bandwidthOut", `version="1" serverID="1" bandwidthOut="1e3"`), "", 0, "not an unsignedLong"},
		{"empty quantity", hourly, product("bandwidthOut", `version="1" serverID="1" bandwidthOut=""`), "", 0, "not an unsignedLong"},
		{"license v1", hourly, product("license", `version="1" serverID="9445"`), model.KindLicense, 1, ""},
		{"license v1 no server", hourly, product("license", `version="1"`), "", 0, "no serverID"},
		{"snapshot external", `type="USAGE_SNAPSHOT" eventTime="2026-10-01T00:00:00Z"`, product("license", `version="3" serverName="x" external=" true "`), model.KindLicense, 1, ""},
		{"snapshot v2", `type="USAGE_SNAPSHOT" eventTime="2026-10-01T00:00:00Z"`, product("license", `version="2" serverName="x" serverID="5"`), model.KindLicense, 1, ""},
		{"snapshot no time", `type="USAGE_SNAPSHOT"`, product("license", `version="3" serverName="x" serverID="5"`), "", 0, "no eventTime"},
		{"unknown version", hourly, product("storage", `version="7" serverID="1"`), model.KindOther, 0, ""},
		{"unknown product", hourly, `<p xmlns="http://docs.rackspace.com/usage/cloudfiles"/>`, model.KindOther, 0, ""},
		{"summary is not billed", `type="USAGE_SUMMARY" startTime="2026-10-01T00:00:00Z" endTime="2026-10-02T00:00:00Z"`, product("bandwidthIn", `version="1" serverID="1" bandwidthIn="5"`), model.KindOther, 0, ""},
		{"system event", `type="DELETE"`, product("storage", `version="1" serverID="1"`), model.KindOther, 0, ""},
		{"system event without product", `type="INFO"`, "", model.KindOther, 0, ""},
		{"bandwidth snapshot", `type="USAGE_SNAPSHOT" eventTime="2026-10-01T00:00:00Z"`, product("bandwidthIn", `version="1" serverID="1" bandwidthIn="5"`), "", 0, "cannot have event type"},
		{"wrong service", hourly, strings.Replace(product("storage", `version="1" serverID="1" storage="5"`), "CloudBackup", "CloudFiles", 1), "", 0, "serviceCode"},
		{"wrong resource type", hourly, strings.Replace(product("storage", `version="1" serverID="1" storage="5"`), "AGENT", "SERVER", 1), "", 0, "resourceType"},
		{"longer than a day", `type="USAGE" startTime="2026-10-01T00:00:00Z" endTime="2026-10-02T00:00:01Z"`, product("storage", `version="1" serverID="1" storage="5"`), "", 0, "longer than a day"},
		{"offset time", `type="USAGE" startTime="2026-10-01T02:00:00+02:00" endTime="2026-10-01T01:00:00Z"`, product("storage", `version="1" serverID="1" storage="5"`), model.KindStorage, 5, ""},
		{"duplicate attribute", hourly, product("storage", `version="1" serverID="1" storage="5" storage="6"`), "", 0, "twice"},
		{"non-ASCII name", `type="USAGE_SNAPSHOT" eventTime="2026-10-01T00:00:00Z"`, product("license", `version="3" serverName="Zürich—東京 ☃" serverID="7"`), model.KindLicense, 1, ""},
		{"entity in value", hourly, product("storage", `version="1" serverID="a&amp;b" storage="5"`), model.KindStorage, 5, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := entryXML(c.event, c.product)
			p, err := ParsePage(data, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := ReferencePage(data, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			samePage(t, c.name, p, ref)
			e, ok := oneOutcome(t, p, c.reject)
			if !ok {
				return
			}
			if e.Kind != c.kind || e.Quantity != c.quantity || e.EntryID != "urn:uuid:t1" {
				t.Fatalf("got kind %s quantity %d entry %q", e.Kind, e.Quantity, e.EntryID)
			}
		})
	}
}

// oneOutcome checks that p holds one entry, urn:uuid:t1: a reject that says
// reject when reject is set, else an event, which it returns (ok).
func oneOutcome(t *testing.T, p *Page, reject string) (e model.Event, ok bool) {
	t.Helper()
	if reject != "" {
		if len(p.Events) != 0 || len(p.Rejects) != 1 || !strings.Contains(p.Rejects[0].Reason, reject) {
			t.Fatalf("%d events, rejects %+v; want one reject saying %q", len(p.Events), p.Rejects, reject)
		}
		if p.Rejects[0].EntryID != "urn:uuid:t1" {
			t.Fatalf("reject names %q, want the trimmed entry id", p.Rejects[0].EntryID)
		}
		return e, false
	}
	if len(p.Events) != 1 || len(p.Rejects) != 0 {
		t.Fatalf("%d events, rejects %+v; want one event", len(p.Events), p.Rejects)
	}
	return p.Events[0], true
}

// FuzzParseXML holds the fast path equal to the reference on any input,
// checks that nothing panics, and that no entry of a well-formed page is
// lost silently.
func FuzzParseXML(f *testing.F) {
	for _, name := range testdataFiles(f) {
		if strings.HasSuffix(name, ".xml") {
			data, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add(entryXML(hourly, product("storage", `version="1" serverID="1" storage="5"`)))
	f.Add(entryXML(`type="USAGE_SNAPSHOT" eventTime="2026-10-01T00:00:00Z"`, product("license", `version="3" serverName="Zürich ☃" serverID="7"`)))
	seeds, _ := twinSeeds()
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPage(t, data, FormatXML)
	})
}

// FuzzParseJSON is FuzzParseXML for JSON pages.
func FuzzParseJSON(f *testing.F) {
	for _, name := range testdataFiles(f) {
		if strings.HasSuffix(name, ".json") {
			data, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	_, seeds := twinSeeds()
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPage(t, data, FormatJSON)
	})
}

func checkPage(t *testing.T, data []byte, f Format) {
	ref, refErr := ReferencePage(data, f)
	got, ok := fast(data, f)
	if ok {
		if refErr != nil {
			t.Fatalf("fast parser accepted what the reference calls %v", refErr)
		}
		samePage(t, "fuzz", got, ref)
	}
	pub, err := ParsePage(data, f)
	if (err == nil) != (refErr == nil) {
		t.Fatalf("ParsePage error %v, reference %v", err, refErr)
	}
	if err != nil {
		return
	}
	samePage(t, "fuzz", pub, ref)
	if pub.Entries != len(pub.Events)+len(pub.Rejects) {
		t.Fatalf("Entries %d != %d events + %d rejects", pub.Entries, len(pub.Events), len(pub.Rejects))
	}
	for i := range pub.Events {
		e := &pub.Events[i]
		if err := e.Validate(); err != nil {
			t.Fatalf("event %s is invalid: %v", e.EntryID, err)
		}
		var back model.Event
		if err := back.UnmarshalJSON(e.AppendJSON(nil)); err != nil || !reflect.DeepEqual(back, *e) {
			t.Fatalf("event does not round-trip through JSON (%v):\n%+v\n%+v", err, back, *e)
		}
	}
	for _, r := range pub.Rejects {
		if r.Reason == "" {
			t.Fatalf("reject %s has no reason", r.Where())
		}
	}
	if f == FormatXML && pub.Recovered == "" {
		// A well-formed page: every atom:entry is an event or a reject.
		doc := etree.NewDocument()
		if err := doc.ReadFromBytes(data); err == nil && doc.Root() != nil && !pub.Entry {
			n := 0
			for _, c := range doc.Root().ChildElements() {
				if c.Tag == "entry" && c.NamespaceURI() == model.NSAtom {
					n++
				}
			}
			if n != pub.Entries {
				t.Fatalf("%d atom:entry elements but %d entries parsed", n, pub.Entries)
			}
		}
	}
}

// Real pages declare the atom prefix on each entry, not on the feed: the
// recovery of a broken entry must find those entries too.
func TestBrokenEntryWithPrefixDeclaredOnIt(t *testing.T) {
	data, err := os.ReadFile("../testdata/pages/feed-head.xml")
	if err != nil {
		t.Fatal(err)
	}
	broken := bytes.Replace(data, []byte(`version="1"/>
      </e:event>`), []byte(`version="1"/
      </e:event>`), 1)
	if bytes.Equal(broken, data) {
		t.Fatal("the sample changed: nothing was broken")
	}
	for _, parse := range []func([]byte, Format) (*Page, error){ParsePage, ReferencePage} {
		p, err := parse(broken, FormatAuto)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) != 4 || len(p.Rejects) != 1 || p.Rejects[0].Index != 1 ||
			p.Rejects[0].EntryID != "urn:uuid:4a1f6a62-0f1e-4c57-8d55-1b0a8c6d0002" {
			t.Fatalf("%d events, rejects %+v", len(p.Events), p.Rejects)
		}
		if p.Links.Next == "" || p.Links.Last == "" {
			t.Fatalf("links lost: %+v", p.Links)
		}
	}
}

func TestFastPathTakesUTF8(t *testing.T) {
	data := entryXML(`type="USAGE_SNAPSHOT" eventTime="2026-10-01T00:00:00Z"`, product("license", `version="3" serverName="Zürich ☃" serverID="7"`))
	p, ok := fast(data, FormatXML)
	if !ok || len(p.Events) != 1 || p.Events[0].ServerName != "Zürich ☃" {
		t.Fatalf("fast path on UTF-8: ok=%v %+v", ok, p)
	}
	for _, bad := range [][]byte{[]byte("Z\xffrich"), []byte("Z\uFFFErich")} {
		d := bytes.Replace(data, []byte("Zürich"), bad, 1)
		if _, ok := fast(d, FormatXML); ok {
			t.Errorf("fast path took %q", bad)
		}
	}
}

// TestBrokenJSONEntryCostsOnlyItself: a JSON page one of whose entries is
// not valid JSON is read entry by entry, as a broken XML entry is: that
// entry is a reject with its id, reason and bytes, every other entry the
// event it is on the intact page, the links read. A page cut short, or
// broken outside its entries, is still not a feed.
func TestBrokenJSONEntryCostsOnlyItself(t *testing.T) {
	data, err := os.ReadFile("../testdata/pages/feed-head.json")
	if err != nil {
		t.Fatal(err)
	}
	whole, err := ParsePage(data, FormatJSON)
	if err != nil || len(whole.Events) != 5 {
		t.Fatalf("intact page: %v, %d events", err, len(whole.Events))
	}
	spans := jsonEntrySpans(data)
	if open, close, loose, ok := looseJSON(data); !ok || !reflect.DeepEqual(loose, spans) || data[open] != '[' || data[close] != ']' {
		t.Fatalf("looseJSON on a valid page: %v %v, want the entries %v", ok, loose, spans)
	}
	second := data[spans[1][0]:spans[1][1]]
	for _, c := range []struct{ name, from, to string }{
		{"trailing comma", "", ""},
		{"bare word", `"CloudBackup"`, `CloudBackup`},
		{"missing value", `"resourceType":`, `"resourceType":,`},
	} {
		broken := bytes.Replace(second, []byte(c.from), []byte(c.to), 1)
		if c.from == "" {
			broken = append(bytes.TrimRight(slices.Clone(second[:len(second)-1]), " \n"), ",}"...)
		} else if bytes.Equal(broken, second) {
			t.Fatalf("%s: %s not in the entry", c.name, c.from)
		}
		page := slices.Concat(data[:spans[1][0]], broken, data[spans[1][1]:])
		for _, parse := range []func([]byte, Format) (*Page, error){ParsePage, ReferencePage} {
			p, err := parse(page, FormatAuto)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(p.Events) != 4 || len(p.Rejects) != 1 || p.Entries != 5 || !strings.HasPrefix(p.Recovered, "malformed JSON") {
				t.Fatalf("%s: %d events, %d rejects, recovered %q", c.name, len(p.Events), len(p.Rejects), p.Recovered)
			}
			r := p.Rejects[0]
			if r.Index != 1 || r.EntryID != whole.Events[1].EntryID || !strings.HasPrefix(r.Reason, "malformed JSON") || !bytes.Equal(r.Raw, broken) {
				t.Errorf("%s: reject %+v, want entry 1 (%s) with its bytes", c.name, r, whole.Events[1].EntryID)
			}
			if !reflect.DeepEqual(p.Events, slices.Delete(slices.Clone(whole.Events), 1, 2)) || !reflect.DeepEqual(p.Indexes, []int{0, 2, 3, 4}) {
				t.Errorf("%s: the other entries differ from the intact page's", c.name)
			}
			if p.Links != whole.Links {
				t.Errorf("%s: links %+v, want %+v", c.name, p.Links, whole.Links)
			}
		}
		var nf *NotFeedError
		if _, err := ParsePage(page[:len(page)-10], FormatJSON); !errors.As(err, &nf) {
			t.Errorf("%s, cut short: %v, want not a feed", c.name, err)
		}
	}
	entry := func(i int) []byte { return data[spans[i][0]:spans[i][1]] }
	trailingComma := func(i int) []byte {
		return append(bytes.TrimRight(slices.Clone(entry(i)[:len(entry(i))-1]), " \n"), ",}"...)
	}
	// No comma between entries 0 and 1, a trailing comma in entry 3: an
	// entry ends at its bracket, so 0 and 1 are events, 3 alone a reject
	// with its own bytes (every prefix of this page is not a feed: a page
	// cut short is fetched again, never half read).
	page := slices.Concat(data[:spans[0][1]], []byte("\n"), data[spans[1][0]:spans[3][0]], trailingComma(3), data[spans[3][1]:])
	p, err := ParsePage(page, FormatJSON)
	if err != nil || len(p.Events) != 4 || len(p.Rejects) != 1 || p.Rejects[0].Index != 3 ||
		p.Rejects[0].EntryID != whole.Events[3].EntryID || !bytes.Equal(p.Rejects[0].Raw, trailingComma(3)) {
		t.Fatalf("a missing comma and a broken entry: %v, %d events, rejects %+v", err, len(p.Events), p.Rejects)
	}
	end := len(bytes.TrimRight(page, " \r\n\t"))
	for n := range end {
		var nf *NotFeedError
		if _, err := ParsePage(page[:n], FormatJSON); !errors.As(err, &nf) {
			t.Fatalf("the first %d of %d bytes: %v, want not a feed", n, end, err)
		}
	}
	// Not recovered: broken outside the entries; brackets that do not
	// balance; an unescaped quote in two entries (strings turned inside
	// out between them, so one cut would hold four entries); a second
	// "entry" array.
	oddQuote := func(i int) []byte { return bytes.Replace(entry(i), []byte(`"DFW1"`), []byte(`"DF"W1"`), 1) }
	for _, page := range [][]byte{
		bytes.Replace(data, []byte(`"rel": "current"`), []byte(`"rel": current`), 1),
		slices.Concat(data[:spans[1][0]], []byte(`{"id":"urn:uuid:x","content":{`), data[spans[1][1]:]),
		slices.Concat(data[:spans[0][0]], oddQuote(0), data[spans[0][1]:spans[3][0]], oddQuote(3), data[spans[3][1]:]),
		slices.Concat(data[:spans[0][0]], trailingComma(0), []byte(","), entry(1), []byte(`], "entry": [`), data[spans[2][0]:]),
	} {
		var nf *NotFeedError
		if _, err := ParsePage(page, FormatJSON); !errors.As(err, &nf) {
			t.Errorf("%.60q…: %v, want not a feed", page, err)
		}
	}
}

// jsonEntrySpans returns the byte ranges of the entries of a valid JSON feed
// page (nil when it is not one) by the strict scanner: what looseJSON,
// which cuts the entries of pages valid or not, is held to on valid pages.
func jsonEntrySpans(data []byte) [][2]int {
	s := jscanner{b: data, page: string(data)}
	var spans [][2]int
	for key := range s.object {
		if key != "feed" || s.kind() != jObject {
			if !s.skip() {
				return nil
			}
			continue
		}
		for key := range s.object {
			if key != "entry" || s.kind() != jArray {
				if !s.skip() {
					return nil
				}
				continue
			}
			for range s.array {
				s.ws()
				start := s.i
				if !s.skip() {
					return nil
				}
				spans = append(spans, [2]int{start, s.i})
			}
			return spans
		}
	}
	return nil
}
