package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/owners"
)

// location returns the status and Location of GET path in b (redirects not followed).
func (b *browser) location(path string) (int, string) {
	b.w.t.Helper()
	req, _ := http.NewRequestWithContext(b.w.t.Context(), http.MethodGet, b.w.srv.URL+path, nil)
	res, err := b.c.Do(req)
	if err != nil {
		b.w.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Location")
}

// requestReset asks for a reset of email through the form and returns the answer.
func (b *browser) requestReset(email string) (int, string) {
	b.w.t.Helper()
	return b.post("/portal/reset", url.Values{"csrf": {b.csrf("/portal/reset")}, "email": {email}})
}

// confirmReset opens the mailed link and sets password with it.
func (b *browser) confirmReset(link, password, again string) (int, string) {
	b.w.t.Helper()
	u, _ := url.Parse(link)
	st, body := b.get(u.RequestURI())
	m := csrfRE.FindStringSubmatch(body)
	if st != http.StatusOK || m == nil {
		return st, body
	}
	return b.post("/portal/reset/confirm", url.Values{"csrf": {m[1]}, "token": {u.Query().Get("token")}, "password": {password}, "password2": {again}})
}

// TestPortal_ResetWorksOnceAndEndsSessions: a reset link sets a new password once, and
// every session of the owner opened before it ends (a stolen cookie gets the sign-in page).
func TestPortal_ResetWorksOnceAndEndsSessions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	stolen := w.browser()
	stolen.signIn(a.Email, "password of a")
	if st, _ := stolen.get("/portal/appliances"); st != http.StatusOK {
		t.Fatalf("signed in before the reset = %d", st)
	}
	b := w.browser()
	if _, body := b.get("/portal/sign-in"); !strings.Contains(body, `href="/portal/reset"`) {
		t.Errorf("the sign-in page has no link to reset the password:\n%s", body)
	}
	if st, body := b.requestReset(a.Email); st != http.StatusOK || !strings.Contains(body, "If a@example.com has an account") {
		t.Fatalf("reset request = %d:\n%s", st, body)
	}
	link := w.resetLink(a.Email)
	if st, body := b.confirmReset(link, "new password of a", "another password"); st != http.StatusBadRequest || !strings.Contains(body, "passwords differ") {
		t.Errorf("reset with differing passwords = %d, want 400:\n%s", st, body)
	}
	if st, body := b.confirmReset(link, "new password of a", "new password of a"); st != http.StatusOK || !strings.Contains(body, "Password changed") {
		t.Fatalf("reset = %d:\n%s", st, body)
	}
	if st, loc := stolen.location("/portal/appliances"); st != http.StatusSeeOther || loc != "/portal/sign-in" {
		t.Errorf("the session from before the reset: GET appliances = %d to %q, want 303 to the sign-in page", st, loc)
	}
	if st, body := b.confirmReset(link, "third password!", "third password!"); st != http.StatusNotFound || !strings.Contains(body, "used already") {
		t.Errorf("the link again = %d, want 404 saying it was used:\n%s", st, body)
	}
	old := w.browser()
	tok := old.csrf("/portal/sign-in")
	if st, _ := old.post("/portal/sign-in", url.Values{"csrf": {tok}, "email": {a.Email}, "password": {"password of a"}}); st != http.StatusUnauthorized {
		t.Errorf("sign-in with the old password = %d, want 401", st)
	}
	fresh := w.browser()
	fresh.signIn(a.Email, "new password of a")
	if st, _ := fresh.get("/portal/appliances"); st != http.StatusOK {
		t.Errorf("signed in with the new password = %d", st)
	}
}

func TestPortal_ResetLinkExpires(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	b := w.browser()
	b.requestReset(a.Email)
	link := w.resetLink(a.Email)
	u, _ := url.Parse(link)
	st, body := b.get(u.RequestURI()) // the form, opened in time
	m := csrfRE.FindStringSubmatch(body)
	if st != http.StatusOK || m == nil {
		t.Fatalf("reset form = %d:\n%s", st, body)
	}
	w.clock.Advance(owners.ResetTokenLifetime)
	if st, body := b.post("/portal/reset/confirm", url.Values{"csrf": {m[1]}, "token": {u.Query().Get("token")},
		"password": {"late password!"}, "password2": {"late password!"}}); st != http.StatusNotFound || !strings.Contains(body, "expired") {
		t.Errorf("reset after %s = %d, want 404 saying it expired:\n%s", owners.ResetTokenLifetime, st, body)
	}
	if st, _ := b.get(u.RequestURI()); st != http.StatusNotFound {
		t.Errorf("the expired link's form = %d, want 404", st)
	}
	b.signIn(a.Email, "password of a")
}

