package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/store"
)

// CookieName is the session cookie. The __Host- prefix makes the browser refuse it unless
// it is Secure, has Path=/ and names no Domain, so a sibling host cannot plant one.
const CookieName = "__Host-moat_session"

// csrfField is the form field that carries the CSRF token.
const csrfField = "csrf"

// authRule is what a console route needs before its handler runs.
type authRule int

const (
	// authNone: the sign-in pages; capped at once and bounded to MaxSignInBytes.
	authNone authRule = iota + 1
	// authSession: a live session; a POST also needs its CSRF token.
	authSession
)

// route is one console route.
type route struct {
	pattern string
	auth    authRule
	fn      func(*req) error
}

// req is one console request as handlers see it.
type req struct {
	c         *Console
	ctx       context.Context
	w         http.ResponseWriter
	r         *http.Request
	id        string
	now       time.Time
	session   store.ConsoleSession
	principal *auth.Principal
	// api calls the management API in-process as the session's principal.
	api *client.Client
	// csrf is the session's form token, for templates.
	csrf string
	// tenant is the tenant of a tenant page, read through the API (which answers 404 for a
	// tenant the user has no role in).
	tenant *client.Tenant
}

var (
	errUnauthenticated = errors.New("unauthenticated")
	errCSRF            = errors.New("missing or wrong CSRF token")
	errNotFound        = errors.New("not found")
)

// wrap serves one route: the shared HTTP core's exchange (request ID, body bound), the
// origin check and session for POSTs, then the handler, and one access line.
func (c *Console) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var limit int64
		if r.Method == http.MethodPost {
			limit = MaxFormBytes
			if rt.auth == authNone {
				limit = MaxSignInBytes
			}
		}
		x := httpapi.Begin(w, r, limit)
		q := &req{c: c, ctx: x.R.Context(), w: x.W, r: x.R, id: x.ID, now: c.now().UTC()}
		err := x.CheckLength()
		if err == nil && r.Method == http.MethodPost {
			// Enforced here as well as on the listener, so the console never depends on
			// how the server wraps it: a cross-origin form post is refused before any work.
			err = c.origin.Check(r)
			if err != nil {
				err = errCSRF
			}
		}
		if err == nil && rt.auth == authNone {
			var release func()
			if release, err = c.signIns.Acquire(r.Context(), w.Header()); err == nil {
				defer release()
			}
		}
		if err == nil && rt.auth == authSession {
			err = q.loadSession()
		}
		if err == nil && rt.auth == authSession && r.Method == http.MethodPost {
			err = q.checkCSRF()
		}
		if err == nil {
			err = rt.fn(q)
		}
		if err != nil {
			q.fail(err, &x)
		}
		attrs := []any{"request_id", x.ID, "method", r.Method, "path", r.URL.Path, "status", x.W.Status(),
			"duration_ms", float64(time.Since(x.Start).Microseconds()) / 1000, "remote_addr", r.RemoteAddr}
		if q.principal != nil {
			attrs = append(attrs, "user_id", q.principal.User.ID)
		}
		c.log.InfoContext(q.ctx, "console request", attrs...)
	})
}

