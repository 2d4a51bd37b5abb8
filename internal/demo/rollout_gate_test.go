package demo_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/sdk"
)

// gateAppEnv makes this test binary the app of TestRollout_GateTripsOnCrashingReleaseNotOnHealthy:
// "healthy" reports healthy and runs until stopped; "crash" reports healthy, runs a moment
// (so that the agent commits it) and exits 2, every time the agent restarts it.
const gateAppEnv = "MOAT_TEST_GATE_APP"

// maybeRunGateApp runs the gate test's app and exits when the process was started as one.
func maybeRunGateApp() {
	mode := os.Getenv(gateAppEnv)
	if mode == "" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := sdk.Connect(ctx)
	if err == nil {
		err = c.ReportHealthy(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gate app:", err)
		os.Exit(1)
	}
	if mode == "crash" {
		select {
		case <-ctx.Done():
			os.Exit(0)
		case <-time.After(time.Second):
		}
		fmt.Fprintln(os.Stderr, "gate app 3.0.0: wash controller: index out of range")
		os.Exit(2)
	}
	<-ctx.Done()
	os.Exit(0)
}

// offsetClock is the shared clock of the test's server and agents: real time plus an
// offset the test moves forward, so that an hour's soak passes when the test says so.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// gateFleet is a platform with real agents in DW100/Production, the app the test binary.
type gateFleet struct {
	*testenv.Platform
	t      *testing.T
	clock  *offsetClock
	group  string
	ids    []string
	devs   []testenv.Device
	agents []*agent.Agent
	logs   *testenv.SyncBuffer
}

// gate is the health gate of the test's rollouts: crash figures judged from half a
// device-hour, install failures from the first attempt.
func gate() client.Gate {
	crashFree, crashRate, failed := 90.0, 3.0, 20.0
	return client.Gate{MinCrashFree: &crashFree, MaxCrashRate: &crashRate, MaxFailedInstalls: &failed, MinDeviceHours: 0.5, MinInstalls: 1}
}

// TestRollout_GateTripsOnCrashingReleaseNotOnHealthy is the issue's "the gate trips on a
// crashing release and not on a healthy one (real agents, not stubs)": ten in-process
// agents on app 1.0.0 in DW100/Production. A staged 1.1.0 (20 %, 100 %, an hour's soak,
// gate: crash-free at least 90 %, at most 3 crashes per device-hour, at most 20 % failed
// installs, judged from half a device-hour) opens each stage only once the soak is over,
// advances through both and completes, its gate never tripped. A 3.0.0 that reports
// healthy (so each device commits it) and then crashes at every start trips the gate in
// its first stage: the rollout records the figure, its value beyond the threshold and the
// stage, and with auto_rollback a deployment by "system" that reverts it brings every
// device back to 1.1.0; no device outside the first stage ever downloaded or ran 3.0.0.
//
// The soak passes by the shared clock of server and agents (offsetClock), not by waiting;
// every wait is for a condition, with a deadline.
func TestRollout_GateTripsOnCrashingReleaseNotOnHealthy(t *testing.T) {
	t.Parallel()
	f := newGateFleet(t, 10)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	launcher := func(mode string) []byte {
		return []byte("#!/bin/sh\n" + gateAppEnv + "=" + mode + " exec '" + strings.ReplaceAll(exe, "'", `'\''`) + "'\n")
	}
	osImg := f.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	v10 := f.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", launcher("healthy"))
	f.deploy(client.DeploymentCreate{Target: v10.Path})
	f.start(t)
	f.waitAll("every device on 1.0.0", osImg.Path, v10.Path)

	// The healthy release advances through every stage and completes.
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", launcher("healthy"))
	d11, first := f.staged(v11.Path)
	f.waitRunning("stage 1 on 1.1.0", first, osImg.Path, v11.Path)
	f.waitRunning("the others still on 1.0.0", f.others(first), osImg.Path, v10.Path)
	if st := f.status(d11.ID); st.Deployment.Rollout.Stage != 0 || st.Verdict != "soaking" {
		t.Fatalf("1.1.0 before its soak ended: stage %d, verdict %s; want stage 1 soaking", st.Deployment.Rollout.Stage+1, st.Verdict)
	}
	f.soakOver()
	f.waitRollout(d11.ID, "1.1.0 opens stage 2", func(r client.Rollout) bool { return r.Stage == 1 || r.State != client.RolloutRunning })
	f.waitAll("every device on 1.1.0", osImg.Path, v11.Path)
	f.soakOver()
	done := f.waitRollout(d11.ID, "1.1.0 completes", func(r client.Rollout) bool { return r.State != client.RolloutRunning })
	if done.State != client.RolloutCompleted || done.Trip != nil || done.Stage != 1 {
		t.Fatalf("1.1.0 rollout = %s at stage %d, trip %+v; want completed after stage 2, no trip", done.State, done.Stage+1, done.Trip)
	}

	// The crashing release trips the gate in its first stage and is rolled back.
	v3 := f.PublishAppWith("dw100-app", "3.0.0", 1, "DW100", launcher("crash"))
	d3, first := f.staged(v3.Path)
	f.waitRunning("stage 1 committed 3.0.0", first, osImg.Path, v3.Path)
	f.eventually("stage 1 crashing on 3.0.0", func() (bool, string) {
		st := f.status(d3.ID)
		s := st.Stages[0]
		return s.Crashing == len(first) && st.Deployment.Rollout.State == client.RolloutRunning,
			fmt.Sprintf("stage 1: %d targeted, %d on new, %d crashing; rollout %s", s.Targeted, s.OnNew, s.Crashing, st.Deployment.Rollout.State)
	})
	f.soakOver()
	tripped := f.waitRollout(d3.ID, "the gate trips", func(r client.Rollout) bool { return r.State != client.RolloutRunning || r.Stage != 0 })
	trip := tripped.Trip
	if tripped.State != client.RolloutRolledBack || trip == nil || trip.Stage != 0 || tripped.Stage != 0 {
		t.Fatalf("3.0.0 rollout = %s at stage %d, trip %+v; want rolled_back by a trip in stage 1", tripped.State, tripped.Stage+1, trip)
	}
	switch {
	case trip.Figure == client.FigureCrashFree && trip.Value < trip.Threshold && trip.Threshold == 90:
	case trip.Figure == client.FigureCrashRate && trip.Value > trip.Threshold && trip.Threshold == 3:
	default:
		t.Errorf("trip = %+v; want a crash figure beyond its threshold", *trip)
	}
	ds, err := f.Admin.ListDeployments(t.Context(), f.Tenant, f.Product, f.group, client.ListOptions{Limit: 1})
	if err != nil || len(ds.Items) != 1 {
		t.Fatalf("ListDeployments = %+v, %v", ds.Items, err)
	}
	if rb := ds.Items[0]; rb.Reverts != d3.ID || rb.Target != v11.Path || rb.CreatedBy != "system" || rb.Rollout != nil {
		t.Errorf("the group's current deployment = %+v; want system's revert of %s to %s", rb, d3.ID, v11.Path)
	}
	f.waitAll("every device back on 1.1.0", osImg.Path, v11.Path)
	for _, id := range f.others(first) {
		f.neverHad(id, v3.Path)
	}
}

func newGateFleet(t *testing.T, n int) *gateFleet {
	t.Helper()
	clock := &offsetClock{}
	p := testenv.NewPlatform(t, testenv.WithConfig(func(c *server.Config) {
		c.Now = clock.Now
		c.RolloutAdvanceInterval = server.MinRolloutAdvanceInterval
	}))
	f := &gateFleet{Platform: p, t: t, clock: clock, logs: &testenv.SyncBuffer{}}
	gs, err := p.Admin.ListDeviceGroups(t.Context(), p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(gs.Items) != 1 {
		t.Fatalf("Production group: %+v, %v", gs.Items, err)
	}
	f.group = gs.Items[0].ID
	for range n {
		d := p.NewDevice(true, "DW100/Production")
		f.devs, f.ids = append(f.devs, d), append(f.ids, d.ID)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agents' log:\n%s", f.logs.String())
		}
	})
	return f
}

