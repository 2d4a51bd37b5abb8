package sqldb

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

type nonces struct{ t *tx }

// Spend records the nonce with one conditional INSERT, so that two concurrent spenders
// cannot both succeed: the second finds the row (after the first commits, on PostgreSQL)
// and inserts nothing. ON CONFLICT DO NOTHING, not a unique-violation error, keeps a
// PostgreSQL transaction usable for recording the refusal.
func (s nonces) Spend(ctx context.Context, deviceID, nonce string, expires, now time.Time) error {
	r, err := s.t.exec(ctx, `INSERT INTO attestation_nonces (nonce, device_id, expires_at, used_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (nonce) DO NOTHING`, nonce, deviceID, utc(expires), utc(now))
	if err != nil {
		return err
	}
	if affected(r) != nil {
		return store.ErrNonceUsed
	}
	return nil
}

func (s nonces) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	r, err := s.t.exec(ctx, `DELETE FROM attestation_nonces WHERE expires_at < $1`, utc(before))
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}
