package feedsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/ingest"
)

// pageIDs lists a parsed page's entry ids in feed order.
func pageIDs(p *ingest.Page) []string {
	out := make([]string, p.Entries)
	for k, i := range p.Indexes {
		out[i] = p.Events[k].EntryID
	}
	for _, r := range p.Rejects {
		if r.Index >= 0 && r.Index < len(out) {
			out[r.Index] = r.EntryID
		}
	}
	return out
}

// newestFirst returns ids[lo..hi] (inclusive) newest first.
func newestFirst(ids []string, lo, hi int) []string {
	var out []string
	for i := hi; i >= lo; i-- {
		out = append(out, ids[i])
	}
	return out
}

func TestPaging(t *testing.T) {
	s, ts, _ := start(t, testConfig())
	all := ids(s, 0)
	n := len(all)
	if n < 100 {
		t.Fatalf("tenant has %d entries, want at least 100 for these cases", n)
	}
	tid := s.tenants[0].id
	feed := ts.URL + "/backup/events/" + tid
	fwd := func(i, limit int) string {
		return feed + "?marker=" + all[i] + "&direction=forward&limit=" + itoa(limit)
	}
	back := func(i, limit int) string {
		return feed + "?marker=" + all[i] + "&direction=backward&limit=" + itoa(limit)
	}
	last := func(limit int) string { return feed + "?marker=last&direction=backward&limit=" + itoa(limit) }

	// Entries of one kind, for search.
	var storage []string
	for i := range s.tenants[0].backup.entries {
		if s.tenants[0].backup.entries[i].kind == kStorage {
			storage = append(storage, all[i])
		}
	}
	ns := len(storage)
	storageSearch := "(cat=type:cloudbackup.storage.agent.usage)"
	se := "&search=" + queryEscape(storageSearch)

	// An entry whose publication time no neighbour shares, for startingAt.
	es := s.tenants[0].backup.entries
	k := 40
	for es[k-1].published == es[k].published || es[k+1].published == es[k].published {
		k++
	}
	at := time.UnixMilli(es[k].published).UTC().Format(time.RFC3339Nano)

	andNot := "(AND(cat=tid:" + tid + ")(NOT(cat=type:cloudbackup.storage.agent.usage)))"
	anse := "&search=" + queryEscape(andNot)
	var notStorage []string
	for i := n - 1; i >= 0; i-- {
		if !slices.Contains(storage, all[i]) {
			notStorage = append(notStorage, all[i])
		}
	}

	type want struct {
		ids                            []string
		self, previous, next, lastLink string
	}
	cases := []struct {
		name  string
		query string
		want  want
	}{
		{"head default limit", "", want{ids: newestFirst(all, n-25, n-1),
			self: feed + "?limit=25", previous: fwd(n-1, 25), next: back(n-26, 25), lastLink: last(25)}},
		{"head limit 5", "?limit=5", want{ids: newestFirst(all, n-5, n-1),
			self: feed + "?limit=5", previous: fwd(n-1, 5), next: back(n-6, 5), lastLink: last(5)}},
		{"head limit 1", "?limit=1", want{ids: newestFirst(all, n-1, n-1),
			self: feed + "?limit=1", previous: fwd(n-1, 1), next: back(n-2, 1), lastLink: last(1)}},
		{"head limit 1000 holds all", "?limit=1000", want{ids: newestFirst(all, 0, n-1),
			self: feed + "?limit=1000", previous: fwd(n-1, 1000), lastLink: last(1000)}},
		{"forward excludes the marker", "?marker=" + all[10] + "&direction=forward&limit=5", want{
			ids: newestFirst(all, 11, 15), self: fwd(10, 5), previous: fwd(15, 5), next: back(10, 5)}},
		{"marker without direction is forward", "?marker=" + all[10] + "&limit=5", want{
			ids: newestFirst(all, 11, 15), self: fwd(10, 5), previous: fwd(15, 5), next: back(10, 5)}},
		{"backward includes the marker", "?marker=" + all[10] + "&direction=backward&limit=5", want{
			ids: newestFirst(all, 6, 10), self: back(10, 5), previous: fwd(10, 5), next: back(5, 5)}},
		{"backward to the oldest", "?marker=" + all[3] + "&direction=backward&limit=5", want{
			ids: newestFirst(all, 0, 3), self: back(3, 5), previous: fwd(3, 5)}},
		{"backward exactly to the oldest", "?marker=" + all[4] + "&direction=backward&limit=5", want{
			ids: newestFirst(all, 0, 4), self: back(4, 5), previous: fwd(4, 5)}},
		{"forward to the newest", "?marker=" + all[n-3] + "&direction=forward&limit=5", want{
			ids: newestFirst(all, n-2, n-1), self: fwd(n-3, 5), previous: fwd(n-1, 5), next: back(n-3, 5)}},
		{"forward from the newest is empty", "?marker=" + all[n-1] + "&direction=forward&limit=5", want{
			self: fwd(n-1, 5)}},
		{"marker=last is the oldest page", "?marker=last&limit=5", want{
			ids: newestFirst(all, 0, 4), self: last(5), previous: fwd(4, 5)}},
		{"marker=last backward", "?marker=last&direction=backward&limit=5", want{
			ids: newestFirst(all, 0, 4), self: last(5), previous: fwd(4, 5)}},
		{"marker=last forward", "?marker=last&direction=forward&limit=5", want{
			ids: newestFirst(all, 0, 4), self: feed + "?marker=last&direction=forward&limit=5", previous: fwd(4, 5)}},
		{"startingAt forward", "?startingAt=" + url.QueryEscape(at) + "&limit=3", want{
			ids: newestFirst(all, k, k+2), self: feed + "?startingAt=" + queryEscape(at) + "&direction=forward&limit=3",
			previous: fwd(k+2, 3), next: back(k-1, 3)}},
		{"startingAt backward", "?startingAt=" + url.QueryEscape(at) + "&direction=backward&limit=3", want{
			ids: newestFirst(all, k-2, k), self: feed + "?startingAt=" + queryEscape(at) + "&direction=backward&limit=3",
			previous: fwd(k, 3), next: back(k-3, 3)}},
		{"startingAt after everything", "?startingAt=2030-01-01T00:00:00Z", want{
			self: feed + "?startingAt=2030-01-01T00:00:00Z&direction=forward&limit=25"}},
		{"search head", "?limit=5&search=" + url.QueryEscape(storageSearch), want{
			ids: newestFirst(storage, ns-5, ns-1), self: feed + "?limit=5" + se,
			previous: feed + "?marker=" + storage[ns-1] + "&direction=forward&limit=5" + se,
			next:     feed + "?marker=" + storage[ns-6] + "&direction=backward&limit=5" + se,
			lastLink: feed + "?marker=last&direction=backward&limit=5" + se}},
		{"search tid of another tenant is empty", "?search=" + url.QueryEscape("(cat=tid:1)"), want{
			self: feed + "?limit=25&search=" + queryEscape("(cat=tid:1)"), lastLink: feed + "?marker=last&direction=backward&limit=25&search=" + queryEscape("(cat=tid:1)")}},
		{"search AND/NOT", "?limit=1000&search=" + url.QueryEscape(andNot), want{
			ids:      notStorage,
			self:     feed + "?limit=1000" + anse,
			previous: feed + "?marker=" + notStorage[0] + "&direction=forward&limit=1000" + anse,
			lastLink: feed + "?marker=last&direction=backward&limit=1000" + anse,
		}},
	}
	for _, f := range formats {
		for _, c := range cases {
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				p, body := getPage(t, feed+c.query, f, nil)
				if len(p.Rejects) > 0 {
					t.Fatalf("rejects: %v", p.Rejects)
				}
				got := pageIDs(p)
				if !slices.Equal(got, c.want.ids) && !(len(got) == 0 && len(c.want.ids) == 0) {
					t.Errorf("ids:\n got %v\nwant %v", got, c.want.ids)
				}
				w := c.want
				if w.previous == "" && len(w.ids) > 0 {
					t.Fatal("bad case: a page with entries needs a previous link")
				}
				check := func(rel, got, want string) {
					if got != want {
						t.Errorf("%s link:\n got %q\nwant %q", rel, got, want)
					}
				}
				check("current", p.Links.Current, feed)
				check("self", p.Links.Self, w.self)
				check("previous", p.Links.Previous, w.previous)
				check("next", p.Links.Next, w.next)
				check("last", p.Links.Last, w.lastLink)
				if f.name == "json" {
					var doc struct {
						Feed map[string]json.RawMessage `json:"feed"`
					}
					if err := json.Unmarshal(body, &doc); err != nil {
						t.Fatal(err)
					}
					_, hasEntry := doc.Feed["entry"]
					if hasEntry != (len(w.ids) > 0) {
						t.Errorf(`"entry" present = %v with %d entries`, hasEntry, len(w.ids))
					}
					if l := doc.Feed["link"]; len(l) == 0 || l[0] != '[' {
						t.Errorf(`"link" is not an array: %s`, l)
					}
				} else if len(w.ids) == 0 && strings.Contains(string(body), "entry") {
					t.Errorf("empty page has an entry: %s", body)
				}
			})
		}
	}
}