// start runs one agent per device until the test ends.
func (f *gateFleet) start(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.Server.CAPEM)
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, len(f.ids))
	for i, dv := range f.devs {
		a, err := agent.New(agent.Config{
			StateDir: filepath.Join(t.TempDir(), "state"), ServerURL: f.Server.DeviceURL, ServerCAs: pool, Root: f.Root,
			Identity: dv.Key, Backend: periph.NewDW100(), Now: f.clock.Now, CheckInterval: time.Hour,
			HealthTimeout: 30 * time.Second, Product: "DW100", Logger: log.With("agent", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		f.agents = append(f.agents, a)
		go func() { done <- a.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range f.agents {
			if err := <-done; err != nil {
				t.Errorf("agent Run: %v", err)
			}
		}
	})
}

// deploy deploys to DW100/Production.
func (f *gateFleet) deploy(req client.DeploymentCreate) client.Deployment {
	f.t.Helper()
	d, err := f.Admin.CreateDeployment(f.t.Context(), f.Tenant, f.Product, f.group, req)
	if err != nil {
		f.t.Fatalf("deploy %s: %v", req.Target, err)
	}
	return d
}

// staged deploys target in stages 20 %, 100 % with an hour's soak, the test's gate and
// auto_rollback, and returns the deployment and the devices of its first stage. Stages
// hash (deployment, device), so with ten devices the first stage is empty about one time
// in ten (or, rarely, holds all): then, as an operator would, the test aborts it, rolls the
// group back to the deployment before it and deploys again.
func (f *gateFleet) staged(target string) (client.Deployment, []string) {
	f.t.Helper()
	ctx := f.t.Context()
	for range 10 {
		d := f.deploy(client.DeploymentCreate{Target: target, Rollout: &client.RolloutCreate{
			Stages: []float64{20, 100}, Soak: "1h", Gate: gate(), AutoRollback: true}})
		r := device.Rollout{Stages: d.Rollout.Stages}
		var first []string
		for _, id := range f.ids {
			if r.InOpenStage(d.ID, device.ID(id)) {
				first = append(first, id)
			}
		}
		if len(first) > 0 && len(first) < len(f.ids) {
			return d, first
		}
		f.t.Logf("stage 1 of %s holds %d of %d devices: abort, roll back, deploy again", d.ID, len(first), len(f.ids))
		if _, err := f.Admin.AbortDeployment(ctx, f.Tenant, f.Product, f.group, d.ID, client.RolloutAction{Reason: "first stage empty"}); err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.Admin.RollbackDeployment(ctx, f.Tenant, f.Product, f.group, client.DeploymentRollback{}); err != nil {
			f.t.Fatal(err)
		}
	}
	f.t.Fatalf("no deployment of %s in ten had a first stage with some devices but not all", target)
	return client.Deployment{}, nil
}

// soakOver moves the shared clock past the soak and nudges every agent, so that each calls
// the service at once and its device-hours count up to the new time.
func (f *gateFleet) soakOver() {
	f.clock.Advance(time.Hour + time.Minute)
	for _, a := range f.agents {
		a.Nudge()
	}
}

func (f *gateFleet) others(in []string) []string {
	var out []string
	for _, id := range f.ids {
		if !slices.Contains(in, id) {
			out = append(out, id)
		}
	}
	return out
}

func (f *gateFleet) status(id string) client.RolloutStatus {
	f.t.Helper()
	st, err := f.Admin.GetDeploymentStatus(f.t.Context(), f.Tenant, f.Product, f.group, id)
	if err != nil {
		f.t.Fatalf("GetDeploymentStatus(%s) = %v", id, err)
	}
	return st
}

// waitRollout waits until the deployment's rollout satisfies ok and returns it.
func (f *gateFleet) waitRollout(id, what string, ok func(client.Rollout) bool) client.Rollout {
	f.t.Helper()
	var r client.Rollout
	f.eventually(what, func() (bool, string) {
		st := f.status(id)
		r = *st.Deployment.Rollout
		return ok(r), fmt.Sprintf("%s at stage %d, verdict %s, figures %+v, trip %+v", r.State, r.Stage+1, st.Verdict, st.Figures, r.Trip)
	})
	return r
}

func (f *gateFleet) waitAll(what string, paths ...string) { f.waitRunning(what, f.ids, paths...) }

// waitRunning waits until each of ids attested running exactly paths.
func (f *gateFleet) waitRunning(what string, ids []string, paths ...string) {
	f.t.Helper()
	f.eventually(what, func() (bool, string) {
		var off []string
		for _, id := range ids {
			d, err := f.Admin.GetDevice(f.t.Context(), f.Tenant, id)
			if err != nil {
				f.t.Fatal(err)
			}
			if !runsExactly(d, paths) {
				off = append(off, fmt.Sprintf("%.8s %s", id, describe(d.Attestation)))
			}
		}
		return len(off) == 0, strings.Join(off, "; ")
	})
}

// neverHad checks that the device reported no update step for target and no crash of it.
func (f *gateFleet) neverHad(id, target string) {
	f.t.Helper()
	ctx := f.t.Context()
	states, err := f.Admin.ListUpdateStates(ctx, f.Tenant, id, client.ListOptions{Limit: 100})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, s := range states.Items {
		if s.Report.Target == target {
			f.t.Errorf("device %s outside the first stage reported %s for %s", id, s.Report.State, target)
		}
	}
	reports, err := f.Admin.ListErrorReports(ctx, f.Tenant, id, client.ListOptions{Limit: 100})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range reports.Items {
		if r.Report.ImagePath == target || r.Report.Target == target {
			f.t.Errorf("device %s outside the first stage reported %s for %s", id, r.Report.Kind, target)
		}
	}
}

// eventually polls cond for up to three minutes: generous, for a loaded machine running
// ten agents and their apps under the race detector.
func (f *gateFleet) eventually(what string, cond func() (bool, string)) {
	f.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		select {
		case <-f.t.Context().Done():
			f.t.Fatalf("%s: %v", what, f.t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	f.t.Fatalf("%s: not within 3 minutes; last: %s", what, last)
}

func runsExactly(d client.Device, paths []string) bool {
	a := d.Attestation
	if a == nil || a.Refusal != "" || len(a.Images) != len(paths) {
		return false
	}
	for i, p := range paths {
		if a.Images[i].Path != p {
			return false
		}
	}
	return true
}

func describe(a *client.Attestation) string {
	if a == nil {
		return "not attested"
	}
	s := a.Refusal
	for _, im := range a.Images {
		s += " " + im.Path
	}
	return strings.TrimSpace(s)
}
