package ingest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/mmcdole/gofeed/atom"
)

// benchPage builds a Cloud Feeds page of n seed-like entries (the four
// usage kinds and the license snapshot, in turn), as the real service
// writes it, in XML or JSON.
func benchPage(n int, format Format) []byte {
	var b bytes.Buffer
	const base = "https://ord.feeds.api.rackspacecloud.com/backup/events/1234"
	kinds := []struct{ ns, typ, attrs string }{
		{"bandwidthIn", "USAGE", `bandwidthIn="192998" serverID="944576fa-ec99-11e1-bb8e-ebb21b47fa86"`},
		{"bandwidthOut", "USAGE", `bandwidthOut="9887765" serverID="944576fa-ec99-11e1-bb8e-ebb21b47fa86"`},
		{"storage", "USAGE", `storage="99992827882" serverID="9445"`},
		{"license", "USAGE", `serverID="9445"`},
		{"license", "USAGE_SNAPSHOT", `serverID="9445" serverName="SomeServerName" external="false"`},
	}
	id := func(i int) string { return fmt.Sprintf("urn:uuid:8d89673c-c989-11e1-895a-%012x", i) }
	if format == FormatXML {
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
		b.WriteString(`<feed xmlns="http://www.w3.org/2005/Atom">` + "\n")
		fmt.Fprintf(&b, `<link href="%s" rel="current"/><link href="%s?limit=%d" rel="self"/>`+"\n", base, base, n)
		fmt.Fprintf(&b, `<link href="%s?marker=%s&amp;direction=forward&amp;limit=%d" rel="previous"/>`+"\n", base, id(n), n)
		b.WriteString(`<id>urn:uuid:7c3e1e1a-6f0b-4b55-9a6f-1f0d3b2a9c00</id><title type="text">backup/events</title><updated>2013-02-28T19:28:57.758Z</updated>` + "\n")
		for i := n; i > 0; i-- {
			k := kinds[i%len(kinds)]
			version, times := "1", `startTime="2012-06-14T10:19:52Z" endTime="2012-06-15T10:19:52Z"`
			if k.typ == "USAGE_SNAPSHOT" {
				version, times = "3", `eventTime="2014-01-24T10:19:52Z"`
			}
			fmt.Fprintf(&b, `<atom:entry xmlns:atom="http://www.w3.org/2005/Atom" xmlns="http://www.w3.org/2001/XMLSchema">
<atom:id>%[1]s</atom:id>
<atom:category term="tid:1234"/>
<atom:category term="rgn:DFW"/>
<atom:category term="dc:DFW1"/>
<atom:category term="rid:3863d42a-ec9a-11e1-8e12-df8baa3ca440"/>
<atom:category term="cloudbackup.%[2]s.agent.usage"/>
<atom:category term="type:cloudbackup.%[2]s.agent.usage"/>
<atom:title type="text">CloudBackup</atom:title>
<atom:content type="application/xml">
<event xmlns="http://docs.rackspace.com/core/event" xmlns:p="http://docs.rackspace.com/usage/cloudbackup/%[2]s" dataCenter="DFW1" environment="PROD" id="%[3]s" region="DFW" resourceId="3863d42a-ec9a-11e1-8e12-df8baa3ca440" %[4]s tenantId="1234" type="%[5]s" version="1">
<p:product %[6]s resourceType="AGENT" serviceCode="CloudBackup" version="%[7]s"/>
</event>
</atom:content>
<atom:link href="%[8]s/entries/%[1]s" rel="self"/>
<atom:updated>2013-02-28T19:28:57.758Z</atom:updated>
<atom:published>2013-02-28T19:28:57.758Z</atom:published>
</atom:entry>
`, id(i), k.ns, id(i)[9:], times, k.typ, k.attrs, version, base)
		}
		fmt.Fprintf(&b, `<link href="%s?marker=last&amp;direction=backward&amp;limit=%d" rel="last"/>`+"\n</feed>\n", base, n)
		return b.Bytes()
	}
	fmt.Fprintf(&b, `{"feed":{"@type":"http:\/\/www.w3.org\/2005\/Atom","link":[{"href":"%s","rel":"current"},{"href":"%s?limit=%d","rel":"self"}],"entry":[`, base, base, n)
	for i := n; i > 0; i-- {
		k := kinds[i%len(kinds)]
		if i != n {
			b.WriteByte(',')
		}
		version, times := "1", `"startTime":"2012-06-14T10:19:52Z","endTime":"2012-06-15T10:19:52Z"`
		if k.typ == "USAGE_SNAPSHOT" {
			version, times = "3", `"eventTime":"2014-01-24T10:19:52Z"`
		}
		attrs := map[string]string{
			"bandwidthIn":    `"bandwidthIn":192998,"serverID":"944576fa-ec99-11e1-bb8e-ebb21b47fa86",`,
			"bandwidthOut":   `"bandwidthOut":9887765,"serverID":"944576fa-ec99-11e1-bb8e-ebb21b47fa86",`,
			"storage":        `"storage":99992827882,"serverID":"9445",`,
			"license":        `"serverID":"9445",`,
			"USAGE_SNAPSHOT": `"external":false,"serverID":"9445","serverName":"SomeServerName",`,
		}[k.ns]
		if k.typ == "USAGE_SNAPSHOT" {
			attrs = `"external":false,"serverID":"9445","serverName":"SomeServerName",`
		}
		fmt.Fprintf(&b, `{"@type":"http:\/\/www.w3.org\/2005\/Atom","category":[{"term":"tid:1234"},{"term":"rgn:DFW"},{"term":"dc:DFW1"},{"term":"rid:3863d42a-ec9a-11e1-8e12-df8baa3ca440"},{"term":"cloudbackup.%[2]s.agent.usage"},{"term":"type:cloudbackup.%[2]s.agent.usage"}],`+
			`"content":{"event":{"@type":"http:\/\/docs.rackspace.com\/core\/event","dataCenter":"DFW1",%[4]s,"environment":"PROD","id":"%[3]s",`+
			`"product":{"@type":"http:\/\/docs.rackspace.com\/usage\/cloudbackup\/%[2]s",%[6]s"resourceType":"AGENT","serviceCode":"CloudBackup","version":"%[7]s"},`+
			`"region":"DFW","resourceId":"3863d42a-ec9a-11e1-8e12-df8baa3ca440","tenantId":"1234","type":"%[5]s","version":"1"}},`+
			`"id":"%[1]s","link":[{"href":"https:\/\/ord.feeds.api.rackspacecloud.com\/backup\/events\/entries\/%[1]s","rel":"self"}],"published":"2013-02-28T19:28:57.758Z","updated":"2013-02-28T19:28:57.758Z"}`,
			id(i), k.ns, id(i)[9:], times, k.typ, attrs, version)
	}
	b.WriteString(`]}}`)
	return b.Bytes()
}

