package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// memIDs is the three tables planUsage reads, in memory: what a sink has
// written to usage_events and usage_replaced. It lets the planner's state
// machine be driven through every order and every crash point, beside the
// tests on the real server.
type memIDs struct {
	events   map[rowKey]model.Event
	replaced map[rowKey]string // replaced_by
}

func newMemIDs() *memIDs {
	return &memIDs{events: map[rowKey]model.Event{}, replaced: map[rowKey]string{}}
}

func (m *memIDs) ids(_ context.Context, keys []idKey) ([]idRow, error) {
	want := map[idKey]bool{}
	for _, k := range keys {
		want[k] = true
	}
	var out []idRow
	for rk, e := range m.events {
		pub := e.Published.Truncate(time.Second)
		if k := (idKey{rk.tenant, rk.kind, rk.eventID}); want[k] {
			out = append(out, idRow{idKey: k, role: 0, eventID: rk.eventID, entryID: rk.entryID, ref: e.ReferenceID, published: pub})
		}
		if k := (idKey{rk.tenant, rk.kind, e.ReferenceID}); e.ReferenceID != "" && want[k] {
			out = append(out, idRow{idKey: k, role: 1, eventID: rk.eventID, entryID: rk.entryID, ref: e.ReferenceID, published: pub})
		}
	}
	return out, nil
}

func (m *memIDs) forest(ctx context.Context, groups []group) ([]idRow, error) {
	want := map[group]bool{}
	for _, g := range groups {
		want[g] = true
	}
	named := map[idKey]bool{}
	for rk, e := range m.events {
		if e.ReferenceID != "" && want[group{rk.tenant, rk.kind}] {
			named[idKey{rk.tenant, rk.kind, e.ReferenceID}] = true
		}
	}
	var keys []idKey
	for rk, e := range m.events {
		k := idKey{rk.tenant, rk.kind, rk.eventID}
		if want[group{rk.tenant, rk.kind}] && (e.ReferenceID != "" || named[k]) {
			keys = append(keys, k)
		}
	}
	for k := range named {
		keys = append(keys, k)
	}
	return m.ids(ctx, keys)
}

func (m *memIDs) storedEvents(_ context.Context, keys []rowKey) (map[rowKey]*model.Event, error) {
	out := map[rowKey]*model.Event{}
	for _, k := range keys {
		if e, ok := m.events[k]; ok {
			out[k] = &e
		}
	}
	return out, nil
}

func (m *memIDs) replacedRows(_ context.Context, keys []idKey) (map[rowKey]bool, error) {
	want := map[idKey]bool{}
	for _, k := range keys {
		want[k] = true
	}
	out := map[rowKey]bool{}
	for rk := range m.replaced {
		if want[idKey{rk.tenant, rk.kind, rk.eventID}] {
			out[rk] = true
		}
	}
	return out, nil
}

// apply writes a plan as the sink does: inserts, then replacements;
// stopAfterInsert leaves the replacements out (a crash between the two).
func (m *memIDs) apply(t *testing.T, rows []eventRow, p *usagePlan, stopAfterInsert bool) {
	t.Helper()
	for i, r := range rows {
		if p.insert[i] {
			k := rowKey{r.ev.TenantID, r.ev.Kind, r.ev.EventID, r.ev.EntryID}
			if _, ok := m.events[k]; ok {
				t.Fatalf("plan inserts %v twice", k)
			}
			m.events[k] = r.ev
		}
	}
	if stopAfterInsert {
		return
	}
	for _, rp := range p.replace {
		if _, ok := m.events[rp.row]; !ok {
			t.Fatalf("plan replaces %v, which is not in usage_events", rp.row)
		}
		if _, ok := m.replaced[rp.row]; ok {
			t.Fatalf("plan replaces %v twice", rp.row)
		}
		m.replaced[rp.row] = rp.by
	}
}

// counted returns the quantity that counts per identity: the rollups' view.
func (m *memIDs) counted() map[model.Identity]uint64 {
	out := map[model.Identity]uint64{}
	for k, e := range m.events {
		if _, gone := m.replaced[k]; !gone {
			out[e.Identity()] += e.Quantity
		}
	}
	return out
}

