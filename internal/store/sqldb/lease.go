package sqldb

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

func (t *tx) Leases() store.Leases { return leases{t} }

type leases struct{ t *tx }

// Acquire is one conditional upsert: the row is written only when it is new or its expiry
// has passed, so of two concurrent claimants the database lets one write and the other
// sees the winner's row (PostgreSQL re-checks the WHERE on the row it waited for; SQLite
// serializes writers).
func (s leases) Acquire(ctx context.Context, name, holder string, now, expires time.Time) (bool, time.Time, error) {
	r, err := s.t.exec(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.expires_at <= $4`, name, holder, utc(expires), utc(now))
	if err != nil {
		return false, time.Time{}, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, time.Time{}, err
	}
	if n == 1 {
		return true, expires, nil
	}
	var until time.Time
	if err := s.t.queryRow(ctx, `SELECT expires_at FROM leases WHERE name = $1`, name).Scan(&until); err != nil {
		return false, time.Time{}, oneRow(err)
	}
	return false, until, nil
}
