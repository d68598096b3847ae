package schemas

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// MigrationsTable records the applied migrations: one row per application
// (two sinks starting at once may both record one; readers take DISTINCT).
const MigrationsTable = "schema_migrations"

var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidDatabase reports whether name can be used as a database name without
// quoting.
func ValidDatabase(name string) bool { return databaseName.MatchString(name) }

// ConnOptions returns the clickhouse-go options feedmeter uses: the native
// protocol (18.16 does not accept what the driver sends over HTTP), LZ4, and
// database as the default database of every connection.
func ConnOptions(addr, database string) *clickhouse.Options {
	return &clickhouse.Options{
		Addr:            []string{addr},
		Protocol:        clickhouse.Native,
		Auth:            clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout:     5 * time.Second,
		ReadTimeout:     5 * time.Minute,
		Compression:     &clickhouse.Compression{Method: clickhouse.CompressionNone},
		MaxOpenConns:    8,
		MaxIdleConns:    4,
		ConnMaxLifetime: time.Hour,
	}
}

// Connect opens a connection pool to the server in opts, creating
// opts.Auth.Database first when it does not exist, and pings it.
func Connect(ctx context.Context, opts *clickhouse.Options) (driver.Conn, error) {
	db := opts.Auth.Database
	if !ValidDatabase(db) {
		return nil, fmt.Errorf("connect to clickhouse: database name %q is not [A-Za-z_][A-Za-z0-9_]*", db)
	}
	boot := *opts
	boot.Auth.Database = "default"
	bc, err := clickhouse.Open(&boot)
	if err == nil {
		err = bc.Ping(ctx) // a server that does not answer is said so, not "cannot create"
	}
	if err != nil {
		if bc != nil {
			bc.Close()
		}
		return nil, fmt.Errorf("connect to clickhouse %v: %w", opts.Addr, err)
	}
	err = bc.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db)
	bc.Close()
	if err != nil {
		return nil, fmt.Errorf("create database %s on %v: %w", db, opts.Addr, err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to clickhouse %v: %w", opts.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping clickhouse %v database %s: %w", opts.Addr, db, err)
	}
	return conn, nil
}

// Applied is one migration that Apply ran.
type Applied struct {
	Migration
	Statements int
}

// ErrChanged is returned (wrapped) by Apply when an applied migration's text
// differs from the embedded one: migrations are append-only.
var ErrChanged = errors.New("applied migration differs from the embedded one")

// Apply runs every embedded migration that the migrations table of conn's
// default database does not record, in version order, and records each one
// after all its statements succeeded. Every statement is idempotent (a
// CREATE … IF NOT EXISTS, or an INSERT into a table of facts, where a row
// written twice means what it meant once; see 0004), so a migration
// interrupted half-way is simply run again; a REBUILD statement (rebuild.go)
// finishes what a stopped run began. Migrations run under LockTable, one
// Apply at a time. It returns the migrations it ran; none when the schema is
// current.
func Apply(ctx context.Context, conn driver.Conn) ([]Applied, error) {
	return Migrator{}.Apply(ctx, conn)
}

// Migrator applies the embedded migrations; its zero value does what Apply
// does.
type Migrator struct {
	// UpTo stops after the migration of this number: the schema an older
	// release left (tests upgrade from it). 0: every migration.
	UpTo uint32
	// LockWait is how long to wait for another process's LockTable before
	// failing with ErrLocked. 0: DefaultLockWait.
	LockWait time.Duration
	// OnRenameAway, when set, runs right after a REBUILD renamed its table
	// away (tests hold the window open there, or cancel).
	OnRenameAway func()
	// Extra are migrations after the embedded ones, numbered above them
	// (tests rebuild a table of the current schema under a running sink).
	Extra []Migration
}

// Apply is Apply with m's settings.
func (m Migrator) Apply(ctx context.Context, conn driver.Conn) ([]Applied, error) {
	last, wait := m.UpTo, m.LockWait
	if last == 0 {
		last = math.MaxUint32
	}
	if wait == 0 {
		wait = DefaultLockWait
	}
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	for _, x := range m.Extra {
		if x.Version <= all[len(all)-1].Version {
			return nil, fmt.Errorf("extra migration %s: number %d is not above the embedded ones", x.Name, x.Version)
		}
		sum := sha256.Sum256([]byte(x.SQL))
		x.Checksum = hex.EncodeToString(sum[:])
		all = append(all, x)
	}
	var ms []Migration
	for _, m := range all {
		if m.Version <= last {
			ms = append(ms, m)
		}
	}
	pending, err := pendingOf(ctx, conn, ms)
	if err != nil {
		return nil, err
	}
	if len(pending) == 0 {
		// A lock of this process whose release failed would stop the
		// migrations of others.
		return nil, dropOwnLock(ctx, conn)
	}
	// One Apply at a time runs migrations (a REBUILD must not meet another
	// run's CREATE … IF NOT EXISTS of the table it renamed away); what the
	// other recorded meanwhile is read again under the lock.
	applyMu.Lock()
	defer applyMu.Unlock()
	release, err := lock(ctx, conn, wait)
	if err != nil {
		return nil, err
	}
	applied, err := m.applyLocked(ctx, conn, ms)
	return applied, errors.Join(err, release())
}

