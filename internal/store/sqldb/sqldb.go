// Package sqldb implements the store interfaces once, over database/sql, for the SQL
// databases moat supports. store/sqlite and store/postgres open a connection, name their
// Dialect (error classification, migration lock) and embed their own migrations; the queries
// here are the portable subset both accept ($N placeholders, standard types), written by hand.
//
// Every tenant-scoped query filters on tenant_id, bound from the TenantTx that ForTenant
// created: there is no query path that takes a tenant from its caller's arguments
// (rule 3). A DB is safe for concurrent use; a tx is used by one goroutine.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Dialect is what differs between the databases.
type Dialect struct {
	Name string
	// Classify maps a driver error to store.ErrConflict (unique violation), store.ErrInUse
	// (foreign-key violation) or returns it unchanged.
	Classify func(error) error
	// CacheStatements prepares each read-only query once per connection of the read pool
	// (SQLite); off where the driver caches by itself (pgx).
	CacheStatements bool
	// LockMigrations serializes concurrent migrators inside the migration transaction
	// (several replicas starting at once). Nil when the database serializes writers itself.
	LockMigrations func(ctx context.Context, tx *sql.Tx) error
	// Retryable reports errors after which the whole transaction may be retried
	// (serialization failures, busy database).
	Retryable func(error) bool
}

// DB is an open store.
type DB struct {
	db      *sql.DB
	ro      *sql.DB // read-only transactions; the same pool as db unless Open was given one
	dialect Dialect
	stmts   *stmtCache
	roStmts *stmtCache
	// one runs one-statement reads without a transaction (ReadOne): a pool whose
	// connections the database keeps read-only (ro where that is separate, SQLite's; the
	// pool SetOneReadPool gives, PostgreSQL's), or nil to read in a read-only transaction.
	one      *sql.DB
	oneStmts *stmtCache // one's statements: roStmts when one is ro
}

var _ store.Store = (*DB)(nil)

// Open wraps db, runs the migrations from migrations (files named NNNN_name.sql, applied in
// order, each in its own transaction and recorded in schema_migrations), and returns the store.
//
// ro, when not nil, is a separate pool for read-only transactions (SQLite uses one whose
// transactions do not take the write lock), on which one-statement reads also run without
// a transaction (ReadOne), so its connections must refuse writes (SQLite's are query_only);
// Close closes it too.
func Open(ctx context.Context, db, ro *sql.DB, d Dialect, migrations fs.FS, now func() time.Time) (*DB, error) {
	if ro == nil {
		ro = db
	}
	s := &DB{db: db, ro: ro, dialect: d}
	if d.CacheStatements && ro != db {
		// Statements are prepared in the background, by a goroutine that holds no
		// connection while it waits for one (stmtCache.get): the writer pool's one
		// connection is held by the open transaction, and is the goroutine's between two
		// transactions. Kept across transactions, a write statement is parsed once, not
		// once per transaction (issue 15: the group commit of attestations parsed its
		// three statements in every batch, 3% of an attestation).
		s.roStmts = newStmtCache(ro)
		s.stmts = newStmtCache(db)
	}
	if ro != db {
		s.one, s.oneStmts = ro, s.roStmts
	}
	if err := s.migrate(ctx, migrations, now); err != nil {
		return nil, fmt.Errorf("migrate %s schema: %w", d.Name, err)
	}
	return s, nil
}

// Close closes the database.
func (s *DB) Close() error {
	errs := []error{s.stmts.close()}
	if s.ro != s.db {
		errs = append(errs, s.roStmts.close(), s.ro.Close())
	}
	if s.one != nil && s.one != s.ro {
		errs = append(errs, s.oneStmts.close(), s.one.Close())
	}
	return errors.Join(append(errs, s.db.Close())...)
}

// Ping checks that the database answers.
func (s *DB) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// SQL exposes the underlying handle for tests and benchmarks of the store itself.
func (s *DB) SQL() *sql.DB { return s.db }

type migration struct {
	version int
	name    string
	sql     string
}

func readMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		num, _, ok := strings.Cut(n, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", n)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: n, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", ms[i-1].name, ms[i].name, ms[i].version)
		}
	}
	return ms, nil
}

