package sqlite

import (
	"context"
	"database/sql"
)

// OpenPool opens a connection pool on the SQLite file at path with the store's pragmas
// (WAL, synchronous FULL, busy timeout, foreign keys): for writing, one connection whose
// transactions begin IMMEDIATE; for reading, an unbounded pool of query_only connections
// whose transactions never take the write lock. Another database of moat's (the cloud's,
// internal/cloud/cloudstore) opens its file the same way; it runs its own migrations.
func OpenPool(ctx context.Context, path string, readOnly bool) (*sql.DB, error) {
	if readOnly {
		return openPool(ctx, path, "deferred", true)
	}
	return openPool(ctx, path, "immediate", false)
}
