package feedsim

import (
	"unicode/utf8"

	"github.com/feedmeter/feedmeter/model"
)

// Rendering is by hand, appending to a byte slice: a page of 1,000 entries
// is about 1.3 MB of XML and must take a few milliseconds. The shapes follow
// the seed samples (testdata/seed/) and real Atom Hopper pages: the feed in
// the Atom default namespace, each entry an atom:entry that declares its own
// prefix, the event in the core event namespace and its product in a
// cloudbackup namespace with the seed's prefixes. Attributes are written in
// the seed's order. JSON keys are sorted, "/" is escaped as "\/", numbers
// and booleans are bare, serverID is a string.

// variant is how an entry is served.
type variant uint8

const (
	vGood      variant = iota
	vBroken            // XML not well-formed (the seed's "/" without ">"); JSON: product or event is a string
	vMissing           // a required attribute is missing
	vWrongType         // an attribute has a value of the wrong type
)

var variantNames = [...]string{"", "broken", "missing", "wrong-type"}

const (
	variantKey    = 0x76617269616e7400
	whitespaceKey = 0x7768697465737063
	eventIDKey    = 0x6576656e74696400
)

// malformedVariant picks the fault of a malformed entry from its id.
func malformedVariant(e *entry) variant {
	v := variant(1 + e.id.hash(variantKey)%3)
	if v == vMissing && (e.kind == kSystem || e.kind == kServer || e.summary()) {
		// System events and summaries have no attribute whose absence the
		// schema rejects.
		v = vWrongType
	}
	return v
}

// renderer holds what is the same for every entry of one response.
type renderer struct {
	f         *feed
	hrefXML   string // "<base>/<feed>/entries/urn:uuid:" escaped for XML
	hrefJSON  string // the same as the inside of a JSON string
	threshold uint64 // malformed hash threshold
	record    bool   // record malformed decisions (a real serving)
}

func newRenderer(f *feed, base string, threshold uint64) *renderer {
	href := base + "/" + f.name + "/entries/urn:uuid:"
	return &renderer{
		f: f, threshold: threshold, record: true,
		hrefXML:  string(appendXMLAttr(nil, href)),
		hrefJSON: string(appendJSONInner(nil, href)),
	}
}

func (r *renderer) variant(i int) variant {
	if !r.f.malformed(i, r.threshold, r.record) {
		return vGood
	}
	return malformedVariant(&r.f.entries[i])
}

const (
	xmlHeader   = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	nsCloud     = "http://docs.rackspace.com/usage/cloudbackup/"
	nsEvent     = "http://docs.rackspace.com/core/event"
	nsAtomJSON  = `http:\/\/www.w3.org\/2005\/Atom`
	nsEventJSON = `http:\/\/docs.rackspace.com\/core\/event`
	nsCloudJSON = `http:\/\/docs.rackspace.com\/usage\/cloudbackup\/`
)

// rid is the entry's resource id: the agent's, or for a Nova event its
// server's.
func rid(e *entry, ag *agent) string {
	if e.kind == kServer {
		return ag.serverID
	}
	return ag.rid
}

// spaced reports whether the entry's atom:id and atom:updated carry white
// space around their text in XML, as some real entries do (one entry in
// eight, by id).
func spaced(e *entry) bool { return e.id.hash(whitespaceKey)%8 == 0 }

