package mgmt_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// rolloutRoutes are the route table's routes under one deployment (pause, resume, abort,
// promote, status): each test below walks all of them, so a new one is attacked too.
func rolloutRoutes(t *testing.T) []mgmt.Route {
	t.Helper()
	var out []mgmt.Route
	for _, rt := range mgmt.Routes() {
		if strings.Contains(rt.Pattern, "/deployments/{deployment}/") {
			out = append(out, rt)
		}
	}
	if len(out) < 5 {
		t.Fatalf("%d routes under a deployment, want pause, resume, abort, promote and status", len(out))
	}
	return out
}

// plantStaged stores a running staged deployment (stages 10, 100; version 1) of target
// to f's group directly, as plantDeployment does, and returns its ID.
func (w *world) plantStaged(t *testing.T, f fixture, target string) string {
	t.Helper()
	now := time.Now().UTC()
	crashFree := 99.0
	d := device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: tenant.ID(f.tenant), ProductID: product.ID(f.product.ID),
		GroupID: product.GroupID(f.group.ID), Target: target, SHA256: strings.Repeat("cd", 32), CreatedAt: now, CreatedBy: "planted",
		Rollout: &device.Rollout{Stages: []float64{10, 100}, SoakSeconds: 3600, Gate: device.Gate{MinCrashFree: &crashFree, MinDeviceHours: 1, MinInstalls: 1},
			State: device.RolloutRunning, StageStartedAt: now, BaseTarget: "apps/base/1", BaseSHA256: strings.Repeat("ef", 32), UpdatedAt: now, Version: 1}}
	err := w.srv.Store().InTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(d.TenantID)
		if err != nil {
			return err
		}
		return tt.Deployments().Create(t.Context(), d)
	})
	if err != nil {
		t.Fatalf("plant staged deployment %s: %v", target, err)
	}
	return d.ID
}

// storedRollout reads a deployment's rollout from the store, as no API caller can.
func (w *world) storedRollout(t *testing.T, f fixture, id string) device.Rollout {
	t.Helper()
	var d device.Deployment
	err := w.srv.Store().InReadTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(f.tenant))
		if err != nil {
			return err
		}
		d, err = tt.Deployments().Get(t.Context(), product.ID(f.product.ID), product.GroupID(f.group.ID), id)
		return err
	})
	if err != nil || d.Rollout == nil {
		t.Fatalf("read deployment %s: %v (rollout %v)", id, err, d.Rollout)
	}
	return *d.Rollout
}

// rolloutPath fills a route under a deployment.
func rolloutPath(pattern string, f fixture, group, deployment string) string {
	return strings.NewReplacer("{tenant}", f.tenant, "{product}", f.product.ID, "{group}", group, "{deployment}", deployment).Replace(pattern)
}

// TestDeployments_OtherTenantCannotSeeOrChangeRollout: tenant B has a running staged
// deployment. A's administrator calls every route under a deployment (pause, resume,
// abort, promote with force, status) with B's deployment through B's tenant, through A's
// tenant and group, and through A's tenant with B's group: every answer is 404
// problem+json, and B's rollout, deployments and audit log are unchanged. A's own staged
// deployment answers its administrator (not 404), so the 404s are about the tenant.
// Enforces rule 3 (ATTACKS row 30).
func TestDeployments_OtherTenantCannotSeeOrChangeRollout(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		a, b := w.a, w.b
		bStaged := w.plantStaged(t, b, "apps/fabrikam-app/2.0.0")
		aStaged := w.plantStaged(t, a, "apps/contoso-app/2.0.0")
		before := w.storedRollout(t, b, bStaged)
		bDump := dumpTenant(t, b)
		for _, rt := range rolloutRoutes(t) {
			var body any
			if rt.Request != nil {
				body = map[string]any{"reason": "mallory", "force": true}
			}
			for _, path := range []string{
				rolloutPath(rt.Pattern, b, b.group.ID, bStaged), // B's tenant
				rolloutPath(rt.Pattern, a, a.group.ID, bStaged), // A's tenant and group, B's deployment
				rolloutPath(rt.Pattern, a, b.group.ID, bStaged), // A's tenant, B's group
			} {
				r := a.admin.do(rt.Method, path, body)
				if r.Status != 404 {
					t.Errorf("%s %s as A's administrator = %d %s, want 404", rt.Method, path, r.Status, r.Body)
					continue
				}
				r.problem(t)
			}
			if r := a.admin.do(rt.Method, rolloutPath(rt.Pattern, a, a.group.ID, aStaged), body); r.Status == 404 {
				t.Errorf("%s on A's own staged deployment = 404 %s; want an answer, not not-found", rt.Method, r.Body)
			}
		}
		if diff := cmp.Diff(before, w.storedRollout(t, b, bStaged)); diff != "" {
			t.Errorf("B's rollout changed by A's requests (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(bDump, dumpTenant(t, b)); diff != "" {
			t.Errorf("tenant B changed by A's requests (-before +after):\n%s", diff)
		}
	})
}

