package query

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
)

// Store is what the handlers read: sums from the rollups, licensed servers,
// raw events and rankings. ClickHouse implements it (NewClickHouse); tests of
// the HTTP layer may use a fake.
type Store interface {
	Usage(ctx context.Context, q UsageQuery) ([]UsageSum, error)
	Licences(ctx context.Context, q UsageQuery) ([]LicenceSum, error)
	Readings(ctx context.Context, p *Plan) (*Readings, error)
	Events(ctx context.Context, q EventsQuery) ([]EventRow, error)
	TopTenants(ctx context.Context, q TopQuery) ([]TenantUsage, error)
	Ping(ctx context.Context) error
}

// Dimensions a usage query may group by, and their columns.
var dimensions = map[string]string{
	"server": "server", "region": "region", "data_center": "data_center", "resource_id": "resource_id",
}

// UsageKinds are the kinds of usage events, in the order answers list them.
var UsageKinds = []string{string(model.KindBandwidthIn), string(model.KindBandwidthOut), string(model.KindStorage), string(model.KindLicense)}

// UsageQuery asks for the sums of one tenant's rollups in buckets.
type UsageQuery struct {
	Tenant string
	Bounds []time.Time // n+1 bounds of n buckets, whole UTC hours, ascending
	// Days are the bounds of the days whose licensed servers add up to a
	// bucket's server-days (Licences only): local days clipped to the
	// buckets, or the buckets themselves for hours.
	Days    []time.Time
	Kinds   []string // Usage: the kinds to sum
	GroupBy []string // keys of dimensions
	// MaxRows, when not 0, is the most sums an answer may hold: beyond
	// it, a *TooManyRowsError.
	MaxRows int
	// Zone is the zone of the buckets' local days and months (nil: the
	// bounds alone say where buckets begin).
	Zone *time.Location
}

// TooManyRowsError says that an answer would hold more than
// UsageQuery.MaxRows sums.
type TooManyRowsError struct{ Max int }

func (e *TooManyRowsError) Error() string {
	return fmt.Sprintf("more than %d rows", e.Max)
}

// UsageSum is one bucket of one kind (and group).
type UsageSum struct {
	Bucket      int // index of the bucket in UsageQuery.Bounds
	Kind        string
	Group       []string // values of UsageQuery.GroupBy
	Quantity    *big.Int
	ByteSeconds *big.Int
	Events      uint64
	Servers     uint64 // license: distinct servers licensed in the bucket
}

// LicenceSum is the licences of one bucket (and group).
type LicenceSum struct {
	Bucket     int
	Group      []string
	Servers    uint64 // distinct servers licensed at any time in the bucket
	ServerDays uint64 // sum over the bucket's days of the servers licensed that day
	Events     uint64
}

// EventsQuery asks for a page of one tenant's raw usage events, in the order
// (time, kind, entry_id), after the cursor.
type EventsQuery struct {
	Tenant   string
	From, To time.Time
	Kinds    []string
	After    *EventCursor
	Limit    int
}

// EventCursor is the position after the last event of a page.
type EventCursor struct {
	Time    int64  `json:"t"`
	Kind    string `json:"k"`
	EntryID string `json:"e"`
}

// EventRow is one usage event as stored.
type EventRow struct {
	EntryID, Kind, EventID, EventType                    string
	ReferenceID                                          string // the event it corrects, "" for none
	ReplacedBy                                           string // the event that counted instead when it was replaced, "" while it counts
	Region, DataCenter, ResourceID, ServerID, ServerName string
	External                                             bool
	StartTime, EndTime, EventTime                        time.Time // zero when absent
	Time                                                 time.Time // the time it is filed under
	Quantity                                             uint64
	ByteSeconds                                          *big.Int
}

// TopQuery ranks tenants by usage of one kind ("" ranks by events).
type TopQuery struct {
	From, To time.Time // whole UTC hours
	Kind     string
	Limit    int
}

// TenantUsage is one tenant of a ranking.
type TenantUsage struct {
	Tenant string
	Value  *big.Int
	Events uint64
}

