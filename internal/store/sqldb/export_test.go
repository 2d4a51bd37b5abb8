package sqldb

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/moat-iot/moat/internal/store"
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

// QueryIn runs q through tx's query path (a one-statement read's included), for tests that
// hold a statement's rows open while another transaction writes.
func QueryIn(ctx context.Context, t store.Tx, q string, args ...any) (*sql.Rows, error) {
	return t.(*tx).query(ctx, q, args...)
}
