package sink

import (
	"cmp"
	"context"
	"fmt"
	"slices"
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
//     (the argument in package schemas), and the cache is emptied when
//     partitions are revoked or lost, so sets never outlive an ownership
//     (a sink that stops holds its partitions until its last flush is over);
//   - a failed insert into usage_events empties the cache (it may or may
//     not have landed; the next attempt settles it, then reloads). Other
//     failures keep it: nothing was written to usage_events, and a load
//     cut short by the flush timeout is continued by the next attempt.
//
// The cache holds about max fingerprints; past that it drops the tenants
// used longest ago, but never the tenants of the batch at hand. A set costs
// about 20 bytes a key.
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

// fingerprint64 is cityHash64(concat(kind, '\0', entry_id)) as ClickHouse
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

// sets returns the sets of the tenants it holds and the tenants it does not,
// the latter in order: a load query then asks for neighbouring tenants, whose
// rows lie together in usage_events (ORDER BY tenant_id first), and reads
// only their part of the table where small tenants share granules.
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
	slices.Sort(missing)
	return have, missing
}

// len returns how many fingerprints c holds; 0 for no cache.
func (c *keyCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// put stores loaded sets, then trims the cache.
func (c *keyCache) put(loaded map[string]map[uint64]struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, fps := range loaded {
		if old := c.tenants[t]; old != nil {
			c.size -= len(old.fps)
		}
		c.tenants[t] = &tenantKeys{fps: fps, used: c.tick}
		c.size += len(fps)
	}
	c.trim()
}

// add records rows that usage_events acknowledged, for the tenants held,
// then trims the cache.
func (c *keyCache) add(rows []eventRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range rows {
		if tk := c.tenants[rows[i].ev.TenantID]; tk != nil {
			n := len(tk.fps)
			tk.fps[rows[i].fp] = struct{}{}
			c.size += len(tk.fps) - n
		}
	}
	c.trim()
}

// trim drops the tenants used longest ago while the cache holds more than
// max fingerprints, but none the current lookup uses: one batch's tenants
// stay, even past max.
func (c *keyCache) trim() {
	if c.size <= c.max {
		return
	}
	type aged struct {
		tenant string
		used   uint64
	}
	var old []aged
	for t, tk := range c.tenants {
		if tk.used < c.tick {
			old = append(old, aged{t, tk.used})
		}
	}
	slices.SortFunc(old, func(a, b aged) int { return cmp.Compare(a.used, b.used) })
	for _, a := range old {
		if c.size <= c.max {
			break
		}
		c.size -= len(c.tenants[a.tenant].fps)
		delete(c.tenants, a.tenant)
	}
}

// loadBatch is how many tenants one load query asks for: ClickHouse builds
// every set of a query in memory before it answers, and each query's sets
// are kept as soon as they arrive, so that a load cut short by the flush
// timeout is continued, not redone, by the next attempt.
const loadBatch = 100

// keyFingerprints reads the fingerprints of every usage_events key of
// tenants, loadBatch tenants a query, and hands each query's sets to got
// (an empty set for a tenant with none).
func (s *store) keyFingerprints(ctx context.Context, tenants []string, got func(map[string]map[uint64]struct{})) error {
	for len(tenants) > 0 {
		n := min(len(tenants), loadBatch)
		chunk := tenants[:n]
		tenants = tenants[n:]
		t, err := ext.NewTable("_tenants", ext.Column("tenant_id", "String"))
		if err != nil {
			return err
		}
		out := make(map[string]map[uint64]struct{}, len(chunk))
		for _, tn := range chunk {
			if err := t.Append(tn); err != nil {
				return err
			}
			out[tn] = map[uint64]struct{}{}
		}
		rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(t)),
			"SELECT tenant_id, groupArray("+fingerprintSQL+") FROM usage_events WHERE tenant_id IN (SELECT tenant_id FROM _tenants) GROUP BY tenant_id")
		if err != nil {
			return fmt.Errorf("load key fingerprints of %d tenants: %w", len(chunk), err)
		}
		for rows.Next() {
			var tn string
			var fps []uint64
			if err := rows.Scan(&tn, &fps); err != nil {
				rows.Close()
				return fmt.Errorf("load key fingerprints: %w", err)
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
			return fmt.Errorf("load key fingerprints: %w", err)
		}
		got(out)
	}
	return nil
}

// existingUsage returns which keys of rows usage_events holds: the keys
// whose fingerprint the cache knows, looked up exactly.
func (s *Sink) existingUsage(ctx context.Context, rows []eventRow) (map[key]bool, error) {
	if s.cache == nil || len(rows) == 0 {
		return s.st.existingKeys(ctx, "usage_events", rowKeys(rows))
	}
	tenants := map[string]bool{}
	for i := range rows {
		tenants[rows[i].ev.TenantID] = true
	}
	have, missing := s.cache.sets(tenants)
	err := s.st.keyFingerprints(ctx, missing, func(loaded map[string]map[uint64]struct{}) {
		for t, fps := range loaded {
			have[t] = fps
		}
		s.cache.put(loaded)
		s.m.cacheLoads.Add(float64(len(loaded)))
	})
	if err != nil {
		return nil, err
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
