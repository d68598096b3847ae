package ingest

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/feedmeter/feedmeter/model"
)

// field is one attribute (XML) or member (JSON) of an event or product.
type field struct{ name, value string }

// twin describes one entry that renders as XML and as JSON alike: a field
// given twice is a repeated attribute in XML and a repeated member in JSON.
type twin struct {
	id        string
	event     []field
	productNS string // "" for no product
	product   []field
}

// fields builds a field list from name, value pairs.
func fields(kv ...string) []field {
	out := make([]field, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, field{kv[i], kv[i+1]})
	}
	return out
}

// with returns the fields with name set to value (added when absent);
// value "-" removes name.
func with(fs []field, kv ...string) []field {
	fs = slices.Clone(fs)
	for i := 0; i+1 < len(kv); i += 2 {
		name, value := kv[i], kv[i+1]
		k := slices.IndexFunc(fs, func(f field) bool { return f.name == name })
		switch {
		case value == "-" && k >= 0:
			fs = slices.Delete(fs, k, k+1)
		case value == "-":
		case k >= 0:
			fs[k].value = value
		default:
			fs = append(fs, field{name, value})
		}
	}
	return fs
}

// usageTwin is an hourly bandwidthIn v1 usage event of tenant 9.
func usageTwin() twin {
	return twin{
		id: "urn:uuid:t1",
		event: fields("id", "e1", "type", "USAGE", "version", "1", "tenantId", "9", "region", "DFW", "dataCenter", "DFW1",
			"resourceId", "r1", "startTime", "2026-10-01T00:00:00Z", "endTime", "2026-10-01T01:00:00Z"),
		productNS: model.NSCloudBackup + "bandwidthIn",
		product:   fields("serviceCode", "CloudBackup", "resourceType", "AGENT", "version", "1", "serverID", "1", "bandwidthIn", "5"),
	}
}

// snapshotTwin is a license snapshot (USAGE_SNAPSHOT) of tenant 9.
func snapshotTwin() twin {
	t := usageTwin()
	t.event = with(t.event, "type", "USAGE_SNAPSHOT", "startTime", "-", "endTime", "-", "eventTime", "2026-10-01T00:00:00Z")
	t.productNS = model.NSCloudBackup + "license"
	t.product = fields("serviceCode", "CloudBackup", "resourceType", "AGENT", "version", "3", "serverID", "7", "serverName", "db")
	return t
}

// xmlAttrValue escapes s for a double-quoted attribute; white space other
// than the space becomes a character reference, which XML keeps as is.
func xmlAttrValue(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;",
		"\t", "&#9;", "\n", "&#10;", "\r", "&#13;").Replace(s)
}

func (t twin) xml() string {
	var b strings.Builder
	b.WriteString("<entry><id>" + strings.NewReplacer("&", "&amp;", "<", "&lt;", "\r", "&#13;").Replace(t.id) + "</id>")
	b.WriteString(`<updated>2026-10-01T02:00:00Z</updated><content type="application/xml"><event xmlns="` + model.NSEvent + `"`)
	for _, f := range t.event {
		b.WriteString(" " + f.name + `="` + xmlAttrValue(f.value) + `"`)
	}
	b.WriteString(">")
	if t.productNS != "" {
		b.WriteString(`<product xmlns="` + xmlAttrValue(t.productNS) + `"`)
		for _, f := range t.product {
			b.WriteString(" " + f.name + `="` + xmlAttrValue(f.value) + `"`)
		}
		b.WriteString("/>")
	}
	b.WriteString("</event></content></entry>")
	return b.String()
}

// jsonNumber matches what may be written as a JSON number and read back as
// the same text.
func jsonNumber(s string) bool {
	if s == "" || s == "0" {
		return s == "0"
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' || (i == 0 && s[i] == '0') {
			return false
		}
	}
	return true
}

