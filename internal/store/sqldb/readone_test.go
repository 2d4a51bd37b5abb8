package sqldb_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/store/sqldb"
	"github.com/moat-iot/moat/internal/store/sqlite"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// eachStore runs f on a fresh SQLite store and a fresh PostgreSQL one: ReadOne runs on
// another kind of read-only pool on each (SQLite's query_only one, PostgreSQL's of
// default_transaction_read_only connections), and both must keep its rules.
func eachStore(t *testing.T, f func(t *testing.T, s *sqldb.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "moat.db"), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		s, err := postgres.Open(t.Context(), testenv.FreshPostgresDatabase(t), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f(t, s)
	})
}

// readOneFixture stores a tenant with products named names and returns them.
func readOneFixture(t testing.TB, s *sqldb.DB, names ...string) (tenant.Tenant, []product.Product) {
	t.Helper()
	at := time.Now().UTC().Truncate(time.Microsecond)
	ten := tenant.Tenant{ID: tenant.ID(ident.New(tenant.IDPrefix, at)), Name: "Contoso " + string(ident.New("x", at)), CreatedAt: at, UpdatedAt: at, Version: 1}
	var ps []product.Product
	err := s.InTx(t.Context(), func(tx store.Tx) error {
		if err := tx.Tenants().Create(t.Context(), ten); err != nil {
			return err
		}
		tt, err := tx.ForTenant(ten.ID)
		if err != nil {
			return err
		}
		for _, n := range names {
			p := newReadOneProduct(ten.ID, n)
			if err := tt.Products().Create(t.Context(), p); err != nil {
				return err
			}
			ps = append(ps, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ten, ps
}

func newReadOneProduct(tid tenant.ID, name string) product.Product {
	at := time.Now().UTC().Truncate(time.Microsecond)
	return product.Product{ID: product.ID(ident.New(product.IDPrefix, at)), TenantID: tid, Name: name,
		Description: "The " + name + " product.", CreatedAt: at, UpdatedAt: at, Version: 1}
}

// getOne reads product id of tenant tid with ReadOne.
func getOne(ctx context.Context, s *sqldb.DB, tid tenant.ID, id product.ID) (product.Product, error) {
	var p product.Product
	err := s.ReadOne(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tid)
		if err != nil {
			return err
		}
		p, err = tt.Products().Get(ctx, id)
		return err
	})
	return p, err
}

func TestReadOne_ReadsOneObject(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, ps := readOneFixture(t, s, "DW100", "DW200")
		for range 3 { // the second and later reads use the pool's prepared statement
			got, err := getOne(t.Context(), s, ten.ID, ps[1].ID)
			if err != nil || got.ID != ps[1].ID || got.Name != "DW200" || !got.CreatedAt.Equal(ps[1].CreatedAt) {
				t.Fatalf("ReadOne(Products().Get(%s)) = %+v, %v, want %+v", ps[1].ID, got, err, ps[1])
			}
		}
		var list []product.Product
		err := s.ReadOne(t.Context(), func(tx store.Tx) error {
			tt, err := tx.ForTenant(ten.ID)
			if err != nil {
				return err
			}
			list, err = tt.Products().List(t.Context(), store.Page{})
			return err
		})
		if err != nil || len(list) != 2 {
			t.Errorf("ReadOne(Products().List) = %d products, %v, want 2, nil", len(list), err)
		}
	})
}

// TestReadOne_IsTenantScoped: another tenant's product is not found through ReadOne, and
// no tenant is no read (rule 3).
func TestReadOne_IsTenantScoped(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		_, ps := readOneFixture(t, s, "DW100")
		other, _ := readOneFixture(t, s)
		if _, err := getOne(t.Context(), s, other.ID, ps[0].ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ReadOne(another tenant's Products().Get) = %v, want ErrNotFound", err)
		}
		if _, err := getOne(t.Context(), s, "", ps[0].ID); !errors.Is(err, store.ErrNoTenant) {
			t.Errorf("ReadOne(ForTenant(\"\")) = %v, want ErrNoTenant", err)
		}
	})
}

// TestReadOne_RefusesSecondStatement: a second statement would see another snapshot than
// the first, so it fails instead of running, on both databases alike.
func TestReadOne_RefusesSecondStatement(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, ps := readOneFixture(t, s, "DW100", "DW200")
		var second error
		err := s.ReadOne(t.Context(), func(tx store.Tx) error {
			tt, err := tx.ForTenant(ten.ID)
			if err != nil {
				return err
			}
			if _, err := tt.Products().Get(t.Context(), ps[0].ID); err != nil {
				return err
			}
			_, second = tt.Products().Get(t.Context(), ps[1].ID)
			if _, err := tt.Products().List(t.Context(), store.Page{}); err == nil {
				t.Errorf("ReadOne: third statement (Products().List) = nil, want an error")
			}
			return second
		})
		if second == nil || err == nil {
			t.Errorf("ReadOne: second statement = %v (ReadOne = %v), want an error", second, err)
		}
	})
}

