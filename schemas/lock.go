package schemas

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// LockTable exists while one Apply runs migrations in its database: CREATE
// TABLE of a name that exists fails, so at most one creator holds it. Its
// column's default names the holder.
const LockTable = "schema_migrations_lock"

// DefaultLockWait is how long Apply waits for another process's lock
// before it gives up with an error that names the holder (the sink then
// retries); Migrator.LockWait changes it.
const DefaultLockWait = 30 * time.Second

// ErrLocked is returned (wrapped, with the holder) when another process holds
// LockTable for longer than Apply waits.
var ErrLocked = errors.New("another process is applying migrations")

// applyMu serializes the migration runs of this process; LockTable serializes
// processes.
var applyMu sync.Mutex

// self names this process in LockTable: host name, process id and a random
// token, so that two processes never take one name (containers that share a
// host name are all pid 1).
var self = func() string {
	host, _ := os.Hostname()
	var b [6]byte
	rand.Read(b[:])
	return strings.Map(func(r rune) rune {
		if r == '\'' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, fmt.Sprintf("%s pid %d %s", host, os.Getpid(), hex.EncodeToString(b[:])))
}()

// lockHolder returns who holds LockTable ("" when nobody does).
func lockHolder(ctx context.Context, conn driver.Conn) (string, error) {
	var by string
	err := conn.QueryRow(ctx, "SELECT default_expression FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = 'holder'", LockTable).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", LockTable, err)
	}
	return strings.Trim(by, "'"), nil
}

// ours reports whether holder names this process.
func ours(holder string) bool { return strings.HasPrefix(holder, self+" since ") }

// lock takes LockTable, waiting up to wait, and returns its release; the
// caller holds applyMu. A lock of this process (a release that failed) is
// taken over. Another process that dies holding it leaves it behind: the
// error names it and says how to release it.
func lock(ctx context.Context, conn driver.Conn, wait time.Duration) (func() error, error) {
	create := "CREATE TABLE " + LockTable + " (holder String DEFAULT '" + self + " since " +
		time.Now().UTC().Format(time.RFC3339) + "') ENGINE = Memory"
	release := func() error {
		// Even when ctx is over: a lock left behind stops every later
		// migration of other processes.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var err error
		for try := 0; try < 3; try++ {
			if err = dropOwnLock(rctx, conn); err == nil {
				return nil
			}
			time.Sleep(time.Second)
		}
		return err
	}
	give := time.Now().Add(wait)
	for {
		err := conn.Exec(ctx, create)
		if err == nil {
			return release, nil
		}
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != 57 { // TABLE_ALREADY_EXISTS
			return nil, fmt.Errorf("take %s: %w", LockTable, err)
		}
		by, err := lockHolder(ctx, conn)
		if err != nil {
			return nil, err
		}
		if ours(by) {
			return release, nil
		}
		if time.Now().After(give) {
			return nil, fmt.Errorf("%w: %s holds %s (if that process is gone, release it with `feedmeter migrate --release-lock` and run again)", ErrLocked, by, LockTable)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", LockTable, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dropOwnLock drops LockTable if it names this process.
func dropOwnLock(ctx context.Context, conn driver.Conn) error {
	_, err := dropLock(ctx, conn, ours)
	return err
}

// ReleaseLock drops LockTable, left behind by a process that died holding
// it, and returns who held it ("" when nobody did). Run it only when that
// process is known to be gone: a live holder would go on migrating unlocked.
func ReleaseLock(ctx context.Context, conn driver.Conn) (string, error) {
	return dropLock(ctx, conn, func(by string) bool { return by != "" })
}

// dropLock drops LockTable when drop says so of its holder, and returns the
// holder it dropped ("" when none).
func dropLock(ctx context.Context, conn driver.Conn, drop func(holder string) bool) (string, error) {
	by, err := lockHolder(ctx, conn)
	if err != nil || !drop(by) {
		return "", err
	}
	if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+LockTable); err != nil {
		return "", fmt.Errorf("drop %s: %w", LockTable, err)
	}
	return by, nil
}
