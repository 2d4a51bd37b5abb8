package sqldb

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

func (t *tx) ConsoleSessions() store.ConsoleSessions { return consoleSessions{t} }

type consoleSessions struct{ t *tx }

const consoleSessionCols = `id_hash, user_id, token_id, csrf_secret, created_at, last_used_at, expires_at`

func (s consoleSessions) Create(ctx context.Context, cs store.ConsoleSession, maxPerUser int) error {
	if _, err := s.t.exec(ctx, `INSERT INTO console_sessions (`+consoleSessionCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		cs.IDHash, cs.UserID, cs.TokenID, cs.CSRFSecret, utc(cs.CreatedAt), utc(cs.LastUsedAt), utc(cs.ExpiresAt)); err != nil {
		return err
	}
	_, err := s.t.exec(ctx, `DELETE FROM console_sessions WHERE user_id = $1 AND id_hash NOT IN (
		SELECT id_hash FROM console_sessions WHERE user_id = $1 ORDER BY created_at DESC, id_hash DESC LIMIT $2)`,
		cs.UserID, maxPerUser)
	return err
}

func (s consoleSessions) Get(ctx context.Context, idHash string) (store.ConsoleSession, error) {
	var cs store.ConsoleSession
	err := s.t.queryRow(ctx, `SELECT `+consoleSessionCols+` FROM console_sessions WHERE id_hash = $1`, idHash).Scan(
		&cs.IDHash, &cs.UserID, &cs.TokenID, &cs.CSRFSecret, &cs.CreatedAt, &cs.LastUsedAt, &cs.ExpiresAt)
	cs.CreatedAt, cs.LastUsedAt, cs.ExpiresAt = cs.CreatedAt.UTC(), cs.LastUsedAt.UTC(), cs.ExpiresAt.UTC()
	return cs, oneRow(err)
}

func (s consoleSessions) Touch(ctx context.Context, idHash string, at time.Time) error {
	r, err := s.t.exec(ctx, `UPDATE console_sessions SET last_used_at = $1 WHERE id_hash = $2`, utc(at), idHash)
	if err != nil {
		return err
	}
	return affected(r)
}

func (s consoleSessions) Delete(ctx context.Context, idHash string) error {
	r, err := s.t.exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash)
	if err != nil {
		return err
	}
	return affected(r)
}

func (s consoleSessions) DeleteExpired(ctx context.Context, now, idleBefore time.Time) (int64, error) {
	r, err := s.t.exec(ctx, `DELETE FROM console_sessions WHERE expires_at <= $1 OR last_used_at <= $2`, utc(now), utc(idleBefore))
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, err
	}
	r, err = s.t.exec(ctx, `DELETE FROM console_sign_in_links WHERE expires_at <= $1`, utc(now))
	if err != nil {
		return 0, err
	}
	m, err := r.RowsAffected()
	return n + m, err
}

func (s consoleSessions) CreateLink(ctx context.Context, l store.SignInLink, maxPerUser int) error {
	if _, err := s.t.exec(ctx, `INSERT INTO console_sign_in_links (code_hash, user_id, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		l.CodeHash, l.UserID, l.TokenID, utc(l.CreatedAt), utc(l.ExpiresAt)); err != nil {
		return err
	}
	_, err := s.t.exec(ctx, `DELETE FROM console_sign_in_links WHERE user_id = $1 AND code_hash NOT IN (
		SELECT code_hash FROM console_sign_in_links WHERE user_id = $1 ORDER BY created_at DESC, code_hash DESC LIMIT $2)`,
		l.UserID, maxPerUser)
	return err
}

// ConsumeLink deletes and returns in one statement, so of two concurrent consumers the
// database lets one delete the row and the other finds none.
func (s consoleSessions) ConsumeLink(ctx context.Context, codeHash string, now time.Time) (store.SignInLink, error) {
	l := store.SignInLink{CodeHash: codeHash}
	if s.t.one {
		return store.SignInLink{}, errReadOneWrite
	}
	err := s.t.tx.QueryRowContext(ctx, `DELETE FROM console_sign_in_links WHERE code_hash = $1 AND expires_at > $2
		RETURNING user_id, token_id, created_at, expires_at`, codeHash, utc(now)).Scan(&l.UserID, &l.TokenID, &l.CreatedAt, &l.ExpiresAt)
	l.CreatedAt, l.ExpiresAt = l.CreatedAt.UTC(), l.ExpiresAt.UTC()
	return l, oneRow(err)
}
