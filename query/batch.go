package query

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// Coalescing. Most of what ClickHouse 18.16 spends on a tenant's month is
// the query itself, not the tenant's rows: a month of daily usage costs it
// 3.3 ms of CPU alone, and four tenants' months in one query 6.9 ms, eight
// 11 ms (benchmark data, 2,000 tenants). So when every query slot is taken,
// the per-tenant queries of the same shape that wait for one are answered
// together: one query for all their tenants and ranges, whose rows each
// query takes its own from. A query that finds a slot free runs alone at
// once, so coalescing adds no wait to a query that would not queue anyway.

// maxBatch is the most tenant queries one batched query answers. The gain
// per tenant flattens (3.3, 1.7 and 1.4 ms of ClickHouse CPU per tenant
// alone, by four and by eight), while every query of a batch waits for the
// whole batch: with batches of 4, sixteen clients of the benchmark saw p99
// 40-60 ms where batches of 16 gave 64-92 ms, and more answers a second.
// (The default of ClickHouse.maxBatch, which tests raise.)
const maxBatch = 4

// shape is what the queries of a batch share; they differ in the tenant and
// in a condition on the tenant's rows. A shape's query is
//
//	SELECT tenant_id, <sel> FROM <from> PREWHERE <tenants> WHERE <conditions> GROUP BY tenant_id, <group>
type shape[R any] struct {
	sel   string
	args  []any // of sel
	from  string
	group string
	// ranged holds the range condition's arguments when the rows do not
	// say which range they are in (a bucket number instead of the grain):
	// such queries batch only with queries of the same range.
	ranged []any
	// scan reads a row's tenant and the rest of it.
	scan func(driver.Rows) (string, R, error)
}

func (s *shape[R]) key() string {
	var r R
	return fmt.Sprintf("%T\x00%s\x00%#v\x00%s\x00%s\x00%#v", r, s.sel, s.args, s.from, s.group, s.ranged)
}

// tenantQuery is one tenant's query in a batch.
type tenantQuery[R any] struct {
	tenant string
	cond   string // on the tenant's rows, with args
	args   []any
	// take is given every row of the tenant that the batch read. It
	// reports whether the row was in this query's range (another query of
	// the same tenant may have asked for it).
	take func(R) (bool, error)
	// alone, when not nil, is the shape to read this query with when it
	// runs by itself: one that returns fewer rows but would not batch
	// across ranges.
	alone *shape[R]
	ctx   context.Context
	err   error
	// mu orders take against the caller's giving up: once gone, take is
	// not called again (it writes into the caller's state).
	mu   sync.Mutex
	gone bool
}

// batch is the queries waiting for one slot. Its fields but queries' own
// are guarded by ClickHouse.mu.
type batch struct {
	queries any // []*tenantQuery[R] of the shape
	n       int // len(queries)
	live    int // queries whose caller still waits
	state   int // waiting, running or abandoned
	// abandoned is closed when every caller gave up before a slot was
	// free: the batch leaves the queue.
	abandoned chan struct{}
	// cancel ends the batch's ClickHouse query (running), when every
	// caller gave up.
	cancel context.CancelFunc
	done   chan struct{}
}

const (
	waiting = iota
	running
	abandoned
)

// ask answers q, alone when a slot is free (or slots are not bounded),
// else in a batch with the queries of the same shape that wait.
func ask[R any](ctx context.Context, c *ClickHouse, sh *shape[R], q *tenantQuery[R]) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.ctx = ctx
	if c.slots == nil {
		return runBatch(ctx, c, sh, []*tenantQuery[R]{q})
	}
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
		return runBatch(ctx, c, sh, []*tenantQuery[R]{q})
	default:
	}
	key := sh.key()
	c.mu.Lock()
	b := c.waiting[key]
	if b == nil || b.n >= c.maxBatch {
		b = &batch{queries: []*tenantQuery[R]{}, abandoned: make(chan struct{}), done: make(chan struct{})}
		if c.waiting == nil {
			c.waiting = map[string]*batch{}
		}
		c.waiting[key] = b
		go waitSlot(c, c.slots, key, b, sh)
	}
	b.queries = append(b.queries.([]*tenantQuery[R]), q)
	b.n++
	b.live++
	c.waitingQueries.Add(1)
	c.mu.Unlock()
	// A caller that gives up leaves the batch (leave); at once when its
	// context ends, so that a running batch is cancelled while the caller
	// may still be blocked elsewhere.
	stop := context.AfterFunc(ctx, func() { c.leave(key, b) })
	select {
	case <-b.done:
		stop()
		if q.err == nil && ctx.Err() != nil {
			// Left out of the batch (or the batch abandoned) for a
			// context that ended before the select saw it: no rows.
			return ctx.Err()
		}
		return q.err
	case <-ctx.Done():
		q.mu.Lock()
		q.gone = true
		q.mu.Unlock()
		if stop() { // the context's end had not started leave yet
			c.leave(key, b)
		}
		return ctx.Err()
	}
}

// leave counts a caller of b that gave up. When none is left, a waiting
// batch leaves the queue and a running one is cancelled.
func (c *ClickHouse) leave(key string, b *batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.live--; b.live > 0 {
		return
	}
	switch b.state {
	case waiting:
		b.state = abandoned
		if c.waiting[key] == b {
			delete(c.waiting, key)
		}
		c.waitingQueries.Add(-int64(b.n))
		close(b.abandoned)
	case running:
		b.cancel()
	}
}

