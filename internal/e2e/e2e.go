// Package e2e holds what the end-to-end tests share: an upstream
// (feedsim over HTTP on 127.0.0.1), an in-process Kafka, and the checks that
// hold Kafka's contents to feedsim's ground truth. Only tests import it.
package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/feedsim"
	"github.com/feedmeter/feedmeter/ingest"
	"github.com/feedmeter/feedmeter/model"
)

// Upstream starts feedsim on 127.0.0.1 with the given faults.
func Upstream(t testing.TB, tenants, days int, faults string) (*feedsim.Server, *httptest.Server) {
	t.Helper()
	return UpstreamCUF(t, tenants, days, faults, "none")
}

// UpstreamCUF starts feedsim on 127.0.0.1 with the given faults and
// identity facts (feedsim.ParseCUF's syntax).
func UpstreamCUF(t testing.TB, tenants, days int, faults, cuf string) (*feedsim.Server, *httptest.Server) {
	t.Helper()
	cfg := feedsim.DefaultConfig()
	cfg.Tenants, cfg.Days, cfg.Seed = tenants, days, 7
	cfg.RetryAfter, cfg.SlowDelay = 0, 20*time.Millisecond
	f, err := feedsim.ParseFaults(faults)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Faults = f
	if cfg.CUF, err = feedsim.ParseCUF(cuf); err != nil {
		t.Fatal(err)
	}
	sim, err := feedsim.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return sim, srv
}

// KafkaCluster starts an in-process Kafka (kfake) for the test.
func KafkaCluster(t testing.TB) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// IngestConfig is a once-mode ingest of tenants from srv into brokers,
// with short backoffs.
func IngestConfig(srv *httptest.Server, brokers []string, tenants []string, format ingest.Format) ingest.Config {
	return ingest.Config{
		Feed: srv.URL + "/backup/events", Tenants: tenants, Once: true, Workers: 8,
		Client: ingest.ClientConfig{
			IdentityURL: srv.URL + "/v2.0/tokens", Username: "demo", APIKey: "demo", Format: format,
			MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Attempts: 40,
		},
		Kafka: ingest.KafkaConfig{Brokers: brokers, Slots: 8},
		Log:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// TopicRecords reads every committed record of a topic: what was
// published, as the sink reads it.
func TopicRecords(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	return readTopic(t, brokers, topic, kgo.ReadCommitted())
}

// UncommittedRecords reads every record of a topic, those of aborted and
// open transactions too: what reached the broker, published or not.
func UncommittedRecords(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	return readTopic(t, brokers, topic, kgo.ReadUncommitted())
}

func readTopic(t testing.TB, brokers []string, topic string, isolation kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(isolation), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	idle := 0
	for idle < 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r); n++ })
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
	}
	return out
}

type dayKey struct{ tenant, kind, day string }

type sums struct {
	entries   int
	bandwidth big.Int
	storage   big.Int
	servers   map[string]bool
}

// CheckAgainstTruth holds the usage topic to feedsim's ground truth: every
// event once, none missing, sums equal; and one dead letter per entry
// served malformed. Kafka holds what the feed served, so the sums are the
// served ones (every copy of a republished event, corrected events too),
// never the billed ones: those are what ClickHouse and the API must equal.
func CheckAgainstTruth(t testing.TB, sim *feedsim.Server, brokers []string) int {
	t.Helper()
	truth := sim.Truth()
	recs := TopicRecords(t, brokers, model.TopicUsage)
	seen := map[model.DedupeKey]bool{}
	got := map[dayKey]*sums{}
	for _, r := range recs {
		var e model.Event
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("record at %d/%d: %v", r.Partition, r.Offset, err)
		}
		if string(r.Key) != e.TenantID {
			t.Fatalf("record key %q, tenant %q", r.Key, e.TenantID)
		}
		if seen[e.Key()] {
			t.Fatalf("event %+v published twice", e.Key())
		}
		seen[e.Key()] = true
		at := e.StartTime
		if at.IsZero() {
			at = e.EventTime
		}
		k := dayKey{e.TenantID, string(e.Kind), at.UTC().Format("2006-01-02")}
		s := got[k]
		if s == nil {
			s = &sums{servers: map[string]bool{}}
			got[k] = s
		}
		s.entries++
		q := new(big.Int).SetUint64(e.Quantity)
		switch e.Kind {
		case model.KindBandwidthIn, model.KindBandwidthOut:
			s.bandwidth.Add(&s.bandwidth, q)
		case model.KindStorage:
			s.storage.Add(&s.storage, q)
		case model.KindLicense:
			id := e.ServerID
			if id == "" {
				id = e.ServerName
			}
			s.servers[id] = true
		}
	}
	wantDays := 0
	malformed := map[string]bool{}
	for _, tt := range truth.Tenants {
		for _, m := range tt.Malformed {
			malformed[m.ID] = true
		}
		for _, d := range tt.Days {
			wantDays++
			s := got[dayKey{tt.Tenant, d.Kind, d.Day}]
			if s == nil {
				t.Fatalf("tenant %s %s %s: no events, truth has %d", tt.Tenant, d.Kind, d.Day, d.Entries)
			}
			if s.entries != d.Entries {
				t.Fatalf("tenant %s %s %s: %d events, truth %d", tt.Tenant, d.Kind, d.Day, s.entries, d.Entries)
			}
			if d.BandwidthBytes != "" && d.BandwidthBytes != "0" && s.bandwidth.String() != d.BandwidthBytes {
				t.Fatalf("tenant %s %s %s: bandwidth %s, truth %s", tt.Tenant, d.Kind, d.Day, s.bandwidth.String(), d.BandwidthBytes)
			}
			if d.StorageBytes != "" && d.StorageBytes != "0" && s.storage.String() != d.StorageBytes {
				t.Fatalf("tenant %s %s %s: storage %s, truth %s", tt.Tenant, d.Kind, d.Day, s.storage.String(), d.StorageBytes)
			}
			if d.Kind == string(model.KindLicense) && len(s.servers) != d.LicensedServers {
				t.Fatalf("tenant %s %s: %d licensed servers, truth %d", tt.Tenant, d.Day, len(s.servers), d.LicensedServers)
			}
		}
	}
	if wantDays != len(got) {
		t.Fatalf("%d (tenant, kind, day) groups published, truth has %d", len(got), wantDays)
	}
	dls := TopicRecords(t, brokers, model.TopicDeadLetter)
	var dlIDs []string
	for _, r := range dls {
		d, err := model.DecodeDeadLetter(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if d.Reason == "" || len(d.Raw) == 0 || d.Stage != model.StageIngest || d.Feed == "" || d.TenantID == "" {
			t.Fatalf("dead letter lacks what it must carry: %+v", d)
		}
		dlIDs = append(dlIDs, d.EntryID)
	}
	var want []string
	for id := range malformed {
		want = append(want, id)
	}
	sort.Strings(dlIDs)
	sort.Strings(want)
	if !slices.Equal(dlIDs, want) {
		t.Fatalf("dead letters for %d entries %v…, truth lists %d malformed %v…", len(dlIDs), dlIDs[:min(3, len(dlIDs))], len(want), want[:min(3, len(want))])
	}
	return len(recs)
}