// jsonString writes s as a JSON string, <, > and & as they are (escapes
// send the fast path aside).
func jsonString(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func jsonMembers(b *strings.Builder, fs []field) {
	for _, f := range fs {
		v := jsonString(f.value)
		if (f.name == "bandwidthIn" || f.name == "bandwidthOut" || f.name == "storage") && jsonNumber(f.value) {
			v = f.value // quantities as numbers, as the real feed writes them
		}
		b.WriteString("," + jsonString(f.name) + ":" + v)
	}
}

func (t twin) json() string {
	var b strings.Builder
	b.WriteString(`{"id":` + jsonString(t.id) + `,"updated":"2026-10-01T02:00:00Z","content":{"event":{"@type":` + jsonString(model.NSEvent))
	jsonMembers(&b, t.event)
	if t.productNS != "" {
		b.WriteString(`,"product":{"@type":` + jsonString(t.productNS))
		jsonMembers(&b, t.product)
		b.WriteString("}")
	}
	b.WriteString("}}}")
	return b.String()
}

// twinPages renders entries as an XML feed page and its JSON twin.
func twinPages(entries ...twin) (xmlPage, jsonPage []byte) {
	var x, j strings.Builder
	x.WriteString(`<feed xmlns="` + model.NSAtom + `">`)
	j.WriteString(`{"feed":{"entry":[`)
	for i, t := range entries {
		x.WriteString(t.xml())
		if i > 0 {
			j.WriteString(",")
		}
		j.WriteString(t.json())
	}
	x.WriteString("</feed>")
	j.WriteString("]}}")
	return []byte(x.String()), []byte(j.String())
}

// parseTwins parses both renderings with ParsePage and the reference, holds
// the four equal (events, and rejects by entry and index) and returns the
// XML page.
func parseTwins(t testing.TB, entries ...twin) *Page {
	t.Helper()
	x, j := twinPages(entries...)
	var pages []*Page
	for _, data := range [][]byte{x, j} {
		p, err := ParsePage(data, FormatAuto)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		ref, err := ReferencePage(data, FormatAuto)
		if err != nil {
			t.Fatalf("%s: reference: %v", data, err)
		}
		samePage(t, p.Format.String(), p, ref)
		pages = append(pages, p)
	}
	xp, jp := comparable(pages[0]), comparable(pages[1])
	xp.Format, jp.Format = 0, 0
	if !reflect.DeepEqual(xp, jp) {
		t.Fatalf("XML and JSON twins differ:\n xml %+v\njson %+v\nrejects %v / %v\n%s\n%s", xp, jp, pages[0].Rejects, pages[1].Rejects, x, j)
	}
	return pages[0]
}

// TestCUFRules: the rules core.xsd asserts of usage events, held the same
// in XML and JSON, on the fast path and the reference.
func TestCUFRules(t *testing.T) {
	other := func(tw twin) twin {
		tw.productNS = "http://docs.rackspace.com/usage/cloudfiles"
		tw.product = fields("serviceCode", "CloudFiles", "version", "1")
		return tw
	}
	summary := func(tw twin) twin {
		tw.event = with(tw.event, "type", "USAGE_SUMMARY")
		return tw
	}
	u, s := usageTwin(), snapshotTwin()
	ev := func(tw twin, kv ...string) twin {
		tw.event = with(tw.event, kv...)
		return tw
	}
	day := func(d int, clock string) string {
		return time.Date(2026, 10, d, 0, 0, 0, 0, time.UTC).Format("2006-01-02") + "T" + clock
	}
	cases := []struct {
		name   string
		entry  twin
		kind   model.Kind
		reject string // "" = an event
		check  func(e model.Event) bool
	}{
		{"usage", u, model.KindBandwidthIn, "", nil},
		{"eventTime and startTime", ev(u, "eventTime", day(1, "00:00:00Z")), "", "eventTime and also startTime or endTime", nil},
		{"snapshot with startTime", ev(s, "startTime", day(1, "00:00:00Z")), "", "eventTime and also startTime or endTime", nil},
		{"snapshot with endTime", ev(s, "endTime", day(1, "01:00:00Z")), "", "eventTime and also startTime or endTime", nil},
		{"usage with eventTime only", ev(u, "startTime", "-", "endTime", "-", "eventTime", day(1, "00:00:00Z")), "", "USAGE event has no startTime", nil},
		{"startTime without endTime", ev(u, "endTime", "-"), "", "has startTime but no endTime", nil},
		{"endTime without startTime", ev(summary(u), "startTime", "-"), "", "has endTime but no startTime", nil},
		{"no time at all", ev(summary(u), "startTime", "-", "endTime", "-"), "", "neither eventTime nor startTime and endTime", nil},
		{"start equals end", ev(u, "endTime", day(1, "00:00:00Z")), "", "is not before endTime", nil},
		{"longer than a day", ev(u, "endTime", day(2, "00:00:01Z")), "", "longer than a day", nil},
		{"a day across midnight, version 1", ev(u, "startTime", day(1, "12:00:00Z"), "endTime", day(2, "12:00:00Z")), model.KindBandwidthIn, "", nil},
		{"version 2 beyond midnight", ev(u, "version", "2", "startTime", day(1, "23:00:00Z"), "endTime", day(2, "01:00:00Z")), "", "beyond midnight", nil},
		{"version 10 beyond midnight", ev(u, "version", "+10", "startTime", day(1, "23:00:00Z"), "endTime", day(2, "00:00:01Z")), "", "beyond midnight", nil},
		{"version 2 to midnight", ev(u, "version", "2", "startTime", day(1, "23:00:00Z"), "endTime", day(2, "00:00:00Z")), model.KindBandwidthIn, "", nil},
		{"version 2 to 24:00:00", ev(u, "version", "2", "startTime", day(1, "00:00:00Z"), "endTime", day(1, "24:00:00Z")), model.KindBandwidthIn, "",
			func(e model.Event) bool { return e.EndTime.Equal(time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC)) }},
		{"version 2 within a day", ev(u, "version", "2", "startTime", day(1, "01:00:00Z"), "endTime", day(1, "02:00:00Z")), model.KindBandwidthIn, "", nil},
		{"version not an integer", ev(u, "version", "2.0"), "", `version "2.0" is not an integer`, nil},
		{"other product: eventTime and startTime", ev(other(u), "eventTime", day(1, "00:00:00Z")), "", "eventTime and also startTime or endTime", nil},
		{"other product: longer than a day", ev(other(u), "endTime", day(3, "00:00:00Z")), "", "longer than a day", nil},
		{"other product: version 2 beyond midnight", ev(other(u), "version", "2", "startTime", day(1, "23:00:00Z"), "endTime", day(2, "01:00:00Z")), "", "beyond midnight", nil},
		{"other product: no tenant", ev(other(u), "tenantId", "-"), "", "no tenantId", nil},
		{"other product: valid", other(u), model.KindOther, "", nil},
		{"summary of three days", ev(summary(u), "endTime", day(4, "00:00:00Z")), model.KindOther, "", nil},
		{"summary with eventTime and endTime", ev(summary(u), "startTime", "-", "eventTime", day(1, "00:00:00Z")), "", "eventTime and also startTime or endTime", nil},
		{"summary without tenant", ev(summary(u), "tenantId", "-"), "", "no tenantId", nil},
		{"system event without times", ev(u, "type", "DELETE", "startTime", "-", "endTime", "-", "tenantId", "-"), model.KindOther, "", nil},
		{"usage with a severity", ev(u, "severity", "INFO"), "", "severity", nil},
		{"system event with a severity", ev(u, "type", "UP", "severity", "INFO"), model.KindOther, "", nil},
		{"referenceId", ev(u, "referenceId", " e0 "), model.KindBandwidthIn, "",
			func(e model.Event) bool { return e.ReferenceID == "e0" }},
		{"referenceId is the event's own id", ev(u, "referenceId", "e1 "), "", `referenceId "e1" is the event's own id`, nil},
		{"other product: referenceId is its own id", ev(other(u), "referenceId", "e1"), "", "is the event's own id", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, ok := oneOutcome(t, parseTwins(t, c.entry), c.reject)
			if !ok {
				return
			}
			if e.Kind != c.kind {
				t.Fatalf("kind %s, want %s", e.Kind, c.kind)
			}
			if c.check != nil && !c.check(e) {
				t.Fatalf("event %s", e.AppendJSON(nil))
			}
		})
	}
}