// hashID is what the store keeps of a session ID or a sign-in code.
func hashID(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// loadSession finds the session of the cookie, checks both expiries and that its token
// still authenticates its user, and rebuilds the principal from the store: a role granted
// or removed takes effect on the next page, a revoked token ends the session.
func (q *req) loadSession() error {
	ck, err := q.r.Cookie(CookieName)
	if err != nil || len(ck.Value) != 43 {
		return errUnauthenticated
	}
	idHash := hashID(ck.Value)
	var s store.ConsoleSession
	err = q.c.store.InReadTx(q.ctx, func(tx store.Tx) error {
		s, err = tx.ConsoleSessions().Get(q.ctx, idHash)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return errUnauthenticated
	}
	if err != nil {
		return fmt.Errorf("load session: %w", err)
	}
	if !q.now.Before(s.ExpiresAt) || !q.now.Before(s.LastUsedAt.Add(IdleTimeout)) {
		q.endSession(idHash)
		return errUnauthenticated
	}
	p, err := q.c.api.Principal(q.ctx, s.UserID, s.TokenID)
	if errors.Is(err, mgmt.ErrUnauthenticated) {
		q.endSession(idHash)
		return errUnauthenticated
	}
	if err != nil {
		return err
	}
	if q.now.Sub(s.LastUsedAt) > time.Minute {
		// Coarse, so that reading pages is not a write each.
		err := q.c.store.InTx(q.ctx, func(tx store.Tx) error { return tx.ConsoleSessions().Touch(q.ctx, idHash, q.now) })
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("touch session: %w", err)
		}
	}
	q.session, q.principal = s, p
	q.csrf = csrfToken(s)
	q.api, err = q.c.client(q)
	return err
}

func (q *req) endSession(idHash string) {
	err := q.c.store.InTx(q.ctx, func(tx store.Tx) error { return tx.ConsoleSessions().Delete(q.ctx, idHash) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		q.c.log.WarnContext(q.ctx, "end console session", "request_id", q.id, "err", err)
	}
	q.clearCookie()
}

func (q *req) clearCookie() {
	http.SetCookie(q.w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// csrfToken is the session's form token: an HMAC of the session under its own secret, so
// it is unguessable without the secret and differs per session.
func csrfToken(s store.ConsoleSession) string {
	key, _ := hex.DecodeString(s.CSRFSecret)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("moat console csrf\x00" + s.IDHash))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF refuses a POST whose form lacks the session's token. Attacked by
// TestConsole_RejectsFormWithoutCSRFToken.
func (q *req) checkCSRF() error {
	if err := q.r.ParseForm(); err != nil {
		return errCSRF
	}
	got := q.r.PostForm.Get(csrfField)
	if got == "" || !hmac.Equal([]byte(got), []byte(q.csrf)) {
		return errCSRF
	}
	return nil
}

// startSession makes a session for p and sets its cookie.
func (q *req) startSession(p *auth.Principal) error {
	var id, secret [32]byte
	rand.Read(id[:])
	rand.Read(secret[:])
	cookie := base64.RawURLEncoding.EncodeToString(id[:])
	s := store.ConsoleSession{IDHash: hashID(cookie), UserID: p.User.ID, TokenID: p.TokenID, CSRFSecret: hex.EncodeToString(secret[:]),
		CreatedAt: q.now, LastUsedAt: q.now, ExpiresAt: q.now.Add(SessionTTL)}
	err := q.c.store.InTx(q.ctx, func(tx store.Tx) error { return tx.ConsoleSessions().Create(q.ctx, s, MaxSessionsPerUser) })
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	http.SetCookie(q.w, &http.Cookie{Name: CookieName, Value: cookie, Path: "/", MaxAge: int(SessionTTL / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	q.c.log.InfoContext(q.ctx, "console session started", "request_id", q.id, "user_id", p.User.ID, "token_id", p.TokenID)
	return nil
}

// clientAddr is the failure-limit key of a request: the peer's IP (headers such as
// X-Forwarded-For are not trusted).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// signInPage shows the sign-in form.
func signInPage(q *req) error {
	return q.renderBare(http.StatusOK, "signin.html", "Sign in", signInView{})
}

type signInView struct {
	Error string
}

// signIn exchanges a pasted API token for a session.
func signIn(q *req) error {
	addr := clientAddr(q.r)
	if q.c.failures.blocked(addr, q.now) {
		q.w.Header().Set("Retry-After", fmt.Sprint(int(failureWindow/time.Second)))
		return q.renderBare(http.StatusTooManyRequests, "signin.html", "Sign in", signInView{Error: "Too many failed sign-ins from your address; try again later."})
	}
	if err := q.r.ParseForm(); err != nil {
		return q.renderBare(http.StatusBadRequest, "signin.html", "Sign in", signInView{Error: "The form could not be read."})
	}
	p, err := q.c.api.AuthenticateToken(q.ctx, q.r.PostForm.Get("token"))
	if errors.Is(err, mgmt.ErrUnauthenticated) {
		q.c.failures.add(addr, q.now)
		q.c.log.WarnContext(q.ctx, "console sign-in refused", "request_id", q.id, "remote_addr", q.r.RemoteAddr)
		return q.renderBare(http.StatusUnauthorized, "signin.html", "Sign in", signInView{Error: "That token was not accepted."})
	}
	if err != nil {
		return err
	}
	if err := q.startSession(p); err != nil {
		return err
	}
	return q.redirect("/ui/")
}

// signInLink consumes a one-time sign-in code (moat console link, moat demo) and starts a
// session, then redirects so that the code leaves the address bar. Attacked by
// TestConsole_SignInLinkWorksOnce.
func signInLink(q *req) error {
	addr := clientAddr(q.r)
	refused := func() error {
		q.c.failures.add(addr, q.now)
		return q.renderBare(http.StatusUnauthorized, "signin.html", "Sign in", signInView{Error: "That sign-in link is used, expired or unknown. Make a new one with moat console link, or paste a token."})
	}
	if q.c.failures.blocked(addr, q.now) {
		return q.renderBare(http.StatusTooManyRequests, "signin.html", "Sign in", signInView{Error: "Too many failed sign-ins from your address; try again later."})
	}
	code := q.r.URL.Query().Get("code")
	if len(code) != 43 {
		return refused()
	}
	var l store.SignInLink
	err := q.c.store.InTx(q.ctx, func(tx store.Tx) error {
		var err error
		l, err = tx.ConsoleSessions().ConsumeLink(q.ctx, mgmt.HashSignInCode(code), q.now)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return refused()
	}
	if err != nil {
		return fmt.Errorf("consume sign-in link: %w", err)
	}
	p, err := q.c.api.Principal(q.ctx, l.UserID, l.TokenID)
	if errors.Is(err, mgmt.ErrUnauthenticated) {
		return refused()
	}
	if err != nil {
		return err
	}
	if err := q.startSession(p); err != nil {
		return err
	}
	return q.redirect("/ui/")
}

// signOut ends the session: its row is deleted, so the cookie is worth nothing after.
func signOut(q *req) error {
	q.endSession(q.session.IDHash)
	return q.redirect("/ui/sign-in")
}

func (q *req) redirect(to string) error {
	http.Redirect(q.w, q.r, to, http.StatusSeeOther)
	return nil
}

// Failed sign-ins per client address: at most maxFailures in failureWindow.
const (
	maxFailures    = 10
	failureWindow  = 15 * time.Minute
	maxFailureAddr = 10000
)

// signInFailures counts recent failed sign-ins per client address, in a bounded map.
type signInFailures struct {
	mu sync.Mutex
	m  map[string]failureCount
}

type failureCount struct {
	n     int
	since time.Time
}

func newSignInFailures() *signInFailures { return &signInFailures{m: map[string]failureCount{}} }

func (f *signInFailures) blocked(addr string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.m[addr]
	return ok && now.Sub(c.since) < failureWindow && c.n >= maxFailures
}

func (f *signInFailures) add(addr string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.m[addr]
	if !ok || now.Sub(c.since) >= failureWindow {
		c = failureCount{since: now}
	}
	c.n++
	if !ok && len(f.m) >= maxFailureAddr {
		// Full: drop lapsed counts, then, if need be, one arbitrary count, so the map
		// stays bounded whatever number of addresses fail.
		for k, v := range f.m {
			if now.Sub(v.since) >= failureWindow {
				delete(f.m, k)
			}
		}
		for k := range f.m {
			if len(f.m) < maxFailureAddr {
				break
			}
			delete(f.m, k)
		}
	}
	f.m[addr] = c
}
