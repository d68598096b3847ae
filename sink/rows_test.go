package sink

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestSortRows: rows come out in (tenant_id, kind, entry_id) order, rows with
// equal keys in the order they came in (the first read is the one kept).
func TestSortRows(t *testing.T) {
	row := func(tenant string, kind model.Kind, entry string, offset int64) eventRow {
		return eventRow{ev: model.Event{TenantID: tenant, Kind: kind, EntryID: entry}, src: source{offset: offset}}
	}
	in := []eventRow{
		row("2", "storage", "a", 0),
		row("10", "storage", "b", 1),
		row("2", "license", "z", 2),
		row("2", "storage", "a", 3),
		row("10", "bandwidthIn", "c", 4),
		row("2", "storage", "a", 5),
	}
	var got []int64
	for _, r := range sortRows(slices.Clone(in)) {
		got = append(got, r.src.offset)
	}
	want := []int64{4, 1, 2, 0, 3, 5} // "10" < "2" as strings, as ClickHouse compares them
	if !slices.Equal(got, want) {
		t.Fatalf("sorted offsets %v, want %v", got, want)
	}
	if len(sortRows(nil)) != 0 || len(sortRows(in[:1])) != 1 {
		t.Fatal("sortRows of 0 or 1 rows changed their number")
	}
}

// TestInsertCutShort: an INSERT whose filler fails after a block was sent
// reports an unknown outcome (so the sink settles it and looks the keys up
// again), and what it wrote is whole blocks: the first block's keys are all
// there or all missing, the second block's all missing.
func TestInsertCutShort(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	var d decoded
	for i, r := range benchEvents(2 * insertBlockRows) {
		r.Partition, r.Offset = 0, int64(i)
		d.decodeUsage(r, time.Now())
	}
	rows := sortRows(d.usage)
	first, second := rows[:insertBlockRows], rows[insertBlockRows:]
	st := &store{conn: db.Conn}
	id := newQueryID()
	err := st.insert(ctx, id, "usage_events", usageColumns, func(b driver.Batch) error {
		if err := appendColumns(b, usageCols(first, time.Now())...); err != nil {
			return err
		}
		if err := b.Flush(); err != nil {
			return err
		}
		if err := appendColumns(b, usageCols(second, time.Now())...); err != nil {
			return err
		}
		return errors.New("cut short")
	})
	var ie *insertError
	if !errors.As(err, &ie) || ie.queryID != id {
		t.Fatalf("insert cut after a sent block: %v, want an insertError for %s", err, id)
	}
	if err := st.settle(ctx, id); err != nil {
		t.Fatal(err)
	}
	count := func(rows []eventRow) int {
		keys := make([]key, len(rows))
		for i := range rows {
			keys[i] = rows[i].ev.Key()
		}
		found, err := st.existingKeys(ctx, "usage_events", keys)
		if err != nil {
			t.Fatal(err)
		}
		return len(found)
	}
	if n := count(first); n != 0 && n != len(first) {
		t.Errorf("first block: %d of %d keys written, want all or none", n, len(first))
	}
	if n := count(second); n != 0 {
		t.Errorf("second block (never sent): %d keys written", n)
	}
}
