package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
)

// The column lists of the inserts (18.16 needs them explicit).
const (
	eventCommon = "tenant_id, entry_id, kind, event_id, event_type, event_version, product_namespace, product_version, " +
		"region, data_center, environment, resource_id, resource_type, server_id, server_name, external, " +
		"start_time, start_time_ns, end_time, end_time_ns, event_time, event_time_ns, time, quantity, updated, published"
	usageColumns  = eventCommon + ", reference_id, server, byte_seconds, h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds, kafka_topic, kafka_partition, kafka_offset, inserted_at"
	otherColumns  = eventCommon + ", kafka_topic, kafka_partition, kafka_offset, inserted_at"
	rejectColumns = "fingerprint, stage, feed, tenant_id, marker, entry_id, position, reason, raw, time, source, kafka_topic_id, kafka_topic, kafka_partition, kafka_offset, inserted_at"
)

// store writes batches to ClickHouse.
type store struct {
	conn driver.Conn
	// topicIDs: sink_progress has kafka_topic_id (migration 0006). A sink
	// started on an older schema (--no-migrate) writes and reads progress
	// as before until it starts again.
	topicIDs bool
}

// newStore asks which of the schema's later columns conn's database has.
// A database where migration 0007 (the identity of an event, corrections)
// is not recorded is refused: the sink would count a republished event
// twice there.
func newStore(ctx context.Context, conn driver.Conn) (*store, error) {
	var n, ids uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'sink_progress' AND name = 'kafka_topic_id'").Scan(&n); err != nil {
		return nil, fmt.Errorf("columns of sink_progress: %w", err)
	}
	// Recorded, not only begun: a run of 0007 stopped half way leaves the
	// tables, and its guarded part is done again by the next run, which a
	// sink writing meanwhile could race (--no-migrate).
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+schemas.MigrationsTable+" WHERE version = 7").Scan(&ids); err != nil {
		return nil, fmt.Errorf("read %s: %w", schemas.MigrationsTable, err)
	}
	if ids == 0 {
		return nil, errors.New("the database lacks migration 0007 (usage_ids, usage_replaced, usage_copies: the identity of a usage event and corrections); run `feedmeter migrate`")
	}
	return &store{conn: conn, topicIDs: n > 0}, nil
}

// key is a dedupe key of usage_events and other_events.
type key = model.DedupeKey

// rowKeys returns the dedupe keys of rows.
func rowKeys(rows []eventRow) []key {
	keys := make([]key, len(rows))
	for i := range rows {
		keys[i] = rows[i].ev.Key()
	}
	return keys
}

// existingKeys returns which of keys table already holds.
func (s *store) existingKeys(ctx context.Context, table string, keys []key) (map[key]bool, error) {
	found := map[key]bool{}
	if len(keys) == 0 {
		return found, nil
	}
	t, err := ext.NewTable("_keys",
		ext.Column("tenant_id", "String"), ext.Column("entry_id", "String"), ext.Column("kind", "String"))
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := t.Append(k.TenantID, k.EntryID, string(k.Kind)); err != nil {
			return nil, err
		}
	}
	// The tuple in the order of the tables' ORDER BY, so the primary index
	// can skip granules of other tenants and kinds.
	q := "SELECT tenant_id, entry_id, kind FROM " + table +
		" WHERE tenant_id IN (SELECT tenant_id FROM _keys) AND (tenant_id, kind, entry_id) IN (SELECT tenant_id, kind, entry_id FROM _keys)"
	rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)), q)
	if err != nil {
		return nil, fmt.Errorf("look up %d keys in %s: %w", len(keys), table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k key
		var kind string
		if err := rows.Scan(&k.TenantID, &k.EntryID, &kind); err != nil {
			return nil, fmt.Errorf("look up keys in %s: %w", table, err)
		}
		k.Kind = model.Kind(kind)
		found[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up keys in %s: %w", table, err)
	}
	return found, nil
}

// existingRejects returns which of rows the rejects table holds, by
// fingerprint and source record (rejectKey; a row without a topic id, of a
// sink before 0007, stands for the record in any life of its topic).
func (s *store) existingRejects(ctx context.Context, rows []rejectRow) (map[rejectKey]bool, error) {
	found := map[rejectKey]bool{}
	if len(rows) == 0 {
		return found, nil
	}
	t, err := ext.NewTable("_fps", ext.Column("tenant_id", "String"), ext.Column("fingerprint", "String"))
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if err := t.Append(r.dl.TenantID, r.fp); err != nil {
			return nil, err
		}
	}
	res, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
		"SELECT fingerprint, kafka_topic_id, kafka_topic, kafka_partition, kafka_offset FROM rejects"+
			" WHERE tenant_id IN (SELECT tenant_id FROM _fps) AND (tenant_id, fingerprint) IN (SELECT tenant_id, fingerprint FROM _fps)")
	if err != nil {
		return nil, fmt.Errorf("look up %d rejects: %w", len(rows), err)
	}
	defer res.Close()
	for res.Next() {
		var k rejectKey
		if err := res.Scan(&k.fp, &k.topicID, &k.src.topic, &k.src.partition, &k.src.offset); err != nil {
			return nil, fmt.Errorf("look up rejects: %w", err)
		}
		found[k] = true
	}
	return found, res.Err()
}

