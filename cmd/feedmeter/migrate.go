package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/feedmeter/feedmeter/schemas"
)

func init() {
	commands["migrate"] = command{
		summary: "create the ClickHouse database and apply the embedded schema migrations",
		run:     runMigrate,
	}
}

// runMigrate applies the pending migrations and prints one line per
// migration applied. Exit 0 when the schema is current, 1 on a ClickHouse
// error, 2 on a bad command line.
func runMigrate(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("clickhouse", "127.0.0.1:9000", "ClickHouse native-protocol address")
	database := fs.String("database", "feedmeter", "database to create and migrate")
	list := fs.Bool("list", false, "print the embedded migrations and exit")
	compact := fs.Bool("compact", false, "then merge the day rollups into one part per partition (OPTIMIZE … FINAL; run it nightly, with a --timeout to match the tables)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long (a table rebuild puts its table back if this ends before its copy begins, and ignores it after)")
	status := fs.Bool("status", false, "print what is applied, pending or changed, the lock's holder and any stopped rebuild, and exit: 0 when nothing needs doing, 3 otherwise")
	lockWait := fs.Duration("lock-wait", schemas.DefaultLockWait, "wait this long for another process's migrations lock before failing with its holder's name")
	releaseLock := fs.Bool("release-lock", false, "drop the migrations lock left by a process that died holding it, and exit (use only when that process is gone: it is not checked)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: feedmeter migrate [--clickhouse 127.0.0.1:9000] [--database feedmeter] [--list] [--status] [--compact] [--release-lock]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	if *list {
		ms, err := schemas.Migrations()
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter migrate: %v\n", err)
			return 1
		}
		for _, m := range ms {
			fmt.Fprintf(stdout, "%04d %s %s\n", m.Version, m.Name, m.Checksum[:12])
		}
		return 0
	}
	if !schemas.ValidDatabase(*database) {
		fmt.Fprintf(stderr, "feedmeter migrate: --database %q is not a plain identifier\n", *database)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := schemas.Connect(ctx, schemas.ConnOptions(*addr, *database))
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter migrate: %v\n", err)
		return 1
	}
	defer conn.Close()
	if *status {
		return printStatus(ctx, conn, *database, stdout, stderr)
	}
	if *releaseLock {
		by, err := schemas.ReleaseLock(ctx, conn)
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "feedmeter migrate: %v\n", err)
			return 1
		case by == "":
			fmt.Fprintf(stdout, "database %s: no migrations lock\n", *database)
		default:
			fmt.Fprintf(stdout, "database %s: released the migrations lock of %s\n", *database, by)
		}
		return 0
	}
	applied, err := schemas.Migrator{LockWait: *lockWait}.Apply(ctx, conn)
	for _, a := range applied {
		fmt.Fprintf(stdout, "applied %s (%d statements)\n", a.Name, a.Statements)
	}
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter migrate: %v\n", err)
		return 1
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "database %s is up to date\n", *database)
	}
	if *compact {
		done, err := schemas.Compact(ctx, conn)
		for _, c := range done {
			fmt.Fprintf(stdout, "compacted %s in %s\n", c.Table, c.Took.Round(time.Millisecond))
		}
		if err != nil {
			fmt.Fprintf(stderr, "feedmeter migrate: %v\n", err)
			return 1
		}
	}
	return 0
}

// printStatus prints schemas.Status of the database: exit 0 when it needs
// nothing, 3 when something is pending, changed, locked or stopped.
func printStatus(ctx context.Context, conn driver.Conn, database string, stdout, stderr io.Writer) int {
	st, err := schemas.Status(ctx, conn)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter migrate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "database %s: %d migrations applied, %d pending\n", database, st.Applied, len(st.Pending))
	for _, m := range st.Pending {
		fmt.Fprintf(stdout, "pending %s\n", m.Name)
	}
	for _, m := range st.Changed {
		fmt.Fprintf(stdout, "changed %s: applied with another checksum; migrations are append-only\n", m.Name)
	}
	if st.LockHolder != "" {
		fmt.Fprintf(stdout, "locked by %s (%s)\n", st.LockHolder, schemas.LockTable)
	}
	for _, t := range st.Stopped {
		fmt.Fprintf(stdout, "stopped rebuild: %s exists; `feedmeter migrate` finishes the rebuild\n", t)
	}
	if st.Current() {
		return 0
	}
	return 3
}
