// Package postgres opens moat's scale-out store on PostgreSQL through pgx v5 (its
// database/sql adapter, so the one sqldb implementation serves both databases). Several
// stateless moat server replicas may share one database: migrations take an advisory lock,
// and transactions that lose a serialization race are retried. Safe for concurrent use.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key that serializes migrators ("moat" in ASCII).
const migrationLock = 0x6d6f6174

// Open connects to the database named by dsn (a postgres:// URL or key=value string) and
// migrates it.
func Open(ctx context.Context, dsn string, now func() time.Time) (*sqldb.DB, error) {
	cfg, err := pgconnConfig(dsn)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(Conns)
	db.SetMaxIdleConns(Conns / 2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	ro := openReadOnly(cfg)
	fail := func(err error) (*sqldb.DB, error) {
		db.Close()
		ro.Close()
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("connect to postgres: %w", err))
	}
	if err := ro.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("connect to postgres (read-only pool): %w", err))
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fail(err)
	}
	s, err := sqldb.Open(ctx, db, nil, Dialect, sub, now)
	if err != nil {
		return fail(err)
	}
	s.SetOneReadPool(ro)
	return s, nil
}

// Conns and ReadOnlyConns bound a replica's two pools: Conns for transactions (writes, and
// reads that run several statements), ReadOnlyConns for one-statement reads
// (sqldb.DB.ReadOne). With the notifier's two connections (internal/store/postgres/notify)
// a replica opens at most Conns+ReadOnlyConns+2 connections (docs/operations.md).
const (
	Conns = 20
	// ReadOnlyConns: a one-statement read holds its connection for one round trip, and it
	// never waits for a lock (it writes nothing, and a snapshot read does not wait for
	// writers), so a connection is busy only while PostgreSQL runs the statement and sends
	// its rows: more connections than the database has cores to run them on only queue
	// there instead of here. 10 serve the reads of a 10,000-device fleet (authentication,
	// update checks, the management API's GETs: a few thousand a second) with reads of a
	// millisecond each, and keep one replica's connections within a third of PostgreSQL's
	// default max_connections (100). All are kept open: a pool that closed its idle ones
	// would connect again per burst (SQLite's read pool did, issue 15's first load runs).
	ReadOnlyConns = 10
)

// openReadOnly opens the pool of one-statement reads: its connections start with
// default_transaction_read_only=on, so PostgreSQL itself refuses any write on them (an
// INSERT, a DELETE ... RETURNING, a SELECT of a function that writes, nextval), as SQLite
// refuses one on its query_only read pool. A statement runs there without BEGIN and COMMIT:
// one round trip instead of three. The setting is a startup parameter that pgx sends for
// each connection; a connection where it did not take (a pooler that drops startup
// parameters) is refused (checkReadOnly), never used to read.
func openReadOnly(cfg *pgx.ConnConfig) *sql.DB {
	rc := cfg.Copy()
	if rc.RuntimeParams == nil {
		rc.RuntimeParams = map[string]string{}
	}
	rc.RuntimeParams["default_transaction_read_only"] = "on" // over one the DSN may name
	ro := stdlib.OpenDB(*rc, stdlib.OptionAfterConnect(checkReadOnly))
	ro.SetMaxOpenConns(ReadOnlyConns)
	ro.SetMaxIdleConns(ReadOnlyConns)
	ro.SetConnMaxIdleTime(5 * time.Minute)
	return ro
}

// checkReadOnly fails unless conn's transactions, its implicit one-statement ones included,
// are read-only.
func checkReadOnly(ctx context.Context, conn *pgx.Conn) error {
	var on string
	if err := conn.QueryRow(ctx, `SELECT current_setting('default_transaction_read_only')`).Scan(&on); err != nil {
		return fmt.Errorf("check read-only connection: %w", err)
	}
	if on != "on" {
		return errors.New("postgres: default_transaction_read_only did not take on a read-only pool's connection " +
			"(a connection pooler that drops startup parameters?)")
	}
	return nil
}

// Dialect classifies PostgreSQL errors.
var Dialect = sqldb.Dialect{
	Name:     "postgres",
	Classify: classify,
	LockMigrations: func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock)
		return err
	},
	Retryable: func(err error) bool {
		e, ok := errors.AsType[*pgconn.PgError](err)
		return ok && (e.Code == "40001" || e.Code == "40P01") // serialization failure, deadlock
	},
}

func classify(err error) error {
	e, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return err
	}
	switch e.Code {
	case "23505": // unique_violation
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case "23503": // foreign_key_violation
		return fmt.Errorf("%w: %w", store.ErrInUse, err)
	}
	return err
}
