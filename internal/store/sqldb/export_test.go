package sqldb

// Statements of the fleet queries, for the query-plan tests.
var (
	CountRunningQuery = countRunningQuery
	CountByImageQuery = countByImageQuery
	CountStatusQuery  = countStatusQuery
)
