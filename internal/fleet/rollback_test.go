package fleet_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestDeployments_Rollback: a rollback is a new deployment of the previous deployment's
// target that names the deployment it reverts, the group's devices are assigned the earlier
// app again, and it is audited. A target that is no longer current (revoked) is refused and
// nothing changes; a Reader may not roll back.
func TestDeployments_Rollback(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	g := f.group("Production")
	// The same security version: a rollback below a device's floor is a separate rule.
	v11 := f.PublishApp("dw100-app", "1.1.0", 1, "DW100")
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	dc := f.DeviceClient(cert)
	assigned := func(when string, want testenv.Image) {
		t.Helper()
		raw, err := dc.GetAssignment(ctx)
		if err != nil {
			t.Fatalf("%s: GetAssignment: %v", when, err)
		}
		a, err := director.Verify(raw, f.directorKey(t), director.Expect{DeviceID: d.ID, TenantID: f.Tenant, Now: time.Now()})
		if err != nil || len(a.Images) != 2 || a.Images[1].Path != want.Path || a.Images[1].SHA256 != want.SHA256 {
			t.Fatalf("%s: assignment %+v, %v; want the OS and %s", when, a, err, want.Path)
		}
	}
	history := func() []client.Deployment {
		t.Helper()
		ds, err := f.Admin.ListDeployments(ctx, f.Tenant, f.Product, g.ID, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ds.Items
	}
	assigned("first deployment", f.app)
	first := history()[0]
	second, err := f.Admin.CreateDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentCreate{Target: v11.Path})
	if err != nil {
		t.Fatal(err)
	}
	assigned("second deployment", v11)

	back, err := f.Admin.RollbackDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentRollback{})
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if back.ID == first.ID || back.ID == second.ID || back.Target != f.app.Path || back.SHA256 != f.app.SHA256 || back.Reverts != second.ID {
		t.Errorf("rollback = %+v; want a new deployment of %s reverting %s", back, f.app.Path, second.ID)
	}
	if d := cmp.Diff([]client.Deployment{back, second, first}, history()); d != "" {
		t.Errorf("history after the rollback (-want +got):\n%s", d)
	}
	got, err := f.Admin.GetDeployment(ctx, f.Tenant, f.Product, g.ID, back.ID)
	if err != nil || got != back {
		t.Errorf("GetDeployment(rollback) = %+v, %v; want %+v", got, err, back)
	}
	if got, err := f.Admin.GetDeployment(ctx, f.Tenant, f.Product, g.ID, second.ID); err != nil || got.Reverts != "" {
		t.Errorf("GetDeployment(ordinary) = %+v, %v; want no reverts", got, err)
	}
	assigned("after the rollback", f.app)
	evs, err := f.Admin.ListAuditEvents(ctx, f.Tenant, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	audited := false
	for _, e := range evs.Items {
		audited = audited || (e.Action == "deployment.rollback" && e.ObjectID == back.ID)
	}
	if !audited {
		t.Errorf("no deployment.rollback audit event for %s", back.ID)
	}

	// A Reader may not roll back; a revoked target is refused: nothing changes either way.
	r, err := f.Admin.CreateMember(ctx, f.Tenant, client.MemberCreate{Name: "reader", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Client(r.Secret).RollbackDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentRollback{})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("a Reader rolls back: %v, want 403", err)
	}
	f.RevokeApp(v11.Path)
	for _, to := range []string{"", second.ID} { // the one before the current one is second
		_, err = f.Admin.RollbackDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentRollback{To: to})
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Code != "image_not_found" {
			t.Errorf("rollback to the revoked %s (to %q): %v, want 400 image_not_found", v11.Path, to, err)
		}
	}
	if d := cmp.Diff([]client.Deployment{back, second, first}, history()); d != "" {
		t.Errorf("history after refused rollbacks (-want +got):\n%s", d)
	}
	assigned("after refused rollbacks", f.app)

	// An explicit target that is still current: back to first, reverting the rollback.
	again, err := f.Admin.RollbackDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentRollback{To: first.ID})
	if err != nil || again.Target != f.app.Path || again.Reverts != back.ID {
		t.Errorf("rollback --to %s = %+v, %v; want %s reverting %s", first.ID, again, err, f.app.Path, back.ID)
	}
}
