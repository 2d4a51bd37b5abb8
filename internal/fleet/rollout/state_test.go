package rollout_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet/rollout"
	"github.com/moat-iot/moat/internal/problem"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

func ptr(f float64) *float64 { return &f }

// gate is a gate with every threshold set: 0.01 crashes per device-hour, 99% crash-free,
// 5% failed installs, judged from 24 device-hours and 10 installs.
func gate() device.Gate {
	return device.Gate{MaxCrashRate: ptr(0.01), MinCrashFree: ptr(99), MaxFailedInstalls: ptr(5),
		MinDeviceHours: 24, MinInstalls: 10}
}

// TestJudge_TripsOnCrashingFigures: past any threshold, with enough data, the gate trips
// and names the figure, its value and the threshold, and the stage is not ready.
func TestJudge_TripsOnCrashingFigures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		g    device.Gate
		f    device.GateFigures
		want device.GateTrip
	}{
		{"CrashRate", gate(), device.GateFigures{Running: 1000, Crashes: 50, DeviceHours: 1000, InstallAttempts: 1000},
			device.GateTrip{Figure: device.FigureCrashRate, Value: 0.05, Threshold: 0.01}},
		{"CrashFree", device.Gate{MinCrashFree: ptr(99), MinDeviceHours: 24},
			device.GateFigures{Running: 100, CrashedRunning: 2, Crashes: 2, DeviceHours: 1000},
			device.GateTrip{Figure: device.FigureCrashFree, Value: 98, Threshold: 99}},
		{"FailedInstalls", gate(), device.GateFigures{Running: 90, DeviceHours: 1000, InstallAttempts: 100, FailedInstalls: 10},
			device.GateTrip{Figure: device.FigureFailedInstalls, Value: 10, Threshold: 5}},
		// A few installs below MinDeviceHours: the install rate has its own minimum.
		{"FailedInstallsBeforeDeviceHours", gate(), device.GateFigures{Running: 1, DeviceHours: 1, InstallAttempts: 10, FailedInstalls: 9},
			device.GateTrip{Figure: device.FigureFailedInstalls, Value: 90, Threshold: 5}},
		{"CrashRateAtMinimum", device.Gate{MaxCrashRate: ptr(0), MinDeviceHours: 24},
			device.GateFigures{Running: 3, Crashes: 1, DeviceHours: 24},
			device.GateTrip{Figure: device.FigureCrashRate, Value: 1.0 / 24, Threshold: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			trip, ready := rollout.Judge(tc.g, tc.f, 2, t0)
			tc.want.Stage, tc.want.At = 2, t0
			if trip == nil || ready {
				t.Fatalf("Judge(%+v) = %v, %v, want trip %v, not ready", tc.f, trip, ready, tc.want)
			}
			if diff := cmp.Diff(tc.want, *trip); diff != "" {
				t.Errorf("Judge(%+v) trip (-want +got):\n%s", tc.f, diff)
			}
		})
	}
}

// TestJudge_DoesNotTripOnHealthyFigures: within every threshold, with enough data, the gate
// is ready; with no threshold at all it is ready at once.
func TestJudge_DoesNotTripOnHealthyFigures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		g    device.Gate
		f    device.GateFigures
	}{
		{"Healthy", gate(), device.GateFigures{Running: 1000, CrashedRunning: 5, Crashes: 5, DeviceHours: 1000, InstallAttempts: 1000, FailedInstalls: 20}},
		{"AtThresholds", gate(), device.GateFigures{Running: 100, CrashedRunning: 1, Crashes: 10, DeviceHours: 1000, InstallAttempts: 100, FailedInstalls: 5}},
		{"NoThresholds", device.Gate{MinDeviceHours: 1e6, MinInstalls: 1e6}, device.GateFigures{}},
		{"OnlyCrashRateNoInstalls", device.Gate{MaxCrashRate: ptr(0.1), MinDeviceHours: 24}, device.GateFigures{Running: 30, DeviceHours: 48}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if trip, ready := rollout.Judge(tc.g, tc.f, 0, t0); trip != nil || !ready {
				t.Errorf("Judge(%+v) = %v, %v, want no trip, ready", tc.f, trip, ready)
			}
		})
	}
}