// TestReadOne_RefusesWrites: nothing is written through a one-statement read, neither by
// an exec (Create) nor by a write that returns a row (the console's DELETE ... RETURNING).
func TestReadOne_RefusesWrites(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, _ := readOneFixture(t, s)
		p := newReadOneProduct(ten.ID, "Written in a read")
		err := s.ReadOne(t.Context(), func(tx store.Tx) error {
			tt, err := tx.ForTenant(ten.ID)
			if err != nil {
				return err
			}
			return tt.Products().Create(t.Context(), p)
		})
		if err == nil {
			t.Errorf("ReadOne(Products().Create) = nil, want an error")
		}
		if _, err := getOne(t.Context(), s, ten.ID, p.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Products().Get(product created in ReadOne) = %v, want ErrNotFound", err)
		}
		err = s.ReadOne(t.Context(), func(tx store.Tx) error {
			_, err := tx.ConsoleSessions().ConsumeLink(t.Context(), "code", time.Now())
			return err
		})
		if err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("ReadOne(ConsoleSessions().ConsumeLink) = %v, want the write refused", err)
		}
	})
}

// TestReadOne_DatabaseRefusesWrites: a write that the Go side does not recognise as one
// (a statement run through the query path, which only refuses a second statement) fails in
// the database, because the connection of a one-statement read is read-only there (SQLite's
// query_only pool; on PostgreSQL the pool of default_transaction_read_only connections,
// where the statement runs without a transaction), and nothing is written.
func TestReadOne_DatabaseRefusesWrites(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, ps := readOneFixture(t, s, "DW100")
		writes := []string{`DELETE FROM products WHERE tenant_id = $1 RETURNING id`}
		if _, pg := s.SQL().Driver().(*stdlib.Driver); pg {
			// Writes that look like reads: a function that deletes, and a sequence's nextval.
			if _, err := s.SQL().ExecContext(t.Context(), `CREATE FUNCTION moat_test_delete(t text) RETURNS SETOF text
				LANGUAGE sql VOLATILE AS $$ DELETE FROM products WHERE tenant_id = t RETURNING id $$`); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SQL().ExecContext(t.Context(), `CREATE SEQUENCE moat_test_seq`); err != nil {
				t.Fatal(err)
			}
			writes = append(writes, `SELECT moat_test_delete($1)`, `SELECT nextval('moat_test_seq') WHERE $1 <> ''`)
		}
		for _, q := range writes {
			err := readOneQuery(t, s, q, ten.ID)
			if !readOnlyRefusal(err) {
				t.Errorf("ReadOne(%s) = %v, want the database's read-only refusal", q, err)
			}
			if _, err := getOne(t.Context(), s, ten.ID, ps[0].ID); err != nil {
				t.Fatalf("Products().Get after ReadOne(%s) = %v, want the product kept", q, err)
			}
		}
	})
}

// readOnlyRefusal reports whether err is the database refusing a write on a read-only
// connection, not any other failure.
func readOnlyRefusal(err error) bool {
	if e, ok := errors.AsType[*pgconn.PgError](err); ok {
		return e.Code == "25006" // read_only_sql_transaction
	}
	if e, ok := errors.AsType[*msqlite.Error](err); ok {
		return e.Code()&0xff == sqlite3.SQLITE_READONLY
	}
	return false
}