// progressRows are sink_progress's offsets: per topic, topic id and
// partition, the offset below which every record is in ClickHouse.
type progressRows map[string]map[string]map[int32]int64

// of returns the progress of a partition in the topic's present life (id),
// or -1 when there is none, and how many other lives have progress there.
// Where the cluster has no topic ids (id ""), every row counts. Otherwise
// rows without an id (written before migration 0006, or fetched without
// one) count for no life: they cannot say which they were written in, and
// without progress the committed offset stands (a batch whose commit was
// lost is read again, and the key lookup drops it).
func (pr progressRows) of(topic, id string, partition int32) (next int64, others int) {
	next = -1
	for rowID, ps := range pr[topic] {
		n, ok := ps[partition]
		switch {
		case !ok:
		case id == "":
			next = max(next, n)
		case rowID == id:
			next = n
		case rowID != "":
			others++
		}
	}
	return next, others
}

// progress reads sink_progress for topics.
func (s *store) progress(ctx context.Context, topics []string) (progressRows, error) {
	id := "kafka_topic_id"
	if !s.topicIDs {
		id = "''"
	}
	rows, err := s.conn.Query(ctx, "SELECT kafka_topic, "+id+" AS id, kafka_partition, max(next_offset) FROM sink_progress"+
		" WHERE has(?, kafka_topic) GROUP BY kafka_topic, id, kafka_partition", topics)
	if err != nil {
		return nil, fmt.Errorf("read sink_progress: %w", err)
	}
	defer rows.Close()
	out := progressRows{}
	for rows.Next() {
		var topic, id string
		var p int32
		var next uint64
		if err := rows.Scan(&topic, &id, &p, &next); err != nil {
			return nil, fmt.Errorf("read sink_progress: %w", err)
		}
		if out[topic] == nil {
			out[topic] = map[string]map[int32]int64{}
		}
		if out[topic][id] == nil {
			out[topic][id] = map[int32]int64{}
		}
		out[topic][id][p] = int64(next)
	}
	return out, rows.Err()
}

// insertError is an INSERT whose outcome is not known: the server may still
// be running it under queryID.
type insertError struct {
	queryID string
	err     error
}

func (e *insertError) Error() string { return e.err.Error() }
func (e *insertError) Unwrap() error { return e.err }

// insert sends one INSERT of n rows, built by fill, under queryID.
func (s *store) insert(ctx context.Context, queryID, table, columns string, fill func(b driver.Batch) error) error {
	b, err := s.conn.PrepareBatch(clickhouse.Context(ctx, clickhouse.WithQueryID(queryID)), "INSERT INTO "+table+" ("+columns+")")
	if err != nil {
		// The query was sent: the server may have started it.
		return &insertError{queryID, fmt.Errorf("prepare insert into %s: %w", table, err)}
	}
	if err := fill(b); err != nil {
		b.Abort()
		return fmt.Errorf("build insert into %s: %w", table, err)
	}
	return writeError(queryID, "insert into "+table, b.Send())
}

