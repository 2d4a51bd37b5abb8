package rollout

import (
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/problem"
)

// New makes the rollout of a new deployment from the request: state running, stage 0
// opened at now, version 1, the base image taken from base (the group's current
// deployment, nil when none; when its own rollout did not complete, that rollout's base).
// Errors are *problem.Error (Invalid).
//
// The gate is kept as asked: a zero MinDeviceHours judges the crash figures from the first
// device-hour (the CLI and API default it to device.DefaultMinDeviceHours).
func New(c device.RolloutCreate, base *device.Deployment, now time.Time) (*device.Rollout, error) {
	var v problem.Validation
	c.Validate(&v)
	if err := v.Err(); err != nil {
		return nil, err
	}
	soak, err := time.ParseDuration(c.Soak)
	if err != nil { // Validate parsed it already
		return nil, problem.New(problem.Invalid, "invalid_soak", "soak must be a duration such as 1h")
	}
	r := &device.Rollout{
		Stages:         append([]float64(nil), c.Stages...),
		SoakSeconds:    int64(soak / time.Second),
		Gate:           c.Gate,
		AutoRollback:   c.AutoRollback,
		State:          device.RolloutRunning,
		Stage:          0,
		StageStartedAt: now.UTC(),
		UpdatedAt:      now.UTC(),
		Version:        1,
	}
	switch {
	case base == nil:
	case base.Rollout != nil && base.Rollout.State != device.RolloutCompleted:
		// The current deployment's own rollout never finished (running, paused, aborted,
		// rolled back): its image reached only some devices, or was stopped. The devices
		// outside the new stages keep what the whole group last had, its base, never the
		// unfinished image (TestNew_BaseOfAnUnfinishedRolloutIsItsBase).
		r.BaseTarget, r.BaseSHA256 = base.Rollout.BaseTarget, base.Rollout.BaseSHA256
	default:
		r.BaseTarget, r.BaseSHA256 = base.Target, base.SHA256
	}
	return r, nil
}

// changed is r after a change at now: the version that UpdateRollout writes over the one
// read, and the time of the change.
func changed(r device.Rollout, now time.Time) device.Rollout {
	r.Version++
	r.UpdatedAt = now.UTC()
	// Stages is shared with the caller's copy; a change never writes it, but a caller that
	// did must not change the rollout it read.
	r.Stages = append([]float64(nil), r.Stages...)
	return r
}

// conflict is the problem for a change the rollout's state forbids.
func conflict(r device.Rollout, verb string) error {
	return problem.New(problem.Conflict, "rollout_"+string(r.State),
		"cannot %s a rollout that is %s", verb, stateWords(r.State))
}

func stateWords(s device.RolloutState) string {
	if s == device.RolloutRolledBack {
		return "rolled back"
	}
	return string(s)
}

// Pause stops a running rollout (Conflict for another state). Pause, Resume, Abort and
// Promote return the changed rollout with Version+1 and UpdatedAt now, to be written with
// store.Deployments.UpdateRollout; a state that forbids the change is a *problem.Error
// of Kind Conflict whose Detail says the state.
func Pause(r device.Rollout, now time.Time) (device.Rollout, error) {
	if r.State != device.RolloutRunning {
		return r, conflict(r, "pause")
	}
	r = changed(r, now)
	r.State = device.RolloutPaused
	return r, nil
}

// Resume restarts a paused rollout: Trip is cleared and the open stage's soak starts again
// at now.
func Resume(r device.Rollout, now time.Time) (device.Rollout, error) {
	if r.State != device.RolloutPaused {
		return r, conflict(r, "resume")
	}
	r = changed(r, now)
	r.State = device.RolloutRunning
	r.Trip = nil
	r.StageStartedAt = now.UTC()
	return r, nil
}

// Abort stops a running or paused rollout for good.
func Abort(r device.Rollout, now time.Time) (device.Rollout, error) {
	if r.State != device.RolloutRunning && r.State != device.RolloutPaused {
		return r, conflict(r, "abort")
	}
	r = changed(r, now)
	r.State = device.RolloutAborted
	return r, nil
}

// Promote opens the next stage now (or completes the rollout from its last stage),
// skipping the soak and the gate's minimum device-hours and installs, never the gate's
// thresholds unless force: without force, a trip in f is a Conflict naming the figure.
// Only a running or paused rollout is promoted.
//
// A promoted rollout runs (a paused one is resumed by it), its Trip cleared: the operator
// looked at the figures, and with force the audit event records that the gate was skipped.
func Promote(r device.Rollout, f device.GateFigures, force bool, now time.Time) (device.Rollout, error) {
	if r.State != device.RolloutRunning && r.State != device.RolloutPaused {
		return r, conflict(r, "promote")
	}
	if !force {
		g := r.Gate
		g.MinDeviceHours, g.MinInstalls = 0, 0
		if trip, _ := Judge(g, f, r.Stage, now); trip != nil {
			p := problem.New(problem.Conflict, "gate_tripped",
				"the gate holds the rollout: %s (promote with force to skip the gate)", trip)
			p.Extensions = map[string]any{"trip": trip}
			return r, p
		}
	}
	r = changed(r, now)
	r.Trip = nil
	if r.Stage >= len(r.Stages)-1 {
		r.State = device.RolloutCompleted
		return r, nil
	}
	r.State = device.RolloutRunning
	r.Stage++
	r.StageStartedAt = now.UTC()
	return r, nil
}

// Judge applies the gate to the figures: trip is the first threshold passed (nil when
// none), judged only for figures with enough data (MinDeviceHours for the crash figures,
// MinInstalls for the failed-install rate); ready reports that every threshold set has
// enough data to be judged and passed, so the stage may advance once its soak is over.
//
// The failed-install rate needs at least one attempt however low MinInstalls is: with none
// there is nothing to judge, and an empty stage must not pass for a healthy one.
func Judge(g device.Gate, f device.GateFigures, stage int, now time.Time) (trip *device.GateTrip, ready bool) {
	ready = true
	tripped := func(figure string, value, threshold float64) {
		if trip == nil {
			trip = &device.GateTrip{Figure: figure, Value: value, Threshold: threshold, Stage: stage, At: now.UTC()}
		}
	}
	crashData := f.DeviceHours >= g.MinDeviceHours
	if g.MaxCrashRate != nil {
		if !crashData {
			ready = false
		} else if v := f.CrashRate(); v > *g.MaxCrashRate {
			tripped(device.FigureCrashRate, v, *g.MaxCrashRate)
		}
	}
	if g.MinCrashFree != nil {
		if !crashData {
			ready = false
		} else if v := f.CrashFreePercent(); v < *g.MinCrashFree {
			tripped(device.FigureCrashFree, v, *g.MinCrashFree)
		}
	}
	if g.MaxFailedInstalls != nil {
		if f.InstallAttempts < max(g.MinInstalls, 1) {
			ready = false
		} else if v := f.FailedInstallPercent(); v > *g.MaxFailedInstalls {
			tripped(device.FigureFailedInstalls, v, *g.MaxFailedInstalls)
		}
	}
	return trip, ready && trip == nil
}
