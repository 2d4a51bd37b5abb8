package portal

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv/browserenv"
)

// ArtifactsDir is where the browser test saves a screenshot of each page, from the
// repository root (gitignored).
const ArtifactsDir = "test-artifacts/portal"

// seen records what the browser saw: JavaScript dialogs (a payload that ran would open
// one) and the CSP header of each document.
type seen struct {
	mu      sync.Mutex
	dialogs []string
	csp     map[string]string // document URL -> Content-Security-Policy
}

func (s *seen) dialog(m string) { s.mu.Lock(); s.dialogs = append(s.dialogs, m); s.mu.Unlock() }

func (s *seen) header(url, csp string) { s.mu.Lock(); s.csp[url] = csp; s.mu.Unlock() }

func (s *seen) snapshot() ([]string, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]string{}
	for k, v := range s.csp {
		m[k] = v
	}
	return append([]string(nil), s.dialogs...), m
}

// tab drives one headless Chromium tab; each step fails the test on error.
type tab struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	seen *seen
}

func newTab(t *testing.T) tab {
	t.Helper()
	opts := browserenv.Options(t, 420, 900) // a phone-sized window: the portal is for owners' phones
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	s := &seen{csp: map[string]string{}}
	err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *cdppage.EventJavascriptDialogOpening:
			s.dialog(e.Message)
			go chromedp.Call(ctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{})
		case *network.EventResponseReceived:
			if e.Type == network.ResourceTypeDocument {
				csp, _ := e.Response.Headers["Content-Security-Policy"].(string)
				s.header(e.Response.URL, csp)
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	dir := filepath.Join("..", "..", "..", ArtifactsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return tab{t: t, ctx: ctx, dir: dir, seen: s}
}

func (b tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func run[T any](b tab, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (b tab) shot(name string) {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// waitText waits until the element sel holds text with want (the page after a click,
// not the one before it).
func (b tab) waitText(sel, want string) {
	b.t.Helper()
	js := `(document.querySelector(` + strconv.Quote(sel) + `) || {textContent: ""}).textContent.includes(` + strconv.Quote(want) + `)`
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Evaluating while the page navigates fails; that is "not yet".
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.t.Fatalf("wait for %s to say %q: %v", sel, want, err)
		}
		select {
		case <-b.ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b tab) text(sel string) string {
	b.t.Helper()
	return run(b, "read "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// noScriptRan fails the test when a payload ran: window.__xss set or a dialog opened.
func (b tab) noScriptRan(where string) {
	b.t.Helper()
	if run(b, "read window.__xss on "+where, chromedp.Evaluate[bool](`window.__xss !== undefined`)) {
		b.t.Errorf("%s: a payload ran (window.__xss is set)", where)
	}
	if n := run(b, "count injected elements on "+where, chromedp.Evaluate[int](`document.querySelectorAll("main img, main script, main iframe").length`)); n != 0 {
		b.t.Errorf("%s: %d img/script/iframe elements in main, want 0 (payloads must be text)", where, n)
	}
	if d, _ := b.seen.snapshot(); len(d) > 0 {
		b.t.Errorf("%s: dialogs opened: %q", where, d)
	}
}

const (
	hostileNickname    = `<img src=x onerror="window.__xss=1">`
	hostileDescription = `</textarea><script>window.__xss=2</script>`
	hostileAlert       = `<svg onload="window.__xss=3">`
	hostileResult      = `{"note":"<iframe src=javascript:window.__xss=4>"}`
)

// TestBrowser_Portal drives the owners' portal in headless Chromium, as an owner on a
// phone: sign up, follow the mailed verification link (read from the outbox), sign in,
// claim an appliance with its code, see the usage charts, request service, answer the
// rinse-agent prompt, hand the appliance over, sign out, forget the password and set a new
// one with the mailed reset link, sign in with it. Along the way: the session cookie's flags,
// the CSP header of every page, a code that works once, another owner's appliance as 404,
// device- and owner-written payloads shown as text, and a form stripped of its CSRF token
// refused. Each page is saved as a screenshot in ArtifactsDir.
func TestBrowser_Portal(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	b := newTab(t)
	base := w.srv.URL
	ctx := t.Context()
	code := w.code(devA)
	other := w.owner("b@example.com", "password of b")
	w.claimed(other, devB)

	b.do("open sign-up", chromedp.Navigate(base+"/portal/sign-up"), chromedp.WaitVisible(chromedp.ID("email")))
	b.shot("01-sign-up")
	b.do("sign up",
		chromedp.SendKeys(chromedp.ID("email"), "ann@example.com"),
		chromedp.SendKeys(chromedp.ID("name"), "Ann Owner"),
		chromedp.SendKeys(chromedp.ID("password"), "my dishwasher password"),
		chromedp.SendKeys(chromedp.ID("password2"), "my dishwasher password"),
		chromedp.Click(chromedp.ID("sign-up")),
		chromedp.WaitVisible(chromedp.ID("message")),
	)
	b.shot("02-check-mail")
	b.do("follow the verification link", chromedp.Navigate(w.verifyLink("ann@example.com")), chromedp.WaitVisible(chromedp.ID("notice")))
	b.shot("03-verified")
	b.do("sign in",
		chromedp.Navigate(base+"/portal/sign-in"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), "ann@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "my dishwasher password"),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("no-appliances")),
	)
	b.shot("04-appliances-empty")
	cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || !session.Secure || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie = %+v, want HttpOnly, Secure, SameSite=Strict", session)
	}

	b.do("claim", chromedp.Navigate(base+"/portal/claim"), chromedp.WaitVisible(chromedp.ID("code")),
		chromedp.SendKeys(chromedp.ID("code"), strings.ToLower(code)),
		chromedp.Click(chromedp.ID("claim")),
	)
	b.waitText("#notice", "yours now")
	b.shot("05-claimed")
	ann, err := w.store.OwnerByEmail(ctx, "ann@example.com")
	if err != nil {
		t.Fatal(err)
	}
	app, err := w.owners.Appliance(ctx, ann.ID, devA)
	if err != nil {
		t.Fatalf("the browser's claim: %v", err)
	}
	// A claim code works once: the same code again is refused.
	b.do("claim again", chromedp.Navigate(base+"/portal/claim"), chromedp.WaitVisible(chromedp.ID("code")),
		chromedp.SendKeys(chromedp.ID("code"), code),
		chromedp.Click(chromedp.ID("claim")),
		chromedp.WaitVisible(chromedp.ID("error")),
	)
	if msg := b.text("#error"); !strings.Contains(msg, "not valid or has been used") {
		t.Errorf("second claim of the code says %q, want it refused", msg)
	}
	b.shot("06-claim-refused")

	// What the appliance did since: wash cycles, an alert with diagnostics, a prompt.
	w.cycles(devA, app.Since.Add(time.Second), 6)
	al, err := w.store.OpenAlert(ctx, cloudstore.NewAlert{Product: "dw100", Device: devA, Rule: "drying_hot", Severity: "warning",
		OpenedAt: app.Since.Add(10 * time.Minute), Message: "drying temperature unusual " + hostileAlert})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.CreateDiagnostic(ctx, cloudstore.NewDiagnostic{ID: "diag-1", Device: devA, Command: "heater-self-test",
		Args: json.RawMessage(`{}`), RequestedBy: "rule:drying_hot", RequestedAt: al.OpenedAt, Deadline: al.OpenedAt.Add(time.Minute), AlertID: al.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.FinishDiagnostic(ctx, devA, telemetry.DiagnosticReply{V: 1, ID: "diag-1", OK: true, At: al.OpenedAt.Add(10 * time.Second),
		Result: json.RawMessage(hostileResult)}, al.OpenedAt.Add(11*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.RecordReservation(ctx, cloudstore.Reservation{Device: devA, AlertID: al.ID, Part: "heater-element", Shop: "seattle-north",
		State: cloudstore.ReservationReserved, Reference: "R-1", CreatedAt: al.OpenedAt.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.CreatePrompt(ctx, cloudstore.Prompt{Device: devA, AlertID: al.ID, Consumable: "rinse-agent",
		BuyURL: "https://shop.example/rinse-agent", CreatedAt: al.OpenedAt}); err != nil {
		t.Fatal(err)
	}

	applianceURL := base + "/portal/appliances/" + devA
	b.do("name it (hostile)", chromedp.Navigate(applianceURL), chromedp.WaitVisible(chromedp.ID("nickname")),
		chromedp.SetValue(chromedp.ID("nickname"), hostileNickname),
		chromedp.Click(chromedp.ID("save")),
	)
	b.waitText("#notice", "Saved")
	if title := b.text("#title"); title != hostileNickname {
		t.Errorf("page title = %q, want the nickname as text %q", title, hostileNickname)
	}
	b.noScriptRan("appliance page")
	if bars := run(b, "count cycle bars", chromedp.Evaluate[int](`document.querySelectorAll("#chart-water-cycles .chart-bar rect").length`)); bars != 6 {
		t.Errorf("water-per-cycle chart has %d bars, want 6", bars)
	}
	if bars := run(b, "count drying bars", chromedp.Evaluate[int](`document.querySelectorAll("#chart-drying-cycles .chart-bar rect").length`)); bars != 6 {
		t.Errorf("drying-temperature chart has %d bars, want 6", bars)
	}
	if bars := run(b, "count week bars", chromedp.Evaluate[int](`document.querySelectorAll("#chart-energy-weeks .chart-bar rect").length`)); bars != usageWeeks {
		t.Errorf("energy-per-week chart has %d bars, want %d", bars, usageWeeks)
	}
	if msg := b.text("td.alert-message"); !strings.Contains(msg, hostileAlert) {
		t.Errorf("alert message shown as %q, want the payload as text", msg)
	}
	if res := b.text("code.diagnostic-result"); !strings.Contains(res, "<iframe") {
		t.Errorf("diagnostics result shown as %q, want the payload as text", res)
	}
	if res := b.text("td.reservation"); !strings.Contains(res, "heater-element: reserved at seattle-north") {
		t.Errorf("reservation shown as %q", res)
	}
	if st := b.text("#warranty-state"); !strings.HasPrefix(st, "Under warranty until") {
		t.Errorf("warranty = %q, want under warranty", st)
	}
	buy := run(b, "read buy link", chromedp.AttributeValue(chromedp.CSS("a.buy"), "rel"))
	if buy.Value != "noopener noreferrer" {
		t.Errorf("buy link rel = %q, want noopener noreferrer", buy.Value)
	}
	b.shot("07-appliance")

	b.do("request service",
		chromedp.SendKeys(chromedp.ID("description"), "It no longer dries. "+hostileDescription),
		chromedp.SetValue(chromedp.ID("preferred"), time.Now().UTC().Add(72*time.Hour).Format(preferredLayout)),
		chromedp.Click(chromedp.ID("request-service")),
		chromedp.WaitVisible(chromedp.CSS("td.request-description")),
	)
	if d := b.text("td.request-description"); !strings.Contains(d, hostileDescription) {
		t.Errorf("request description shown as %q, want the payload as text", d)
	}
	b.noScriptRan("after the service request")
	reqs, err := w.store.ListServiceRequests(ctx, cloudstore.ServiceRequestFilter{Device: devA})
	if err != nil || len(reqs) != 1 || reqs[0].Source != cloudstore.SourceOwner || reqs[0].OwnerID != ann.ID || reqs[0].Preferred.IsZero() {
		t.Errorf("service requests = %+v, %v; want one from the owner with a preferred time", reqs, err)
	}
	b.shot("08-service-requested")

	b.do("dismiss the prompt", chromedp.Click(chromedp.CSS("button.dismiss")))
	b.waitText("#notice", "dismissed")
	if n := run(b, "count prompts", chromedp.Evaluate[int](`document.querySelectorAll("section.prompt").length`)); n != 0 {
		t.Errorf("prompts after dismiss = %d, want 0", n)
	}

	// A form stripped of its CSRF token is refused.
	b.do("strip the token", chromedp.Evaluate[chromedp.Void](`document.querySelectorAll("input[name=csrf]").forEach(e => e.remove())`))
	b.do("post without token", chromedp.Click(chromedp.ID("save")), chromedp.WaitVisible(chromedp.ID("message")))
	if msg := b.text("#message"); !strings.Contains(msg, "expired or did not come from this site") {
		t.Errorf("form without its token: %q, want refused", msg)
	}
	b.shot("09-csrf-refused")

	// Another owner's appliance, by URL: 404, like one that does not exist.
	for _, path := range []string{"/portal/appliances/" + devB, "/portal/appliances/" + devX} {
		b.do("open "+path, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.ID("message")))
		if title := b.text("#title"); title != http.StatusText(http.StatusNotFound) {
			t.Errorf("%s shows %q, want Not Found", path, title)
		}
	}
	b.shot("10-other-owners-appliance")

	b.do("hand over", chromedp.Navigate(applianceURL), chromedp.WaitVisible(chromedp.ID("handover-button")),
		chromedp.Click(chromedp.ID("handover-button")), chromedp.WaitVisible(chromedp.ID("handover-code")))
	if c := b.text("#handover-code"); len(c) != 19 {
		t.Errorf("hand-over code = %q, want a claim code", c)
	}
	b.shot("11-handover")
	b.noScriptRan("hand-over page")

	b.do("sign out", chromedp.Navigate(applianceURL), chromedp.WaitVisible(chromedp.ID("sign-out")),
		chromedp.Click(chromedp.ID("sign-out")), chromedp.WaitVisible(chromedp.ID("sign-in")))
	b.do("after sign-out", chromedp.Navigate(applianceURL), chromedp.WaitVisible(chromedp.ID("sign-in")))

	// Forgot the password: ask for a link, follow it from the mail (the outbox row), set
	// a new password, sign in with it.
	b.do("forgot the password", chromedp.Click(chromedp.ID("forgot")), chromedp.WaitVisible(chromedp.ID("reset")))
	b.shot("12-forgot-password")
	b.do("ask for a reset link",
		chromedp.SendKeys(chromedp.ID("email"), "ann@example.com"),
		chromedp.Click(chromedp.ID("reset")),
	)
	b.waitText("#message", "If ann@example.com has an account")
	b.shot("13-reset-mailed")
	b.do("follow the reset link", chromedp.Navigate(w.resetLink("ann@example.com")), chromedp.WaitVisible(chromedp.ID("set-password")))
	b.shot("14-new-password")
	b.do("set the new password",
		chromedp.SendKeys(chromedp.ID("password"), "my new dishwasher password"),
		chromedp.SendKeys(chromedp.ID("password2"), "my new dishwasher password"),
		chromedp.Click(chromedp.ID("set-password")),
	)
	b.waitText("#notice", "password is changed")
	// The token went in the form's body: the page after it has no query to leak.
	if q := run(b, "read location", chromedp.Evaluate[string](`location.search`)); q != "" {
		t.Errorf("after the reset the address has the query %q, want none", q)
	}
	b.shot("15-password-changed")
	b.do("sign in with the new password",
		chromedp.Click(chromedp.ID("to-sign-in")),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), "ann@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "my new dishwasher password"),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("owner-name")),
	)
	b.shot("16-signed-in-after-reset")

	_, csp := b.seen.snapshot()
	if len(csp) < 10 {
		t.Errorf("saw %d documents' headers, want every page's", len(csp))
	}
	for u, h := range csp {
		if !strings.Contains(h, "default-src 'none'") || strings.Contains(h, "script-src") {
			t.Errorf("%s: Content-Security-Policy %q, want the strict policy without script", u, h)
		}
	}
}
