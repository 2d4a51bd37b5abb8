// Package cloudstore is the database of `moat cloud`, the tenant's own telemetry cloud:
// devices as the broker saw them connect, raw readings, per-cycle and hourly summaries,
// events, alerts and remote diagnostics. It is separate from the security service's store
// and trusts nothing but its callers: the ingest (internal/cloud/ingest) writes what
// devices published after decoding it with internal/telemetry, and WriteBatch validates it
// again, so bad input changes nothing.
//
// SQLite (modernc.org/sqlite, with internal/store/sqlite's pragmas: WAL, synchronous FULL,
// busy timeout, one writer) is the default; PostgreSQL (pgx) the scale-out choice. One
// implementation over database/sql serves both; each dialect has its own embedded
// migrations. Times are stored as microseconds since the epoch. Retention deletes raw rows
// and summaries by the cloud's clock (when a row was received or last updated), never by
// a device's, so a device with a wrong clock cannot keep its rows forever.
//
// Idempotency: every stored stream message is recorded by its JetStream sequence in the
// same transaction as its rows, so a message redelivered after a crash between commit
// and ack is stored once (attacked by TestIngest_StoresRedeliveredMessageOnce and
// storetest's duplicate batch case).
//
// A *Store is safe for concurrent use. Stores never call time.Now: callers pass times.
package cloudstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	moatsqlite "github.com/moat-iot/moat/internal/store/sqlite"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such alert, diagnostic or device.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the row exists already or is not in the state the change needs (a second
	// open alert of a rule on a device, a diagnostic that finished already).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input breaks a rule; nothing was written.
	ErrInvalid = errors.New("invalid input")
)

//go:embed migrations
var migrations embed.FS

// Databases Config.Database names.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Config chooses the database.
type Config struct {
	// Database is SQLite or Postgres.
	Database string
	// SQLitePath is the database file (created with mode 0600 when missing).
	SQLitePath string
	// PostgresDSN is a postgres:// URL or key=value string. It may hold a password; it is
	// never logged or echoed in errors.
	PostgresDSN string
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	switch c.Database {
	case SQLite:
		if c.SQLitePath == "" {
			errs = append(errs, errors.New("sqlite_path: required for the sqlite database"))
		}
	case Postgres:
		if c.PostgresDSN == "" {
			errs = append(errs, errors.New("postgres_dsn: required for the postgres database"))
		}
	default:
		errs = append(errs, fmt.Errorf("database: must be %q or %q, not %q", SQLite, Postgres, c.Database))
	}
	return errors.Join(errs...)
}

// Open opens the database c names and migrates it.
func Open(ctx context.Context, c Config) (*Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Database == Postgres {
		return OpenPostgres(ctx, c.PostgresDSN)
	}
	return OpenSQLite(ctx, c.SQLitePath)
}

// Store is the cloud's database.
type Store struct {
	db *sql.DB // writes (SQLite: one connection)
	ro *sql.DB // reads (SQLite: query_only connections; PostgreSQL: db)
	d  dialect
}

type dialect struct {
	name              string
	least, greatest   string
	retryable         func(error) bool
	uniqueViolation   func(error) bool
	foreignKeyFailure func(error) bool
}

var sqliteDialect = dialect{
	name: SQLite, least: "MIN", greatest: "MAX",
	retryable: func(err error) bool {
		e, ok := errors.AsType[*sqlite.Error](err)
		return ok && (e.Code()&0xff == sqlite3.SQLITE_BUSY || e.Code()&0xff == sqlite3.SQLITE_LOCKED)
	},
	uniqueViolation: func(err error) bool {
		e, ok := errors.AsType[*sqlite.Error](err)
		return ok && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
	},
	foreignKeyFailure: func(err error) bool {
		e, ok := errors.AsType[*sqlite.Error](err)
		return ok && e.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	},
}

var postgresDialect = dialect{
	name: Postgres, least: "LEAST", greatest: "GREATEST",
	retryable: func(err error) bool {
		e, ok := errors.AsType[*pgconn.PgError](err)
		return ok && (e.Code == "40001" || e.Code == "40P01") // serialization failure, deadlock
	},
	uniqueViolation: func(err error) bool {
		e, ok := errors.AsType[*pgconn.PgError](err)
		return ok && e.Code == "23505"
	},
	foreignKeyFailure: func(err error) bool {
		e, ok := errors.AsType[*pgconn.PgError](err)
		return ok && e.Code == "23503"
	},
}

// OpenSQLite opens (creating if needed) the SQLite database at path and migrates it.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	// Create the file 0600 first: SQLite would create it with the umask's mode.
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	db, err := moatsqlite.OpenPool(ctx, path, false)
	if err != nil {
		return nil, err
	}
	ro, err := moatsqlite.OpenPool(ctx, path, true)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, ro: ro, d: sqliteDialect}
	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// OpenPostgres connects to the PostgreSQL database dsn names and migrates it.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("parse postgres connection string: invalid format") // the DSN may hold a password
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(10)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s := &Store{db: db, ro: db, d: postgresDialect}
	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if s.ro != s.db {
		return errors.Join(s.ro.Close(), s.db.Close())
	}
	return s.db.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Dialect names the database: SQLite or Postgres.
func (s *Store) Dialect() string { return s.d.name }

// migrationLock is the advisory lock key that serializes PostgreSQL migrators ("mcld").
const migrationLock = 0x6d636c64

type migration struct {
	version int
	name    string
	sql     string
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := readMigrations(s.d.name)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := s.inTx(ctx, func(tx *sql.Tx) error { return s.apply(ctx, tx, m) }); err != nil {
			return fmt.Errorf("migrate %s schema to %04d_%s: %w", s.d.name, m.version, m.name, err)
		}
	}
	return nil
}

func readMigrations(dialect string) ([]migration, error) {
	dir := "migrations/" + dialect
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok {
			continue
		}
		num, rest, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(migrations, dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: rest, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: versions must run 1, 2, 3, ... without gaps", m.version, m.name)
		}
	}
	return ms, nil
}

func (s *Store) apply(ctx context.Context, tx *sql.Tx, m migration) error {
	if s.d.name == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL)`); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
	return err
}

// maxAttempts bounds the retries of a transaction that lost a deadlock or serialization
// race (PostgreSQL with several cloud replicas) or found the SQLite file busy.
const maxAttempts = 5

// inTx runs fn in a write transaction, retrying it when the database says so.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	var err error
	for range maxAttempts {
		err = s.inTxOnce(ctx, s.db, nil, fn)
		if err == nil || !s.d.retryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// inReadTx runs fn in a read-only transaction on one snapshot.
func (s *Store) inReadTx(ctx context.Context, fn func(*sql.Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if s.d.name == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	} else {
		opts = nil // the read pool is query_only already
	}
	return s.inTxOnce(ctx, s.ro, opts, fn)
}

func (s *Store) inTxOnce(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return f.Close()
}

// us and fromUS convert times to and from the stored microseconds.
func us(t time.Time) int64 { return t.UnixMicro() }

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullUS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromUS(v.Int64)
}

// seqArg and seqOf convert stream sequences to and from the database's BIGINT; Record
// validation keeps them at most 2^63-1.
func seqArg(seq uint64) int64 { return int64(seq & math.MaxInt64) }

func seqOf(v int64) uint64 { return uint64(max(v, 0)) }

// placeholders returns "$from, $from+1, ..." for n values.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}