// ClickHouse reads the tables of the schemas package with parameterised
// queries (values are bound by the driver; identifiers come only from fixed
// lists).
type ClickHouse struct {
	conn driver.Conn
	// Settings of the per-tenant queries. Each reads a few granules of one
	// tenant, so one thread apiece and many queries at once use the CPUs
	// better than several threads per query, and the uncompressed cache
	// spares decompressing the same hot granules again; on two cores this
	// doubles the queries per second. The ranking of all tenants, a scan,
	// keeps the server's max_threads. Default in NewClickHouse.
	Settings clickhouse.Settings
	// slots, when not nil, bounds the per-tenant queries running at once to
	// its capacity; the others wait their turn (or their deadline) here.
	// With ClickHouse on few cores, queries that share them all slow down
	// together; queued, each runs at full speed (see SetConcurrency).
	slots chan struct{}
	// waiting holds, by shape, the batch of tenant queries that wait for
	// a slot (batch.go).
	mu             sync.Mutex
	waiting        map[string]*batch
	maxBatch       int
	waitingQueries atomic.Int64
	// ClickHouse queries run for tenant queries, and the tenant queries
	// they answered.
	runs, tenantQueries atomic.Uint64
}

// SetConcurrency bounds the per-tenant queries running at once to n; 0
// removes the bound.
func (c *ClickHouse) SetConcurrency(n int) {
	c.slots = nil
	if n > 0 {
		c.slots = make(chan struct{}, n)
	}
}

// slotRows gives the query's slot back when closed.
type slotRows struct {
	driver.Rows
	once  sync.Once
	slots chan struct{}
}

func (r *slotRows) Close() error {
	err := r.Rows.Close()
	r.once.Do(func() { <-r.slots })
	return err
}

// queryTenant runs a per-tenant query with its settings, in a slot when
// they are bounded.
func (c *ClickHouse) queryTenant(ctx context.Context, sql string, args ...any) (driver.Rows, error) {
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rows, err := c.query(ctx, sql, args...)
	switch {
	case c.slots == nil:
		return rows, err
	case err != nil:
		<-c.slots
		return nil, err
	}
	return &slotRows{Rows: rows, slots: c.slots}, nil
}

// query runs a per-tenant query with its settings.
func (c *ClickHouse) query(ctx context.Context, sql string, args ...any) (driver.Rows, error) {
	if len(c.Settings) > 0 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(c.Settings))
	}
	return c.conn.Query(ctx, sql, args...)
}

// OpenClickHouse returns a connection pool to database on the server at
// addr (native protocol) for a query service: it dials nothing until the
// first query, so a server started while ClickHouse is down answers 503
// until it is up. The database is not created.
func OpenClickHouse(addr, database, username, password string) (driver.Conn, error) {
	if !schemas.ValidDatabase(database) {
		return nil, fmt.Errorf("database name %q is not [A-Za-z_][A-Za-z0-9_]*", database)
	}
	opts := schemas.ConnOptions(addr, database)
	opts.Auth.Username, opts.Auth.Password = username, password
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = time.Minute
	opts.MaxOpenConns, opts.MaxIdleConns = 32, 32
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", addr, err)
	}
	return conn, nil
}

// NewClickHouse returns a Store on conn, whose default database holds the
// feedmeter schema.
func NewClickHouse(conn driver.Conn) *ClickHouse {
	return &ClickHouse{conn: conn, Settings: clickhouse.Settings{"max_threads": 1, "use_uncompressed_cache": 1}, maxBatch: maxBatch}
}

// Ping reports whether ClickHouse answers and the database holds the
// tables the service reads (a database the sink or migrate has not made or
// migrated yet, or a rollup being rebuilt, is a NotReadyError).
func (c *ClickHouse) Ping(ctx context.Context) error {
	var n uint64
	err := c.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ("+
		"'usage_events', 'usage_replaced', 'usage_hourly', 'usage_daily', 'license_daily')").Scan(&n)
	if err != nil {
		return err
	}
	if n < 5 {
		return &NotReadyError{Reason: fmt.Sprintf("the database holds %d of the 5 tables the service reads: feedmeter migrate, or the sink when it starts, makes them (a migration that rebuilds a rollup takes it away for seconds)", n)}
	}
	return nil
}

// NotReadyError is a ClickHouse that answers but cannot serve yet.
type NotReadyError struct{ Reason string }

func (e *NotReadyError) Error() string { return e.Reason }

// rollup is the table that answers buckets with given bounds: the daily
// rollup when every bound is a UTC midnight, else the hourly one.
type rollup struct {
	table string
	ts    string // the bucket's start as UTC Unix seconds
	exact string // with one bucket per row's grain: the grain as a number
	unit  int64  // seconds per unit of exact
	step  int64  // seconds per grain
	cond  string // the range condition on the grain column
	args  []any
}