func (s *DB) migrate(ctx context.Context, fsys fs.FS, now func() time.Time) error {
	ms, err := readMigrations(fsys)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := s.apply(ctx, m, now); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

func (s *DB) apply(ctx context.Context, m migration, now func() time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	if s.dialect.LockMigrations != nil {
		if err := s.dialect.LockMigrations(ctx, tx); err != nil {
			return err
		}
	}
	// Under the lock: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against a
	// concurrent creator (two replicas starting at once, one failed with a unique violation
	// on pg_type; TestPostgres_ConcurrentOpen).
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMP NOT NULL)`); err != nil {
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
	if step := migrationSteps[m.version]; step != nil {
		if err := step(ctx, s.migrationTx(tx)); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
		m.version, m.name, now().UTC()); err != nil {
		return err
	}
	return tx.Commit()
}

// migrationTx wraps a migration's transaction for its Go step.
func (s *DB) migrationTx(t *sql.Tx) *tx { return &tx{tx: t, d: s.dialect} }

// maxAttempts bounds retries of a transaction that lost a serialization race.
const maxAttempts = 5

// InTx runs fn in a transaction, retrying it when the database reports a retryable conflict.
func (s *DB) InTx(ctx context.Context, fn func(store.Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		err = s.inTx(ctx, fn)
		if err == nil || s.dialect.Retryable == nil || !s.dialect.Retryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// InReadTx runs fn in a read-only transaction.
func (s *DB) InReadTx(ctx context.Context, fn func(store.Tx) error) error {
	return s.inReadTx(ctx, fn, false)
}

// inReadTx runs fn in a read-only transaction, of one statement only when one is set.
func (s *DB) inReadTx(ctx context.Context, fn func(store.Tx) error, one bool) error {
	opts := &sql.TxOptions{}
	if s.ro == s.db {
		// One pool (PostgreSQL): read-only, and REPEATABLE READ so that every statement sees
		// the first one's snapshot; READ COMMITTED, the default, takes a new snapshot per
		// statement (storetest's ReadTx/SeesOneSnapshot). SQLite's read pool is query_only,
		// and a WAL reader keeps its snapshot until the transaction ends.
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	sqltx, err := s.ro.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin read-only: %w", err)
	}
	defer sqltx.Rollback() // read-only: nothing to keep or lose
	return fn(&tx{tx: sqltx, d: s.dialect, stmts: s.roStmts, one: one})
}

func (s *DB) inTx(ctx context.Context, fn func(store.Tx) error) error {
	sqltx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	t := &tx{tx: sqltx, d: s.dialect, stmts: s.stmts}
	if err := fn(t); err != nil {
		if rerr := sqltx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := sqltx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", s.dialect.Classify(err))
	}
	return nil
}

// tx implements store.Tx.
type tx struct {
	tx    *sql.Tx
	d     Dialect
	stmts *stmtCache // nil: no caching (the driver caches, as pgx does)
	// local holds the statements prepared in this transaction, where the dialect caches
	// statements but the store has no cache for the pool (one pool for reads and writes):
	// a transaction that repeats a query parses it once.
	local map[string]*sql.Stmt
	// one: a one-statement read (ReadOne, readone.go), which refuses a second statement
	// and any write; ran records that its statement ran. pool is set when it runs without a
	// transaction (tx is nil), on the read-only pool.
	one  bool
	ran  bool
	pool *sql.DB
}

// stmt returns q prepared for this transaction. With a cache, each pooled connection parses
// a query once rather than on every call (parsing was a fifth of an authenticated read).
func (t *tx) stmt(ctx context.Context, q string) *sql.Stmt {
	if t.stmts == nil && t.d.CacheStatements {
		if s, ok := t.local[q]; ok {
			return s
		}
		s, err := t.tx.PrepareContext(ctx, q) // closed with the transaction
		if err != nil {
			return nil
		}
		if t.local == nil {
			t.local = map[string]*sql.Stmt{}
		}
		t.local[q] = s
		return s
	}
	if t.stmts == nil {
		return nil
	}
	s := t.stmts.get(q)
	if s == nil {
		return nil // not prepared yet: this once, the query is parsed where it runs
	}
	return t.tx.StmtContext(ctx, s) // a transaction's statements close when it ends
}

// row is one row of a query: *sql.Row, or the refusal of a second statement in a
// one-statement read (errRow).
type row interface{ Scan(dest ...any) error }

func (t *tx) queryRow(ctx context.Context, q string, args ...any) row {
	if t.one {
		if err := t.sole(); err != nil {
			return errRow{err}
		}
		if t.pool != nil {
			return t.poolRow(ctx, q, args...)
		}
	}
	if s := t.stmt(ctx, q); s != nil { //nolint:sqlclosecheck // closed with the transaction
		return s.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if t.one {
		if err := t.sole(); err != nil {
			return nil, err
		}
		if t.pool != nil {
			return t.poolQuery(ctx, q, args...)
		}
	}
	if s := t.stmt(ctx, q); s != nil { //nolint:sqlclosecheck // closed with the transaction; the caller closes the rows
		return s.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

// stmtCache holds one prepared statement per query text for a pool.
//
// A statement missing from it is prepared by a goroutine of its own, never by the
// transaction that asked: preparing takes a connection from the pool, and a transaction
// already holds one, so with the pool bounded (SQLite's readers: sqlite.readConns) and every
// connection held by a transaction waiting to prepare, nobody would ever get one (issue
// 15's load run deadlocked that way: TestStmtCache_PrepareDoesNotWaitForAConnection). The
// transaction runs the query unprepared meanwhile.
type stmtCache struct {
	db        *sql.DB
	mu        sync.Mutex
	m         map[string]*sql.Stmt
	preparing map[string]bool
	closed    bool
	wg        sync.WaitGroup
}

// prepareTimeout bounds a background prepare's wait for a connection.
const prepareTimeout = 30 * time.Second

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sql.Stmt{}, preparing: map[string]bool{}}
}

// get returns q's statement, or nil when it is not prepared yet; then it starts preparing
// it, once.
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.m[q]; ok {
		return s
	}
	if !c.closed && !c.preparing[q] {
		c.preparing[q] = true
		c.wg.Go(func() { c.prepare(q) })
	}
	return nil
}

func (c *stmtCache) prepare(q string) {
	ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
	defer cancel()
	s, err := c.db.PrepareContext(ctx, q) // cached for the pool's life; closed by stmtCache.close
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.preparing, q)
	switch {
	case err != nil:
		// Left unprepared: the next get tries again.
	case c.closed:
		_ = s.Close() //nolint:sqlclosecheck // the cache closed while it was prepared: nobody will use it
	default:
		c.m[q] = s
	}
}

func (c *stmtCache) close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait() // each ends within prepareTimeout
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, s := range c.m {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

func (t *tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if t.one {
		return nil, errReadOneWrite
	}
	var r sql.Result
	var err error
	if s := t.stmt(ctx, q); s != nil { //nolint:sqlclosecheck // closed with the transaction
		r, err = s.ExecContext(ctx, args...)
	} else {
		r, err = t.tx.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return nil, t.d.Classify(err)
	}
	return r, nil
}

func (t *tx) Tenants() store.Tenants { return tenants{t} }
func (t *tx) Users() store.Users     { return users{t} }
func (t *tx) Tokens() store.Tokens   { return tokens{t} }

func (t *tx) PlatformRoots() store.PlatformRoots { return platformRoots{t} }

func (t *tx) PlatformAudit() store.AuditLog { return platformAudit{t} }

func (t *tx) Nonces() store.Nonces { return nonces{t} }

func (t *tx) Devices() store.Devices { return devices{t} }

func (t *tx) PlatformCA() store.PlatformCA { return platformCA{t} }

func (t *tx) ForTenant(id tenant.ID) (store.TenantTx, error) {
	if id == "" {
		return nil, store.ErrNoTenant
	}
	return &tenantTx{tx: t, id: id}, nil
}

type tenantTx struct {
	tx *tx
	id tenant.ID
}

func (t *tenantTx) ID() tenant.ID                    { return t.id }
func (t *tenantTx) Products() store.Products         { return products{t} }
func (t *tenantTx) Groups() store.Groups             { return groups{t} }
func (t *tenantTx) Members() store.Members           { return members{t} }
func (t *tenantTx) SigningKeys() store.SigningKeys   { return signingKeys{t} }
func (t *tenantTx) TUFFiles() store.TUFFiles         { return tufFiles{t} }
func (t *tenantTx) Blobs() store.Blobs               { return blobs{t} }
func (t *tenantTx) Audit() store.AuditLog            { return auditLog{t} }
func (t *tenantTx) Devices() store.TenantDevices     { return tenantDevices{t} }
func (t *tenantTx) DeviceCAs() store.DeviceCAs       { return deviceCAs{t} }
func (t *tenantTx) Certificates() store.Certificates { return certificates{t} }
func (t *tenantTx) Deployments() store.Deployments   { return deployments{t} }

// limit clamps a page size: the API validates it, the store still never runs unbounded.
func limit(p store.Page) int {
	if p.Limit <= 0 || p.Limit > store.MaxLimit {
		return store.MaxLimit
	}
	return p.Limit
}

// oneRow turns "no rows" into store.ErrNotFound.
func oneRow(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// affected returns ErrNotFound when a write touched no row.
func affected(r sql.Result) error {
	n, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// versioned checks an optimistic write that touched no row: missing is ErrNotFound, present
// at another version is ErrStale.
func (t *tx) versioned(ctx context.Context, r sql.Result, exists string, args ...any) error {
	n, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	var c int
	if err := t.queryRow(ctx, exists, args...).Scan(&c); err != nil {
		return err
	}
	if c == 0 {
		return store.ErrNotFound
	}
	return store.ErrStale
}

// fold is the case-insensitive key that name uniqueness is checked on: "DW100" and
// "dw100" are the same product. Computed in Go so both databases agree.
func fold(name string) string { return strings.ToLower(name) }

func utc(t time.Time) time.Time { return t.UTC() }

func nullTime(t *time.Time) sql.NullTime {
	if t == nil {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: t.UTC(), Valid: true}
}

func timePtr(n sql.NullTime) *time.Time {
	if !n.Valid {
		return nil
	}
	t := n.Time.UTC()
	return &t
}
