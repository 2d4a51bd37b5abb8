package support_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud/claimcode"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/cloud/operator"
	"github.com/moat-iot/moat/internal/cloud/support"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/webui"
)

// Hostile text an owner or a device writes; shown escaped it is harmless text.
const (
	hostileMessage     = `drying too cold <script>alert("alert-xss")</script><img src=x onerror=alert("img-xss")>`
	hostileDescription = `it leaks </td><script>alert("request-xss")</script><b onmouseover=alert(1)>x</b>`
)

// env is a real security service (its tokens, members and tenants), a cloud store with a
// device, an alert with a finished diagnostics request, a service request and a
// reservation, and the support view over TLS.
type env struct {
	p        *testenv.Platform
	store    *cloudstore.Store
	verifier *operator.Verifier
	diag     *diag.Service
	srv      *httptest.Server
	now      atomic.Pointer[time.Time]
	device   string
	alert    cloudstore.Alert
	request  cloudstore.ServiceRequest
	sent     atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{p: testenv.NewPlatform(t), device: strings.Repeat("4f", 32)}
	start := time.Now()
	e.now.Store(&start)
	now := func() time.Time { return *e.now.Load() }
	ctx := t.Context()
	var err error
	if e.store, err = cloudstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "cloud.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.p.Server.CAPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	if e.verifier, err = operator.New(operator.Config{Server: e.p.Server.URL, HTTPClient: hc, Tenant: e.p.Tenant, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	publish := func(context.Context, string, string, []byte) error { e.sent.Add(1); return nil }
	if e.diag, err = diag.New(diag.Config{Store: e.store, Publish: publish, Timeout: time.Hour, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, support.KeySize)
	s, err := support.New(support.Config{Store: e.store, Verifier: e.verifier, Diag: e.diag, SessionKey: key, Now: now,
		Shops: func(id string) string { return map[string]string{"shop-1": "Fixit & Co"}[id] },
		Warranty: func(product string) time.Duration {
			return map[string]time.Duration{"DW100": 365 * 24 * time.Hour}[product]
		}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Register(mux)
	e.srv = httptest.NewTLSServer(mux)
	t.Cleanup(e.srv.Close)
	e.seed(t)
	return e
}

func (e *env) seed(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	at := time.Now().Add(-time.Hour).UTC()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.store.UpsertDevice(ctx, cloudstore.Device{ID: e.device, Product: "DW100", CertNotAfter: at.Add(24 * time.Hour), CertSerial: "01"}, at))
	var err error
	e.alert, err = e.store.OpenAlert(ctx, cloudstore.NewAlert{Product: "DW100", Device: e.device, Rule: "heater-drying-temp", Severity: "warning",
		OpenedAt: at, Value: 41.5, Message: hostileMessage, Evidence: json.RawMessage(`{"drying_temp":41.5,"fleet_median":64}`)})
	must(err)
	d, err := e.diag.Run(ctx, diag.Request{Device: e.device, Command: "heater-self-test", RequestedBy: "rule:heater", AlertID: e.alert.ID})
	must(err)
	_, err = e.store.FinishDiagnostic(ctx, e.device, telemetry.DiagnosticReply{V: 1, ID: d.ID, OK: true,
		Result: json.RawMessage(`{"heater_ohms":"open circuit"}`), At: time.Now()}, time.Now())
	must(err)
	o, err := e.store.CreateOwner(ctx, cloudstore.NewOwner{Email: "ana@example.com", Name: "Ana <i>Owner</i>", PasswordHash: "$argon2id$v=19$m=1,t=1,p=1$x$y", CreatedAt: at})
	must(err)
	code := claimcode.New()
	h, _ := claimcode.Hash(code)
	must(e.store.PutClaimCodes(ctx, []cloudstore.ClaimCode{{Device: e.device, Product: "DW100", CodeHash: h, CreatedAt: at}}))
	_, err = e.store.ClaimAppliance(ctx, o.ID, h, at)
	must(err)
	must(e.store.RecordSale(ctx, cloudstore.Sale{Device: e.device, Product: "DW100", SoldAt: at.AddDate(0, -2, 0), Shop: "shop-1", RecordedAt: at}))
	e.request, err = e.store.CreateServiceRequest(ctx, cloudstore.NewServiceRequest{Device: e.device, OwnerID: o.ID, AlertID: e.alert.ID,
		Source: cloudstore.SourceOwner, Description: hostileDescription, CreatedAt: at})
	must(err)
	_, err = e.store.RecordReservation(ctx, cloudstore.Reservation{Device: e.device, AlertID: e.alert.ID, Part: "heater-element",
		Shop: "shop-1", State: cloudstore.ReservationReserved, Reference: "R-1001", Reason: "reserved", CreatedAt: at})
	must(err)
}

// member makes a member of the tenant with role and returns their token.
func (e *env) member(t *testing.T, name string, role client.Role) client.MemberCreated {
	t.Helper()
	m, err := e.p.Admin.CreateMember(t.Context(), e.p.Tenant, client.MemberCreate{Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
type browser struct {
	t   *testing.T
	e   *env
	hc  *http.Client
	jar *cookiejar.Jar
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client() // a copy: each browser has its own jar
	hc := &c
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: t, e: e, hc: hc, jar: jar}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, hdr ...string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token in page (%d): %.300s", p.status, p.body)
	}
	return m[1]
}

// signIn signs in with token and returns the sign-in answer.
func (b *browser) signIn(token string) page {
	b.t.Helper()
	form := b.do("GET", "/support/signin", nil)
	return b.do("POST", "/support/signin", url.Values{"csrf": {csrfOf(b.t, form)}, "token": {token}})
}

func (b *browser) mustSignIn(token string) {
	b.t.Helper()
	if p := b.signIn(token); p.status != http.StatusSeeOther {
		b.t.Fatalf("sign in = %d %.300s, want 303", p.status, p.body)
	}
}

func fmtPath(f string, a ...any) string { return fmt.Sprintf(f, a...) }

func (e *env) requestState(t *testing.T) cloudstore.ServiceRequest {
	t.Helper()
	sr, err := e.store.GetServiceRequest(t.Context(), e.request.ID)
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

// TestSupport_RefusesOtherTenantsToken attacks rule 3 at sign-in: another tenant's
// Administrator and a made-up token get no session.
func TestSupport_RefusesOtherTenantsToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other, err := e.p.Op.CreateTenant(t.Context(), client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.p.Op.CreateMember(t.Context(), other.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"other tenant's admin": m.Secret, "made up": "moat_madeup"} {
		b := e.browser(t)
		p := b.signIn(tok)
		if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "not a valid moat token") {
			t.Errorf("%s: sign in = %d, want 401 with the reason", name, p.status)
		}
		u, _ := url.Parse(e.srv.URL)
		for _, c := range b.jar.Cookies(u) {
			if c.Name == support.CookieName {
				t.Errorf("%s: got a session cookie", name)
			}
		}
		if p := b.do("GET", "/support/alerts", nil); p.status != http.StatusSeeOther || strings.Contains(p.body, "heater") {
			t.Errorf("%s: alerts after refused sign-in = %d, want 303 to sign in", name, p.status)
		}
	}
}

// TestSupport_RevokedTokenEndsSession: every request re-verifies the session's token, so
// revoking it (or removing the member) ends an open session at the next request after
// the verifier's cache period; the session row is deleted.
func TestSupport_RevokedTokenEndsSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok, err := e.p.Admin.CreateToken(t.Context(), client.TokenCreate{Name: "support-desk"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	b.mustSignIn(tok.Secret)
	if p := b.do("GET", "/support/alerts", nil); p.status != 200 {
		t.Fatalf("alerts while signed in = %d", p.status)
	}
	if _, err := e.p.Admin.RevokeToken(t.Context(), tok.Token.ID); err != nil {
		t.Fatal(err)
	}
	e.verifier.Forget() // the cache period passes
	p := b.do("GET", "/support/alerts", nil)
	if p.status != http.StatusUnauthorized || strings.Contains(p.body, "heater-drying-temp") {
		t.Fatalf("alerts after the token was revoked = %d, want 401 and no data", p.status)
	}
	// The session is gone for good: a later valid verifier answer cannot revive it.
	if c := p.header.Get("Set-Cookie"); !strings.Contains(c, support.CookieName+"=;") {
		t.Errorf("Set-Cookie after revocation = %q, want the session cookie cleared", c)
	}
	if n, _ := e.store.DeleteStaleSupportSessions(t.Context(), time.Now().Add(24*time.Hour), time.Hour); n != 0 {
		t.Errorf("%d sessions left after revocation, want 0", n)
	}

	// A removed member: the same.
	m := e.member(t, "temp", client.RoleContributor)
	b2 := e.browser(t)
	b2.mustSignIn(m.Secret)
	if err := e.p.Admin.DeleteMember(t.Context(), e.p.Tenant, m.Member.User.ID); err != nil {
		t.Fatal(err)
	}
	e.verifier.Forget()
	if p := b2.do("GET", "/support/requests", nil); p.status != http.StatusUnauthorized {
		t.Errorf("requests after the member was removed = %d, want 401", p.status)
	}
}

// TestSupport_SessionExpires: idle for IdleTimeout, or older than MaxAge however used, a
// session ends (an injected clock).
func TestSupport_SessionExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.member(t, "desk", client.RoleReader).Secret
	b := e.browser(t)
	b.mustSignIn(tok)
	advance := func(d time.Duration) { n := e.now.Load().Add(d); e.now.Store(&n) }
	advance(support.IdleTimeout - time.Minute)
	if p := b.do("GET", "/support/alerts", nil); p.status != 200 {
		t.Fatalf("after %s idle = %d, want 200", support.IdleTimeout-time.Minute, p.status)
	}
	advance(support.IdleTimeout)
	if p := b.do("GET", "/support/alerts", nil); p.status != http.StatusUnauthorized {
		t.Errorf("after %s idle = %d, want 401", support.IdleTimeout, p.status)
	}
	b = e.browser(t)
	b.mustSignIn(tok)
	for range int(support.MaxAge/(20*time.Minute)) - 1 {
		advance(20 * time.Minute)
		if p := b.do("GET", "/support/alerts", nil); p.status != 200 {
			t.Fatalf("in use at %s = %d", time.Until(*e.now.Load()), p.status)
		}
	}
	advance(20 * time.Minute)
	if p := b.do("GET", "/support/alerts", nil); p.status != http.StatusUnauthorized {
		t.Errorf("in use past %s = %d, want 401", support.MaxAge, p.status)
	}
}

// TestSupport_ReaderCannotChangeOrRun: a Reader sees the pages without the forms; their
// POSTs (with a valid CSRF token) are 403 and change nothing, send nothing.
func TestSupport_ReaderCannotChangeOrRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	b.mustSignIn(e.member(t, "reader", client.RoleReader).Secret)
	dev := b.do("GET", "/support/devices/"+e.device, nil)
	if dev.status != 200 || strings.Contains(dev.body, `id="run"`) || strings.Contains(dev.body, `action="/support/requests/`) {
		t.Fatalf("a Reader's device page = %d; has a form: %v", dev.status, strings.Contains(dev.body, `id="run"`))
	}
	// Sold two months ago with a one-year warranty.
	if !strings.Contains(dev.body, `<dd id="warranty">under warranty until `) {
		t.Errorf("the device page does not show the warranty running:\n%s", dev.body)
	}
	csrf := csrfOf(t, dev) // the sign-out form's: a valid token of the session
	sentBefore := e.sent.Load()
	p := b.do("POST", fmtPath("/support/requests/%d", e.request.ID), url.Values{"csrf": {csrf}, "state": {"done"}, "note": {"closed by a reader"}})
	if p.status != http.StatusForbidden {
		t.Errorf("a Reader changes a request = %d, want 403", p.status)
	}
	if sr := e.requestState(t); sr.State != cloudstore.RequestOpen || sr.Note != "" {
		t.Errorf("request after the Reader's attempt = %s %q, want open and no note", sr.State, sr.Note)
	}
	p = b.do("POST", "/support/devices/"+e.device+"/diagnostics", url.Values{"csrf": {csrf}, "command": {"heater-self-test"}})
	if p.status != http.StatusForbidden {
		t.Errorf("a Reader runs diagnostics = %d, want 403", p.status)
	}
	ds, _ := e.store.ListDiagnostics(t.Context(), cloudstore.DiagnosticFilter{Device: e.device})
	if len(ds) != 1 || e.sent.Load() != sentBefore {
		t.Errorf("diagnostics after the Reader's attempt: %d stored, %d sent; want only the seeded one", len(ds), e.sent.Load()-sentBefore)
	}
}

// TestSupport_RefusesPostWithoutCSRF: a form post without the session's CSRF token, with
// another session's, or from another origin, is 403 and changes nothing.
func TestSupport_RefusesPostWithoutCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin, err := e.p.Admin.CreateToken(t.Context(), client.TokenCreate{Name: "desk"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	b.mustSignIn(admin.Secret)
	other := e.browser(t)
	other.mustSignIn(admin.Secret)
	otherCSRF := csrfOf(t, other.do("GET", "/support/requests", nil))
	good := csrfOf(t, b.do("GET", "/support/requests", nil))
	path := fmtPath("/support/requests/%d", e.request.ID)
	for name, tc := range map[string]struct {
		form url.Values
		hdr  []string
	}{
		"no token":              {url.Values{"state": {"done"}}, nil},
		"empty token":           {url.Values{"state": {"done"}, "csrf": {""}}, nil},
		"another session's":     {url.Values{"state": {"done"}, "csrf": {otherCSRF}}, nil},
		"cross-site with token": {url.Values{"state": {"done"}, "csrf": {good}}, []string{"Sec-Fetch-Site", "cross-site"}},
		"other origin":          {url.Values{"state": {"done"}, "csrf": {good}}, []string{"Origin", "https://evil.example"}},
	} {
		if p := b.do("POST", path, tc.form, tc.hdr...); p.status != http.StatusForbidden {
			t.Errorf("%s: POST = %d, want 403", name, p.status)
		}
	}
	// Sign-in and sign-out need theirs too.
	if p := e.browser(t).do("POST", "/support/signin", url.Values{"token": {admin.Secret}}); p.status != http.StatusForbidden {
		t.Errorf("sign in without the form's CSRF token = %d, want 403", p.status)
	}
	if p := b.do("POST", "/support/signout", url.Values{}); p.status != http.StatusForbidden {
		t.Errorf("sign out without CSRF token = %d, want 403", p.status)
	}
	if sr := e.requestState(t); sr.State != cloudstore.RequestOpen {
		t.Fatalf("request after forged posts = %s, want open", sr.State)
	}
	// The real form works.
	if p := b.do("POST", path, url.Values{"csrf": {good}, "state": {"scheduled"}, "note": {"Tuesday 9:00"}}); p.status != http.StatusSeeOther {
		t.Fatalf("POST with the token = %d %.300s, want 303", p.status, p.body)
	}
	if sr := e.requestState(t); sr.State != cloudstore.RequestScheduled || sr.Note != "Tuesday 9:00" {
		t.Errorf("request = %s %q, want scheduled with the note", sr.State, sr.Note)
	}
	if p := b.do("POST", "/support/signout", url.Values{"csrf": {good}}); p.status != http.StatusSeeOther {
		t.Errorf("sign out = %d, want 303", p.status)
	}
	if p := b.do("GET", "/support/alerts", nil); p.status != http.StatusUnauthorized && p.status != http.StatusSeeOther {
		t.Errorf("alerts after sign-out = %d, want to sign in", p.status)
	}
}

// TestSupport_CookieAndHeaders: the session cookie is __Host-, Secure, HttpOnly,
// SameSite=Strict; every response (pages, errors, the sign-in form, static files) has the
// strict CSP and the other security headers; bodies are bounded.
func TestSupport_CookieAndHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	p := b.signIn(e.member(t, "desk", client.RoleReader).Secret)
	var session *http.Cookie
	for _, c := range (&http.Response{Header: p.header}).Cookies() {
		if c.Name == support.CookieName {
			session = c
		}
	}
	if session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" || session.Domain != "" {
		t.Fatalf("session cookie = %+v, want __Host- Secure HttpOnly SameSite=Strict Path=/ no Domain", session)
	}
	for _, path := range []string{"/support/signin", "/support/alerts", "/support/alerts/999", "/support/nope", "/support/static/support.css",
		"/support/devices/" + e.device, "/support/requests?state=burning"} {
		p := b.do("GET", path, nil)
		if got := p.header.Get("Content-Security-Policy"); got != webui.CSP {
			t.Errorf("GET %s (%d): CSP %q, want %q", path, p.status, got, webui.CSP)
		}
		if p.header.Get("X-Frame-Options") != "DENY" || p.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: security headers missing: %v", path, p.header)
		}
		if strings.Contains(p.body, "<script") && !strings.Contains(path, "static") {
			// Hostile text appears escaped (&lt;script), never as a tag.
			t.Errorf("GET %s: the page has a script tag", path)
		}
	}
	csrf := csrfOf(t, b.do("GET", "/support/alerts", nil))
	big := url.Values{"csrf": {csrf}, "command": {"heater-self-test"}, "args": {strings.Repeat("1", support.MaxFormBytes)}}
	if p := b.do("POST", "/support/devices/"+e.device+"/diagnostics", big); p.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized form = %d, want 413", p.status)
	}
}