// appendEntryXML appends entry i as an atom:entry element.
func (r *renderer) appendEntryXML(b []byte, i int) []byte {
	f := r.f
	e := &f.entries[i]
	t := f.tenant
	ag := t.agents[e.agent]
	v := r.variant(i)
	ws := spaced(e)
	b = append(b, "  <atom:entry xmlns:atom=\"http://www.w3.org/2005/Atom\" xmlns=\"http://www.w3.org/2001/XMLSchema\">\n    <atom:id>"...)
	if ws {
		b = append(b, ' ')
	}
	b = append(b, "urn:uuid:"...)
	b = e.id.appendTo(b)
	if ws {
		b = append(b, ' ')
	}
	b = append(b, "</atom:id>\n    <atom:category term=\"tid:"...)
	b = append(b, t.id...)
	b = append(b, "\"/>\n    <atom:category term=\"rgn:"...)
	b = append(b, t.region...)
	b = append(b, "\"/>\n    <atom:category term=\"dc:"...)
	b = append(b, t.dc...)
	b = append(b, "\"/>\n    <atom:category term=\"rid:"...)
	b = append(b, rid(e, ag)...)
	term := e.term()
	b = append(b, "\"/>\n    <atom:category term=\""...)
	b = append(b, term...)
	b = append(b, "\"/>\n    <atom:category term=\"type:"...)
	b = append(b, term...)
	b = append(b, "\"/>\n    <atom:content type=\"application/xml\">\n      "...)
	switch e.kind {
	case kSnapshot:
		b = r.appendSnapshotXML(b, e, ag, f.linkOf(e), v)
	case kSystem:
		b = r.appendSystemXML(b, e, ag, v)
	case kServer:
		b = r.appendServerXML(b, e, v)
	default:
		b = r.appendUsageXML(b, e, ag, f.linkOf(e), v)
	}
	b = append(b, "\n    </atom:content>\n    <atom:link href=\""...)
	b = append(b, r.hrefXML...)
	b = e.id.appendTo(b)
	b = append(b, "\" rel=\"self\"/>\n    <atom:updated>"...)
	if ws {
		b = append(b, ' ')
	}
	b = appendMilli(b, e.published)
	if ws {
		b = append(b, ' ')
	}
	b = append(b, "</atom:updated>\n    <atom:published>"...)
	b = appendMilli(b, e.published)
	return append(b, "</atom:published>\n  </atom:entry>\n"...)
}

// appendEventNS appends the start of an event start tag: its name and
// namespace declarations.
func appendEventNS(b []byte, k kind) []byte {
	b = append(b, "<event xmlns=\""+nsEvent+"\""...)
	if p := kinds[k].product; p != "" {
		b = append(b, " xmlns:"...)
		b = append(b, kinds[k].prefix...)
		b = append(b, "=\""+nsCloud...)
		b = append(b, p...)
		b = append(b, '"')
	}
	return b
}

func (r *renderer) appendUsageXML(b []byte, e *entry, ag *agent, l cufLink, v variant) []byte {
	t := r.f.tenant
	b = appendEventNS(b, e.kind)
	b = append(b, " dataCenter=\""...)
	b = append(b, t.dc...)
	if e.summary() {
		b = append(b, "\" duration=\""...)
		b = appendDuration(b, e.dur)
	}
	b = append(b, "\" endTime=\""...)
	b = appendEnd(b, e)
	b = append(b, "\" environment=\"PROD\" id=\""...)
	b = l.eventID().appendTo(b)
	if l.ref != (uuid{}) {
		b = append(b, "\" referenceId=\""...)
		b = l.ref.appendTo(b)
	}
	b = append(b, "\" region=\""...)
	b = append(b, t.region...)
	b = append(b, "\" resourceId=\""...)
	b = append(b, ag.rid...)
	b = append(b, "\" startTime=\""...)
	b = appendStart(b, e, wrongStart(e, v))
	b = append(b, "\" tenantId=\""...)
	b = append(b, t.id...)
	b = append(b, "\" type=\""...)
	b = append(b, e.usageType()...)
	b = append(b, "\" version=\"1\">\n        <"...)
	b = append(b, kinds[e.kind].prefix...)
	b = append(b, ":product"...)
	attr := kinds[e.kind].product
	value := func(b []byte) []byte {
		if v == vMissing {
			return b
		}
		b = append(b, ' ')
		b = append(b, attr...)
		b = append(b, "=\""...)
		if v == vWrongType {
			b = append(b, "abc"...)
		} else {
			b = appendUint(b, e.value)
		}
		return append(b, '"')
	}
	if e.kind != kStorage && e.kind != kLicense {
		b = value(b)
	}
	b = append(b, " resourceType=\"AGENT\""...)
	if !(e.kind == kLicense && v == vMissing) {
		b = append(b, " serverID=\""...)
		b = append(b, ag.serverID...)
		b = append(b, '"')
	}
	b = append(b, " serviceCode=\"CloudBackup\""...)
	if e.kind == kStorage {
		b = value(b)
	}
	if e.summary() {
		b = append(b, " summary=\"true\""...)
	}
	b = append(b, " version=\"1\"/"...)
	if v != vBroken {
		b = append(b, '>')
	}
	return append(b, "\n      </event>"...)
}

