package mgmt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/store"
)

// ErrUnauthenticated: a presented token, or a session's token, authenticates nobody
// (unknown, wrong secret, revoked, expired, or not the user's).
var ErrUnauthenticated = errors.New("unauthenticated")

// principalKey carries an already-authenticated principal in a request's context.
type principalKey struct{}

// WithPrincipal returns ctx carrying p: a management request served in-process with this
// context is authenticated as p, and the bearer header is not read. Only code in the
// server's process can set a context value, never a network peer; the web console
// (internal/console) uses it to call the API as its session's user, so that roles, the
// tenant checks, If-Match, audit events and change notifications are exactly the API's.
// The caller must have authenticated p itself (Principal or AuthenticateToken) for this
// request.
func WithPrincipal(ctx context.Context, p *auth.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// AuthenticateToken checks a presented API token (moat_<id>.<secret>) as the API does and
// returns its principal; ErrUnauthenticated when it authenticates nobody.
func (a *API) AuthenticateToken(ctx context.Context, presented string) (*auth.Principal, error) {
	id, secret, err := auth.ParseToken(presented)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	return a.principal(ctx, id, tokenCheck{secret: secret})
}

// Principal rebuilds the principal of a user acting with one of its tokens (a console
// session made from it): the token must still be the user's and active, and the roles are
// read now. ErrUnauthenticated otherwise.
func (a *API) Principal(ctx context.Context, user auth.UserID, token auth.TokenID) (*auth.Principal, error) {
	if user == "" {
		return nil, ErrUnauthenticated
	}
	return a.principal(ctx, token, tokenCheck{user: user})
}

// tokenCheck is what a token must pass besides being active: the presented secret
// (AuthenticateToken), or belonging to the session's user (Principal). A value, not a
// closure, so that a request served from the cache allocates none.
type tokenCheck struct {
	secret string      // the presented secret; "" for a console session's token
	user   auth.UserID // the session's user; "" for a presented token
}

// ok reports whether tok passes the check at now.
func (k tokenCheck) ok(tok auth.Token, now time.Time) bool {
	if k.user == "" && !tok.Matches(k.secret) {
		return false
	}
	return tok.Active(now) && (k.user == "" || tok.UserID == k.user)
}

// principal finds the principal of token id, which passes check: from the verified-token
// cache when it holds the token (auth_cache.go), from the store otherwise. check, with the
// token's expiry, is made on a hit as on a miss, so the cache never lets through what the
// store would refuse; only a refusal on what the store alone knows (revoked, roles) waits
// for an invalidation.
func (a *API) principal(ctx context.Context, id auth.TokenID, check tokenCheck) (*auth.Principal, error) {
	now := a.now()
	if e, hit := a.authCache.get(id, now); hit {
		if !check.ok(e.tok, now) {
			return nil, ErrUnauthenticated
		}
		return e.p, nil
	}
	gen := a.authCache.generation() // before the read: an invalidation after it fences the result off
	var p *auth.Principal
	var tok auth.Token
	err := a.store.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		tok, err = tx.Tokens().Get(ctx, id)
		if err != nil {
			return err
		}
		if !check.ok(tok, now) {
			return store.ErrNotFound
		}
		u, err := tx.Users().Get(ctx, tok.UserID)
		if err != nil {
			return err
		}
		roles, err := tx.Users().Roles(ctx, u.ID)
		if err != nil {
			return err
		}
		p = &auth.Principal{User: u, TokenID: tok.ID, Roles: roles}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	a.authCache.put(gen, tok, p, now)
	return p, nil
}