func rollupFor(bounds []time.Time) rollup {
	from, to := bounds[0], bounds[len(bounds)-1]
	if daysAligned(bounds) {
		return rollup{table: "usage_daily", ts: "toUInt32(day) * 86400", exact: "toUInt32(day)", unit: 86400, step: 86400,
			cond: "day >= toDate(?) AND day < toDate(?)", args: []any{from.Format(time.DateOnly), to.Format(time.DateOnly)}}
	}
	return rollup{table: "usage_hourly", ts: "toUInt32(hour)", exact: "toUInt32(hour)", unit: 1, step: 3600,
		cond: "hour >= toDateTime(?) AND hour < toDateTime(?)", args: []any{uint32(from.Unix()), uint32(to.Unix())}}
}

// starts returns the Unix seconds of every bound but the last.
func starts(bounds []time.Time) []uint32 {
	out := make([]uint32, len(bounds)-1)
	for i := range out {
		out[i] = uint32(bounds[i].Unix())
	}
	return out
}

// bucketing maps a row's grain to its bucket.
type bucketing struct {
	expr   string // a UInt32 expression
	args   []any
	bounds []time.Time
	unit   int64 // 0: expr is the 1-based bucket (or a key, with keys); else expr x unit is the grain's start
	// keys, when not nil, are the local days or months (byLocal) that
	// begin each bucket, and one past the last bucket's: expr is the
	// grain's.
	keys []int64
}

// maxCompared is the most buckets bucketOf finds by comparing bucket starts.
const maxCompared = 8

// bucketOf returns how rows whose grain start is ts (Unix seconds; exact is
// the grain in units of unit seconds, step seconds long) fall into the
// buckets of bounds, local days or months of loc (or an invoice's rate
// periods). Every grain lies inside one bucket (bounds are whole grains),
// so when there is one bucket per grain, or the sums are additive and the
// buckets many, ClickHouse returns the grain and index finds its bucket
// (byGrain). A few buckets of additive sums (an invoice's rate periods) are
// found by comparing their starts, as cheap for ClickHouse as the grain and
// a few rows to decode instead of one per grain. Sums that do not add up
// over grains (distinct servers) are grouped by the grain's local day or
// month when the buckets are local days or months (byLocal), whose cost per
// row grows with loc's offset changes in the range (two a year), not with
// the buckets. Else ClickHouse counts the bucket starts at or before
// ts with a lambda: a comparison per row and bucket. (18.16 sees a column
// inside a lambda only when the query also uses it outside one: the range
// conditions do.)
func bucketOf(bounds []time.Time, loc *time.Location, ts, exact string, unit, step int64, additive bool) bucketing {
	one := true
	for i := 0; i+1 < len(bounds); i++ {
		if bounds[i+1].Unix()-bounds[i].Unix() != step || bounds[i].Unix()%step != 0 {
			one = false
			break
		}
	}
	if one || (additive && len(bounds) > maxCompared+1) {
		return byGrain(bounds, exact, unit)
	}
	if additive {
		var b strings.Builder
		b.WriteString("toUInt32(1")
		var args []any
		for _, s := range starts(bounds)[1:] {
			b.WriteString(" + (" + ts + " >= ?)")
			args = append(args, s)
		}
		b.WriteString(")")
		return bucketing{expr: b.String(), args: args, bounds: bounds}
	}
	if bk, ok := byLocal(bounds, loc, ts); ok {
		return bk
	}
	return bucketing{expr: "toUInt32(arrayCount(x -> x <= " + ts + ", ?))", args: []any{starts(bounds)}, bounds: bounds}
}

