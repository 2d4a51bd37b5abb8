// Package console is moat's web console for support staff: server-rendered pages under /ui/
// on the management listener (fleet overview with should-run vs does-run, devices by
// state, a device with its update history, deployments, error issues and reports with
// their download, version health, the audit log) and the actions a Contributor may take there (block or unblock a
// device, move it to another group, deploy an app image to a group after a confirmation).
//
// It holds no business rule of its own. Every read and change is a call of the management
// API, served in-process (inProcess) as the session's user through the public Go client:
// roles, 404 for another tenant's objects (rule 3), If-Match, audit events and change
// notifications are exactly the API's. The one exception to the client is the error-report
// download (download.go): the API's export handler writes into the console's response
// directly, as the session's principal, so that a large file streams rather than being
// held in memory. What the console adds is the browser's edge:
//   - Sign-in exchanges an API token (checked as the API checks it) or a one-time link
//     (mgmt's POST /api/v1/console/sign-in-links) for a session: a random 256-bit ID in a
//     __Host- cookie (HttpOnly, Secure, SameSite=Strict), stored only as its SHA-256, with
//     an absolute and an idle expiry, bound to the token it came from and re-checked on
//     every request (attacked by TestConsole_RejectsExpiredSession,
//     TestConsole_RejectsForgedSession, TestConsole_RevokedTokenEndsSession and the browser
//     test's sign-out).
//   - Every state-changing form carries an HMAC token of the session's CSRF secret, and a
//     cross-origin POST is refused by Origin/Sec-Fetch-Site (http.CrossOriginProtection);
//     either failing is 403 (TestConsole_RejectsFormWithoutCSRFToken).
//   - Every response carries a strict Content-Security-Policy (no inline script or style),
//     nosniff, no referrer and, on pages, no-store; html/template escapes all text by its
//     context, and device-written text runs nothing (TestBrowser_DeviceTextIsEscaped).
//   - POST bodies are bounded (MaxFormBytes); sign-in attempts are capped at once
//     (MaxSignInsAtOnce) and failed ones limited per client address (signInFailures).
//
// A page is a handler, a template and (for top-level pages) a nav entry: see pages.go.
// A Console is safe for concurrent use.
package console

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Limits and lifetimes.
const (
	// SessionTTL is a session's absolute lifetime, however busy.
	SessionTTL = 8 * time.Hour
	// IdleTimeout ends a session unused for this long.
	IdleTimeout = 30 * time.Minute
	// MaxSessionsPerUser bounds one user's sessions; a new sign-in deletes the oldest.
	MaxSessionsPerUser = 20
	// MaxFormBytes bounds the body of every console POST.
	MaxFormBytes = 16 << 10
	// MaxSignInBytes bounds the body of the sign-in form, which anyone may post.
	MaxSignInBytes = 4 << 10
	// MaxSignInsAtOnce caps the sign-in requests (form and link) served at once.
	MaxSignInsAtOnce = 64
	// PruneInterval is how often expired sessions and links are removed.
	PruneInterval = 10 * time.Minute
)

// Config holds the console's dependencies; all are required.
type Config struct {
	// API is the management API the console calls in-process.
	API    *mgmt.API
	Store  store.Store
	Logger *slog.Logger
	Now    func() time.Time
}

// Console serves /ui/.
type Console struct {
	api      *mgmt.API
	apiMux   http.Handler
	store    store.Store
	log      *slog.Logger
	now      func() time.Time
	pages    map[string]*pageTemplate
	signIns  *httpapi.Limiter
	failures *signInFailures
	origin   *http.CrossOriginProtection
	static   http.Handler
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	var errs []error
	if cfg.API == nil {
		errs = append(errs, errors.New("console: API is required"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("console: Store is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("console: Logger is required"))
	}
	if cfg.Now == nil {
		errs = append(errs, errors.New("console: Now is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	apiMux := http.NewServeMux()
	cfg.API.Register(apiMux, mgmt.Management)
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	return &Console{
		api: cfg.API, apiMux: apiMux, store: cfg.Store, log: cfg.Logger, now: cfg.Now, pages: pages,
		signIns: httpapi.NewLimiter(MaxSignInsAtOnce), failures: newSignInFailures(),
		origin: http.NewCrossOriginProtection(),
		static: http.StripPrefix("/ui/static/", http.FileServerFS(sub)),
	}, nil
}

// Register adds the console's routes under /ui/ to mux (the management listener's).
func (c *Console) Register(mux *http.ServeMux) {
	mux.Handle("GET /ui/static/", c.headers(false, c.static))
	for _, rt := range c.routes() {
		mux.Handle(rt.pattern, c.headers(true, c.wrap(rt)))
	}
	mux.Handle("/ui/", c.headers(true, c.wrap(route{auth: authSession, fn: func(*req) error { return errNotFound }})))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
}

// Prune removes expired sessions and sign-in links: a server.Job (leased, one replica per
// period).
func (c *Console) Prune(ctx context.Context, now time.Time) error {
	return c.store.InTx(ctx, func(tx store.Tx) error {
		n, err := tx.ConsoleSessions().DeleteExpired(ctx, now, now.Add(-IdleTimeout))
		if n > 0 {
			c.log.InfoContext(ctx, "expired console sessions removed", "rows", n)
		}
		return err
	})
}

// contentSecurityPolicy allows only the console's own style sheet and script files and
// data: images: no inline script or style, no plug-ins, no framing, forms post only here.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// headers sets the security headers of every /ui/ response.
func (c *Console) headers(page bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if page {
			h.Set("Cache-Control", "no-store")
		} else {
			h.Set("Cache-Control", "public, max-age=3600")
		}
		next.ServeHTTP(w, r)
	})
}
