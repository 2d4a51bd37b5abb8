package console_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv/browserenv"
)

// ArtifactsDir is where the browser test saves a screenshot of each page, from the
// repository root (gitignored; named in the README).
const ArtifactsDir = "test-artifacts/console"

// headless starts a headless Chromium for the test. It trusts the test server by ignoring
// certificate errors: this browser only, in this test, against a loopback server.
func headless(t *testing.T) (context.Context, *dialogs) {
	t.Helper()
	opts := browserenv.Options(t, 1280, 900)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	d := &dialogs{}
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*cdppage.EventJavascriptDialogOpening); ok {
			d.add(e.Message)
			// Dismissed from another goroutine (a listener must not run commands), best effort:
			// the test fails on the dialog anyway.
			go chromedp.Call(ctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{})
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, d
}

// dialogs records JavaScript dialogs the page opened: a payload that ran would open one.
type dialogs struct {
	mu   sync.Mutex
	msgs []string
}

func (d *dialogs) add(m string) { d.mu.Lock(); d.msgs = append(d.msgs, m); d.mu.Unlock() }

func (d *dialogs) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.msgs...)
}

// tab drives one browser tab for a test: each step fails the test on error.
type tab struct {
	t   *testing.T
	ctx context.Context
	dir string
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

// shot saves a full-page screenshot into ArtifactsDir.
func (b tab) shot(name string) {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func newTab(t *testing.T) (tab, *dialogs) {
	t.Helper()
	ctx, d := headless(t)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	dir := filepath.Join("..", "..", ArtifactsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return tab{t: t, ctx: ctx, dir: dir}, d
}

// TestBrowser_Console drives the console in headless Chromium: sign in with a token, visit
// every page (each saved as a screenshot), see the SVG chart, take each action (block,
// move, deploy with its confirmation), sign out, and check the old cookie no longer works.
// Device-written text holding script and markup payloads (an error report's message and
// standard error, a group name) is shown as text and runs nothing, on every page.
func TestBrowser_Console(t *testing.T) {
	t.Parallel()
	p := startPlatform(t, nil)
	w := newWorld(t, p)
	b, dlg := newTab(t)
	base := p.Server.URL
	tbase := base + "/ui/t/" + p.Tenant
	noScriptRan := func(where string) {
		t.Helper()
		if run(b, "read window.__xss on "+where, chromedp.Evaluate[bool](`window.__xss !== undefined`)) {
			t.Errorf("%s: a payload ran (window.__xss is set)", where)
		}
		if d := dlg.seen(); len(d) > 0 {
			t.Errorf("%s: dialogs opened: %q", where, d)
		}
	}

	b.do("open sign-in", chromedp.Navigate(base+"/ui/sign-in"), chromedp.WaitVisible(chromedp.ID("token")))
	b.shot("01-sign-in")
	b.do("sign in",
		chromedp.SendKeys(chromedp.ID("token"), w.adminTok),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.CSS("nav.menu")),
	)
	cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "__Host-moat_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || !session.Secure || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie = %+v, want HttpOnly, Secure, SameSite=Strict", session)
	}

	pages := []struct{ name, path, want string }{
		{"02-fleet", "/", "Should run vs does run"},
		{"03-devices", "/devices", w.device[:12]},
		{"04-device", "/devices/" + w.device, "Update history"},
		{"05-device-error-reports", "/devices/" + w.device + "/error-reports", "app_crash"},
		{"06-error-reports", "/error-reports", "Download CSV"},
		{"06a-error-issues", "/issues", w.issue},
		{"06b-error-issue", "/issues/" + w.issue, "Versions affected"},
		{"06c-version-health", "/health", "dw100-app 1.0.0"},
		{"03a-devices-current", "/devices?product=DW100&state=current", "Should run"},
		{"07-deployments", "/deployments", "Production"},
		{"08-group", "/products/" + p.Product + "/groups/" + w.group.ID, "Deploy an app image"},
		{"09-audit", "/audit", "device.claim"},
		{"10-device-in-payload-group", "/devices/" + w.evil, imgPayload},
	}
	for _, pg := range pages {
		b.do("visit "+pg.name, chromedp.Navigate(tbase+pg.path), chromedp.WaitVisible(chromedp.CSS("main")))
		text := run(b, "read "+pg.name, chromedp.Text(chromedp.CSS("main")))
		b.shot(pg.name)
		if !strings.Contains(text, pg.want) {
			t.Errorf("page %s does not show %q:\n%s", pg.name, pg.want, text)
		}
		noScriptRan(pg.name)
	}

	insights(t, b, w, tbase, noScriptRan)
	stagedRollout(t, b, w, tbase, noScriptRan)

	// The device page: the chart is an inline SVG with a bar per day, and the payloads are
	// text, not elements.
	b.do("device page", chromedp.Navigate(tbase+"/devices/"+w.device), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	if bars := run(b, "count bars", chromedp.Evaluate[int](`document.querySelectorAll("svg.chart .chart-bar rect").length`)); bars != 14 {
		t.Errorf("chart has %d bars, want 14 (one per day)", bars)
	}
	if n := run(b, "count elements", chromedp.Evaluate[int](`document.querySelectorAll("main img, main script").length`)); n != 0 {
		t.Errorf("device page has %d img/script elements in main, want 0 (payloads must be text)", n)
	}
	message := run(b, "read message", chromedp.Text(chromedp.CSS("td.message")))
	stderr := run(b, "read stderr", chromedp.Text(chromedp.CSS("pre.stderr")))
	if message != scriptPayload || !strings.Contains(stderr, imgPayload) {
		t.Errorf("report texts = %q / %q, want the payloads shown as text", message, stderr)
	}
	noScriptRan("device page")
	if st := run(b, "read update state", chromedp.Text(chromedp.ID("update-state"))); !strings.HasPrefix(st, "failed at ") {
		t.Errorf("device's update state = %q, want failed with its time", st)
	}

	// Actions: block, move, deploy (with its confirmation step).
	b.do("block", chromedp.Click(chromedp.ID("block")), chromedp.WaitVisible(chromedp.ID("unblock")))
	b.shot("11-device-blocked")
	if state := run(b, "read state", chromedp.Text(chromedp.ID("device-state"))); !strings.HasPrefix(state, "blocked") {
		t.Errorf("device state after Block = %q, want blocked", state)
	}
	b.do("unblock", chromedp.Click(chromedp.ID("unblock")), chromedp.WaitVisible(chromedp.ID("block")))
	// #device-group is on the page before the move too: mark this page, and wait for the
	// page the move answers with (one without the mark) before reading it.
	if !run(b, "mark the page before the move", chromedp.Evaluate[bool](`(document.body.dataset.beforeMove = "1") === "1" && document.querySelector("body[data-before-move]") !== null`)) {
		t.Fatal("the page before the move could not be marked")
	}
	b.do("move",
		chromedp.SetValue(chromedp.ID("group"), "DW100/Field Test"),
		chromedp.Click(chromedp.ID("move")),
		chromedp.WaitVisible(chromedp.CSS("body:not([data-before-move])")),
		chromedp.WaitVisible(chromedp.ID("device-group")),
	)
	if group := run(b, "read group", chromedp.Text(chromedp.ID("device-group"))); group != "DW100/Field Test" {
		t.Errorf("device group after Move = %q, want DW100/Field Test", group)
	}
	if d, err := p.Admin.GetDevice(t.Context(), p.Tenant, w.device); err != nil || d.Blocked {
		t.Errorf("device after block and unblock = blocked %v, %v; want unblocked", d.Blocked, err)
	}
	b.do("review deployment",
		chromedp.Navigate(tbase+"/products/"+p.Product+"/groups/"+w.group.ID),
		chromedp.SendKeys(chromedp.ID("target"), w.app.Path),
		chromedp.Click(chromedp.ID("deploy")),
		chromedp.WaitVisible(chromedp.ID("confirm")),
	)
	b.shot("12-deploy-confirm")
	confirm := run(b, "read confirmation", chromedp.Text(chromedp.ID("confirm-target")))
	b.do("deploy", chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("deployments")))
	b.shot("13-group-deployed")
	deps := run(b, "read deployments", chromedp.Text(chromedp.ID("deployments")))
	if confirm != w.app.Path || !strings.Contains(deps, w.app.Path) {
		t.Errorf("confirmation %q, deployments %q; want %s in both", confirm, deps, w.app.Path)
	}
	got, err := p.Admin.ListDeployments(t.Context(), p.Tenant, p.Product, w.group.ID, client.ListOptions{})
	if err != nil || len(got.Items) != 1 || got.Items[0].Target != w.app.Path {
		t.Errorf("deployments after the console's deploy = %+v, %v; want %s", got.Items, err, w.app.Path)
	}

	// Sign out; the old cookie, put back, no longer opens a page.
	b.do("sign out", chromedp.Click(chromedp.ID("sign-out")), chromedp.WaitVisible(chromedp.ID("sign-in")))
	yes := true
	if _, err := chromedp.Call(b.ctx, network.SetCookie, network.SetCookieParams{Name: session.Name, Value: session.Value,
		URL: base + "/", Path: "/", Secure: &yes, HTTPOnly: &yes, SameSite: network.CookieSameSiteStrict}); err != nil {
		t.Fatal(err)
	}
	b.do("old cookie", chromedp.Navigate(tbase+"/"), chromedp.WaitVisible(chromedp.ID("sign-in")))
	loc := run(b, "location", chromedp.Location())
	if u, err := url.Parse(loc); err != nil || u.Path != "/ui/sign-in" {
		t.Errorf("after sign-out the old cookie lands on %q, want /ui/sign-in", loc)
	}
	noScriptRan("after sign-out")
}

