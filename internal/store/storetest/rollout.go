package storetest

import (
	"context"
	"math"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/updstate"
)

// rolloutTests attack the store's part of staged rollouts (issue 12): a stage advances once
// because the rollout is written only over the version read, the advance job sees only
// running rollouts that are still their group's current deployment, and the gate's figures
// count only the group's devices and the target since the deployment.
var rolloutTests = []test{
	{"UpdateRolloutRefusesStaleWrite", testUpdateRolloutStale},
	{"RunningLeavesOutReplacedRollouts", testRolloutsRunning},
	{"GateFiguresCountGroupAndTarget", testGateFigures},
}

// staged is a new deployment of target to g with a running rollout at version 1.
func (h *harness) staged(tid tenant.ID, g product.Group, target string) device.Deployment {
	h.t.Helper()
	d := h.newDeployment(tid, g, target)
	d.Rollout = &device.Rollout{Stages: []float64{1, 10, 100}, SoakSeconds: 3600, State: device.RolloutRunning,
		StageStartedAt: d.CreatedAt.UTC(), UpdatedAt: d.CreatedAt.UTC(), Version: 1, BaseTarget: "apps/dw100-app/1.0.0",
		BaseSHA256: d.SHA256}
	if err := h.createDeployment(tid, d); err != nil {
		h.t.Fatalf("Deployments().Create(staged %s) = %v, want nil", target, err)
	}
	return d
}

func (h *harness) updateRollout(tid tenant.ID, d device.Deployment) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.Deployments().UpdateRollout(h.ctx(), d) })
}

// bumped is d with its rollout changed as a replica that read it would change it.
func bumped(d device.Deployment, stage int, state device.RolloutState) device.Deployment {
	r := *d.Rollout
	r.Stage, r.State, r.Version = stage, state, r.Version+1
	d.Rollout = &r
	return d
}

// testUpdateRolloutStale: two replicas read version 1 and both advance the stage; the
// second write is ErrStale and the first one's stands. Without a rollout, or in another
// tenant, the rollout is not found.
func testUpdateRolloutStale(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	g := h.group(a.ID, h.product(a.ID, "DW100").ID, "Production")
	d := h.staged(a.ID, g, "apps/dw100-app/2.0.0")

	first := bumped(d, 1, device.RolloutRunning)
	if err := h.updateRollout(a.ID, first); err != nil {
		h.t.Fatalf("UpdateRollout(v2) = %v, want nil", err)
	}
	second := bumped(d, 1, device.RolloutPaused)
	wantErr(h.t, "UpdateRollout(v2 again, from the same read)", h.updateRollout(a.ID, second), store.ErrStale)
	got, err := h.getDeployment(a.ID, g, d.ID)
	wantEqual(h.t, "Deployments().Get after the stale write", got, err, first)

	// The stored columns follow the rollout: the next write goes over version 2.
	third := bumped(first, 2, device.RolloutRunning)
	if err := h.updateRollout(a.ID, third); err != nil {
		h.t.Fatalf("UpdateRollout(v3) = %v, want nil", err)
	}
	wantErr(h.t, "UpdateRollout(B, A's deployment)", h.updateRollout(b.ID, bumped(third, 2, device.RolloutAborted)), store.ErrNotFound)
	plain := h.deployment(a.ID, g, "apps/dw100-app/3.0.0")
	plain.Rollout = third.Rollout
	wantErr(h.t, "UpdateRollout(deployment without rollout)", h.updateRollout(a.ID, bumped(plain, 2, device.RolloutPaused)), store.ErrNotFound)
	got, err = h.getDeployment(a.ID, g, plain.ID)
	if err != nil || got.Rollout != nil {
		h.t.Errorf("Deployments().Get(without rollout) = %+v, %v, want no rollout", got.Rollout, err)
	}
}

func (h *harness) running(after string, n int) ([]device.Deployment, error) {
	return read(h, func(ctx context.Context, tx store.Tx) ([]device.Deployment, error) {
		return tx.Rollouts().Running(ctx, after, n)
	})
}

