// Package support is the support view of `moat cloud` (issue 14, item 4): server-rendered
// pages under /support/ where the tenant's staff see alerts with their evidence and
// diagnostics results, service requests (and change their state), part reservations and
// devices, and run diagnostics on a device.
//
// Who may sign in (DESIGN rule 3): a member of the cloud's tenant, with the moat token
// they use with the security service, checked by internal/cloud/operator. Another tenant's
// Administrator is refused (TestSupport_RefusesOtherTenantsToken). The session keeps the
// token sealed (AES-GCM under Config.SessionKey, bound to the session) and EVERY request
// re-verifies it, so a revoked token or a removed member ends the session within the
// verifier's cache period (TestSupport_RevokedTokenEndsSession); the role is the one the
// security service says now, not the one at sign-in. Sessions end after IdleTimeout
// unused and after MaxAge whatever their use.
//
// Changing a service request and running diagnostics need Contributor or Administrator
// (Principal.CanOperate); a Reader sees the pages without the forms, and their POST is 403
// with nothing changed (TestSupport_ReaderCannotChangeOrRun).
//
// Browser rules (ATTACKS: XSS, CSRF, clickjacking): every response carries webui.Headers
// (a strict CSP: no script at all, and the pages have none); the cookie is
// __Host-moat_support (Secure, HttpOnly, SameSite=Strict); every POST passes
// http.CrossOriginProtection and then webui.CheckCSRF (the sign-in form's token is keyed
// by a pre-session cookie) (TestSupport_RefusesPostWithoutCSRF); text written by devices
// and owners is escaped by html/template (TestBrowser_Support, hostile alert message and
// service request description). Form bodies are bounded (MaxFormBytes) and at most
// MaxSignIns sign-in attempts are checked at once: past it 503 with Retry-After.
package support

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/cloud/operator"
	"github.com/moat-iot/moat/internal/webui"
)

// Limits.
const (
	// CookieName is the session cookie.
	CookieName = "__Host-moat_support"
	// preCookieName keys the sign-in form's CSRF token before there is a session.
	preCookieName = "__Host-moat_support_pre"
	IdleTimeout   = 30 * time.Minute
	MaxAge        = 12 * time.Hour
	// MaxSignIns bounds the sign-in attempts being checked at once.
	MaxSignIns = 16
	// MaxFormBytes bounds a form body (the largest is a diagnostics request with its JSON
	// arguments).
	MaxFormBytes = 16 << 10
	// MaxTokenBytes bounds a pasted token.
	MaxTokenBytes = 512
	// DiagnosticsWait is how long running diagnostics holds the page for the answer before
	// showing it pending.
	DiagnosticsWait = 3 * time.Second
	// KeySize is the size of Config.SessionKey.
	KeySize = 32
)

// Verifier checks a moat token (internal/cloud/operator.Verifier).
type Verifier interface {
	Verify(ctx context.Context, token string) (operator.Principal, error)
}

// Config configures the support view.
type Config struct {
	Store    *cloudstore.Store
	Verifier Verifier
	Diag     *diag.Service
	// SessionKey seals the members' tokens in the session table: KeySize random bytes,
	// kept by the cloud (its data directory). A new key ends every session.
	SessionKey []byte
	Now        func() time.Time
	Logger     *slog.Logger
	// Shops, optional, names a repair shop by its ID.
	Shops func(id string) string
	// Warranty, optional, is a product's warranty period from its sale (0: unknown).
	Warranty func(product string) time.Duration
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store: required"))
	}
	if c.Verifier == nil {
		errs = append(errs, errors.New("verifier: required"))
	}
	if c.Diag == nil {
		errs = append(errs, errors.New("diag: required"))
	}
	if len(c.SessionKey) != KeySize {
		errs = append(errs, fmt.Errorf("session_key: must be %d bytes", KeySize))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("support: %w", err)
	}
	return nil
}

// Support serves the support view.
type Support struct {
	cfg     Config
	log     *slog.Logger
	aead    cipher.AEAD
	pages   map[string]*template.Template
	signIns chan struct{}
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/support.css
var staticFS embed.FS

// New returns the support view.
func New(cfg Config) (*Support, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cfg.SessionKey)
	if err != nil {
		return nil, fmt.Errorf("support: session key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("support: session key: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	return &Support{cfg: cfg, log: log, aead: aead, pages: pages, signIns: make(chan struct{}, MaxSignIns)}, nil
}

func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		if n == "templates/layout.html" || n == "templates/_partials.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/_partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("support: template %s: %w", n, err)
		}
		pages[n[len("templates/"):len(n)-len(".html")]] = t
	}
	return pages, nil
}

