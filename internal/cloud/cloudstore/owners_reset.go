package cloudstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ResetOwnerPassword spends the unused, unexpired reset token with hash at at and, in the
// same transaction, gives its owner the new password hash, clears their failed sign-ins
// and lock, ends every portal session of theirs (a session stolen before the reset ends
// with it), spends their other unused reset tokens (an older link mailed to the same
// address works no more) and marks the address verified (following the link proves the
// owner reads its mail). It returns the owner as updated. An unknown, used, expired or
// verify token is ErrNotFound; a malformed password hash is ErrInvalid. Attacked by
// TestSQLite_OwnerReset and TestPostgres_OwnerReset.
func (s *Store) ResetOwnerPassword(ctx context.Context, hash, passwordHash string, at time.Time) (Owner, error) {
	if !hashRE.MatchString(hash) || at.IsZero() {
		return Owner{}, fmt.Errorf("owner token: %w", ErrNotFound)
	}
	if !strings.HasPrefix(passwordHash, "$argon2id$") || len(passwordHash) > 256 {
		return Owner{}, fmt.Errorf("%w: password_hash: must be an argon2id PHC string", ErrInvalid)
	}
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `UPDATE owner_tokens SET used_us = $1
			WHERE hash = $2 AND purpose = $3 AND used_us IS NULL AND expires_us > $1 RETURNING owner_id`, us(at), hash, TokenReset).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("owner token: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE owner_tokens SET used_us = $1 WHERE owner_id = $2 AND purpose = $3 AND used_us IS NULL`,
			us(at), id, TokenReset); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE owners SET password_hash = $1, failed_signins = 0, locked_until_us = 0,
			verified_us = COALESCE(verified_us, $2) WHERE id = $3`, passwordHash, us(at), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM portal_sessions WHERE owner_id = $1`, id)
		return err
	})
	if err != nil {
		return Owner{}, err
	}
	return s.GetOwner(ctx, id)
}

// OwnerByResetToken returns the owner of the unused reset token with hash, unexpired at
// at, without spending it. Anything else is ErrNotFound.
func (s *Store) OwnerByResetToken(ctx context.Context, hash string, at time.Time) (Owner, error) {
	if !hashRE.MatchString(hash) || at.IsZero() {
		return Owner{}, fmt.Errorf("owner token: %w", ErrNotFound)
	}
	var id int64
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT owner_id FROM owner_tokens
			WHERE hash = $1 AND purpose = $2 AND used_us IS NULL AND expires_us > $3`, hash, TokenReset, us(at)).Scan(&id)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Owner{}, fmt.Errorf("owner token: %w", ErrNotFound)
	}
	if err != nil {
		return Owner{}, err
	}
	return s.GetOwner(ctx, id)
}