// byLocal buckets rows by the local day or month of their grain's start ts,
// when loc is known and the buckets are local days or local months (the
// first and the last may be clipped): every bound but the first and the
// last begins one, and no bucket reaches into the next. ClickHouse adds
// loc's offset at ts — a multiIf branch per offset change in the range,
// two a year — and returns the local day (days since 1969-12-31) or month
// (YYYYMM); keys holds the key of each bucket's start, and one past the
// last bucket's.
func byLocal(bounds []time.Time, loc *time.Location, ts string) (bucketing, bool) {
	if loc == nil || len(bounds) < 2 {
		return bucketing{}, false
	}
	last := len(bounds) - 1
	from, to := bounds[0], bounds[last]
	if from.Unix()+int64(offsetAt(from, loc)) < 0 {
		return bucketing{}, false // local time before 1970: not a DateTime
	}
	date := func(t time.Time) (int, time.Month, int) { return t.In(loc).Date() }
	days, months := true, true
	for i, b := range bounds[:last] {
		y, m, d := date(b)
		ey, em, ed := date(bounds[i+1].Add(-time.Nanosecond))
		days = days && ey == y && em == m && ed == d
		months = months && ey == y && em == m
		if i > 0 { // begins a local day (not always at 00:00: São Paulo's summer time began at midnight)
			py, pm, pd := date(b.Add(-time.Nanosecond))
			days = days && (py != y || pm != m || pd != d)
			months = months && (py != y || pm != m)
		}
	}
	if !days && !months {
		return bucketing{}, false
	}
	months = months && !days // one kind of key for the expression and keys: days when both fit
	key := func(t time.Time) int64 {
		if days {
			return floorDiv(t.Unix()+int64(offsetAt(t, loc))+86400, 86400)
		}
		y, m, _ := date(t)
		return int64(y)*100 + int64(m)
	}
	keys := make([]int64, len(bounds))
	for i, b := range bounds[:last] {
		keys[i] = key(b)
	}
	// Above the key of the range's last instant (YYYY13 after a December
	// is, as index needs).
	keys[last] = key(to.Add(-time.Nanosecond)) + 1
	// A date again after a later one (Antarctica/Casey, 2010-03-05: +11 to
	// +08 at 02:00) makes two buckets share a key: compare instead.
	for i := 0; i < last; i++ {
		if keys[i] >= keys[i+1] {
			return bucketing{}, false
		}
	}
	// loc's offsets over the range: the last one applies from its start on.
	var branches strings.Builder
	var args []any
	for t := from; t.Before(to); {
		off, end := offsetSpan(t, loc, to)
		for end.Before(to) && offsetAt(end, loc) == off { // spans of one offset, merged
			_, end = offsetSpan(end, loc, to)
		}
		if !end.Before(to) {
			args = append(args, int64(off))
			break
		}
		branches.WriteString(ts + " < ?, ?, ")
		args = append(args, uint32(end.Unix()), int64(off))
		t = end
	}
	local := "toInt64(" + ts + ") + ?"
	if branches.Len() > 0 {
		local = "toInt64(" + ts + ") + multiIf(" + branches.String() + "?)"
	}
	expr := "toUInt32(intDiv(" + local + " + 86400, 86400))"
	if months {
		expr = "toYYYYMM(toDateTime(toUInt32(" + local + "), 'UTC'))"
	}
	return bucketing{expr: expr, args: args, bounds: bounds, keys: keys}, true
}

// byGrain buckets additive sums that ClickHouse returns by the grain
// (exact, in units of unit seconds).
func byGrain(bounds []time.Time, exact string, unit int64) bucketing {
	return bucketing{expr: exact, bounds: bounds, unit: unit}
}

// index maps what the bucket expression returned to a bucket index, or -1.
func (b bucketing) index(v uint32) int {
	i := int(v) - 1
	if b.keys != nil {
		// The last bucket beginning on or before the day or month.
		i = sort.Search(len(b.keys), func(i int) bool { return b.keys[i] > int64(v) }) - 1
	} else if b.unit != 0 {
		ts := int64(v) * b.unit
		// The last bound at or before ts.
		i = sort.Search(len(b.bounds), func(i int) bool { return b.bounds[i].Unix() > ts }) - 1
	}
	if i < 0 || i+1 >= len(b.bounds) {
		return -1
	}
	return i
}

func groupCols(groupBy []string) string {
	var b strings.Builder
	for _, g := range groupBy {
		b.WriteString(", ")
		b.WriteString(dimensions[g])
	}
	return b.String()
}

