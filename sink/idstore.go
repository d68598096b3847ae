package sink

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/model"
)

// The tables of event identity and corrections (migration 0007): usage_ids
// indexes usage_events by event id (written by its views), usage_replaced
// holds the rows that no longer count, usage_copies the
// copies of an identity that were not counted.

// idKey names an event id of a tenant and kind.
type idKey struct {
	tenant string
	kind   model.Kind
	id     string
}

func identityKey(id model.Identity) idKey { return idKey{id.TenantID, id.Kind, id.EventID} }

// rowKey names a row of usage_events: an event id and the atom id it came
// under (before 0007 one identity may have several).
type rowKey struct {
	tenant  string
	kind    model.Kind
	eventID string
	entryID string
}

// idRow is a row of usage_ids: with role 0 the event id itself, with role 1
// an event (eventID) that corrects id.
type idRow struct {
	idKey
	role      uint8
	eventID   string
	entryID   string
	ref       string
	published time.Time // whole seconds; zero when the entry had none
}

// row returns the usage_events row an idRow stands for.
func (r idRow) row() rowKey { return rowKey{r.tenant, r.kind, r.eventID, r.entryID} }

// idsTable is an external table of id keys.
func idsTable(name string, keys []idKey) (*ext.Table, error) {
	t, err := ext.NewTable(name, ext.Column("tenant_id", "String"), ext.Column("kind", "String"), ext.Column("id", "String"))
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := t.Append(k.tenant, string(k.kind), k.id); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// ids returns the rows of usage_ids of keys: each event with one of those
// ids, and each event that corrects one of them. A row written twice (the
// table holds facts) is returned once.
func (s *store) ids(ctx context.Context, keys []idKey) ([]idRow, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	t, err := idsTable("_ids", keys)
	if err != nil {
		return nil, err
	}
	return s.idRows(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
		"SELECT DISTINCT tenant_id, kind, id, role, event_id, entry_id, reference_id, published FROM usage_ids"+
			" WHERE tenant_id IN (SELECT tenant_id FROM _ids) AND (tenant_id, kind, id) IN (SELECT tenant_id, kind, id FROM _ids)",
		fmt.Sprintf("%d event ids", len(keys)))
}

// forest returns the usage_ids rows of groups that a correction tree can
// hold: the corrections (by their id and by the id they name) and the
// events they name. It reads each group's range of the table.
func (s *store) forest(ctx context.Context, groups []group) ([]idRow, error) {
	t, err := ext.NewTable("_groups", ext.Column("tenant_id", "String"), ext.Column("kind", "String"))
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		if err := t.Append(g.tenant, string(g.kind)); err != nil {
			return nil, err
		}
	}
	return s.idRows(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
		"SELECT DISTINCT tenant_id, kind, id, role, event_id, entry_id, reference_id, published FROM usage_ids"+
			" WHERE tenant_id IN (SELECT tenant_id FROM _groups) AND (tenant_id, kind) IN (SELECT tenant_id, kind FROM _groups)"+
			" AND (reference_id != '' OR (tenant_id, kind, id) IN (SELECT tenant_id, kind, reference_id FROM usage_ids"+
			" WHERE tenant_id IN (SELECT tenant_id FROM _groups) AND (tenant_id, kind) IN (SELECT tenant_id, kind FROM _groups) AND role = 1))",
		fmt.Sprintf("the correction forests of %d tenants' kinds", len(groups)))
}

// idRows runs q, which selects usage_ids rows, and reads them.
func (s *store) idRows(ctx context.Context, q, what string) ([]idRow, error) {
	rows, err := s.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", what, err)
	}
	defer rows.Close()
	var out []idRow
	for rows.Next() {
		var r idRow
		var kind string
		var pub *time.Time
		if err := rows.Scan(&r.tenant, &kind, &r.id, &r.role, &r.eventID, &r.entryID, &r.ref, &pub); err != nil {
			return nil, fmt.Errorf("look up %s: %w", what, err)
		}
		r.kind = model.Kind(kind)
		if pub != nil {
			r.published = pub.UTC()
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up %s: %w", what, err)
	}
	return out, nil
}

