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
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(10)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		db.Close()
		return nil, err
	}
	s, err := sqldb.Open(ctx, db, nil, Dialect, sub, now)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
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
