package postgres_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/storetest"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestPostgres_Migration14BackfillsIssues: reports stored before migration 14 get their
// issue (computed in Go in the migration's transaction) and the issue aggregates.
func TestPostgres_Migration14BackfillsIssues(t *testing.T) {
	testenv.PostgresDSN(t)
	t.Parallel()
	storetest.CheckIssueBackfill(t, func(t *testing.T) (store.Store, *sql.DB, func() store.Store) {
		dsn := testenv.FreshPostgresDatabase(t)
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		old, err := sqldb.Open(t.Context(), db, nil, postgres.Dialect, storetest.MigrationsBelow(t, "migrations", 14), time.Now)
		if err != nil {
			db.Close()
			t.Fatalf("sqldb.Open(migrations below 14) = %v", err)
		}
		return old, old.SQL(), func() store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dsn)
		}
	})
}
