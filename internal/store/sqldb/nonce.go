package sqldb

import (
	"context"
	"database/sql"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

type nonces struct{ t *tx }

func (s nonces) Issue(ctx context.Context, deviceID, nonce string, expires time.Time) error {
	_, err := s.t.exec(ctx, `INSERT INTO attestation_nonces (nonce, device_id, expires_at, used_at) VALUES ($1, $2, $3, NULL)`,
		nonce, deviceID, utc(expires))
	return err
}

// Consume marks the nonce used with one conditional UPDATE, so that two concurrent
// consumers cannot both succeed; when it changes no row, a read says why.
func (s nonces) Consume(ctx context.Context, deviceID, nonce string, now time.Time) error {
	r, err := s.t.exec(ctx, `UPDATE attestation_nonces SET used_at = $1
		WHERE nonce = $2 AND device_id = $3 AND used_at IS NULL AND expires_at > $1`, utc(now), nonce, deviceID)
	if err != nil {
		return err
	}
	if affected(r) == nil {
		return nil
	}
	var expires time.Time
	var used sql.NullTime
	err = s.t.queryRow(ctx, `SELECT expires_at, used_at FROM attestation_nonces WHERE nonce = $1 AND device_id = $2`,
		nonce, deviceID).Scan(&expires, &used)
	switch {
	case err != nil:
		return oneRow(err)
	case used.Valid:
		return store.ErrNonceUsed
	default:
		return store.ErrExpired
	}
}

func (s nonces) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	r, err := s.t.exec(ctx, `DELETE FROM attestation_nonces WHERE expires_at < $1`, utc(before))
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}
