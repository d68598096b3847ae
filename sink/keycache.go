package sink

import (
	"context"
	"fmt"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/go-faster/city"
)

// keyCache remembers, per tenant, a fingerprint of every usage_events key
// of that tenant, so that a batch's dedupe lookup asks ClickHouse only
// about the keys whose fingerprint is known. Without it every lookup read
// the key columns of all the batch's tenants: a batch naming most of 2,000
// tenants took 17 s (32 s of ClickHouse CPU) on 106 million events.
//
// A fingerprint is ClickHouse's cityHash64 of kind, NUL, entry_id (the
// tenant is the map key), so a tenant's set loads with one query. A key
// whose fingerprint is absent is not in usage_events; a key whose
// fingerprint is present may be (or share the fingerprint) and is looked up
// exactly.
//
// The sets are complete, which is what makes "absent" true, because:
//   - a tenant's set is loaded from usage_events by the writer goroutine,
//     which then inserts that batch; no insert of this sink runs meanwhile;
//   - after an acknowledged insert the rows' fingerprints are added;
//   - a tenant's keys are written only by the owner of its Kafka partition
//     (the argument in package schemas), and the cache is emptied on every
//     rebalance, so sets never outlive an ownership;
//   - any failed write empties the cache (the insert may or may not have
//     landed; the next attempt settles it, then reloads).
//
// The cache holds at most max fingerprints; past that it drops the tenants
// used longest ago. A set costs about 20 bytes a key.
type keyCache struct {
	mu      sync.Mutex
	max     int
	tenants map[string]*tenantKeys
	size    int    // fingerprints held
	tick    uint64 // lookups so far; for least recently used
}

type tenantKeys struct {
	fps  map[uint64]struct{}
	used uint64
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, tenants: map[string]*tenantKeys{}}
}

// fingerprint is cityHash64(concat(kind, '\0', entry_id)) as ClickHouse
// computes it.
func fingerprint64(k key) uint64 {
	var buf [128]byte
	b := append(append(append(buf[:0], k.Kind...), 0), k.EntryID...)
	return city.CH64(b)
}

// fingerprintSQL is fingerprint64 in ClickHouse.
const fingerprintSQL = "cityHash64(concat(kind, '\\0', entry_id))"

// clear forgets every tenant.
func (c *keyCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tenants, c.size = map[string]*tenantKeys{}, 0
}

// sets returns the sets of the tenants it holds and the tenants it does not.
func (c *keyCache) sets(tenants map[string]bool) (map[string]map[uint64]struct{}, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	have := make(map[string]map[uint64]struct{}, len(tenants))
	var missing []string
	for t := range tenants {
		if tk := c.tenants[t]; tk != nil {
			tk.used = c.tick
			have[t] = tk.fps
		} else {
			missing = append(missing, t)
		}
	}
	return have, missing
}

// put stores loaded sets, then drops the least recently used tenants (not
// the ones of this lookup) while over max; it returns how many
// fingerprints it holds.
func (c *keyCache) put(loaded map[string]map[uint64]struct{}) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, fps := range loaded {
		if old := c.tenants[t]; old != nil {
			c.size -= len(old.fps)
		}
		c.tenants[t] = &tenantKeys{fps: fps, used: c.tick}
		c.size += len(fps)
	}
	for c.size > c.max {
		var oldest string
		var at uint64
		for t, tk := range c.tenants {
			if tk.used < c.tick && (oldest == "" || tk.used < at) {
				oldest, at = t, tk.used
			}
		}
		if oldest == "" {
			break // everything held is in use by this lookup
		}
		c.size -= len(c.tenants[oldest].fps)
		delete(c.tenants, oldest)
	}
	return c.size
}

// add records rows that usage_events acknowledged, for the tenants held,
// and returns how many fingerprints it holds.
func (c *keyCache) add(rows []eventRow) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range rows {
		if tk := c.tenants[rows[i].ev.TenantID]; tk != nil {
			n := len(tk.fps)
			tk.fps[rows[i].fp] = struct{}{}
			c.size += len(tk.fps) - n
		}
	}
	return c.size
}

// loadBatch is how many tenants one load query asks for: ClickHouse builds
// every set of a query in memory before it answers.
const loadBatch = 200

// keyFingerprints returns the fingerprints of every usage_events key of
// tenants, an empty set for a tenant with none.
func (s *store) keyFingerprints(ctx context.Context, tenants []string) (map[string]map[uint64]struct{}, error) {
	out := make(map[string]map[uint64]struct{}, len(tenants))
	for len(tenants) > 0 {
		n := min(len(tenants), loadBatch)
		chunk := tenants[:n]
		tenants = tenants[n:]
		t, err := ext.NewTable("_tenants", ext.Column("tenant_id", "String"))
		if err != nil {
			return nil, err
		}
		for _, tn := range chunk {
			if err := t.Append(tn); err != nil {
				return nil, err
			}
			out[tn] = map[uint64]struct{}{}
		}
		rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
			"SELECT tenant_id, groupArray("+fingerprintSQL+") FROM usage_events WHERE tenant_id IN (SELECT tenant_id FROM _tenants) GROUP BY tenant_id")
		if err != nil {
			return nil, fmt.Errorf("load key fingerprints of %d tenants: %w", len(chunk), err)
		}
		for rows.Next() {
			var tn string
			var fps []uint64
			if err := rows.Scan(&tn, &fps); err != nil {
				rows.Close()
				return nil, fmt.Errorf("load key fingerprints: %w", err)
			}
			set := make(map[uint64]struct{}, len(fps))
			for _, fp := range fps {
				set[fp] = struct{}{}
			}
			out[tn] = set
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("load key fingerprints: %w", err)
		}
	}
	return out, nil
}

// existingUsage returns which keys of rows usage_events holds: the keys
// whose fingerprint the cache knows, looked up exactly.
func (s *Sink) existingUsage(ctx context.Context, rows []eventRow) (map[key]bool, error) {
	if s.cache == nil || len(rows) == 0 {
		keys := make([]key, len(rows))
		for i := range rows {
			keys[i] = rows[i].ev.Key()
		}
		return s.st.existingKeys(ctx, "usage_events", keys)
	}
	tenants := map[string]bool{}
	for i := range rows {
		tenants[rows[i].ev.TenantID] = true
	}
	have, missing := s.cache.sets(tenants)
	if len(missing) > 0 {
		loaded, err := s.st.keyFingerprints(ctx, missing)
		if err != nil {
			return nil, err
		}
		for t, fps := range loaded {
			have[t] = fps
		}
		s.m.cacheKeys.Set(float64(s.cache.put(loaded)))
		s.m.cacheLoads.Add(float64(len(missing)))
	}
	var maybe []key
	for i := range rows {
		if _, ok := have[rows[i].ev.TenantID][rows[i].fp]; ok {
			maybe = append(maybe, rows[i].ev.Key())
		}
	}
	s.m.cacheHits.Add(float64(len(maybe)))
	return s.st.existingKeys(ctx, "usage_events", maybe)
}
