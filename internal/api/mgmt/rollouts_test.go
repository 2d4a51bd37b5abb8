package mgmt_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/device"
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
