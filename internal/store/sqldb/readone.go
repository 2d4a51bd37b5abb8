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
// the management API's handler time for the read. A single statement needs none of it to
// be consistent: SQLite runs a statement outside a transaction in a read transaction of its
// own, on one WAL snapshot from its first step until it is reset, and PostgreSQL takes one
// snapshot per statement. So ReadOne runs that statement on the read pool directly.
//
// What InReadTx promises still holds for the one statement: one consistent snapshot, never
// waiting for writers, and no writes. SQLite's read pool is query_only (a write fails in the
// database), and a one-statement read refuses exec and the console's DELETE ... RETURNING
// before they reach it (errReadOneWrite). A second statement, which would see another
// snapshot than the first, is refused (errSecondStatement) rather than run: a caller that
// needs two reads to agree uses InReadTx. Attacked by TestReadOne_RefusesSecondStatement
// and TestReadOne_RefusesWrites; tenant scoping is ForTenant's as in any transaction
// (TestReadOne_IsTenantScoped).
//
// Where there is no separate read-only pool (PostgreSQL: one pool, whose connections write),
// ReadOne runs in a read-only transaction as InReadTx does, since that is what refuses a
// write there; it refuses a second statement all the same, so that code which passes on
// one database passes on the other.

var (
	// errSecondStatement: a one-statement read ran a second statement.
	errSecondStatement = errors.New("sqldb: a one-statement read ran a second statement (use InReadTx)")
	// errReadOneWrite: a one-statement read tried to write.
	errReadOneWrite = errors.New("sqldb: write in a one-statement read")
)

// ReadOne runs fn, which reads with exactly one statement, on the snapshot of that
// statement: without a transaction where the store has a read-only pool (SQLite), in a
// read-only one otherwise. A second statement or a write in fn fails.
func (s *DB) ReadOne(ctx context.Context, fn func(store.Tx) error) error {
	if s.ro == s.db {
		return s.inReadTx(ctx, fn, true)
	}
	return fn(&tx{d: s.dialect, stmts: s.roStmts, one: true, pool: s.ro})
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
