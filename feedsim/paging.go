package feedsim

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Paging, as design.md ("The upstream") describes Atom Hopper:
//
//   - a page is newest first; limit defaults to 25 and must be 1..1000;
//   - marker+direction=forward: the entries newer than the marker, marker
//     excluded (the limit entries just newer, shown newest first);
//     direction=backward: the marker and older, marker included; a marker
//     without direction is forward; marker=last is the oldest page;
//   - links: current (the bare feed), self, previous (when the page has
//     entries: forward from its newest), next (when older entries exist:
//     backward from the entry just older than the page), last (on the head
//     page only); an empty page has neither previous nor next;
//   - search=(cat=…) filters, startingAt=<RFC 3339> starts at a time
//     (forward: published at or after it; backward: at or before it) and
//     cannot go with a marker.

const (
	defaultLimit = 25
	maxLimit     = 1000
)

// pageQuery is a feed request's paging parameters.
type pageQuery struct {
	limit      int
	marker     string // "", "last" or an entry id as given
	direction  string // "forward" or "backward" ("" when not given)
	search     string
	match      matcher
	startingAt string // as given
	at         int64  // startingAt in Unix ms
}

// httpError is a client error with its status.
type httpError struct {
	status int
	msg    string
}

func parsePageQuery(r *http.Request) (*pageQuery, *httpError) {
	v := r.URL.Query()
	q := &pageQuery{limit: defaultLimit}
	bad := func(format string, args ...any) *httpError {
		return &httpError{http.StatusBadRequest, sprintf(format, args...)}
	}
	if l, ok := v["limit"]; ok {
		n, err := strconv.Atoi(l[0])
		if err != nil || n < 1 || n > maxLimit {
			return nil, bad("limit %q is not a number from 1 to %d", l[0], maxLimit)
		}
		q.limit = n
	}
	if d, ok := v["direction"]; ok {
		if d[0] != "forward" && d[0] != "backward" {
			return nil, bad("direction %q is neither forward nor backward", d[0])
		}
		q.direction = d[0]
	}
	q.marker = strings.TrimSpace(v.Get("marker"))
	if s, ok := v["startingAt"]; ok {
		if q.marker != "" {
			return nil, bad("startingAt cannot be used with marker")
		}
		t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s[0]))
		if err != nil {
			return nil, bad("startingAt %q is not an RFC 3339 time", s[0])
		}
		q.startingAt = s[0]
		// Entries carry milliseconds: a time between two starts at the later.
		ns := t.UnixNano()
		q.at = floorDiv(ns, 1e6)
		if ns-q.at*1e6 > 0 {
			q.at++
		}
	}
	if s := v.Get("search"); s != "" {
		m, err := parseSearch(s)
		if err != nil {
			return nil, bad("%v", err)
		}
		q.search, q.match = s, m
	}
	return q, nil
}

// page is a computed page: entry indexes newest first, and the entry just
// older than the page (-1 when there is none).
type page struct {
	idx   []int
	older int
	head  bool
}

func (f *feed) matches(m matcher, i int) bool { return m == nil || m(f, &f.entries[i]) }

// below returns the newest matching index ≤ i, or -1.
func (f *feed) below(m matcher, i int) int {
	for ; i >= 0; i-- {
		if f.matches(m, i) {
			return i
		}
	}
	return -1
}

// down collects up to limit matching entries from i downwards.
func (f *feed) down(m matcher, i, limit int, idx []int) page {
	for ; i >= 0 && len(idx) < limit; i-- {
		if f.matches(m, i) {
			idx = append(idx, i)
		}
	}
	p := page{idx: idx, older: -1}
	if len(idx) == limit {
		p.older = f.below(m, i)
	}
	return p
}

// up collects up to limit matching entries from i upwards (below n), and
// returns them newest first.
func (f *feed) up(m matcher, i, n, limit int, idx []int) page {
	for ; i < n && len(idx) < limit; i++ {
		if f.matches(m, i) {
			idx = append(idx, i)
		}
	}
	for a, b := 0, len(idx)-1; a < b; a, b = a+1, b-1 {
		idx[a], idx[b] = idx[b], idx[a]
	}
	p := page{idx: idx, older: -1}
	if len(idx) > 0 {
		p.older = f.below(m, idx[len(idx)-1]-1)
	}
	return p
}

// lookup returns the index of the entry with the given atom id among the
// first n, or -1.
func (f *feed) lookup(id string, n int) int {
	rest, ok := strings.CutPrefix(strings.TrimSpace(id), "urn:uuid:")
	if !ok {
		return -1
	}
	u, ok := parseUUID(rest)
	if !ok {
		return -1
	}
	i, ok := f.byID[u]
	if !ok || int(i) >= n {
		return -1
	}
	return int(i)
}

