package sqlite_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/store/storetest"
	"github.com/moat-iot/moat/internal/tenant"
)

func TestSQLite_Store(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "moat.db"))
	})
}

func open(t *testing.T, path string) store.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, time.Now)
	if err != nil {
		t.Fatalf("sqlite.Open(%s) = %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return s
}

// TestSQLite_OpenTwiceIsIdempotent reopens a migrated file, as every restart does: the
// migrations must not run again, and the data must survive.
func TestSQLite_OpenTwiceIsIdempotent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "moat.db")
	now := time.Now().UTC().Truncate(time.Microsecond)
	x := tenant.Tenant{ID: "tnt_0190000000000000000000000000000a", Name: "Contoso", CreatedAt: now, UpdatedAt: now, Version: 1}

	s, err := sqlite.Open(t.Context(), path, time.Now)
	if err != nil {
		t.Fatalf("sqlite.Open(%s) = %v", path, err)
	}
	if err := s.InTx(t.Context(), func(tx store.Tx) error { return tx.Tenants().Create(t.Context(), x) }); err != nil {
		t.Fatalf("Tenants().Create = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	s2, err := sqlite.Open(t.Context(), path, time.Now)
	if err != nil {
		t.Fatalf("second sqlite.Open(%s) = %v, want nil", path, err)
	}
	t.Cleanup(func() { s2.Close() })

	storetest.CheckMigrations(t, s2.SQL(), "migrations/*.sql")

	var gotT tenant.Tenant
	err = s2.InTx(t.Context(), func(tx store.Tx) error {
		var err error
		gotT, err = tx.Tenants().Get(t.Context(), x.ID)
		return err
	})
	if err != nil {
		t.Fatalf("Tenants().Get(%s) after reopening = %v, want nil", x.ID, err)
	}
	if d := cmp.Diff(x, gotT); d != "" {
		t.Errorf("Tenants().Get(%s) after reopening mismatch (-want +got):\n%s", x.ID, d)
	}
}

// TestMigrations_SameAsPostgres keeps the two dialects' migrations in step: the same files,
// so a schema change cannot land for one database only.
func TestMigrations_SameAsPostgres(t *testing.T) {
	t.Parallel()
	names := func(glob string) []string {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			files[i] = filepath.Base(f)
		}
		return files
	}
	if d := cmp.Diff(names("migrations/*.sql"), names("../postgres/migrations/*.sql")); d != "" {
		t.Errorf("migration files differ between sqlite and postgres (-sqlite +postgres):\n%s", d)
	}
}

// TestOpen_CreatesPrivateFile: the database holds token hashes and the audit log, so only
// its owner may read it.
func TestOpen_CreatesPrivateFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "moat.db")
	s, err := sqlite.Open(t.Context(), path, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("database file mode = %v, want 0600", got)
	}
}

// TestSQLite_Migration10BackfillsFleetColumns: rows written before migration 10 get their
// fleet columns from their JSON (json_extract).
func TestSQLite_Migration10BackfillsFleetColumns(t *testing.T) {
	t.Parallel()
	storetest.CheckFleetBackfill(t, func(t *testing.T) (store.Store, *sql.DB, func() store.Store) {
		path := filepath.Join(t.TempDir(), "moat.db")
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		old, err := sqldb.Open(t.Context(), db, nil, sqlite.Dialect, storetest.MigrationsBelow(t, "migrations", 10), time.Now)
		if err != nil {
			db.Close()
			t.Fatalf("sqldb.Open(migrations below 10) = %v", err)
		}
		return old, old.SQL(), func() store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, path)
		}
	})
}

// TestSQLite_Migration16BackfillsRunningSince: devices written before migration 16 start
// running their versions at their last attestation.
func TestSQLite_Migration16BackfillsRunningSince(t *testing.T) {
	t.Parallel()
	storetest.CheckSinceBackfill(t, func(t *testing.T) (store.Store, *sql.DB, func() store.Store) {
		path := filepath.Join(t.TempDir(), "moat.db")
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		old, err := sqldb.Open(t.Context(), db, nil, sqlite.Dialect, storetest.MigrationsBelow(t, "migrations", 16), time.Now)
		if err != nil {
			db.Close()
			t.Fatalf("sqldb.Open(migrations below 16) = %v", err)
		}
		return old, old.SQL(), func() store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, path)
		}
	})
}
