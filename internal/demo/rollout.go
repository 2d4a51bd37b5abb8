package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
)

// The rollout story (issue 12) plays after the owners' story: Contoso rolls app 1.2.0 out
// across DW100/Production in stages, the service opening each once its soak is over and
// its health gate holds; then a 3.0.0 that crashes after it reported healthy is stopped by
// the gate in its first stage and rolled back by the service itself.

// The demo's staged rollouts: stages of the Production group, a soak short enough to watch,
// and a gate that judges crash figures from the first device-hour on. The service counts
// device-hours from attestations and its coarse last-seen times (fleet.SeenEvery, five
// minutes), so in a demo of seconds they stay near zero: a min_device_hours above zero
// would hold every stage until minutes after its devices updated. Real rollouts soak for
// hours and judge from many device-hours (the default is device.DefaultMinDeviceHours).
// The healthy release soaks rolloutSoak per stage; the crashing one Config.TripSoak, long
// enough for its first stage to install, commit and crash: with no device-hours to wait
// for, the gate judges whatever the stage shows when the soak ends.
var (
	rolloutStages = []float64{20, 50, 100}
	rolloutSoak   = 10 * time.Second
)

// RolloutAdvanceInterval is how often the demo's server looks at its running rollouts.
const RolloutAdvanceInterval = time.Second

func rolloutGate() client.Gate {
	crashFree, crashRate, failed := 90.0, 6.0, 10.0
	return client.Gate{MinCrashFree: &crashFree, MaxCrashRate: &crashRate, MaxFailedInstalls: &failed, MinDeviceHours: 0, MinInstalls: 1}
}

// RolloutResult is what the rollout story came to.
type RolloutResult struct {
	// Group is DW100/Production's ID.
	Group string
	// Healthy is the deployment of app 1.2.0 and HealthyStages the stages (indices) it
	// opened, in the order the demo saw them; Completed reports that it completed.
	Healthy       string
	HealthyStages []int
	Completed     bool
	// Crashing is the deployment of the crashing 3.0.0, FirstStage the devices of its
	// first stage, Trip why its gate stopped it and Revert the deployment that reverted it.
	Crashing   string
	FirstStage []string
	Trip       *client.GateTrip
	Revert     string
	// ConsoleURL is the Production group's page in the web console.
	ConsoleURL string
	Err        error
}

// RolloutDone delivers the outcome of the rollout story, which plays after the owners'
// story (about a minute).
func (d *Demo) RolloutDone() <-chan RolloutResult { return d.rolloutDone }

// rolloutStory plays the rollout story and prints it.
func (d *Demo) rolloutStory(ctx context.Context, out io.Writer, step func(string, ...any)) (res RolloutResult) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res.Err = d.playRollout(ctx, out, step, &res)
	return res
}

func (d *Demo) playRollout(ctx context.Context, out io.Writer, step func(string, ...any), res *RolloutResult) error {
	contoso, err := client.New(d.Result.URL, client.WithToken(d.Result.AdminToken), client.WithCACertPEM(d.srv.CAPEM))
	if err != nil {
		return err
	}
	prod := d.groupID("Production")
	if prod == "" {
		return errors.New("no device group Production")
	}
	res.Group = prod
	res.ConsoleURL = d.Result.URL + "/ui/t/" + d.Result.Tenant.ID + "/products/" + d.Result.Product.ID + "/groups/" + prod
	fmt.Fprintf(out, "\nThe rollout story: staged rollouts across the %d running devices of DW100/Production, watched by a health gate.\n", len(d.production()))
	if err := d.startAgents(ctx, d.extra, false); err != nil {
		return err
	}
	prodDevs := d.production()
	if err := d.converge(ctx, contoso, prodDevs, d.Result.OSPath, d.v11); err != nil {
		return err
	}
	step("%d more DW100s (their doors open, not connected to the cloud) started their agents, attested from nothing and installed %s: all %d devices of the group run it",
		len(d.extra), d.v11, len(prodDevs))
	g := rolloutGate()
	step("the gate of each rollout: at least %g %% of the devices on the new version crash-free, at most %g crashes per device-hour, at most %g %% failed installs; stages %s of the group",
		*g.MinCrashFree, *g.MaxCrashRate, *g.MaxFailedInstalls, stagesText(rolloutStages))

	v12, err := d.publishApp(ctx, contoso, "1.2.0", appRuns, step)
	if err != nil {
		return err
	}
	dep, _, err := d.stagedDeploy(ctx, contoso, prod, d.v11, v12, rolloutSoak, step)
	if err != nil {
		return err
	}
	res.Healthy = dep.ID
	if err := d.watchStages(ctx, contoso, dep, v12, step, res); err != nil {
		return err
	}
	res.Completed = true
	if err := d.converge(ctx, contoso, prodDevs, d.Result.OSPath, v12); err != nil {
		return err
	}

	v3, err := d.publishApp(ctx, contoso, "3.0.0", appCrashesAfterHealthy, step)
	if err != nil {
		return err
	}
	dep3, first, err := d.stagedDeploy(ctx, contoso, prod, v12, v3, d.tripSoak, step)
	if err != nil {
		return err
	}
	res.Crashing = dep3.ID
	for _, dv := range first {
		res.FirstStage = append(res.FirstStage, string(dv.key.ID()))
	}
	if err := d.watchTrip(ctx, contoso, dep3, first, v3, v12, step, res); err != nil {
		return err
	}
	if err := d.converge(ctx, contoso, prodDevs, d.Result.OSPath, v12); err != nil {
		return err
	}
	step("the %d devices of stage 1 run %s again; the other %d never downloaded %s", len(first), v12, len(prodDevs)-len(first), v3)
	fmt.Fprintf(out, "\nThe rollouts in the web console: %s\n  moat deployment list --device-group DW100/Production\n  moat deployment status %s --device-group DW100/Production\n",
		res.ConsoleURL, dep3.ID)
	return nil
}