func itoa(i int) string { return formatInt(i) }

func formatInt(i int) string { return string(appendUint(nil, uint64(i))) }

func TestFeedStatus(t *testing.T) {
	s, ts, _ := start(t, testConfig())
	all := ids(s, 0)
	feed := ts.URL + "/backup/events/" + s.tenants[0].id
	cases := []struct {
		query  string
		status int
	}{
		{"", 200},
		{"?limit=1", 200},
		{"?limit=1000", 200},
		{"?limit=0", 400},
		{"?limit=1001", 400},
		{"?limit=-5", 400},
		{"?limit=abc", 400},
		{"?limit=", 400},
		{"?limit=2.5", 400},
		{"?direction=sideways", 400},
		{"?marker=" + all[3] + "&direction=Forward", 400},
		{"?marker=" + all[3] + "&direction=backward", 200},
		{"?marker=urn:uuid:00000000-0000-4000-8000-000000000000", 404},
		{"?marker=urn:uuid:00000000-0000-4000-8000-000000000000&direction=backward", 404},
		{"?marker=not-an-id", 404},
		{"?marker=" + all[3] + "&startingAt=2026-10-01T00:00:00Z", 400},
		{"?marker=last&startingAt=2026-10-01T00:00:00Z", 400},
		{"?startingAt=yesterday", 400},
		{"?startingAt=2026-10-01T00:00:00Z", 200},
		{"?startingAt=2026-10-01T00:00:00%2B02:00&direction=backward", 200},
		{"?search=(cat=tid:1", 400},
		{"?search=cat=tid:1", 400},
		{"?search=(FOO(cat=a))", 400},
		{"?search=(OR(cat=a)(cat=b))", 200},
	}
	for _, f := range formats {
		for _, c := range cases {
			res := do(t, "GET", feed+c.query, map[string]string{"Accept": f.accept}, "")
			if res.status != c.status {
				t.Errorf("%s %s: status %d, want %d: %s", f.name, c.query, res.status, c.status, res.body)
			}
			if c.status != 200 && f.name == "json" && !json.Valid(res.body) {
				t.Errorf("%s %s: error body is not JSON: %s", f.name, c.query, res.body)
			}
		}
	}
	// Unknown tenants have an empty feed; entries 404 unless they exist.
	for _, f := range formats {
		p, _ := getPage(t, ts.URL+"/backup/events/424242", f, nil)
		if p.Entries != 0 || p.Links.Previous != "" || p.Links.Next != "" {
			t.Errorf("%s: unknown tenant: %d entries, links %+v", f.name, p.Entries, p.Links)
		}
		for _, u := range []string{
			feed + "/entries/urn:uuid:00000000-0000-4000-8000-000000000000",
			ts.URL + "/backup/events/424242/entries/" + all[0],
			feed + "/entries/" + strings.TrimPrefix(all[0], "urn:uuid:"),
		} {
			if res := do(t, "GET", u, map[string]string{"Accept": f.accept}, ""); res.status != 404 {
				t.Errorf("%s GET %s: %d, want 404", f.name, u, res.status)
			}
		}
	}
	if res := do(t, "POST", feed, nil, "x"); res.status != http.StatusMethodNotAllowed {
		t.Errorf("POST feed: %d, want 405", res.status)
	}
}

