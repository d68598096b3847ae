package query

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestReplacedEventsInAnswers: corrections (CUF referenceId) replace what
// they correct in every answer: usage sums and events, licensed servers and
// server-days (a licence moved to another server, a server that turned out
// to be external), invoice lines, the ranking; and the raw events say what
// was replaced and by what. The rollups hold a replaced event's row and its
// negated twin, so a reader that counts rows instead of sums counts the
// replaced server too.
func TestReplacedEventsInAnswers(t *testing.T) {
	db := chtest.NewDB(t, true)
	const tenant = "3001"
	day := func(d int, h int) time.Time { return time.Date(2026, 10, d, h, 0, 0, 0, time.UTC) }
	ev := func(id, ref string, kind model.Kind, start time.Time, q uint64, server string, published int) model.Event {
		e := model.Event{TenantID: tenant, EntryID: "urn:uuid:" + id, EventID: id, ReferenceID: ref, Kind: kind,
			ProductNamespace: model.NSCloudBackup + string(kind), ProductVersion: "1", EventType: model.TypeUsage, EventVersion: "1",
			Region: "DFW", DataCenter: "DFW1", ResourceID: "agent", ResourceType: "AGENT", ServerID: server,
			StartTime: start, EndTime: start.Add(time.Hour), Quantity: q}
		e.Published = day(20, published)
		e.Updated = e.Published
		return e
	}
	snapshot := func(id, ref, server string, at time.Time, external bool, published int) model.Event {
		e := ev(id, ref, model.KindLicense, at, 1, server, published)
		e.EventType, e.ProductVersion, e.EventTime, e.StartTime, e.EndTime = model.TypeUsageSnapshot, "3", at, time.Time{}, time.Time{}
		e.ServerName, e.External = server, &external
		return e
	}
	const gib = 1 << 30
	events := []model.Event{
		ev("a", "", model.KindBandwidthIn, day(1, 10), 10*gib, "s", 0),
		ev("b", "a", model.KindBandwidthIn, day(1, 10), 4*gib, "s", 1), // a was 10 GiB: 4
		ev("s2", "s1", model.KindStorage, day(2, 0), 2*gib, "s", 1),    // before its original
		ev("s1", "", model.KindStorage, day(2, 0), gib, "s", 0),
		ev("l1", "", model.KindLicense, day(3, 5), 1, "old", 0),
		ev("l2", "l1", model.KindLicense, day(3, 5), 1, "new", 1), // the licence was another server's
		ev("k1", "", model.KindLicense, day(4, 5), 1, "keep", 0),
		snapshot("e1", "", "ext-srv", day(5, 5), false, 0),
		snapshot("e2", "e1", "ext-srv", day(5, 5), true, 1), // outside Rackspace after all
	}
	loadThroughSink(t, db, events)
	store := NewClickHouse(db.Conn)
	tokens, toks := testTokens(t, tenant)
	c := apiClient{t: t, base: newTestServer(t, store, mustCard(t, apiRates), tokens).URL, token: toks["admin"]}

	var usage struct {
		Rows []usageRow `json:"rows"`
	}
	c.getJSON("/v1/tenants/"+tenant+"/usage?period=2026-10&granularity=day", &usage)
	got := map[string]string{}
	for _, r := range usage.Rows {
		switch {
		case r.Kind == "license" && r.Servers != nil && *r.Servers > 0:
			got[r.Start[:10]+" license"] = big.NewInt(int64(*r.Servers)).String()
		case r.Kind == "bandwidthIn" && r.Bytes != "0":
			got[r.Start[:10]+" bandwidthIn"] = r.Bytes
		case r.Kind == "storage" && r.ByteSeconds != "0":
			got[r.Start[:10]+" storage"] = r.ByteSeconds
		}
		if r.Events > 1 {
			t.Errorf("%s %s: %d events, want at most 1 (the replaced ones count no more)", r.Start, r.Kind, r.Events)
		}
	}
	chtest.CompareRows(t, "usage by day", got, map[string]string{
		"2026-10-01 bandwidthIn": "4294967296", "2026-10-02 storage": "7730941132800",
		"2026-10-03 license": "1", "2026-10-04 license": "1", "2026-10-05 license": "1",
	})
	c.getJSON("/v1/tenants/"+tenant+"/usage?period=2026-10&granularity=month&kind=license&group_by=server", &usage)
	got = map[string]string{}
	for _, r := range usage.Rows {
		got[*r.Server] = big.NewInt(int64(*r.ServerDays)).String()
	}
	chtest.CompareRows(t, "server-days by server", got, map[string]string{"new": "1", "keep": "1", "ext-srv": "1"})

	var inv struct {
		Lines []invoiceLine `json:"lines"`
	}
	c.getJSON("/v1/tenants/"+tenant+"/invoice?period=2026-10", &inv)
	got = map[string]string{}
	for _, l := range inv.Lines {
		got[l.Item] = l.QuantityExact
	}
	chtest.CompareRows(t, "invoice quantities", got, map[string]string{
		"bandwidth_in": "4", "storage": "1/372", // 2 GiB for an hour of a 31-day month
		"license": "2/31", "license_external": "1/31",
	})

	var evs struct {
		Events []eventOut `json:"events"`
	}
	c.getJSON("/v1/tenants/"+tenant+"/events?period=2026-10&limit=100", &evs)
	got = map[string]string{}
	for _, e := range evs.Events {
		got[e.EventID] = strings.TrimSpace(e.Replaces + " " + map[bool]string{true: "counted", false: "replaced by " + e.ReplacedBy}[e.Counted])
	}
	chtest.CompareRows(t, "events", got, map[string]string{
		"a": "replaced by b", "b": "a counted", "s1": "replaced by s2", "s2": "s1 counted",
		"l1": "replaced by l2", "l2": "l1 counted", "k1": "counted", "e1": "replaced by e2", "e2": "e1 counted",
	})

	var top struct {
		Tenants []struct {
			Tenant string `json:"tenant_id"`
			Value  string `json:"value"`
		} `json:"tenants"`
	}
	c.getJSON("/v1/usage/tenants?period=2026-10&kind=license", &top)
	if len(top.Tenants) != 1 || top.Tenants[0].Value != "3" {
		t.Errorf("ranking by licences: %+v, want %s with 3 server-days", top.Tenants, tenant)
	}
}
