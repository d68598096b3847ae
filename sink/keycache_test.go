package sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedmeter/feedmeter/model"
	"github.com/feedmeter/feedmeter/schemas/chtest"
)

// TestFingerprintIsClickHouses: fingerprint64 computes in Go what
// fingerprintSQL computes in ClickHouse, for keys short and long (the Go
// side builds short ones on the stack).
func TestFingerprintIsClickHouses(t *testing.T) {
	db := chtest.NewDB(t, false)
	ctx := context.Background()
	if err := db.Conn.Exec(ctx, "CREATE TABLE fp (kind String, entry_id String) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	keys := []key{{Kind: "storage", EntryID: ""}, {Kind: "", EntryID: "x"}, {Kind: "license", EntryID: "urn:uuid:0f6c1a4e-7a47-4cb4-9b4b-4d0e7f9d5a11"},
		{Kind: "bandwidthIn", EntryID: strings.Repeat("é-entry", 40)}, {Kind: "bandwidthOut", EntryID: "a\x00b"}}
	for n := range 140 {
		keys = append(keys, key{Kind: "storage", EntryID: strings.Repeat("z", n)})
	}
	bt, err := db.Conn.PrepareBatch(ctx, "INSERT INTO fp (kind, entry_id)")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := bt.Append(string(k.Kind), k.EntryID); err != nil {
			t.Fatal(err)
		}
	}
	if err := bt.Send(); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Conn.Query(ctx, "SELECT kind, entry_id, "+fingerprintSQL+" FROM fp")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var k key
		var kind string
		var fp uint64
		if err := rows.Scan(&kind, &k.EntryID, &fp); err != nil {
			t.Fatal(err)
		}
		k.Kind = model.Kind(kind)
		if got := fingerprint64(k); got != fp {
			t.Errorf("fingerprint of %q/%q: Go %d, ClickHouse %d", kind, k.EntryID, got, fp)
		}
		n++
	}
	if n != len(keys) {
		t.Fatalf("compared %d keys, want %d", n, len(keys))
	}
}

// TestKeyCacheLookup: a key whose fingerprint the cache does not know is
// absent without a question to ClickHouse; a known fingerprint is only a
// reason to ask (two keys may share one); a tenant the cache does not hold
// is loaded from usage_events.
func TestKeyCacheLookup(t *testing.T) {
	db := chtest.NewDB(t, true)
	ctx := context.Background()
	s, err := New(testConfig(t, []string{"127.0.0.1:1"}, db.Addr, db.Name))
	if err != nil {
		t.Fatal(err)
	}
	s.st = &store{conn: db.Conn}
	a := key{TenantID: "1", Kind: "storage", EntryID: "urn:uuid:a"}      // in usage_events, fingerprint cached
	b := key{TenantID: "1", Kind: "storage", EntryID: "urn:uuid:b"}      // not in usage_events, fingerprint cached
	c := key{TenantID: "1", Kind: "storage", EntryID: "urn:uuid:c"}      // not in usage_events, fingerprint not cached
	d := key{TenantID: "2", Kind: "bandwidthIn", EntryID: "urn:uuid:d"}  // in usage_events, tenant not cached
	e := key{TenantID: "2", Kind: "bandwidthOut", EntryID: "urn:uuid:d"} // same entry, other kind: not there
	bt, err := db.Conn.PrepareBatch(ctx, "INSERT INTO usage_events (tenant_id, kind, entry_id, time)")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []key{a, d} {
		if err := bt.Append(k.TenantID, string(k.Kind), k.EntryID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := bt.Send(); err != nil {
		t.Fatal(err)
	}
	s.cache.put(map[string]map[uint64]struct{}{"1": {fingerprint64(a): {}, fingerprint64(b): {}}})
	var rows []eventRow
	for _, k := range []key{a, b, c, d, e} {
		rows = append(rows, eventRow{ev: model.Event{TenantID: k.TenantID, Kind: k.Kind, EntryID: k.EntryID}, fp: fingerprint64(k)})
	}
	found, err := s.existingUsage(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || !found[a] || !found[d] {
		t.Errorf("found %v, want %v and %v", found, a, d)
	}
	if hits, loads := testutil.ToFloat64(s.m.cacheHits), testutil.ToFloat64(s.m.cacheLoads); hits != 3 || loads != 1 {
		t.Errorf("%v hits and %v tenant loads, want 3 (a, b, d) and 1 (tenant 2)", hits, loads)
	}
	// After an acknowledged insert the cache knows the rows; emptied, it
	// loads both tenants again.
	s.cache.add(rows[2:3]) // c
	if have, missing := s.cache.sets(map[string]bool{"1": true, "3": true}); len(missing) != 1 || missing[0] != "3" || len(have["1"]) != 3 {
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
	set := func(n int) map[uint64]struct{} {
		m := map[uint64]struct{}{}
		for i := range n {
			m[uint64(i)] = struct{}{}
		}
		return m
	}
	c.sets(map[string]bool{"a": true})
	c.put(map[string]map[uint64]struct{}{"a": set(3)})
	c.sets(map[string]bool{"b": true})
	c.put(map[string]map[uint64]struct{}{"b": set(3)})
	if c.len() != 3 {
		t.Errorf("holds %d fingerprints, want 3 (a dropped for b)", c.len())
	}
	if _, missing := c.sets(map[string]bool{"a": true, "b": true}); len(missing) != 1 || missing[0] != "a" {
		t.Errorf("missing %v, want [a]", missing)
	}
	// One lookup needing more than the bound keeps all it loaded.
	c.put(map[string]map[uint64]struct{}{"a": set(4)})
	if c.len() != 7 {
		t.Errorf("holds %d fingerprints, want 7 (both in use)", c.len())
	}
}
