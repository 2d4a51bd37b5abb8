// Package portal serves the owners' portal under /portal/ on `moat cloud`: server-rendered
// pages (html/template, one embedded style sheet, no script, no CDN) where an appliance's
// owner signs up, signs in, claims appliances, sees their usage, alerts and what was done
// about them, requests service, answers purchase prompts and hands an appliance over.
// Accounts, sessions and claims are internal/cloud/owners; data is the cloud's store.
//
// What it trusts and enforces:
//   - every response carries webui.Headers (strict CSP without script); cookies are
//     __Host- (HttpOnly, Secure, SameSite=Strict) (TestBrowser_Portal);
//   - every POST passes http.CrossOriginProtection and a CSRF token, keyed by the session
//     ID, or for a visitor not signed in by a random pre-session cookie
//     (TestPortal_RefusesFormsWithoutCSRFToken);
//   - form bodies are bounded (MaxFormBytes) and every field checked, with a clear message
//     and nothing stored on refusal (TestPortal_RefusesBadInput);
//   - requests without a session share MaxAnonymousRequests slots (503 + Retry-After);
//   - an owner reaches only their own appliances: another owner's device ID is 404, the
//     same as a missing one, on every route (TestPortal_OwnerSeesNothingOfAnothersAppliances),
//     and sees an appliance's data only from their claim (TestPortal_HandoverHidesPastData);
//   - text written by devices and owners is escaped by html/template
//     (TestBrowser_Portal's hostile nickname and description).
//
// A Portal is safe for concurrent use.
package portal

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/owners"
	"github.com/moat-iot/moat/internal/webui"
)

// Cookie names: the session's, and the anonymous one that keys the CSRF token of forms
// shown before sign-in (sign-in, sign-up, resend, password reset).
const (
	SessionCookie = "__Host-moat_portal"
	PreCookie     = "__Host-moat_portal_pre"
)

// Limits.
const (
	// MaxFormBytes bounds a posted form.
	MaxFormBytes = 16 << 10
	// MaxAnonymousRequests bounds the requests without a session served at once.
	MaxAnonymousRequests = 32
	// UsageWindow is how far back the usage charts look (never before the owner's claim).
	UsageWindow = 12 * 7 * 24 * time.Hour
	// MaxChartCycles is the number of wash cycles the per-cycle charts show.
	MaxChartCycles = 30
	// maxEventPages bounds the event pages read for the charts (1,000 events each).
	maxEventPages = 10
)

// Shop is a repair shop an owner may choose for an appliance.
type Shop struct {
	ID   string
	Name string
}

