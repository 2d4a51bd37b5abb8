package postgres_test

import (
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/storetest"
	"github.com/moat-iot/moat/internal/testenv"
)

func TestPostgres_Store(t *testing.T) {
	testenv.PostgresDSN(t) // skip (or fail in CI) once, not in every case
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, testenv.FreshPostgresDatabase(t))
	})
}

func open(t *testing.T, dsn string) *sqldb.DB {
	t.Helper()
	s, err := postgres.Open(t.Context(), dsn, time.Now)
	if err != nil {
		t.Fatalf("postgres.Open(fresh database) = %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return s
}

// TestPostgres_ConcurrentOpen starts two replicas on one empty database at once, as a
// deployment does: both must come up, and the schema must be migrated exactly once (the
// migrations run under an advisory lock). Repeated on several databases to give the race a
// chance.
func TestPostgres_ConcurrentOpen(t *testing.T) {
	testenv.PostgresDSN(t)
	for round := range 5 {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			t.Parallel()
			dsn := testenv.FreshPostgresDatabase(t)
			const replicas = 2
			var (
				wg     sync.WaitGroup
				start  = make(chan struct{})
				stores [replicas]*sqldb.DB
				errs   [replicas]error
			)
			for i := range replicas {
				wg.Go(func() {
					<-start
					stores[i], errs[i] = postgres.Open(t.Context(), dsn, time.Now)
				})
			}
			close(start)
			wg.Wait()
			for i, s := range stores {
				if s != nil {
					t.Cleanup(func() { s.Close() })
				}
				if errs[i] != nil {
					t.Errorf("postgres.Open by replica %d of %d at once = %v, want nil", i, replicas, errs[i])
				}
			}
			if t.Failed() {
				return
			}

			storetest.CheckMigrations(t, stores[0].SQL(), "migrations/*.sql")
			for i, s := range stores {
				if err := s.Ping(t.Context()); err != nil {
					t.Errorf("replica %d Ping() = %v, want nil", i, err)
				}
			}
		})
	}
}

// TestPostgres_Migration10BackfillsFleetColumns: rows written before migration 10 get their
// fleet columns from their JSON (jsonb operators).
func TestPostgres_Migration10BackfillsFleetColumns(t *testing.T) {
	testenv.PostgresDSN(t)
	t.Parallel()
	storetest.CheckFleetBackfill(t, func(t *testing.T) (store.Store, *sql.DB, func() store.Store) {
		dsn := testenv.FreshPostgresDatabase(t)
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		old, err := sqldb.Open(t.Context(), db, nil, postgres.Dialect, storetest.MigrationsBelow(t, "migrations", 10), time.Now)
		if err != nil {
			db.Close()
			t.Fatalf("sqldb.Open(migrations below 10) = %v", err)
		}
		return old, old.SQL(), func() store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dsn)
		}
	})
}

// TestPostgres_Migration16BackfillsRunningSince: devices written before migration 16 start
// running their versions at their last attestation.
func TestPostgres_Migration16BackfillsRunningSince(t *testing.T) {
	testenv.PostgresDSN(t)
	t.Parallel()
	storetest.CheckSinceBackfill(t, func(t *testing.T) (store.Store, *sql.DB, func() store.Store) {
		dsn := testenv.FreshPostgresDatabase(t)
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		old, err := sqldb.Open(t.Context(), db, nil, postgres.Dialect, storetest.MigrationsBelow(t, "migrations", 16), time.Now)
		if err != nil {
			db.Close()
			t.Fatalf("sqldb.Open(migrations below 16) = %v", err)
		}
		return old, old.SQL(), func() store.Store {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dsn)
		}
	})
}

// TestPostgres_ReadOnlyPoolRefusesWritableConnection: a connection of the one-statement
// read pool whose default_transaction_read_only did not take (a pooler that dropped the
// startup parameter) is refused rather than read on; one where it took is used.
func TestPostgres_ReadOnlyPoolRefusesWritableConnection(t *testing.T) {
	dsn := testenv.FreshPostgresDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		c := cfg.Copy()
		if on {
			c.RuntimeParams["default_transaction_read_only"] = "on"
		}
		conn, err := pgx.ConnectConfig(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		err = postgres.CheckReadOnly(t.Context(), conn)
		conn.Close(t.Context())
		if (err == nil) != on {
			t.Errorf("CheckReadOnly(connection with default_transaction_read_only=%v) = %v", on, err)
		}
	}
}