// Register adds the support view's routes to mux.
func (s *Support) Register(mux *http.ServeMux) {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, nil, http.StatusForbidden, "cross-origin form posts are refused")
	}))
	page := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, webui.Headers(true, cop.Handler(h)))
	}
	page("GET /support/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/support/alerts", http.StatusSeeOther)
	})
	page("GET /support/signin", s.signInForm)
	page("POST /support/signin", s.signIn)
	page("POST /support/signout", s.authed(s.signOut))
	page("GET /support/alerts", s.authed(s.alerts))
	page("GET /support/alerts/{alert}", s.authed(s.alert))
	page("GET /support/requests", s.authed(s.requests))
	page("POST /support/requests/{request}", s.authed(s.operate(s.updateRequest)))
	page("GET /support/reservations", s.authed(s.reservations))
	page("GET /support/devices/{device}", s.authed(s.device))
	page("POST /support/devices/{device}/diagnostics", s.authed(s.operate(s.runDiagnostics)))
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /support/static/", webui.Headers(false, http.StripPrefix("/support/static/", http.FileServerFS(static))))
	page("/support/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, nil, http.StatusNotFound, "no such page")
	})
}

// session is a signed-in member as a handler sees them.
type session struct {
	id string // the cookie's session ID, which keys the CSRF token
	p  operator.Principal
}

type handler func(w http.ResponseWriter, r *http.Request, ss *session)

// authed resolves the session of r and re-verifies its token; without one the browser is
// sent to sign in. A POST is bounded, parsed and checked for its CSRF token first.
func (s *Support) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := webui.SessionID(r, CookieName)
		if id == "" {
			s.toSignIn(w, r, "")
			return
		}
		ctx := r.Context()
		hash := webui.HashID(id)
		st, err := s.cfg.Store.UseSupportSession(ctx, hash, s.cfg.Now(), IdleTimeout)
		if errors.Is(err, cloudstore.ErrNotFound) {
			webui.ClearCookie(w, CookieName)
			s.toSignIn(w, r, "Your session has ended; sign in again.")
			return
		}
		if err != nil {
			s.fail(w, r, err, http.StatusInternalServerError, "the session cannot be read")
			return
		}
		token, err := s.unseal(st.TokenSealed, hash)
		if err != nil { // another session key: the session cannot be trusted
			_ = s.cfg.Store.DeleteSupportSession(ctx, hash)
			webui.ClearCookie(w, CookieName)
			s.toSignIn(w, r, "Your session has ended; sign in again.")
			return
		}
		p, err := s.cfg.Verifier.Verify(ctx, token)
		switch {
		case errors.Is(err, operator.ErrUnauthenticated):
			// Revoked token or removed member: the session ends now.
			if err := s.cfg.Store.DeleteSupportSession(ctx, hash); err != nil {
				s.log.WarnContext(ctx, "support session not deleted", "user", st.UserName, "error", err)
			}
			webui.ClearCookie(w, CookieName)
			s.log.InfoContext(ctx, "support session ended: token no longer valid", "user", st.UserName)
			s.toSignIn(w, r, "Your token is no longer valid for this tenant; sign in again.")
			return
		case errors.Is(err, operator.ErrUnavailable):
			w.Header().Set("Retry-After", "5")
			s.fail(w, r, err, http.StatusServiceUnavailable, "the security service cannot be reached to check your token; retry later")
			return
		case err != nil:
			s.fail(w, r, err, http.StatusInternalServerError, "your token cannot be checked")
			return
		}
		ss := &session{id: id, p: p}
		if r.Method == http.MethodPost {
			if !s.parseForm(w, r, ss.id) {
				return
			}
		}
		h(w, r, ss)
	}
}

// operate refuses members who may not change anything (Readers) before h runs.
func (s *Support) operate(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, ss *session) {
		if !ss.p.CanOperate() {
			s.fail(w, r, nil, http.StatusForbidden, "this needs the Contributor or Administrator role; you are "+string(ss.p.Role))
			return
		}
		h(w, r, ss)
	}
}

// parseForm reads a bounded form body and checks its CSRF token against csrfID.
func (s *Support) parseForm(w http.ResponseWriter, r *http.Request, csrfID string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.fail(w, r, nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("the form is larger than %d bytes", MaxFormBytes))
		} else {
			s.fail(w, r, nil, http.StatusBadRequest, "the form cannot be read")
		}
		return false
	}
	if err := webui.CheckCSRF(r, csrfID); err != nil {
		s.fail(w, r, nil, http.StatusForbidden, "the form has no valid CSRF token; reload the page and try again")
		return false
	}
	return true
}