// testRolloutsRunning: the advance job sees the running rollouts of every tenant that are
// their group's current deployment, a page at a time; a rollout replaced by a newer
// deployment (a rollback, or the next release) and a paused one are left out, so the job
// never advances a deployment the group no longer runs.
func testRolloutsRunning(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	pa := h.product(a.ID, "DW100")
	g1, g2, g3 := h.group(a.ID, pa.ID, "G1"), h.group(a.ID, pa.ID, "G2"), h.group(a.ID, pa.ID, "G3")
	gb := h.group(b.ID, h.product(b.ID, "DW100").ID, "Production")

	replaced := h.staged(a.ID, g1, "apps/dw100-app/2.0.0")
	h.deployment(a.ID, g1, "apps/dw100-app/1.0.0") // the rollback
	current := h.staged(a.ID, g2, "apps/dw100-app/2.0.0")
	paused := h.staged(a.ID, g3, "apps/dw100-app/2.0.0")
	if err := h.updateRollout(a.ID, bumped(paused, 0, device.RolloutPaused)); err != nil {
		h.t.Fatal(err)
	}
	other := h.staged(b.ID, gb, "apps/dw100-app/2.0.0")

	got, err := h.running("", 0)
	wantEqual(h.t, "Rollouts().Running", got, err, []device.Deployment{current, other})
	got, err = h.running("", 1)
	wantEqual(h.t, "Rollouts().Running(limit 1)", got, err, []device.Deployment{current})
	got, err = h.running(current.ID, 1)
	wantEqual(h.t, "Rollouts().Running(after the first)", got, err, []device.Deployment{other})
	for _, d := range got {
		if d.ID == replaced.ID {
			h.t.Errorf("Rollouts().Running lists %s, which a newer deployment replaced", d.ID)
		}
	}
}

// testGateFigures: the figures count the group's devices on the target, their crashes and
// device-hours in the window, and the install attempts since; devices of another group,
// crashes before the deployment and steps for another target are left out.
func testGateFigures(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g, other := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Lab")
	since := h.tick().Truncate(time.Second)
	start := since.Add(time.Hour)
	end := start.Add(10 * time.Hour)
	var on []device.Device
	for range 4 {
		on = append(on, h.attestAt(h.attestAt(h.placed(a.ID, g), start, osA, appY), end, osA, appY))
	}
	h.attestAt(h.placed(a.ID, other), start, osA, appY) // another group
	h.attestAt(h.placed(a.ID, g), start, osA, appX)     // on the old version, never tried the new
	h.mustAddReport(a.ID, on[0].ID, h.crash(appY), start.Add(time.Hour))
	h.mustAddReport(a.ID, on[0].ID, h.crash(appY), start.Add(2*time.Hour))
	h.mustAddReport(a.ID, on[1].ID, h.crash(appY), since.Add(-time.Hour)) // before the deployment
	h.mustAddReport(a.ID, on[1].ID, h.crash(appX), start.Add(time.Hour))  // another version

	step := func(d device.Device, s updstate.State, target string, at time.Time) {
		h.t.Helper()
		r := h.newUpdateState(s)
		r.Target = target
		if err := h.addUpdateState(a.ID, d.ID, r, at); err != nil {
			h.t.Fatal(err)
		}
	}
	failed := h.attestAt(h.placed(a.ID, g), start, osA, appX)
	step(failed, updstate.Downloading, appY.Path, start)
	step(failed, updstate.RolledBack, appY.Path, start.Add(time.Minute))
	trying := h.attestAt(h.placed(a.ID, g), start, osA, appX)
	step(trying, updstate.Failed, appY.Path, start)
	step(trying, updstate.Downloading, appY.Path, start.Add(time.Minute)) // trying again
	elsewhere := h.attestAt(h.placed(a.ID, other), start, osA, appX)
	step(elsewhere, updstate.Failed, appY.Path, start)
	oldStep := h.attestAt(h.placed(a.ID, g), start, osA, appX)
	step(oldStep, updstate.Failed, appY.Path, since.Add(-time.Minute)) // before the deployment
	otherTarget := h.attestAt(h.placed(a.ID, g), start, osA, appX)
	step(otherTarget, updstate.Failed, "apps/dw100-app/9.0.0", start)

	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (device.GateFigures, error) {
		return tt.Deployments().GateFigures(ctx, p.ID, g.ID, appY.Path, since, end.Add(5*time.Hour))
	})
	if err == nil {
		got.DeviceHours = math.Round(got.DeviceHours*1e6) / 1e6
	}
	wantEqual(h.t, "GateFigures", got, err, device.GateFigures{Running: 4, CrashedRunning: 1, Crashes: 2, DeviceHours: 40,
		InstallAttempts: 6, FailedInstalls: 1})

	// Nothing of tenant A reaches tenant B's figures.
	b := h.tenant("B")
	gotB, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (device.GateFigures, error) {
		return tt.Deployments().GateFigures(ctx, p.ID, g.ID, appY.Path, since, end.Add(5*time.Hour))
	})
	wantEqual(h.t, "GateFigures(B, A's group)", gotB, err, device.GateFigures{})
}