// externalShown reports whether a snapshot writes its optional external
// attribute: always when true, two times in three when false, by the id of
// the entry whose event it is (l.src), so that a copy shows what its
// original shows.
func externalShown(l cufLink, ag *agent) bool {
	return ag.external || l.src.hash(whitespaceKey+1)%3 != 0
}

func (r *renderer) appendSnapshotXML(b []byte, e *entry, ag *agent, l cufLink, v variant) []byte {
	t := r.f.tenant
	// The seed's attribute order.
	b = appendEventNS(b, e.kind)
	b = append(b, " eventTime=\""...)
	b = appendSec(b, e.start)
	b = append(b, "\" region=\""...)
	b = append(b, t.region...)
	b = append(b, "\" dataCenter=\""...)
	b = append(b, t.dc...)
	b = append(b, "\" type=\"USAGE_SNAPSHOT\" id=\""...)
	b = l.eventID().appendTo(b)
	b = append(b, "\" resourceId=\""...)
	b = append(b, ag.rid...)
	b = append(b, "\" tenantId=\""...)
	b = append(b, t.id...)
	b = append(b, "\" version=\"1\">\n        <cb-lic:product version=\"3\" serviceCode=\"CloudBackup\""...)
	if !ag.noServerID {
		b = append(b, " serverID=\""...)
		b = append(b, ag.serverID...)
		b = append(b, '"')
	}
	if v != vMissing {
		b = append(b, " serverName=\""...)
		b = append(b, ag.nameXML...)
		b = append(b, '"')
	}
	switch {
	case v == vWrongType:
		b = append(b, " external=\"maybe\""...)
	case !externalShown(l, ag):
	case ag.external:
		b = append(b, " external=\"true\""...)
	default:
		b = append(b, " external=\"false\""...)
	}
	b = append(b, " resourceType=\"AGENT\"/"...)
	if v != vBroken {
		b = append(b, '>')
	}
	return append(b, "\n      </event>"...)
}

func (r *renderer) appendSystemXML(b []byte, e *entry, ag *agent, v variant) []byte {
	b = r.appendEventHeadXML(b, "<event xmlns=\""+nsEvent+"\"", e, v, ag.rid)
	b = append(b, "\" type=\""...)
	b = append(b, systemTypes[e.etype]...)
	b = append(b, "\" version=\"1\"/"...)
	if v != vBroken {
		b = append(b, '>')
	}
	return b
}

// appendEntryJSON appends entry i as a JSON object.
func (r *renderer) appendEntryJSON(b []byte, i int) []byte {
	f := r.f
	e := &f.entries[i]
	t := f.tenant
	ag := t.agents[e.agent]
	v := r.variant(i)
	b = append(b, `{"@type":"`+nsAtomJSON+`","category":[{"term":"tid:`...)
	b = append(b, t.id...)
	b = append(b, `"},{"term":"rgn:`...)
	b = append(b, t.region...)
	b = append(b, `"},{"term":"dc:`...)
	b = append(b, t.dc...)
	b = append(b, `"},{"term":"rid:`...)
	b = append(b, rid(e, ag)...)
	term := e.term()
	b = append(b, `"},{"term":"`...)
	b = append(b, term...)
	b = append(b, `"},{"term":"type:`...)
	b = append(b, term...)
	b = append(b, `"}],"content":{"event":`...)
	switch e.kind {
	case kSnapshot:
		b = r.appendSnapshotJSON(b, e, ag, f.linkOf(e), v)
	case kSystem:
		b = r.appendSystemJSON(b, e, ag, v)
	case kServer:
		b = r.appendServerJSON(b, e, v)
	default:
		b = r.appendUsageJSON(b, e, ag, f.linkOf(e), v)
	}
	b = append(b, `},"id":"urn:uuid:`...)
	b = e.id.appendTo(b)
	b = append(b, `","link":[{"href":"`...)
	b = append(b, r.hrefJSON...)
	b = e.id.appendTo(b)
	b = append(b, `","rel":"self"}],"published":"`...)
	b = appendMilli(b, e.published)
	b = append(b, `","updated":"`...)
	b = appendMilli(b, e.published)
	return append(b, `"}`...)
}

