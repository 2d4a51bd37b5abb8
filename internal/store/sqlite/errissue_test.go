package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/store/storetest"
)

// TestSQLite_Migration14BackfillsIssues: reports stored before migration 14 get their
// issue (computed in Go in the migration's transaction) and the issue aggregates.
func TestSQLite_Migration14BackfillsIssues(t *testing.T) {
	t.Parallel()
	storetest.CheckIssueBackfill(t, func(t *testing.T) (store.Store, *sql.DB, func() store.Store) {
		path := filepath.Join(t.TempDir(), "moat.db")
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		old, err := sqldb.Open(t.Context(), db, nil, sqlite.Dialect, storetest.MigrationsBelow(t, "migrations", 14), time.Now)
		if err != nil {
			db.Close()
			t.Fatalf("sqldb.Open(migrations below 14) = %v", err)
		}
		return old, old.SQL(), func() store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, path)
		}
	})
}
