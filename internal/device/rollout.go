package device

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/moat-iot/moat/internal/problem"
)

// A staged rollout (issue 12) takes a deployment to its group a stage at a time: stage i
// holds the devices whose StageBucket is below StageBasisPoints(i), so the stages are
// cumulative (1%, 10%, 50%, 100% of the group), a device never leaves a stage it entered,
// and a device added to the group later lands in the stage its hash says. Devices outside
// the open stages are assigned the base image: the deployment that was current when this
// one was created (none when there was none).
//
// A stage advances when its soak time has passed and the gate holds for the devices
// already on the new version; past a threshold the rollout pauses itself (Trip says why)
// and, with AutoRollback, the group is rolled back to the base by a new deployment that
// reverts this one.

// RolloutState is where a staged rollout stands.
type RolloutState string

// Rollout states.
const (
	// RolloutRunning: the open stages are assigned the new image; the stage advances when
	// its soak has passed and the gate holds.
	RolloutRunning RolloutState = "running"
	// RolloutPaused: stopped by an operator or by the gate (Trip set). Nothing new is
	// assigned: only devices that already run the new image keep it.
	RolloutPaused RolloutState = "paused"
	// RolloutAborted: stopped for good; as paused, and it cannot be resumed.
	RolloutAborted RolloutState = "aborted"
	// RolloutCompleted: the last stage (100%) passed its soak and gate; the whole group is
	// assigned the new image, as for a deployment without stages.
	RolloutCompleted RolloutState = "completed"
	// RolloutRolledBack: the gate tripped with AutoRollback, or an operator rolled the
	// group back: a newer deployment (Reverts = this one) assigns the base image.
	RolloutRolledBack RolloutState = "rolled_back"
)

// Gate figures, as GateTrip.Figure names them.
const (
	FigureCrashRate      = "crash_rate"             // app_crash reports per device-hour on the new version
	FigureCrashFree      = "crash_free_percent"     // % of devices on the new version without an app_crash
	FigureFailedInstalls = "failed_install_percent" // % of install attempts of the new image that failed or rolled back
)

// Rollout bounds.
const (
	MaxStages = 10
	// MinStagePercent is the smallest stage: one basis point of the group.
	MinStagePercent = 0.01
	MaxSoak         = 30 * 24 * time.Hour
	// DefaultMinDeviceHours: crash figures are judged once the new version ran this many
	// device-hours in the group, so that three devices do not decide for a million.
	DefaultMinDeviceHours = 24.0
	// DefaultMinInstalls: the failed-install rate is judged once this many devices tried.
	DefaultMinInstalls = 10
)

// Gate is a rollout's health gate: thresholds on the figures of the devices of the group
// that run (or tried to install) the new image, since the deployment was created. A nil
// threshold is not checked.
type Gate struct {
	// MaxCrashRate: app_crash reports per device-hour on the new version, at most.
	MaxCrashRate *float64 `json:"max_crash_rate,omitempty"`
	// MinCrashFree: percent of devices on the new version without an app_crash, at least.
	MinCrashFree *float64 `json:"min_crash_free_percent,omitempty"`
	// MaxFailedInstalls: percent of the devices that tried to install the new image whose
	// latest attempt failed or rolled back, at most.
	MaxFailedInstalls *float64 `json:"max_failed_install_percent,omitempty"`
	// MinDeviceHours: the crash figures are judged (for a trip or an advance) only once the
	// new version ran this many device-hours in the group.
	MinDeviceHours float64 `json:"min_device_hours"`
	// MinInstalls: the failed-install rate is judged only once this many devices tried.
	MinInstalls int `json:"min_installs"`
}

