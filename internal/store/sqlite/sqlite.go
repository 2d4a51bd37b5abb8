// Package sqlite opens moat's embedded default store: one SQLite file (modernc.org/sqlite,
// pure Go, so CGO_ENABLED=0 builds cross-compile) in write-ahead-log mode with foreign keys
// on. Writers are serialized by SQLite itself (transactions begin IMMEDIATE, with a busy
// timeout), so concurrent requests queue instead of failing. Behaviour is the shared
// sqldb implementation, checked by storetest. Safe for concurrent use.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Open opens (creating if needed) the database file at path and migrates it.
//
// A new file is created with mode 0600 (it holds token hashes and audit records; SQLite
// gives its -wal and -shm files the same mode).
func Open(ctx context.Context, path string, now func() time.Time) (*sqldb.DB, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	f.Close()
	db, err := openPool(ctx, path, "immediate", false)
	if err != nil {
		return nil, err
	}
	// Readers: deferred transactions that never take the write lock (WAL lets them read a
	// snapshot while a writer commits), and query_only so a bug cannot write through them.
	ro, err := openPool(ctx, path, "deferred", true)
	if err != nil {
		db.Close()
		return nil, err
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err == nil {
		var s *sqldb.DB
		if s, err = sqldb.Open(ctx, db, ro, Dialect, sub, now); err == nil {
			return s, nil
		}
	}
	db.Close()
	ro.Close()
	return nil, err
}

// openPool opens a connection pool on the file. Writers begin IMMEDIATE so that two
// read-then-write transactions queue on the busy timeout instead of deadlocking.
func openPool(ctx context.Context, path, txlock string, readOnly bool) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)") // a committed write survives power loss
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	}
	q.Set("_txlock", txlock)
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if !readOnly {
		// One writer connection: SQLite has one write lock anyway, and queueing in the pool
		// is cheaper than spinning on SQLITE_BUSY.
		db.SetMaxOpenConns(1)
	} else {
		// Readers: a fixed set of connections, all kept open. database/sql's default keeps 2
		// idle and opens one per concurrent reader beyond them, so a burst of device checks
		// (issue 15: 2,000 devices woken by one deployment) opened and closed a connection
		// per read, running its pragmas through SQLite's parser each time: 57% of the
		// server's CPU in the load run. WAL readers do not block each other, but reads are
		// CPU-bound: more connections than a few per core only add page caches.
		n := readConns()
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

// readConns is the size of the read pool: four connections per core the Go scheduler uses,
// at least 8.
func readConns() int { return max(8, 4*runtime.GOMAXPROCS(0)) }

// Dialect classifies SQLite errors.
var Dialect = sqldb.Dialect{
	Name:            "sqlite",
	Classify:        classify,
	CacheStatements: true,
	Retryable: func(err error) bool {
		e, ok := errors.AsType[*sqlite.Error](err)
		return ok && (e.Code()&0xff == sqlite3.SQLITE_BUSY || e.Code()&0xff == sqlite3.SQLITE_LOCKED)
	},
}

func classify(err error) error {
	e, ok := errors.AsType[*sqlite.Error](err)
	if !ok {
		return err
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return fmt.Errorf("%w: %w", store.ErrInUse, err)
	}
	return err
}