// groupID is the ID of the DW100 group named name ("" when none).
func (d *Demo) groupID(name string) string {
	for _, g := range d.Result.Groups {
		if g.Name == name {
			return g.ID
		}
	}
	return ""
}

// stagedDeploy deploys target to the group in the demo's stages and returns the deployment
// and the running devices of its first stage. Stages hash (deployment, device), so with
// 19 running devices the first 20 % holds none about one time in 70: then Contoso aborts
// the rollout, rolls the group back to base and deploys again, as an operator would, and
// says so.
func (d *Demo) stagedDeploy(ctx context.Context, contoso *client.Client, group, base, target string, soak time.Duration, step func(string, ...any)) (client.Deployment, []*demoDevice, error) {
	tenant, prod := d.Result.Tenant.ID, d.Result.Product.ID
	for range 5 {
		dep, err := contoso.CreateDeployment(ctx, tenant, prod, group, client.DeploymentCreate{Target: target,
			Rollout: &client.RolloutCreate{Stages: rolloutStages, Soak: soak.String(), Gate: rolloutGate(), AutoRollback: true}})
		if err != nil {
			return client.Deployment{}, nil, fmt.Errorf("deploy %s in stages: %w", target, err)
		}
		first := d.inFirstStage(dep)
		if len(first) > 0 {
			step("Contoso deployed %s to DW100/Production in stages (%s, each soaking %s, auto-rollback), replacing %s: %d devices are in stage 1",
				target, dep.ID, soak, base, len(first))
			return dep, first, nil
		}
		step("stage 1 of %s holds none of the running devices (a stage is a hash of deployment and device): Contoso aborts it, rolls back to %s and deploys again", dep.ID, base)
		if _, err := contoso.AbortDeployment(ctx, tenant, prod, group, dep.ID, client.RolloutAction{Reason: "the first stage holds no running device"}); err != nil {
			return client.Deployment{}, nil, err
		}
		if _, err := contoso.RollbackDeployment(ctx, tenant, prod, group, client.DeploymentRollback{}); err != nil {
			return client.Deployment{}, nil, err
		}
	}
	return client.Deployment{}, nil, fmt.Errorf("five deployments of %s had no running device in their first stage", target)
}

// production returns the running devices of DW100/Production.
func (d *Demo) production() []*demoDevice {
	var in []*demoDevice
	for _, dv := range d.running {
		if dv.group == "Production" {
			in = append(in, dv)
		}
	}
	return in
}

// inFirstStage returns the running Production devices in dep's first stage.
func (d *Demo) inFirstStage(dep client.Deployment) []*demoDevice {
	r := device.Rollout{Stages: dep.Rollout.Stages}
	var in []*demoDevice
	for _, dv := range d.production() {
		if r.InOpenStage(dep.ID, dv.key.ID()) {
			in = append(in, dv)
		}
	}
	return in
}

// watchStages prints each stage of dep once its devices run target, until the rollout
// completes; anything else it comes to is an error.
func (d *Demo) watchStages(ctx context.Context, contoso *client.Client, dep client.Deployment, target string, step func(string, ...any), res *RolloutResult) error {
	shown := -1
	onNew := 0
	for {
		st, err := contoso.GetDeploymentStatus(ctx, d.Result.Tenant.ID, d.Result.Product.ID, dep.GroupID, dep.ID)
		if err != nil {
			return err
		}
		r := st.Deployment.Rollout
		if r.State != client.RolloutRunning && r.State != client.RolloutCompleted {
			return fmt.Errorf("the rollout of %s is %s (trip %+v), want it to complete", target, r.State, r.Trip)
		}
		open := r.Stage
		if r.State == client.RolloutCompleted {
			open = len(r.Stages) - 1
		}
		// A stage is shown once its running devices run the new version (the tampered
		// device, in Production too, never does: it was refused and runs nothing).
		for i := shown + 1; i <= open; i++ {
			s := st.Stages[i]
			if s.OnNew < d.runningIn(dep, i) {
				break
			}
			onNew += s.OnNew
			shown = i
			res.HealthyStages = append(res.HealthyStages, i)
			step("stage %d of %d (%g %%) open: %d devices targeted (%d running), %d on %s (%d in all), %d failed, %d crashing; gate: %s",
				i+1, len(r.Stages), s.Percent, s.Targeted, d.runningIn(dep, i), s.OnNew, versionOf(target), onNew, s.Failed, s.Crashing, gateText(st.Figures))
		}
		if r.State == client.RolloutCompleted && shown == len(r.Stages)-1 {
			step("the rollout of %s completed: the gate held at every stage", target)
			return nil
		}
		if err := pause(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("the rollout of %s: %w", target, err)
		}
	}
}