// GateTrip records why the gate paused a rollout: which figure, its value, the threshold.
type GateTrip struct {
	Figure    string    `json:"figure"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Stage     int       `json:"stage"`
	At        time.Time `json:"at"`
}

// String says the trip for people and the audit log.
func (t GateTrip) String() string {
	return fmt.Sprintf("%s %.4g beyond the threshold %.4g in stage %d", t.Figure, t.Value, t.Threshold, t.Stage+1)
}

// Rollout is the staged part of a deployment; a deployment without one goes to its whole
// group at once.
type Rollout struct {
	// Stages are cumulative percentages of the group, ascending, the last 100.
	Stages []float64 `json:"stages"`
	// SoakSeconds is how long each stage runs before it may advance.
	SoakSeconds int64 `json:"soak_seconds"`
	Gate        Gate  `json:"gate"`
	// AutoRollback: when the gate trips, roll the group back to the base image.
	AutoRollback bool `json:"auto_rollback"`

	State RolloutState `json:"state"`
	// Stage is the index in Stages of the last open stage.
	Stage          int       `json:"stage"`
	StageStartedAt time.Time `json:"stage_started_at"`
	// Trip is set when the gate paused the rollout.
	Trip *GateTrip `json:"trip,omitempty"`
	// BaseTarget and BaseSHA256 name the image devices outside the open stages are
	// assigned: the target of the deployment current when this one was created ("" none).
	BaseTarget string    `json:"base_target,omitempty"`
	BaseSHA256 string    `json:"base_sha256,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Version counts the rollout's changes: a change is written only over the version it
	// read (store.Deployments.UpdateRollout), so each stage advances once.
	Version int64 `json:"version"`
}

// Soak is SoakSeconds as a duration.
func (r *Rollout) Soak() time.Duration { return time.Duration(r.SoakSeconds) * time.Second }

// StageBasisPoints is stage i's share of the group in basis points (1% = 100).
func (r *Rollout) StageBasisPoints(i int) uint64 {
	return uint64(math.Round(r.Stages[i] * 100))
}

// StageBucket places a device in a rollout: a stable hash of (deployment, device) in
// [0, 10000). The device is in stage i when its bucket is below StageBasisPoints(i).
func StageBucket(deploymentID string, id ID) uint64 {
	h := sha256.New()
	h.Write([]byte("moat rollout stage\x00"))
	h.Write([]byte(deploymentID))
	h.Write([]byte{0})
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % 10000
}

// StageOf is the index of the first stage that holds the device.
func (r *Rollout) StageOf(deploymentID string, id ID) int {
	b := StageBucket(deploymentID, id)
	for i := range r.Stages {
		if b < r.StageBasisPoints(i) {
			return i
		}
	}
	return len(r.Stages) - 1
}

// InOpenStage reports whether the device is in a stage open now (at or before Stage).
func (r *Rollout) InOpenStage(deploymentID string, id ID) bool {
	return StageBucket(deploymentID, id) < r.StageBasisPoints(r.Stage)
}

// RolloutCreate is the staged part of a deployment request.
type RolloutCreate struct {
	// Stages: cumulative percentages, ascending, the last 100 ("1,10,50,100").
	Stages []float64 `json:"stages"`
	// Soak: how long each stage runs before it may advance, a Go duration ("1h").
	Soak string `json:"soak"`
	Gate Gate   `json:"gate"`
	// AutoRollback: when the gate trips, roll the group back to the base image.
	AutoRollback bool `json:"auto_rollback,omitempty"`
}

