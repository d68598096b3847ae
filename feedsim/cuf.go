package feedsim

import (
	"cmp"
	"math"
	"slices"
)

// The CUF facts (Config.CUF) are added to a tenant's generated history once
// it is built, drawn from a generator of their own (stream streamCUF + the
// tenant's index): the entries already there keep their atom ids and content,
// so that with every share 0 nothing changes. In order:
//
//  1. midnight: USAGE entries ending at a midnight get fMidnight;
//  2. summary: an agent's day of one kind (bandwidthIn, bandwidthOut,
//     storage) gets a USAGE_SUMMARY entry over the day, published after the
//     day's last interval: the day's total bandwidth, or its peak storage;
//  3. correct: a bandwidth or storage event gets a correction (a new event,
//     referenceId its id, another quantity, published a minute to six hours
//     later); early swaps the two publication times; chain corrects the
//     correction in turn (up to maxChain deep); sibling adds a second
//     correction of the event; orphan drops the original from the feed;
//  4. republish and conflict: every usage entry (corrections included,
//     summaries and system entries not) may be published again, a second up
//     to two hours later, as the same event (link.src) with the same content
//     or, for conflict, another quantity or other times.
//
// Live entries and those the APIs add have none of these.

// maxChain is the longest chain of corrections of one event.
const maxChain = 5

// cufGen adds the CUF facts to one feed.
type cufGen struct {
	c     CUF
	r     *rng
	f     *feed
	es    []entry          // the history: the feed's entries, then the new ones
	links map[uuid]cufLink // by atom id
	drop  map[int]bool     // indexes in es of originals never published
}

// addCUF adds c's facts to f's generated entries and puts the feed back in
// publication order.
func addCUF(c CUF, f *feed, r *rng) {
	g := &cufGen{c: c, r: r, f: f, es: slices.Clone(f.entries), links: map[uuid]cufLink{}, drop: map[int]bool{}}
	base := len(g.es)
	for i := range g.es[:base] {
		if e := &g.es[i]; e.usage() && endsAtMidnight(e) && r.chance(c.Midnight) {
			e.etype |= fMidnight
		}
	}
	g.summaries(base)
	for i := 0; i < base; i++ {
		if g.es[i].kind > kStorage || !r.chance(c.Correct) {
			continue
		}
		orphan := r.chance(c.Orphan)
		g.correct(i, 1)
		if r.chance(c.Sibling) {
			g.correct(i, 1)
		}
		if orphan {
			g.drop[i] = true
		}
	}
	for i, n := 0, len(g.es); i < n; i++ {
		e := g.es[i]
		if g.drop[i] || e.kind > kSnapshot || e.summary() {
			continue
		}
		l := cufLink{src: e.id, ref: g.links[e.id].ref}
		if r.chance(c.Republish) {
			retry := e
			retry.published += int64(r.between(1000, 7_200_000))
			g.add(retry, l)
		}
		if r.chance(c.Conflict) {
			other := e
			g.conflict(&other)
			other.published += int64(r.between(1000, 7_200_000))
			g.add(other, l)
		}
	}

	es := make([]entry, 0, len(g.es))
	for i, e := range g.es {
		if !g.drop[i] {
			es = append(es, e)
		}
	}
	slices.SortStableFunc(es, func(a, b entry) int { return cmp.Compare(a.published, b.published) })
	f.entries, f.byID, f.decided, f.bad = f.entries[:0], make(map[uuid]int32, len(es)), nil, nil
	for _, e := range es {
		f.appendLocked(e)
	}
	f.links = g.links
	f.gen = len(f.entries)
}

func endsAtMidnight(e *entry) bool {
	end := e.start + int64(e.dur)
	return e.dur > 0 && end == floorDiv(end, 86400)*86400
}

// add appends e under a fresh atom id, with link l unless it is zero, and
// returns its index.
func (g *cufGen) add(e entry, l cufLink) int {
	for {
		e.id = g.r.uuid()
		if _, taken := g.f.byID[e.id]; !taken {
			break
		}
	}
	g.f.byID[e.id] = -1 // taken; the feed's index is rebuilt at the end
	if l != (cufLink{}) {
		g.links[e.id] = l
	}
	g.es = append(g.es, e)
	return len(g.es) - 1
}

// summaries adds the USAGE_SUMMARY entries of the first base entries.
func (g *cufGen) summaries(base int) {
	type key struct {
		agent uint16
		day   int64
		kind  kind
	}
	type acc struct {
		value     uint64
		published int64
	}
	var order []key
	accs := map[key]*acc{}
	for _, e := range g.es[:base] {
		if e.kind > kStorage {
			continue
		}
		k := key{e.agent, floorDiv(e.start, 86400), e.kind}
		a := accs[k]
		if a == nil {
			a = &acc{}
			accs[k] = a
			order = append(order, k)
		}
		if e.kind == kStorage {
			a.value = max(a.value, e.value)
		} else {
			a.value += e.value
		}
		a.published = max(a.published, e.published)
	}
	for _, k := range order {
		if !g.r.chance(g.c.Summary) {
			continue
		}
		e := entry{kind: k.kind, agent: k.agent, start: k.day * 86400, dur: 86400, value: accs[k].value,
			etype: fSummary, published: accs[k].published + lag(g.r)}
		if g.r.chance(g.c.Midnight) {
			e.etype |= fMidnight
		}
		g.add(e, cufLink{})
	}
}

// correct adds a correction of the event es[p] (an event of its own, never a
// copy), then corrections of the correction while chain says so.
func (g *cufGen) correct(p, depth int) {
	r := g.r
	c := g.es[p]
	c.etype &^= fMidnight
	if endsAtMidnight(&c) && r.chance(g.c.Midnight) {
		c.etype |= fMidnight
	}
	c.value = otherQuantity(r, c.value)
	c.published += int64(r.between(60_000, 21_600_000))
	ci := g.add(c, cufLink{ref: cufLink{src: g.es[p].id}.eventID()})
	if r.chance(g.c.Early) {
		g.es[p].published, g.es[ci].published = g.es[ci].published, g.es[p].published
	}
	if depth < maxChain && r.chance(g.c.Chain) {
		g.correct(ci, depth+1)
	}
}

// conflict changes what a conflicting copy says: the quantity, or for
// licenses (and one bandwidth or storage copy in four) the times.
func (g *cufGen) conflict(e *entry) {
	r := g.r
	switch {
	case e.kind == kSnapshot:
		day := floorDiv(e.start, 86400) * 86400
		e.start = day + (e.start-day+int64(r.between(1, 3599)))%86400
	case e.kind == kLicense || r.intn(4) == 0:
		e.dur /= 2
	default:
		e.value = otherQuantity(r, e.value)
	}
}

// otherQuantity returns a quantity near v that is not v: v plus or minus up
// to half of it (at least 1).
func otherQuantity(r *rng, v uint64) uint64 {
	d := r.logUniform(1, max(v/2, 1))
	if v > d && (r.chance(0.5) || v > math.MaxUint64-d) {
		return v - d
	}
	return v + d
}
