package schemas

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// State is what Status finds in a database.
type State struct {
	Applied    int         // embedded migrations recorded as applied
	Pending    []Migration // embedded migrations not recorded
	Changed    []Migration // recorded with another checksum (Apply refuses to run)
	LockHolder string      // who holds LockTable; "" when nobody does
	Stopped    []string    // tables a stopped rebuild left: the next Apply finishes it
}

// Current reports whether the database needs nothing: no migration pending
// or changed, no lock, no stopped rebuild.
func (s State) Current() bool {
	return len(s.Pending) == 0 && len(s.Changed) == 0 && s.LockHolder == "" && len(s.Stopped) == 0
}

// Status reads the migrations state of conn's default database without
// changing it (but for creating an empty migrations table).
func Status(ctx context.Context, conn driver.Conn) (State, error) {
	var st State
	ms, err := Migrations()
	if err != nil {
		return st, err
	}
	done, err := recorded(ctx, conn)
	if err != nil {
		return st, err
	}
	st.Pending, st.Changed = classify(ms, done)
	st.Applied = len(ms) - len(st.Pending) - len(st.Changed)
	if st.LockHolder, err = lockHolder(ctx, conn); err != nil {
		return st, err
	}
	st.Stopped, err = queryNames(ctx, conn, "SELECT name FROM system.tables WHERE database = currentDatabase()"+
		" AND match(name, '"+rebuildSuffix+"(new|copied|old(_[0-9]+)?)$') ORDER BY name")
	if err != nil {
		return st, fmt.Errorf("find stopped rebuilds: %w", err)
	}
	return st, nil
}
