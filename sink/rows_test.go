package sink

import (
	"slices"
	"testing"

	"github.com/feedmeter/feedmeter/model"
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
