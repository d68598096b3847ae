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

// Adversarial review 2 of the correction planner: loops (across batches
// and within one), deep chains, ties, copies of dropped events, two tenants
// and two kinds in a batch, random splits and crashes, compared with an
// independent computation of the rule.

// countingIDs counts the lookups planning makes.
type countingIDs struct {
	*memIDs
	n int
}

func (c *countingIDs) ids(ctx context.Context, keys []idKey) ([]idRow, error) {
	c.n++
	return c.memIDs.ids(ctx, keys)
}

func (c *countingIDs) forest(ctx context.Context, gs []group) ([]idRow, error) {
	c.n++
	return c.memIDs.forest(ctx, gs)
}

func (c *countingIDs) storedEvents(ctx context.Context, keys []rowKey) (map[rowKey]*model.Event, error) {
	c.n++
	return c.memIDs.storedEvents(ctx, keys)
}

func (c *countingIDs) replacedRows(ctx context.Context, keys []idKey) (map[rowKey]bool, error) {
	c.n++
	return c.memIDs.replacedRows(ctx, keys)
}

// planCounted plans evs as one batch as planBatch does, and returns how
// many lookups planning made.
func planCounted(t *testing.T, m *memIDs, evs []model.Event) ([]eventRow, *usagePlan, int) {
	t.Helper()
	rows := make([]eventRow, len(evs))
	var look []idKey
	for i, e := range evs {
		rows[i] = eventRow{ev: e, seq: i, src: source{"usage", 0, int64(i)}, raw: e.AppendJSON(nil)}
		look = append(look, identityKey(e.Identity()))
		if e.ReferenceID != "" {
			look = append(look, idKey{e.TenantID, e.Kind, e.ReferenceID})
		}
	}
	slices.Reverse(rows)
	c := &countingIDs{memIDs: m}
	p, err := planUsage(context.Background(), c, rows, look, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	return rows, p, c.n
}

// ruleModel is the rule, computed apart from the planner: events are taken
// in Kafka order; the first copy of an identity that does not close a loop
// is accepted (a copy that closes one is rejected, and a later copy of its
// id is judged on its own); every later copy of an accepted identity is
// not counted. In each tree of the accepted events, one counts: from the
// root (or the id the topmost name) down to the child with the latest
// published second, ties by the greater id.
type ruleModel struct {
	accepted map[idKey]model.Event
	rejected []string // atom ids rejected for a loop
}

func newRuleModel() *ruleModel { return &ruleModel{accepted: map[idKey]model.Event{}} }

func (rm *ruleModel) feed(e model.Event) {
	k := identityKey(e.Identity())
	if _, ok := rm.accepted[k]; ok {
		return
	}
	if e.ReferenceID != "" {
		cur := idKey{e.TenantID, e.Kind, e.ReferenceID}
		for {
			if cur == k {
				rm.rejected = append(rm.rejected, e.EntryID)
				return
			}
			a, ok := rm.accepted[cur]
			if !ok || a.ReferenceID == "" {
				break
			}
			cur = idKey{e.TenantID, e.Kind, a.ReferenceID}
		}
	}
	rm.accepted[k] = e
}

func (rm *ruleModel) counted() map[model.Identity]uint64 {
	kids := map[idKey][]idKey{}
	for k, e := range rm.accepted {
		if e.ReferenceID != "" {
			p := idKey{k.tenant, k.kind, e.ReferenceID}
			kids[p] = append(kids[p], k)
		}
	}
	roots := map[idKey]bool{}
	for k := range rm.accepted {
		cur := k
		for {
			e := rm.accepted[cur]
			if e.ReferenceID == "" {
				break
			}
			p := idKey{k.tenant, k.kind, e.ReferenceID}
			if _, ok := rm.accepted[p]; !ok {
				cur = p
				break
			}
			cur = p
		}
		roots[cur] = true
	}
	out := map[model.Identity]uint64{}
	for r := range roots {
		cur := r
		for len(kids[cur]) > 0 {
			var best idKey
			var bp time.Time
			for j, c := range kids[cur] {
				cp := rm.accepted[c].Published.Truncate(time.Second)
				if j == 0 || cp.After(bp) || cp.Equal(bp) && c.id > best.id {
					best, bp = c, cp
				}
			}
			cur = best
		}
		e := rm.accepted[cur]
		out[e.Identity()] = e.Quantity
	}
	return out
}

// genFeed makes a random feed: ids of a small pool (shared by two tenants
// and two kinds), referenceIds to any id of the pool (loops), ids never
// sent, deep chains (some closed into a loop), equal published seconds,
// republishes and conflicting copies (of any event, those dropped too).
func genFeed(r *rand.Rand) []model.Event {
	tenants := []string{"1", "2"}
	kinds := []model.Kind{model.KindBandwidthIn, model.KindBandwidthOut}
	mk := func(tenant string, kind model.Kind, id, ref string, q uint64) model.Event {
		e := usage(id, ref, q, time.Duration(r.IntN(4))*time.Second+time.Duration(r.IntN(1000))*time.Millisecond)
		e.TenantID, e.Kind = tenant, kind
		e.EntryID = "urn:uuid:" + tenant + string(kind) + id
		return e
	}
	var feed []model.Event
	n := 2 + r.IntN(10)
	ng := 1 + r.IntN(4)
	for i := range n {
		g := r.IntN(ng)
		tenant, kind := tenants[g%2], kinds[g/2]
		id := "e" + strconv.Itoa(i)
		ref := ""
		switch x := r.IntN(10); {
		case x < 3:
		case x < 8:
			ref = "e" + strconv.Itoa(r.IntN(n)) // earlier or later: loops
		case x < 9:
			ref = "missing" + strconv.Itoa(r.IntN(2))
		default:
			ref = id // its own id
		}
		feed = append(feed, mk(tenant, kind, id, ref, uint64(1+r.IntN(1000))))
	}
	if r.IntN(4) == 0 { // a deep chain, maybe closed into a loop
		g := r.IntN(ng)
		tenant, kind := tenants[g%2], kinds[g/2]
		depth := deepAfter + 1 + r.IntN(2*deepAfter)
		for i := range depth {
			ref := ""
			if i > 0 {
				ref = "c" + strconv.Itoa(i-1)
			} else if r.IntN(2) == 0 {
				ref = "c" + strconv.Itoa(depth-1)
			} else if r.IntN(2) == 0 {
				ref = "e0"
			}
			feed = append(feed, mk(tenant, kind, "c"+strconv.Itoa(i), ref, uint64(1+r.IntN(1000))))
		}
	}
	for _, e := range slices.Clone(feed) {
		switch r.IntN(6) {
		case 0: // a republish
			c := e
			c.EntryID += "-again"
			c.Published = c.Published.Add(time.Duration(r.IntN(3)) * time.Second)
			feed = append(feed, c)
		case 1: // a conflicting copy: another quantity, or another referenceId
			c := e
			c.EntryID += "-other"
			if r.IntN(2) == 0 {
				c.Quantity++
			} else if r.IntN(2) == 0 {
				c.ReferenceID = ""
			} else {
				c.ReferenceID = "e" + strconv.Itoa(r.IntN(n))
			}
			feed = append(feed, c)
		}
	}
	r.Shuffle(len(feed), func(i, j int) { feed[i], feed[j] = feed[j], feed[i] })
	return feed
}

func describeFeed(feed []model.Event) string {
	s := ""
	for _, e := range feed {
		s += fmt.Sprintf(" %s/%s:%s<-%s@%s", e.TenantID, e.Kind, e.EventID, e.ReferenceID, e.Published.Sub(t0))
		if e.EntryID != "urn:uuid:"+e.TenantID+string(e.Kind)+e.EventID {
			s += "(" + e.EntryID[len(e.EntryID)-6:] + ")"
		}
	}
	return s
}

// runFeed feeds a sink's memIDs in random batches, with crashes between
// the inserts and the replacements (the batch read again, maybe split
// otherwise), and returns the most lookups one batch made.
func runFeed(t *testing.T, r *rand.Rand, m *memIDs, feed []model.Event, crashes bool) (maxLookups int) {
	t.Helper()
	for pos := 0; pos < len(feed); {
		k := 1 + r.IntN(min(6, len(feed)-pos))
		if r.IntN(8) == 0 {
			k = len(feed) - pos
		}
		batch := feed[pos : pos+k]
		rows, p, n := planCounted(t, m, batch)
		maxLookups = max(maxLookups, n)
		if len(p.anomalies) > 0 {
			t.Fatalf("anomalies %v", p.anomalies)
		}
		crash := crashes && r.IntN(3) == 0
		m.apply(t, rows, p, crash)
		if crash {
			continue // the batch is read again from pos, in a batch of any size
		}
		pos += k
	}
	return maxLookups
}

// TestPlannerAgainstTheRule: random feeds with loops, deep chains,
// ties, copies, two tenants and two kinds, in random batches with crashes:
// what counts is what the rule says, and no batch takes more than a
// handful of lookups.
func TestPlannerAgainstTheRule(t *testing.T) {
	const seeds = 3000
	worst, worstSeed := 0, 0
	fails := 0
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 29))
		feed := genFeed(r)
		rm := newRuleModel()
		for _, e := range feed {
			rm.feed(e)
		}
		want := nonZero(rm.counted())
		m := newMemIDs()
		n := runFeed(t, r, m, feed, true)
		if n > worst {
			worst, worstSeed = n, int(seed)
		}
		if got := nonZero(m.counted()); !equalCounts(got, want) {
			fails++
			if fails <= 3 {
				t.Errorf("seed %d: counted %v, want %v; feed%s", seed, got, want, describeFeed(feed))
			}
		}
	}
	if fails > 0 {
		t.Errorf("%d of %d feeds counted otherwise than the rule", fails, seeds)
	}
	t.Logf("most lookups of one batch: %d (seed %d)", worst, worstSeed)
}