func (s *Support) toSignIn(w http.ResponseWriter, r *http.Request, msg string) {
	if r.Method != http.MethodGet {
		s.fail(w, r, nil, http.StatusUnauthorized, "sign in first")
		return
	}
	if msg != "" {
		s.showSignIn(w, r, http.StatusUnauthorized, msg)
		return
	}
	http.Redirect(w, r, "/support/signin", http.StatusSeeOther)
}

// --- sign-in and sign-out

func (s *Support) signInForm(w http.ResponseWriter, r *http.Request) {
	s.showSignIn(w, r, http.StatusOK, "")
}

// showSignIn renders the sign-in form with a fresh pre-session cookie keying its CSRF
// token.
func (s *Support) showSignIn(w http.ResponseWriter, r *http.Request, status int, msg string) {
	pre, _ := webui.NewID()
	webui.SetCookie(w, preCookieName, pre, s.cfg.Now().Add(time.Hour))
	s.render(w, r, status, "signin", nil, pre, map[string]any{"Message": msg})
}

func (s *Support) signIn(w http.ResponseWriter, r *http.Request) {
	select {
	case s.signIns <- struct{}{}:
		defer func() { <-s.signIns }()
	default:
		w.Header().Set("Retry-After", "5")
		s.fail(w, r, nil, http.StatusServiceUnavailable, "too many sign-ins are being checked; retry in a few seconds")
		return
	}
	if !s.parseForm(w, r, webui.SessionID(r, preCookieName)) {
		return
	}
	token := r.PostForm.Get("token")
	if token == "" || len(token) > MaxTokenBytes {
		s.showSignIn(w, r, http.StatusBadRequest, "Paste your moat API token (the one `moat login` keeps).")
		return
	}
	ctx := r.Context()
	p, err := s.cfg.Verifier.Verify(ctx, token)
	switch {
	case errors.Is(err, operator.ErrUnauthenticated):
		s.log.InfoContext(ctx, "support sign-in refused")
		s.showSignIn(w, r, http.StatusUnauthorized, "That is not a valid moat token of a member of this cloud's tenant.")
		return
	case errors.Is(err, operator.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		s.fail(w, r, err, http.StatusServiceUnavailable, "the security service cannot be reached to check your token; retry later")
		return
	case err != nil:
		s.fail(w, r, err, http.StatusInternalServerError, "your token cannot be checked")
		return
	}
	id, hash := webui.NewID()
	now := s.cfg.Now()
	expires := now.Add(MaxAge)
	err = s.cfg.Store.CreateSupportSession(ctx, cloudstore.SupportSession{IDHash: hash, UserID: p.UserID, UserName: p.UserName,
		Role: string(p.Role), TokenSealed: s.seal(token, hash), CreatedAt: now, ExpiresAt: expires})
	if err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the session cannot be stored")
		return
	}
	webui.ClearCookie(w, preCookieName)
	webui.SetCookie(w, CookieName, id, expires)
	s.log.InfoContext(ctx, "support sign-in", "user", p.UserName, "role", p.Role)
	http.Redirect(w, r, "/support/alerts", http.StatusSeeOther)
}

func (s *Support) signOut(w http.ResponseWriter, r *http.Request, ss *session) {
	if err := s.cfg.Store.DeleteSupportSession(r.Context(), webui.HashID(ss.id)); err != nil {
		s.fail(w, r, err, http.StatusInternalServerError, "the session cannot be ended")
		return
	}
	webui.ClearCookie(w, CookieName)
	http.Redirect(w, r, "/support/signin", http.StatusSeeOther)
}

// seal encrypts token for the session with hash idHash; the hash is the additional data,
// so a sealed token copied into another session's row does not open.
func (s *Support) seal(token, idHash string) string {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(token), []byte(idHash)))
}

func (s *Support) unseal(sealed, idHash string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errors.New("sealed token malformed")
	}
	n := s.aead.NonceSize()
	pt, err := s.aead.Open(nil, b[:n], b[n:], []byte(idHash))
	if err != nil {
		return "", errors.New("sealed token does not open")
	}
	return string(pt), nil
}

// Sweep deletes expired and idle sessions; the cloud calls it now and then.
func (s *Support) Sweep(ctx context.Context) error {
	_, err := s.cfg.Store.DeleteStaleSupportSessions(ctx, s.cfg.Now(), IdleTimeout)
	return err
}