// runningIn counts the running devices the stage (index i, not counting earlier stages)
// of dep holds.
func (d *Demo) runningIn(dep client.Deployment, i int) int {
	r := device.Rollout{Stages: dep.Rollout.Stages}
	n := 0
	for _, dv := range d.production() {
		if r.StageOf(dep.ID, dv.key.ID()) == i {
			n++
		}
	}
	return n
}

// watchTrip waits until the gate stops dep in its first stage and the service rolls it
// back, and prints what it saw.
func (d *Demo) watchTrip(ctx context.Context, contoso *client.Client, dep client.Deployment, first []*demoDevice, target, base string, step func(string, ...any), res *RolloutResult) error {
	crashing := false
	for {
		st, err := contoso.GetDeploymentStatus(ctx, d.Result.Tenant.ID, d.Result.Product.ID, dep.GroupID, dep.ID)
		if err != nil {
			return err
		}
		r := st.Deployment.Rollout
		if r.Stage != 0 || r.State == client.RolloutCompleted {
			return fmt.Errorf("the rollout of %s reached stage %d (%s): the gate did not stop it", target, r.Stage+1, r.State)
		}
		if s := st.Stages[0]; !crashing && r.State == client.RolloutRunning && st.NextStageAt != nil && s.Crashing == len(first) && s.OnNew == len(first) {
			crashing = true
			step("stage 1: its %d devices committed %s (it reported healthy) and now crash at every start, each crash an app_crash report; the stage soaks until %s",
				len(first), versionOf(target), st.NextStageAt.Local().Format("15:04:05"))
		}
		if r.State != client.RolloutRunning {
			if r.Trip == nil || r.State != client.RolloutRolledBack {
				return fmt.Errorf("the rollout of %s is %s, trip %+v; want rolled back by its gate", target, r.State, r.Trip)
			}
			res.Trip = r.Trip
			step("the health gate stopped %s in stage %d: %s %s beyond the threshold %s (gate: %s)",
				target, r.Trip.Stage+1, r.Trip.Figure, figure(r.Trip.Figure, r.Trip.Value), figure(r.Trip.Figure, r.Trip.Threshold), gateText(st.Figures))
			break
		}
		if err := pause(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("the rollout of %s: %w", target, err)
		}
	}
	ds, err := contoso.ListDeployments(ctx, d.Result.Tenant.ID, d.Result.Product.ID, dep.GroupID, client.ListOptions{Limit: 1})
	if err != nil {
		return err
	}
	if len(ds.Items) != 1 || ds.Items[0].Reverts != dep.ID {
		return fmt.Errorf("no deployment reverts %s: the group's newest is %+v", dep.ID, ds.Items)
	}
	rb := ds.Items[0]
	res.Revert = rb.ID
	step("the rollout is %s: the service itself (%s) deployed %s again as %s, which reverts %s", client.RolloutRolledBack, rb.CreatedBy, rb.Target, rb.ID, dep.ID)
	if rb.Target != base {
		return fmt.Errorf("the revert deployment %s deploys %s, want %s", rb.ID, rb.Target, base)
	}
	return nil
}

func stagesText(stages []float64) string {
	var s []string
	for _, p := range stages {
		s = append(s, fmt.Sprintf("%g%%", p))
	}
	return strings.Join(s, ", ")
}

// gateText says the gate's figures now.
func gateText(f client.GateFigures) string {
	return fmt.Sprintf("%d on the new version, %.0f %% crash-free, %d crashes in %.2f device-hours, %d of %d installs failed",
		f.Running, f.CrashFreePercent(), f.Crashes, f.DeviceHours, f.FailedInstalls, f.InstallAttempts)
}

func figure(name string, v float64) string {
	if name == client.FigureCrashRate {
		return fmt.Sprintf("%.3g/h", v)
	}
	return fmt.Sprintf("%.3g %%", v)
}

func versionOf(target string) string { return target[strings.LastIndex(target, "/")+1:] }

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