func (r *renderer) appendUsageJSON(b []byte, e *entry, ag *agent, l cufLink, v variant) []byte {
	t := r.f.tenant
	b = append(b, `{"@type":"`+nsEventJSON+`","dataCenter":"`...)
	b = append(b, t.dc...)
	if e.summary() {
		b = append(b, `","duration":"`...)
		b = appendDuration(b, e.dur)
	}
	b = append(b, `","endTime":"`...)
	b = appendEnd(b, e)
	b = append(b, `","environment":"PROD","id":"`...)
	b = l.eventID().appendTo(b)
	b = append(b, `","product":`...)
	if v == vBroken {
		// A string where the product object belongs: what is left of a
		// product element whose tag was cut short.
		b = append(b, `"<`...)
		b = append(b, kinds[e.kind].prefix...)
		b = append(b, `:product resourceType=\"AGENT\" serverID=\"`...)
		b = append(b, ag.serverID...)
		b = append(b, `\" serviceCode=\"CloudBackup\" version=\"1\"\/"`...)
	} else {
		b = append(b, `{"@type":"`+nsCloudJSON...)
		attr := kinds[e.kind].product
		b = append(b, attr...)
		b = append(b, '"')
		value := func(b []byte) []byte {
			if v == vMissing {
				return b
			}
			b = append(b, `,"`...)
			b = append(b, attr...)
			b = append(b, `":`...)
			if v == vWrongType {
				return append(b, `"abc"`...)
			}
			return appendUint(b, e.value)
		}
		if e.kind != kStorage && e.kind != kLicense {
			b = value(b)
		}
		b = append(b, `,"resourceType":"AGENT"`...)
		if !(e.kind == kLicense && v == vMissing) {
			b = append(b, `,"serverID":"`...)
			b = append(b, ag.serverID...)
			b = append(b, '"')
		}
		b = append(b, `,"serviceCode":"CloudBackup"`...)
		if e.kind == kStorage {
			b = value(b)
		}
		if e.summary() {
			b = append(b, `,"summary":true`...)
		}
		b = append(b, `,"version":"1"}`...)
	}
	if l.ref != (uuid{}) {
		b = append(b, `,"referenceId":"`...)
		b = l.ref.appendTo(b)
		b = append(b, '"')
	}
	b = append(b, `,"region":"`...)
	b = append(b, t.region...)
	b = append(b, `","resourceId":"`...)
	b = append(b, ag.rid...)
	b = append(b, `","startTime":"`...)
	b = appendStart(b, e, wrongStart(e, v))
	b = append(b, `","tenantId":"`...)
	b = append(b, t.id...)
	b = append(b, `","type":"`...)
	b = append(b, e.usageType()...)
	return append(b, `","version":"1"}`...)
}

func (r *renderer) appendSnapshotJSON(b []byte, e *entry, ag *agent, l cufLink, v variant) []byte {
	t := r.f.tenant
	b = append(b, `{"@type":"`+nsEventJSON+`","dataCenter":"`...)
	b = append(b, t.dc...)
	b = append(b, `","eventTime":"`...)
	b = appendSec(b, e.start)
	b = append(b, `","id":"`...)
	b = l.eventID().appendTo(b)
	b = append(b, `","product":`...)
	if v == vBroken {
		b = append(b, `"<cb-lic:product version=\"3\" serviceCode=\"CloudBackup\" resourceType=\"AGENT\"\/"`...)
	} else {
		b = append(b, `{"@type":"`+nsCloudJSON+`license"`...)
		switch {
		case v == vWrongType:
			b = append(b, `,"external":"maybe"`...)
		case !externalShown(l, ag):
		case ag.external:
			b = append(b, `,"external":true`...)
		default:
			b = append(b, `,"external":false`...)
		}
		b = append(b, `,"resourceType":"AGENT"`...)
		if !ag.noServerID {
			b = append(b, `,"serverID":"`...)
			b = append(b, ag.serverID...)
			b = append(b, '"')
		}
		if v != vMissing {
			b = append(b, `,"serverName":`...)
			b = append(b, ag.nameJSON...)
		}
		b = append(b, `,"serviceCode":"CloudBackup","version":"3"}`...)
	}
	b = append(b, `,"region":"`...)
	b = append(b, t.region...)
	b = append(b, `","resourceId":"`...)
	b = append(b, ag.rid...)
	b = append(b, `","tenantId":"`...)
	b = append(b, t.id...)
	return append(b, `","type":"USAGE_SNAPSHOT","version":"1"}`...)
}

