package sink

import (
	"strconv"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// Trees of any size and depth, and batches of many trees: one event a tree
// counts, whatever the batch boundaries. (A first version loaded trees
// under a bound per batch and per level and failed open past it: both an
// event and its correction were billed.)

// TestBigBatchOfCorrectionsCountsEachTreeOnce: a batch of the default size
// (50,000 records) of corrections of corrections, each tree three events
// deep (o <- c <- d): each d replaces its c, and one event per tree counts.
func TestBigBatchOfCorrectionsCountsEachTreeOnce(t *testing.T) {
	const n = 50000
	m := newMemIDs()
	var orig, first, second []model.Event
	for i := range n {
		s := strconv.Itoa(i)
		orig = append(orig, usage("o"+s, "", 10, 0))
		first = append(first, usage("c"+s, "o"+s, 7, time.Hour))
		second = append(second, usage("d"+s, "c"+s, 5, 2*time.Hour))
	}
	for _, batch := range [][]model.Event{orig, first, second} {
		rows, p := planBatch(t, m, batch)
		m.apply(t, rows, p, false)
		if len(p.rejects) > 0 {
			t.Fatalf("%d of %d rows rejected, first: %s", len(p.rejects), len(batch), p.rejects[0].dl.Reason)
		}
	}
	got := nonZero(m.counted())
	if len(got) != n {
		t.Fatalf("%d identities count, want %d (each second correction; one event a tree)", len(got), n)
	}
	for i := range n {
		id := model.Identity{TenantID: "1", Kind: model.KindBandwidthIn, EventID: "d" + strconv.Itoa(i)}
		if got[id] != 5 {
			t.Fatalf("%v counts %d, want 5", id, got[id])
		}
	}
}

// TestTwoBranchTreeWithinBoundsIsNotRejected: one original and two chains
// of 150 corrections under it (301 events, 151 levels), one event a batch:
// nothing is rejected, and the last of the later-published chain counts.
func TestTwoBranchTreeWithinBoundsIsNotRejected(t *testing.T) {
	const depth = 150
	var evs []model.Event
	evs = append(evs, usage("r", "", 100, 0))
	for _, br := range []string{"a", "b"} {
		prev := "r"
		for i := 1; i <= depth; i++ {
			id := br + strconv.Itoa(i)
			pub := time.Duration(i) * time.Minute
			if br == "b" {
				pub += time.Hour // b's chain is published later: b1 wins over a1
			}
			evs = append(evs, usage(id, prev, uint64(i), pub))
			prev = id
		}
	}
	m := newMemIDs()
	rejected := 0
	var first string
	for _, e := range evs {
		rows, p := planBatch(t, m, []model.Event{e})
		m.apply(t, rows, p, false)
		if len(p.rejects) > 0 && first == "" {
			first = e.EventID + ": " + p.rejects[0].dl.Reason
		}
		rejected += len(p.rejects)
	}
	if rejected > 0 {
		t.Errorf("%d events rejected of a tree of %d events and %d levels; first %s", rejected, len(evs), depth+1, first)
	}
	want := refTree(evs)
	if got := nonZero(m.counted()); !equalCounts(got, want) {
		t.Errorf("counted %v, want %v", got, want)
	}
}

// TestChainDeeperThanTheBoundCountsOnce: a chain of 300 corrections, one a
// batch (far deeper than the levels loaded a query at a time): at every
// step one event of the chain counts.
func TestChainDeeperThanTheBoundCountsOnce(t *testing.T) {
	const depth = 300
	var evs []model.Event
	prev := ""
	for i := range depth {
		id := "e" + strconv.Itoa(i)
		evs = append(evs, usage(id, prev, uint64(i+1), time.Duration(i)*time.Minute))
		prev = id
	}
	m := newMemIDs()
	rejected := 0
	for _, e := range evs {
		rows, p := planBatch(t, m, []model.Event{e})
		m.apply(t, rows, p, false)
		rejected += len(p.rejects)
	}
	got := nonZero(m.counted())
	if len(got) != 1 {
		t.Errorf("%d events of one chain count (%d rejected), want 1", len(got), rejected)
	}
}

// TestCopyOfARejectedEventIsNotAConflict: z names x; x arrives naming z (a
// loop), so x is rejected; a later copy of x's id that names w instead (no
// loop) is not a copy of anything that counts: it is planned on its own, in
// one batch with x as in a batch of its own: x' joins w's tree under w, z
// under x', and z alone counts.
func TestCopyOfARejectedEventIsNotAConflict(t *testing.T) {
	w := usage("w", "", 10, 0)
	z := usage("z", "x", 3, 3*time.Hour)
	x := usage("x", "z", 7, time.Hour)
	x2 := usage("x", "w", 5, 2*time.Hour)
	x2.EntryID = "urn:uuid:x-again"
	want := map[model.Identity]uint64{{TenantID: "1", Kind: model.KindBandwidthIn, EventID: "z"}: 3}
	for _, together := range []bool{false, true} {
		m := newMemIDs()
		for _, e := range []model.Event{w, z} {
			rows, p := planBatch(t, m, []model.Event{e})
			m.apply(t, rows, p, false)
		}
		if together {
			rows, p := planBatch(t, m, []model.Event{x, x2})
			m.apply(t, rows, p, false)
		} else {
			for _, e := range []model.Event{x, x2} {
				rows, p := planBatch(t, m, []model.Event{e})
				m.apply(t, rows, p, false)
			}
		}
		if got := nonZero(m.counted()); !equalCounts(got, want) {
			t.Errorf("x and its copy in one batch %v: counted %v, want %v", together, got, want)
		}
	}
}