// TestDeployments_ReaderCannotChangeRollout: a Reader of the tenant may read a rollout's
// status but every change (pause, resume, abort, promote, forced or not) is 403
// role_required, and the rollout and the audit log stay as they were.
func TestDeployments_ReaderCannotChangeRollout(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		a := w.a
		id := w.plantStaged(t, a, "apps/contoso-app/2.0.0")
		before, dump := w.storedRollout(t, a, id), dumpTenant(t, a)
		for _, rt := range rolloutRoutes(t) {
			path := rolloutPath(rt.Pattern, a, a.group.ID, id)
			if rt.Method == "GET" {
				if r := w.readerA.do(rt.Method, path, nil); r.Status == 403 {
					t.Errorf("a Reader's %s %s = 403, want to read it", rt.Method, path)
				}
				continue
			}
			for _, body := range []map[string]any{{}, {"force": true, "reason": "reader"}} {
				if p := w.readerA.must(403, rt.Method, path, body).problem(t); p.Code != "role_required" {
					t.Errorf("a Reader's %s %s: code %q, want role_required", rt.Method, path, p.Code)
				}
			}
		}
		if diff := cmp.Diff(before, w.storedRollout(t, a, id)); diff != "" {
			t.Errorf("rollout changed by a Reader (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(dump, dumpTenant(t, a)); diff != "" {
			t.Errorf("tenant changed by a Reader (-before +after):\n%s", diff)
		}
	})
}

// TestDeployments_RolloutOfAPlainDeployment: a deployment that went to its whole group at
// once has no rollout: its status is 404 rollout_not_found and a change is 409 not_staged.
func TestDeployments_RolloutOfAPlainDeployment(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.a
	for _, rt := range rolloutRoutes(t) {
		path := rolloutPath(rt.Pattern, a, a.group.ID, a.deployments[1])
		want, code := 409, "not_staged"
		var body any = map[string]any{}
		if rt.Method == "GET" {
			want, code, body = 404, "rollout_not_found", nil
		}
		if p := a.admin.must(want, rt.Method, path, body).problem(t); p.Code != code {
			t.Errorf("%s %s on a deployment without rollout: code %q, want %s", rt.Method, path, p.Code, code)
		}
	}
}

// rolloutBody is a createDeployment body with a valid rollout, changed by edit.
func rolloutBody(target string, edit func(r map[string]any, body map[string]any)) map[string]any {
	r := map[string]any{"stages": []any{1, 10, 50, 100}, "soak": "1h",
		"gate": map[string]any{"max_crash_rate": 0.5, "min_crash_free_percent": 99, "max_failed_install_percent": 5, "min_device_hours": 24, "min_installs": 10}}
	body := map[string]any{"target": target, "rollout": r}
	if edit != nil {
		edit(r, body)
	}
	return body
}

func gateOf(r map[string]any) map[string]any { return r["gate"].(map[string]any) }

