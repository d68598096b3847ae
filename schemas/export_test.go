package schemas

import "time"

// For the tests of package schemas_test.
var (
	Rebuild = rebuild
	Record  = record
	// RunStatement runs one statement of a migration as Apply does.
	RunStatement = run
	ParseRebuild = parseRebuild
)

// Recorded creates the migrations table if need be and returns what it
// records.
var Recorded = recorded

// SetLockWait sets how long Apply waits for the migrations lock and returns
// the undo.
func SetLockWait(d time.Duration) func() {
	saved := lockWait
	lockWait = d
	return func() { lockWait = saved }
}
