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

// deepAfter is how many levels the trees are loaded a level a query: past
// it (a long chain of corrections of corrections), the whole correction
// forest of the tenant and kind is loaded in one query instead.
const deepAfter = 8

// idLookups is what planning reads; the store implements it.
type idLookups interface {
	ids(ctx context.Context, keys []idKey) ([]idRow, error)
	// forest returns the usage_ids rows of every event of tenant and kind
	// that is a correction or is corrected (every row a tree of theirs can
	// hold).
	forest(ctx context.Context, groups []group) ([]idRow, error)
	storedEvents(ctx context.Context, keys []rowKey) (map[rowKey]*model.Event, error)
	replacedRows(ctx context.Context, keys []idKey) (map[rowKey]bool, error)
}

// usagePlan is what a batch's usage events do to ClickHouse.
type usagePlan struct {
	insert      []bool        // by index of the batch's rows: a new identity, inserted into usage_events
	inserts     int           // how many are set in insert
	replace     []replacement // rows that stop counting, copied into usage_replaced after the insert
	copies      []copyRow     // records of copies of identities under other atom ids, and conflicts
	rejects     []rejectRow   // conflicts (and, when planUsage returns, the dropped rows)
	dups        int           // rows not inserted because their identity counts already (same usage)
	republished int           // of dups, those under an atom id the identity did not have
	anomalies   []string      // trees whose counted event has no row that counts (never expected)
	dropped     []drop        // new rows the trees could not take (a loop, past the bounds): not inserted
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

// group is a tenant and kind: the events one correction tree can hold.
type group struct {
	tenant string
	kind   model.Kind
}

// graph holds the correction trees a batch touches.
type graph struct {
	full    map[group]bool // groups whose whole forest is loaded
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
		} else if !r.published.IsZero() && (n.published.IsZero() || r.published.Before(n.published)) {
			// Rows of one identity under two atom ids (before 0007): the
			// first published ranks it, whichever row came back first.
			n.published = r.published
		}
		if !slices.Contains(n.entries, r.entryID) {
			n.entries = append(n.entries, r.entryID)
		}
	}
}

