package sink

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/feedmeter/feedmeter/model"
)

// A batch's usage events are planned before anything is written: which are
// new (inserted into usage_events), which are copies of an identity already
// counted (dropped; a copy under another atom id is a republish, a copy that
// says something else a conflict), and which rows stop counting because a
// correction replaces them (copied into usage_replaced). The plan is made
// from what ClickHouse holds at the start of each attempt, so a write cut
// short is planned again from what it left.
//
// Corrections, per tenant and kind. Events link by referenceId into trees:
// an event's parent is the event its referenceId names. The event that
// counts in a tree is found from its root (the event without a referenceId,
// or the id that the topmost events name when that event never arrived) by
// going down, at each event, to its child with the latest atom:published
// (to the second, as usage_events keeps it; ties by the greater event id),
// until an event without children: that one counts, every other event of
// the tree does not. So a correction replaces its original whichever
// arrives first, a correction of a correction replaces the last one, a
// correction whose original never arrives counts as itself, and of two
// corrections of one event the later one counts. Each tree has one counted
// event after every batch: which one depends only on the events of the
// tree, never on the order they arrived in.

// Bounds on correction trees: a tree of more than maxTreeEvents events, or
// deeper than maxTreeDepth (an upstream correcting one event thousands of
// times), has the batch's events that join it rejected, with a reason; a
// batch loads at most about maxTreeLoad events of trees.
const (
	maxTreeEvents = 10000
	maxTreeDepth  = 256
	maxTreeLoad   = 100000
)

// idLookups is what planning reads; the store implements it.
type idLookups interface {
	ids(ctx context.Context, keys []idKey) ([]idRow, error)
	storedEvents(ctx context.Context, keys []rowKey) (map[rowKey]*model.Event, error)
	replacedRows(ctx context.Context, keys []idKey) (map[rowKey]bool, error)
}

// usagePlan is what a batch's usage events do to ClickHouse.
type usagePlan struct {
	insert      []bool        // by index of the batch's rows: a new identity, inserted into usage_events
	inserts     int           // how many are set in insert
	replace     []replacement // rows that stop counting, copied into usage_replaced after the insert
	copies      []copyRow     // records of copies of identities under other atom ids, and conflicts
	rejects     []rejectRow   // conflicts and events that cannot join their correction tree
	dups        int           // rows not inserted because their identity counts already (same usage)
	republished int           // of dups, those under an atom id the identity did not have
	anomalies   []string      // trees whose counted event has no row that counts (never expected)
}

// node is one event of a correction tree.
type node struct {
	key       idKey
	ref       string
	published time.Time // whole seconds
	entries   []string  // atom ids of its usage_events rows
	row       int       // index of the batch's new row with this identity, -1 for none
	src       source    // the record of that row, or of the batch row that is this identity
}

// graph holds the correction trees a batch touches.
type graph struct {
	nodes   map[idKey]*node
	kids    map[idKey][]idKey // by the id they name (role 1 rows, and new rows)
	look    []idKey           // the keys read first
	fetched map[idKey]bool    // keys whose usage_ids rows were read (or are known to be none); made when trees are loaded
}

func (g *graph) parent(n *node) (idKey, bool) {
	if n.ref == "" {
		return idKey{}, false
	}
	return idKey{n.key.tenant, n.key.kind, n.ref}, true
}

// add records the usage_ids rows rs.
func (g *graph) add(rs []idRow) {
	for _, r := range rs {
		if r.role == 1 {
			child := idKey{r.tenant, r.kind, r.eventID}
			if !slices.Contains(g.kids[r.idKey], child) {
				g.kids[r.idKey] = append(g.kids[r.idKey], child)
			}
			continue
		}
		n := g.nodes[r.idKey]
		if n == nil {
			n = &node{key: r.idKey, ref: r.ref, published: r.published, row: -1}
			g.nodes[r.idKey] = n
		}
		if !slices.Contains(n.entries, r.entryID) {
			n.entries = append(n.entries, r.entryID)
		}
	}
}

// later reports whether child a wins over child b: later published, then
// the greater id.
func later(a, b *node) bool {
	if c := a.published.Compare(b.published); c != 0 {
		return c > 0
	}
	return a.key.id > b.key.id
}

// root returns the top of k's tree: the topmost event, or the id the
// topmost events name when it never arrived (virtual true).
func (g *graph) root(k idKey) (top idKey, virtual bool) {
	seen := map[idKey]bool{}
	for {
		n := g.nodes[k]
		p, ok := g.parent(n)
		if !ok || seen[p] {
			return k, false
		}
		seen[k] = true
		if g.nodes[p] == nil {
			return p, true
		}
		k = p
	}
}