// TestDeployments_RefusesBadRolloutRequests: a staged deployment whose stages do not ascend
// to 100, whose soak or thresholds are out of range, or that asks to ignore maintenance
// windows without raising the anti-rollback floor is refused with the field named, and
// nothing is deployed or audited. A security update may ignore the windows (the positive
// control: the refusal is the rule's, not the request's shape).
func TestDeployments_RefusesBadRolloutRequests(t *testing.T) {
	t.Parallel()
	onPlatforms(t, func(t *testing.T, w *platformWorld) {
		p := w.p
		app1 := p.PublishApp("dw100-app", "1.0.0", 3, "DW100")
		app2 := p.PublishApp("dw100-app", "1.1.0", 3, "DW100")
		fix := p.PublishApp("dw100-app", "1.1.1", 4, "DW100")
		deps := w.deploymentsPath("Production")
		w.admin.must(201, "POST", deps, map[string]string{"target": app1.Path})
		tests := []struct {
			name   string
			body   any
			status int
			code   string
			field  string
		}{
			{"stages not ascending", rolloutBody(app2.Path, func(r, _ map[string]any) { r["stages"] = []any{10, 1, 100} }), 400, "invalid_stages", "rollout.stages"},
			{"stages repeat", rolloutBody(app2.Path, func(r, _ map[string]any) { r["stages"] = []any{10, 10, 100} }), 400, "invalid_stages", "rollout.stages"},
			{"last stage not 100", rolloutBody(app2.Path, func(r, _ map[string]any) { r["stages"] = []any{1, 10, 50} }), 400, "invalid_stages", "rollout.stages"},
			{"stage above 100", rolloutBody(app2.Path, func(r, _ map[string]any) { r["stages"] = []any{50, 150} }), 400, "invalid_stages", "rollout.stages"},
			{"stage below a basis point", rolloutBody(app2.Path, func(r, _ map[string]any) { r["stages"] = []any{0.001, 100} }), 400, "invalid_stages", "rollout.stages"},
			{"no stages", rolloutBody(app2.Path, func(r, _ map[string]any) { r["stages"] = []any{} }), 400, "invalid_stages", "rollout.stages"},
			{"too many stages", rolloutBody(app2.Path, func(r, _ map[string]any) {
				r["stages"] = []any{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100}
			}), 400, "invalid_stages", "rollout.stages"},
			{"NaN stage", `{"target":"` + app2.Path + `","rollout":{"stages":[NaN,100],"soak":"1h","gate":{"min_device_hours":1,"min_installs":1}}}`, 400, "malformed_json", ""},
			{"soak negative", rolloutBody(app2.Path, func(r, _ map[string]any) { r["soak"] = "-1h" }), 400, "invalid_soak", "rollout.soak"},
			{"soak not a duration", rolloutBody(app2.Path, func(r, _ map[string]any) { r["soak"] = "1 hour" }), 400, "invalid_soak", "rollout.soak"},
			{"soak beyond 30 days", rolloutBody(app2.Path, func(r, _ map[string]any) { r["soak"] = "721h" }), 400, "invalid_soak", "rollout.soak"},
			{"crash-free above 100%", rolloutBody(app2.Path, func(r, _ map[string]any) { gateOf(r)["min_crash_free_percent"] = 100.5 }), 400, "invalid_threshold", "rollout.gate.min_crash_free_percent"},
			{"failed installs negative", rolloutBody(app2.Path, func(r, _ map[string]any) { gateOf(r)["max_failed_install_percent"] = -1 }), 400, "invalid_threshold", "rollout.gate.max_failed_install_percent"},
			{"crash rate negative", rolloutBody(app2.Path, func(r, _ map[string]any) { gateOf(r)["max_crash_rate"] = -0.1 }), 400, "invalid_threshold", "rollout.gate.max_crash_rate"},
			{"device-hours negative", rolloutBody(app2.Path, func(r, _ map[string]any) { gateOf(r)["min_device_hours"] = -1 }), 400, "invalid_threshold", "rollout.gate.min_device_hours"},
			{"installs negative", rolloutBody(app2.Path, func(r, _ map[string]any) { gateOf(r)["min_installs"] = -1 }), 400, "invalid_threshold", "rollout.gate.min_installs"},
			{"unknown gate field", rolloutBody(app2.Path, func(r, _ map[string]any) { gateOf(r)["max_anything"] = 1 }), 400, "unknown_field", "max_anything"},
			{"ignore_window without a security bump", map[string]any{"target": app2.Path, "ignore_window": true}, 422, "ignore_window_refused", "ignore_window"},
			{"ignore_window of a staged update without a security bump", rolloutBody(app2.Path, func(_, b map[string]any) { b["ignore_window"] = true }), 422, "ignore_window_refused", "ignore_window"},
			{"ignore_window of the same floor again", map[string]any{"target": app1.Path, "ignore_window": true}, 422, "ignore_window_refused", "ignore_window"},
		}
		before := w.admin.must(200, "GET", deps, nil).Body
		audit := w.admin.must(200, "GET", w.auditPath(), nil).Body
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				pr := w.admin.must(tc.status, "POST", deps, tc.body).problem(t)
				if pr.Code != tc.code || (tc.field != "" && pr.Field != tc.field) {
					t.Errorf("code %q field %q, want %s %s (%s)", pr.Code, pr.Field, tc.code, tc.field, pr.Detail)
				}
			})
		}
		if after := w.admin.must(200, "GET", deps, nil).Body; string(after) != string(before) {
			t.Errorf("deployments changed by refused requests:\n%s\nwant\n%s", after, before)
		}
		if after := w.admin.must(200, "GET", w.auditPath(), nil).Body; string(after) != string(audit) {
			t.Error("refused requests wrote audit events")
		}
		// The positive control: a security update (floor 3 -> 4) may ignore the windows.
		var d struct {
			IgnoreWindow bool `json:"ignore_window"`
		}
		w.admin.must(201, "POST", deps, map[string]any{"target": fix.Path, "ignore_window": true}).decode(t, &d)
		if !d.IgnoreWindow {
			t.Error("a security update deployed with ignore_window does not say so")
		}
	})
}

