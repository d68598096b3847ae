// Package schemas holds the contracts that live outside Go code: the JSON
// schema of the usage event (event.schema.json) and the ClickHouse schema as
// numbered migrations (migrations/NNNN_name.sql), embedded in the binary and
// applied by Apply (`feedmeter migrate`, and the sink when it starts).
//
// # Tables
//
//   - usage_events: one row per distinct usage event, dedupe key
//     (tenant_id, entry_id, kind), with the Kafka partition and offset it came
//     from and its split into hourly and daily pieces.
//   - other_events: system events and kind other, kept and never billed.
//   - rejects: dead letters of ingest and the sink, with raw bytes and reason.
//   - sink_progress: per Kafka partition and life of its topic (the topic's
//     id, 0006), the offset below which everything is in ClickHouse.
//   - usage_hourly, usage_daily: SummingMergeTree rollups per tenant, kind,
//     region, data center, resource and server, written by materialized views
//     on usage_events.
//   - license_daily (0004): which servers were licensed per
//     tenant and bucket, inside or outside Rackspace, as facts (a row written
//     twice means what it meant once), for invoices' licence lines.
//   - v_*: views for analysts, every column commented.
//
// # Why the rollups are exact
//
// Claim: for every bucket, a rollup holds the sum over the distinct events
// (distinct by dedupe key, the first one the sink saw) of their pieces in that
// bucket, whatever restarts, replays, duplicates, rebalances or ClickHouse
// outages happen. The argument:
//
//  1. Rows reach usage_hourly and usage_daily only through the materialized
//     views on usage_events, which run inside the INSERT into usage_events; the
//     sink takes an INSERT as done only when ClickHouse acknowledged it, and
//     an acknowledged INSERT has written the table and both views. So each row
//     in usage_events has been counted once in each rollup, and no rollup row
//     exists without its usage_events row. While a migration rebuilds a rollup
//     (REBUILD, rebuild.go) its name is absent, and an INSERT into
//     usage_events fails before it writes anything; the rebuild copies the
//     old table only after the inserts that could still write it are over.
//  2. A key is inserted into usage_events only when it is absent: before each
//     insert the sink drops the batch's keys that usage_events holds, and
//     duplicates within the batch, keeping the first. It finds them through a
//     cache of key fingerprints per tenant (sink.keyCache): a key whose
//     fingerprint is absent is absent; the others are selected from
//     usage_events exactly. A tenant's set is complete: it is loaded from
//     usage_events by the same goroutine that then inserts (no insert of this
//     sink runs meanwhile), extended with every acknowledged insert, and
//     thrown away when partitions are revoked or lost and after a failed
//     insert; a stopping sink holds its partitions until its last flush is
//     over. MergeTree
//     makes an acknowledged insert visible to every later SELECT. (For
//     other_events and rejects the lookup of batch N+1 may run while batch N
//     is being written; every key of batch N is then counted as present,
//     since N is written in full before N+1 is, or N+1 is discarded with it.)
//  3. The lookup and the insert of a key cannot race with another insert of the
//     same key: the record key is the tenant, so a dedupe key always lives in
//     one Kafka partition; a partition has one owner in the consumer group; a
//     sink writes one batch at a time and only while it holds the batch's
//     partitions (rebalances are blocked while a batch is being written,
//     kgo.BlockRebalanceOnPoll); and after an INSERT whose outcome is unknown
//     (a timeout, a broken connection) the next attempt first kills that
//     query by its query_id and waits until the server no longer runs it.
//  4. Offsets are committed only after the inserts were acknowledged, so no
//     record is skipped; a record read again (crash before the commit,
//     rebalance, reset) finds its key in step 2 and adds nothing.
//
// Hence every distinct key is inserted exactly once, and by (1) counted once.
// The licence rollups need less: they hold facts (server S licensed in bucket
// B, external or not), read by existence, so they are right even where a fact
// arrives twice (the backfill of 0004 and its views may both write one).
// The pieces of an event add up to its quantity and byte-seconds exactly
// (model.Split), so any sum of buckets equals the sum of its events.
//
// What the argument assumes: ClickHouse keeps what it acknowledged (a server
// killed between writing usage_events and the views of one INSERT could
// leave the rollups short; v_rollup_check shows any such difference),
// producers key usage records by tenant with a fixed partition count, and a
// sink cut off from Kafka stops writing before the group gives its
// partitions to another member: it notices at its next heartbeat and then
// writes at most the batch in flight (FlushTimeout), while the group waits
// SessionTimeout. Keep FlushTimeout well under SessionTimeout. (Before the
// key cache a breach of these needed two inserts at the same moment to
// count a key twice; with it, a member that loaded a tenant's keys misses
// whatever another writes later.)
package schemas

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one numbered file of migrations/.
type Migration struct {
	Version  uint32 // the number the file name starts with
	Name     string // the file name, e.g. 0001_events.sql
	SQL      string // the file's text
	Checksum string // hex SHA-256 of SQL, recorded when it is applied
}

// Statements splits the migration into statements: a statement ends with a
// line whose last non-blank character is ';'. Lines that are only a
// comment are dropped; a statement that is left empty is skipped.
func (m Migration) Statements() []string {
	var out []string
	var b strings.Builder
	for _, line := range strings.Split(m.SQL, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(b.String()), ";")
			if s != "" {
				out = append(out, s)
			}
			b.Reset()
		}
	}
	if s := strings.TrimSpace(b.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []Migration
	seen := map[uint32]string{}
	for _, p := range names {
		name := path.Base(p)
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql with NNNN > 0", name)
		}
		if other, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same number", other, name)
		}
		seen[uint32(v)] = name
		b, err := migrationFS.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: uint32(v), Name: name, SQL: string(b), Checksum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
