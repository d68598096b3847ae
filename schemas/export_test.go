package schemas

// For the tests of package schemas_test.
var (
	Rebuild = rebuild
	// RunStatement runs one statement of a migration as Apply does.
	RunStatement = Migrator{}.run
	ParseRebuild = parseRebuild
	Self         = self
)