// waitSlot runs batch b when a slot is free. From then on no query joins
// it; those that arrive start the next batch of the shape.
func waitSlot[R any](c *ClickHouse, slots chan struct{}, key string, b *batch, sh *shape[R]) {
	defer close(b.done)
	select {
	case slots <- struct{}{}:
	case <-b.abandoned:
		return
	}
	defer func() { <-slots }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.mu.Lock()
	if b.state == abandoned {
		c.mu.Unlock()
		return
	}
	b.state, b.cancel = running, cancel
	if c.waiting[key] == b {
		delete(c.waiting, key)
	}
	c.waitingQueries.Add(-int64(b.n))
	all := b.queries.([]*tenantQuery[R])
	c.mu.Unlock()
	// The batch runs until the last of its queries' deadlines, or until
	// every caller gave up; queries whose caller already did are left out.
	var live []*tenantQuery[R]
	var deadline time.Time
	forever := false
	for _, q := range all {
		if err := q.ctx.Err(); err != nil {
			q.err = err
			continue
		}
		live = append(live, q)
		if d, ok := q.ctx.Deadline(); !ok {
			forever = true
		} else if d.After(deadline) {
			deadline = d
		}
	}
	if len(live) == 0 {
		return
	}
	if !forever {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
		defer cancelDeadline()
	}
	runBatch(ctx, c, sh, live)
}

// runBatch runs one query for qs and gives each of them its rows; each
// query's error is in its err, and the first is returned.
func runBatch[R any](ctx context.Context, c *ClickHouse, sh *shape[R], qs []*tenantQuery[R]) error {
	fail := func(err error) error {
		for _, q := range qs {
			if q.err == nil {
				q.err = err
			}
		}
		return qs[0].err
	}
	if len(qs) == 1 && qs[0].alone != nil {
		sh = qs[0].alone
	}
	sql, args := batchSQL(sh, qs)
	c.runs.Add(1)
	c.tenantQueries.Add(uint64(len(qs)))
	rows, err := c.query(ctx, sql, args...)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	byTenant := make(map[string][]*tenantQuery[R], len(qs))
	for _, q := range qs {
		byTenant[q.tenant] = append(byTenant[q.tenant], q)
	}
	for rows.Next() {
		tenant, r, err := sh.scan(rows)
		if err != nil {
			return fail(err)
		}
		// A row no query of its tenant takes is an error; a query that
		// failed or whose caller left may have been the one, so it counts
		// as taking every row.
		taken := false
		for _, q := range byTenant[tenant] {
			q.mu.Lock()
			if q.gone || q.err != nil {
				taken = true
			} else {
				ok, err := q.take(r)
				q.err = err
				taken = taken || ok || err != nil
			}
			q.mu.Unlock()
		}
		if !taken {
			for _, q := range byTenant[tenant] {
				if q.err == nil {
					q.err = fmt.Errorf("a row of tenant %q outside the range of each of its queries", tenant)
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return qs[0].err
}

// batchSQL is the query of a batch: the tenants of qs, and for each
// distinct condition the tenants that ask it.
func batchSQL[R any](sh *shape[R], qs []*tenantQuery[R]) (string, []any) {
	args := append([]any{}, sh.args...)
	var tenants, where string
	if len(qs) == 1 {
		tenants, where = "tenant_id = ?", qs[0].cond
		args = append(append(args, qs[0].tenant), qs[0].args...)
	} else {
		type term struct {
			cond    string
			args    []any
			tenants []any
		}
		var terms []*term
		at := map[string]*term{}
		var all []any
		for _, q := range qs {
			k := fmt.Sprintf("%s\x00%#v", q.cond, q.args)
			t := at[k]
			if t == nil {
				t = &term{cond: q.cond, args: q.args}
				at[k] = t
				terms = append(terms, t)
			}
			// A batch is a few queries: a tenant twice is found by looking.
			if !slices.Contains(t.tenants, any(q.tenant)) {
				t.tenants = append(t.tenants, q.tenant)
			}
			if !slices.Contains(all, any(q.tenant)) {
				all = append(all, q.tenant)
			}
		}
		tenants = "tenant_id IN (" + placeholders(len(all)) + ")"
		args = append(args, all...)
		var b strings.Builder
		for i, t := range terms {
			if i > 0 {
				b.WriteString(" OR ")
			}
			b.WriteString("(tenant_id IN (" + placeholders(len(t.tenants)) + ") AND " + t.cond + ")")
			args = append(append(args, t.tenants...), t.args...)
		}
		where = b.String()
	}
	return "SELECT tenant_id, " + sh.sel + " FROM " + sh.from + " PREWHERE " + tenants + " WHERE " + where +
		" GROUP BY tenant_id, " + sh.group, args
}

var (
	runsDesc = prometheus.NewDesc("feedmeter_query_clickhouse_tenant_runs_total",
		"ClickHouse queries run for per-tenant queries (rollups and licences); fewer than the per-tenant queries when they were batched.", nil, nil)
	tenantQueriesDesc = prometheus.NewDesc("feedmeter_query_tenant_queries_total",
		"Per-tenant queries of rollups and licences answered by ClickHouse, alone or batched.", nil, nil)
	waitingDesc = prometheus.NewDesc("feedmeter_query_tenant_queries_waiting",
		"Per-tenant queries waiting for a ClickHouse slot (--clickhouse-slots).", nil, nil)
)

// Describe and Collect make the store's counters Prometheus metrics (the
// Server registers a Store that is a prometheus.Collector).
func (c *ClickHouse) Describe(ch chan<- *prometheus.Desc) {
	ch <- runsDesc
	ch <- tenantQueriesDesc
	ch <- waitingDesc
}

func (c *ClickHouse) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(runsDesc, prometheus.CounterValue, float64(c.runs.Load()))
	ch <- prometheus.MustNewConstMetric(tenantQueriesDesc, prometheus.CounterValue, float64(c.tenantQueries.Load()))
	ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(c.waitingQueries.Load()))
}

// placeholders returns n comma-separated question marks.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}