// Usage returns the sums of q.Kinds per bucket and group, with the number
// of distinct licensed servers in each licence bucket. The query is as
// plain as ClickHouse 18.16 likes it, whose fixed cost per query is most of
// a tenant's month (3.5 ms of CPU for this query with a kind filter, a
// conditional distinct count and a bucket lambda; 2.5-3 ms without): it
// reads every kind (the rows of other kinds are dropped here), counts
// distinct servers only when licences are asked for, and, in a batch,
// leaves additive sums by the day for index to put in buckets.
// (PREWHERE on the tenant:
// 10-20 % less time per query than WHERE, measured on the benchmark's 106
// million events.)
func (c *ClickHouse) Usage(ctx context.Context, q UsageQuery) ([]UsageSum, error) {
	if len(q.Kinds) == 0 {
		return nil, nil
	}
	servers := slices.Contains(q.Kinds, string(model.KindLicense))
	r := rollupFor(q.Bounds)
	g := groupCols(q.GroupBy)
	type row struct {
		alone   bool // read by the query's alone shape
		b       uint32
		s       UsageSum
		qty, bs string
		events  int64
		pieces  int64
	}
	aloneBk := bucketOf(q.Bounds, q.Zone, r.ts, r.exact, r.unit, r.step, !servers)
	batchedBk := aloneBk
	if !servers && r.step >= 86400 {
		// In a batch, by the day: the query is then the same for every
		// range, so the queries of different months batch together
		// (batch.go). (By the hour a month would be 720 rows a kind.)
		batchedBk = byGrain(q.Bounds, r.exact, r.unit)
	}
	// With licences, a row per server: a server is licensed in a bucket
	// when its pieces there sum to more than 0 (a replaced event's row
	// cancels its twin's), which only the sum over its rows can tell.
	by := "b, kind" + g
	if servers && !slices.Contains(q.GroupBy, "server") {
		by += ", server"
	}
	query := func(bk bucketing, alone bool) *shape[row] {
		sh := &shape[row]{
			sel:  bk.expr + " AS b, kind" + g + ", reinterpretAsString(sum(quantity)), reinterpretAsString(sum(byte_seconds)), sum(events), sum(pieces)",
			args: bk.args, from: r.table, group: by,
			scan: func(rows driver.Rows) (string, row, error) {
				var tenant string
				x := row{alone: alone}
				x.s.Group = make([]string, len(q.GroupBy))
				dest := []any{&tenant, &x.b, &x.s.Kind}
				for i := range x.s.Group {
					dest = append(dest, &x.s.Group[i])
				}
				dest = append(dest, &x.qty, &x.bs, &x.events, &x.pieces)
				err := rows.Scan(dest...)
				return tenant, x, err
			},
		}
		if bk.unit == 0 {
			sh.ranged = r.args
		}
		return sh
	}
	tq := &tenantQuery[row]{tenant: q.Tenant, cond: r.cond, args: r.args}
	sh := query(batchedBk, false)
	if aloneBk.expr != batchedBk.expr {
		tq.alone = query(aloneBk, true)
	}
	var out []UsageSum
	at := map[string]int{} // bucket, kind and group of a sum in out
	take := func(x row) (bool, error) {
		s := x.s
		bk := batchedBk
		if x.alone {
			bk = aloneBk
		}
		if s.Bucket = bk.index(x.b); s.Bucket < 0 {
			return false, nil
		}
		if !slices.Contains(q.Kinds, s.Kind) {
			return true, nil
		}
		switch {
		case x.pieces < 0 || x.events < 0:
			return true, fmt.Errorf("%s sums to %d events and %d pieces in a bucket: less than none", s.Kind, x.events, x.pieces)
		case x.pieces == 0:
			return true, nil // every event here was replaced
		}
		s.Events = uint64(x.events)
		if servers && s.Kind == string(model.KindLicense) {
			s.Servers = 1 // this row is one server with pieces
		}
		var err error
		if s.Quantity, err = decimalBytes(x.qty); err != nil {
			return true, err
		}
		if s.ByteSeconds, err = decimalBytes(x.bs); err != nil {
			return true, err
		}
		k := strconv.Itoa(s.Bucket) + "\x00" + s.Kind + "\x00" + strings.Join(s.Group, "\x00")
		if i, ok := at[k]; ok { // another grain of the same bucket: additive
			o := &out[i]
			o.Quantity.Add(o.Quantity, s.Quantity)
			o.ByteSeconds.Add(o.ByteSeconds, s.ByteSeconds)
			o.Events += s.Events
			o.Servers += s.Servers
			return true, nil
		}
		if q.MaxRows > 0 && len(out) >= q.MaxRows {
			return true, &TooManyRowsError{Max: q.MaxRows}
		}
		at[k] = len(out)
		out = append(out, s)
		return true, nil
	}
	tq.take = take
	if err := ask(ctx, c, sh, tq); err != nil {
		return nil, fmt.Errorf("usage of tenant %s: %w", q.Tenant, err)
	}
	return out, nil
}

// decimalBytes reads a Decimal128(0) sum that the query passed through
// reinterpretAsString: its 16 bytes, little-endian, trailing zero bytes
// dropped. clickhouse-go decodes a Decimal128 through big.Int and
// decimal.Decimal, allocating several times per value (about a tenth of the
// service's CPU in the benchmark); reinterpretAsString costs ClickHouse
// nothing measurable. (toString of a Decimal128 returns garbage on 18.16.)
func decimalBytes(le string) (*big.Int, error) {
	if len(le) > 16 || len(le) == 16 && le[15]&0x80 != 0 {
		return nil, fmt.Errorf("sum %x is not a non-negative Decimal128", le)
	}
	if len(le) <= 8 {
		var u uint64
		for i := len(le) - 1; i >= 0; i-- {
			u = u<<8 | uint64(le[i])
		}
		return new(big.Int).SetUint64(u), nil
	}
	be := make([]byte, len(le))
	for i := range len(le) { // bytes, not runes
		be[len(le)-1-i] = le[i]
	}
	return new(big.Int).SetBytes(be), nil
}