// TestCorrectionOfALoopMemberIsNotRejected: a and b name each other
// (b, later in Kafka order, closes the loop and is rejected); c names a. c
// does not lead back to itself: by the rule it is a correction of a, and
// counts instead of a. The planner climbs from c round a and b for ever,
// finds no top, and rejects c as a loop: c is never billed, a is billed
// in its place (and a later copy of c's id, if any, counts instead).
// Within one batch, across batches, and with a self-loop.
func TestCorrectionOfALoopMemberIsNotRejected(t *testing.T) {
	a := usage("a", "b", 10, 0)
	b := usage("b", "a", 7, time.Hour)
	c := usage("c", "a", 5, 2*time.Hour)
	s := usage("s", "s", 3, 0) // names itself (the sink's decode rejects it first: planner-level only)
	d := usage("d", "s", 4, time.Hour)
	cases := []struct {
		name    string
		batches [][]model.Event
		want    map[model.Identity]uint64
	}{
		{"one batch", [][]model.Event{{a, b, c}}, map[model.Identity]uint64{c.Identity(): 5}},
		{"c first", [][]model.Event{{c, a, b}}, map[model.Identity]uint64{c.Identity(): 5}},
		{"a stored", [][]model.Event{{a}, {b, c}}, map[model.Identity]uint64{c.Identity(): 5}},
		{"self-loop", [][]model.Event{{s, d}}, map[model.Identity]uint64{d.Identity(): 4}},
	}
	for _, tc := range cases {
		m := newMemIDs()
		var rejected []string
		for _, batch := range tc.batches {
			rows, p := planBatch(t, m, batch)
			m.apply(t, rows, p, false)
			for _, rj := range p.rejects {
				rejected = append(rejected, rj.dl.EntryID)
			}
		}
		if got := nonZero(m.counted()); !equalCounts(got, tc.want) {
			t.Errorf("%s: counted %v, want %v (rejected %v)", tc.name, got, tc.want, rejected)
		}
	}
}

// TestCopiesOfALoopCostAFewLookups: a batch holding many copies of
// an event that closes a loop (a publisher retrying it: republishes) is
// planned once per copy, each round doing every lookup again: a batch of
// 50,000 records can take hundreds of thousands of queries.
func TestCopiesOfALoopCostAFewLookups(t *testing.T) {
	const copies = 200
	batch := []model.Event{usage("a", "b", 10, 0)}
	for i := range copies {
		batch = append(batch, republish(usage("b", "a", 7, time.Hour), "urn:uuid:b-"+strconv.Itoa(i)))
	}
	m := newMemIDs()
	rows, p, n := planCounted(t, m, batch)
	m.apply(t, rows, p, false)
	if n > 40 {
		t.Errorf("one batch of %d copies of a loop took %d lookups", copies, n)
	}
	want := map[model.Identity]uint64{{TenantID: "1", Kind: model.KindBandwidthIn, EventID: "a"}: 10}
	if got := nonZero(m.counted()); !equalCounts(got, want) {
		t.Errorf("counted %v, want %v", got, want)
	}
}
