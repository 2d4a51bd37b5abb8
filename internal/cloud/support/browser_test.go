package support_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/testenv/browserenv"
)

// ArtifactsDir is where the browser test saves screenshots, from the repository root.
const ArtifactsDir = "test-artifacts/support"

// TestBrowser_Support drives the support view in headless Chromium: a staff member signs
// in with their moat token, sees an alert with its diagnostics result (hostile text shown
// as text, no dialog opens), changes a service request's state, runs diagnostics on a
// device and sees it pending; another tenant's token is refused at sign-in.
func TestBrowser_Support(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	opts := browserenv.Options(t, 1280, 900)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	defer func() { cancelC(); cancelA() }()
	var mu sync.Mutex
	var dialogs []string
	err := chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*cdppage.EventJavascriptDialogOpening); ok {
			mu.Lock()
			dialogs = append(dialogs, d.Message)
			mu.Unlock()
			go chromedp.Call(ctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{})
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	dir := filepath.Join("..", "..", "..", ArtifactsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(what, css string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG; below it, JPEG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	signIn := func(token string) {
		run("sign in", chromedp.Navigate(e.srv.URL+"/support/signin"), chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("signin")),
			chromedp.WaitReady(chromedp.CSS("body")))
	}

	// Another tenant's Administrator is refused.
	other, err := e.p.Op.CreateTenant(t.Context(), client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	om, err := e.p.Op.CreateMember(t.Context(), other.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	signIn(om.Secret)
	msg := text("refused", "#message")
	shot("signin-refused")
	if !strings.Contains(msg, "not a valid moat token") {
		t.Errorf("another tenant's sign-in message = %q", msg)
	}

	m := e.member(t, "Dana Support", client.RoleContributor)
	signIn(m.Secret)
	run("alerts", chromedp.WaitVisible(chromedp.ID("alerts")))
	who, alerts := text("who", "#whoami"), text("alerts", "#alerts")
	shot("alerts")
	if !strings.Contains(who, "Dana Support") || !strings.Contains(alerts, `<script>alert("alert-xss")</script>`) {
		t.Errorf("alerts page: who %q, alerts %q; want the member and the hostile message as text", who, alerts)
	}
	run("alert", chromedp.Navigate(e.srv.URL+fmtPath("/support/alerts/%d", e.alert.ID)), chromedp.WaitVisible(chromedp.ID("evidence")))
	result, desc := text("diagnostics", "table.diagnostics"), text("request", "table.requests")
	shot("alert")
	if !strings.Contains(result, "open circuit") || !strings.Contains(result, "succeeded") {
		t.Errorf("alert page diagnostics = %q, want the self-test's result", result)
	}
	if !strings.Contains(desc, `<script>alert("request-xss")</script>`) {
		t.Errorf("alert page request = %q, want the owner's text shown as text", desc)
	}

	// Change the service request's state.
	run("change request", chromedp.Navigate(e.srv.URL+"/support/requests?state=open"), chromedp.WaitVisible(chromedp.CSS("form.change")),
		chromedp.SetValue(chromedp.CSS("form.change select[name=state]"), "scheduled"),
		chromedp.SendKeys(chromedp.CSS("form.change textarea[name=note]"), "Tuesday 9:00-12:00"),
		chromedp.Submit(chromedp.CSS("form.change")), chromedp.WaitVisible(chromedp.CSS("table.requests")))
	shot("requests")
	if sr := e.requestState(t); sr.State != cloudstore.RequestScheduled || sr.Note != "Tuesday 9:00-12:00" {
		t.Errorf("request after the form = %s %q, want scheduled with the note", sr.State, sr.Note)
	}

	// Run diagnostics on the device: nobody answers, so it shows pending.
	run("run diagnostics", chromedp.Navigate(e.srv.URL+"/support/devices/"+e.device), chromedp.WaitVisible(chromedp.ID("run")),
		chromedp.SendKeys(chromedp.ID("command"), "heater-self-test"), chromedp.SendKeys(chromedp.ID("args"), `{"seconds":5}`),
		chromedp.Click(chromedp.ID("run-button")), chromedp.WaitVisible(chromedp.ID("ran")))
	ran, owner := text("ran", "#ran"), text("owner", "#owner")
	shot("device")
	ds, err := e.store.ListDiagnostics(t.Context(), cloudstore.DiagnosticFilter{Device: e.device, Limit: 10})
	if err != nil || len(ds) != 2 || ds[0].Command != "heater-self-test" || string(ds[0].Args) != `{"seconds":5}` || !strings.Contains(ran, ds[0].ID) {
		t.Errorf("diagnostics after the form: %+v, %v; page says %q", ds, err, ran)
	}
	if !strings.HasPrefix(owner, "Ana <i>Owner</i>") {
		t.Errorf("owner = %q, want the owner's name as text", owner)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialogs) > 0 {
		t.Errorf("hostile text ran as script: dialogs %q", dialogs)
	}
}