// Licences returns the licensed servers per bucket and group: distinct
// servers with a licence piece in the bucket, and their server-days (the
// servers of each of q.Days, added up over the bucket's days).
func (c *ClickHouse) Licences(ctx context.Context, q UsageQuery) ([]LicenceSum, error) {
	// The table must answer the days too; days refine the buckets.
	r := rollupFor(q.Days)
	bk := bucketOf(q.Bounds, q.Zone, r.ts, r.exact, r.unit, r.step, false)
	dk := bucketOf(q.Days, q.Zone, r.ts, r.exact, r.unit, r.step, false)
	g := groupCols(q.GroupBy)
	// A server counts on a day when its pieces there sum to more than 0.
	sql := "SELECT b" + g + ", count(), uniqExact(server), sum(ev) FROM (" +
		"SELECT " + bk.expr + " AS b, " + dk.expr + " AS d" + g + ", server, sum(events) AS ev FROM " + r.table +
		" PREWHERE tenant_id = ? WHERE kind = 'license' AND " + r.cond +
		" GROUP BY b, d" + g + ", server HAVING sum(pieces) > 0) GROUP BY b" + g
	args := append(append(append(bk.args, dk.args...), q.Tenant), r.args...)
	rows, err := c.queryTenant(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query licences of tenant %s: %w", q.Tenant, err)
	}
	defer rows.Close()
	var out []LicenceSum
	for rows.Next() {
		var b uint32
		var s LicenceSum
		s.Group = make([]string, len(q.GroupBy))
		dest := []any{&b}
		for i := range s.Group {
			dest = append(dest, &s.Group[i])
		}
		var events int64
		dest = append(dest, &s.ServerDays, &s.Servers, &events)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read licences of tenant %s: %w", q.Tenant, err)
		}
		if events < 0 {
			return nil, fmt.Errorf("read licences of tenant %s: %d events in a bucket: less than none", q.Tenant, events)
		}
		s.Events = uint64(events)
		if s.Bucket = bk.index(b); s.Bucket < 0 {
			return nil, fmt.Errorf("read licences of tenant %s: bucket %d outside the range", q.Tenant, b)
		}
		if q.MaxRows > 0 && len(out) >= q.MaxRows {
			return nil, &TooManyRowsError{Max: q.MaxRows}
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read licences of tenant %s: %w", q.Tenant, err)
	}
	return out, nil
}

// Readings measures a plan: bandwidth and storage per segment from the
// rollups, and licensed servers per day, inside and outside Rackspace, from
// the licence rollups. A server is external on a day when one of its
// licence events overlapping that day says so. The two queries run
// concurrently.
func (c *ClickHouse) Readings(ctx context.Context, p *Plan) (*Readings, error) {
	r := NewReadings(p)
	var wg sync.WaitGroup
	var usageErr, licErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		sums, err := c.Usage(ctx, UsageQuery{Tenant: p.Tenant, Bounds: p.SegmentBounds(), Kinds: []string{string(model.KindBandwidthIn), string(model.KindBandwidthOut), string(model.KindStorage)}})
		if err != nil {
			usageErr = err
			return
		}
		for _, s := range sums {
			switch s.Kind {
			case string(model.KindBandwidthIn):
				r.BandwidthIn[s.Bucket].Add(r.BandwidthIn[s.Bucket], s.Quantity)
			case string(model.KindBandwidthOut):
				r.BandwidthOut[s.Bucket].Add(r.BandwidthOut[s.Bucket], s.Quantity)
			case string(model.KindStorage):
				r.StorageByteSeconds[s.Bucket].Add(r.StorageByteSeconds[s.Bucket], s.ByteSeconds)
			}
		}
	}()
	licErr = c.licenceDays(ctx, p, r)
	wg.Wait()
	if err := errors.Join(usageErr, licErr); err != nil {
		return nil, err
	}
	return r, nil
}