// insights checks the error-insight pages in the browser: the issue's chart of reports
// per day (30 bars) and the version-health chart (a bar per version that devices run),
// the payloads of the reports shown as text on the issue page and the report list, and
// the CSV downloaded through the console (session cookie only) with the device's formula
// neutralised.
func insights(t *testing.T, b tab, w *world, tbase string, noScriptRan func(string)) {
	t.Helper()
	b.do("issue page", chromedp.Navigate(tbase+"/issues/"+w.issue), chromedp.WaitVisible(chromedp.CSS("#issue-chart svg.chart")))
	if bars := run(b, "count issue bars", chromedp.Evaluate[int](`document.querySelectorAll("#issue-chart svg.chart .chart-bar rect").length`)); bars != 30 {
		t.Errorf("issue chart has %d bars, want 30 (one per day)", bars)
	}
	msg := run(b, "read issue message", chromedp.Text(chromedp.ID("issue-message")))
	stderr := run(b, "read issue stderr", chromedp.Text(chromedp.CSS("pre.stderr")))
	if msg != scriptPayload || !strings.Contains(stderr, imgPayload) {
		t.Errorf("issue page texts = %q / %q, want the payloads shown as text", msg, stderr)
	}
	if href := run(b, "read device link", chromedp.AttributeValue(chromedp.CSS("a.device-link"), "href")).Value; href != "/ui/t/"+w.p.Tenant+"/devices/"+w.device {
		t.Errorf("issue report links to %q, want its device", href)
	}
	for _, page := range []string{"/issues/" + w.issue, "/error-reports", "/issues"} {
		b.do("open "+page, chromedp.Navigate(tbase+page), chromedp.WaitVisible(chromedp.CSS("main")))
		if n := run(b, "count elements", chromedp.Evaluate[int](`document.querySelectorAll("main img, main script").length`)); n != 0 {
			t.Errorf("%s has %d img/script elements in main, want 0 (payloads must be text)", page, n)
		}
		noScriptRan(page)
	}

	b.do("health page", chromedp.Navigate(tbase+"/health?window=30d"), chromedp.WaitVisible(chromedp.CSS("#health-chart svg.chart")))
	labels := run(b, "read health labels", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#health-chart .chart-label")].map(e => e.textContent)`))
	if strings.Join(labels, ",") != "moat-os 1.0.0,dw100-app 1.0.0" {
		t.Errorf("version-health chart labels = %q, want the OS and the app version", labels)
	}

	// The download: the browser follows the console's link with its cookie; the file is
	// the API's CSV.
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	progress := chromedp.Events(ctx, cdpbrowser.DownloadProgress)
	yes := true
	if _, err := chromedp.Call(b.ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: &yes}); err != nil {
		t.Fatal(err)
	}
	b.do("download CSV", chromedp.Navigate(tbase+"/error-reports"), chromedp.Click(chromedp.ID("download-csv")))
	var file string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if ev.State == cdpbrowser.DownloadProgressStateCanceled {
			t.Fatal("the browser cancelled the download")
		}
		if ev.State == cdpbrowser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("downloaded CSV = %d rows, %v", len(rows), err)
	}
	msgCol := indexOf(rows[0], "message")
	var formula []string
	for _, r := range rows[1:] {
		if strings.Contains(r[msgCol], "HYPERLINK") {
			formula = append(formula, r[msgCol])
		}
	}
	if len(formula) != 1 || formula[0] != "'"+formulaPayload {
		t.Errorf("downloaded formula cells = %q, want one, neutralised: %q", formula, "'"+formulaPayload)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "error-reports.csv"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// stagedRollout checks the group page of a group whose current deployment is staged (issue
// 12): the rollout's state, a row per stage with its share and whether it is open, the
// gate's figures beside their thresholds, and the trip that paused it, all as text in the
// group whose name is a payload.
func stagedRollout(t *testing.T, b tab, w *world, tbase string, noScriptRan func(string)) {
	t.Helper()
	ctx, p := t.Context(), w.p
	app2 := p.PublishApp("dw100-app", "1.1.0", 1, "DW100")
	if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, w.evilGrp.ID, client.DeploymentCreate{Target: w.app.Path}); err != nil {
		t.Fatal(err)
	}
	crashFree, failed := 99.0, 5.0
	d, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, w.evilGrp.ID, client.DeploymentCreate{Target: app2.Path,
		Rollout: &client.RolloutCreate{Stages: []float64{1, 50, 100}, Soak: "1h", AutoRollback: true,
			Gate: client.Gate{MinCrashFree: &crashFree, MaxFailedInstalls: &failed, MinDeviceHours: 24, MinInstalls: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	// The gate paused it, as the advance job records a trip.
	err = p.Server.Store().InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(p.Tenant))
		if err != nil {
			return err
		}
		dep, err := tt.Deployments().Get(ctx, product.ID(p.Product), product.GroupID(w.evilGrp.ID), d.ID)
		if err != nil {
			return err
		}
		dep.Rollout.State, dep.Rollout.Version = device.RolloutPaused, dep.Rollout.Version+1
		dep.Rollout.Trip = &device.GateTrip{Figure: device.FigureCrashFree, Value: 50, Threshold: 99, Stage: 0, At: time.Now()}
		return tt.Deployments().UpdateRollout(ctx, dep)
	})
	if err != nil {
		t.Fatal(err)
	}
	b.do("group with a staged deployment", chromedp.Navigate(tbase+"/products/"+p.Product+"/groups/"+w.evilGrp.ID),
		chromedp.WaitVisible(chromedp.ID("rollout-stages")))
	b.shot("08a-group-rollout")
	rows := run(b, "read stages", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#rollout-stages tbody tr")].map(r => [...r.cells].map(c => c.textContent).join("|"))`))
	// The evil group's one device is counted in the stage its hash places it in.
	want := []string{"1|1 %|open|", "2|50 %|closed|", "3|100 %|closed|"}
	targeted := 0
	for i, r := range rows {
		if i < len(want) && !strings.HasPrefix(r, want[i]) {
			t.Errorf("stage row %d = %q, want it to start %q", i+1, r, want[i])
		}
		if cells := strings.Split(r, "|"); len(cells) == 7 {
			n, _ := strconv.Atoi(cells[3])
			targeted += n
		}
	}
	if len(rows) != 3 || targeted != 1 {
		t.Errorf("stage rows = %q, want 3 rows targeting the group's one device", rows)
	}
	state := run(b, "read state", chromedp.Text(chromedp.ID("rollout-state")))
	trip := run(b, "read trip", chromedp.Text(chromedp.ID("rollout-trip")))
	gate := run(b, "read gate", chromedp.Text(chromedp.ID("rollout-gate")))
	if state != "paused, stage 1 of 3 (1 %)" || !strings.Contains(trip, "crash_free_percent 50 beyond the threshold 99 in stage 1") {
		t.Errorf("rollout state %q, trip %q; want paused at stage 1 of 3 and the crash-free trip", state, trip)
	}
	for _, s := range []string{"Crash-free devices", "at least 99 %", "Failed installs", "at most 5 %", "Crash rate", "not checked", "at least 24 to judge crashes"} {
		if !strings.Contains(gate, s) {
			t.Errorf("gate table lacks %q:\n%s", s, gate)
		}
	}
	if n := run(b, "count elements", chromedp.Evaluate[int](`document.querySelectorAll("main img, main script").length`)); n != 0 {
		t.Errorf("rollout page has %d img/script elements in main, want 0", n)
	}
	noScriptRan("group with a staged deployment")
}