// plan plans evs as one batch (seq in slice order), looking up every id.
func planBatch(t *testing.T, m *memIDs, evs []model.Event) ([]eventRow, *usagePlan) {
	t.Helper()
	rows := make([]eventRow, len(evs))
	var look []idKey
	for i, e := range evs {
		rows[i] = eventRow{ev: e, seq: i, src: source{"usage", 0, int64(i)}, raw: e.AppendJSON(nil), idFP: idFingerprint(e.Kind, e.EventID)}
		look = append(look, identityKey(e.Identity()))
		if e.ReferenceID != "" {
			look = append(look, idKey{e.TenantID, e.Kind, e.ReferenceID})
		}
	}
	// The sink sorts a batch by its table key before planning: the plan
	// must follow seq, not the slice.
	slices.Reverse(rows)
	p, err := planUsage(context.Background(), m, rows, look, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	return rows, p
}

var t0 = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

// usage makes a bandwidthIn event of tenant 1.
func usage(id, ref string, q uint64, published time.Duration) model.Event {
	return model.Event{TenantID: "1", EntryID: "urn:uuid:" + id, EventID: id, ReferenceID: ref, Kind: model.KindBandwidthIn,
		EventType: model.TypeUsage, StartTime: t0, EndTime: t0.Add(time.Hour), ServerID: "s", Quantity: q,
		Published: t0.Add(published)}
}

// republish is e under another atom id, published later.
func republish(e model.Event, entry string) model.Event {
	e.EntryID, e.Published = entry, e.Published.Add(time.Minute)
	return e
}

// TestCorrectionsExamples: the cases of issue 16, each in every order of
// arrival, one event a batch: what counts in the end.
func TestCorrectionsExamples(t *testing.T) {
	id := func(s string) model.Identity {
		return model.Identity{TenantID: "1", Kind: model.KindBandwidthIn, EventID: s}
	}
	cases := []struct {
		name string
		evs  []model.Event
		want map[model.Identity]uint64
	}{
		{"republish counts once", []model.Event{usage("a", "", 10, 0), republish(usage("a", "", 10, 0), "urn:uuid:copy")},
			map[model.Identity]uint64{id("a"): 10}},
		{"correction replaces its original", []model.Event{usage("a", "", 10, 0), usage("b", "a", 7, time.Hour)},
			map[model.Identity]uint64{id("b"): 7}},
		{"a correction of a correction replaces the last", []model.Event{usage("a", "", 10, 0), usage("b", "a", 7, time.Hour), usage("c", "b", 5, 2*time.Hour)},
			map[model.Identity]uint64{id("c"): 5}},
		{"a correction whose original never arrives counts", []model.Event{usage("b", "a", 7, time.Hour)},
			map[model.Identity]uint64{id("b"): 7}},
		{"of two corrections the later published counts", []model.Event{usage("a", "", 10, 0), usage("b", "a", 7, time.Hour), usage("c", "a", 5, 2*time.Hour)},
			map[model.Identity]uint64{id("c"): 5}},
		{"siblings without their original", []model.Event{usage("b", "a", 7, time.Hour), usage("c", "a", 5, 2*time.Hour), usage("d", "c", 3, 3*time.Hour)},
			map[model.Identity]uint64{id("d"): 3}},
		{"a republished correction", []model.Event{usage("a", "", 10, 0), usage("b", "a", 7, time.Hour), republish(usage("b", "a", 7, time.Hour), "urn:uuid:b2")},
			map[model.Identity]uint64{id("b"): 7}},
		{"a chain and its siblings", []model.Event{usage("a", "", 10, 0), usage("b", "a", 7, time.Hour), usage("c", "b", 5, 2*time.Hour),
			usage("x", "a", 1, 90*time.Minute)},
			map[model.Identity]uint64{id("x"): 1}},
		{"independent events stay", []model.Event{usage("a", "", 10, 0), usage("b", "a", 7, time.Hour), usage("z", "", 4, 0)},
			map[model.Identity]uint64{id("b"): 7, id("z"): 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, perm := range permutations(len(c.evs)) {
				m := newMemIDs()
				var order []string
				for _, i := range perm {
					e := c.evs[i]
					order = append(order, e.EntryID)
					rows, p := planBatch(t, m, []model.Event{e})
					m.apply(t, rows, p, false)
				}
				if got := nonZero(m.counted()); !equalCounts(got, c.want) {
					t.Errorf("arriving %v: counted %v, want %v", order, got, c.want)
				}
			}
		})
	}
}

func nonZero(m map[model.Identity]uint64) map[model.Identity]uint64 {
	out := map[model.Identity]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func equalCounts(a, b map[model.Identity]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestConflictKeepsTheFirst: a copy of a counted event id that says
// something else is rejected with a reason naming both atom ids, and
// recorded as a conflict; the first copy counts, in the batch and across
// batches.
func TestConflictKeepsTheFirst(t *testing.T) {
	a := usage("a", "", 10, 0)
	b := republish(a, "urn:uuid:other")
	b.Quantity = 999999999999
	for _, split := range []bool{false, true} {
		m := newMemIDs()
		var p *usagePlan
		var rows []eventRow
		if split {
			rows, p = planBatch(t, m, []model.Event{a})
			m.apply(t, rows, p, false)
			rows, p = planBatch(t, m, []model.Event{b})
		} else {
			rows, p = planBatch(t, m, []model.Event{a, b})
		}
		m.apply(t, rows, p, false)
		if got := m.counted()[a.Identity()]; got != 10 {
			t.Errorf("split %v: counted %d, want the first copy's 10", split, got)
		}
		if len(p.rejects) != 1 || len(p.copies) != 1 || !p.copies[0].conflict {
			t.Fatalf("split %v: %d rejects and copies %+v, want one conflict", split, len(p.rejects), p.copies)
		}
		reason := p.rejects[0].dl.Reason
		for _, want := range []string{a.EntryID, b.EntryID, "conflicting"} {
			if !containsStr(reason, want) {
				t.Errorf("split %v: reason %q does not name %q", split, reason, want)
			}
		}
	}
}

func containsStr(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestCorrectionLoopRejected: an event whose referenceId leads back to it
// is rejected; the others of the tree are unaffected.
func TestCorrectionLoopRejected(t *testing.T) {
	m := newMemIDs()
	rows, p := planBatch(t, m, []model.Event{usage("a", "b", 10, 0)})
	m.apply(t, rows, p, false)
	rows, p = planBatch(t, m, []model.Event{usage("b", "a", 7, time.Hour)})
	m.apply(t, rows, p, false)
	if len(p.rejects) != 1 || !containsStr(p.rejects[0].dl.Reason, "loop") {
		t.Fatalf("rejects %+v, want one naming the loop", p.rejects)
	}
	if got := nonZero(m.counted()); len(got) != 1 || got[model.Identity{TenantID: "1", Kind: model.KindBandwidthIn, EventID: "a"}] != 10 {
		t.Errorf("counted %v, want a alone", got)
	}
}

// refTree is what counts among events (distinct identities of one tenant
// and kind) by the rule, computed apart from the planner (countedOf).
func refTree(events []model.Event) map[model.Identity]uint64 {
	in := countedOf(events)
	out := map[model.Identity]uint64{}
	for _, e := range events {
		if in[e.EventID] {
			out[e.Identity()] = e.Quantity
		}
	}
	return out
}

// TestCorrectionsAnyOrderAnyCrash: random forests of corrections (chains,
// siblings, originals that never arrive) with republished copies, fed in
// random orders and random batches, with the sink stopped between the
// insert and the replacements of random batches and the batch planned
// again: what counts in the end is what the rule says, every time.
func TestCorrectionsAnyOrderAnyCrash(t *testing.T) {
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 11))
		var evs []model.Event // distinct identities
		n := 2 + r.IntN(12)
		for i := range n {
			id := "e" + strconv.Itoa(i)
			ref := ""
			if i > 0 && r.IntN(3) > 0 {
				ref = "e" + strconv.Itoa(r.IntN(i)) // an earlier id: no loops
				if r.IntN(6) == 0 {
					ref = "missing" + strconv.Itoa(r.IntN(2))
				}
			}
			evs = append(evs, usage(id, ref, uint64(1+r.IntN(1000)), time.Duration(r.IntN(5))*time.Second))
		}
		want := refTree(evs)
		feed := slices.Clone(evs)
		for _, e := range evs {
			if r.IntN(4) == 0 {
				feed = append(feed, republish(e, e.EntryID+"-again"))
			}
		}
		r.Shuffle(len(feed), func(i, j int) { feed[i], feed[j] = feed[j], feed[i] })
		// A republished copy is published after its original, and ingest
		// reads a feed in publication order: the first copy a sink sees,
		// whose published time ranks corrections, is the earliest one.
		at := map[string]int{}
		for i, e := range feed {
			if prev, ok := at[e.EventID]; ok && feed[prev].Published.After(e.Published) {
				feed[prev], feed[i] = feed[i], feed[prev]
			}
			at[e.EventID] = i
		}
		m := newMemIDs()
		for len(feed) > 0 {
			k := 1 + r.IntN(min(4, len(feed)))
			batch := feed[:k]
			feed = feed[k:]
			rows, p := planBatch(t, m, batch)
			crash := r.IntN(3) == 0
			m.apply(t, rows, p, crash)
			if crash { // read again, planned again from what was left
				rows, p = planBatch(t, m, batch)
				m.apply(t, rows, p, false)
			}
			if len(p.anomalies) > 0 {
				t.Fatalf("seed %d: anomalies %v", seed, p.anomalies)
			}
		}
		if got := nonZero(m.counted()); !equalCounts(got, want) {
			t.Errorf("seed %d: counted %v, want %v (events %s)", seed, got, want, describe(evs))
		}
	}
}

func describe(evs []model.Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf(" %s<-%s@%ds", e.EventID, e.ReferenceID, int(e.Published.Sub(t0).Seconds()))
	}
	return s
}