// licenceDays counts the licensed servers of each day of p, inside and
// outside Rackspace, into r: from license_daily (migrations 0004, 0007) when the
// days are UTC days, else from the hourly pieces of the licence events.
func (c *ClickHouse) licenceDays(ctx context.Context, p *Plan, r *Readings) error {
	if p.days() == 0 {
		return nil
	}
	from, to := p.Days[0], p.Days[len(p.Days)-1]
	// A server is licensed on a day when its licence pieces there sum to
	// more than 0 (a replaced event's row cancels its twin's), and outside
	// Rackspace when those saying so do.
	var dk bucketing
	var src, pieces, cond string
	var args []any
	if daysAligned(p.Days) {
		dk = bucketOf(p.Days, p.Period.Loc, "toUInt32(day) * 86400", "toUInt32(day)", 86400, 86400, false)
		src, pieces, cond = "license_daily", "sum(pieces), sumIf(pieces, external = 1)", "day >= toDate(?) AND day < toDate(?)"
		args = []any{from.Format(time.DateOnly), to.Format(time.DateOnly)}
	} else {
		// The licence events that count: those not replaced.
		dk = bucketOf(p.Days, p.Period.Loc, "toUInt32(piece)", "toUInt32(piece)", 1, 3600, false)
		src, pieces = "usage_events ARRAY JOIN h_start AS piece", "toInt64(count()), toInt64(countIf(ifNull(external, toUInt8(0)) = 1))"
		cond = "kind = 'license' AND time >= toDateTime(?) AND time < toDateTime(?)" +
			" AND piece >= toDateTime(?) AND piece < toDateTime(?)" +
			" AND (tenant_id, kind, event_id, entry_id) NOT IN (SELECT tenant_id, kind, event_id, entry_id FROM usage_replaced WHERE kind = 'license')"
		// An event overlapping the period started less than a day (its
		// longest interval) before it.
		earliest := from.Add(-25 * time.Hour)
		if earliest.Unix() < 0 {
			earliest = time.Unix(0, 0)
		}
		args = []any{uint32(earliest.Unix()), uint32(to.Unix()), uint32(from.Unix()), uint32(to.Unix())}
	}
	// One row per day and server, counted here: an outer GROUP BY around
	// it cost ClickHouse 18.16 a millisecond more per invoice.
	type row struct {
		d           uint32
		server      string
		pieces, ext int64
	}
	sh := &shape[row]{
		sel: dk.expr + " AS d, server, " + pieces, args: dk.args, from: src, group: "d, server",
		scan: func(rows driver.Rows) (string, row, error) {
			var tenant string
			var x row
			err := rows.Scan(&tenant, &x.d, &x.server, &x.pieces, &x.ext)
			return tenant, x, err
		},
	}
	if dk.unit == 0 {
		sh.ranged = args
	}
	take := func(x row) (bool, error) {
		i := dk.index(x.d)
		switch {
		case i < 0:
			return false, nil
		case x.pieces <= 0:
			// every licence event of the server that day was replaced
		case x.ext > 0:
			r.LicensedExternal[i]++
		default:
			r.Licensed[i]++
		}
		return true, nil
	}
	if err := ask(ctx, c, sh, &tenantQuery[row]{tenant: p.Tenant, cond: cond, args: args, take: take}); err != nil {
		return fmt.Errorf("licences of tenant %s: %w", p.Tenant, err)
	}
	return nil
}

const eventColumns = "entry_id, kind, event_id, reference_id, replaced_by, event_type, region, data_center, resource_id, server_id, server_name, " +
	"ifNull(external, toUInt8(0)), start_time, start_time_ns, end_time, end_time_ns, event_time, event_time_ns, " +
	"toUInt32(time), quantity, byte_seconds"