// keepStored drops from the nodes the usage_ids rows among keys whose
// usage_events row is not in present (of an insert that failed), and the
// nodes left without one.
func (g *graph) keepStored(keys []rowKey, present map[rowKey]*model.Event) {
	for _, k := range keys {
		if present[k] != nil {
			continue
		}
		ik := idKey{k.tenant, k.kind, k.eventID}
		if n := g.nodes[ik]; n != nil {
			n.entries = slices.DeleteFunc(n.entries, func(e string) bool { return e == k.entryID })
			if len(n.entries) == 0 {
				delete(g.nodes, ik)
			}
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
//
// A row the trees cannot take (its referenceId leads back to it, or its
// tree is past the bounds) is rejected, and the batch is planned again
// without it: the next copy of its identity then stands for it, and the
// trees are loaded without its links, as in a batch of their own.
func planUsage(ctx context.Context, st idLookups, rows []eventRow, look []idKey, now time.Time) (*usagePlan, error) {
	order := make([]int, len(rows)) // indexes of rows in Kafka order
	for i := range rows {
		order[rows[i].seq] = i
	}
	excluded := map[int]bool{}
	var dropped []rejectRow // of the rows excluded, in earlier rounds
	for {
		p, err := planOnce(ctx, st, rows, order, excluded, look, now)
		if err != nil {
			return nil, err
		}
		if len(p.dropped) == 0 {
			p.rejects = append(p.rejects, dropped...)
			return p, nil
		}
		for _, d := range p.dropped {
			excluded[d.row] = true
			dropped = append(dropped, d.reject)
			// Its later copies naming the same id close the same loop
			// (the way back is made of rows joined before them): out too.
			e := &rows[d.row].ev
			for _, i := range order {
				if c := &rows[i].ev; !excluded[i] && c.Identity() == e.Identity() && c.ReferenceID == e.ReferenceID {
					excluded[i] = true
					dropped = append(dropped, sinkReject(&rows[i], now, d.reject.dl.Reason))
				}
			}
		}
	}
}

// planOnce plans the rows not excluded (order: all rows, in Kafka order).
func planOnce(ctx context.Context, st idLookups, rows []eventRow, order []int, excluded map[int]bool, look []idKey, now time.Time) (*usagePlan, error) {
	p := &usagePlan{insert: make([]bool, len(rows))}
	if len(excluded) > 0 {
		kept := make([]int, 0, len(order))
		for _, i := range order {
			if !excluded[i] {
				kept = append(kept, i)
			}
		}
		order = kept
	}
	g := &graph{nodes: map[idKey]*node{}, kids: map[idKey][]idKey{}, look: look}
	found, err := st.ids(ctx, look)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 && allNew(rows, order) {
		// The usual batch: nothing of it stored, no correction, no copy.
		for _, i := range order {
			p.insert[i] = true
		}
		p.inserts = len(order)
		return p, nil
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
	// A row usage_ids names that usage_events lacks (a month dropped from
	// one table only) is not there.
	g.keepStored(storedKeys, stored)
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

// allNew reports whether the rows of order (all of rows) hold no
// correction and no identity twice, by their id fingerprints (of kind and
// event id: a fingerprint seen twice, of one tenant or two, is taken for a
// copy, and the general plan then looks).
func allNew(rows []eventRow, order []int) bool {
	if len(order) != len(rows) {
		return false
	}
	seen := make(map[uint64]struct{}, len(rows))
	for i := range rows {
		if rows[i].ev.ReferenceID != "" {
			return false
		}
		if _, ok := seen[rows[i].idFP]; ok {
			return false
		}
		seen[rows[i].idFP] = struct{}{}
	}
	return true
}

// drop is a batch row the correction trees could not take.
type drop struct {
	row    int
	reject rejectRow
}

// planCorrections adds to p what the batch's corrections change: the
// trees that the batch's rows belong to are loaded whole, and in each
// every row but the counted event's stops counting.
//
// A tree is loaded in two steps, a level a query for all trees at once:
// up from each of the batch's rows to the tree's top, then down from each
// top. Past deepAfter levels the whole forest of the tenant and kind is
// read at once, so a chain of any length costs a few queries: corrections
// are few beside the events, and a tenant's are read only when its trees
// are that deep.
func planCorrections(ctx context.Context, st idLookups, g *graph, rows []eventRow, order []int, p *usagePlan, now time.Time) error {
	// The usual batch: no correction in it, none stored naming its events.
	if len(g.kids) == 0 && !slices.ContainsFunc(order, func(i int) bool { return rows[i].ev.ReferenceID != "" }) {
		return nil
	}
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
	// The new rows' links: their referenceIds, and the ids they name.
	newRef := map[idKey]string{}
	newKids := map[idKey][]idKey{}
	for _, i := range members {
		if !p.insert[i] {
			continue
		}
		e := &rows[i].ev
		k := identityKey(e.Identity())
		newRef[k] = e.ReferenceID
		if e.ReferenceID != "" {
			pk := idKey{e.TenantID, e.Kind, e.ReferenceID}
			newKids[pk] = append(newKids[pk], k)
		}
	}
	var involved []int
	for _, i := range members {
		e := &rows[i].ev
		k := identityKey(e.Identity())
		if e.ReferenceID != "" || len(g.kids[k]) > 0 || len(newKids[k]) > 0 {
			involved = append(involved, i)
		}
	}
	if len(involved) == 0 {
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
	g.full = map[group]bool{}
	fetch := func(keys []idKey) error {
		var want []idKey
		for _, k := range keys {
			if !g.fetched[k] && !g.full[group{k.tenant, k.kind}] {
				g.fetched[k] = true
				want = append(want, k)
			}
		}
		if len(want) == 0 {
			return nil
		}
		rs, err := st.ids(ctx, want)
		g.add(rs)
		return err
	}
	// deep loads the whole forest of the groups of keys not loaded yet.
	deep := func(keys []idKey) error {
		var gs []group
		for _, k := range keys {
			if gr := (group{k.tenant, k.kind}); !g.full[gr] {
				g.full[gr] = true
				gs = append(gs, gr)
			}
		}
		if len(gs) == 0 {
			return nil
		}
		rs, err := st.forest(ctx, gs)
		g.add(rs)
		return err
	}
	parentOf := func(k idKey) (idKey, bool) {
		if n := g.nodes[k]; n != nil {
			return g.parent(n)
		}
		if ref := newRef[k]; ref != "" {
			return idKey{k.tenant, k.kind, ref}, true
		}
		return idKey{}, false
	}
	// Up: each involved row's top. A climb that comes round to where it
	// was goes round a loop (of the batch's new rows: stored events have
	// none, and loopsBack below rejects the row that closes it): it stops
	// there, found by Brent's method (a mark moved to the climb's place
	// after 1, 2, 4, … steps; meeting it is going round).
	type climb struct {
		at, mark    idKey
		steps, span int
	}
	tops := make(map[int]idKey, len(involved))
	climbing := make(map[int]*climb, len(involved))
	for _, i := range involved {
		k := identityKey(rows[i].ev.Identity())
		climbing[i] = &climb{at: k, mark: k, span: 1}
	}
	for level := 0; len(climbing) > 0; level++ {
		keys := make([]idKey, 0, len(climbing))
		for _, c := range climbing {
			keys = append(keys, c.at)
		}
		if level == deepAfter {
			if err := deep(keys); err != nil {
				return err
			}
		}
		if err := fetch(keys); err != nil {
			return err
		}
		for i, c := range climbing {
			pk, ok := parentOf(c.at)
			if !ok || pk == c.mark {
				tops[i] = c.at
				delete(climbing, i)
				continue
			}
			c.at = pk
			if c.steps++; c.steps == c.span {
				c.mark, c.steps, c.span = pk, 0, 2*c.span
			}
		}
	}
	// Down: every event under each top.
	type at struct{ top, key idKey }
	var frontier []at
	seenTop := map[idKey]bool{}
	for _, t := range tops {
		if !seenTop[t] {
			seenTop[t] = true
			frontier = append(frontier, at{t, t})
		}
	}
	below := map[idKey]bool{}
	for level := 0; len(frontier) > 0; level++ {
		keys := make([]idKey, len(frontier))
		for j, f := range frontier {
			keys[j] = f.key
		}
		if level == deepAfter {
			if err := deep(keys); err != nil {
				return err
			}
		}
		if err := fetch(keys); err != nil {
			return err
		}
		var next []at
		for _, f := range frontier {
			for _, c := range slices.Concat(g.kids[f.key], newKids[f.key]) {
				if !below[c] {
					below[c] = true
					next = append(next, at{f.top, c})
				}
			}
		}
		frontier = next
	}
	// The batch's new rows join the graph in Kafka order; one whose
	// referenceId leads back to it (through the rows joined before it) is
	// rejected.
	joined := map[idKey]string{}
	for _, i := range involved {
		if !p.insert[i] {
			continue
		}
		e := &rows[i].ev
		k := identityKey(e.Identity())
		if loopsBack(g, joined, k, e.ReferenceID) {
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
		joined[k] = e.ReferenceID
		if pk, ok := g.parent(n); ok && !slices.Contains(g.kids[pk], k) {
			g.kids[pk] = append(g.kids[pk], k)
		}
	}
	for _, i := range involved {
		if n := g.nodes[identityKey(rows[i].ev.Identity())]; n != nil && n.src == (source{}) {
			n.src = rows[i].src
		}
	}
	// Which stored rows still count, in the trees that loaded.
	var storedIDs []idKey
	for _, i := range involved {
		top, ok := tops[i]
		if !ok {
			continue
		}
		_, all := g.counted(top, g.nodes[top] == nil)
		for _, n := range all {
			if len(n.entries) > 0 {
				storedIDs = append(storedIDs, n.key)
			}
		}
	}
	replaced, err := st.replacedRows(ctx, storedIDs)
	if err != nil {
		return err
	}
	done := map[idKey]bool{}
	for _, i := range involved {
		top, ok := tops[i]
		if !ok || done[top] {
			continue
		}
		done[top] = true
		win, all := g.counted(top, g.nodes[top] == nil)
		if win == nil {
			continue // nothing of the batch's joined it after all (its rows were rejected)
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
	p.dropped = append(p.dropped, drop{i, rj})
}

// loopsBack reports whether naming ref from k would close a loop: going up
// from ref (through stored events and the batch's rows joined, refs)
// reaches k.
func loopsBack(g *graph, refs map[idKey]string, k idKey, ref string) bool {
	cur := idKey{k.tenant, k.kind, ref}
	for range len(g.nodes) + len(refs) + 2 {
		if ref == "" {
			return false
		}
		if cur == k {
			return true
		}
		if n := g.nodes[cur]; n != nil {
			ref = n.ref
		} else {
			ref = refs[cur]
		}
		cur = idKey{k.tenant, k.kind, ref}
	}
	return false
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