// twinSeeds are pages, each in XML and its JSON twin, of the cases of
// issue 16: 24:00:00 and the UTC zones, long fractions, corrections,
// version 2 and midnight, eventTime beside startTime, a repeated field.
func twinSeeds() (xmlPages, jsonPages [][]byte) {
	u, s := usageTwin(), snapshotTwin()
	ev := func(tw twin, kv ...string) twin {
		tw.event = with(tw.event, kv...)
		return tw
	}
	repeated := usageTwin()
	repeated.event = append(repeated.event, field{"tenantId", "10"})
	for _, entries := range [][]twin{
		{ev(u, "endTime", "2026-10-01T24:00:00Z"), ev(u, "startTime", "2026-10-01T23:00:00+00:00", "endTime", "2026-10-01T24:00:00.000-00:00")},
		{ev(u, "startTime", "2026-10-01T00:00:00.1234567890000Z"), ev(u, "startTime", "2026-10-01T00:00:00.1234567891Z")},
		{ev(u, "referenceId", "e0"), ev(u, "referenceId", "e1")},
		{ev(u, "version", "2", "startTime", "2026-10-01T23:00:00Z", "endTime", "2026-10-02T01:00:00Z"),
			ev(u, "version", "2", "startTime", "2026-10-01T23:00:00Z", "endTime", "2026-10-02T00:00:00Z")},
		{ev(u, "eventTime", "2026-10-01T00:00:00Z"), ev(s, "startTime", "2026-10-01T00:00:00Z"), ev(s, "eventTime", "2026-10-01T24:00:00-00:00")},
		{repeated, u},
	} {
		x, j := twinPages(entries...)
		xmlPages, jsonPages = append(xmlPages, x), append(jsonPages, j)
	}
	// A member given twice in JSON; bytes that are not UTF-8 in two ids
	// that differ in nothing else; a lone surrogate.
	_, j := twinPages(u, u)
	jsonPages = append(jsonPages,
		[]byte(strings.Replace(string(j), `"bandwidthIn":5`, `"bandwidthIn":1,"bandwidthIn":999999999999`, 1)),
		[]byte(strings.Replace(strings.Replace(string(j), "t1", "t\xff", 1), "t1", "t\xfe", 1)),
		[]byte(strings.Replace(string(j), "t1", `t\ud800`, 1)))
	x, _ := twinPages(u, u)
	xmlPages = append(xmlPages, []byte(strings.Replace(strings.Replace(string(x), "t1", "t\xff", 1), "t1", "t\xfe", 1)))
	return xmlPages, jsonPages
}