// touches reports whether n's parent or one of its children is in keys.
func (g *graph) touches(n *node, keys map[idKey]bool) bool {
	if pk, ok := g.parent(n); ok && keys[pk] {
		return true
	}
	return slices.ContainsFunc(g.kids[n.key], func(k idKey) bool { return keys[k] })
}

// children returns the events of g that name k.
func (g *graph) children(k idKey) []*node {
	var out []*node
	for _, c := range g.kids[k] {
		if n := g.nodes[c]; n != nil {
			out = append(out, n)
		}
	}
	return out
}

// counted returns the event that counts in the tree under top, and every
// event of that tree.
func (g *graph) counted(top idKey, virtual bool) (*node, []*node) {
	var all []*node
	var stack []idKey
	if virtual {
		stack = append(stack, top)
	} else {
		all = append(all, g.nodes[top])
		stack = append(stack, top)
	}
	seen := map[idKey]bool{top: true}
	for len(stack) > 0 {
		k := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range g.children(k) {
			if !seen[c.key] {
				seen[c.key] = true
				all = append(all, c)
				stack = append(stack, c.key)
			}
		}
	}
	cur := top
	var win *node
	if !virtual {
		win = g.nodes[top]
	}
	for {
		var best *node
		for _, c := range g.children(cur) {
			if best == nil || later(c, best) {
				best = c
			}
		}
		if best == nil {
			return win, all
		}
		win, cur = best, best.key
	}
}

// planUsage plans rows (a batch's usage events, each with its place in
// Kafka order in seq). look names the ids that ClickHouse may hold rows
// of (each batch event's id and referenceId that the key cache cannot rule
// out); ids it leaves out are taken to have none.
func planUsage(ctx context.Context, st idLookups, rows []eventRow, look []idKey, now time.Time) (*usagePlan, error) {
	p := &usagePlan{insert: make([]bool, len(rows))}
	order := make([]int, len(rows)) // indexes of rows in Kafka order
	for i := range rows {
		order[rows[i].seq] = i
	}
	g := &graph{nodes: map[idKey]*node{}, kids: map[idKey][]idKey{}, look: look}
	found, err := st.ids(ctx, look)
	if err != nil {
		return nil, err
	}
	g.add(found)

	// Identities: the first copy in Kafka order, unless one is counted
	// already; later copies are dropped, as republishes or conflicts.
	var storedKeys []rowKey
	for _, i := range order {
		if n := g.nodes[identityKey(rows[i].ev.Identity())]; n != nil && len(n.entries) > 0 {
			for _, en := range n.entries {
				storedKeys = append(storedKeys, rowKey{n.key.tenant, n.key.kind, n.key.id, en})
			}
		}
	}
	slices.SortFunc(storedKeys, func(a, b rowKey) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(a.kind, b.kind), cmp.Compare(a.eventID, b.eventID), cmp.Compare(a.entryID, b.entryID))
	})
	storedKeys = slices.Compact(storedKeys)
	stored, err := st.storedEvents(ctx, storedKeys)
	if err != nil {
		return nil, err
	}
	type kept struct {
		ev      *model.Event // what counts for the identity
		entry   string       // its atom id
		entries []string     // atom ids seen for the identity
		row     int          // the batch's new row, -1 when stored
	}
	keep := map[model.Identity]*kept{}
	for _, i := range order {
		r := &rows[i]
		id := r.ev.Identity()
		k := keep[id]
		if k == nil {
			k = &kept{row: -1}
			keep[id] = k
			if n := g.nodes[identityKey(id)]; n != nil {
				k.entries = append(k.entries, n.entries...)
				for _, en := range n.entries {
					if ev := stored[rowKey{id.TenantID, id.Kind, id.EventID, en}]; ev != nil && (k.ev == nil || ev.SameUsage(&r.ev)) {
						k.ev, k.entry = ev, en
					}
				}
				if k.ev == nil {
					// usage_ids names rows usage_events does not hold
					// (a month dropped from one table only): the identity
					// is taken as counted, its content as this copy's.
					k.ev, k.entry = &r.ev, n.entries[0]
				}
			} else {
				k.ev, k.entry, k.row = &r.ev, r.ev.EntryID, i
				k.entries = append(k.entries, r.ev.EntryID)
				p.insert[i] = true
				p.inserts++
				continue
			}
		}
		newEntry := !slices.Contains(k.entries, r.ev.EntryID)
		if newEntry {
			k.entries = append(k.entries, r.ev.EntryID)
		}
		if r.ev.SameUsage(k.ev) {
			p.dups++
			if r.ev.EntryID != k.entry { // a copy under another atom id, not a record of the kept one again
				p.copies = append(p.copies, copyRow{row: rowKey{id.TenantID, id.Kind, id.EventID, r.ev.EntryID}, kept: k.entry, src: r.src})
				if newEntry {
					p.republished++
				}
			}
			continue
		}
		p.copies = append(p.copies, copyRow{row: rowKey{id.TenantID, id.Kind, id.EventID, r.ev.EntryID}, kept: k.entry, conflict: true, src: r.src})
		p.rejects = append(p.rejects, sinkReject(r, now, fmt.Sprintf("conflicting copy of event %s (%s): entry %s says other than entry %s, which counts (the first copy seen counts; quantity %d here, %d there)",
			id.EventID, id.Kind, r.ev.EntryID, k.entry, r.ev.Quantity, k.ev.Quantity)))
	}
	return p, planCorrections(ctx, st, g, rows, order, p, now)
}