func (r *renderer) appendSystemJSON(b []byte, e *entry, ag *agent, v variant) []byte {
	t := r.f.tenant
	if v == vBroken {
		b = append(b, `"<event dataCenter=\"`...)
		b = append(b, t.dc...)
		b = append(b, `\" type=\"`...)
		b = append(b, systemTypes[e.etype]...)
		return append(b, `\" version=\"1\"\/"`...)
	}
	b = append(b, `{"@type":"`+nsEventJSON+`","dataCenter":"`...)
	b = append(b, t.dc...)
	b = append(b, `","eventTime":"`...)
	b = appendStart(b, e, v == vWrongType)
	b = append(b, `","id":"`...)
	b = e.id.derive(eventIDKey).appendTo(b)
	b = append(b, `","region":"`...)
	b = append(b, t.region...)
	b = append(b, `","resourceId":"`...)
	b = append(b, ag.rid...)
	b = append(b, `","tenantId":"`...)
	b = append(b, t.id...)
	b = append(b, `","type":"`...)
	b = append(b, systemTypes[e.etype]...)
	return append(b, `","version":"1"}`...)
}

// appendEventHeadXML appends the start tag of a system or Nova event, open
// (the tag and its namespaces) and its attributes from dataCenter to
// tenantId, the last value's closing quote left out.
func (r *renderer) appendEventHeadXML(b []byte, open string, e *entry, v variant, resourceID string) []byte {
	t := r.f.tenant
	b = append(b, open...)
	b = append(b, " dataCenter=\""...)
	b = append(b, t.dc...)
	b = append(b, "\" eventTime=\""...)
	b = appendStart(b, e, v == vWrongType)
	b = append(b, "\" id=\""...)
	b = e.id.derive(eventIDKey).appendTo(b)
	b = append(b, "\" region=\""...)
	b = append(b, t.region...)
	b = append(b, "\" resourceId=\""...)
	b = append(b, resourceID...)
	b = append(b, "\" tenantId=\""...)
	return append(b, t.id...)
}

// wrongStart reports whether a USAGE entry served with variant v carries
// its wrong-type value in startTime: licenses (their product has no
// number) and summaries (the parser does not read theirs).
func wrongStart(e *entry, v variant) bool {
	return v == vWrongType && (e.kind == kLicense || e.summary())
}

// usageType is the event type of a USAGE kind's entry.
func (e *entry) usageType() string {
	if e.summary() {
		return model.TypeUsageSummary
	}
	return model.TypeUsage
}

// appendEnd appends e's endTime; a midnight of an entry flagged fMidnight
// as 24:00:00 of the day before (xs:dateTime's end of a day).
func appendEnd(b []byte, e *entry) []byte {
	end := e.start + int64(e.dur)
	if day := floorDiv(end, 86400); e.midnight() && end == day*86400 {
		return append(appendDay(b, day-1), "T24:00:00Z"...)
	}
	return appendSec(b, end)
}

// appendDuration appends an xs:duration of secs seconds ("PT3600S").
func appendDuration(b []byte, secs uint32) []byte {
	return append(appendUint(append(b, "PT"...), uint64(secs)), 'S')
}

// appendStart appends e's start time, or "yesterday" where the entry is to
// carry a time of the wrong type.
func appendStart(b []byte, e *entry, wrong bool) []byte {
	if wrong {
		return append(b, "yesterday"...)
	}
	return appendSec(b, e.start)
}

// appendXMLAttr appends s escaped for an XML attribute value in double
// quotes (and for element text).
func appendXMLAttr(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '"':
			esc = "&quot;"
		case '\'':
			esc = "&apos;"
		case '\t':
			esc = "&#9;"
		case '\n':
			esc = "&#10;"
		case '\r':
			esc = "&#13;"
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	return append(b, s[start:]...)
}

// appendJSONStr appends s as a JSON string, quotes included.
func appendJSONStr(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONInner(b, s)
	return append(b, '"')
}

// appendJSONInner appends s escaped for the inside of a JSON string, "/"
// as "\/" as Cloud Feeds writes it. Invalid UTF-8 becomes U+FFFD.
func appendJSONInner(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' && c != '/' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\', '/':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	return append(b, s[start:]...)
}
