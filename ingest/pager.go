package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// Checkpoint is where a subscription's reading stands: the newest entry it
// has published. It travels in the same Kafka transaction as the events it
// follows, so the two are never out of step.
type Checkpoint struct {
	Feed   string `json:"feed"`
	Tenant string `json:"tenant"`
	// Marker is the id of the newest entry processed ("" before the first
	// page). The next page is read forward from it.
	Marker string `json:"marker,omitempty"`
	// Published is the marker entry's atom:published, and SameTime the ids
	// of the processed entries published at exactly that instant: if the
	// marker disappears from the feed (404), reading restarts at that time
	// and these are skipped as duplicates.
	Published time.Time `json:"published"`
	SameTime  []string  `json:"same_time,omitempty"`
	// Entries and Rejects count what was processed in all.
	Entries int64 `json:"entries"`
	Rejects int64 `json:"rejects"`
	// Written is when the checkpoint was made.
	Written time.Time `json:"written"`
}

// Key is the checkpoint's record key: one per (feed, tenant).
func (c *Checkpoint) Key() string { return c.Feed + "|" + c.Tenant }

// Batch is one page made ready to publish: its events and rejects oldest
// first, and the checkpoint that follows them.
type Batch struct {
	Feed, Tenant string
	// Request is the query the page was read with (for dead letters).
	Request string
	Events  []model.Event
	Rejects []Reject
	Next    Checkpoint
	// skipped counts the page's entries that were processed before, and
	// newest is the latest publication time among them.
	skipped int
	newest  time.Time
}

// PublishError says that a batch could not be published; whether any of
// it was committed is for the checkpoints in Kafka to say.
type PublishError struct{ Err error }

func (e *PublishError) Error() string { return "publish: " + e.Err.Error() }
func (e *PublishError) Unwrap() error { return e.Err }

// Publisher commits a batch: events, dead letters and checkpoint together
// or not at all. Declared here, where it is used; the Kafka one is in
// kafka.go.
type Publisher interface {
	Publish(ctx context.Context, b *Batch) error
}

// Reader pages through one tenant's feed.
type Reader struct {
	Client *Client
	Feed   string // the tenant's feed URL, e.g. https://…/backup/events/1234
	Tenant string
	// StartAt is where a subscription without a checkpoint begins; zero
	// means the whole feed (marker=last).
	StartAt time.Time
	Log     *slog.Logger
	// OnPage, when set, is told of each page published.
	OnPage func(b *Batch)
}

// CatchUp reads from cp to the head of the feed, publishing each page as
// one batch, and returns the checkpoint reached. It stops at the first error
// (what was published stays published; the checkpoint returned is the last
// one committed).
func (r *Reader) CatchUp(ctx context.Context, cp Checkpoint, pub Publisher) (Checkpoint, error) {
	cp.Feed, cp.Tenant = r.Feed, r.Tenant
	recovering := false       // reading by time after a lost marker: drop duplicates
	lost := map[string]bool{} // markers not found: never the marker again in this run
	for {
		q := url.Values{}
		switch {
		case recovering:
			q.Set("startingAt", cp.Published.UTC().Format(time.RFC3339Nano))
			q.Set("direction", "forward")
		case cp.Marker != "":
			q.Set("marker", cp.Marker)
			q.Set("direction", "forward")
		case !r.StartAt.IsZero():
			q.Set("startingAt", r.StartAt.UTC().Format(time.RFC3339Nano))
			q.Set("direction", "forward")
		default:
			q.Set("marker", "last")
		}
		page, err := r.Client.Fetch(ctx, r.Feed, q)
		if errors.Is(err, ErrMarkerNotFound) && cp.Marker != "" && !recovering {
			r.Log.Error("the checkpoint's entry is gone from the feed: reading again from its publication time, skipping what was processed",
				"tenant", r.Tenant, "marker", cp.Marker, "published", cp.Published)
			if cp.Published.IsZero() {
				return cp, fmt.Errorf("tenant %s: marker %s is gone and its time is unknown: %w", r.Tenant, cp.Marker, err)
			}
			recovering, lost[cp.Marker] = true, true
			continue
		}
		if err != nil {
			return cp, fmt.Errorf("tenant %s: %w", r.Tenant, err)
		}
		if page.Entries == 0 {
			return cp, nil
		}
		b := batchOf(page, cp, recovering, lost)
		b.Feed, b.Tenant, b.Request = r.Feed, r.Tenant, q.Encode()
		if b.Next.Marker == cp.Marker && len(b.Events)+len(b.Rejects) == 0 && b.skipped > 0 {
			// Only entries already processed, and none a marker to read on
			// from (each was not found). Whether the feed has unread
			// entries after them (at their instant, or later) cannot be
			// told without a marker: said loudly every run, never taken
			// for caught up. (A real feed does not list an entry it
			// answers 404 for.)
			return cp, fmt.Errorf("tenant %s: the entries after %s (published %s) were processed already and their markers are not found: cannot read past them",
				r.Tenant, cp.Marker, b.newest.UTC().Format(time.RFC3339Nano))
		}
		if b.Next.Marker == cp.Marker && !recovering {
			return cp, fmt.Errorf("tenant %s: the page after %s names no newer entry", r.Tenant, cp.Marker)
		}
		if len(b.Events)+len(b.Rejects) > 0 || b.Next.Marker != cp.Marker {
			if err := pub.Publish(ctx, b); err != nil {
				return cp, fmt.Errorf("tenant %s: %w", r.Tenant, &PublishError{Err: err})
			}
			if r.OnPage != nil {
				r.OnPage(b)
			}
		}
		if recovering && b.Next.Marker == cp.Marker {
			// Every entry at the restart time was a duplicate and nothing is
			// newer: caught up.
			return cp, nil
		}
		cp = b.Next
		recovering = false
	}
}

