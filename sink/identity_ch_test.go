package sink

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/internal/e2e"
	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// recordOf is e as ingest publishes it.
func recordOf(e model.Event) *kgo.Record {
	return &kgo.Record{Topic: model.TopicUsage, Key: []byte(e.TenantID), Value: e.AppendJSON(nil),
		Headers: []kgo.RecordHeader{{Key: model.HeaderKind, Value: []byte(e.Kind)}, {Key: model.HeaderEntryID, Value: []byte(e.EntryID)}}}
}

// cufEvent is a bandwidthOut event of tenant over the hour from 10:00 of
// 2026-10-05, published at published minutes past 11:00.
func cufEvent(tenant, id, ref string, q uint64, published int) model.Event {
	start := time.Date(2026, 10, 5, 10, 0, 0, 0, time.UTC)
	pub := start.Add(time.Hour + time.Duration(published)*time.Minute)
	return model.Event{TenantID: tenant, EntryID: "urn:uuid:" + tenant + "-" + id, EventID: id, ReferenceID: ref,
		Kind: model.KindBandwidthOut, ProductNamespace: model.NSCloudBackup + "bandwidthOut", ProductVersion: "1",
		EventType: model.TypeUsage, EventVersion: "1", Region: "DFW", DataCenter: "DFW1", ResourceID: "agent",
		ResourceType: "AGENT", ServerID: "9", StartTime: start, EndTime: start.Add(time.Hour), Quantity: q,
		Updated: pub, Published: pub}
}

// sinkOnce runs a sink over what the topics hold, until drained.
func sinkOnce(t *testing.T, brokers []string, db *chtest.DB) *Sink {
	t.Helper()
	s, stop := runSink(t, testConfig(t, brokers, db.Addr, db.Name))
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	return s
}

// tenantTotals returns, per tenant, the bandwidthOut bytes and events of
// the hourly rollup, the daily rollup, and the API's view of the events
// (v_usage_events, counted ones).
func tenantTotals(t *testing.T, db *chtest.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, q := range []string{
		"SELECT concat(tenant_id, ' hourly=', toString(sum(quantity)), ' ', toString(sum(events))) FROM usage_hourly GROUP BY tenant_id HAVING sum(pieces) != 0",
		"SELECT concat(tenant_id, ' daily=', toString(sum(quantity)), ' ', toString(sum(events))) FROM usage_daily GROUP BY tenant_id HAVING sum(pieces) != 0",
		"SELECT concat(tenant_id, ' counted=', toString(sum(quantity)), ' ', toString(count())) FROM v_usage_events WHERE counted = 1 GROUP BY tenant_id",
	} {
		for _, row := range chtest.QueryStrings(t, db.Conn, q) {
			k, v, _ := strings.Cut(row, "=")
			out[k] = v
		}
	}
	return out
}

// TestRepublishCountsOnce: the same usage event published again under
// another atom id (Atom Hopper's new urn:uuid for a publisher's retry) is
// counted once, and the copy is visible to analysts. It was billed twice:
// the dedupe key was the atom id.
func TestRepublishCountsOnce(t *testing.T) {
	db := chtest.NewDB(t, false)
	brokers := newCluster(t).ListenAddrs()
	a := cufEvent("7001", "a", "", 1000, 0)
	copyA := a
	copyA.EntryID, copyA.Published = "urn:uuid:7001-a-retry", a.Published.Add(time.Minute)
	produce(t, brokers, []*kgo.Record{recordOf(a), recordOf(copyA), recordOf(copyA)})
	s := sinkOnce(t, brokers, db)
	got := tenantTotals(t, db)
	for _, k := range []string{"7001 hourly", "7001 daily", "7001 counted"} {
		if got[k] != "1000 1" {
			t.Errorf("%s: %q, want 1000 bytes in 1 event", k, got[k])
		}
	}
	if rows := chtest.QueryStrings(t, db.Conn, "SELECT concat(entry_id, ' kept ', kept_entry_id, ' conflict ', toString(conflict), ' records ', toString(records)) FROM v_event_copies"); len(rows) != 1 || rows[0] != copyA.EntryID+" kept "+a.EntryID+" conflict 0 records 2" {
		t.Errorf("v_event_copies: %q", rows)
	}
	if n := testutil.ToFloat64(s.m.republished); n != 1 {
		t.Errorf("feedmeter_sink_republished_total %v, want 1 (the second record of the copy is a replay)", n)
	}
}