// applyLocked runs the migrations of ms that the migrations table does not
// record (read again: another process may have run some meanwhile); the
// caller holds the lock.
func (m Migrator) applyLocked(ctx context.Context, conn driver.Conn, ms []Migration) ([]Applied, error) {
	pending, err := pendingOf(ctx, conn, ms)
	if err != nil {
		return nil, err
	}
	var applied []Applied
	for _, mg := range pending {
		stmts := mg.Statements()
		var last time.Time // when the statement before finished
		for i, s := range stmts {
			if err := m.run(ctx, conn, s, last); err != nil {
				return applied, fmt.Errorf("migration %s statement %d: %w", mg.Name, i+1, err)
			}
			last = time.Now()
		}
		if err := record(ctx, conn, mg); err != nil {
			return applied, fmt.Errorf("record migration %s: %w", mg.Name, err)
		}
		applied = append(applied, Applied{Migration: mg, Statements: len(stmts)})
	}
	return applied, nil
}

// run runs one statement of a migration; last is when the statement before
// it finished (zero for the first).
func (m Migrator) run(ctx context.Context, conn driver.Conn, s string, last time.Time) error {
	if strings.HasPrefix(s, rebuildPrefix) {
		table, create, err := parseRebuild(s)
		if err != nil {
			return err
		}
		if _, err := rebuild(ctx, conn, table, create, m.OnRenameAway); err != nil {
			return fmt.Errorf("rebuild %s: %w", table, err)
		}
		return nil
	}
	switch {
	case strings.HasPrefix(s, guardPrefix):
		t, err := guardTable(s, guardPrefix)
		if err != nil {
			return err
		}
		return guard(ctx, conn, t)
	case strings.HasPrefix(s, unguardPrefix):
		t, err := guardTable(s, unguardPrefix)
		if err != nil {
			return err
		}
		return unguard(ctx, conn, t)
	}
	if t, c, ok := addedColumn(s); ok {
		has, err := hasColumn(ctx, conn, t, c)
		if err != nil || has {
			return err
		}
	}
	if strings.HasPrefix(s, "INSERT INTO ") && !last.IsZero() {
		// A backfill after a new view: an INSERT that began before the view
		// existed runs without it and may commit after the backfill's
		// snapshot, and would reach neither. Wait it out.
		if err := WaitInserts(ctx, conn, last); err != nil {
			return err
		}
	}
	return conn.Exec(ctx, s)
}

// pendingOf returns the migrations of ms that the migrations table does not
// record, or ErrChanged for one it records with another checksum.
func pendingOf(ctx context.Context, conn driver.Conn, ms []Migration) ([]Migration, error) {
	done, err := recorded(ctx, conn)
	if err != nil {
		return nil, err
	}
	pending, changed := classify(ms, done)
	if len(changed) > 0 {
		c := changed[0]
		return nil, fmt.Errorf("migration %s: %w (recorded %.12s…, embedded %.12s…)", c.Name, ErrChanged, done[c.Version], c.Checksum)
	}
	return pending, nil
}

// classify splits ms into those done does not record and those it records
// with another checksum.
func classify(ms []Migration, done map[uint32]string) (pending, changed []Migration) {
	for _, m := range ms {
		switch sum, ok := done[m.Version]; {
		case !ok:
			pending = append(pending, m)
		case sum != m.Checksum:
			changed = append(changed, m)
		}
	}
	return pending, changed
}

// recorded returns the checksum of every migration the migrations table
// records, by version.
// (It creates the table when there is none.)
func recorded(ctx context.Context, conn driver.Conn) (map[uint32]string, error) {
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MigrationsTable+` (
    version    UInt32 COMMENT 'number of the migration file',
    name       String COMMENT 'file name',
    checksum   String COMMENT 'hex SHA-256 of the file',
    applied_at DateTime('UTC') COMMENT 'when it was applied'
) ENGINE = MergeTree ORDER BY version`); err != nil {
		return nil, fmt.Errorf("create %s: %w", MigrationsTable, err)
	}
	done := map[uint32]string{}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version, checksum FROM "+MigrationsTable)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
	}
	defer rows.Close()
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
		}
		done[v] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
	}
	return done, nil
}

// WaitInserts waits until no INSERT that began before t (or up to half a
// second after it, for the clocks and the round trip) runs on the server;
// with tables, only those whose text names one of them.
func WaitInserts(ctx context.Context, conn driver.Conn, t time.Time, tables ...string) error {
	q := "SELECT count() FROM system.processes WHERE lower(query) LIKE 'insert%' AND elapsed >= ?"
	args := []any{0.0}
	if len(tables) > 0 {
		q += " AND arrayExists(x -> positionCaseInsensitive(query, x) > 0, ?)"
		args = append(args, tables)
	}
	for {
		var n uint64
		args[0] = (time.Since(t) - 500*time.Millisecond).Seconds()
		if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			return fmt.Errorf("wait for running inserts: %w", err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d running inserts: %w", n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// record inserts m into the migrations table. (A batch, not Exec: an INSERT
// with VALUES through Exec waits forever on 18.16.)
func record(ctx context.Context, conn driver.Conn, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+MigrationsTable+" (version, name, checksum, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, m.Checksum, time.Now().UTC()); err != nil {
		b.Abort()
		return err
	}
	return b.Send()
}
