package cloudstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// What the owners' portal needs to authenticate owners (internal/cloud/owners): one-time
// mailed tokens, portal sessions and the per-account sign-in counters. As everywhere in
// this package, tokens and session IDs arrive only as their hashes.

// Owner token purposes.
const (
	TokenVerify = "verify"
	TokenReset  = "reset"
)

// OwnerToken is a one-time token mailed to an owner, stored as its SHA-256.
type OwnerToken struct {
	Hash      string
	OwnerID   int64
	Purpose   string
	CreatedAt time.Time
	ExpiresAt time.Time
}

func (t OwnerToken) validate() error {
	var errs []error
	if !hashRE.MatchString(t.Hash) {
		errs = append(errs, errors.New("hash: must be 64 lower-case hex digits"))
	}
	if t.OwnerID <= 0 {
		errs = append(errs, errors.New("owner: required"))
	}
	if t.Purpose != TokenVerify && t.Purpose != TokenReset {
		errs = append(errs, errors.New("purpose: must be verify or reset"))
	}
	if t.CreatedAt.IsZero() || !t.ExpiresAt.After(t.CreatedAt) {
		errs = append(errs, errors.New("created_at, expires_at: required, expiry after creation"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: owner token: %w", ErrInvalid, err)
	}
	return nil
}

// CreateOwnerToken stores a token and enqueues the outbox items that mail it, in one
// transaction: a token is never stored without its mail, nor mailed without being stored.
func (s *Store) CreateOwnerToken(ctx context.Context, t OwnerToken, mail ...OutboxItem) error {
	if err := t.validate(); err != nil {
		return err
	}
	for _, it := range mail {
		if err := it.validate(); err != nil {
			return err
		}
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO owner_tokens (hash, owner_id, purpose, created_us, expires_us) VALUES ($1, $2, $3, $4, $5)`,
			t.Hash, t.OwnerID, t.Purpose, us(t.CreatedAt), us(t.ExpiresAt))
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("owner token: %w", ErrConflict)
		}
		if err != nil {
			return err
		}
		return s.enqueue(ctx, tx, t.CreatedAt, 0, mail)
	})
}

// CountOwnerTokens counts owner's tokens of purpose made at or after since (to bound how
// often a verification mail is sent again).
func (s *Store) CountOwnerTokens(ctx context.Context, owner int64, purpose string, since time.Time) (int, error) {
	var n int
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM owner_tokens WHERE owner_id = $1 AND purpose = $2 AND created_us >= $3`,
			owner, purpose, us(since)).Scan(&n)
	})
	return n, err
}

// VerifyOwner spends the unused, unexpired verify token with hash at at and marks its
// owner verified (once: a verified owner stays verified from the first time). An unknown,
// used or expired token is ErrNotFound.
func (s *Store) VerifyOwner(ctx context.Context, hash string, at time.Time) (Owner, error) {
	if !hashRE.MatchString(hash) || at.IsZero() {
		return Owner{}, fmt.Errorf("owner token: %w", ErrNotFound)
	}
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `UPDATE owner_tokens SET used_us = $1
			WHERE hash = $2 AND purpose = $3 AND used_us IS NULL AND expires_us > $1 RETURNING owner_id`, us(at), hash, TokenVerify).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("owner token: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE owners SET verified_us = $1 WHERE id = $2 AND verified_us IS NULL`, us(at), id)
		return err
	})
	if err != nil {
		return Owner{}, err
	}
	return s.GetOwner(ctx, id)
}

// RecordSignInFailure counts a wrong password for owner id in one transaction and sets
// its lock to lock(failures), the policy of the caller given the new count (zero: no
// lock). It returns the owner as updated.
func (s *Store) RecordSignInFailure(ctx context.Context, id int64, lock func(failures int) time.Time) (Owner, error) {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var n int
		err := tx.QueryRowContext(ctx, `UPDATE owners SET failed_signins = failed_signins + 1 WHERE id = $1 RETURNING failed_signins`, id).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("owner: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		until := int64(0)
		if t := lock(n); !t.IsZero() {
			until = us(t)
		}
		_, err = tx.ExecContext(ctx, `UPDATE owners SET locked_until_us = $1 WHERE id = $2`, until, id)
		return err
	})
	if err != nil {
		return Owner{}, err
	}
	return s.GetOwner(ctx, id)
}