// planCorrections adds to p what the batch's corrections change: the
// trees that the batch's rows belong to are loaded whole, and in each
// every row but the counted event's stops counting.
func planCorrections(ctx context.Context, st idLookups, g *graph, rows []eventRow, order []int, p *usagePlan, now time.Time) error {
	// The batch rows that stand for an identity (new, or a copy of a
	// stored one), in Kafka order; conflicts and later copies are out.
	var members []int
	standing := map[model.Identity]bool{}
	for _, i := range order {
		id := rows[i].ev.Identity()
		if standing[id] {
			continue
		}
		standing[id] = true
		if p.insert[i] || g.nodes[identityKey(id)] != nil {
			members = append(members, i)
		}
	}
	named := map[idKey]bool{} // ids the batch's new rows name
	for _, i := range members {
		if e := &rows[i].ev; p.insert[i] && e.ReferenceID != "" {
			named[idKey{e.TenantID, e.Kind, e.ReferenceID}] = true
		}
	}
	var frontier []idKey
	for _, i := range members {
		e := &rows[i].ev
		k := identityKey(e.Identity())
		if e.ReferenceID != "" || len(g.kids[k]) > 0 || named[k] {
			frontier = append(frontier, k)
			if e.ReferenceID != "" {
				frontier = append(frontier, idKey{e.TenantID, e.Kind, e.ReferenceID})
			}
		}
	}
	if len(frontier) == 0 {
		return nil
	}
	// What was read already: the first lookup's keys, and the batch's ids
	// and referenceIds it left out (the key cache knows them to have none).
	g.fetched = make(map[idKey]bool, len(g.look)+2*len(rows))
	for _, k := range g.look {
		g.fetched[k] = true
	}
	for i := range rows {
		e := &rows[i].ev
		g.fetched[identityKey(e.Identity())] = true
		if e.ReferenceID != "" {
			g.fetched[idKey{e.TenantID, e.Kind, e.ReferenceID}] = true
		}
	}
	// Load the stored trees whole: parents up to the root, children down,
	// a level a query. Trees deeper or larger than the bounds stay
	// unfinished, and the batch's rows that join them are rejected.
	seen := map[idKey]bool{}
	for round := 0; len(frontier) > 0 && round < maxTreeDepth && len(seen) < maxTreeLoad; round++ {
		var fetch, next []idKey
		for _, k := range frontier {
			if !seen[k] {
				seen[k] = true
				next = append(next, k)
				if !g.fetched[k] {
					fetch = append(fetch, k)
				}
			}
		}
		if len(fetch) > 0 {
			rs, err := st.ids(ctx, fetch)
			if err != nil {
				return err
			}
			for _, k := range fetch {
				g.fetched[k] = true
			}
			g.add(rs)
		}
		frontier = frontier[:0]
		for _, k := range next {
			if n := g.nodes[k]; n != nil {
				if pk, ok := g.parent(n); ok && !seen[pk] {
					frontier = append(frontier, pk)
				}
			}
			for _, c := range g.kids[k] {
				if !seen[c] {
					frontier = append(frontier, c)
				}
			}
		}
	}
	// The batch's new rows join the graph in Kafka order; one whose
	// referenceId would close a loop is rejected.
	for _, i := range members {
		if !p.insert[i] {
			continue
		}
		e := &rows[i].ev
		k := identityKey(e.Identity())
		if !seen[k] {
			continue
		}
		if loopsBack(g, k, e.ReferenceID) {
			p.drop(i, sinkReject(&rows[i], now, fmt.Sprintf("event %s (%s) has referenceId %s, which leads back to it: corrections cannot form a loop",
				e.EventID, e.Kind, e.ReferenceID)))
			continue
		}
		var pub time.Time
		if !e.Published.IsZero() {
			pub = e.Published.UTC().Truncate(time.Second)
		}
		n := &node{key: k, ref: e.ReferenceID, published: pub, row: i, src: rows[i].src}
		g.nodes[k] = n
		if pk, ok := g.parent(n); ok && !slices.Contains(g.kids[pk], k) {
			g.kids[pk] = append(g.kids[pk], k)
		}
	}
	for _, i := range members {
		if n := g.nodes[identityKey(rows[i].ev.Identity())]; n != nil && n.src == (source{}) {
			n.src = rows[i].src
		}
	}
	// Which stored rows still count.
	var storedIDs []idKey
	for k, n := range g.nodes {
		if len(n.entries) > 0 && seen[k] {
			storedIDs = append(storedIDs, k)
		}
	}
	replaced, err := st.replacedRows(ctx, storedIDs)
	if err != nil {
		return err
	}
	unfinished := map[idKey]bool{}
	for _, k := range frontier {
		unfinished[k] = true
	}
	done := map[idKey]bool{}
	for _, i := range members {
		k := identityKey(rows[i].ev.Identity())
		if g.nodes[k] == nil || !seen[k] {
			continue
		}
		top, virtual := g.root(k)
		if done[top] {
			continue
		}
		done[top] = true
		win, all := g.counted(top, virtual)
		if len(all) > maxTreeEvents || unfinished[top] || slices.ContainsFunc(all, func(n *node) bool { return g.touches(n, unfinished) }) {
			for _, n := range all {
				if n.row >= 0 {
					p.drop(n.row, sinkReject(&rows[n.row], now, fmt.Sprintf("event %s (%s) joins a correction tree of more than %d events or %d levels; not counted",
						n.key.id, n.key.kind, maxTreeEvents, maxTreeDepth)))
				}
			}
			continue
		}
		src := firstSource(all)
		winLive := false
		for _, n := range all {
			for _, en := range n.entries {
				row := rowKey{n.key.tenant, n.key.kind, n.key.id, en}
				switch {
				case replaced[row]:
				case n == win:
					winLive = true
				default:
					p.replace = append(p.replace, replacement{row: row, by: win.key.id, src: src})
				}
			}
			if n.row >= 0 {
				if n == win {
					winLive = true
				} else {
					p.replace = append(p.replace, replacement{row: rowKey{n.key.tenant, n.key.kind, n.key.id, rows[n.row].ev.EntryID}, by: win.key.id, src: src})
				}
			}
		}
		if !winLive {
			p.anomalies = append(p.anomalies, fmt.Sprintf("tenant %s %s: event %s should count, but every row of it was replaced", win.key.tenant, win.key.kind, win.key.id))
		}
	}
	return nil
}

