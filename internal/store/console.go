package store

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/auth"
)

// ConsoleSession is a signed-in browser of the web console (internal/console). IDHash is
// the hex SHA-256 of the random session ID the cookie holds: the ID itself is never stored.
type ConsoleSession struct {
	IDHash  string
	UserID  auth.UserID
	TokenID auth.TokenID
	// CSRFSecret keys the HMAC of the session's form tokens (hex).
	CSRFSecret string
	CreatedAt  time.Time
	LastUsedAt time.Time
	// ExpiresAt is the absolute end of the session, whatever its use.
	ExpiresAt time.Time
}

// SignInLink is a one-time console sign-in code, stored only as its hex SHA-256.
type SignInLink struct {
	CodeHash  string
	UserID    auth.UserID
	TokenID   auth.TokenID
	CreatedAt time.Time
	ExpiresAt time.Time
}

// ConsoleSessions holds the web console's sessions and one-time sign-in links. They belong
// to a user, not a tenant: the tenants a session reaches are its user's roles, read again
// on every request.
type ConsoleSessions interface {
	// Create stores s, then deletes the user's oldest sessions beyond maxPerUser, so one
	// user's sign-ins cost bounded space.
	Create(ctx context.Context, s ConsoleSession, maxPerUser int) error
	// Get returns the session; ErrNotFound when there is none.
	Get(ctx context.Context, idHash string) (ConsoleSession, error)
	// Touch records a use of the session at the given time.
	Touch(ctx context.Context, idHash string, at time.Time) error
	// Delete removes the session (sign-out); ErrNotFound when there is none.
	Delete(ctx context.Context, idHash string) error
	// DeleteExpired removes the sessions whose absolute expiry is at or before now or that
	// were last used at or before idleBefore, and the sign-in links that expired at or
	// before now; it returns how many rows it removed.
	DeleteExpired(ctx context.Context, now, idleBefore time.Time) (int64, error)
	// CreateLink stores a sign-in link and deletes the user's oldest beyond maxPerUser, so
	// that a user (of any role) who asks for links again and again holds a bounded number
	// of rows.
	CreateLink(ctx context.Context, l SignInLink, maxPerUser int) error
	// ConsumeLink deletes the link and returns it when it exists and expires after now;
	// ErrNotFound otherwise. Of concurrent consumers of one code at most one gets it.
	ConsumeLink(ctx context.Context, codeHash string, now time.Time) (SignInLink, error)
}