// Validate reports every problem with the request; field names are prefixed with
// "rollout.".
func (c RolloutCreate) Validate(v *problem.Validation) {
	switch {
	case len(c.Stages) == 0 || len(c.Stages) > MaxStages:
		v.Add("rollout.stages", "invalid_stages", "stages must list 1 to %d percentages", MaxStages)
	default:
		prev := 0.0
		for i, s := range c.Stages {
			if math.IsNaN(s) || s < MinStagePercent || s > 100 || s <= prev || math.Abs(s*100-math.Round(s*100)) > 1e-9 {
				v.Add("rollout.stages", "invalid_stages", "stages must ascend from %g to 100 in steps of at least %g (stage %d is %g)", MinStagePercent, MinStagePercent, i+1, s)
				break
			}
			prev = s
		}
		if c.Stages[len(c.Stages)-1] != 100 {
			v.Add("rollout.stages", "invalid_stages", "the last stage must be 100")
		}
	}
	if d, err := time.ParseDuration(c.Soak); err != nil || d < 0 || d > MaxSoak {
		v.Add("rollout.soak", "invalid_soak", "soak must be a duration from 0s to %s, such as 1h", MaxSoak)
	}
	g := c.Gate
	checkPercent := func(field string, p *float64) {
		if p != nil && (math.IsNaN(*p) || *p < 0 || *p > 100) {
			v.Add("rollout.gate."+field, "invalid_threshold", "%s must be a percentage from 0 to 100", field)
		}
	}
	checkPercent("min_crash_free_percent", g.MinCrashFree)
	checkPercent("max_failed_install_percent", g.MaxFailedInstalls)
	if g.MaxCrashRate != nil && (math.IsNaN(*g.MaxCrashRate) || *g.MaxCrashRate < 0 || *g.MaxCrashRate > 1e6) {
		v.Add("rollout.gate.max_crash_rate", "invalid_threshold", "max_crash_rate must be from 0 to 1e6 crashes per device-hour")
	}
	if math.IsNaN(g.MinDeviceHours) || g.MinDeviceHours < 0 || g.MinDeviceHours > 1e9 {
		v.Add("rollout.gate.min_device_hours", "invalid_threshold", "min_device_hours must be from 0 to 1e9")
	}
	if g.MinInstalls < 0 || g.MinInstalls > 1e9 {
		v.Add("rollout.gate.min_installs", "invalid_threshold", "min_installs must be from 0 to 1e9")
	}
}

// RolloutAction is the body of POST .../deployments/{deployment}/{pause|resume|abort|promote}.
type RolloutAction struct {
	// Reason is recorded in the audit log (optional, at most 500 bytes).
	Reason string `json:"reason,omitempty"`
	// Force (promote only) skips the gate as well as the wait; audited.
	Force bool `json:"force,omitempty"`
}

// Validate checks the request's shape.
func (a RolloutAction) Validate() error {
	var v problem.Validation
	if len(a.Reason) > 500 {
		v.Add("reason", "invalid_reason", "reason must be at most 500 bytes")
	}
	return v.Err()
}

// GateFigures are a rollout gate's inputs now: the devices of the group on the new image
// and their crash and install figures since the deployment was created.
type GateFigures struct {
	// Running counts the group's devices whose last successful attestation shows the
	// new target.
	Running int `json:"running"`
	// CrashedRunning counts those with at least one app_crash naming the target.
	CrashedRunning int `json:"crashed_running"`
	// Crashes counts the app_crash reports naming the target.
	Crashes     int     `json:"crashes"`
	DeviceHours float64 `json:"device_hours"`
	// InstallAttempts counts the group's devices that report an update step for the
	// target or run it; FailedInstalls those whose latest step for it failed or rolled back
	// and that do not run it.
	InstallAttempts int `json:"install_attempts"`
	FailedInstalls  int `json:"failed_installs"`
}

// CrashRate is Crashes per device-hour (0 without device-hours).
func (f GateFigures) CrashRate() float64 {
	if f.DeviceHours <= 0 {
		return 0
	}
	return float64(f.Crashes) / f.DeviceHours
}

// CrashFreePercent is the percentage of running devices without a crash (100 with none).
func (f GateFigures) CrashFreePercent() float64 {
	if f.Running == 0 {
		return 100
	}
	return 100 * float64(f.Running-f.CrashedRunning) / float64(f.Running)
}

// FailedInstallPercent is the percentage of install attempts that failed (0 with none).
func (f GateFigures) FailedInstallPercent() float64 {
	if f.InstallAttempts == 0 {
		return 0
	}
	return 100 * float64(f.FailedInstalls) / float64(f.InstallAttempts)
}