// decodeDeployment reads a deployment answer with its rollout.
func decodeDeployment(t *testing.T, r resp) device.Deployment {
	t.Helper()
	var d device.Deployment
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatalf("decode deployment %s: %v", r.Body, err)
	}
	return d
}

// platformWorld is a platform (real catalog, signing keys, devices) seen through the raw
// API as Contoso's staff.
type platformWorld struct {
	p                      *testenv.Platform
	admin, contrib, reader *api
	groups                 map[string]string // group name -> ID, of DW100
}

func newPlatformWorld(t *testing.T, opts ...testenv.ServerOption) *platformWorld {
	t.Helper()
	p := testenv.NewPlatform(t, opts...)
	w := &platformWorld{p: p, groups: map[string]string{}}
	member := func(name string, role client.Role) *api {
		m, err := p.Admin.CreateMember(t.Context(), p.Tenant, client.MemberCreate{Name: name, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return newAPI(t, p.Server, m.Secret)
	}
	w.admin = member("release-admin", client.RoleAdministrator)
	w.contrib = member("release-engineer", client.RoleContributor)
	w.reader = member("support-reader", client.RoleReader)
	gs, err := p.Admin.ListDeviceGroups(t.Context(), p.Tenant, p.Product, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs.Items {
		w.groups[g.Name] = g.ID
	}
	return w
}

func (w *platformWorld) deploymentsPath(group string) string {
	return "/api/v1/tenants/" + w.p.Tenant + "/products/" + w.p.Product + "/device-groups/" + w.groups[group] + "/deployments"
}

func (w *platformWorld) auditPath() string { return "/api/v1/tenants/" + w.p.Tenant + "/audit-events" }

// onPlatforms runs fn on a platform on SQLite and one on PostgreSQL.
func onPlatforms(t *testing.T, fn func(t *testing.T, w *platformWorld)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, newPlatformWorld(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, newPlatformWorld(t, testenv.WithDatabase(testenv.FreshPostgresDatabase(t))))
	})
}

// auditActions lists the tenant's audit events of deployment rollouts, oldest first.
func (w *platformWorld) auditActions(t *testing.T) []auditRow {
	t.Helper()
	var l struct {
		Items []auditRow `json:"items"`
	}
	w.admin.must(200, "GET", w.auditPath()+"?limit=1000", nil).decode(t, &l)
	var out []auditRow
	for _, e := range l.Items {
		if strings.HasPrefix(e.Action, "deployment.") {
			out = append(out, e)
		}
	}
	return out
}

type auditRow struct {
	Action    string `json:"action"`
	ActorName string `json:"actor_name"`
	ObjectID  string `json:"object_id"`
	Detail    string `json:"detail"`
}

// crashOn makes a device of group run img (it attests with it) and report an app_crash
// naming it: the gate's figures of img then show a crashing device.
func (w *platformWorld) crashOn(t *testing.T, group string, osImg, img testenv.Image) {
	t.Helper()
	d := w.p.NewDevice(true, "DW100/"+group)
	cert, err := w.p.Attest(d, osImg.Measurement(), img.Measurement())
	if err != nil {
		t.Fatalf("attest %s with %s: %v", d.ID, img.Path, err)
	}
	_, err = w.p.DeviceClient(cert).CreateErrorReports(t.Context(), client.ErrorReportBatch{Reports: []client.ErrorReport{{
		ID: errreport.NewID(time.Now()), Kind: "app_crash", At: time.Now().UTC(), ImagePath: img.Path, ImageVersion: img.Version,
		Signal: "SIGSEGV", Message: "segmentation fault"}}})
	if err != nil {
		t.Fatalf("report a crash of %s: %v", img.Path, err)
	}
}

// TestDeployments_PauseResumeAbortPromote drives a staged deployment's state machine through
// the API: create (running, stage 1 of 4, the previous deployment as base), pause, resume,
// promote (stage 2); then a device on the new version crashes, so promote without force is
// 409 gate_tripped and changes nothing, while promote with force opens stage 3 and is
// audited as deployment.promote_forced with its reason; abort; then every change of the
// aborted rollout is 409. Each change answers the deployment with the rollout's version one
// higher, and eight concurrent pauses of one version let exactly one through. A rollout
// that a newer deployment replaced is not paused, resumed or promoted (409). The status
// shows the stages and the gate's figures.
func TestDeployments_PauseResumeAbortPromote(t *testing.T) {
	t.Parallel()
	onPlatforms(t, func(t *testing.T, w *platformWorld) {
		p := w.p
		osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
		app1 := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
		app2 := p.PublishApp("dw100-app", "2.0.0", 1, "DW100")
		deps := w.deploymentsPath("Production")
		base := decodeDeployment(t, w.contrib.must(201, "POST", deps, map[string]string{"target": app1.Path}))
		d := decodeDeployment(t, w.contrib.must(201, "POST", deps, rolloutBody(app2.Path, func(r, _ map[string]any) {
			gateOf(r)["min_device_hours"] = 0
			gateOf(r)["min_installs"] = 0
		})))
		r := d.Rollout
		if r == nil || r.State != device.RolloutRunning || r.Stage != 0 || r.Version != 1 || r.BaseTarget != base.Target || r.SoakSeconds != 3600 ||
			!cmp.Equal(r.Stages, []float64{1, 10, 50, 100}) || r.Gate.MinCrashFree == nil || *r.Gate.MinCrashFree != 99 {
			t.Fatalf("created rollout = %+v, want running at stage 1 of 1,10,50,100 over base %s, version 1", r, base.Target)
		}
		path := deps + "/" + d.ID
		step := func(caller *api, verb string, body any, state device.RolloutState, stage int) device.Rollout {
			t.Helper()
			got := decodeDeployment(t, caller.must(200, "POST", path+"/"+verb, body)).Rollout
			if got == nil || got.State != state || got.Stage != stage || got.Version != r.Version+1 {
				t.Fatalf("%s = %+v, want %s at stage %d, version %d", verb, got, state, stage+1, r.Version+1)
			}
			r = got
			return *got
		}
		refused := func(verb string, body any, code string) {
			t.Helper()
			if pr := w.contrib.must(409, "POST", path+"/"+verb, body).problem(t); pr.Code != code {
				t.Errorf("%s of a %s rollout: code %q, want %s", verb, r.State, pr.Code, code)
			}
		}
		step(w.contrib, "pause", map[string]any{"reason": "looking at a report"}, device.RolloutPaused, 0)
		refused("pause", map[string]any{}, "rollout_paused")
		step(w.contrib, "resume", map[string]any{}, device.RolloutRunning, 0)
		refused("resume", map[string]any{}, "rollout_running")
		step(w.contrib, "promote", map[string]any{}, device.RolloutRunning, 1)

		// A device on the new version crashes: the gate holds the rollout.
		w.crashOn(t, "Production", osImg, app2)
		held := r
		if pr := w.contrib.must(409, "POST", path+"/promote", map[string]any{}).problem(t); pr.Code != "gate_tripped" || !strings.Contains(pr.Detail, device.FigureCrashFree) {
			t.Errorf("promote while the gate trips: code %q detail %q, want gate_tripped naming %s", pr.Code, pr.Detail, device.FigureCrashFree)
		}
		var st struct {
			Stages []struct {
				Percent  float64 `json:"percent"`
				Open     bool    `json:"open"`
				Targeted int     `json:"targeted"`
				OnNew    int     `json:"on_new"`
				Crashing int     `json:"crashing"`
			} `json:"stages"`
			Figures device.GateFigures `json:"figures"`
			Verdict string             `json:"verdict"`
		}
		w.reader.must(200, "GET", path+"/status", nil).decode(t, &st)
		if len(st.Stages) != 4 || !st.Stages[1].Open || st.Stages[2].Open || st.Figures.Running != 1 || st.Figures.CrashedRunning != 1 || st.Verdict != "tripped" {
			t.Errorf("status = %+v, want 4 stages, 2 open, one device running and crashing, verdict tripped", st)
		}
		onNew, crashing := 0, 0
		for _, s := range st.Stages {
			onNew, crashing = onNew+s.OnNew, crashing+s.Crashing
		}
		if onNew != 1 || crashing != 1 {
			t.Errorf("status counts %d on the new version and %d crashing, want 1 and 1", onNew, crashing)
		}
		step(w.contrib, "promote", map[string]any{"force": true, "reason": "the crash is a test rig"}, device.RolloutRunning, 2)
		if held.Stage != 1 || held.Version != r.Version-1 {
			t.Errorf("the refused promote changed the rollout: %+v before the forced one", held)
		}

		// Eight pauses of one version at once: one pauses, the others are told it changed.
		codes := make(chan int, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { codes <- w.contrib.do("POST", path+"/pause", map[string]any{}).Status })
		}
		wg.Wait()
		close(codes)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		if count[200] != 1 || count[409] != 7 {
			t.Errorf("eight concurrent pauses: statuses %v, want one 200 and seven 409", count)
		}
		var now device.Deployment
		w.reader.must(200, "GET", path, nil).decode(t, &now)
		r = now.Rollout
		step(w.admin, "abort", map[string]any{"reason": "replaced by 2.0.1"}, device.RolloutAborted, 2)
		for _, verb := range []string{"pause", "resume", "abort", "promote"} {
			refused(verb, map[string]any{"force": verb == "promote"}, "rollout_aborted")
		}

		// A newer deployment replaces the rollout: its changes are refused as not current.
		// Its base is the aborted rollout's base, never the aborted image.
		d2 := decodeDeployment(t, w.contrib.must(201, "POST", deps, rolloutBody(app2.Path, nil)))
		if r.BaseTarget == "" || d2.Rollout.BaseTarget != r.BaseTarget || d2.Rollout.BaseTarget == app2.Path {
			t.Errorf("the second rollout's base = %q, want the aborted rollout's base %s", d2.Rollout.BaseTarget, r.BaseTarget)
		}
		w.contrib.must(201, "POST", deps, map[string]string{"target": app1.Path})
		for _, verb := range []string{"pause", "resume", "promote"} {
			if pr := w.contrib.must(409, "POST", deps+"/"+d2.ID+"/"+verb, map[string]any{}).problem(t); pr.Code != "not_current_deployment" {
				t.Errorf("%s of a replaced rollout: code %q, want not_current_deployment", verb, pr.Code)
			}
		}

		var got []string
		var forced *auditRow
		for _, e := range w.auditActions(t) {
			got = append(got, e.Action)
			if e.Action == "deployment.promote_forced" {
				forced = &e
			}
		}
		want := []string{"deployment.create", "deployment.create", "deployment.pause", "deployment.resume", "deployment.promote",
			"deployment.promote_forced", "deployment.pause", "deployment.abort", "deployment.create", "deployment.create"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("audit actions (-want +got):\n%s", diff)
		}
		if forced == nil || forced.ActorName != "release-engineer" || forced.ObjectID != d.ID ||
			!strings.Contains(forced.Detail, "the crash is a test rig") || !strings.Contains(forced.Detail, "crash-free 0%") {
			t.Errorf("forced promote audit event = %+v, want the engineer, the deployment, the reason and the gate's figures", forced)
		}
	})
}