// compute finds the page q asks for among the first n entries. The caller
// holds f.mu.
func (f *feed) compute(q *pageQuery, n int, idx []int) (page, *httpError) {
	switch {
	case q.marker == "last":
		return f.up(q.match, 0, n, q.limit, idx), nil
	case q.marker != "":
		m := f.lookup(q.marker, n)
		if m < 0 {
			return page{}, &httpError{http.StatusNotFound, sprintf("marker %q is not an entry of this feed", q.marker)}
		}
		if q.direction == "backward" {
			return f.down(q.match, m, q.limit, idx), nil
		}
		return f.up(q.match, m+1, n, q.limit, idx), nil
	case q.startingAt != "":
		// First index published at or after the time.
		lo, hi := 0, n
		for lo < hi {
			h := int(uint(lo+hi) >> 1)
			if f.entries[h].published < q.at {
				lo = h + 1
			} else {
				hi = h
			}
		}
		if q.direction == "backward" {
			// Last index published at or before the time.
			for lo < n && f.entries[lo].published == q.at {
				lo++
			}
			return f.down(q.match, lo-1, q.limit, idx), nil
		}
		return f.up(q.match, lo, n, q.limit, idx), nil
	}
	p := f.down(q.match, n-1, q.limit, idx)
	p.head = true
	return p, nil
}

// links are a page's hrefs, "" when absent.
type links struct {
	current, self, previous, last, next string
}

// pageLinks builds the links of page p of feed URL u.
func (f *feed) pageLinks(u string, q *pageQuery, p page) links {
	var l links
	l.current = u
	tail := "&limit=" + strconv.Itoa(q.limit)
	if q.search != "" {
		tail += "&search=" + queryEscape(q.search)
	}
	switch {
	case q.marker != "":
		d := q.direction
		if d == "" {
			d = "forward"
			if q.marker == "last" {
				d = "backward"
			}
		}
		l.self = u + "?marker=" + queryEscape(q.marker) + "&direction=" + d + tail
	case q.startingAt != "":
		d := q.direction
		if d == "" {
			d = "forward"
		}
		l.self = u + "?startingAt=" + queryEscape(q.startingAt) + "&direction=" + d + tail
	default:
		l.self = u + "?" + tail[1:]
	}
	if len(p.idx) > 0 {
		l.previous = u + "?marker=urn:uuid:" + f.entries[p.idx[0]].id.String() + "&direction=forward" + tail
		if p.older >= 0 {
			l.next = u + "?marker=urn:uuid:" + f.entries[p.older].id.String() + "&direction=backward" + tail
		}
	}
	if p.head {
		l.last = u + "?marker=last&direction=backward" + tail
	}
	return l
}

// queryEscape escapes a query value, leaving ":" as it is (ids and times
// read better that way and it is legal in a query).
func queryEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "%3A", ":") }

// updated is the feed's updated time: its newest visible entry's, or the
// start of its history.
func (f *feed) updated(n int) int64 {
	if n == 0 {
		return f.empty
	}
	return f.entries[n-1].published
}

// appendFeedXML renders a page as an Atom feed document.
func (r *renderer) appendFeedXML(b []byte, l links, p page, updated int64) []byte {
	link := func(b []byte, href, rel string) []byte {
		if href == "" {
			return b
		}
		b = append(b, "  <link href=\""...)
		b = appendXMLAttr(b, href)
		b = append(b, "\" rel=\""...)
		b = append(b, rel...)
		return append(b, "\"/>\n"...)
	}
	b = append(b, xmlHeader+"<feed xmlns=\"http://www.w3.org/2005/Atom\">\n"...)
	b = link(b, l.current, "current")
	b = link(b, l.self, "self")
	b = append(b, "  <id>urn:uuid:"...)
	b = r.f.id.appendTo(b)
	b = append(b, "</id>\n  <title type=\"text\">"...)
	b = append(b, r.f.name...)
	b = append(b, "</title>\n"...)
	b = link(b, l.previous, "previous")
	b = link(b, l.last, "last")
	b = link(b, l.next, "next")
	b = append(b, "  <updated>"...)
	b = appendMilli(b, updated)
	b = append(b, "</updated>\n"...)
	for _, i := range p.idx {
		b = r.appendEntryXML(b, i)
	}
	return append(b, "</feed>\n"...)
}

