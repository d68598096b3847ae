package sink

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestFingerprintIsClickHouses: idFingerprint computes in Go what
// fingerprintSQL computes in ClickHouse, for ids short and long (the Go side
// builds short ones on the stack).
func TestFingerprintIsClickHouses(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	if err := db.Conn.Exec(ctx, "CREATE TABLE fp (kind String, id String) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	keys := []idKey{{kind: "storage", id: ""}, {kind: "", id: "x"}, {kind: "license", id: "0f6c1a4e-7a47-4cb4-9b4b-4d0e7f9d5a11"},
		{kind: "bandwidthIn", id: strings.Repeat("é-event", 40)}, {kind: "bandwidthOut", id: "a\x00b"}}
	for n := range 140 {
		keys = append(keys, idKey{kind: "storage", id: strings.Repeat("z", n)})
	}
	bt, err := db.Conn.PrepareBatch(ctx, "INSERT INTO fp (kind, id)")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := bt.Append(string(k.kind), k.id); err != nil {
			t.Fatal(err)
		}
	}
	if err := bt.Send(); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Conn.Query(ctx, "SELECT kind, id, "+fingerprintSQL+" FROM fp")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var kind, id string
		var fp uint64
		if err := rows.Scan(&kind, &id, &fp); err != nil {
			t.Fatal(err)
		}
		if got := idFingerprint(model.Kind(kind), id); got != fp {
			t.Errorf("fingerprint of %q/%q: Go %d, ClickHouse %d", kind, id, got, fp)
		}
		n++
	}
	if n != len(keys) {
		t.Fatalf("compared %d ids, want %d", n, len(keys))
	}
}

// TestKeyCacheLookup: an event id whose fingerprint the cache does not know
// (as an id, or as an id corrected) is not looked up; a known fingerprint is
// only a reason to ask (two ids may share one); a tenant the cache does not
// hold is loaded from usage_ids.
func TestKeyCacheLookup(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	s, err := New(testConfig(t, []string{"127.0.0.1:1"}, db.Addr, db.Name))
	if err != nil {
		t.Fatal(err)
	}
	s.st = &store{conn: db.Conn}
	ev := func(tenant string, kind model.Kind, id, ref string) eventRow {
		r := eventRow{ev: model.Event{TenantID: tenant, Kind: kind, EventID: id, ReferenceID: ref, EntryID: "urn:uuid:" + id}, idFP: idFingerprint(kind, id)}
		if ref != "" {
			r.refFP = idFingerprint(kind, ref)
		}
		return r
	}
	a := ev("1", "storage", "a", "")      // in usage_events, fingerprint cached
	b := ev("1", "storage", "b", "")      // not in usage_events, fingerprint cached
	c := ev("1", "storage", "c", "")      // not in usage_events, fingerprint not cached
	d := ev("2", "bandwidthIn", "d", "")  // in usage_events, tenant not cached
	e := ev("2", "bandwidthOut", "d", "") // same id, other kind: not there
	f := ev("2", "bandwidthIn", "f", "x") // corrects x, which an event of tenant 2 corrects already
	g := ev("2", "bandwidthIn", "g", "y") // corrects y, which nothing names
	bt, err := db.Conn.PrepareBatch(ctx, "INSERT INTO usage_events (tenant_id, kind, event_id, entry_id, reference_id, time)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []eventRow{a, d, ev("2", "bandwidthIn", "h", "x")} {
		if err := bt.Append(r.ev.TenantID, string(r.ev.Kind), r.ev.EventID, r.ev.EntryID, r.ev.ReferenceID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := bt.Send(); err != nil {
		t.Fatal(err)
	}
	// Their usage_ids rows, as the sink writes them.
	for _, q := range []string{
		"INSERT INTO usage_ids (tenant_id, kind, id, role, event_id, entry_id, reference_id, published, time) SELECT tenant_id, kind, event_id, toUInt8(0), event_id, entry_id, reference_id, published, time FROM usage_events",
		"INSERT INTO usage_ids (tenant_id, kind, id, role, event_id, entry_id, reference_id, published, time) SELECT tenant_id, kind, reference_id, toUInt8(1), event_id, entry_id, reference_id, published, time FROM usage_events WHERE reference_id != ''",
	} {
		if err := db.Conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s.cache.put(map[string]*tenantKeys{"1": {ids: map[uint64]struct{}{a.idFP: {}, b.idFP: {}}, refs: map[uint64]struct{}{}}})
	rows := []eventRow{a, b, c, d, e, f, g}
	look, err := s.lookupIDs(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	want := []idKey{{"1", "storage", "a"}, {"1", "storage", "b"}, {"2", "bandwidthIn", "d"}, {"2", "bandwidthIn", "x"}}
	if !slices.Equal(look, want) {
		t.Errorf("looked up %v, want %v", look, want)
	}
	if hits, loads := testutil.ToFloat64(s.m.cacheHits), testutil.ToFloat64(s.m.cacheLoads); hits != 4 || loads != 1 {
		t.Errorf("%v hits and %v tenant loads, want 4 (a, b, d, x) and 1 (tenant 2)", hits, loads)
	}
	// After an acknowledged insert the cache knows the rows; emptied, it
	// loads both tenants again.
	s.cache.add(rows[2:3]) // c
	if have, missing := s.cache.sets(map[string]bool{"1": true, "3": true}); len(missing) != 1 || missing[0] != "3" || len(have["1"].ids) != 3 {
		t.Errorf("after add: sets %v, missing %v", have, missing)
	}
	s.forgetKeys()
	if _, missing := s.cache.sets(map[string]bool{"1": true, "2": true}); len(missing) != 2 {
		t.Errorf("after forgetKeys: missing %v, want both tenants", missing)
	}
}

// TestKeyCacheEvicts: past its bound the cache drops the tenants used
// longest ago, never one the current lookup uses.
func TestKeyCacheEvicts(t *testing.T) {
	c := newKeyCache(5)
	set := func(n int) *tenantKeys {
		m := map[uint64]struct{}{}
		for i := range n {
			m[uint64(i)] = struct{}{}
		}
		return &tenantKeys{ids: m, refs: map[uint64]struct{}{}}
	}
	c.sets(map[string]bool{"a": true})
	c.put(map[string]*tenantKeys{"a": set(3)})
	c.sets(map[string]bool{"b": true})
	c.put(map[string]*tenantKeys{"b": set(3)})
	if c.len() != 3 {
		t.Errorf("holds %d fingerprints, want 3 (a dropped for b)", c.len())
	}
	if _, missing := c.sets(map[string]bool{"a": true, "b": true}); len(missing) != 1 || missing[0] != "a" {
		t.Errorf("missing %v, want [a]", missing)
	}
	// One lookup needing more than the bound keeps all it loaded.
	c.put(map[string]*tenantKeys{"a": set(4)})
	if c.len() != 7 {
		t.Errorf("holds %d fingerprints, want 7 (both in use)", c.len())
	}
}