func TestEntry(t *testing.T) {
	s, ts, _ := start(t, testConfig())
	all := ids(s, 1)
	tid := s.tenants[1].id
	for _, f := range formats {
		for _, i := range []int{0, len(all) / 2, len(all) - 1} {
			page, _ := getPage(t, ts.URL+"/backup/events/"+tid+"?marker="+all[i]+"&direction=backward&limit=1", f, nil)
			for _, u := range []string{
				ts.URL + "/backup/events/" + tid + "/entries/" + all[i],
				ts.URL + "/backup/events/entries/" + all[i], // the entry's self link
			} {
				p, body := getPage(t, u, f, nil)
				if !p.Entry || len(p.Events) != 1 || p.Events[0].EntryID != all[i] {
					t.Fatalf("%s %s: entry %v events %+v rejects %v", f.name, u, p.Entry, p.Events, p.Rejects)
				}
				if p.Events[0] != page.Events[0] {
					t.Errorf("%s: entry differs from the page's:\n%+v\n%+v", f.name, p.Events[0], page.Events[0])
				}
				if f.name == "json" && !strings.HasPrefix(string(body), `{"entry":{`) {
					t.Errorf("json entry: %.40s", body)
				}
				if f.name == "xml" && !strings.Contains(string(body), "<atom:link href=\""+ts.URL+"/backup/events/entries/"+all[i]+"\" rel=\"self\"/>") {
					t.Errorf("xml entry has no self link: %s", body)
				}
			}
		}
	}
}