// appendFeedJSON renders a page as Cloud Feeds' JSON: keys sorted, "entry"
// and "link" arrays, "entry" absent on an empty page.
func (r *renderer) appendFeedJSON(b []byte, l links, p page, updated int64) []byte {
	b = append(b, `{"feed":{"@type":"`+nsAtomJSON+`"`...)
	if len(p.idx) > 0 {
		b = append(b, `,"entry":[`...)
		for k, i := range p.idx {
			if k > 0 {
				b = append(b, ',')
			}
			b = r.appendEntryJSON(b, i)
		}
		b = append(b, ']')
	}
	b = append(b, `,"id":"urn:uuid:`...)
	b = r.f.id.appendTo(b)
	b = append(b, `","link":[`...)
	first := true
	for _, x := range [...][2]string{{l.current, "current"}, {l.self, "self"}, {l.previous, "previous"}, {l.last, "last"}, {l.next, "next"}} {
		if x[0] == "" {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"href":`...)
		b = appendJSONStr(b, x[0])
		b = append(b, `,"rel":"`...)
		b = append(b, x[1]...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"title":{"@text":`...)
	b = appendJSONStr(b, r.f.name)
	b = append(b, `,"type":"text"},"updated":"`...)
	b = appendMilli(b, updated)
	return append(b, "\"}}\n"...)
}

const (
	ctypeAtom = "application/atom+xml"
	ctypeJSON = "application/vnd.rackspace.atom+json"
)

// feedOf returns the feed a request names; an unknown tenant has an empty
// feed, as on Cloud Feeds.
func (s *Server) feedOf(r *http.Request) *feed {
	t := s.byID[r.PathValue("tid")]
	name := feedName(r)
	if t == nil {
		tid := r.PathValue("tid")
		var id uuid
		putUint64(id[:8], mix64(uint64(len(tid))^0x666565646964))
		for _, c := range []byte(tid + name) {
			putUint64(id[8:], mix64(getUint64(id[8:])^uint64(c)))
		}
		id[6] = id[6]&0x0f | 0x40
		id[8] = id[8]&0x3f | 0x80
		return newFeed(name, &tenant{id: tid}, id, s.start*1000)
	}
	if name == "servers/events" {
		return t.servers
	}
	return t.backup
}

func feedName(r *http.Request) string {
	if strings.HasPrefix(r.URL.Path, "/servers/") {
		return "servers/events"
	}
	return "backup/events"
}

func (s *Server) handleFeed(w http.ResponseWriter, r *http.Request, drop bool) {
	js := wantsJSON(r)
	q, herr := parsePageQuery(r)
	if herr != nil {
		writeFeedError(w, herr.status, herr.msg, js)
		return
	}
	f := s.feedOf(r)
	base := baseURL(r)
	rd := newRenderer(f, base, s.threshold())
	buf := s.getBuf()
	defer s.putBuf(buf)
	idx := make([]int, 0, q.limit)

	f.mu.RLock()
	n := f.visible(s.now().UnixMilli(), s.cfg.HeadDelay.Milliseconds())
	p, herr := f.compute(q, n, idx)
	if herr == nil {
		l := f.pageLinks(base+"/"+f.name+"/"+f.tenant.id, q, p)
		if js {
			*buf = rd.appendFeedJSON(*buf, l, p, f.updated(n))
		} else {
			*buf = rd.appendFeedXML(*buf, l, p, f.updated(n))
		}
	}
	f.mu.RUnlock()

	if herr != nil {
		writeFeedError(w, herr.status, herr.msg, js)
		return
	}
	ctype := ctypeAtom
	if js {
		ctype = ctypeJSON
	}
	writeBody(w, http.StatusOK, ctype, *buf, drop)
}

// handleEntry serves one entry by id. Without a tenant in the path (the
// entries' own self links) every tenant's feed is searched.
func (s *Server) handleEntry(w http.ResponseWriter, r *http.Request, drop bool) {
	js := wantsJSON(r)
	id := r.PathValue("id")
	var feeds []*feed
	if r.PathValue("tid") != "" {
		feeds = []*feed{s.feedOf(r)}
	} else {
		for _, t := range s.tenants {
			if feedName(r) == "servers/events" {
				feeds = append(feeds, t.servers)
			} else {
				feeds = append(feeds, t.backup)
			}
		}
	}
	buf := s.getBuf()
	defer s.putBuf(buf)
	found := false
	now, delay := s.now().UnixMilli(), s.cfg.HeadDelay.Milliseconds()
	for _, f := range feeds {
		rd := newRenderer(f, baseURL(r), s.threshold())
		f.mu.RLock()
		if i := f.lookup(id, f.visible(now, delay)); i >= 0 {
			found = true
			if js {
				*buf = append(*buf, `{"entry":`...)
				*buf = rd.appendEntryJSON(*buf, i)
				*buf = append(*buf, "}\n"...)
			} else {
				*buf = append(*buf, xmlHeader...)
				*buf = rd.appendEntryXML(*buf, i)
			}
		}
		f.mu.RUnlock()
		if found {
			break
		}
	}
	if !found {
		writeFeedError(w, http.StatusNotFound, sprintf("entry %q not found", id), js)
		return
	}
	ctype := ctypeAtom
	if js {
		ctype = ctypeJSON
	}
	writeBody(w, http.StatusOK, ctype, *buf, drop)
}