// xmlCarries reports whether s can be written in an XML attribute at all
// (as text or a character reference).
func xmlCarries(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xfffe || r == 0xffff {
			return false
		}
	}
	return true
}

// FuzzTwins holds XML and JSON to one meaning: an entry built from the
// fuzzed fields, written in both, gives the same event or a reject of the
// same entry, on the fast path and the reference alike.
func FuzzTwins(f *testing.F) {
	f.Add("USAGE", "1", "2026-10-01T00:00:00Z", "2026-10-01T01:00:00Z", "", "9", "e1", "", "5", uint8(0))
	f.Add("USAGE", "2", "2026-10-01T23:00:00+00:00", "2026-10-01T24:00:00-00:00", "", "9", "e1", "e0", "18446744073709551615", uint8(0))
	f.Add("USAGE", "+02", "2026-10-01T23:00:00Z", "2026-10-02T00:00:00.5Z", "2026-10-01T00:00:00Z", " 9 ", "e1", "e1", "07", uint8(1<<twinRepeat))
	f.Add("USAGE_SNAPSHOT", "1", "", "", "2026-10-01T24:00:00.000000000000Z", "9", "e1", "", "", uint8(1<<twinSnapshot|1<<twinNoStart|1<<twinNoEnd))
	f.Add("USAGE_SUMMARY", "1", "2026-10-01T00:00:00.1234567891Z", "2026-10-04T00:00:00Z", "", "9", "e1", "", "5", uint8(1<<twinOther))
	f.Add("DELETE", "x", "", "", "", "", "", "", "", uint8(1<<twinNoStart|1<<twinNoEnd|1<<twinSeverity))
	f.Fuzz(func(t *testing.T, typ, version, start, end, eventTime, tenant, eventID, ref, quantity string, flags uint8) {
		for _, v := range []string{typ, version, start, end, eventTime, tenant, eventID, ref, quantity} {
			if !xmlCarries(v) {
				t.Skip("XML cannot carry it")
			}
		}
		tw := usageTwin()
		if flags&(1<<twinSnapshot) != 0 {
			tw = snapshotTwin()
		}
		if flags&(1<<twinOther) != 0 {
			tw.productNS = "http://docs.rackspace.com/usage/cloudfiles"
		}
		set := func(name, value string, drop bool) {
			if drop {
				value = "-"
			}
			tw.event = with(tw.event, name, value)
		}
		set("type", typ, false)
		set("version", version, false)
		set("startTime", start, flags&(1<<twinNoStart) != 0)
		set("endTime", end, flags&(1<<twinNoEnd) != 0)
		set("eventTime", eventTime, eventTime == "")
		set("tenantId", tenant, tenant == "")
		set("id", eventID, false)
		set("referenceId", ref, ref == "")
		set("severity", "INFO", flags&(1<<twinSeverity) == 0)
		if flags&(1<<twinRepeat) != 0 {
			tw.event = append(tw.event, field{"tenantId", tenant + "0"})
		}
		if k := slices.IndexFunc(tw.product, func(f field) bool { return f.name == "bandwidthIn" }); k >= 0 {
			tw.product[k].value = quantity
		}
		p := parseTwins(t, tw)
		for _, e := range p.Events {
			if err := e.Validate(); err != nil {
				t.Fatalf("event %s is invalid: %v", e.AppendJSON(nil), err)
			}
		}
	})
}

// The flags of FuzzTwins.
const (
	twinSnapshot = iota // a license snapshot rather than bandwidthIn usage
	twinOther           // an unknown product
	twinNoStart         // no startTime
	twinNoEnd           // no endTime
	twinSeverity        // a severity
	twinRepeat          // tenantId given twice
)