// TestJudge_WaitsBelowMinimumData: three devices do not decide for a million: below
// MinDeviceHours the crash figures neither trip nor pass, below MinInstalls (and with no
// attempt at all) the install rate neither trips nor passes.
func TestJudge_WaitsBelowMinimumData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		g    device.Gate
		f    device.GateFigures
	}{
		{"CrashingBelowDeviceHours", gate(), device.GateFigures{Running: 3, CrashedRunning: 3, Crashes: 30, DeviceHours: 23.9, InstallAttempts: 3}},
		{"CrashFreeBelowDeviceHours", device.Gate{MinCrashFree: ptr(99), MinDeviceHours: 24}, device.GateFigures{Running: 3, CrashedRunning: 3, Crashes: 3, DeviceHours: 2}},
		{"FailingBelowInstalls", device.Gate{MaxFailedInstalls: ptr(5), MinInstalls: 10}, device.GateFigures{InstallAttempts: 9, FailedInstalls: 9}},
		{"NoInstallsWithZeroMinimum", device.Gate{MaxFailedInstalls: ptr(5)}, device.GateFigures{}},
		{"HealthyCrashesButInstallsWaiting", gate(), device.GateFigures{Running: 100, DeviceHours: 100, InstallAttempts: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if trip, ready := rollout.Judge(tc.g, tc.f, 0, t0); trip != nil || ready {
				t.Errorf("Judge(%+v) = %v, %v, want no trip, not ready", tc.f, trip, ready)
			}
		})
	}
}

func running(t *testing.T) device.Rollout {
	t.Helper()
	r, err := rollout.New(device.RolloutCreate{Stages: []float64{1, 10, 100}, Soak: "1h", Gate: gate()},
		&device.Deployment{Target: "apps/wash/1.0.0", SHA256: "abc"}, t0)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return *r
}

func TestNew(t *testing.T) {
	t.Parallel()
	got := running(t)
	want := device.Rollout{Stages: []float64{1, 10, 100}, SoakSeconds: 3600, Gate: gate(), State: device.RolloutRunning,
		StageStartedAt: t0, UpdatedAt: t0, Version: 1, BaseTarget: "apps/wash/1.0.0", BaseSHA256: "abc"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("New (-want +got):\n%s", diff)
	}
	r, err := rollout.New(device.RolloutCreate{Stages: []float64{100}, Soak: "0s"}, nil, t0)
	if err != nil || r.BaseTarget != "" || r.BaseSHA256 != "" {
		t.Errorf("New without base = %+v, %v, want no base", r, err)
	}
	_, err = rollout.New(device.RolloutCreate{Stages: []float64{50, 10}, Soak: "forever"}, nil, t0)
	if p, ok := errors.AsType[*problem.Error](err); !ok || p.Kind != problem.Invalid || len(p.Fields) != 3 {
		t.Errorf("New(bad stages and soak) = %v, want Invalid naming 3 problems", err)
	}
}

func kind(err error) problem.Kind {
	if p, ok := errors.AsType[*problem.Error](err); ok {
		return p.Kind
	}
	return -1
}

// TestStateChanges: each operator verb from each state: the states it is allowed from
// move the rollout on with Version+1; the others are a Conflict that changes nothing.
func TestStateChanges(t *testing.T) {
	t.Parallel()
	t1 := t0.Add(time.Hour)
	verbs := map[string]func(device.Rollout) (device.Rollout, error){
		"pause":  func(r device.Rollout) (device.Rollout, error) { return rollout.Pause(r, t1) },
		"resume": func(r device.Rollout) (device.Rollout, error) { return rollout.Resume(r, t1) },
		"abort":  func(r device.Rollout) (device.Rollout, error) { return rollout.Abort(r, t1) },
		"promote": func(r device.Rollout) (device.Rollout, error) {
			return rollout.Promote(r, device.GateFigures{}, false, t1)
		},
	}
	allowed := map[string]map[device.RolloutState]device.RolloutState{
		"pause":   {device.RolloutRunning: device.RolloutPaused},
		"resume":  {device.RolloutPaused: device.RolloutRunning},
		"abort":   {device.RolloutRunning: device.RolloutAborted, device.RolloutPaused: device.RolloutAborted},
		"promote": {device.RolloutRunning: device.RolloutRunning, device.RolloutPaused: device.RolloutRunning},
	}
	states := []device.RolloutState{device.RolloutRunning, device.RolloutPaused, device.RolloutAborted, device.RolloutCompleted, device.RolloutRolledBack}
	for verb, f := range verbs {
		for _, s := range states {
			r := running(t)
			r.State = s
			r.Trip = &device.GateTrip{Figure: device.FigureCrashRate}
			got, err := f(r)
			want, ok := allowed[verb][s]
			if !ok {
				if kind(err) != problem.Conflict || got.Version != r.Version || got.State != s {
					t.Errorf("%s from %s = %+v, %v, want Conflict and no change", verb, s, got, err)
				}
				continue
			}
			if err != nil || got.State != want || got.Version != 2 || !got.UpdatedAt.Equal(t1) {
				t.Errorf("%s from %s = %s v%d at %v, %v, want %s v2 at %v", verb, s, got.State, got.Version, got.UpdatedAt, err, want, t1)
			}
			if r.Version != 1 {
				t.Errorf("%s changed the rollout it was given", verb)
			}
			if verb == "resume" || verb == "promote" {
				if got.Trip != nil || !got.StageStartedAt.Equal(t1) {
					t.Errorf("%s from %s: trip %v, stage started %v, want no trip, %v", verb, s, got.Trip, got.StageStartedAt, t1)
				}
			}
		}
	}
}

