package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/console"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// clock is a settable server clock, so that session expiry is tested without sleeping.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// browser is a cookie-keeping HTTP client of the console that does not follow redirects.
type browser struct {
	t    testing.TB
	base string
	hc   *http.Client
}

func newBrowser(t testing.TB, s *testenv.Server) *browser {
	t.Helper()
	hc := s.HTTPClient(t)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: t, base: s.URL, hc: hc}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r, err := http.NewRequestWithContext(b.t.Context(), method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.hc.Do(r)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

func (b *browser) get(path string) page { return b.do(http.MethodGet, path, nil) }

func (b *browser) post(path string, form url.Values) page { return b.do(http.MethodPost, path, form) }

// signIn signs in with token and fails the test unless it worked.
func (b *browser) signIn(token string) {
	b.t.Helper()
	p := b.post("/ui/sign-in", url.Values{"token": {token}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/" {
		b.t.Fatalf("POST /ui/sign-in = %d %q, want 303 to /ui/: %s", p.status, p.header.Get("Location"), p.body)
	}
}

func (b *browser) cookie() *http.Cookie {
	u, _ := url.Parse(b.base)
	for _, c := range b.hc.Jar.Cookies(u) {
		if c.Name == console.CookieName {
			return c
		}
	}
	return nil
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("page has no CSRF field: %s", p.body)
	}
	return m[1]
}

func startPlatform(t *testing.T, c *clock) *testenv.Platform {
	t.Helper()
	if c == nil {
		return testenv.NewPlatform(t)
	}
	return testenv.NewPlatform(t, testenv.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
}

// adminToken makes a fresh token for the tenant's Administrator.
func adminToken(t testing.TB, p *testenv.Platform) string {
	t.Helper()
	tok, err := p.Admin.CreateToken(t.Context(), client.TokenCreate{Name: "console"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

func TestConsole_SignInSetsHardenedCookieAndHeaders(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	b := newBrowser(t, p.Server)
	resp := b.post("/ui/sign-in", url.Values{"token": {adminToken(t, p)}})
	sc := resp.header.Get("Set-Cookie")
	for _, want := range []string{console.CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie = %q, want %s in it", sc, want)
		}
	}
	pg := b.get("/ui/t/" + p.Tenant + "/")
	if pg.status != http.StatusOK || !strings.Contains(pg.body, "DW100") {
		t.Fatalf("overview = %d, want 200 naming DW100: %s", pg.status, pg.body)
	}
	for k, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
	} {
		if got := pg.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if pg := b.get("/ui/static/console.css"); pg.status != http.StatusOK || pg.header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET console.css = %d with CSP %q, want 200 with the CSP", pg.status, pg.header.Get("Content-Security-Policy"))
	}
}

func TestConsole_RejectsWrongToken(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	b := newBrowser(t, p.Server)
	tok := adminToken(t, p)
	last := "A"
	if strings.HasSuffix(tok, "A") {
		last = "B"
	}
	for _, bad := range []string{"", "moat_nope", tok[:len(tok)-1] + last} {
		if pg := b.post("/ui/sign-in", url.Values{"token": {bad}}); pg.status != http.StatusUnauthorized || b.cookie() != nil {
			t.Errorf("sign in with %q = %d (cookie %v), want 401 and no cookie", bad, pg.status, b.cookie())
		}
	}
	if pg := b.get("/ui/"); pg.status != http.StatusSeeOther || pg.header.Get("Location") != "/ui/sign-in" {
		t.Errorf("GET /ui/ without a session = %d %q, want 303 to /ui/sign-in", pg.status, pg.header.Get("Location"))
	}
}

func TestConsole_LimitsFailedSignInsPerAddress(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	b := newBrowser(t, p.Server)
	for range 10 {
		b.post("/ui/sign-in", url.Values{"token": {"moat_nope"}})
	}
	// Even the right token is refused while the address is over its limit.
	if pg := b.post("/ui/sign-in", url.Values{"token": {adminToken(t, p)}}); pg.status != http.StatusTooManyRequests {
		t.Errorf("11th sign-in = %d, want 429", pg.status)
	}
}

func TestConsole_RejectsOversizedForm(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	b := newBrowser(t, p.Server)
	if pg := b.post("/ui/sign-in", url.Values{"token": {strings.Repeat("a", console.MaxSignInBytes)}}); pg.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized sign-in = %d, want 413", pg.status)
	}
}

func TestConsole_RejectsFormWithoutCSRFToken(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	d := p.NewDevice(true, "DW100/Production")
	b := newBrowser(t, p.Server)
	b.signIn(adminToken(t, p))
	devPath := "/ui/t/" + p.Tenant + "/devices/" + d.ID
	pg := b.get(devPath)
	csrf := csrfOf(t, pg)
	dev, err := p.Admin.GetDevice(t.Context(), p.Tenant, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"blocked": {"true"}, "version": {itoa(dev.Version)}}
	for name, f := range map[string]url.Values{
		"no token":    form,
		"wrong token": with(form, "csrf", csrf[:len(csrf)-2]+"xx"),
	} {
		if got := b.post(devPath+"/blocked", f); got.status != http.StatusForbidden {
			t.Errorf("block with %s = %d, want 403", name, got.status)
		}
	}
	// A cross-site post is refused even with the token.
	r, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, b.base+devPath+"/blocked", strings.NewReader(with(form, "csrf", csrf).Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := b.hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site block = %d, want 403", resp.StatusCode)
	}
	if got, _ := p.Admin.GetDevice(t.Context(), p.Tenant, d.ID); got.Blocked || got.Version != dev.Version {
		t.Errorf("device after refused posts: blocked %v version %d, want unchanged", got.Blocked, got.Version)
	}
	// With the token it works, through the API: the audit event names the console request.
	if got := b.post(devPath+"/blocked", with(form, "csrf", csrf)); got.status != http.StatusSeeOther {
		t.Fatalf("block with the token = %d, want 303: %s", got.status, got.body)
	}
	if got, _ := p.Admin.GetDevice(t.Context(), p.Tenant, d.ID); !got.Blocked {
		t.Error("device not blocked after the console's block")
	}
	ev, err := client.Collect(t.Context(), client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.AuditEvent], error) {
		return p.Admin.ListAuditEvents(ctx, p.Tenant, o)
	})
	if err != nil {
		t.Fatal(err)
	}
	last := ev[len(ev)-1]
	if last.Action != "device.update" || last.Detail != "blocked=true" || last.RemoteAddr == "" || last.RequestID == "" {
		t.Errorf("last audit event = %+v, want device.update blocked=true with the console request's address and ID", last)
	}
}