// RecordSignIn clears owner id's failure count and lock after a right password.
func (s *Store) RecordSignIn(ctx context.Context, id int64) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE owners SET failed_signins = 0, locked_until_us = 0 WHERE id = $1`, id)
		return err
	})
}

// CountAppliances returns how many appliances owner owns.
func (s *Store) CountAppliances(ctx context.Context, owner int64) (int, error) {
	var n int
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM appliances WHERE owner_id = $1`, owner).Scan(&n)
	})
	return n, err
}

// PortalSession is an owner's portal session, keyed by the hash of its cookie's ID.
type PortalSession struct {
	IDHash     string
	OwnerID    int64
	CreatedAt  time.Time
	LastUsedAt time.Time
	// ExpiresAt is the absolute end of the session, however active it is.
	ExpiresAt time.Time
}

// CreatePortalSession stores a new session.
func (s *Store) CreatePortalSession(ctx context.Context, p PortalSession) error {
	if !hashRE.MatchString(p.IDHash) || p.OwnerID <= 0 || p.CreatedAt.IsZero() || !p.ExpiresAt.After(p.CreatedAt) {
		return fmt.Errorf("%w: portal session: id hash, owner, creation and a later expiry required", ErrInvalid)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO portal_sessions (id_hash, owner_id, created_us, last_used_us, expires_us) VALUES ($1, $2, $3, $3, $4)`,
			p.IDHash, p.OwnerID, us(p.CreatedAt), us(p.ExpiresAt))
		return err
	})
}

// UsePortalSession returns the session with hash idHash and records its use at at. A
// session past its absolute expiry, or unused for idle or longer, is deleted and
// ErrNotFound, as is an unknown one.
func (s *Store) UsePortalSession(ctx context.Context, idHash string, at time.Time, idle time.Duration) (PortalSession, error) {
	p := PortalSession{IDHash: idHash}
	ended := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ended = false
		var created, last, expires int64
		err := tx.QueryRowContext(ctx, `SELECT owner_id, created_us, last_used_us, expires_us FROM portal_sessions WHERE id_hash = $1`, idHash).
			Scan(&p.OwnerID, &created, &last, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("portal session: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		if us(at) >= expires || us(at)-last >= idle.Microseconds() {
			if _, err := tx.ExecContext(ctx, `DELETE FROM portal_sessions WHERE id_hash = $1`, idHash); err != nil {
				return err
			}
			// Commit the deletion; the caller hears ErrNotFound after it.
			ended = true
			return nil
		}
		p.CreatedAt, p.LastUsedAt, p.ExpiresAt = fromUS(created), fromUS(us(at)), fromUS(expires)
		_, err = tx.ExecContext(ctx, `UPDATE portal_sessions SET last_used_us = $1 WHERE id_hash = $2 AND last_used_us < $1`, us(at), idHash)
		return err
	})
	if err == nil && ended {
		return PortalSession{}, fmt.Errorf("portal session expired: %w", ErrNotFound)
	}
	return p, err
}

// DeletePortalSession ends the session with hash idHash (no error when there is none).
func (s *Store) DeletePortalSession(ctx context.Context, idHash string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM portal_sessions WHERE id_hash = $1`, idHash)
		return err
	})
}

// PruneOwnerAuth deletes portal sessions past their expiry or idle since before idleBefore,
// and owner tokens expired before now, and returns how many rows it deleted.
func (s *Store) PruneOwnerAuth(ctx context.Context, now, idleBefore time.Time) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM portal_sessions WHERE expires_us <= $1 OR last_used_us <= $2`, us(now), us(idleBefore))
		if err != nil {
			return err
		}
		a, _ := res.RowsAffected()
		res, err = tx.ExecContext(ctx, `DELETE FROM owner_tokens WHERE expires_us <= $1`, us(now))
		if err != nil {
			return err
		}
		b, _ := res.RowsAffected()
		n = a + b
		return nil
	})
	return n, err
}
