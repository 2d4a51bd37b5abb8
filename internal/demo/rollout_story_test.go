package demo_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/demo"
	"github.com/moat-iot/moat/internal/testenv"
)

// checkRolloutStory waits for the demo's rollout story and checks it: 1.2.0 opened its
// stages in order and completed with every running device on it; the gate stopped the
// crashing 3.0.0 in its first stage with a crash figure beyond its threshold; the
// service's own deployment reverted it to 1.2.0, which every running device runs again;
// and no device outside the first stage ever downloaded, installed or ran 3.0.0.
func checkRolloutStory(ctx context.Context, t *testing.T, d *demo.Demo, contoso *client.Client, out *testenv.SyncBuffer) {
	t.Helper()
	var res demo.RolloutResult
	select {
	case res = <-d.RolloutDone():
		if res.Err != nil {
			t.Fatalf("the rollout story: %v\n%s", res.Err, out.String())
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("the rollout story did not end\n%s", out.String())
	}
	r := d.Result
	const v12, v3 = "apps/dw100-app/1.2.0", "apps/dw100-app/3.0.0"
	if !slices.Equal(res.HealthyStages, []int{0, 1, 2}) || !res.Completed {
		t.Errorf("1.2.0 opened stages %v, completed %t; want 0, 1, 2 in order and completed", res.HealthyStages, res.Completed)
	}
	dep := func(id string) client.Deployment {
		t.Helper()
		got, err := contoso.GetDeployment(ctx, r.Tenant.ID, r.Product.ID, res.Group, id)
		if err != nil {
			t.Fatalf("GetDeployment(%s) = %v", id, err)
		}
		return got
	}
	if h := dep(res.Healthy); h.Target != v12 || h.Rollout == nil || h.Rollout.State != client.RolloutCompleted || h.Rollout.Trip != nil {
		t.Errorf("1.2.0 deployment = %+v; want its rollout completed without a trip", h)
	}
	c := dep(res.Crashing)
	trip := c.Rollout.Trip
	if c.Target != v3 || c.Rollout.State != client.RolloutRolledBack || c.Rollout.Stage != 0 || trip == nil || trip.Stage != 0 ||
		res.Trip == nil || *res.Trip != *trip {
		t.Fatalf("3.0.0 deployment = %+v, trip %+v (story saw %+v); want rolled back by a trip in stage 1", c, trip, res.Trip)
	}
	switch {
	case trip.Figure == client.FigureCrashFree && trip.Value < trip.Threshold:
	case trip.Figure == client.FigureCrashRate && trip.Value > trip.Threshold:
	default:
		t.Errorf("trip = %+v; want a crash figure beyond its threshold", *trip)
	}
	if rb := dep(res.Revert); rb.Reverts != res.Crashing || rb.Target != v12 || rb.CreatedBy != "system" {
		t.Errorf("revert deployment = %+v; want system's deployment of %s reverting %s", rb, v12, res.Crashing)
	}
	if len(res.FirstStage) == 0 || len(res.FirstStage) >= 19 {
		t.Errorf("3.0.0's first stage = %d devices; want some of the 19 running in Production", len(res.FirstStage))
	}
	health, err := contoso.GetImageHealth(ctx, r.Tenant.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range health.Versions {
		if v.Target == v12 && v.Devices != 19 || v.Target == v3 && v.Devices != 0 {
			t.Errorf("%s runs on %d devices; want 1.2.0 on the 19 running Production devices and 3.0.0 on none", v.Target, v.Devices)
		}
	}
	var running []string
	for _, dv := range r.Devices[:len(r.Devices)-1] {
		running = append(running, dv.ID)
	}
	if len(running) != 4 || len(r.RolloutFleet) != 16 {
		t.Fatalf("demo fleet = %d story devices and %d rollout devices, want 4 and 16", len(running), len(r.RolloutFleet))
	}
	for _, id := range append(running, r.RolloutFleet...) {
		if slices.Contains(res.FirstStage, id) {
			continue
		}
		states, err := contoso.ListUpdateStates(ctx, r.Tenant.ID, id, client.ListOptions{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states.Items {
			if s.Report.Target == v3 {
				t.Errorf("device %s outside 3.0.0's first stage reported %s for it", id, s.Report.State)
			}
		}
		reports, err := contoso.ListErrorReports(ctx, r.Tenant.ID, id, client.ListOptions{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, rep := range reports.Items {
			if rep.Report.ImagePath == v3 || rep.Report.Target == v3 {
				t.Errorf("device %s outside 3.0.0's first stage reported %s for it", id, rep.Report.Kind)
			}
		}
	}
}