func with(v url.Values, k, val string) url.Values {
	out := url.Values{}
	for kk, vv := range v {
		out[kk] = vv
	}
	out.Set(k, val)
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestConsole_RejectsExpiredSession(t *testing.T) {
	t.Parallel()
	c := &clock{}
	p := startPlatform(t, c)
	home := "/ui/t/" + p.Tenant + "/"
	t.Run("idle", func(t *testing.T) {
		b := newBrowser(t, p.Server)
		b.signIn(adminToken(t, p))
		if pg := b.get(home); pg.status != http.StatusOK {
			t.Fatalf("overview = %d, want 200", pg.status)
		}
		c.Advance(console.IdleTimeout + time.Second)
		if pg := b.get(home); pg.status != http.StatusSeeOther || pg.header.Get("Location") != "/ui/sign-in" {
			t.Errorf("overview after idle timeout = %d %q, want 303 to sign-in", pg.status, pg.header.Get("Location"))
		}
	})
	t.Run("absolute", func(t *testing.T) {
		b := newBrowser(t, p.Server)
		b.signIn(adminToken(t, p))
		ck := b.cookie()
		for range int(console.SessionTTL/console.IdleTimeout) + 1 {
			c.Advance(console.IdleTimeout - time.Minute)
			b.get(home)
		}
		u, _ := url.Parse(b.base)
		b.hc.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/", Secure: true}})
		if pg := b.get(home); pg.status != http.StatusSeeOther {
			t.Errorf("overview after the absolute expiry = %d, want 303 to sign-in", pg.status)
		}
	})
}

func TestConsole_RejectsForgedSession(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	b := newBrowser(t, p.Server)
	u, _ := url.Parse(b.base)
	for _, v := range []string{"x", strings.Repeat("A", 43), strings.Repeat("A", 4000)} {
		b.hc.Jar.SetCookies(u, []*http.Cookie{{Name: console.CookieName, Value: v, Path: "/", Secure: true}})
		if pg := b.get("/ui/t/" + p.Tenant + "/"); pg.status != http.StatusSeeOther {
			t.Errorf("overview with forged cookie %.10q = %d, want 303 to sign-in", v, pg.status)
		}
		if pg := b.post("/ui/sign-out", url.Values{}); pg.status != http.StatusUnauthorized {
			t.Errorf("POST with forged cookie %.10q = %d, want 401", v, pg.status)
		}
	}
}

func TestConsole_RevokedTokenEndsSession(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	tok, err := p.Admin.CreateToken(t.Context(), client.TokenCreate{Name: "console"})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, p.Server)
	b.signIn(tok.Secret)
	if _, err := p.Admin.RevokeToken(t.Context(), tok.Token.ID); err != nil {
		t.Fatal(err)
	}
	if pg := b.get("/ui/t/" + p.Tenant + "/"); pg.status != http.StatusSeeOther {
		t.Errorf("overview after revoking the session's token = %d, want 303 to sign-in", pg.status)
	}
}

