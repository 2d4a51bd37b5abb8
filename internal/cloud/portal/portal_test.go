package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/webui"
)

var (
	devA = strings.Repeat("a", 64)
	devB = strings.Repeat("b", 64)
	devX = strings.Repeat("c", 64) // nobody's
)

func TestConfig_ValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	err := Config{}.Validate()
	for _, want := range []string{"owners", "store", "now", "logger"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Config{}.Validate() = %v, want a problem with %s", err, want)
		}
	}
}

// TestPortal_RefusesFormsWithoutCSRFToken posts every form of the portal, signed in and
// not, without its CSRF token, with another session's, and cross-site with the right one:
// each is 403 and changes nothing.
func TestPortal_RefusesFormsWithoutCSRFToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	w.claimed(a, devA)
	b := w.browser()
	b.signIn(a.Email, "password of a")
	other := w.browser()
	otherTok := other.csrf("/portal/sign-in")
	good := b.csrf("/portal/appliances/" + devA)
	forms := map[string]url.Values{
		"/portal/sign-out": {},
		"/portal/claim":    {"code": {w.code(devX)}},
		"/portal/appliances/" + devA + "/settings":          {"nickname": {"pwned"}, "shop": {""}},
		"/portal/appliances/" + devA + "/service":           {"description": {"forged"}},
		"/portal/appliances/" + devA + "/prompts/1/dismiss": {},
		"/portal/appliances/" + devA + "/handover":          {},
	}
	for _, rt := range w.portal.routes() {
		if rt.method == http.MethodPost && !rt.signedIn {
			forms[rt.pattern] = url.Values{"email": {"z@example.com"}, "name": {"Z"}, "password": {"password of z"}, "password2": {"password of z"}}
		}
	}
	attempts := []struct {
		name   string
		token  string
		header http.Header
	}{
		{"no token", "", nil},
		{"another visitor's token", otherTok, nil},
		{"a forged token", webui.CSRFToken(strings.Repeat("x", webui.IDLength)), nil},
		{"cross-site with the right token", good, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		{"other origin with the right token", good, http.Header{"Origin": {"https://evil.example"}}},
	}
	for path, form := range forms {
		for _, at := range attempts {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			if at.token != "" {
				f.Set("csrf", at.token)
			}
			b.header = at.header
			if st, _ := b.post(path, f); st != http.StatusForbidden {
				t.Errorf("POST %s with %s = %d, want 403", path, at.name, st)
			}
		}
	}
	b.header = nil
	// Nothing changed: still signed in, no claim, no request, the nickname as it was.
	if st, _ := b.get("/portal/appliances"); st != http.StatusOK {
		t.Errorf("after the forged sign-out the session is gone (%d)", st)
	}
	if got, _ := w.store.GetAppliance(t.Context(), devA); got.Nickname != "dw100" {
		t.Errorf("nickname = %q, want unchanged", got.Nickname)
	}
	if _, err := w.store.GetAppliance(t.Context(), devX); err == nil {
		t.Error("a forged claim claimed an appliance")
	}
	if rs, _ := w.store.ListServiceRequests(t.Context(), cloudstore.ServiceRequestFilter{Device: devA}); len(rs) != 0 {
		t.Errorf("service requests after forged posts = %d, want 0", len(rs))
	}
	if _, err := w.store.OwnerByEmail(t.Context(), "z@example.com"); err == nil {
		t.Error("a forged sign-up created an account")
	}
	// With the token the same form works.
	if st, _ := b.post("/portal/appliances/"+devA+"/settings", url.Values{"csrf": {good}, "nickname": {"Kitchen"}}); st != http.StatusSeeOther {
		t.Errorf("POST settings with the token = %d, want 303", st)
	}
}