func TestBenchPageParses(t *testing.T) {
	for _, f := range []Format{FormatXML, FormatJSON} {
		data := benchPage(1000, f)
		p, ok := fast(data, f)
		if !ok {
			t.Fatalf("%v: the fast parser stepped aside", f)
		}
		if len(p.Events) != 1000 || len(p.Rejects) != 0 {
			t.Fatalf("%v: %d events, rejects %v", f, len(p.Events), p.Rejects[:min(3, len(p.Rejects))])
		}
		ref, err := ReferencePage(data, f)
		if err != nil {
			t.Fatal(err)
		}
		samePage(t, f.String(), p, ref)
	}
}

func benchParse(b *testing.B, f Format, parse func([]byte) int) {
	data := benchPage(1000, f)
	if n := parse(data); n != 1000 {
		b.Fatalf("parsed %d entries, want 1000", n)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		parse(data)
	}
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "entries/s")
}

func pageParser(f Format, parse func([]byte, Format) (*Page, error)) func([]byte) int {
	return func(data []byte) int {
		p, err := parse(data, f)
		if err != nil {
			panic(err)
		}
		return len(p.Events)
	}
}

// BenchmarkParseXML: the fast path, as ParsePage serves a well-formed page.
func BenchmarkParseXML(b *testing.B) { benchParse(b, FormatXML, pageParser(FormatXML, ParsePage)) }

// BenchmarkParseJSON: the fast path on a JSON page.
func BenchmarkParseJSON(b *testing.B) { benchParse(b, FormatJSON, pageParser(FormatJSON, ParsePage)) }

// BenchmarkReferenceXML: etree over encoding/xml, what the fast path must equal.
func BenchmarkReferenceXML(b *testing.B) {
	benchParse(b, FormatXML, pageParser(FormatXML, ReferencePage))
}

// BenchmarkReferenceJSON: encoding/json.
func BenchmarkReferenceJSON(b *testing.B) {
	benchParse(b, FormatJSON, pageParser(FormatJSON, ReferencePage))
}

// BenchmarkGofeedXML is the baseline: gofeed's own Atom parse of the same
// page (links, ids, dates and content as inner XML; no event extracted).
func BenchmarkGofeedXML(b *testing.B) {
	benchParse(b, FormatXML, func(data []byte) int {
		feed, err := (&atom.Parser{}).Parse(bytes.NewReader(data))
		if err != nil {
			panic(err)
		}
		return len(feed.Entries)
	})
}
