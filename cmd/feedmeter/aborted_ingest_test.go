package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/internal/e2e"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/query"
	"github.com/feedmeter/feedmeter/schemas/chtest"
	"github.com/feedmeter/feedmeter/sink"
)

// changingFeed is one tenant's Cloud Feed of bandwidthOut entries whose
// quantities the test sets: an upstream that changes an entry between two
// ingest runs. Its only page holds every entry; read forward from there it
// is empty.
type changingFeed struct {
	tenant string
	mu     sync.Mutex
	bytes  []uint64 // entry i's bandwidthOut, oldest first
}

func (f *changingFeed) set(i int, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bytes[i] = bytes
}

// entryID is entry i's atom id. Entry i is the usage of the hour from 10+i
// o'clock on 2026-10-01, published an hour after it ended.
func (f *changingFeed) entryID(i int) string {
	return fmt.Sprintf("urn:uuid:5e1f0000-0000-4000-8000-%012d", i)
}

func (f *changingFeed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/backup/events/"+f.tenant {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/atom+xml")
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<feed xmlns="http://www.w3.org/2005/Atom">` + "\n")
	if r.URL.Query().Get("marker") == "last" {
		f.mu.Lock()
		for i := len(f.bytes) - 1; i >= 0; i-- { // newest first
			start := time.Date(2026, 10, 1, 10+i, 0, 0, 0, time.UTC)
			at := func(d time.Duration) string { return start.Add(d).Format(time.RFC3339) }
			fmt.Fprintf(&b, `<atom:entry xmlns:atom="http://www.w3.org/2005/Atom"><atom:id>%s</atom:id>`+
				`<atom:content type="application/xml"><event xmlns="http://docs.rackspace.com/core/event" xmlns:p="http://docs.rackspace.com/usage/cloudbackup/bandwidthOut" `+
				`dataCenter="DFW1" environment="PROD" id="6e1f0000-0000-4000-8000-%012d" region="DFW" resourceId="agent-1" startTime="%s" endTime="%s" tenantId="%s" type="USAGE" version="1">`+
				`<p:product bandwidthOut="%d" resourceType="AGENT" serverID="9" serviceCode="CloudBackup" version="1"/></event></atom:content>`+
				`<atom:updated>%s</atom:updated><atom:published>%s</atom:published></atom:entry>`+"\n",
				f.entryID(i), i, at(0), at(time.Hour), f.tenant, f.bytes[i], at(2*time.Hour), at(2*time.Hour))
		}
		f.mu.Unlock()
	}
	b.WriteString("</feed>\n")
	io.WriteString(w, b.String())
}

// TestAbortedIngestIsNotBilled: a real ingest process is killed after its
// page's records reached the broker and before its transaction committed;
// the upstream then changes an entry's quantity and ingest runs again to
// the end. With a sink running all along, ClickHouse (usage_events and the
// rollups) and the query service's usage and invoice hold exactly what
// Kafka committed: the second run's quantity, never the aborted one. A
// sink that reads uncommitted records takes the aborted record first and
// drops the committed one as its duplicate.
func TestAbortedIngestIsNotBilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	db := chtest.NewDB(t, true)
	brokers := e2e.KafkaCluster(t)
	const gib = 1 << 30
	feed := &changingFeed{tenant: "4242", bytes: []uint64{5 * gib, 10 * gib}}
	srv := httptest.NewServer(feed)
	t.Cleanup(srv.Close)
	args := []string{"ingest", "--once", "--feed", srv.URL + "/backup/events", "--tenants", feed.tenant,
		"--kafka", strings.Join(brokers, ","), "--admin", "", "--slots", "2", "--log-level", "error"}

	o := runProcess(t, feedmeterCmd(t, []string{"FEEDMETER_CRASH=flushed:1"}, args...), 0)
	if !o.killed {
		t.Fatalf("FEEDMETER_CRASH=flushed:1: the process was not killed (exit %d): %s", o.code, o.stderr)
	}
	if n := len(e2e.UncommittedRecords(t, brokers, model.TopicUsage)); n != 2 {
		t.Fatalf("%d usage records reached the broker before the kill, want the page's 2", n)
	}
	if n := len(e2e.TopicRecords(t, brokers, model.TopicUsage)); n != 0 {
		t.Fatalf("%d usage records committed by the killed process, want none", n)
	}

	// The sink runs from here on: it meets the open transaction, then its
	// abort (the next run's producer fences it) and the next run's commit.
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := sink.New(sink.Config{Brokers: brokers, ClickHouse: db.Addr, Database: db.Name, Group: "aborted-ingest-test",
		BatchAge: 100 * time.Millisecond, SkipMigrate: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sctx, stopSink := context.WithCancel(ctx)
	var sinkErr error
	sinkDone := make(chan struct{})
	go func() { sinkErr = s.Run(sctx); close(sinkDone) }()
	t.Cleanup(func() { stopSink(); <-sinkDone })

	feed.set(1, 30*gib)
	if o := runProcess(t, feedmeterCmd(t, nil, args...), 0); o.code != 0 || o.killed {
		t.Fatalf("second run: exit %d (killed %v): %s", o.code, o.killed, o.stderr)
	}

	// What Kafka committed, and where each partition's committed records end.
	committed := map[string]uint64{} // entry id -> quantity
	var total uint64
	ends := map[topicPartition]int64{}
	for _, r := range e2e.TopicRecords(t, brokers, model.TopicUsage) {
		var e model.Event
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("record %d/%d: %v", r.Partition, r.Offset, err)
		}
		committed[e.EntryID] = e.Quantity
		total += e.Quantity
		ends[topicPartition{r.Topic, r.Partition}] = max(ends[topicPartition{r.Topic, r.Partition}], r.Offset+1)
	}
	if want := map[string]uint64{feed.entryID(0): 5 * gib, feed.entryID(1): 30 * gib}; !maps.Equal(committed, want) {
		t.Fatalf("Kafka committed %v, want the second run's page %v", committed, want)
	}
	// The demo's wait: until sink_progress reaches every end.
	d := &downstream{conn: db.Conn, ends: ends}
	if err := d.waitSink(ctx, sinkDone, func() error { return sinkErr }); err != nil {
		t.Fatal(err)
	}
	stopSink()
	<-sinkDone
	if sinkErr != nil {
		t.Fatalf("sink: %v", sinkErr)
	}

	// ClickHouse and the query service hold what Kafka committed.
	rows := chtest.QueryStrings(t, db.Conn, "SELECT entry_id, toString(quantity) FROM usage_events WHERE tenant_id = ?", feed.tenant)
	got := map[string]string{}
	for _, r := range rows {
		id, q, _ := strings.Cut(r, "\t")
		got[id] = q
	}
	want := map[string]string{}
	for id, q := range committed {
		want[id] = fmt.Sprint(q)
	}
	chtest.CompareRows(t, "usage_events: quantity of", got, want)
	for _, table := range []string{"usage_hourly", "usage_daily"} {
		got := map[string]string{}
		for _, r := range chtest.QueryStrings(t, db.Conn, "SELECT kind, toString(sum(quantity)), toString(sum(events)) FROM "+table+
			" WHERE tenant_id = ? GROUP BY kind", feed.tenant) {
			kind, v, _ := strings.Cut(r, "\t")
			got[kind] = v
		}
		chtest.CompareRows(t, table+": quantity and events of", got,
			map[string]string{string(model.KindBandwidthOut): fmt.Sprintf("%d\t%d", total, len(committed))})
	}

	rates, err := query.ParseRateCard(query.ExampleRateCard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api, stopAPI, err := serveAPI(db.Addr, db.Name, rates, ln, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer stopAPI()
	var usage struct {
		Rows []struct {
			Kind   string `json:"kind"`
			Bytes  string `json:"bytes"`
			Events uint64 `json:"events"`
		} `json:"rows"`
	}
	if err := api.get(ctx, "/v1/tenants/"+feed.tenant+"/usage?period=2026-10&granularity=month", &usage); err != nil {
		t.Fatal(err)
	}
	gotUsage := map[string]string{}
	for _, r := range usage.Rows {
		if r.Events == 0 {
			continue // a kind without events (every kind has a row)
		}
		gotUsage[r.Kind] = fmt.Sprintf("%s bytes, %d events", r.Bytes, r.Events)
	}
	chtest.CompareRows(t, "usage API: the month of", gotUsage,
		map[string]string{string(model.KindBandwidthOut): fmt.Sprintf("%d bytes, %d events", total, len(committed))})
	var inv struct {
		Lines []struct {
			Kind     string `json:"kind"`
			Quantity string `json:"quantity"`
			Amount   string `json:"amount"`
		} `json:"lines"`
		Total string `json:"total"`
	}
	if err := api.get(ctx, "/v1/tenants/"+feed.tenant+"/invoice?period=2026-10", &inv); err != nil {
		t.Fatal(err)
	}
	// The example card's first bandwidthOut tier: 0.12 USD per GB of 2^30
	// bytes; everything else is free or unused here.
	gb := new(big.Rat).SetFrac(new(big.Int).SetUint64(total), big.NewInt(gib))
	amount := new(big.Rat).Mul(gb, big.NewRat(12, 100)).FloatString(2)
	gotLines := map[string]string{}
	for _, l := range inv.Lines {
		if l.Amount != "0.00" {
			gotLines[l.Kind] = l.Quantity + " GB, " + l.Amount
		}
	}
	chtest.CompareRows(t, "invoice: the line of", gotLines,
		map[string]string{string(model.KindBandwidthOut): gb.FloatString(0) + " GB, " + amount})
	if inv.Total != amount {
		t.Errorf("invoice total %s, want %s: what Kafka committed (%s GB) at 0.12", inv.Total, amount, gb.FloatString(0))
	}
}