// TestPromote_NeverSkipsTheGateWithoutForce: promote skips the soak and the minimum data,
// but a figure past its threshold is a Conflict that names it, unless forced.
func TestPromote_NeverSkipsTheGateWithoutForce(t *testing.T) {
	t.Parallel()
	r := running(t)
	crashing := device.GateFigures{Running: 3, CrashedRunning: 3, Crashes: 3, DeviceHours: 1}
	got, err := rollout.Promote(r, crashing, false, t0)
	if p, ok := errors.AsType[*problem.Error](err); !ok || p.Kind != problem.Conflict || p.Code != "gate_tripped" || got.Stage != 0 {
		t.Fatalf("Promote(crashing, no force) = stage %d, %v, want Conflict gate_tripped", got.Stage, err)
	}
	got, err = rollout.Promote(r, crashing, true, t0)
	if err != nil || got.Stage != 1 {
		t.Fatalf("Promote(crashing, force) = stage %d, %v, want stage 1", got.Stage, err)
	}
	// Too little data is no reason to wait for a promote.
	got, err = rollout.Promote(r, device.GateFigures{Running: 1, DeviceHours: 1}, false, t0)
	if err != nil || got.Stage != 1 {
		t.Fatalf("Promote(healthy, little data) = stage %d, %v, want stage 1", got.Stage, err)
	}
	got.Stage = 2
	got, err = rollout.Promote(got, device.GateFigures{}, false, t0)
	if err != nil || got.State != device.RolloutCompleted || got.Stage != 2 {
		t.Fatalf("Promote(last stage) = %s stage %d, %v, want completed", got.State, got.Stage, err)
	}
}

// TestNew_BaseOfAnUnfinishedRolloutIsItsBase: a rollout made over a deployment whose own
// rollout did not complete (aborted, paused, running, rolled back) takes that rollout's
// base, never its unfinished image: the devices outside the new stages must not be handed
// an image that was stopped. Over a completed rollout, or a plain deployment, the base is
// the current deployment's image.
func TestNew_BaseOfAnUnfinishedRolloutIsItsBase(t *testing.T) {
	t.Parallel()
	c := device.RolloutCreate{Stages: []float64{10, 100}, Soak: "1h"}
	for _, state := range []device.RolloutState{device.RolloutAborted, device.RolloutPaused, device.RolloutRunning, device.RolloutRolledBack} {
		cur := &device.Deployment{ID: "dep_1", Target: "apps/wash/3.0.0", SHA256: "bad",
			Rollout: &device.Rollout{State: state, BaseTarget: "apps/wash/1.2.0", BaseSHA256: "good"}}
		r, err := rollout.New(c, cur, t0)
		if err != nil || r.BaseTarget != "apps/wash/1.2.0" || r.BaseSHA256 != "good" {
			t.Errorf("New over a %s rollout: base %q %q, %v; want its base apps/wash/1.2.0", state, r.BaseTarget, r.BaseSHA256, err)
		}
	}
	for _, cur := range []*device.Deployment{
		{ID: "dep_2", Target: "apps/wash/2.0.0", SHA256: "two", Rollout: &device.Rollout{State: device.RolloutCompleted, BaseTarget: "apps/wash/1.2.0", BaseSHA256: "good"}},
		{ID: "dep_3", Target: "apps/wash/2.0.0", SHA256: "two"},
	} {
		r, err := rollout.New(c, cur, t0)
		if err != nil || r.BaseTarget != "apps/wash/2.0.0" || r.BaseSHA256 != "two" {
			t.Errorf("New over %s: base %q %q, %v; want apps/wash/2.0.0", cur.ID, r.BaseTarget, r.BaseSHA256, err)
		}
	}
}
