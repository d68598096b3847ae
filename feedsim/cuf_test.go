package feedsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// feedDigest hashes every page of every tenant's backup feed, XML and
// JSON, oldest page first, with the server's address taken out. Pages are
// found from the feed's own ids, not by parsing them.
func feedDigest(t *testing.T, s *Server, ts *httptest.Server) string {
	t.Helper()
	h := sha256.New()
	for i, tid := range s.TenantIDs() {
		all := ids(s, i)
		feedURL := ts.URL + "/backup/events/" + tid
		for _, f := range formats {
			for k := 0; k <= len(all); k += 1000 {
				url := feedURL + "?marker=last&limit=1000"
				if k > 0 {
					url = feedURL + "?marker=" + all[k-1] + "&direction=forward&limit=1000"
				}
				res := do(t, "GET", url, map[string]string{"Accept": f.accept}, "")
				if res.status != 200 {
					t.Fatalf("GET %s: %d %s", url, res.status, res.body)
				}
				body := strings.ReplaceAll(string(res.body), ts.URL, "http://feedsim")
				body = strings.ReplaceAll(body, strings.ReplaceAll(ts.URL, "/", `\/`), `http:\/\/feedsim`)
				h.Write([]byte(body))
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// oldTruth is /_sim/truth as it was before the CUF fields: what it says
// must not change when they are off.
type oldTruth struct {
	Tenants []struct {
		Tenant   string `json:"tenant"`
		Entries  int    `json:"entries"`
		NewestID string `json:"newest_id,omitempty"`
		Days     []struct {
			Day                string `json:"day"`
			Kind               string `json:"kind"`
			Entries            int    `json:"entries"`
			BandwidthBytes     string `json:"bandwidth_bytes"`
			StorageBytes       string `json:"storage_bytes"`
			StorageByteSeconds string `json:"storage_byte_seconds"`
			LicensedServers    int    `json:"licensed_servers"`
			LicenseSnapshots   int    `json:"license_snapshots"`
		} `json:"days"`
		Malformed []MalformedInfo `json:"malformed"`
	} `json:"tenants"`
}

func oldTruthDigest(t *testing.T, tr Truth) string {
	t.Helper()
	b, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	var old oldTruth
	if err := json.Unmarshal(b, &old); err != nil {
		t.Fatal(err)
	}
	if b, err = json.Marshal(old); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestCUFOffUnchanged holds the feed and the truth's old members without
// CUF facts to what they were before the facts existed (digests taken with
// the code of that time).
func TestCUFOffUnchanged(t *testing.T) {
	for _, c := range []struct {
		malformed    float64
		pages, truth string
	}{
		{0, "9114849d381ee16243deafb467710bbba821371ed0388d337f4a17929bc59b89",
			"35c75d3966bab70cb006383ee67b72d21d91f2bd35753e0ed1a33df7c527ab02"},
		{0.03, "c439db302db887912a31db9d0f982b3c97bb7adc62baab7d8e3764451c49a4c5",
			"d45c1e48789b16d713c8a79939e282985280da43bc3b54942107215c0ff2d76a"},
	} {
		cfg := testConfig()
		cfg.Tenants, cfg.Days = 3, 3
		cfg.Faults.Malformed = c.malformed
		s, ts, _ := start(t, cfg)
		if got := feedDigest(t, s, ts); got != c.pages {
			t.Errorf("malformed=%v: pages digest %s, was %s", c.malformed, got, c.pages)
		}
		tr := s.Truth()
		if got := oldTruthDigest(t, tr); got != c.truth {
			t.Errorf("malformed=%v: truth digest %s, was %s", c.malformed, got, c.truth)
		}
		for _, tt := range tr.Tenants {
			for _, d := range tt.Days {
				if d.Billed != d.Usage || d.Republished+d.Conflicts+d.Replaced != 0 {
					t.Errorf("tenant %s %s %s: billed %+v, served %+v, %d/%d/%d", tt.Tenant, d.Day, d.Kind,
						d.Billed, d.Usage, d.Republished, d.Conflicts, d.Replaced)
				}
			}
		}
	}
}

// allCUF turns every fact on, at rates that put each in a small history.
const allCUF = "republish=0.05,conflict=0.03,correct=0.08,chain=0.4,early=0.3,sibling=0.3,orphan=0.15,midnight=0.3,summary=0.2"

func cufConfig(t *testing.T, spec string) Config {
	t.Helper()
	cfg := testConfig()
	cfg.Tenants, cfg.Days = 3, 3
	var err error
	if cfg.CUF, err = ParseCUF(spec); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestParseCUF(t *testing.T) {
	c, err := ParseCUF(" republish=0.01, conflict=0.002,correct=0.01,chain=0.3,early=0.2,sibling=0.1,orphan=0.05,midnight=0.05,summary=0.01")
	if err != nil {
		t.Fatal(err)
	}
	want := CUF{Republish: 0.01, Conflict: 0.002, Correct: 0.01, Chain: 0.3, Early: 0.2, Sibling: 0.1, Orphan: 0.05, Midnight: 0.05, Summary: 0.01}
	if c != want {
		t.Errorf("parsed %+v", c)
	}
	if back, err := ParseCUF(c.String()); err != nil || back != c {
		t.Errorf("String %q reads back as %+v, %v", c.String(), back, err)
	}
	for _, s := range []string{"", "none", "  "} {
		if c, err := ParseCUF(s); err != nil || c.on() || c.String() != "none" {
			t.Errorf("%q: %+v %v", s, c, err)
		}
	}
	for _, s := range []string{"republish", "retry=0.1", "chain=x", "early=1.5", "midnight=-0.1", "summary=NaN"} {
		if _, err := ParseCUF(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
	cfg := DefaultConfig()
	cfg.CUF.Correct = 2
	if cfg.Validate() == nil {
		t.Error("Config.Validate accepts correct=2")
	}
}

// TestCUFDeterministic: the same flags serve the same bytes and truth; the
// facts change the feed.
func TestCUFDeterministic(t *testing.T) {
	cfg := cufConfig(t, allCUF)
	cfg.Faults.Malformed = 0.02
	s1, ts1, _ := start(t, cfg)
	s2, ts2, _ := start(t, cfg)
	d1, d2 := feedDigest(t, s1, ts1), feedDigest(t, s2, ts2)
	if d1 != d2 {
		t.Error("same flags, different pages")
	}
	j1, _ := json.Marshal(s1.Truth())
	j2, _ := json.Marshal(s2.Truth())
	if !bytes.Equal(j1, j2) {
		t.Error("same flags, different truth")
	}
	cfg.CUF = CUF{}
	s3, ts3, _ := start(t, cfg)
	if feedDigest(t, s3, ts3) == d1 {
		t.Error("the CUF facts changed nothing")
	}
}

// TestCUFServedEqualsParser reads the feeds of every fact but midnight (the
// parser does not read 24:00:00 yet) with the project's parser: the served
// sums are what it reads, summaries are kind other, and every entry served
// is billed, republished, a conflict or replaced.
func TestCUFServedEqualsParser(t *testing.T) {
	cfg := cufConfig(t, strings.Replace(allCUF, "midnight=0.3", "midnight=0", 1))
	cfg.Faults.Malformed = 0.03
	_, ts, _ := start(t, cfg)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			tr := fetchTruth(t, ts.URL+"/_sim/truth")
			if tr.CUF != cfg.CUF.String() {
				t.Errorf("truth cuf %q", tr.CUF)
			}
			for _, tt := range tr.Tenants {
				events, rejects, ok := readAll(t, ts.URL+"/backup/events/"+tt.Tenant, f, 97, nil)
				if !ok {
					t.Skip("ingest.ParsePage cannot recover a page with a broken entry (see TestTruthEqualsFeed)")
				}
				compareTruth(t, tt, events, rejects)
				for _, d := range tt.Days {
					if d.Entries != d.Billed.Entries+d.Republished+d.Conflicts+d.Replaced {
						t.Errorf("tenant %s %s %s: %d served, %d billed + %d republished + %d conflicts + %d replaced",
							tt.Tenant, d.Day, d.Kind, d.Entries, d.Billed.Entries, d.Republished, d.Conflicts, d.Replaced)
					}
				}
			}
		})
	}
}

// cufRecord is an entry as the recount below reads it, by its own decoding
// of the pages (encoding/xml, encoding/json), not by feedsim's or ingest's
// code.
type cufRecord struct {
	id, published string
	event         map[string]string // event attributes (members), product left out
	productNS     string
	product       map[string]string
}

var atomIDRe = regexp.MustCompile(`<atom:id>\s*(urn:uuid:[0-9a-f-]+)\s*</atom:id>`)

// decodeXMLEntries decodes a page's entries one by one (an entry served
// broken is not XML), newest first; entries named in skip keep only their id.
func decodeXMLEntries(t *testing.T, page []byte, skip map[string]bool) []cufRecord {
	t.Helper()
	var out []cufRecord
	rest := string(page)
	for {
		i := strings.Index(rest, "<atom:entry ")
		if i < 0 {
			return out
		}
		j := strings.Index(rest[i:], "</atom:entry>")
		if j < 0 {
			t.Fatal("an entry without its end")
		}
		chunk := rest[i : i+j+len("</atom:entry>")]
		rest = rest[i+j:]
		m := atomIDRe.FindStringSubmatch(chunk)
		if m == nil {
			t.Fatalf("no atom id in %s", chunk)
		}
		r := cufRecord{id: m[1]}
		if !skip[r.id] {
			r = decodeXMLEntry(t, chunk)
		}
		out = append(out, r)
	}
}

func decodeXMLEntry(t *testing.T, chunk string) cufRecord {
	t.Helper()
	attrs := func(se xml.StartElement) map[string]string {
		m := map[string]string{}
		for _, a := range se.Attr {
			if a.Name.Space != "xmlns" && a.Name.Local != "xmlns" {
				m[a.Name.Local] = a.Value
			}
		}
		return m
	}
	var r cufRecord
	dec := xml.NewDecoder(strings.NewReader(chunk))
	var text *string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return r
		}
		if err != nil {
			t.Fatalf("%v in %s", err, chunk)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			switch {
			case x.Name.Space == model.NSAtom && x.Name.Local == "id":
				text = &r.id
			case x.Name.Space == model.NSAtom && x.Name.Local == "published":
				text = &r.published
			case x.Name.Space == model.NSEvent && x.Name.Local == "event":
				r.event = attrs(x)
			case strings.HasPrefix(x.Name.Space, model.NSCloudBackup) && x.Name.Local == "product":
				r.productNS, r.product = x.Name.Space, attrs(x)
			}
		case xml.CharData:
			if text != nil {
				*text = strings.TrimSpace(string(x))
			}
		case xml.EndElement:
			text = nil
		}
	}
}

// decodeJSONEntries decodes a JSON page's entries, newest first.
func decodeJSONEntries(t *testing.T, page []byte, skip map[string]bool) []cufRecord {
	t.Helper()
	var doc struct {
		Feed struct {
			Entry []struct {
				ID        string `json:"id"`
				Published string `json:"published"`
				Content   struct {
					Event json.RawMessage `json:"event"` // a string in some malformed entries
				} `json:"content"`
			} `json:"entry"`
		} `json:"feed"`
	}
	if err := json.Unmarshal(page, &doc); err != nil {
		t.Fatal(err)
	}
	scalars := func(o map[string]any) map[string]string {
		m := map[string]string{}
		for k, v := range o {
			if k != "product" && k != "@type" {
				m[k] = fmt.Sprint(v)
			}
		}
		return m
	}
	var out []cufRecord
	for _, e := range doc.Feed.Entry {
		r := cufRecord{id: e.ID, published: e.Published}
		if !skip[r.id] {
			var ev map[string]any
			dec := json.NewDecoder(bytes.NewReader(e.Content.Event))
			dec.UseNumber()
			if err := dec.Decode(&ev); err != nil {
				t.Fatalf("entry %s: %v", e.ID, err)
			}
			r.event = scalars(ev)
			if p, ok := ev["product"].(map[string]any); ok {
				r.productNS, r.product = fmt.Sprint(p["@type"]), scalars(p)
			}
		}
		out = append(out, r)
	}
	return out
}

// readRecords reads a feed oldest to newest by its own decoders.
func readRecords(t *testing.T, feedURL string, f format, skip map[string]bool) []cufRecord {
	t.Helper()
	var all []cufRecord
	url := feedURL + "?marker=last&limit=200"
	for {
		res := do(t, "GET", url, map[string]string{"Accept": f.accept}, "")
		if res.status != 200 {
			t.Fatalf("GET %s: %d", url, res.status)
		}
		var page []cufRecord
		if f.name == "xml" {
			page = decodeXMLEntries(t, res.body, skip)
		} else {
			page = decodeJSONEntries(t, res.body, skip)
		}
		if len(page) == 0 {
			return all
		}
		for k := len(page) - 1; k >= 0; k-- {
			all = append(all, page[k])
		}
		url = feedURL + "?marker=" + page[0].id + "&direction=forward&limit=200"
	}
}

// cufTime reads a served xs:dateTime, 24:00:00 included.
func cufTime(t *testing.T, s string) time.Time {
	t.Helper()
	if d, ok := strings.CutSuffix(s, "T24:00:00Z"); ok {
		day, err := time.Parse("2006-01-02", d)
		if err != nil {
			t.Fatal(err)
		}
		return day.Add(24 * time.Hour)
	}
	x, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// cufEvent is a record read as an event.
type cufEvent struct {
	cufRecord
	kind, day, content string
	published          time.Time
}

// recount applies the billing rules of doc.go to the records of one feed,
// written apart from truth.go: identity by (event id, kind), then for each
// event with a referenceId whether it and every correction above it is its
// parent's latest child (the rule from the leaf up, where bill goes down
// from the root). It returns the days as Truth shows them and the conflicts.
func recount(t *testing.T, recs []cufRecord, skip map[string]bool) (map[string]DayTruth, []ConflictInfo) {
	t.Helper()
	var evs []*cufEvent
	for _, r := range recs {
		if skip[r.id] {
			continue
		}
		// Published to the second: the sink compares no more.
		e := &cufEvent{cufRecord: r, kind: string(model.KindOther), published: cufTime(t, r.published).Truncate(time.Second)}
		if name, ok := strings.CutPrefix(r.productNS, model.NSCloudBackup); ok && r.event["type"] != model.TypeUsageSummary {
			e.kind = name
		}
		at := r.event["startTime"]
		if at == "" {
			at = r.event["eventTime"]
		}
		e.day = cufTime(t, at).Format("2006-01-02")
		var parts []string
		for k, v := range r.event {
			parts = append(parts, "e."+k+"="+v)
		}
		for k, v := range r.product {
			parts = append(parts, "p."+k+"="+v)
		}
		sort.Strings(parts)
		e.content = r.productNS + "|" + strings.Join(parts, "|")
		evs = append(evs, e)
	}
	type key struct{ id, kind string }
	first := map[key]*cufEvent{}
	status := map[*cufEvent]string{}
	var conflicts []ConflictInfo
	var kept []*cufEvent
	for _, e := range evs {
		k := key{e.event["id"], e.kind}
		if f, ok := first[k]; ok {
			if f.content == e.content {
				status[e] = "republished"
			} else {
				status[e] = "conflict"
				conflicts = append(conflicts, ConflictInfo{ID: e.id, KeptID: f.id, EventID: e.event["id"], Day: e.day, Kind: e.kind})
			}
			continue
		}
		first[k] = e
		kept = append(kept, e)
	}
	children := map[key][]*cufEvent{}
	for _, e := range kept {
		if ref := e.event["referenceId"]; ref != "" {
			children[key{ref, e.kind}] = append(children[key{ref, e.kind}], e)
		}
	}
	latest := func(e *cufEvent) bool {
		for _, s := range children[key{e.event["referenceId"], e.kind}] {
			if s.published.After(e.published) || s.published.Equal(e.published) && s.event["id"] > e.event["id"] {
				return false
			}
		}
		return true
	}
	for _, e := range kept {
		counts := len(children[key{e.event["id"], e.kind}]) == 0
		for x := e; counts && x.event["referenceId"] != ""; {
			counts = latest(x)
			parent, ok := first[key{x.event["referenceId"], x.kind}]
			if !ok {
				break
			}
			x = parent
		}
		if counts {
			status[e] = "billed"
		} else {
			status[e] = "replaced"
		}
	}

	type acc struct {
		DayTruth
		bw, st, secs big.Int
		servers      map[string]bool
	}
	accs := map[string]*acc{}
	for _, e := range evs {
		a := accs[e.day+"/"+e.kind]
		if a == nil {
			a = &acc{DayTruth: DayTruth{Day: e.day, Kind: e.kind}, servers: map[string]bool{}}
			accs[e.day+"/"+e.kind] = a
		}
		switch status[e] {
		case "republished":
			a.Republished++
			continue
		case "conflict":
			a.Conflicts++
			continue
		case "replaced":
			a.Replaced++
			continue
		}
		a.Billed.Entries++
		switch e.kind {
		case string(model.KindBandwidthIn), string(model.KindBandwidthOut):
			q, _ := new(big.Int).SetString(e.product[e.kind], 10)
			a.bw.Add(&a.bw, q)
		case string(model.KindStorage):
			q, _ := new(big.Int).SetString(e.product[e.kind], 10)
			a.st.Add(&a.st, q)
			secs := cufTime(t, e.event["endTime"]).Sub(cufTime(t, e.event["startTime"])) / time.Second
			a.secs.Add(&a.secs, q.Mul(q, big.NewInt(int64(secs))))
		case string(model.KindLicense):
			if e.event["type"] == model.TypeUsageSnapshot {
				a.Billed.LicenseSnapshots++
			}
			server := e.product["serverID"]
			if server == "" {
				server = "name:" + e.product["serverName"]
			}
			a.servers[server] = true
		}
	}
	out := map[string]DayTruth{}
	for k, a := range accs {
		a.Billed.BandwidthBytes, a.Billed.StorageBytes, a.Billed.StorageByteSeconds = a.bw.String(), a.st.String(), a.secs.String()
		a.Billed.LicensedServers = len(a.servers)
		out[k] = a.DayTruth
	}
	return out, conflicts
}

// TestCUFTruthEqualsRecount reads every fact, in XML and JSON, at the end of
// the history and in its middle (where some corrections have come and their
// late originals not yet), and holds the truth's billed figures to the
// recount.
func TestCUFTruthEqualsRecount(t *testing.T) {
	cfg := cufConfig(t, allCUF)
	cfg.Faults.Malformed = 0.02
	s, ts, clk := start(t, cfg)
	seen := map[string]int{}
	for _, now := range []time.Time{cfg.Start.Add(36 * time.Hour), testNow} {
		clk.mu.Lock()
		clk.t = now
		clk.mu.Unlock()
		tr := s.Truth()
		for _, f := range formats {
			for _, tt := range tr.Tenants {
				skip := map[string]bool{}
				for _, m := range tt.Malformed {
					skip[m.ID] = true
				}
				recs := readRecords(t, ts.URL+"/backup/events/"+tt.Tenant, f, skip)
				if len(recs) != tt.Entries {
					t.Fatalf("%s tenant %s: read %d entries, truth says %d", f.name, tt.Tenant, len(recs), tt.Entries)
				}
				days, conflicts := recount(t, recs, skip)
				for _, d := range tt.Days {
					w := days[d.Day+"/"+d.Kind]
					if d.Billed != w.Billed || d.Republished != w.Republished || d.Conflicts != w.Conflicts || d.Replaced != w.Replaced {
						t.Errorf("%s tenant %s %s %s at %s:\n truth   %+v %d/%d/%d\n recount %+v %d/%d/%d", f.name, tt.Tenant, d.Day, d.Kind,
							now.Format(time.RFC3339), d.Billed, d.Republished, d.Conflicts, d.Replaced, w.Billed, w.Republished, w.Conflicts, w.Replaced)
					}
					delete(days, d.Day+"/"+d.Kind)
				}
				for k := range days {
					t.Errorf("%s tenant %s: %s recounted, not in the truth", f.name, tt.Tenant, k)
				}
				if !slices.Equal(conflicts, tt.Conflicts) {
					t.Errorf("%s tenant %s: conflicts\n truth   %+v\n recount %+v", f.name, tt.Tenant, tt.Conflicts, conflicts)
				}
				countFacts(recs, skip, seen)
			}
		}
	}
	// The test means something only if every fact is in the feeds.
	for _, fact := range []string{"republish", "conflict", "correction", "early", "chain", "sibling", "orphan", "midnight", "summary"} {
		if seen[fact] == 0 {
			t.Errorf("no %s in the feeds", fact)
		}
	}
	t.Logf("facts seen: %v", seen)
}

// countFacts counts the CUF facts in a feed's records, as a reader sees them.
func countFacts(recs []cufRecord, skip map[string]bool, seen map[string]int) {
	byID := map[string][]cufRecord{}
	refs := map[string]int{}
	for _, r := range recs {
		if !skip[r.id] {
			byID[r.event["id"]] = append(byID[r.event["id"]], r)
		}
	}
	for _, r := range recs {
		if skip[r.id] {
			continue
		}
		if strings.Contains(r.event["endTime"], "T24:") {
			seen["midnight"]++
		}
		if r.event["type"] == model.TypeUsageSummary {
			seen["summary"]++
		}
		if copies := byID[r.event["id"]]; len(copies) > 1 && copies[0].id != r.id {
			if fmt.Sprint(copies[0].event, copies[0].product) == fmt.Sprint(r.event, r.product) {
				seen["republish"]++
			} else {
				seen["conflict"]++
			}
		}
		ref := r.event["referenceId"]
		if ref == "" {
			continue
		}
		seen["correction"]++
		refs[ref]++
		if refs[ref] == 2 {
			seen["sibling"]++
		}
		switch orig := byID[ref]; {
		case len(orig) == 0:
			seen["orphan"]++
		case orig[0].event["referenceId"] != "":
			seen["chain"]++
		}
		if orig := byID[ref]; len(orig) > 0 && orig[0].published > r.published {
			seen["early"]++
		}
	}
}
