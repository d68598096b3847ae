package ingest_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/feedmeter/feedmeter/ingest"
	"github.com/feedmeter/feedmeter/internal/e2e"
	"github.com/feedmeter/feedmeter/model"
)

type recorder struct{ batches []*ingest.Batch }

func (r *recorder) Publish(_ context.Context, b *ingest.Batch) error {
	r.batches = append(r.batches, b)
	return nil
}

func (r *recorder) events() []model.Event {
	var out []model.Event
	for _, b := range r.batches {
		out = append(out, b.Events...)
	}
	return out
}

// TestLostMarkerIsRecovered: when the checkpoint's entry is gone from the
// feed (404), reading resumes at its publication time and nothing already
// published is published again.
func TestLostMarkerIsRecovered(t *testing.T) {
	sim, srv := e2e.Upstream(t, 1, 2, "none")
	tenant := sim.TenantIDs()[0]
	cfg := e2e.IngestConfig(srv, nil, nil, ingest.FormatXML)
	cfg.Client.Limit = 100
	client, err := ingest.NewClient(cfg.Client)
	if err != nil {
		t.Fatal(err)
	}
	feed := srv.URL + "/backup/events/" + tenant
	reader := &ingest.Reader{Client: client, Feed: feed, Tenant: tenant, Log: cfg.Log}

	// The whole feed, for reference.
	var all recorder
	if _, err := reader.CatchUp(context.Background(), ingest.Checkpoint{}, &all); err != nil {
		t.Fatal(err)
	}
	events := all.events()
	if len(events) < 300 {
		t.Fatalf("only %d events", len(events))
	}
	// A checkpoint in the middle, whose entry then disappears: keep its time
	// and the ids processed at that time, but name a marker the feed does not know.
	mid := len(events) / 2
	cp := ingest.Checkpoint{Marker: "urn:uuid:00000000-0000-4000-8000-00000000dead", Published: events[mid].Published}
	for _, e := range events[:mid+1] {
		if e.Published.Equal(cp.Published) {
			cp.SameTime = append(cp.SameTime, e.EntryID)
		}
	}
	if _, err := client.Fetch(context.Background(), feed, url.Values{"marker": {cp.Marker}, "direction": {"forward"}}); err == nil {
		t.Fatal("the feed knows the made-up marker")
	}
	var rest recorder
	got, err := reader.CatchUp(context.Background(), cp, &rest)
	if err != nil {
		t.Fatal(err)
	}
	want := map[model.DedupeKey]bool{}
	for _, e := range events[mid+1:] {
		want[e.Key()] = true
	}
	seen := map[model.DedupeKey]bool{}
	for _, e := range rest.events() {
		if !want[e.Key()] {
			t.Fatalf("entry %s (published %s) was published before the checkpoint", e.EntryID, e.Published)
		}
		if seen[e.Key()] {
			t.Fatalf("entry %s twice", e.EntryID)
		}
		seen[e.Key()] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("recovered %d events, want %d", len(seen), len(want))
	}
	if got.Marker != events[len(events)-1].EntryID {
		t.Fatalf("checkpoint ends at %s, want the newest entry %s", got.Marker, events[len(events)-1].EntryID)
	}
}