// writeError wraps the error of a write (what) sent under queryID: an
// *insertError when its outcome is unknown, a plain error when the server
// refused it (and wrote nothing).
func writeError(queryID, what string, err error) error {
	if err == nil {
		return nil
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return &insertError{queryID, fmt.Errorf("%s: %w", what, err)}
}

// settle makes sure the query queryID is no longer running, asking the
// server to kill it while it is, so that a lookup after it sees its final
// effect. (An INSERT writing a block cannot be killed until the block is
// written; it ends soon after, its connection being closed.)
func (s *store) settle(ctx context.Context, queryID string) error {
	for {
		var n uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE query_id = ?", queryID).Scan(&n); err != nil {
			return fmt.Errorf("wait for insert %s: %w", queryID, err)
		}
		if n == 0 {
			return nil
		}
		// Refused while the query is in an unkillable stage: ask again.
		_ = s.conn.Exec(ctx, "KILL QUERY WHERE query_id = ? ASYNC", queryID)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func appendColumns(b driver.Batch, cols ...any) error {
	for i, c := range cols {
		var err error
		// Array columns row by row: Append of a [][]T goes through
		// reflection for every element, AppendRow of a []T does not.
		switch c := c.(type) {
		case [][]time.Time:
			err = appendRows(b.Column(i), c)
		case [][]uint64:
			err = appendRows(b.Column(i), c)
		case [][]decimal.Decimal:
			err = appendRows(b.Column(i), c)
		default:
			err = b.Column(i).Append(c)
		}
		if err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}

func appendRows[T any](col driver.BatchColumn, rows [][]T) error {
	for _, r := range rows {
		if err := col.AppendRow(r); err != nil {
			return err
		}
	}
	return nil
}

// eventColumns builds the columns of eventCommon for rows.
func eventColumns(rows []eventRow, now time.Time) []any {
	n := len(rows)
	str := func(f func(e *model.Event) string) []string {
		out := make([]string, n)
		for i := range rows {
			out[i] = f(&rows[i].ev)
		}
		return out
	}
	ext := make([]*uint8, n)
	st, et, vt := make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
	sn, en, vn := make([]uint32, n), make([]uint32, n), make([]uint32, n)
	ft := make([]time.Time, n)
	qty := make([]uint64, n)
	up, pub := make([]*time.Time, n), make([]*time.Time, n)
	slots := make([]time.Time, 5*n) // what the pointers point to: no allocation per value
	for i := range rows {
		e := &rows[i].ev
		ext[i] = optBool(e.External)
		st[i], sn[i] = optTime(e.StartTime, &slots[5*i])
		et[i], en[i] = optTime(e.EndTime, &slots[5*i+1])
		vt[i], vn[i] = optTime(e.EventTime, &slots[5*i+2])
		ft[i] = fileTime(e, now)
		qty[i] = e.Quantity
		up[i], _ = optTime(e.Updated, &slots[5*i+3])
		pub[i], _ = optTime(e.Published, &slots[5*i+4])
	}
	return []any{
		str(func(e *model.Event) string { return e.TenantID }),
		str(func(e *model.Event) string { return e.EntryID }),
		str(func(e *model.Event) string { return string(e.Kind) }),
		str(func(e *model.Event) string { return e.EventID }),
		str(func(e *model.Event) string { return e.EventType }),
		str(func(e *model.Event) string { return e.EventVersion }),
		str(func(e *model.Event) string { return e.ProductNamespace }),
		str(func(e *model.Event) string { return e.ProductVersion }),
		str(func(e *model.Event) string { return e.Region }),
		str(func(e *model.Event) string { return e.DataCenter }),
		str(func(e *model.Event) string { return e.Environment }),
		str(func(e *model.Event) string { return e.ResourceID }),
		str(func(e *model.Event) string { return e.ResourceType }),
		str(func(e *model.Event) string { return e.ServerID }),
		str(func(e *model.Event) string { return e.ServerName }),
		ext, st, sn, et, en, vt, vn, ft, qty, up, pub,
	}
}

func sourceColumns(srcs func(i int) source, n int, now time.Time) []any {
	topic, part, off, ins := make([]string, n), make([]int32, n), make([]int64, n), make([]time.Time, n)
	for i := 0; i < n; i++ {
		s := srcs(i)
		topic[i], part[i], off[i], ins[i] = s.topic, s.partition, s.offset, now
	}
	return []any{topic, part, off, ins}
}

// usageCols builds the columns of an insert of rows into usage_events.
func usageCols(rows []eventRow, now time.Time) []any {
	n := len(rows)
	cols := eventColumns(rows, now)
	server, ref := make([]string, n), make([]string, n)
	bs := make([]decimal.Decimal, n)
	hs, hq, hb := make([][]time.Time, n), make([][]uint64, n), make([][]decimal.Decimal, n)
	ds, dq, db := make([][]time.Time, n), make([][]uint64, n), make([][]decimal.Decimal, n)
	// The pieces of all rows in three flat slices per grain, each row's
	// arrays a window on them: no allocation per row.
	var nh, nd int
	for i := range rows {
		nh += len(rows[i].split.Hours)
		nd += len(rows[i].split.Days)
	}
	hp, dp := newPieceColumns(nh), newPieceColumns(nd)
	for i := range rows {
		r := &rows[i]
		server[i], ref[i] = serverKey(&r.ev), r.ev.ReferenceID
		bs[i] = toDecimal(r.split.ByteSeconds)
		hs[i], hq[i], hb[i] = hp.add(r.split.Hours)
		ds[i], dq[i], db[i] = dp.add(r.split.Days)
	}
	cols = append(cols, ref, server, bs, hs, hq, hb, ds, dq, db)
	return append(cols, sourceColumns(func(i int) source { return rows[i].src }, n, now)...)
}

// fillUsage returns the filler of an insert of rows into usage_events.
func fillUsage(rows []eventRow, now time.Time) func(driver.Batch) error {
	return func(b driver.Batch) error { return appendColumns(b, usageCols(rows, now)...) }
}

// pieceColumns holds the pieces of many events, flat.
type pieceColumns struct {
	start []time.Time
	qty   []uint64
	bs    []decimal.Decimal
}

func newPieceColumns(n int) *pieceColumns {
	return &pieceColumns{make([]time.Time, 0, n), make([]uint64, 0, n), make([]decimal.Decimal, 0, n)}
}

// add appends ps and returns their three arrays.
func (c *pieceColumns) add(ps []model.Piece) ([]time.Time, []uint64, []decimal.Decimal) {
	lo := len(c.start)
	for _, p := range ps {
		c.start, c.qty, c.bs = append(c.start, p.Start), append(c.qty, p.Quantity), append(c.bs, toDecimal(p.ByteSeconds))
	}
	hi := len(c.start)
	return c.start[lo:hi:hi], c.qty[lo:hi:hi], c.bs[lo:hi:hi]
}

// fillOther returns the filler of an insert of rows into other_events.
func fillOther(rows []eventRow, now time.Time) func(driver.Batch) error {
	return func(b driver.Batch) error {
		cols := eventColumns(rows, now)
		cols = append(cols, sourceColumns(func(i int) source { return rows[i].src }, len(rows), now)...)
		return appendColumns(b, cols...)
	}
}

// fillRejects returns the filler of an insert of rows into rejects.
func fillRejects(rows []rejectRow, now time.Time) func(driver.Batch) error {
	return func(b driver.Batch) error {
		n := len(rows)
		stage, feed, tenant, marker, entry, reason, raw, src := make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		pos := make([]int64, n)
		tm := make([]time.Time, n)
		for i, r := range rows {
			d := r.dl
			stage[i], feed[i], tenant[i], marker[i], entry[i] = d.Stage, d.Feed, d.TenantID, d.Marker, d.EntryID
			pos[i], reason[i], raw[i], tm[i], src[i] = int64(d.Index), d.Reason, string(d.Raw), d.Time.UTC(), d.Source
		}
		fps, ids := make([]string, n), make([]string, n)
		for i, r := range rows {
			fps[i], ids[i] = r.fp, r.topicID
		}
		cols := []any{fps, stage, feed, tenant, marker, entry, pos, reason, raw, tm, src, ids}
		cols = append(cols, sourceColumns(func(i int) source { return rows[i].src }, n, now)...)
		return appendColumns(b, cols...)
	}
}

// progressInsert returns the columns and the filler of an insert into
// sink_progress of next, each row naming the topic id its partition's
// records were fetched under (ids, by partition at offset 0) when the
// table has that column.
func (s *store) progressInsert(next map[source]bool, ids map[source]string, now time.Time) (string, func(driver.Batch) error) {
	cols := "kafka_topic, kafka_partition, next_offset, written_at"
	if s.topicIDs {
		cols = "kafka_topic, kafka_topic_id, kafka_partition, next_offset, written_at"
	}
	return cols, func(b driver.Batch) error {
		var topic, id []string
		var part []int32
		var off []uint64
		var at []time.Time
		for src := range next {
			topic, part = append(topic, src.topic), append(part, src.partition)
			off, at = append(off, uint64(src.offset)), append(at, now)
			id = append(id, ids[source{topic: src.topic, partition: src.partition}])
		}
		if !s.topicIDs {
			return appendColumns(b, topic, part, off, at)
		}
		return appendColumns(b, topic, id, part, off, at)
	}
}
