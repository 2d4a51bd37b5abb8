package sqldb

import (
	"context"
	"fmt"
)

// Statements of the fleet queries, for the query-plan tests.
var (
	CountRunningQuery = countRunningQuery
	CountByImageQuery = countByImageQuery
	ListIssuesQuery   = listIssuesQuery
	CountStatusQuery  = countStatusQuery
)

// RebuildIssues recomputes every issue aggregate from error_reports.issue_id, as migration
// 14 does, for benchmarks that bulk-insert reports.
func RebuildIssues(ctx context.Context, s *DB) error {
	sqltx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer sqltx.Rollback()
	if err := rebuildIssues(ctx, s.migrationTx(sqltx)); err != nil {
		return fmt.Errorf("rebuild issues: %w", err)
	}
	return sqltx.Commit()
}
