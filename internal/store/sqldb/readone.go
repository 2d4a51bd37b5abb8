package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/moat-iot/moat/internal/store"
)

// A read of one statement without a transaction (issue 15 item 4).
//
// An authenticated GET of one object reads it with one SELECT. In a read-only transaction
// that SELECT costs three statements on SQLite (BEGIN, the SELECT, ROLLBACK), each with
// the driver's cancellation watcher, plus database/sql's transaction (its context and
// goroutine, the cached statement re-bound to the transaction): together more than half of
// the management API's handler time for the read. On PostgreSQL they are three round trips
// (BEGIN READ ONLY, the SELECT, COMMIT), each holding a connection of the pool while it
// waits: in the 10,000-device load run the server waited on PostgreSQL with half a core
// idle, its device authentications and generation reads queued for the pool. A single
// statement needs none of it to be consistent: SQLite runs a statement outside a
// transaction in a read transaction of its own, on one WAL snapshot from its first step
// until it is reset, and PostgreSQL takes one snapshot per statement. So ReadOne runs that
// statement alone, in one round trip, on a pool whose connections the database keeps
// read-only.
//
// What InReadTx promises still holds for the one statement: one consistent snapshot, never
// waiting for writers, and no writes. No write, because the database refuses it on that
// pool: SQLite's read pool is query_only, and PostgreSQL's pool of one-statement reads
// (postgres.ReadOnlyConns connections) starts each connection with
// default_transaction_read_only=on, checked when it connects, so that the implicit
// transaction of a lone statement is read-only there; a DELETE ... RETURNING, or a SELECT
// of a function that writes, fails in the database (TestReadOne_DatabaseRefusesWrites).
// The one-statement read also refuses exec and the console's DELETE ... RETURNING before
// they reach the database (errReadOneWrite, TestReadOne_RefusesWrites). A second
// statement, which would see another snapshot than the first, is refused
// (errSecondStatement) rather than run: a caller that needs two reads to agree uses InReadTx
// (TestReadOne_RefusesSecondStatement). Tenant scoping is ForTenant's as in any transaction
// (TestReadOne_IsTenantScoped). TestReadOne_PostgresRunsWithoutTransaction shows that no
// transaction stays open on PostgreSQL once the statement's rows are read.
//
// Read-only transactions (InReadTx) stay on their pool (PostgreSQL: the store's pool, in
// READ ONLY REPEATABLE READ transactions): they hold a connection for several statements
// and whatever their caller does between them, and would starve the short reads if they
// shared the small pool. A store given no such pool (sqldb.Open without a separate read
// pool, as the migration tests open one) reads in a read-only transaction instead, with
// the same refusal of a second statement, so that code which passes on one passes on the
// other.

var (
	// errSecondStatement: a one-statement read ran a second statement.
	errSecondStatement = errors.New("sqldb: a one-statement read ran a second statement (use InReadTx)")
	// errReadOneWrite: a one-statement read tried to write.
	errReadOneWrite = errors.New("sqldb: write in a one-statement read")
)

// ReadOne runs fn, which reads with exactly one statement, on the snapshot of that
// statement: without a transaction where the store has a pool of read-only connections
// (SQLite's read pool, PostgreSQL's from SetOneReadPool), in a read-only one otherwise. A
// second statement or a write in fn fails.
func (s *DB) ReadOne(ctx context.Context, fn func(store.Tx) error) error {
	if s.one == nil {
		return s.inReadTx(ctx, fn, true)
	}
	return fn(&tx{d: s.dialect, stmts: s.oneStmts, one: true, pool: s.one})
}

// SetOneReadPool makes one-statement reads run without a transaction on one, a pool whose
// connections the database itself keeps read-only (PostgreSQL's
// default_transaction_read_only), rather than in a read-only transaction on the store's
// pool. Read-only transactions stay where they were: they hold their connection for
// several statements and for whatever the caller does between them. Call it before the
// store is used; Close closes one.
func (s *DB) SetOneReadPool(one *sql.DB) {
	s.one = one
	if s.dialect.CacheStatements {
		s.oneStmts = newStmtCache(one)
	}
}

// errRow is a row whose statement was refused.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// sole marks the statement of a one-statement read, refusing a second one.
func (t *tx) sole() error {
	if t.ran {
		return errSecondStatement
	}
	t.ran = true
	return nil
}

// poolRow runs the statement of a one-statement read on the read pool, prepared on the
// connection when the pool's cache holds it.
//
// One row is read without watching ctx once it started: watching costs two goroutines and
// a context per statement (database/sql's for the rows, the driver's to interrupt SQLite),
// a third of what was left of the read, to be able to stop a lookup that ends within
// microseconds anyway. A request cancelled before its read does not read
// (TestReadOne_CancelledRequestDoesNotRead); its wait for a pooled connection is as long as
// the reads ahead of it take. A statement of many rows (poolQuery) stays interruptible.
func (t *tx) poolRow(ctx context.Context, q string, args ...any) row {
	if err := ctx.Err(); err != nil {
		return errRow{err}
	}
	ctx = context.WithoutCancel(ctx)
	if s := t.cached(q); s != nil { //nolint:sqlclosecheck // the pool's statement, closed with the store
		return s.QueryRowContext(ctx, args...)
	}
	return t.pool.QueryRowContext(ctx, q, args...)
}

func (t *tx) poolQuery(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if s := t.cached(q); s != nil { //nolint:sqlclosecheck // the pool's statement, closed with the store
		return s.QueryContext(ctx, args...)
	}
	return t.pool.QueryContext(ctx, q, args...)
}

// cached is the pool's statement for q, or nil while it is not prepared yet (or the pool
// caches none).
func (t *tx) cached(q string) *sql.Stmt {
	if t.stmts == nil {
		return nil
	}
	return t.stmts.get(q)
}