// oversized returns a reject for an event whose usage record (its JSON and
// the entry-id header) would be over maxEventBytes, or nil; index is its
// entry's place on the page.
func oversized(e *model.Event, index int) *Reject {
	if 6*e.TextBytes()+1024+len(e.EntryID) <= maxEventBytes {
		return nil // the cheap bound: every real event
	}
	j := e.AppendJSON(nil)
	if n := len(j) + len(e.EntryID); n <= maxEventBytes {
		return nil
	}
	return &Reject{EntryID: e.EntryID, Index: index, Raw: j,
		Reason: fmt.Sprintf("the event is %d bytes as JSON, over the %d a usage record may be", len(j), maxEventBytes)}
}

// foreign returns a reject for an event whose tenantId is not tenant's,
// the tenant whose feed it came from, or nil; index is its entry's place
// on the page. A feed is one tenant's: an entry naming another tenant is
// not that tenant's to bill (nor is it the feed's), so it is dead-lettered
// and a person decides. An event without a tenant (a system event) stays.
func foreign(e *model.Event, tenant string, index int) *Reject {
	if e.TenantID == "" || e.TenantID == tenant || tenant == "" {
		return nil
	}
	return &Reject{EntryID: e.EntryID, Index: index, Raw: e.AppendJSON(nil),
		Reason: fmt.Sprintf("event tenantId %q is not the tenant of this feed, %q: billed to neither", e.TenantID, tenant)}
}

// batchOf turns a page (newest first) into a batch (oldest first) and the
// checkpoint after it. Entries already processed are dropped: those at the
// checkpoint's time that it lists and, when recovering, those older. The
// marker still follows them (an entry the feed has is a place to read on
// from), but never to a marker that was not found (lost).
func batchOf(p *Page, cp Checkpoint, recovering bool, lost map[string]bool) *Batch {
	b := &Batch{Next: cp}
	// Entry ids and publication times in feed order, events and rejects
	// merged back by index.
	type item struct {
		id        string
		published time.Time
		ev        *model.Event
		rej       *Reject
	}
	items := make([]item, p.Entries)
	for i := range p.Events {
		e := &p.Events[i]
		items[p.Indexes[i]] = item{id: e.EntryID, published: e.Published, ev: e}
	}
	for i := range p.Rejects {
		r := &p.Rejects[i]
		if r.Index >= 0 && r.Index < len(items) {
			items[r.Index] = item{id: r.EntryID, rej: r}
		} else {
			b.Rejects = append(b.Rejects, *r) // outside any entry: kept
		}
	}
	for i := len(items) - 1; i >= 0; i-- { // oldest first
		it := items[i]
		if it.ev != nil && !it.published.IsZero() &&
			(recovering && it.published.Before(cp.Published) || it.published.Equal(cp.Published) && slices.Contains(cp.SameTime, it.id)) {
			b.skipped++
			if it.published.After(b.newest) {
				b.newest = it.published
			}
			if it.id != "" && !lost[it.id] {
				b.Next.Marker = it.id
			}
			continue
		}
		if it.ev != nil {
			if rej := foreign(it.ev, cp.Tenant, i); rej != nil {
				it.ev, it.rej = nil, rej // never billed to another tenant
			} else if rej := oversized(it.ev, i); rej != nil {
				it.ev, it.rej = nil, rej // no broker would take it
			}
		}
		if it.ev != nil {
			b.Events = append(b.Events, *it.ev)
		} else if it.rej != nil {
			b.Rejects = append(b.Rejects, *it.rej)
		}
		if it.id == "" {
			continue
		}
		// The checkpoint follows the newest entry with an id.
		b.Next.Marker = it.id
		if it.ev != nil && !it.published.IsZero() {
			if !it.published.Equal(b.Next.Published) {
				b.Next.Published, b.Next.SameTime = it.published, nil
			}
			b.Next.SameTime = append(b.Next.SameTime, it.id)
		}
	}
	// The newest entry has no id that could be read: the page's previous
	// link (?marker=<newest id on page>&direction=forward) names it, so the
	// next page begins after it instead of with it again.
	if len(items) > 0 && items[0].id == "" && p.Links.Previous != "" {
		if u, err := url.Parse(p.Links.Previous); err == nil {
			if m := trim(u.Query().Get("marker")); m != "" && !lost[m] {
				b.Next.Marker = m
			}
		}
	}
	b.Next.Entries += int64(len(b.Events))
	b.Next.Rejects += int64(len(b.Rejects))
	b.Next.Written = time.Now().UTC()
	return b
}