// drop takes row i out of the inserts, as reject rj.
func (p *usagePlan) drop(i int, rj rejectRow) {
	if p.insert[i] {
		p.insert[i] = false
		p.inserts--
	}
	p.rejects = append(p.rejects, rj)
}

// loopsBack reports whether naming ref from k would close a loop: going up
// from ref reaches k.
func loopsBack(g *graph, k idKey, ref string) bool {
	if ref == "" {
		return false
	}
	cur := idKey{k.tenant, k.kind, ref}
	for range maxTreeEvents {
		if cur == k {
			return true
		}
		n := g.nodes[cur]
		if n == nil || n.ref == "" {
			return false
		}
		cur = idKey{k.tenant, k.kind, n.ref}
	}
	return true
}

// firstSource returns the record of the tree's batch row that came first.
func firstSource(all []*node) source {
	var best source
	for _, n := range all {
		if n.src == (source{}) {
			continue
		}
		if best == (source{}) || n.src.partition < best.partition || n.src.partition == best.partition && n.src.offset < best.offset {
			best = n.src
		}
	}
	return best
}

// sinkReject is a reject of a usage record that decoded but cannot count.
func sinkReject(r *eventRow, now time.Time, reason string) rejectRow {
	return newReject(r.src, model.DeadLetter{
		Stage: model.StageSink, TenantID: r.ev.TenantID, EntryID: r.ev.EntryID, Index: int(r.src.offset),
		Reason: reason, Raw: r.raw, Time: now, Source: r.src.String(),
	})
}