// rowsTable is an external table of usage_events rows.
func rowsTable(name string, keys []rowKey) (*ext.Table, error) {
	t, err := ext.NewTable(name, ext.Column("tenant_id", "String"), ext.Column("kind", "String"),
		ext.Column("event_id", "String"), ext.Column("entry_id", "String"))
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := t.Append(k.tenant, string(k.kind), k.eventID, k.entryID); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// storedEvents returns what the usage_events rows of keys say: the fields
// Event.SameUsage compares (not the atom entry's updated and published).
func (s *store) storedEvents(ctx context.Context, keys []rowKey) (map[rowKey]*model.Event, error) {
	out := make(map[rowKey]*model.Event, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	t, err := rowsTable("_rows", keys)
	if err != nil {
		return nil, err
	}
	// By (tenant_id, kind, entry_id), the table's key; event_id filters.
	rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
		"SELECT tenant_id, kind, event_id, entry_id, reference_id, event_type, event_version, product_namespace, product_version,"+
			" region, data_center, environment, resource_id, resource_type, server_id, server_name, external,"+
			" start_time, start_time_ns, end_time, end_time_ns, event_time, event_time_ns, quantity FROM usage_events"+
			" WHERE tenant_id IN (SELECT tenant_id FROM _rows) AND (tenant_id, kind, entry_id) IN (SELECT tenant_id, kind, entry_id FROM _rows)"+
			" AND (tenant_id, kind, event_id, entry_id) IN (SELECT tenant_id, kind, event_id, entry_id FROM _rows)")
	if err != nil {
		return nil, fmt.Errorf("read %d stored events: %w", len(keys), err)
	}
	defer rows.Close()
	for rows.Next() {
		e := &model.Event{}
		var kind string
		var ext *uint8
		var st, et, vt *time.Time
		var sn, en, vn uint32
		if err := rows.Scan(&e.TenantID, &kind, &e.EventID, &e.EntryID, &e.ReferenceID, &e.EventType, &e.EventVersion,
			&e.ProductNamespace, &e.ProductVersion, &e.Region, &e.DataCenter, &e.Environment, &e.ResourceID, &e.ResourceType,
			&e.ServerID, &e.ServerName, &ext, &st, &sn, &et, &en, &vt, &vn, &e.Quantity); err != nil {
			return nil, fmt.Errorf("read stored events: %w", err)
		}
		e.Kind = model.Kind(kind)
		if ext != nil {
			b := *ext != 0
			e.External = &b
		}
		e.StartTime, e.EndTime, e.EventTime = withNanos(st, sn), withNanos(et, en), withNanos(vt, vn)
		out[rowKey{e.TenantID, e.Kind, e.EventID, e.EntryID}] = e
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stored events: %w", err)
	}
	return out, nil
}

// withNanos undoes optTime.
func withNanos(t *time.Time, ns uint32) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC().Add(time.Duration(ns))
}

// eventsPast returns the usage_events rows of topic's partitions from at
// or past the offsets of from (partition → offset), with their
// referenceIds. It reads the Kafka columns of the whole table.
func (s *store) eventsPast(ctx context.Context, topic string, from map[int32]int64) (map[rowKey]string, error) {
	var cond []string
	args := []any{topic}
	for p, o := range from {
		cond = append(cond, "(kafka_partition = ? AND kafka_offset >= ?)")
		args = append(args, p, o)
	}
	rows, err := s.conn.Query(ctx, "SELECT tenant_id, kind, event_id, entry_id, reference_id FROM usage_events"+
		" WHERE kafka_topic = ? AND ("+strings.Join(cond, " OR ")+")", args...)
	if err != nil {
		return nil, fmt.Errorf("read the events past progress: %w", err)
	}
	defer rows.Close()
	out := map[rowKey]string{}
	for rows.Next() {
		var k rowKey
		var kind, ref string
		if err := rows.Scan(&k.tenant, &kind, &k.eventID, &k.entryID, &ref); err != nil {
			return nil, fmt.Errorf("read the events past progress: %w", err)
		}
		k.kind = model.Kind(kind)
		out[k] = ref
	}
	return out, rows.Err()
}

// repairIDs writes the usage_ids rows of the usage_events rows keys, from
// usage_events itself: rows whose insert failed in a view before the
// views of usage_ids ran. usage_ids holds facts, so a row written twice
// changes nothing.
func (s *store) repairIDs(ctx context.Context, keys []rowKey) error {
	const where = " FROM usage_events WHERE tenant_id IN (SELECT tenant_id FROM _rows)" +
		" AND (tenant_id, kind, entry_id) IN (SELECT tenant_id, kind, entry_id FROM _rows)" +
		" AND (tenant_id, kind, event_id, entry_id) IN (SELECT tenant_id, kind, event_id, entry_id FROM _rows)"
	for _, q := range []string{
		"INSERT INTO usage_ids (tenant_id, kind, id, role, event_id, entry_id, reference_id, published, time)" +
			" SELECT tenant_id, kind, event_id, toUInt8(0), event_id, entry_id, reference_id, published, time" + where,
		"INSERT INTO usage_ids (tenant_id, kind, id, role, event_id, entry_id, reference_id, published, time)" +
			" SELECT tenant_id, kind, reference_id, toUInt8(1), event_id, entry_id, reference_id, published, time" + where + " AND reference_id != ''",
	} {
		t, err := rowsTable("_rows", keys)
		if err != nil {
			return err
		}
		if err := s.conn.Exec(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)), q); err != nil {
			return fmt.Errorf("write the usage_ids rows of %d events: %w", len(keys), err)
		}
	}
	return nil
}