// TestPortal_ResetRequestDoesNotRevealAccounts: a known and an unknown address get the
// same page, and only the known one is mailed.
func TestPortal_ResetRequestDoesNotRevealAccounts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.owner("known@example.com", "password of known")
	b := w.browser()
	st1, known := b.requestReset("known@example.com")
	st2, unknown := b.requestReset("never@example.com")
	strip := func(s, email string) string {
		return csrfRE.ReplaceAllString(strings.ReplaceAll(s, email, "ADDRESS"), "")
	}
	if st1 != st2 || strip(known, "known@example.com") != strip(unknown, "never@example.com") {
		t.Errorf("known address: %d\n%s\nunknown address: %d\n%s\nwant the same page", st1, known, st2, unknown)
	}
	w.resetLink("known@example.com")
	if link := w.mailedLink("never@example.com", "/portal/"); link != "" {
		t.Errorf("an address without an account was mailed %s", link)
	}
}

// TestPortal_ResetRequestsAreLimited: reset requests from one client share the sign-up
// limiter: past owners.SignUpBurst they are refused with 429 and Retry-After, and counted.
func TestPortal_ResetRequestsAreLimited(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	b := w.browser()
	tok := b.csrf("/portal/reset")
	for i := range owners.SignUpBurst {
		if st, body := b.post("/portal/reset", url.Values{"csrf": {tok}, "email": {"x" + string(rune('a'+i)) + "@example.com"}}); st != http.StatusOK {
			t.Fatalf("request #%d = %d:\n%s", i+1, st, body)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, w.srv.URL+"/portal/reset",
		strings.NewReader(url.Values{"csrf": {tok}, "email": {"y@example.com"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("request past the burst = %d (Retry-After %q), want 429 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

// TestPortal_ResetRefusesBadInput: malformed, oversized and hostile input to both reset
// forms is refused with a clear message, and nothing is stored or changed.
func TestPortal_ResetRefusesBadInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	b := w.browser()
	tok := b.csrf("/portal/reset")
	b.requestReset(a.Email)
	good, _ := url.Parse(w.resetLink(a.Email))
	token := good.Query().Get("token")
	for _, tc := range []struct {
		name, path string
		form       url.Values
		status     int
		message    string
	}{
		{"malformed email", "/portal/reset", url.Values{"email": {"nope"}}, 400, "email:"},
		{"hostile email", "/portal/reset", url.Values{"email": {"a@example.com\r\nBcc: all@example.com"}}, 400, "email:"},
		{"oversized email", "/portal/reset", url.Values{"email": {strings.Repeat("a", 300) + "@example.com"}}, 400, "email:"},
		{"oversized form", "/portal/reset", url.Values{"email": {strings.Repeat("a", MaxFormBytes)}}, 413, "too large"},
		{"short password", "/portal/reset/confirm", url.Values{"token": {token}, "password": {"short"}, "password2": {"short"}}, 400, "password: must be 10 to 128"},
		{"oversized password", "/portal/reset/confirm", url.Values{"token": {token}, "password": {strings.Repeat("p1", 100)}, "password2": {strings.Repeat("p1", 100)}}, 400, "password: must be 10 to 128"},
		{"the address as password", "/portal/reset/confirm", url.Values{"token": {token}, "password": {"A@example.com"}, "password2": {"A@example.com"}}, 400, "must not be your email address"},
		{"invalid UTF-8 password", "/portal/reset/confirm", url.Values{"token": {token}, "password": {"password \xff\xfe"}, "password2": {"password \xff\xfe"}}, 400, "not valid text"},
		{"no token", "/portal/reset/confirm", url.Values{"password": {"a fine password"}, "password2": {"a fine password"}}, 404, "not valid"},
		{"hostile token", "/portal/reset/confirm", url.Values{"token": {`"><script>alert(1)</script>`}, "password": {"a fine password"}, "password2": {"a fine password"}}, 404, "not valid"},
		{"oversized token", "/portal/reset/confirm", url.Values{"token": {strings.Repeat("A", 5000)}, "password": {"a fine password"}, "password2": {"a fine password"}}, 404, "not valid"},
		{"oversized confirm form", "/portal/reset/confirm", url.Values{"token": {token}, "password": {strings.Repeat("p", MaxFormBytes)}}, 413, "too large"},
	} {
		tc.form.Set("csrf", tok)
		st, body := b.post(tc.path, tc.form)
		if st != tc.status || !strings.Contains(body, tc.message) {
			t.Errorf("%s: POST %s = %d, want %d with %q:\n%.2000s", tc.name, tc.path, st, tc.status, tc.message, body)
		}
		if strings.Contains(body, "<script>alert") {
			t.Errorf("%s: the hostile token is echoed unescaped", tc.name)
		}
	}
	if st, _ := b.get("/portal/reset/confirm?token=" + url.QueryEscape(`<svg onload=alert(1)>`)); st != http.StatusNotFound {
		t.Errorf("GET confirm with a hostile token = %d, want 404", st)
	}
	// Nothing stored: one reset token (the good request's), the password unchanged, and
	// the good link still works.
	if n, err := w.store.CountOwnerTokens(t.Context(), a.ID, cloudstore.TokenReset, time.Time{}.Add(time.Microsecond)); err != nil || n != 1 {
		t.Errorf("reset tokens of a = %d, %v; want 1", n, err)
	}
	b.signIn(a.Email, "password of a")
	if st, body := b.confirmReset(good.String(), "new password of a", "new password of a"); st != http.StatusOK {
		t.Errorf("the good link after the refusals = %d:\n%s", st, body)
	}
}

// TestPortal_AccessLogHoldsNoSecrets signs up, verifies, signs in, resets the password
// and signs in again through the pages, then reads everything the portal and the owners'
// service logged: one access line per request, paths without their query, the owner when
// signed in, and no token, password or session ID anywhere.
func TestPortal_AccessLogHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	const (
		email = "logged@example.com"
		pw1   = "first secret password"
		pw2   = "second secret password"
	)
	b := w.browser()
	if st, body := b.post("/portal/sign-up", url.Values{"csrf": {b.csrf("/portal/sign-up")}, "email": {email}, "name": {"Logged"},
		"password": {pw1}, "password2": {pw1}}); st != http.StatusOK {
		t.Fatalf("sign-up = %d:\n%s", st, body)
	}
	verify, _ := url.Parse(w.verifyLink(email))
	if st, _ := b.get(verify.RequestURI()); st != http.StatusOK {
		t.Fatalf("verify = %d", st)
	}
	b.signIn(email, pw1)
	b.get("/portal/appliances")
	b.requestReset(email)
	reset, _ := url.Parse(w.resetLink(email))
	if st, body := b.confirmReset(reset.String(), pw2, pw2); st != http.StatusOK {
		t.Fatalf("reset = %d:\n%s", st, body)
	}
	b.signIn(email, pw2)
	b.get("/portal/appliances")
	b.get("/portal/no-such-page?token=" + reset.Query().Get("token"))

	var cookies []string
	u, _ := url.Parse(w.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		cookies = append(cookies, c.Value)
	}
	logs := w.logs.String()
	secrets := append([]string{verify.Query().Get("token"), reset.Query().Get("token"), pw1, pw2, "token=", "password="}, cookies...)
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("the log holds %q:\n%s", s, logs)
		}
	}
	o, _ := w.store.OwnerByEmail(t.Context(), email)
	lines, signedIn := 0, 0
	paths := map[string]bool{}
	for line := range strings.Lines(logs) {
		var e struct {
			Msg, Path, Method, RequestID string `json:",omitempty"`
			Status                       int
			OwnerID                      int64   `json:"owner_id"`
			Duration                     float64 `json:"duration_ms"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if e.Msg != "portal request" {
			continue
		}
		lines++
		paths[e.Path] = true
		if strings.ContainsAny(e.Path, "?") || e.Status == 0 || e.Method == "" {
			t.Errorf("access line %s: want a method, a path without query and a status", line)
		}
		if e.OwnerID == o.ID {
			signedIn++
		}
	}
	for _, p := range []string{"/portal/verify", "/portal/reset/confirm", "/portal/sign-up", "/portal/appliances", "/portal/no-such-page"} {
		if !paths[p] {
			t.Errorf("no access line for %s:\n%s", p, logs)
		}
	}
	if lines < 14 || signedIn < 2 {
		t.Errorf("%d access lines, %d naming the owner; want one per request and the owner on signed-in pages:\n%s", lines, signedIn, logs)
	}
}
