package cloudstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Support-view sessions of the tenant's staff (internal/cloud/support). The cookie holds
// the session ID, this table only its hash (webui.HashID); the moat token the member
// signed in with is kept sealed by the caller, so that every request can re-check it with
// the security service. This package never sees the ID nor the token in the clear.

// SupportSession is a staff member's session in the support view.
type SupportSession struct {
	IDHash   string
	UserID   string
	UserName string
	Role     string
	// TokenSealed is the member's moat token, sealed by the support view (AES-GCM).
	TokenSealed string
	CreatedAt   time.Time
	LastUsedAt  time.Time
	// ExpiresAt is the absolute end of the session, whatever its use.
	ExpiresAt time.Time
}

// maxSealedTokenBytes bounds a sealed token: a moat token is short; this is generous.
const maxSealedTokenBytes = 1024

func (ss SupportSession) validate() error {
	var errs []error
	if !hashRE.MatchString(ss.IDHash) {
		errs = append(errs, errors.New("id_hash: must be 64 lower-case hex digits"))
	}
	if ss.UserID == "" || CheckText("user_id", ss.UserID, 128, false) != nil {
		errs = append(errs, errors.New("user_id: 1 to 128 bytes of text"))
	}
	if CheckText("user_name", ss.UserName, 256, false) != nil {
		errs = append(errs, errors.New("user_name: at most 256 bytes of text"))
	}
	if ss.Role == "" || len(ss.Role) > 64 {
		errs = append(errs, errors.New("role: 1 to 64 bytes"))
	}
	if ss.TokenSealed == "" || len(ss.TokenSealed) > maxSealedTokenBytes {
		errs = append(errs, fmt.Errorf("token_sealed: 1 to %d bytes", maxSealedTokenBytes))
	}
	if ss.CreatedAt.IsZero() || !ss.ExpiresAt.After(ss.CreatedAt) {
		errs = append(errs, errors.New("expires_at: must be after created_at"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: support session: %w", ErrInvalid, err)
	}
	return nil
}

// CreateSupportSession stores a new session; LastUsedAt starts as CreatedAt.
func (s *Store) CreateSupportSession(ctx context.Context, ss SupportSession) error {
	if err := ss.validate(); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO support_sessions (id_hash, user_id, user_name, role, token_sealed, created_us, last_used_us, expires_us)
			VALUES ($1, $2, $3, $4, $5, $6, $6, $7)`, ss.IDHash, ss.UserID, ss.UserName, ss.Role, ss.TokenSealed, us(ss.CreatedAt), us(ss.ExpiresAt))
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("support session exists already: %w", ErrConflict)
		}
		return err
	})
}

// UseSupportSession returns the session with hash idHash and marks it used at now. A
// session past its absolute expiry, or unused for idle or longer, is deleted and, like an
// unknown one, ErrNotFound.
func (s *Store) UseSupportSession(ctx context.Context, idHash string, now time.Time, idle time.Duration) (SupportSession, error) {
	var ss SupportSession
	if !hashRE.MatchString(idHash) {
		return ss, fmt.Errorf("support session: %w", ErrNotFound)
	}
	gone := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var created, used, expires int64
		err := tx.QueryRowContext(ctx, `SELECT id_hash, user_id, user_name, role, token_sealed, created_us, last_used_us, expires_us
			FROM support_sessions WHERE id_hash = $1`, idHash).
			Scan(&ss.IDHash, &ss.UserID, &ss.UserName, &ss.Role, &ss.TokenSealed, &created, &used, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			gone = true
			return nil
		}
		if err != nil {
			return err
		}
		ss.CreatedAt, ss.LastUsedAt, ss.ExpiresAt = fromUS(created), fromUS(used), fromUS(expires)
		if !now.Before(ss.ExpiresAt) || !now.Before(ss.LastUsedAt.Add(idle)) {
			gone = true
			_, err := tx.ExecContext(ctx, `DELETE FROM support_sessions WHERE id_hash = $1`, idHash)
			return err
		}
		ss.LastUsedAt = now.UTC().Truncate(time.Microsecond)
		_, err = tx.ExecContext(ctx, `UPDATE support_sessions SET last_used_us = $1 WHERE id_hash = $2`, us(now), idHash)
		return err
	})
	if err != nil {
		return SupportSession{}, err
	}
	if gone {
		return SupportSession{}, fmt.Errorf("support session: %w", ErrNotFound)
	}
	return ss, nil
}

// DeleteSupportSession ends the session with hash idHash; an unknown one is no error.
func (s *Store) DeleteSupportSession(ctx context.Context, idHash string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM support_sessions WHERE id_hash = $1`, idHash)
		return err
	})
}

// DeleteStaleSupportSessions deletes the sessions expired at now or idle for idle or
// longer, and returns how many.
func (s *Store) DeleteStaleSupportSessions(ctx context.Context, now time.Time, idle time.Duration) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM support_sessions WHERE expires_us <= $1 OR last_used_us <= $2`, us(now), us(now.Add(-idle)))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
