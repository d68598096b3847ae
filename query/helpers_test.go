package query

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
	"github.com/feedmeter/feedmeter/sink"
)

// quietLogger discards logs unless FEEDMETER_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("FEEDMETER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// loadThroughSink publishes events to an in-process Kafka as ingest does
// (key = tenant, headers kind and entry_id), runs the real sink into db
// until every distinct event is in usage_events, and stops it. The
// rollups are written by the schema's materialized views, as in production.
func loadThroughSink(t testing.TB, db *chtest.DB, events []model.Event) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, model.TopicUsage, model.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	distinct := map[model.DedupeKey]bool{}
	for i := range events {
		e := &events[i]
		distinct[e.Key()] = true
		recs = append(recs, &kgo.Record{Topic: model.TopicUsage, Key: []byte(e.TenantID), Value: e.AppendJSON(nil),
			Headers: []kgo.RecordHeader{{Key: model.HeaderKind, Value: []byte(e.Kind)}, {Key: model.HeaderEntryID, Value: []byte(e.EntryID)}}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cl.Close()
	s, err := sink.New(sink.Config{Brokers: brokers, ClickHouse: db.Addr, Database: db.Name,
		BatchRows: 5000, BatchAge: 100 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	}()
	for {
		var n uint64
		err := db.Conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&n)
		if err == nil && n == uint64(len(distinct)) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("sink loaded %d of %d events (last error %v)", n, len(distinct), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// distinctEvents keeps the first event of every dedupe key, as the sink does.
func distinctEvents(events []model.Event) []model.Event {
	seen := map[model.DedupeKey]bool{}
	var out []model.Event
	for _, e := range events {
		if !seen[e.Key()] {
			seen[e.Key()] = true
			out = append(out, e)
		}
	}
	return out
}

// genEvents makes a tenant's month of usage around October 2026, crossing
// hours, days and the month's edges: bandwidth and storage with quantities up
// to 2^64-1, licence intervals and snapshots (inside and outside Rackspace),
// and exact duplicates that the sink must drop.
func genEvents(seed uint64, tenant string, n int) []model.Event {
	r := rand.New(rand.NewPCG(seed, seed*7919))
	base := time.Date(2026, 9, 28, 0, 0, 0, 0, time.UTC)
	span := int64(37 * 24 * 3600) // to 2026-11-04
	kinds := []model.Kind{model.KindBandwidthIn, model.KindBandwidthOut, model.KindStorage, model.KindLicense}
	var out []model.Event
	for i := 0; i < n; i++ {
		if i > 10 && r.IntN(20) == 0 {
			out = append(out, out[r.IntN(len(out))]) // a duplicate
			continue
		}
		k := kinds[r.IntN(len(kinds))]
		e := model.Event{TenantID: tenant, EntryID: fmt.Sprintf("urn:uuid:%08x-0000-4000-8000-%012d", r.Uint32(), i),
			EventID: "ev-" + strconv.Itoa(i), Kind: k, ProductNamespace: model.NSCloudBackup + string(k), ProductVersion: "1",
			EventType: model.TypeUsage, EventVersion: "1", Region: []string{"DFW", "ORD"}[r.IntN(2)], Environment: "PROD",
			ResourceID: "agent-" + strconv.Itoa(r.IntN(4)), ResourceType: "AGENT", ServerID: strconv.Itoa(1 + r.IntN(6))}
		e.DataCenter = e.Region + "1"
		start := base.Add(time.Duration(r.Int64N(span)) * time.Second)
		if r.IntN(4) == 0 {
			start = start.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
		}
		dur := time.Duration(1+r.Int64N(24*3600)) * time.Second
		if r.IntN(8) == 0 {
			dur = 24 * time.Hour
		}
		e.StartTime, e.EndTime = start, start.Add(dur)
		e.Updated, e.Published = e.EndTime, e.EndTime
		switch k {
		case model.KindLicense:
			e.Quantity = 1
			if r.IntN(2) == 0 {
				e.EventType, e.ProductVersion = model.TypeUsageSnapshot, "3"
				e.EventTime, e.StartTime, e.EndTime = start, time.Time{}, time.Time{}
				e.ServerName = "srv-" + e.ServerID
				switch r.IntN(3) {
				case 0:
					ext := true
					e.External = &ext
					if r.IntN(2) == 0 {
						e.ServerID = "" // external servers may have no id
					}
				case 1:
					ext := false
					e.External = &ext
				}
			}
		case model.KindStorage:
			e.Quantity = r.Uint64N(1 << 42)
		default:
			e.Quantity = r.Uint64N(1 << 38)
		}
		if k != model.KindLicense && r.IntN(40) == 0 {
			e.Quantity = ^uint64(0) - r.Uint64N(1000)
		}
		out = append(out, e)
	}
	return out
}

// piece is the part of an event in one UTC hour: the split rule of the
// schema (0001_events.sql), written again here with big integers.
type piece struct {
	hour   time.Time
	q, bs  *big.Int
	last   bool   // the event's last piece (where it counts as one event)
	server string // the server dimension
}

func pieces(e *model.Event) []piece {
	server := e.ServerID
	if server == "" {
		server = "name:" + e.ServerName
	}
	q := new(big.Int).SetUint64(e.Quantity)
	if e.EventType != model.TypeUsage {
		return []piece{{hour: e.EventTime.UTC().Truncate(time.Hour), q: q, bs: new(big.Int), last: true, server: server}}
	}
	from, to := big.NewInt(e.StartTime.UnixNano()), big.NewInt(e.EndTime.UnixNano())
	dur := new(big.Int).Sub(to, from)
	bsTotal := new(big.Int)
	if e.Kind == model.KindStorage {
		bsTotal.Mul(q, dur).Quo(bsTotal, big.NewInt(1e9))
	}
	qLeft, bsLeft := new(big.Int).Set(q), new(big.Int).Set(bsTotal)
	var out []piece
	for h := e.StartTime.UTC().Truncate(time.Hour); h.Before(e.EndTime); h = h.Add(time.Hour) {
		if !h.Add(time.Hour).Before(e.EndTime) {
			out = append(out, piece{hour: h, q: qLeft, bs: bsLeft, last: true, server: server})
			break
		}
		lo := big.NewInt(h.UnixNano())
		if lo.Cmp(from) < 0 {
			lo = from
		}
		ov := new(big.Int).Sub(big.NewInt(h.Add(time.Hour).UnixNano()), lo)
		pq := new(big.Int).Mul(q, ov)
		pq.Quo(pq, dur)
		pb := new(big.Int)
		if e.Kind == model.KindStorage {
			pb.Mul(q, ov).Quo(pb, big.NewInt(1e9))
		}
		qLeft = new(big.Int).Sub(qLeft, pq)
		bsLeft = new(big.Int).Sub(bsLeft, pb)
		out = append(out, piece{hour: h, q: pq, bs: pb, server: server})
	}
	return out
}

// apiClient calls a test server with a token.
type apiClient struct {
	t     testing.TB
	base  string
	token string
}

func (c apiClient) get(path string, hdr ...string) (int, []byte, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return res.StatusCode, b, res.Header
}

// getJSON fetches path, wants status 200 and decodes the body into v.
func (c apiClient) getJSON(path string, v any) {
	c.t.Helper()
	code, body, _ := c.get(path)
	if code != http.StatusOK {
		c.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		c.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// testTokens makes tokens for tenants and an admin.
func testTokens(t testing.TB, tenants ...string) (*Tokens, map[string]string) {
	t.Helper()
	file := "tokens:\n"
	toks := map[string]string{}
	for _, who := range append([]string{"admin"}, tenants...) {
		tok, hash, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		toks[who] = tok
		p := Principal{Admin: who == "admin", Tenant: who}
		if p.Admin {
			p.Tenant = ""
		}
		file += TokenLine(hash, p) + "\n"
	}
	tk, err := ParseTokens([]byte(file))
	if err != nil {
		t.Fatalf("%v\n%s", err, file)
	}
	return tk, toks
}

// newTestServer serves store with rates and tokens on a loopback port.
func newTestServer(t testing.TB, store Store, rates *RateCard, tokens *Tokens) *httptest.Server {
	t.Helper()
	s, err := New(Config{Store: store, Rates: rates, Tokens: tokens, Logger: quietLogger(),
		Now: func() time.Time { return time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}