// Events returns up to q.Limit events of q.Tenant filed in [q.From, q.To)
// after q.After, in (time, kind, entry_id) order.
func (c *ClickHouse) Events(ctx context.Context, q EventsQuery) ([]EventRow, error) {
	// Each event with what replaced it, if anything: usage_replaced is
	// small (corrections are few), and its rows of the tenant are read whole.
	sql := "SELECT " + eventColumns + " FROM usage_events" +
		" ANY LEFT JOIN (SELECT kind, event_id, entry_id, replaced_by FROM usage_replaced WHERE tenant_id = ?) AS r USING (kind, event_id, entry_id)" +
		" WHERE tenant_id = ? AND time >= toDateTime(?) AND time < toDateTime(?)"
	args := []any{q.Tenant, q.Tenant, uint32(q.From.Unix()), uint32(q.To.Unix())}
	if len(q.Kinds) > 0 {
		sql += " AND has(?, kind)"
		args = append(args, q.Kinds)
	}
	if a := q.After; a != nil {
		sql += " AND (toUInt32(time) > ? OR (toUInt32(time) = ? AND (kind > ? OR (kind = ? AND entry_id > ?))))"
		args = append(args, uint32(a.Time), uint32(a.Time), a.Kind, a.Kind, a.EntryID)
	}
	sql += " ORDER BY time, kind, entry_id LIMIT ?"
	args = append(args, q.Limit)
	rows, err := c.queryTenant(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query events of tenant %s: %w", q.Tenant, err)
	}
	defer rows.Close()
	var out []EventRow
	for rows.Next() {
		var e EventRow
		var ext uint8
		var st, et, vt *time.Time
		var sn, en, vn, ft uint32
		var bs decimal.Decimal
		if err := rows.Scan(&e.EntryID, &e.Kind, &e.EventID, &e.ReferenceID, &e.ReplacedBy, &e.EventType, &e.Region, &e.DataCenter, &e.ResourceID,
			&e.ServerID, &e.ServerName, &ext, &st, &sn, &et, &en, &vt, &vn, &ft, &e.Quantity, &bs); err != nil {
			return nil, fmt.Errorf("read events of tenant %s: %w", q.Tenant, err)
		}
		e.External = ext != 0
		e.StartTime, e.EndTime, e.EventTime = withNanos(st, sn), withNanos(et, en), withNanos(vt, vn)
		e.Time = time.Unix(int64(ft), 0).UTC()
		if e.ByteSeconds, err = decimalInt(bs); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events of tenant %s: %w", q.Tenant, err)
	}
	return out, nil
}

func withNanos(t *time.Time, ns uint32) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC().Add(time.Duration(ns))
}

// TopTenants ranks tenants by q.Kind over [q.From, q.To): bytes for
// bandwidth, byte-seconds for storage, server-days (UTC days) for licences,
// events when q.Kind is "".
func (c *ClickHouse) TopTenants(ctx context.Context, q TopQuery) ([]TenantUsage, error) {
	r := rollupFor([]time.Time{q.From, q.To})
	table, cond, condArgs := r.table, r.cond, r.args
	day := "day"
	if table == "usage_hourly" {
		day = "toDate(hour)"
	}
	var sql string
	var args []any
	switch q.Kind {
	case "":
		sql = "SELECT tenant_id, toDecimal128(sum(events), 0), sum(events) FROM " + table + " WHERE " + cond +
			" GROUP BY tenant_id HAVING sum(pieces) > 0 ORDER BY sum(events) DESC, tenant_id LIMIT ?"
		args = append(condArgs, q.Limit)
	case string(model.KindLicense):
		sql = "SELECT tenant_id, toDecimal128(count(), 0), sum(ev) FROM (SELECT tenant_id, " + day + " AS d, server, sum(events) AS ev FROM " + table +
			" WHERE kind = 'license' AND " + cond + " GROUP BY tenant_id, d, server HAVING sum(pieces) > 0) GROUP BY tenant_id ORDER BY count() DESC, tenant_id LIMIT ?"
		args = append(condArgs, q.Limit)
	default:
		col := "quantity"
		if q.Kind == string(model.KindStorage) {
			col = "byte_seconds"
		}
		sql = "SELECT tenant_id, toDecimal128(sum(" + col + "), 0), sum(events) FROM " + table + " WHERE kind = ? AND " + cond +
			" GROUP BY tenant_id HAVING sum(pieces) > 0 ORDER BY sum(" + col + ") DESC, tenant_id LIMIT ?"
		args = append(append([]any{q.Kind}, condArgs...), q.Limit)
	}
	rows, err := c.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("rank tenants: %w", err)
	}
	defer rows.Close()
	var out []TenantUsage
	for rows.Next() {
		var u TenantUsage
		var v decimal.Decimal
		var events int64
		if err := rows.Scan(&u.Tenant, &v, &events); err != nil {
			return nil, fmt.Errorf("rank tenants: %w", err)
		}
		if events < 0 {
			return nil, fmt.Errorf("rank tenants: tenant %s has %d events: less than none", u.Tenant, events)
		}
		u.Events = uint64(events)
		if u.Value, err = decimalInt(v); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rank tenants: %w", err)
	}
	return out, nil
}

// decimalInt converts a Decimal(38, 0) the driver decoded into a big.Int.
// (Sums are read as decimals, never through toString: ClickHouse 18.16
// formats some Decimal128 values above 10^19 wrongly.)
func decimalInt(d decimal.Decimal) (*big.Int, error) {
	if d.Exponent() < 0 && !d.Equal(decimal.NewFromBigInt(d.BigInt(), 0)) {
		return nil, fmt.Errorf("clickhouse returned %s for an integer sum", d)
	}
	return d.BigInt(), nil
}