// TestConflictingRepublish: an event id published again saying something
// else keeps the first copy; the other is a reject (and a dead letter)
// whose reason names both atom ids, and a conflict in v_event_copies.
func TestConflictingRepublish(t *testing.T) {
	db := chtest.NewDB(t, false)
	brokers := newCluster(t).ListenAddrs()
	a := cufEvent("7002", "a", "", 1000, 0)
	other := a
	other.EntryID, other.Quantity = "urn:uuid:7002-a-other", 999999999999
	produce(t, brokers, []*kgo.Record{recordOf(a), recordOf(other)})
	s := sinkOnce(t, brokers, db)
	if got := tenantTotals(t, db); got["7002 daily"] != "1000 1" || got["7002 counted"] != "1000 1" {
		t.Errorf("totals %v, want the first copy's 1000 bytes", got)
	}
	rejects := chtest.QueryStrings(t, db.Conn, "SELECT reason FROM rejects WHERE tenant_id = '7002'")
	if len(rejects) != 1 || !strings.Contains(rejects[0], a.EntryID) || !strings.Contains(rejects[0], other.EntryID) {
		t.Errorf("rejects %q, want one naming %s and %s", rejects, a.EntryID, other.EntryID)
	}
	var dls []model.DeadLetter
	for _, r := range e2e.TopicRecords(t, brokers, model.TopicDeadLetter) {
		if dl, err := model.DecodeDeadLetter(r.Value); err == nil && dl.Stage == model.StageSink {
			dls = append(dls, dl)
		}
	}
	if len(dls) != 1 || dls[0].EntryID != other.EntryID || !strings.Contains(dls[0].Reason, "conflicting") {
		t.Errorf("sink dead letters %+v, want the conflicting copy", dls)
	}
	if rows := chtest.QueryStrings(t, db.Conn, "SELECT concat(entry_id, ' ', toString(conflict)) FROM v_event_copies"); len(rows) != 1 || rows[0] != other.EntryID+" 1" {
		t.Errorf("v_event_copies: %q", rows)
	}
	if n := testutil.ToFloat64(s.m.conflicts); n != 1 {
		t.Errorf("feedmeter_sink_conflicts_total %v, want 1", n)
	}
}

// TestCorrectionsInClickHouse: a correction replaces its original in the
// rollups, the licence facts and the events' view, whichever arrives first,
// when it arrives twice, and along a chain; one per tenant, all in one
// stream, then the whole stream again.
func TestCorrectionsInClickHouse(t *testing.T) {
	db := chtest.NewDB(t, false)
	brokers := newCluster(t).ListenAddrs()
	// Each tenant's events arrive one a step, a sink run after each: the
	// later ones find the earlier in ClickHouse.
	var steps [][]model.Event
	add := func(es ...model.Event) {
		for i, e := range es {
			if i == len(steps) {
				steps = append(steps, nil)
			}
			steps[i] = append(steps[i], e)
		}
	}
	add(cufEvent("8001", "a", "", 1000, 0), cufEvent("8001", "b", "a", 700, 5))                                     // after
	add(cufEvent("8002", "b", "a", 700, 5), cufEvent("8002", "a", "", 1000, 0))                                     // before
	add(cufEvent("8003", "a", "", 1000, 0), cufEvent("8003", "b", "a", 700, 5), cufEvent("8003", "b", "a", 700, 5)) // twice
	add(cufEvent("8004", "a", "", 1000, 0), cufEvent("8004", "b", "a", 700, 5), cufEvent("8004", "c", "b", 300, 9)) // chain
	add(cufEvent("8005", "c", "b", 300, 9), cufEvent("8005", "a", "", 1000, 0), cufEvent("8005", "b", "a", 700, 5)) // chain, backwards
	add(cufEvent("8006", "b", "gone", 700, 5))                                                                      // its original never arrives
	add(cufEvent("8009", "a", "", 1000, 0), cufEvent("8009", "c", "a", 300, 9), cufEvent("8009", "b", "a", 700, 5)) // siblings: the later published counts
	// A licence moved to another server by its correction: the licence
	// facts follow.
	lic := func(tenant, id, ref, server string, published int) model.Event {
		e := cufEvent(tenant, id, ref, 1, published)
		e.Kind, e.ProductNamespace, e.ServerID = model.KindLicense, model.NSCloudBackup+"license", server
		return e
	}
	add(lic("8007", "l1", "", "old-server", 0), lic("8007", "l2", "l1", "new-server", 5))
	var recs []*kgo.Record
	var s *Sink
	for i, step := range steps {
		var these []*kgo.Record
		for _, e := range step {
			these = append(these, recordOf(e))
		}
		produce(t, brokers, these)
		recs = append(recs, these...)
		if sk := sinkOnce(t, brokers, db); i == 0 {
			s = sk
		}
	}
	want := map[string]string{}
	for _, tn := range []string{"8001", "8002", "8003"} {
		for _, k := range []string{"hourly", "daily", "counted"} {
			want[tn+" "+k] = "700 1"
		}
	}
	for _, tn := range []string{"8004", "8005"} {
		for _, k := range []string{"hourly", "daily", "counted"} {
			want[tn+" "+k] = "300 1"
		}
	}
	for _, k := range []string{"hourly", "daily", "counted"} {
		want["8006 "+k] = "700 1"
		want["8007 "+k] = "1 1"
		want["8009 "+k] = "300 1"
	}
	chtest.CompareRows(t, "totals", tenantTotals(t, db), want)
	produce(t, brokers, recs) // the whole stream again: nothing changes
	sinkOnce(t, brokers, db)
	chtest.CompareRows(t, "totals after the stream again", tenantTotals(t, db), want)
	if got := chtest.QueryStrings(t, db.Conn, "SELECT server FROM license_daily WHERE tenant_id = '8007' GROUP BY server HAVING sum(pieces) > 0"); len(got) != 1 || got[0] != "new-server" {
		t.Errorf("licensed servers of 8007: %q, want new-server alone", got)
	}
	// What was replaced, and by what.
	got := map[string]string{}
	for _, row := range chtest.QueryStrings(t, db.Conn, "SELECT concat(tenant_id, ' ', event_id, '=', toString(counted), ' ', replaced_by) FROM v_usage_events WHERE tenant_id IN ('8001', '8002', '8004')") {
		k, v, _ := strings.Cut(row, "=")
		got[k] = v
	}
	chtest.CompareRows(t, "replaced", got, map[string]string{
		"8001 a": "0 b", "8001 b": "1 ", "8002 a": "0 b", "8002 b": "1 ",
		"8004 a": "0 b", "8004 b": "0 c", "8004 c": "1 ",
	})
	if n := testutil.ToFloat64(s.m.corrections); n != 3 {
		t.Errorf("feedmeter_sink_corrections_total %v in the first step, want 3 (8002 b, 8005 c, 8006 b)", n)
	}
	bad := chtest.QueryStrings(t, db.Conn, "SELECT tenant_id FROM v_rollup_check WHERE event_quantity != hourly_quantity OR event_quantity != daily_quantity OR event_count != hourly_events OR event_count != daily_events")
	if len(bad) > 0 {
		t.Errorf("v_rollup_check finds differences for %v", bad)
	}
}