func TestHeadDelay(t *testing.T) {
	cfg := testConfig()
	cfg.Tenants = 1
	s, ts, c := start(t, cfg)
	t0 := s.tenants[0]
	feed := ts.URL + "/backup/events/" + t0.id
	before := ids(s, 0)
	newest := before[len(before)-1]
	t0.backup.add(newRNG(99, 1), entry{kind: kStorage, start: c.now().Unix() - 3600, dur: 3600, value: 5}, c.now())
	fresh := ids(s, 0)[len(before)]
	for _, f := range formats {
		p, _ := getPage(t, feed+"?limit=1", f, nil)
		if got := pageIDs(p); got[0] != newest {
			t.Errorf("%s: head shows %v before the head delay, want %s", f.name, got, newest)
		}
		p, _ = getPage(t, feed+"?marker="+newest+"&direction=forward", f, nil)
		if p.Entries != 0 {
			t.Errorf("%s: forward from the newest shows %d entries during the head delay", f.name, p.Entries)
		}
		if res := do(t, "GET", feed+"/entries/"+fresh, map[string]string{"Accept": f.accept}, ""); res.status != 404 {
			t.Errorf("%s: withheld entry served: %d", f.name, res.status)
		}
		if res := do(t, "GET", feed+"?marker="+fresh, map[string]string{"Accept": f.accept}, ""); res.status != 404 {
			t.Errorf("%s: withheld marker accepted: %d", f.name, res.status)
		}
	}
	c.add(cfg.HeadDelay)
	for _, f := range formats {
		p, _ := getPage(t, feed+"?marker="+newest+"&direction=forward", f, nil)
		if got := pageIDs(p); len(got) != 1 || got[0] != fresh {
			t.Errorf("%s: after the head delay forward shows %v, want [%s]", f.name, got, fresh)
		}
	}
}