// replacedRows returns which usage_events rows of the ids keys usage_replaced
// holds: those no longer counted.
func (s *store) replacedRows(ctx context.Context, keys []idKey) (map[rowKey]bool, error) {
	out := map[rowKey]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	t, err := idsTable("_ids", keys)
	if err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
		"SELECT tenant_id, kind, event_id, entry_id FROM usage_replaced"+
			" WHERE tenant_id IN (SELECT tenant_id FROM _ids) AND (tenant_id, kind, event_id) IN (SELECT tenant_id, kind, id FROM _ids)")
	if err != nil {
		return nil, fmt.Errorf("look up %d replaced events: %w", len(keys), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k rowKey
		var kind string
		if err := rows.Scan(&k.tenant, &kind, &k.eventID, &k.entryID); err != nil {
			return nil, fmt.Errorf("look up replaced events: %w", err)
		}
		k.kind = model.Kind(kind)
		out[k] = true
	}
	return out, rows.Err()
}

// replacement is a usage_events row to take out of the rollups.
type replacement struct {
	row rowKey
	by  string // the event id that counts instead
	src source // the record whose arrival replaced it
}

// replace copies the usage_events rows of reps into usage_replaced, whose
// views take their pieces back out of the rollups. The copy is made by
// ClickHouse from the stored row (INSERT … SELECT), so what is taken out is
// exactly what was put in.
func (s *store) replace(ctx context.Context, queryID string, reps []replacement, now time.Time) error {
	t, err := ext.NewTable("_rep", ext.Column("tenant_id", "String"), ext.Column("kind", "String"),
		ext.Column("event_id", "String"), ext.Column("entry_id", "String"), ext.Column("replaced_by", "String"),
		ext.Column("r_topic", "String"), ext.Column("r_partition", "Int32"), ext.Column("r_offset", "Int64"))
	if err != nil {
		return err
	}
	for _, r := range reps {
		if err := t.Append(r.row.tenant, string(r.row.kind), r.row.eventID, r.row.entryID, r.by,
			r.src.topic, r.src.partition, r.src.offset); err != nil {
			return err
		}
	}
	const cols = "tenant_id, kind, event_id, entry_id, reference_id, replaced_by, event_type, region, data_center, resource_id, server, external," +
		" time, quantity, byte_seconds, h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds"
	q := "INSERT INTO usage_replaced (" + cols + ", kafka_topic, kafka_partition, kafka_offset, inserted_at)" +
		" SELECT " + cols + ", r_topic, r_partition, r_offset, toDateTime(?, 'UTC') FROM usage_events" +
		" ANY INNER JOIN _rep USING (tenant_id, kind, event_id, entry_id)" +
		" WHERE tenant_id IN (SELECT tenant_id FROM _rep) AND (tenant_id, kind, entry_id) IN (SELECT tenant_id, kind, entry_id FROM _rep)"
	err = s.conn.Exec(clickhouse.Context(ctx, clickhouse.WithQueryID(queryID), clickhouse.WithExternalTable(t)), q, uint32(now.Unix()))
	return writeError(queryID, fmt.Sprintf("replace %d events", len(reps)), err)
}

// copyRow is a copy of an identity that was not counted.
type copyRow struct {
	row      rowKey // the copy: its event id and atom id
	kept     string // atom id of the copy that counts
	conflict bool
	src      source
}

const copyColumns = "tenant_id, kind, event_id, entry_id, kept_entry_id, conflict, kafka_topic, kafka_partition, kafka_offset, inserted_at"

// fillCopies returns the filler of an insert of rows into usage_copies.
func fillCopies(rows []copyRow, now time.Time) func(driver.Batch) error {
	return func(b driver.Batch) error {
		n := len(rows)
		tenant, kind, event, entry, kept := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		conflict := make([]uint8, n)
		for i, r := range rows {
			tenant[i], kind[i], event[i], entry[i], kept[i] = r.row.tenant, string(r.row.kind), r.row.eventID, r.row.entryID, r.kept
			if r.conflict {
				conflict[i] = 1
			}
		}
		cols := []any{tenant, kind, event, entry, kept, conflict}
		cols = append(cols, sourceColumns(func(i int) source { return rows[i].src }, n, now)...)
		return appendColumns(b, cols...)
	}
}