// TestEveryBadRecordIsAReject: identical bad records at different offsets
// are as many rejects (the dead-letter topic has them all); read again,
// they are no more. 80 records made 3 rows before.
func TestEveryBadRecordIsAReject(t *testing.T) {
	db := chtest.NewDB(t, false)
	brokers := newCluster(t).ListenAddrs()
	var recs []*kgo.Record
	for i := range 80 {
		recs = append(recs, &kgo.Record{Topic: model.TopicUsage, Key: []byte("9" + strconv.Itoa(i%3)), Value: []byte("not json")})
	}
	produce(t, brokers, recs)
	sinkOnce(t, brokers, db)
	count := func() string { return chtest.QueryStrings(t, db.Conn, "SELECT toString(count()) FROM rejects")[0] }
	if n := count(); n != "80" {
		t.Fatalf("%s rejects, want 80", n)
	}
	// Read again from the start (a new consumer group, as after an
	// offset reset): the rejects are there already.
	cfg := testConfig(t, brokers, db.Addr, db.Name)
	cfg.Group = "again"
	_, stop := runSink(t, cfg)
	waitDrained(t, db.Conn, brokers, time.Minute)
	stop()
	if n := count(); n != "80" {
		t.Errorf("%s rejects after the topic was read again, want 80", n)
	}
}

// TestDeepCorrectionChainInClickHouse: a chain of corrections deeper than
// the levels loaded a query at a time (deepAfter): the tenant's whole
// correction forest is read, and the last correction alone counts.
func TestDeepCorrectionChainInClickHouse(t *testing.T) {
	db := chtest.NewDB(t, false)
	brokers := newCluster(t).ListenAddrs()
	const depth = 3 * deepAfter
	var chain []*kgo.Record
	prev := ""
	for i := range depth {
		id := "c" + strconv.Itoa(i)
		chain = append(chain, recordOf(cufEvent("8100", id, prev, uint64(1000+i), i)))
		prev = id
	}
	produce(t, brokers, chain[:depth-1])
	sinkOnce(t, brokers, db)
	produce(t, brokers, chain[depth-1:]) // the last, alone: it climbs the whole chain
	sinkOnce(t, brokers, db)
	last := strconv.Itoa(1000 + depth - 1)
	if got := tenantTotals(t, db); got["8100 daily"] != last+" 1" || got["8100 counted"] != last+" 1" {
		t.Errorf("totals %v, want the last correction's %s alone", got, last)
	}
}