// TestPortal_OwnerSeesNothingOfAnothersAppliances walks every route with a device in its
// pattern as owner A with B's device: each answers 404, the same as a device nobody owns,
// and B's appliance is unchanged. A route added without a case here fails the test.
func TestPortal_OwnerSeesNothingOfAnothersAppliances(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	bOwner := w.owner("b@example.com", "password of b")
	w.claimed(a, devA)
	w.claimed(bOwner, devB)
	if err := w.store.UpdateAppliance(t.Context(), bOwner.ID, devB, "B's secret kitchen", "tacoma"); err != nil {
		t.Fatal(err)
	}
	prompt, err := w.store.CreatePrompt(t.Context(), cloudstore.Prompt{Device: devB, Consumable: "rinse-agent", BuyURL: "https://shop.example/rinse", CreatedAt: w.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	w.cycles(devB, w.clock.Now().Add(time.Second), 3)
	br := w.browser()
	br.signIn(a.Email, "password of a")
	tok := br.csrf("/portal/appliances/" + devA)
	forms := map[string]url.Values{
		"/portal/appliances/{device}":                      nil,
		"/portal/appliances/{device}/settings":             {"nickname": {"mine now"}, "shop": {""}},
		"/portal/appliances/{device}/service":              {"description": {"A's request on B's appliance"}},
		"/portal/appliances/{device}/prompts/{id}/dismiss": {},
		"/portal/appliances/{device}/handover":             {},
	}
	checked := 0
	for _, rt := range w.portal.routes() {
		if !strings.Contains(rt.pattern, "{device}") {
			continue
		}
		form, ok := forms[rt.pattern]
		if !ok {
			t.Errorf("route %s %s has no cross-owner case", rt.method, rt.pattern)
			continue
		}
		checked++
		for _, dev := range []string{devB, devX, "not-a-device"} {
			path := strings.NewReplacer("{device}", dev, "{id}", strconv.FormatInt(prompt.ID, 10)).Replace(rt.pattern)
			var st int
			var body string
			if rt.method == http.MethodGet {
				st, body = br.get(path)
			} else {
				f := url.Values{"csrf": {tok}}
				for k, v := range form {
					f[k] = v
				}
				st, body = br.post(path, f)
			}
			if st != http.StatusNotFound || strings.Contains(body, "secret kitchen") || strings.Contains(body, "rinse") {
				t.Errorf("%s %s as A = %d, want 404 and nothing of B's:\n%s", rt.method, path, st, body)
			}
		}
	}
	if checked != len(forms) {
		t.Errorf("checked %d routes with a device, want %d", checked, len(forms))
	}
	if _, body := br.get("/portal/appliances"); strings.Contains(body, devB) || strings.Contains(body, "secret kitchen") {
		t.Errorf("A's appliance list shows B's appliance:\n%s", body)
	}
	got, _ := w.store.GetAppliance(t.Context(), devB)
	if got.OwnerID != bOwner.ID || got.Nickname != "B's secret kitchen" || got.Shop != "tacoma" {
		t.Errorf("B's appliance after A's attempts = %+v, want unchanged", got)
	}
	if ps, _ := w.store.ListPrompts(t.Context(), cloudstore.PromptFilter{Device: devB, Open: true}); len(ps) != 1 {
		t.Errorf("B's open prompts = %d, want 1 (not dismissed by A)", len(ps))
	}
	if rs, _ := w.store.ListServiceRequests(t.Context(), cloudstore.ServiceRequestFilter{Device: devB}); len(rs) != 0 {
		t.Errorf("service requests on B's appliance = %d, want 0", len(rs))
	}
	// B's claim code was not replaced by a hand-over A asked for: B can hand over, and
	// A's own appliance's prompt route refuses B's prompt ID.
	if st, _ := br.post("/portal/appliances/"+devA+"/prompts/"+strconv.FormatInt(prompt.ID, 10)+"/dismiss", url.Values{"csrf": {tok}}); st != http.StatusNotFound {
		t.Errorf("dismiss B's prompt through A's appliance = %d, want 404", st)
	}
}

// TestPortal_RefusesBadInput sends malformed, oversized and hostile input to every form:
// each is refused with a clear message and nothing is stored.
func TestPortal_RefusesBadInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	w.claimed(a, devA)
	b := w.browser()
	b.signIn(a.Email, "password of a")
	tok := b.csrf("/portal/appliances/" + devA)
	svc := "/portal/appliances/" + devA + "/service"
	set := "/portal/appliances/" + devA + "/settings"
	for _, tc := range []struct {
		name, path string
		form       url.Values
		status     int
		message    string
	}{
		{"empty description", svc, url.Values{"description": {"  "}}, 400, "description: required"},
		{"oversized description", svc, url.Values{"description": {strings.Repeat("x", cloudstore.MaxDescriptionBytes+1)}}, 400, "description: at most 2000 bytes"},
		{"control characters in description", svc, url.Values{"description": {"broken\x00\x1b[2J"}}, 400, "control characters"},
		{"invalid UTF-8 description", svc, url.Values{"description": {"broken \xff"}}, 400, "not valid UTF-8"},
		{"malformed preferred time", svc, url.Values{"description": {"noise"}, "preferred": {"2026-13-45T99:99"}}, 400, "preferred: a date and time"},
		{"hostile preferred time", svc, url.Values{"description": {"noise"}, "preferred": {"<script>alert(1)</script>"}}, 400, "preferred: a date and time"},
		{"past preferred time", svc, url.Values{"description": {"noise"}, "preferred": {"2020-01-01T10:00"}}, 400, "preferred: must be in the future"},
		{"far preferred time", svc, url.Values{"description": {"noise"}, "preferred": {"2099-01-01T10:00"}}, 400, "preferred: must be between now and a year from now"},
		{"oversized form", svc, url.Values{"description": {strings.Repeat("x", MaxFormBytes)}}, 413, "too large"},
		{"empty nickname", set, url.Values{"nickname": {""}}, 400, "nickname: required"},
		{"oversized nickname", set, url.Values{"nickname": {strings.Repeat("n", cloudstore.MaxNicknameBytes+1)}}, 400, "nickname: at most"},
		{"newline in nickname", set, url.Values{"nickname": {"a\nb"}}, 400, "control characters"},
		{"unknown shop", set, url.Values{"nickname": {"ok"}, "shop": {"evil-shop"}}, 400, "shop: choose one"},
		{"malformed claim code", "/portal/claim", url.Values{"code": {"<img src=x>"}}, 400, "a claim code is 16 letters"},
		{"oversized claim code", "/portal/claim", url.Values{"code": {strings.Repeat("7", 100)}}, 400, "a claim code is 16 letters"},
		{"wrong claim code", "/portal/claim", url.Values{"code": {"7K3M-Q9XD-2B8F-RW4T"}}, 400, "not valid or has been used"},
	} {
		tc.form.Set("csrf", tok)
		st, body := b.post(tc.path, tc.form)
		if st != tc.status || !strings.Contains(body, tc.message) {
			t.Errorf("%s: POST %s = %d, want %d with %q:\n%.2000s", tc.name, tc.path, st, tc.status, tc.message, body)
		}
	}
	if rs, _ := w.store.ListServiceRequests(t.Context(), cloudstore.ServiceRequestFilter{Device: devA}); len(rs) != 0 {
		t.Errorf("service requests stored from bad input: %+v", rs)
	}
	if got, _ := w.store.GetAppliance(t.Context(), devA); got.Nickname != "dw100" || got.Shop != "seattle-north" {
		t.Errorf("appliance after bad input = %+v, want unchanged", got)
	}

	// Sign-up and sign-in, not signed in.
	anon := w.browser()
	atok := anon.csrf("/portal/sign-up")
	for _, tc := range []struct {
		name, path string
		form       url.Values
		status     int
		message    string
	}{
		{"malformed email", "/portal/sign-up", url.Values{"email": {"nope"}, "name": {"Z"}, "password": {"password of z"}, "password2": {"password of z"}}, 400, "email:"},
		{"hostile email", "/portal/sign-up", url.Values{"email": {"z@example.com\r\nBcc: all@example.com"}, "name": {"Z"}, "password": {"password of z"}, "password2": {"password of z"}}, 400, "email:"},
		{"hostile name", "/portal/sign-up", url.Values{"email": {"z@example.com"}, "name": {"Z\x1b]0;pwned\x07"}, "password": {"password of z"}, "password2": {"password of z"}}, 400, "name: control characters"},
		{"short password", "/portal/sign-up", url.Values{"email": {"z@example.com"}, "name": {"Z"}, "password": {"short"}, "password2": {"short"}}, 400, "password: must be 10 to 128"},
		{"passwords differ", "/portal/sign-up", url.Values{"email": {"z@example.com"}, "name": {"Z"}, "password": {"password of z"}, "password2": {"password of y"}}, 400, "passwords differ"},
		{"oversized sign-up", "/portal/sign-up", url.Values{"email": {"z@example.com"}, "name": {strings.Repeat("Z", MaxFormBytes)}}, 413, "too large"},
		{"oversized password at sign-in", "/portal/sign-in", url.Values{"email": {"a@example.com"}, "password": {strings.Repeat("p", 200)}}, 400, "enter your email address and your password"},
		{"malformed email at sign-in", "/portal/sign-in", url.Values{"email": {"<a@b>"}, "password": {"whatever12"}}, 400, "email:"},
	} {
		tc.form.Set("csrf", atok)
		st, body := anon.post(tc.path, tc.form)
		if st != tc.status || !strings.Contains(body, tc.message) {
			t.Errorf("%s: POST %s = %d, want %d with %q:\n%.2000s", tc.name, tc.path, st, tc.status, tc.message, body)
		}
	}
	if _, err := w.store.OwnerByEmail(t.Context(), "z@example.com"); err == nil {
		t.Error("an account was created from bad input")
	}
}

// TestPortal_HandoverHidesPastData: after A hands the appliance over and B claims it, B
// sees nothing from before the claim (cycles, alerts, requests, prompts) and A nothing at all.
func TestPortal_HandoverHidesPastData(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	bo := w.owner("b@example.com", "password of b")
	w.claimed(a, devA)
	ctx := t.Context()
	start := w.clock.Now().Add(time.Second)
	w.cycles(devA, start, 4)
	if _, err := w.store.OpenAlert(ctx, cloudstore.NewAlert{Product: "dw100", Device: devA, Rule: "drying_hot", Severity: "warning",
		OpenedAt: start, Message: "A's era alert"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.CreateServiceRequest(ctx, cloudstore.NewServiceRequest{Device: devA, OwnerID: a.ID, Source: cloudstore.SourceOwner,
		Description: "A's private request", CreatedAt: start}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.CreatePrompt(ctx, cloudstore.Prompt{Device: devA, Consumable: "rinse-agent", BuyURL: "https://shop.example/a", CreatedAt: start}); err != nil {
		t.Fatal(err)
	}
	ba := w.browser()
	ba.signIn(a.Email, "password of a")
	if _, body := ba.get("/portal/appliances/" + devA); !strings.Contains(body, "A&#39;s private request") || !strings.Contains(body, "A&#39;s era alert") {
		t.Fatalf("A's page does not show A's data:\n%s", body)
	}
	st, body := ba.post("/portal/appliances/"+devA+"/handover", url.Values{"csrf": {ba.csrf("/portal/appliances/" + devA)}})
	m := codeRE.FindStringSubmatch(body)
	if st != http.StatusOK || m == nil {
		t.Fatalf("hand-over = %d, want a code:\n%s", st, body)
	}
	// A keeps the appliance until B claims it.
	if st, _ := ba.get("/portal/appliances/" + devA); st != http.StatusOK {
		t.Errorf("A's appliance before B's claim = %d, want 200", st)
	}
	w.clock.Advance(10 * time.Minute) // less than the idle timeout: A stays signed in
	bb := w.browser()
	bb.signIn(bo.Email, "password of b")
	if st, _ := bb.post("/portal/claim", url.Values{"csrf": {bb.csrf("/portal/claim")}, "code": {m[1]}}); st != http.StatusSeeOther {
		t.Fatalf("B's claim with the hand-over code = %d, want 303", st)
	}
	st, body = bb.get("/portal/appliances/" + devA)
	if st != http.StatusOK {
		t.Fatalf("B's appliance page = %d", st)
	}
	for _, leak := range []string{"A&#39;s private request", "A&#39;s era alert", "shop.example/a", "Owner of a@example.com"} {
		if strings.Contains(body, leak) {
			t.Errorf("B's page shows %q from before B's claim", leak)
		}
	}
	if !strings.Contains(body, "0 wash cycle(s)") {
		t.Errorf("B's page counts A's wash cycles:\n%s", body)
	}
	if st, _ := ba.get("/portal/appliances/" + devA); st != http.StatusNotFound {
		t.Errorf("A's page for the handed-over appliance = %d, want 404", st)
	}
}

func TestPortal_AnonymousFloodIsRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.owner("a@example.com", "password of a")
	b := w.browser()
	b.signIn(a.Email, "password of a")
	for range w.portal.anon.Cap() {
		if _, err := w.portal.anon.Acquire(t.Context(), http.Header{}); err != nil {
			t.Fatal(err)
		}
	}
	anon := w.browser()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, w.srv.URL+"/portal/sign-in", nil)
	res, err := anon.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("GET sign-in with every anonymous slot taken = %d (Retry-After %q), want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if st, _ := b.get("/portal/appliances"); st != http.StatusOK {
		t.Errorf("a signed-in owner during the flood = %d, want 200", st)
	}
}

func TestPortal_SignInRefusalsAreClear(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.owners.SignUp(t.Context(), "new@example.com", "New", "password of new", "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	a := w.owner("a@example.com", "password of a")
	b := w.browser()
	tok := b.csrf("/portal/sign-in")
	st, body := b.post("/portal/sign-in", url.Values{"csrf": {tok}, "email": {"new@example.com"}, "password": {"password of new"}})
	if st != http.StatusForbidden || !strings.Contains(body, "not verified yet") || !strings.Contains(body, `href="/portal/resend?email=new%40example.com"`) {
		t.Errorf("sign-in unverified = %d, want 403 offering a new link:\n%s", st, body)
	}
	for range 5 {
		b.post("/portal/sign-in", url.Values{"csrf": {tok}, "email": {a.Email}, "password": {"not the password"}})
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, w.srv.URL+"/portal/sign-in",
		strings.NewReader(url.Values{"csrf": {tok}, "email": {a.Email}, "password": {"password of a"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("sign-in of a locked account = %d (Retry-After %q), want 429 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

func TestPortal_DiagnosticResultIsText(t *testing.T) {
	t.Parallel()
	got := resultText(json.RawMessage(`{"note": "<b>x</b>", "ohms": 24}`))
	if got != `{"note":"<b>x</b>","ohms":24}` {
		t.Errorf("resultText = %q", got)
	}
	long := resultText(json.RawMessage(`"` + strings.Repeat("é", 1000) + `"`))
	if len(long) > maxResultBytes+len("…") {
		t.Errorf("resultText of a long result is %d bytes, want at most %d", len(long), maxResultBytes)
	}
}
