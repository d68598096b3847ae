package ingest_test

// A small, fully controlled Atom Hopper stand-in (marker, direction,
// marker=last, startingAt, limit, 404 on chosen markers, previous links) so
// that paging edge cases can be staged entry by entry.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/twmb/franz-go/pkg/kadm"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/ingest"
	"github.com/feedmeter/feedmeter/internal/e2e"
	"github.com/feedmeter/feedmeter/model"
	"github.com/twmb/franz-go/pkg/kgo"
)

type fentry struct {
	id    string // full atom id; "" renders an entry without atom:id
	pub   time.Time
	raw   string // when set, served verbatim instead of a rendered entry
	label string // for entries without id: how the fake finds them
}

type fakeFeed struct {
	mu      sync.Mutex
	tenant  string
	entries []fentry        // oldest first
	missing map[string]bool // markers answered 404 although the entry is listed
	maxPage int             // when not 0, pages hold at most this many entries whatever the limit
	gets    []string
}

func newFakeFeed(tenant string) *fakeFeed {
	return &fakeFeed{tenant: tenant, missing: map[string]bool{}}
}

func (f *fakeFeed) add(e fentry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, e)
}

func rid(n int) string { return fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", n) }

func entryXML(tenant string, e fentry) string {
	if e.raw != "" {
		return e.raw
	}
	id := ""
	if e.id != "" {
		id = "<atom:id>" + e.id + "</atom:id>"
	}
	ev := strings.TrimPrefix(e.id, "urn:uuid:")
	if ev == "" {
		ev = "11111111-1111-4111-8111-111111111111"
	}
	p := e.pub.UTC().Format("2006-01-02T15:04:05.000Z")
	return `<atom:entry xmlns:atom="http://www.w3.org/2005/Atom">` + id +
		`<atom:content type="application/xml"><event xmlns="http://docs.rackspace.com/core/event" xmlns:p="http://docs.rackspace.com/usage/cloudbackup/bandwidthIn" dataCenter="DFW1" endTime="2012-06-15T10:19:52Z" environment="PROD" id="` + ev +
		`" region="DFW" resourceId="r1" startTime="2012-06-14T10:19:52Z" tenantId="` + tenant + `" type="USAGE" version="1"><p:product bandwidthIn="5" resourceType="AGENT" serverID="9" serviceCode="CloudBackup" version="1"/></event></atom:content>` +
		`<atom:updated>` + p + `</atom:updated><atom:published>` + p + `</atom:published></atom:entry>` + "\n"
}

func (f *fakeFeed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, r.URL.RawQuery)
	q := r.URL.Query()
	limit := 25
	if l := q.Get("limit"); l != "" {
		limit, _ = strconv.Atoi(l)
	}
	if f.maxPage > 0 {
		limit = min(limit, f.maxPage)
	}
	n := len(f.entries)
	var idx []int // oldest first
	up := func(from int) {
		for i := from; i < n && len(idx) < limit; i++ {
			idx = append(idx, i)
		}
	}
	switch m := q.Get("marker"); {
	case m == "last":
		up(0)
	case m != "":
		at := -1
		for i, e := range f.entries {
			if (e.id == m || "urn:uuid:"+e.label == m) && !f.missing[m] {
				at = i
			}
		}
		if at < 0 {
			http.Error(w, "marker not found", http.StatusNotFound)
			return
		}
		if q.Get("direction") == "backward" {
			for i := at; i >= 0 && len(idx) < limit; i-- {
				idx = append([]int{i}, idx...)
			}
		} else {
			up(at + 1)
		}
	case q.Get("startingAt") != "":
		t, err := time.Parse(time.RFC3339Nano, q.Get("startingAt"))
		if err != nil {
			http.Error(w, "bad time", http.StatusBadRequest)
			return
		}
		from := n
		for i, e := range f.entries {
			if !e.pub.Before(t.Truncate(time.Millisecond)) {
				from = i
				break
			}
		}
		up(from)
	default:
		for i := n - 1; i >= 0 && len(idx) < limit; i-- {
			idx = append([]int{i}, idx...)
		}
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<feed xmlns="http://www.w3.org/2005/Atom">` + "\n")
	if len(idx) > 0 {
		newest := f.entries[idx[len(idx)-1]].id
		if newest == "" {
			newest = "urn:uuid:" + f.entries[idx[len(idx)-1]].label
		}
		b.WriteString(`<link rel="previous" href="http://x/backup/events/` + f.tenant + `?marker=` + newest + `&amp;direction=forward"/>` + "\n")
	}
	for k := len(idx) - 1; k >= 0; k-- {
		b.WriteString(entryXML(f.tenant, f.entries[idx[k]]))
	}
	b.WriteString("</feed>\n")
	w.Header().Set("Content-Type", "application/atom+xml")
	w.Write([]byte(b.String()))
}

func fakeReader(t *testing.T, f *fakeFeed, limit int) (*ingest.Reader, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := ingest.NewClient(ingest.ClientConfig{Limit: limit, Format: ingest.FormatXML,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Attempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	return &ingest.Reader{Client: c, Feed: srv.URL + "/backup/events/" + f.tenant, Tenant: f.tenant,
		Log: testLogger()}, srv
}

// readTwins reads to its head a feed of two entries published at one
// instant, limit entries a page: the checkpoint lists both at that instant.
func readTwins(t *testing.T, limit int) (*fakeFeed, *ingest.Reader, ingest.Checkpoint) {
	f := newFakeFeed("1234")
	T := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	f.add(fentry{id: rid(1), pub: T})
	f.add(fentry{id: rid(2), pub: T})
	r, _ := fakeReader(t, f, limit)
	var rec recorder
	cp, err := r.CatchUp(context.Background(), ingest.Checkpoint{}, &rec)
	if err != nil || cp.Marker != rid(2) || len(cp.SameTime) != 2 {
		t.Fatalf("%v; checkpoint %+v", err, cp)
	}
	return f, r, cp
}

// TestLostMarkerAfterAFullPageOfTwins: recovering after a lost marker, a
// first page made only of entries already processed (the same publication
// instant, listed in SameTime) is read past, not taken for "caught up"
// (the newer entries were never read while the marker stayed gone); and
// with nothing newer a run ends, publishing nothing twice.
func TestLostMarkerAfterAFullPageOfTwins(t *testing.T) {
	f, r, cp := readTwins(t, 2)
	T := cp.Published
	// A newer entry arrives; the marker's entry then answers 404.
	f.add(fentry{id: rid(3), pub: T.Add(time.Second)})
	f.mu.Lock()
	f.missing[rid(2)] = true
	f.mu.Unlock()
	var rest recorder
	for run := 0; run < 3; run++ {
		cp2, err := r.CatchUp(context.Background(), cp, &rest)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		cp = cp2
	}
	if len(rest.events()) != 1 {
		t.Errorf("after 3 polls that report success, %d events published; entry %s, newer than the checkpoint, was never read", len(rest.events()), rid(3))
	}
	// The lost marker again, nothing newer than what was published: a run
	// ends after a few pages.
	cp.Marker = rid(2)
	before := len(rest.batches)
	if _, err := r.CatchUp(context.Background(), cp, &rest); err != nil || len(rest.events()) != 1 || len(rest.batches)-before > 3 {
		t.Errorf("with nothing new: %v, %d events, %d batches published", err, len(rest.events()), len(rest.batches)-before)
	}
}

// TestIDlessEntryAtTheHead: an entry whose atom:id cannot be read, newest
// on its page, is dead-lettered once and the checkpoint moves past it (to
// the id the page's previous link names). It used to stay on the entry
// before: every later poll failed while the bad entry was the head, it was
// dead-lettered again when a newer entry came, and with limit=1 the newer
// entries were never reached.
func TestIDlessEntryAtTheHead(t *testing.T) {
	f := newFakeFeed("1234")
	T := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.add(fentry{id: rid(1), pub: T})
	f.add(fentry{id: "", label: "00000000-0000-4000-8000-0000000000bb", pub: T.Add(time.Second)}) // well-formed, no atom:id
	r, _ := fakeReader(t, f, 1000)
	var rec recorder
	cp, err := r.CatchUp(context.Background(), ingest.Checkpoint{}, &rec)
	if err != nil {
		t.Errorf("first run fails although every entry was published or dead-lettered: %v", err)
	}
	rejects := 0
	for _, b := range rec.batches {
		rejects += len(b.Rejects)
	}
	if len(rec.events()) != 1 || rejects != 1 {
		t.Errorf("first run: %d events, %d rejects, want 1 and 1", len(rec.events()), rejects)
	}
	cp2, err := r.CatchUp(context.Background(), cp, &rec)
	if err != nil {
		t.Errorf("a poll with nothing new fails: %v", err)
	}
	f.add(fentry{id: rid(3), pub: T.Add(2 * time.Second)})
	_, err = r.CatchUp(context.Background(), cp2, &rec)
	if err != nil || len(rec.events()) != 2 {
		t.Errorf("third run (a newer entry arrived): %v, %d events in all", err, len(rec.events()))
	}
	rejects = 0
	for _, b := range rec.batches {
		rejects += len(b.Rejects)
	}
	if rejects != 1 {
		t.Errorf("one bad entry became %d dead letters", rejects)
	}

	// With limit=1 the page after the good entry is the id-less one alone:
	// the run must read on past it.
	g := newFakeFeed("1234")
	g.add(fentry{id: rid(1), pub: T})
	g.add(fentry{id: "", label: "00000000-0000-4000-8000-0000000000bb", pub: T.Add(time.Second)})
	g.add(fentry{id: rid(3), pub: T.Add(2 * time.Second)})
	r1, _ := fakeReader(t, g, 1)
	var rec1 recorder
	cp1, err := r1.CatchUp(context.Background(), ingest.Checkpoint{}, &rec1)
	if err != nil || cp1.Marker != rid(3) || len(rec1.events()) != 2 {
		t.Errorf("limit=1: %v, %d of 2 good entries published, checkpoint %s", err, len(rec1.events()), cp1.Marker)
	}
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestFencedRunnerTakesTheSlotBack: a process whose slot producer was
// fenced (a --once run took the slot over) takes the slot over again and
// goes on; it used to fail every publish from then on.
func TestFencedRunnerTakesTheSlotBack(t *testing.T) {
	f := newFakeFeed("1234")
	T := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.add(fentry{id: rid(1), pub: T})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	brokers := e2e.KafkaCluster(t)
	cfg := runnerConfig(srv.URL, []string{"1234"}, brokers, 4)
	startRunner(t, cfg)
	waitUsage(t, brokers, 1, 10*time.Second)

	once := cfg
	once.Once = true
	b, err := ingest.NewRunner(once)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The --once run took the slot over: the running process's producer is
	// fenced. It takes the slot back and publishes the next entry.
	f.add(fentry{id: rid(2), pub: T.Add(time.Second)})
	waitUsage(t, brokers, 2, 15*time.Second)
	if n := len(e2eRecords(t, brokers)); n != 2 {
		t.Errorf("%d usage records, want 2", n)
	}
}

func e2eRecords(t *testing.T, brokers []string) []*kgo.Record {
	return e2e.TopicRecords(t, brokers, model.TopicUsage)
}

func waitUsage(t *testing.T, brokers []string, n int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(e2eRecords(t, brokers)) >= n {
			return
		}
	}
	t.Fatalf("fewer than %d usage records after %s", n, d)
}

// capped fails a publish past max batches: a run that would go on for
// ever ends.
type capped struct {
	recorder
	max int
}

func (c *capped) Publish(ctx context.Context, b *ingest.Batch) error {
	if len(c.batches) >= c.max {
		return errors.New("too many batches: the run does not end")
	}
	return c.recorder.Publish(ctx, b)
}

// TestTwoLostMarkers: two markers that both answer 404 (while the feed
// still lists them) end a run after a few pages, publishing no event, with
// an error: nothing tells whether unread entries follow them. A run used
// to go back and forth between them, publishing checkpoints for ever.
func TestTwoLostMarkers(t *testing.T) {
	f, r, cp := readTwins(t, 1000)
	f.mu.Lock()
	f.missing[rid(1)], f.missing[rid(2)] = true, true
	f.mu.Unlock()
	c := &capped{max: 50}
	if _, err := r.CatchUp(context.Background(), cp, c); err == nil || !strings.Contains(err.Error(), "cannot read past them") ||
		len(c.batches) > 2 || len(c.events()) != 0 {
		t.Errorf("%v; %d batches, %d events published", err, len(c.batches), len(c.events()))
	}
}

// brokenEntry is an entry that is not well-formed XML, with n bytes of
// random (incompressible) content: a reject whose dead letter carries
// about n bytes.
func brokenEntry(id string, n int) fentry {
	junk := make([]byte, n/2)
	rand.Read(junk)
	return fentry{id: id, raw: `<atom:entry xmlns:atom="http://www.w3.org/2005/Atom"><atom:id>` + id +
		`</atom:id><atom:content type="application/xml">` + hex.EncodeToString(junk) +
		` & not well-formed</atom:content><atom:published>2026-01-02T03:04:05Z</atom:published></atom:entry>` + "\n"}
}

// runTwoTenants runs ingest (not --once) over tenants aaa and bbb, which
// share its one slot, until the test ends.
func runTwoTenants(t *testing.T, fa, fb *fakeFeed, brokers []string) {
	mux := http.NewServeMux()
	mux.Handle("/backup/events/aaa", fa)
	mux.Handle("/backup/events/bbb", fb)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	startRunner(t, runnerConfig(srv.URL, []string{"aaa", "bbb"}, brokers, 1))
}

// runnerConfig is ingest of tenants from the fake feeds at srvURL into
// slots slots: polls every 200 ms, fetches retried within milliseconds.
func runnerConfig(srvURL string, tenants, brokers []string, slots int32) ingest.Config {
	return ingest.Config{
		Feed: srvURL + "/backup/events", Tenants: tenants, Workers: 2,
		Client:    ingest.ClientConfig{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Attempts: 3},
		Kafka:     ingest.KafkaConfig{Brokers: brokers, Slots: slots, TransactionTimeout: 5 * time.Second},
		IdleEvery: 200 * time.Millisecond,
		Log:       testLogger(),
	}
}

// startRunner runs cfg (not --once) until the test ends.
func startRunner(t *testing.T, cfg ingest.Config) {
	r, err := ingest.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestHugeRejectIsCut: a broken entry of 2 MB is dead-lettered with its
// first 256 KiB and a reason that says so (the whole would exceed the
// broker's max.message.bytes and fail its page for ever), and the slot's
// other tenant is read.
func TestHugeRejectIsCut(t *testing.T) {
	fa, fb := newFakeFeed("aaa"), newFakeFeed("bbb")
	fa.add(brokenEntry(rid(1), 2<<20))
	fb.add(fentry{id: rid(2), pub: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	brokers := e2e.KafkaCluster(t)
	runTwoTenants(t, fa, fb, brokers)
	waitUsage(t, brokers, 1, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if dls := e2e.TopicRecords(t, brokers, model.TopicDeadLetter); len(dls) > 0 {
			var dl model.DeadLetter
			if err := json.Unmarshal(dls[0].Value, &dl); err != nil {
				t.Fatal(err)
			}
			if len(dl.Raw) != 256<<10 || dl.EntryID != rid(1) || !strings.Contains(dl.Reason, "the first 262144 of ") {
				t.Errorf("dead letter of %s: %d raw bytes, reason %q", dl.EntryID, len(dl.Raw), dl.Reason)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter in 10 s")
		}
	}
}

// TestTenantThatCannotPublishDoesNotStarveItsSlot: a tenant whose page can
// never be published (here its dead letter is over the topic's
// max.message.bytes) fails on its own schedule; the slot is taken over again
// after each failure, and its other tenant is still read. The first
// tenant used to come first after every takeover, and the other was never
// read.
func TestTenantThatCannotPublishDoesNotStarveItsSlot(t *testing.T) {
	brokers := e2e.KafkaCluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	small := "20000"
	_, err = kadm.NewClient(cl).CreateTopic(context.Background(), 1, -1, map[string]*string{"max.message.bytes": &small}, model.TopicDeadLetter)
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	fa, fb := newFakeFeed("aaa"), newFakeFeed("bbb")
	fa.add(brokenEntry(rid(1), 60000))
	fb.add(fentry{id: rid(2), pub: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	runTwoTenants(t, fa, fb, brokers)
	waitUsage(t, brokers, 1, 10*time.Second)
	if dls := e2e.TopicRecords(t, brokers, model.TopicDeadLetter); len(dls) != 0 {
		t.Errorf("%d dead letters on a topic that takes none this large", len(dls))
	}
}

// TestFullPageOfLostTwins: when a whole page (limit 1 or 2) is entries
// already processed whose markers are all not found, a run cannot read
// past them: it says so, every run, instead of reporting caught up while
// the newer entry waits unread.
func TestFullPageOfLostTwins(t *testing.T) {
	for _, c := range []struct {
		limit int
		lost  []string
	}{{1, []string{rid(2)}}, {2, []string{rid(1), rid(2)}}} {
		f, r, cp := readTwins(t, c.limit)
		f.add(fentry{id: rid(3), pub: cp.Published.Add(time.Second)})
		f.mu.Lock()
		for _, id := range c.lost {
			f.missing[id] = true
		}
		f.mu.Unlock()
		var rest recorder
		for run := range 3 {
			next, err := r.CatchUp(context.Background(), cp, &rest)
			if err == nil || !strings.Contains(err.Error(), "cannot read past them") {
				t.Errorf("limit %d, run %d: %v, marker %s, want the stall reported", c.limit, run, err, next.Marker)
			}
			cp = next
		}
		if len(rest.events()) != 0 {
			t.Errorf("limit %d: %d events published", c.limit, len(rest.events()))
		}
	}
}

// TestLostTwinsOnAShortPage: the same when the server's pages are shorter
// than the limit asked (2 of 1,000), and when the unread entry is at the
// twins' own instant: the entry after them must be reported out of reach,
// not the feed taken for caught up.
func TestLostTwinsOnAShortPage(t *testing.T) {
	for _, later := range []time.Duration{time.Second, 0} {
		f, r, cp := readTwins(t, 1000)
		f.add(fentry{id: rid(3), pub: cp.Published.Add(later)})
		f.mu.Lock()
		f.maxPage, f.missing[rid(1)], f.missing[rid(2)] = 2, true, true
		f.mu.Unlock()
		var rest recorder
		if _, err := r.CatchUp(context.Background(), cp, &rest); err == nil || !strings.Contains(err.Error(), "cannot read past them") {
			t.Errorf("entry %v after the twins: %v, want the stall reported", later, err)
		}
	}
}

// deadLetterOfHuge runs ingest over tenant aaa, whose first entry is the
// rendered entry with attribute attr="…" set to n random bytes as hex and
// whose second is plain, and tenant bbb in the same slot. Both tenants must
// read on: it returns the one dead letter, of aaa's first entry.
func deadLetterOfHuge(t *testing.T, attr string, n int) model.DeadLetter {
	t.Helper()
	fa, fb := newFakeFeed("aaa"), newFakeFeed("bbb")
	T := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	junk := make([]byte, n/2)
	rand.Read(junk)
	entry := entryXML("aaa", fentry{id: rid(1), pub: T})
	at := strings.Index(entry, attr+`="`) + len(attr) + 2
	end := at + strings.IndexByte(entry[at:], '"')
	fa.add(fentry{id: rid(1), pub: T, raw: entry[:at] + hex.EncodeToString(junk) + entry[end:]})
	fa.add(fentry{id: rid(2), pub: T.Add(time.Second)})
	fb.add(fentry{id: rid(3), pub: T})
	brokers := e2e.KafkaCluster(t)
	runTwoTenants(t, fa, fb, brokers)
	waitUsage(t, brokers, 2, 10*time.Second) // aaa's second entry and bbb's
	dls := e2e.TopicRecords(t, brokers, model.TopicDeadLetter)
	var dl model.DeadLetter
	if len(dls) != 1 || json.Unmarshal(dls[0].Value, &dl) != nil || dl.EntryID != rid(1) {
		t.Fatalf("%d dead letters, the first of %s", len(dls), dl.EntryID)
	}
	return dl
}

// TestHugeValidEvent: a well-formed entry whose event is over what a Kafka
// record may be (a resourceId of 1.5 MB) is dead-lettered with the reason
// and its first 256 KiB, and its tenant reads on; its page used to fail
// every poll.
func TestHugeValidEvent(t *testing.T) {
	dl := deadLetterOfHuge(t, "resourceId", 1500<<10)
	if !strings.Contains(dl.Reason, "bytes as JSON, over the") || len(dl.Raw) != 256<<10 ||
		!bytes.Contains(dl.Raw[:200], []byte(rid(1))) || bytes.Contains(dl.Raw, []byte(rid(2))) {
		t.Errorf("dead letter: reason %.100q, %d raw bytes beginning %.120q", dl.Reason, len(dl.Raw), dl.Raw)
	}
}

// TestLongReasonIsCut: an entry whose bad value is 700 KB (its reject's
// reason quotes it) is dead-lettered with the reason cut, and its tenant
// reads on; the dead letter used to be over max.message.bytes.
func TestLongReasonIsCut(t *testing.T) {
	dl := deadLetterOfHuge(t, "bandwidthIn", 700<<10)
	if len(dl.Reason) > 5<<10 || !strings.Contains(dl.Reason, "bytes in all)") {
		t.Errorf("reason %.200q… (%d bytes)", dl.Reason, len(dl.Reason))
	}
}

// TestForeignTenantIsDeadLettered: an entry in tenant aaa's feed whose
// event names tenant zzz is published to neither: it is dead-lettered with
// a reason naming both tenants, and the feed reads on. It used to be
// published, and billed, to zzz.
func TestForeignTenantIsDeadLettered(t *testing.T) {
	fa, fb := newFakeFeed("aaa"), newFakeFeed("bbb")
	T := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fa.add(fentry{id: rid(1), pub: T, raw: entryXML("zzz", fentry{id: rid(1), pub: T})})
	fa.add(fentry{id: rid(2), pub: T.Add(time.Second)})
	fb.add(fentry{id: rid(3), pub: T})
	brokers := e2e.KafkaCluster(t)
	runTwoTenants(t, fa, fb, brokers)
	waitUsage(t, brokers, 2, 10*time.Second) // aaa's second entry and bbb's
	for _, r := range e2e.TopicRecords(t, brokers, model.TopicUsage) {
		if string(r.Key) == "zzz" || bytes.Contains(r.Value, []byte(`"tenant_id":"zzz"`)) {
			t.Errorf("a usage record of tenant zzz was published: %s", r.Value)
		}
	}
	dls := e2e.TopicRecords(t, brokers, model.TopicDeadLetter)
	var dl model.DeadLetter
	if len(dls) != 1 || json.Unmarshal(dls[0].Value, &dl) != nil {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	if dl.EntryID != rid(1) || dl.TenantID != "aaa" || !strings.Contains(dl.Reason, `"zzz"`) || !strings.Contains(dl.Reason, `"aaa"`) {
		t.Errorf("dead letter of %s (tenant %s): %q", dl.EntryID, dl.TenantID, dl.Reason)
	}
}