func TestConsole_SignOutEndsSession(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	b := newBrowser(t, p.Server)
	b.signIn(adminToken(t, p))
	ck := b.cookie()
	pg := b.get("/ui/t/" + p.Tenant + "/")
	if out := b.post("/ui/sign-out", url.Values{"csrf": {csrfOf(t, pg)}}); out.status != http.StatusSeeOther {
		t.Fatalf("sign out = %d, want 303", out.status)
	}
	u, _ := url.Parse(b.base)
	b.hc.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/", Secure: true}})
	if pg := b.get("/ui/t/" + p.Tenant + "/"); pg.status != http.StatusSeeOther {
		t.Errorf("overview with the signed-out cookie = %d, want 303 to sign-in", pg.status)
	}
}

func TestConsole_SignInLinkWorksOnce(t *testing.T) {
	t.Parallel()
	c := &clock{}
	p := startPlatform(t, c)
	l, err := p.Admin.CreateSignInLink(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.Path, "/ui/sign-in/link?code=") || l.ExpiresAt.After(c.Now().Add(5*time.Minute+time.Second)) {
		t.Fatalf("link = %+v, want /ui/sign-in/link?code=... expiring within 5 minutes", l)
	}
	b := newBrowser(t, p.Server)
	if pg := b.get(l.Path); pg.status != http.StatusSeeOther || pg.header.Get("Location") != "/ui/" || b.cookie() == nil {
		t.Fatalf("GET link = %d %q, want 303 to /ui/ with a session", pg.status, pg.header.Get("Location"))
	}
	if pg := b.get("/ui/t/" + p.Tenant + "/"); pg.status != http.StatusOK {
		t.Errorf("overview after the link = %d, want 200", pg.status)
	}
	other := newBrowser(t, p.Server)
	if pg := other.get(l.Path); pg.status != http.StatusUnauthorized || other.cookie() != nil {
		t.Errorf("GET link a second time = %d, want 401 and no session", pg.status)
	}
	l2, err := p.Admin.CreateSignInLink(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(mgmtLinkTTL + time.Second)
	if pg := other.get(l2.Path); pg.status != http.StatusUnauthorized {
		t.Errorf("GET expired link = %d, want 401", pg.status)
	}
}

const mgmtLinkTTL = 5 * time.Minute

// TestConsole_CrossTenantIsNotFound walks every console URL of tenant A's objects (and the
// same objects under B's tenant path) as a user of tenant B: each is 404, names nothing of
// A, and A is unchanged (rule 3).
func TestConsole_CrossTenantIsNotFound(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	w := newWorld(t, p)
	b := newBrowser(t, p.Server)
	b.signIn(w.tokB)
	home := b.get("/ui/t/" + w.tenantB + "/")
	if home.status != http.StatusOK {
		t.Fatalf("B's overview = %d, want 200", home.status)
	}
	csrf := csrfOf(t, home)
	before, err := p.Admin.GetDevice(t.Context(), p.Tenant, w.device)
	if err != nil {
		t.Fatal(err)
	}
	leaks := []string{p.Tenant, "Contoso", "DW100", w.device, "Production"}
	check := func(what string, pg page) {
		t.Helper()
		if pg.status != http.StatusNotFound {
			t.Errorf("%s as B = %d, want 404", what, pg.status)
		}
		for _, s := range leaks[1:] {
			if strings.Contains(pg.body, s) && !strings.Contains(what, s) {
				t.Errorf("%s as B shows %q", what, s)
			}
		}
	}
	for _, path := range w.aPaths() {
		check("GET "+path, b.get(path))
	}
	form := url.Values{"csrf": {csrf}, "version": {itoa(before.Version)}, "blocked": {"true"}, "group": {""},
		"target": {w.app.Path}, "confirm": {"yes"}}
	for _, path := range w.aPosts() {
		check("POST "+path, b.post(path, form))
	}
	after, err := p.Admin.GetDevice(t.Context(), p.Tenant, w.device)
	if err != nil || after.Version != before.Version || after.Blocked || after.GroupID != before.GroupID {
		t.Errorf("A's device after B's posts = %+v, %v; want unchanged", after, err)
	}
	deps, err := p.Admin.ListDeployments(t.Context(), p.Tenant, p.Product, w.group.ID, client.ListOptions{})
	if err != nil || len(deps.Items) != 0 {
		t.Errorf("A's deployments after B's posts = %+v, %v; want none", deps.Items, err)
	}
}
