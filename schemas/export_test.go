package schemas

import "time"

// For the tests of package schemas_test.
var (
	Rebuild = rebuild
	// RunStatement runs one statement of a migration as Apply does.
	RunStatement = run
	ParseRebuild = parseRebuild
	Holder       = holder
)

// SetLockWait sets how long Apply waits for the migrations lock and returns
// the undo.
func SetLockWait(d time.Duration) func() {
	saved := lockWait
	lockWait = d
	return func() { lockWait = saved }
}