// TestReadOne_PostgresRunsWithoutTransaction: on PostgreSQL the one statement is its own
// transaction (one round trip, no BEGIN and COMMIT): once its rows are read, its backend
// is idle outside any transaction, where a read-only transaction would still be open
// until ReadOne returns. And a connection string cannot make that pool writable.
func TestReadOne_PostgresRunsWithoutTransaction(t *testing.T) {
	t.Parallel()
	dsn := testenv.FreshPostgresDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("default_transaction_read_only", "off")
	q.Set("options", "-cdefault_transaction_read_only=off")
	u.RawQuery = q.Encode()
	s, err := postgres.Open(t.Context(), u.String(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ten, ps := readOneFixture(t, s, "DW100")
	var state string
	var inTx bool
	err = s.ReadOne(t.Context(), func(tx store.Tx) error {
		rows, err := sqldb.QueryIn(t.Context(), tx, `SELECT pg_backend_pid() WHERE $1 <> ''`, ten.ID)
		if err != nil {
			return err
		}
		var pid int
		for rows.Next() {
			if err := rows.Scan(&pid); err != nil {
				return err
			}
		}
		if err := rows.Close(); err != nil { // reads up to ReadyForQuery
			return err
		}
		return s.SQL().QueryRowContext(t.Context(),
			`SELECT state, xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&state, &inTx)
	})
	if err != nil || state != "idle" || inTx {
		t.Errorf("ReadOne's backend after its statement: state %q, in a transaction %v (%v); want idle, false", state, inTx, err)
	}
	err = readOneQuery(t, s, `DELETE FROM products WHERE tenant_id = $1 RETURNING id`, ten.ID)
	if !readOnlyRefusal(err) {
		t.Errorf("ReadOne(DELETE) with default_transaction_read_only=off in the DSN = %v, want the read-only refusal", err)
	}
	if _, err := getOne(t.Context(), s, ten.ID, ps[0].ID); err != nil {
		t.Errorf("Products().Get after the refused DELETE = %v, want the product kept", err)
	}
}

// TestReadOne_StatementSeesOneSnapshot: the one statement's rows come from the snapshot it
// started on, however long they are read and whatever commits meanwhile: what makes a
// single statement safe to run without a transaction.
func TestReadOne_StatementSeesOneSnapshot(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, ps := readOneFixture(t, s, "A", "B", "C")
		n := 0
		err := s.ReadOne(t.Context(), func(tx store.Tx) error {
			rows, err := sqldb.QueryIn(t.Context(), tx, `SELECT id FROM products WHERE tenant_id = $1 ORDER BY id`, ten.ID)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				if n++; n == 1 {
					// Mid-statement: add a product and delete the last one.
					if err := s.InTx(t.Context(), func(tx store.Tx) error {
						tt, err := tx.ForTenant(ten.ID)
						if err != nil {
							return err
						}
						if err := tt.Products().Create(t.Context(), newReadOneProduct(ten.ID, "D")); err != nil {
							return err
						}
						return tt.Products().Delete(t.Context(), ps[2].ID, 0)
					}); err != nil {
						return err
					}
				}
			}
			return rows.Err()
		})
		if err != nil || n != 3 {
			t.Errorf("ReadOne: a statement read %d rows (%v) across a commit, want the 3 of its snapshot", n, err)
		}
	})
}

// TestReadOne_DoesNotWaitForWriters: a read runs while a write transaction holds the
// write lock, and does not see its uncommitted write.
func TestReadOne_DoesNotWaitForWriters(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, _ := readOneFixture(t, s)
		p := newReadOneProduct(ten.ID, "Uncommitted")
		written, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.InTx(context.Background(), func(tx store.Tx) error {
				tt, err := tx.ForTenant(ten.ID)
				if err != nil {
					return err
				}
				if err := tt.Products().Create(context.Background(), p); err != nil {
					return err
				}
				close(written)
				<-release
				return errors.New("roll back")
			})
		}()
		<-written
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := getOne(ctx, s, ten.ID, p.ID)
		close(release)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ReadOne(Products().Get) while a writer holds the lock = %v, want ErrNotFound at once", err)
		}
		<-done
	})
}

// TestReadOne_CancelledRequestDoesNotRead: a one-row read does not watch its context once
// started (poolRow), but one whose request already ended is not run.
func TestReadOne_CancelledRequestDoesNotRead(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, s *sqldb.DB) {
		ten, ps := readOneFixture(t, s, "DW100")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := getOne(ctx, s, ten.ID, ps[0].ID); !errors.Is(err, context.Canceled) {
			t.Errorf("ReadOne(Products().Get) with a cancelled context = %v, want context.Canceled", err)
		}
	})
}

// BenchmarkReadOne is an object's GET through ReadOne on each database: one request at a
// time (serial), and 16 at once per core (parallel), as the device and management reads of
// a large fleet arrive (docs/performance.md, "One-statement reads").
func BenchmarkReadOne(b *testing.B) {
	open := map[string]func(b *testing.B) *sqldb.DB{
		"sqlite": func(b *testing.B) *sqldb.DB {
			s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "moat.db"), time.Now)
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		"postgres": func(b *testing.B) *sqldb.DB {
			s, err := postgres.Open(b.Context(), testenv.FreshPostgresDatabase(b), time.Now)
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) {
			s := open[db](b)
			b.Cleanup(func() { s.Close() })
			ten, ps := readOneFixture(b, s, "DW100")
			read := func() {
				if _, err := getOne(context.Background(), s, ten.ID, ps[0].ID); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					read()
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						read()
					}
				})
			})
		})
	}
}

// readOneQuery runs q through the query path of a one-statement read (which the Go side
// does not check for writes) and reads its rows.
func readOneQuery(t *testing.T, s *sqldb.DB, q string, args ...any) error {
	t.Helper()
	return s.ReadOne(t.Context(), func(tx store.Tx) error {
		rows, err := sqldb.QueryIn(t.Context(), tx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
		}
		return rows.Err()
	})
}