// Config is a Portal's configuration. Shops and Warranty may be nil.
type Config struct {
	Owners *owners.Service
	Store  *cloudstore.Store
	Now    func() time.Time
	Logger *slog.Logger
	// Shops lists the repair shops an owner can choose (nil: none).
	Shops func() []Shop
	// Warranty is a product's warranty period counted from its sale (0: unknown).
	Warranty func(product string) time.Duration
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if c.Owners == nil {
		errs = append(errs, errors.New("portal: owners: required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("portal: store: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("portal: now: required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("portal: logger: required"))
	}
	return errors.Join(errs...)
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Portal is the owners' portal.
type Portal struct {
	cfg   Config
	log   *slog.Logger
	pages map[string]*template.Template
	anon  *httpapi.Limiter
	cop   *http.CrossOriginProtection
}

// New returns a Portal.
func New(cfg Config) (*Portal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	return &Portal{cfg: cfg, log: cfg.Logger, pages: pages, anon: httpapi.NewLimiter(MaxAnonymousRequests), cop: http.NewCrossOriginProtection()}, nil
}

// Register adds the portal's routes, all under /portal/, to mux.
func (p *Portal) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/portal/static/", http.FileServerFS(static))
	mux.Handle("GET /portal/static/", webui.Headers(false, p.logged(func(q *req) { files.ServeHTTP(q.w, q.r) })))
	for _, rt := range p.routes() {
		mux.Handle(rt.method+" "+rt.pattern, webui.Headers(true, p.logged(p.handle(rt))))
	}
	mux.Handle("/portal/", webui.Headers(true, p.logged(func(q *req) {
		p.fail(q.w, q.r, http.StatusNotFound, "There is no such page.")
	})))
}

// route is one page or form of the portal.
type route struct {
	method, pattern string
	// signedIn routes need an owner's session; the others are for anyone.
	signedIn bool
	h        func(*req) error
}

// Routes, one table: TestPortal_OwnerSeesNothingOfAnothersAppliances walks every route
// with a device in its pattern.
func (p *Portal) routes() []route {
	return []route{
		{"GET", "/portal/{$}", false, p.home},
		{"GET", "/portal/sign-up", false, p.signUpForm},
		{"POST", "/portal/sign-up", false, p.signUp},
		{"GET", "/portal/verify", false, p.verify},
		{"GET", "/portal/resend", false, p.resendForm},
		{"POST", "/portal/resend", false, p.resend},
		{"GET", "/portal/reset", false, p.resetForm},
		{"POST", "/portal/reset", false, p.reset},
		{"GET", "/portal/reset/confirm", false, p.resetConfirmForm},
		{"POST", "/portal/reset/confirm", false, p.resetConfirm},
		{"GET", "/portal/sign-in", false, p.signInForm},
		{"POST", "/portal/sign-in", false, p.signIn},
		{"POST", "/portal/sign-out", true, p.signOut},
		{"GET", "/portal/appliances", true, p.appliances},
		{"GET", "/portal/claim", true, p.claimForm},
		{"POST", "/portal/claim", true, p.claim},
		{"GET", "/portal/appliances/{device}", true, p.appliance},
		{"POST", "/portal/appliances/{device}/settings", true, p.settings},
		{"POST", "/portal/appliances/{device}/service", true, p.requestService},
		{"POST", "/portal/appliances/{device}/prompts/{id}/dismiss", true, p.dismissPrompt},
		{"POST", "/portal/appliances/{device}/handover", true, p.handover},
	}
}

// req is one request being served.
type req struct {
	w     http.ResponseWriter
	r     *http.Request
	owner *cloudstore.Owner // nil for a visitor not signed in
	sid   string            // the session ID (signed in) or the pre-session ID
	csrf  string
}

// logged serves serve with the request's ID (X-Request-Id) and one access line when it
// is done: the path without the query (a mailed link's token is in the query) and the
// owner when signed in; never a form field, cookie or token
// (TestPortal_AccessLogHoldsNoSecrets).
func (p *Portal) logged(serve func(*req)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var limit int64
		if r.Method == http.MethodPost {
			limit = MaxFormBytes
		}
		x := httpapi.Begin(w, r, limit)
		q := &req{w: x.W, r: x.R}
		serve(q)
		attrs := []any{"request_id", x.ID, "method", r.Method, "path", r.URL.Path, "status", x.W.Status(),
			"duration_ms", float64(time.Since(x.Start).Microseconds()) / 1000, "remote_addr", r.RemoteAddr}
		if q.owner != nil {
			attrs = append(attrs, "owner_id", q.owner.ID)
		}
		p.log.InfoContext(x.R.Context(), "portal request", attrs...)
	})
}

func (p *Portal) handle(rt route) func(*req) {
	return func(q *req) {
		w, r := q.w, q.r
		if err := p.cop.Check(r); err != nil {
			p.fail(w, r, http.StatusForbidden, "This form was sent from another site and was refused.")
			return
		}
		if sid := webui.SessionID(r, SessionCookie); sid != "" {
			o, err := p.cfg.Owners.Session(r.Context(), sid)
			switch {
			case err == nil:
				q.owner, q.sid = &o, sid
			case errors.Is(err, owners.ErrNotFound):
				webui.ClearCookie(w, SessionCookie)
			default:
				p.internal(w, r, err)
				return
			}
		}
		if q.owner == nil {
			// Strangers share a bounded number of slots: a flood of them is refused at
			// once rather than queued.
			release, err := p.anon.Acquire(r.Context(), w.Header())
			if err != nil {
				p.fail(w, r, http.StatusServiceUnavailable, "The portal is busy; try again in a few seconds.")
				return
			}
			defer release()
			if rt.signedIn {
				http.Redirect(w, r, "/portal/sign-in", http.StatusSeeOther)
				return
			}
			q.sid = webui.SessionID(r, PreCookie)
			if q.sid == "" && r.Method == http.MethodGet {
				q.sid, _ = webui.NewID()
				webui.SetCookie(w, PreCookie, q.sid, p.cfg.Now().Add(owners.SessionLifetime))
			}
		}
		if q.sid != "" {
			q.csrf = webui.CSRFToken(q.sid)
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
			if err := r.ParseForm(); err != nil {
				if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
					p.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The form is too large (at most %d KiB).", MaxFormBytes>>10))
					return
				}
				p.fail(w, r, http.StatusBadRequest, "The form could not be read.")
				return
			}
			if err := webui.CheckCSRF(r, q.sid); err != nil {
				p.fail(w, r, http.StatusForbidden, "This form has expired or did not come from this site. Reload the page and try again.")
				return
			}
		}
		if err := rt.h(q); err != nil {
			p.internal(w, r, err)
		}
	}
}

// internal answers an unexpected error: logged here, once, never shown.
func (p *Portal) internal(w http.ResponseWriter, r *http.Request, err error) {
	p.log.ErrorContext(r.Context(), "portal request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	p.fail(w, r, http.StatusInternalServerError, "Something went wrong on our side. Try again later.")
}

// fail renders the error page with status.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p.render(w, r, status, "error.html", view{Title: http.StatusText(status), Data: msg})
}