// TestSupport_HostileTextEscaped: an alert message a device's readings produced and a
// service request description an owner wrote are shown as text.
func TestSupport_HostileTextEscaped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser(t)
	b.mustSignIn(e.member(t, "desk", client.RoleContributor).Secret)
	for _, path := range []string{"/support/alerts", fmtPath("/support/alerts/%d", e.alert.ID), "/support/requests", "/support/devices/" + e.device} {
		p := b.do("GET", path, nil)
		if p.status != 200 {
			t.Fatalf("GET %s = %d", path, p.status)
		}
		for _, raw := range []string{"<script", "<img", "<b onmouseover", "<i>Owner"} {
			if strings.Contains(p.body, raw) {
				t.Errorf("GET %s shows %q unescaped", path, raw)
			}
		}
	}
}

// TestSupport_CapsSignIns: at most MaxSignIns sign-ins are checked at once; past it 503
// with Retry-After, so a flood of made-up tokens cannot pile requests on the security
// service.
func TestSupport_CapsSignIns(t *testing.T) {
	t.Parallel()
	st, err := cloudstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "cloud.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := diag.New(diag.Config{Store: st, Publish: func(context.Context, string, string, []byte) error { return nil }, Timeout: time.Hour, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	v := &slowVerifier{release: make(chan struct{}), arrived: make(chan struct{})}
	s, err := support.New(support.Config{Store: st, Verifier: v, Diag: d, SessionKey: make([]byte, 32), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Register(mux)
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	e := &env{srv: srv}
	var wg sync.WaitGroup
	for range support.MaxSignIns {
		b := e.browser(t)
		form := b.do("GET", "/support/signin", nil)
		csrf := csrfOf(t, form)
		wg.Go(func() {
			req, _ := http.NewRequest("POST", srv.URL+"/support/signin", strings.NewReader(url.Values{"csrf": {csrf}, "token": {"moat_x"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err := b.hc.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	select {
	case <-v.arrived:
	case <-time.After(30 * time.Second):
		close(v.release)
		t.Fatalf("%d sign-ins never reached the verifier", support.MaxSignIns)
	}
	b := e.browser(t)
	p := b.signIn("moat_another")
	close(v.release)
	wg.Wait()
	if p.status != http.StatusServiceUnavailable || p.header.Get("Retry-After") == "" {
		t.Errorf("sign-in %d while %d are checked: %d (Retry-After %q), want 503 with Retry-After", support.MaxSignIns+1, support.MaxSignIns, p.status, p.header.Get("Retry-After"))
	}
}

type slowVerifier struct {
	release chan struct{}
	mu      sync.Mutex
	n       int
	arrived chan struct{}
}

func (v *slowVerifier) Verify(ctx context.Context, _ string) (operator.Principal, error) {
	v.mu.Lock()
	v.n++
	if v.n == support.MaxSignIns {
		close(v.arrived)
	}
	v.mu.Unlock()
	select {
	case <-v.release:
	case <-ctx.Done():
	}
	return operator.Principal{}, operator.ErrUnauthenticated
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	_, err := support.New(support.Config{SessionKey: []byte("short")})
	for _, want := range []string{"store", "verifier", "diag", "session_key", "now"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(empty config) = %v, want it to name %s", err, want)
		}
	}
}
