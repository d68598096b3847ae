package sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestUpgradeToEventIdentity: a database a release before 0007 filled (its
// rows written as that sink wrote them, licence facts written twice as
// 0004's backfill could) is migrated: no row is lost or doubled, every sum
// is what it was, license_daily is counted anew, and the sink that starts
// on it then knows the old events by their event ids (a republish of one is
// not counted again) and lets a correction replace one.
func TestUpgradeToEventIdentity(t *testing.T) {
	ctx := context.Background()
	db := chtest.NewDB(t, false)
	if _, err := (schemas.Migrator{UpTo: 6}).Apply(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	w := genWorkload(41, 2000)
	// What a sink before 0007 wrote: each distinct event once, with its
	// pieces (its views filled the rollups and licence facts).
	d := decodeRecords(w.records)
	seen := map[model.DedupeKey]bool{}
	var rows []eventRow
	for _, r := range d.usage {
		if !seen[r.ev.Key()] {
			seen[r.ev.Key()] = true
			r.ev.ReferenceID = "" // before 0007, nothing read it
			rows = append(rows, r)
		}
	}
	legacy := usageColumnsBefore0007
	if err := (&store{conn: db.Conn}).insert(ctx, newQueryID(), "usage_events", legacy, fillLegacy(rows, time.Now())); err != nil {
		t.Fatal(err)
	}
	// 0004's backfill beside its view: some facts written twice.
	if err := db.Conn.Exec(ctx, "INSERT INTO license_daily SELECT * FROM license_daily WHERE cityHash64(server) % 2 = 0"); err != nil {
		t.Fatal(err)
	}
	// The sums before, kept in a table of their own, then compared with
	// those after in ClickHouse (toString of a large Decimal128 is wrong on
	// 18.16).
	const sums = "SELECT 'h' AS t, tenant_id, kind, sum(quantity) AS q, sum(byte_seconds) AS bs, toInt64(sum(events)) AS n FROM usage_hourly GROUP BY tenant_id, kind" +
		" UNION ALL SELECT 'd', tenant_id, kind, sum(quantity), sum(byte_seconds), toInt64(sum(events)) FROM usage_daily GROUP BY tenant_id, kind" +
		" UNION ALL SELECT 'e', tenant_id, kind, toDecimal128(count(), 0), toDecimal128(uniqExact(entry_id), 0), toInt64(0) FROM usage_events GROUP BY tenant_id, kind" +
		" UNION ALL SELECT 'l', tenant_id, '', toDecimal128(count(), 0), toDecimal128(0, 0), toInt64(0) FROM (SELECT DISTINCT tenant_id, day, server FROM license_daily) GROUP BY tenant_id"
	if err := db.Conn.Exec(ctx, "CREATE TABLE before_0007 ENGINE = Memory AS "+sums); err != nil {
		t.Fatal(err)
	}
	if _, err := schemas.Apply(ctx, db.Conn); err != nil {
		t.Fatal(err)
	}
	n := chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM before_0007")
	diff := chtest.QueryStrings(t, db.Conn, "SELECT concat(t, ' ', tenant_id, ' ', kind) FROM before_0007 ANY FULL OUTER JOIN ("+
		"SELECT t, tenant_id, kind, q AS q2, bs AS bs2, n AS n2 FROM ("+sums+")) USING (t, tenant_id, kind) WHERE q != q2 OR bs != bs2 OR n != n2")
	if n[0] == "0" || len(diff) > 0 {
		t.Errorf("%s sums before 0007; these differ after it: %q", n[0], diff)
	}
	// license_daily is a count now: each fact is the licence events
	// behind it, however often 0004 wrote it.
	if bad := chtest.QueryStrings(t, db.Conn, "SELECT concat(tenant_id, toString(day), server) FROM ("+
		"SELECT tenant_id, day, server, sum(pieces) AS p FROM license_daily GROUP BY tenant_id, day, server) ANY FULL OUTER JOIN ("+
		"SELECT tenant_id, ld_day AS day, server, toInt64(count()) AS n FROM usage_events ARRAY JOIN d_start AS ld_day WHERE kind = 'license' GROUP BY tenant_id, day, server"+
		") USING (tenant_id, day, server) WHERE p != n"); len(bad) > 0 {
		t.Errorf("license_daily differs from the licence events at %q", bad)
	}
	if n := chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM usage_ids WHERE role = 0"); n[0] != chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM usage_events")[0] {
		t.Errorf("usage_ids holds %s events, usage_events %s", n[0], chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM usage_events")[0])
	}
	// The sink on the migrated database: an old event republished counts
	// once, an old event corrected is replaced.
	old := rows[0].ev
	again := old
	again.EntryID, again.Published = "urn:uuid:republished", old.Published.Add(time.Hour)
	fix := rows[1].ev
	fixed := fix
	fixed.EntryID, fixed.EventID, fixed.ReferenceID, fixed.Published = "urn:uuid:fix", fix.EventID+"-fix", fix.EventID, fix.Published.Add(time.Hour)
	if fixed.Kind == model.KindLicense {
		fixed.ServerID = "elsewhere"
	} else {
		fixed.Quantity++
	}
	brokers := newCluster(t).ListenAddrs()
	produce(t, brokers, []*kgo.Record{recordOf(again), recordOf(fixed)})
	sinkOnce(t, brokers, db)
	got := map[string]string{}
	for _, row := range chtest.QueryStrings(t, db.Conn, "SELECT concat(event_id, '=', toString(counted), ' ', replaced_by, ' ', toString(count())) FROM v_usage_events"+
		" WHERE event_id IN (?, ?, ?) GROUP BY event_id, counted, replaced_by", old.EventID, fix.EventID, fixed.EventID) {
		k, v, _ := strings.Cut(row, "=")
		got[k] = v
	}
	chtest.CompareRows(t, "events after the sink", got, map[string]string{
		old.EventID: "1  1", fix.EventID: "0 " + fixed.EventID + " 1", fixed.EventID: "1  1"})
	bad := chtest.QueryStrings(t, db.Conn, "SELECT tenant_id FROM v_rollup_check WHERE event_quantity != hourly_quantity OR event_quantity != daily_quantity OR event_count != hourly_events OR event_count != daily_events")
	if len(bad) > 0 {
		t.Errorf("v_rollup_check finds differences for %v", bad)
	}
}

// usageColumnsBefore0007 are the columns a sink before 0007 wrote.
const usageColumnsBefore0007 = eventCommon + ", server, byte_seconds, h_start, h_quantity, h_byte_seconds, d_start, d_quantity, d_byte_seconds, kafka_topic, kafka_partition, kafka_offset, inserted_at"

// fillLegacy fills an insert of usageColumnsBefore0007: today's columns
// without reference_id.
func fillLegacy(rows []eventRow, now time.Time) func(driver.Batch) error {
	cols := usageCols(rows, now)
	at := len(eventColumns(rows, now)) // reference_id follows the common columns
	cols = append(cols[:at:at], cols[at+1:]...)
	return func(b driver.Batch) error { return appendColumns(b, cols...) }
}
