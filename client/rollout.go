package client

import (
	"context"
	"net/http"
	"time"
)

// Rollout states (Rollout.State).
const (
	RolloutRunning    = "running"
	RolloutPaused     = "paused"
	RolloutAborted    = "aborted"
	RolloutCompleted  = "completed"
	RolloutRolledBack = "rolled_back"
)

// Gate figures, as GateTrip.Figure names them.
const (
	FigureCrashRate      = "crash_rate"
	FigureCrashFree      = "crash_free_percent"
	FigureFailedInstalls = "failed_install_percent"
)

// Gate is a staged rollout's health gate: thresholds on the figures of the group's devices
// on the new image. A nil threshold is not checked.
type Gate struct {
	// MaxCrashRate: app_crash reports per device-hour on the new version, at most.
	MaxCrashRate *float64 `json:"max_crash_rate,omitempty"`
	// MinCrashFree: percent of devices on the new version without an app_crash, at least.
	MinCrashFree *float64 `json:"min_crash_free_percent,omitempty"`
	// MaxFailedInstalls: percent of install attempts that failed or rolled back, at most.
	MaxFailedInstalls *float64 `json:"max_failed_install_percent,omitempty"`
	// MinDeviceHours: the crash figures are judged only once the new version ran this many
	// device-hours in the group.
	MinDeviceHours float64 `json:"min_device_hours"`
	// MinInstalls: the failed-install rate is judged only once this many devices tried.
	MinInstalls int `json:"min_installs"`
}

// GateTrip is why the gate paused a rollout: which figure, its value, the threshold.
type GateTrip struct {
	Figure    string    `json:"figure"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Stage     int       `json:"stage"`
	At        time.Time `json:"at"`
}

// Rollout is the staged part of a deployment.
type Rollout struct {
	// Stages are cumulative percentages of the group, ascending, the last 100.
	Stages       []float64 `json:"stages"`
	SoakSeconds  int64     `json:"soak_seconds"`
	Gate         Gate      `json:"gate"`
	AutoRollback bool      `json:"auto_rollback"`
	State        string    `json:"state"`
	// Stage is the index in Stages of the last open stage.
	Stage          int       `json:"stage"`
	StageStartedAt time.Time `json:"stage_started_at"`
	Trip           *GateTrip `json:"trip,omitempty"`
	// BaseTarget is the image devices outside the open stages are assigned ("" none).
	BaseTarget string    `json:"base_target,omitempty"`
	BaseSHA256 string    `json:"base_sha256,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	Version    int64     `json:"version"`
}

// RolloutCreate is the staged part of a deployment request.
type RolloutCreate struct {
	// Stages: cumulative percentages, ascending, the last 100.
	Stages []float64 `json:"stages"`
	// Soak: how long each stage runs before it may advance, a Go duration ("1h").
	Soak         string `json:"soak"`
	Gate         Gate   `json:"gate"`
	AutoRollback bool   `json:"auto_rollback,omitempty"`
}

// RolloutAction is the body of a pause, resume, abort or promote.
type RolloutAction struct {
	// Reason is recorded in the audit log (at most 500 bytes).
	Reason string `json:"reason,omitempty"`
	// Force (promote only) skips the gate as well as the soak; audited as
	// deployment.promote_forced.
	Force bool `json:"force,omitempty"`
}

// GateFigures are a gate's inputs now, for the devices of the group on the new image.
type GateFigures struct {
	Running         int     `json:"running"`
	CrashedRunning  int     `json:"crashed_running"`
	Crashes         int     `json:"crashes"`
	DeviceHours     float64 `json:"device_hours"`
	InstallAttempts int     `json:"install_attempts"`
	FailedInstalls  int     `json:"failed_installs"`
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

// StageStatus is one stage of a rollout now.
type StageStatus struct {
	Percent float64 `json:"percent"`
	// Open: the stage's devices are assigned the new image (state permitting).
	Open bool `json:"open"`
	// Targeted counts the group's devices in this stage (not in an earlier one).
	Targeted int `json:"targeted"`
	// OnNew counts those that run the new image.
	OnNew int `json:"on_new"`
	// Failed counts those whose latest update failed and that do not run it.
	Failed int `json:"failed"`
	// Crashing counts those with an app_crash of the new image.
	Crashing int `json:"crashing"`
}

// RolloutStatus is a staged deployment now: per stage, the gate's figures and verdict.
type RolloutStatus struct {
	Deployment Deployment    `json:"deployment"`
	Stages     []StageStatus `json:"stages"`
	Figures    GateFigures   `json:"figures"`
	// Verdict: advancing, soaking, waiting_for_data, tripped, or the state when not running.
	Verdict     string     `json:"verdict"`
	NextStageAt *time.Time `json:"next_stage_at,omitempty"`
}

func deploymentPath(tenant, product, group, id string, rest ...string) []string {
	return append([]string{"tenants", tenant, "products", product, "device-groups", group, "deployments", id}, rest...)
}

// GetDeploymentStatus returns a staged deployment's rollout now; a deployment without a
// rollout is a 404 *Error with Code rollout_not_found.
func (c *Client) GetDeploymentStatus(ctx context.Context, tenant, product, group, id string) (RolloutStatus, error) {
	var out RolloutStatus
	err := c.do(ctx, request{method: http.MethodGet, path: deploymentPath(tenant, product, group, id, "status")}, &out)
	return out, err
}

// PauseDeployment pauses the group's current staged deployment.
func (c *Client) PauseDeployment(ctx context.Context, tenant, product, group, id string, req RolloutAction) (Deployment, error) {
	return c.rolloutAction(ctx, tenant, product, group, id, "pause", req)
}

// ResumeDeployment resumes the group's current paused staged deployment.
func (c *Client) ResumeDeployment(ctx context.Context, tenant, product, group, id string, req RolloutAction) (Deployment, error) {
	return c.rolloutAction(ctx, tenant, product, group, id, "resume", req)
}

// AbortDeployment stops a staged deployment for good.
func (c *Client) AbortDeployment(ctx context.Context, tenant, product, group, id string, req RolloutAction) (Deployment, error) {
	return c.rolloutAction(ctx, tenant, product, group, id, "abort", req)
}

// PromoteDeployment opens the next stage of the group's current staged deployment now.
// Without req.Force a tripped gate is a 409 *Error with Code gate_tripped.
func (c *Client) PromoteDeployment(ctx context.Context, tenant, product, group, id string, req RolloutAction) (Deployment, error) {
	return c.rolloutAction(ctx, tenant, product, group, id, "promote", req)
}

func (c *Client) rolloutAction(ctx context.Context, tenant, product, group, id, verb string, req RolloutAction) (Deployment, error) {
	var out Deployment
	err := c.do(ctx, request{method: http.MethodPost, path: deploymentPath(tenant, product, group, id, verb), body: req}, &out)
	return out, err
}
