package mgmt_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAPI_DeploymentGetAndRollbackRefusals: a deployment is read only through its own
// tenant and group; another tenant's deployment is NotFound whichever way it is named, in a
// path or in a rollback's "to"; a rollback with nothing before the current deployment is
// 409; a Reader gets 403; a target no longer in the tenant's apps.json is refused. None of
// these changes either tenant. (internal/fleet's TestDeployments_Rollback rolls back for
// real and follows the devices' assignment.)
func TestAPI_DeploymentGetAndRollbackRefusals(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		a, b := w.a, w.b
		aDump, bDump := dumpTenant(t, a), dumpTenant(t, b)
		var d struct {
			ID      string `json:"id"`
			Target  string `json:"target"`
			Reverts *string
		}
		a.admin.must(200, "GET", a.groupPath()+"/deployments/"+a.deployments[1], nil).decode(t, &d)
		if d.ID != a.deployments[1] || d.Target != "apps/contoso-app/1.0.1" || d.Reverts != nil {
			t.Errorf("GET own deployment = %+v, want %s of apps/contoso-app/1.0.1 without reverts", d, a.deployments[1])
		}

		notFound := func(method, path string, body any, code string) {
			t.Helper()
			if p := a.admin.must(404, method, path, body).problem(t); p.Code != code {
				t.Errorf("%s %s: code %q, want %s", method, path, p.Code, code)
			}
		}
		notFound("GET", a.groupPath()+"/deployments/"+b.deployments[1], nil, "deployment_not_found")
		notFound("GET", a.groupPath()+"/deployments/nope", nil, "deployment_not_found")
		notFound("GET", b.groupPath()+"/deployments/"+b.deployments[1], nil, "tenant_not_found")
		notFound("POST", a.groupPath()+"/deployments/rollback", map[string]string{"to": b.deployments[0]}, "deployment_not_found")
		notFound("POST", b.groupPath()+"/deployments/rollback", map[string]string{}, "tenant_not_found")
		bGroupInA := strings.Replace(b.groupPath(), b.tenant, a.tenant, 1)
		notFound("POST", bGroupInA+"/deployments/rollback", map[string]string{}, "device_group_not_found")

		// The literal path beside the wildcard: another method is 405 with Allow, not a
		// lookup of a deployment named "rollback".
		if r := a.admin.must(405, "GET", a.groupPath()+"/deployments/rollback", nil); r.Header.Get("Allow") != "POST" {
			t.Errorf("GET .../deployments/rollback: Allow %q, want POST", r.Header.Get("Allow"))
		}
		if r := a.admin.must(405, "DELETE", a.groupPath()+"/deployments/"+a.deployments[0], nil); r.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("DELETE .../deployments/{deployment}: Allow %q, want GET, HEAD", r.Header.Get("Allow"))
		}

		if p := w.readerA.must(403, "POST", a.groupPath()+"/deployments/rollback", map[string]string{}).problem(t); p.Code == "" {
			t.Error("a Reader's rollback: problem without a code")
		}
		// The planted deployments' targets are in no apps.json: refused like a revoked one.
		for _, body := range []map[string]string{{}, {"to": a.deployments[0]}} {
			p := w.contribA.must(400, "POST", a.groupPath()+"/deployments/rollback", body).problem(t)
			if p.Code != "image_not_found" {
				t.Errorf("rollback %v to a target in no apps.json: code %q, want image_not_found", body, p.Code)
			}
		}
		if p := a.admin.must(400, "POST", a.groupPath()+"/deployments/rollback", map[string]string{"to": "nope"}).problem(t); p.Field != "to" {
			t.Errorf("rollback to a malformed ID: field %q, want to", p.Field)
		}

		// Nothing to roll back to: the current deployment itself, a group with one
		// deployment, a group with none.
		nothing := func(path string, body any) {
			t.Helper()
			if p := a.admin.must(409, "POST", path, body).problem(t); p.Code != "nothing_to_roll_back" {
				t.Errorf("POST %s %v: code %q, want nothing_to_roll_back", path, body, p.Code)
			}
		}
		nothing(a.groupPath()+"/deployments/rollback", map[string]string{"to": a.deployments[1]})
		var gs list
		a.admin.must(200, "GET", a.productPath()+"/device-groups", nil).decode(t, &gs)
		empty, one := a, a
		for _, g := range gs.Items {
			switch {
			case g.ID == a.group.ID:
			case empty.group.ID == a.group.ID:
				empty.group = g
			case one.group.ID == a.group.ID:
				one.group = g
			}
		}
		w.plantDeployment(t, one, "apps/contoso-app/0.9.0")
		nothing(empty.groupPath()+"/deployments/rollback", map[string]string{})
		nothing(one.groupPath()+"/deployments/rollback", map[string]string{})

		if len(gs.Items) < 3 {
			t.Fatalf("%d device groups, want the default ones", len(gs.Items))
		}
		// Neither tenant changed: the same deployments, no audit event (the plant above
		// went to another group and is not audited).
		if diff := cmp.Diff(aDump, dumpTenant(t, a)); diff != "" {
			t.Errorf("tenant A changed by refused rollbacks (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(bDump, dumpTenant(t, b)); diff != "" {
			t.Errorf("tenant B changed by A's requests (-before +after):\n%s", diff)
		}
	})
}
