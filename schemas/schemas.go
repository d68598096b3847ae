// Package schemas holds the contracts that live outside Go code: the JSON
// schema of the usage event (event.schema.json) and the ClickHouse schema as
// numbered migrations (migrations/NNNN_name.sql), embedded in the binary and
// applied by Apply (`feedmeter migrate`, and the sink when it starts).
//
// # Tables
//
//   - usage_events: one row per distinct usage event, identity (tenant_id,
//     event_id, kind) (0007; before it the atom id stood for the event id),
//     with its referenceId, the Kafka partition and offset it came from and
//     its split into hourly and daily pieces.
//   - usage_ids (0007): usage_events by event id, and by the id each
//     correction names: how the sink finds an identity and a correction
//     tree.
//   - usage_replaced (0007): a copy of each usage_events row that no longer
//     counts (a correction replaced it); its views take the row's pieces
//     back out of the rollups and licence facts.
//   - usage_copies (0007): copies of a counted identity that were not counted
//     (republishes under another atom id, and conflicts).
//   - other_events: system events and kind other, kept and never billed.
//   - rejects: dead letters of ingest and the sink, with raw bytes and reason.
//   - sink_progress: per Kafka partition and life of its topic (the topic's
//     id, 0006), the offset below which everything is in ClickHouse.
//   - usage_hourly, usage_daily: SummingMergeTree rollups per tenant, kind,
//     region, data center, resource and server, written by materialized views
//     on usage_events.
//   - license_daily (0004, counted since 0007): which servers were licensed
//     per tenant and day, inside or outside Rackspace, for invoices' licence
//     lines: a server is licensed on a day when its rows sum to more than 0.
//   - v_*: views for analysts, every column commented.
//
// # Why the rollups are exact
//
// Claim: for every bucket, a rollup holds the sum over the events that
// count of their pieces in that bucket, whatever restarts, replays,
// duplicates, rebalances or ClickHouse outages happen. The events that count
// are the distinct usage events (distinct by identity, the first copy the
// sink saw in Kafka order), less those a correction replaces: in each tree of
// events linked by referenceId (per tenant and kind), the one reached from
// its root through the latest published child (sink/identity.go). The
// argument, first for distinct events (an event is in usage_events once):
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
//  2. An identity is inserted into usage_events only when it is absent:
//     before each insert the sink drops the batch's identities that
//     usage_events holds, and copies within the batch, keeping the first in
//     Kafka order. It finds them through usage_ids (written by views of
//     usage_events; the rows it names are then read from usage_events) and
//     a cache of id fingerprints per
//     tenant (sink.keyCache): an id whose fingerprint is absent is absent;
//     the others are looked up exactly. A tenant's set is complete: it is
//     loaded from usage_ids by the same goroutine that then inserts (no
//     insert of this sink runs meanwhile), extended with every acknowledged
//     insert, and thrown away when partitions are revoked or lost and after
//     a failed insert; a stopping sink holds its partitions until its last
//     flush is over. MergeTree
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
// The pieces of an event add up to its quantity and byte-seconds exactly
// (model.Split), so any sum of buckets equals the sum of its events.
//
// # Why corrections are exact
//
// Claim: after each flush, every correction tree the flush touched has its
// counted event, and only that one, in usage_events and not in
// usage_replaced; the rollups and license_daily hold, for each row of
// usage_events, its pieces once, less once more for each copy of it in
// usage_replaced. The argument:
//
//  5. usage_replaced is written only by the sink, through its views, which
//     write each row's pieces negated in the same INSERT (as 1). The sink
//     copies a row there only when usage_replaced does not hold it (looked
//     up in the same attempt, by the partition's only writer, after any
//     INSERT of unknown outcome was settled: as 2 and 3), so a row is taken
//     out at most once, and a row's pieces in a rollup are its own once
//     less once if it was replaced: 1 or 0.
//  6. Which event of a tree counts depends only on the tree's events and
//     their published times, never on the order they came in. A new event
//     can change that only for the tree it joins, and the flush that
//     carries it loads that tree whole (usage_ids, by id and by the id a
//     correction names: parents up to the root, children down; past a few
//     levels the whole correction forest of the tenant and kind) and copies
//     into usage_replaced every row of the tree that counts but should not.
//     Once an event stops counting it never counts again (a tree only
//     grows: a node with a child never loses it, and a child that lost to
//     a later published sibling still loses), so a row never needs to be
//     put back.
//  7. The inserts go new events first, then the copies into usage_replaced,
//     then progress, then the offset commit (4). A crash between them
//     leaves rows counted that should not be, until the batch is read
//     again (its offsets were not committed) and planned again from what
//     ClickHouse holds: its events are found, their trees loaded again, and
//     what still counts wrongly is copied then. The other order could have
//     left an original taken out and its correction never inserted.
//  8. A copy of an identity that counts already (a republish, a replay) is
//     dropped; one that says something else is a conflict, dropped too (and
//     rejected): neither enters a tree, so neither changes what counts.
//
// What this assumes beyond (1)-(4): usage_ids names every identity
// usage_events holds. Its views run after the table is written, and an
// earlier view of the same INSERT can fail with the table written; such
// rows lie past the partition's progress (written after the inserts), so
// after a failed insert and on every assignment the sink reads the rows of
// usage_events past progress and writes the usage_ids rows they lack
// before it plans (the rollups may then miss them: logged, counted, shown
// by v_rollup_check); and a feed is read in publication order,
// so that the first copy of an identity the sink sees is its first
// published one (its published time ranks it among its siblings). Rows
// written before 0007 keep what they were: two copies of one event under
// two atom ids then both count, until a correction replaces the event.
// license_daily counts pieces like the rollups; 0007 counted it anew from
// usage_events while no insert could run (GUARD).
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
