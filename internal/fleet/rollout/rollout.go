// Package rollout runs staged rollouts (issue 12): it creates a deployment's rollout,
// changes its state for an operator (pause, resume, abort, promote), judges its health
// gate, reads its status per stage, and advances running rollouts as a background job.
//
// CONTRACT (lead): the exported names and their documented behaviour are fixed; the
// bodies are the rollout helper's to write. The management API (internal/api/mgmt) calls
// them inside its transactions and writes the operator's audit events; the Advancer writes
// its own.
package rollout

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var errTODO = errors.New("rollout: not implemented yet")

// New makes the rollout of a new deployment from the request: state running, stage 0
// opened at now, version 1, the base image taken from base (the group's current
// deployment, nil when none). Errors are *problem.Error (Invalid).
func New(c device.RolloutCreate, base *device.Deployment, now time.Time) (*device.Rollout, error) {
	return nil, errTODO
}

// Pause stops a running rollout (Conflict for another state). Pause, Resume, Abort and
// Promote return the changed rollout with Version+1 and UpdatedAt now, to be written with
// store.Deployments.UpdateRollout; a state that forbids the change is a *problem.Error
// of Kind Conflict whose Detail says the state.
func Pause(r device.Rollout, now time.Time) (device.Rollout, error) { return r, errTODO }

// Resume restarts a paused rollout: Trip is cleared and the open stage's soak starts again
// at now.
func Resume(r device.Rollout, now time.Time) (device.Rollout, error) { return r, errTODO }

// Abort stops a running or paused rollout for good.
func Abort(r device.Rollout, now time.Time) (device.Rollout, error) { return r, errTODO }

// Promote opens the next stage now (or completes the rollout from its last stage),
// skipping the soak and the gate's minimum device-hours and installs, never the gate's
// thresholds unless force: without force, a trip in f is a Conflict naming the figure.
// Only a running or paused rollout is promoted.
func Promote(r device.Rollout, f device.GateFigures, force bool, now time.Time) (device.Rollout, error) {
	return r, errTODO
}

// Judge applies the gate to the figures: trip is the first threshold passed (nil when
// none), judged only for figures with enough data (MinDeviceHours for the crash figures,
// MinInstalls for the failed-install rate); ready reports that every threshold set has
// enough data to be judged and passed, so the stage may advance once its soak is over.
func Judge(g device.Gate, f device.GateFigures, stage int, now time.Time) (trip *device.GateTrip, ready bool) {
	return nil, false
}

// StageStatus is one stage of a rollout now.
type StageStatus struct {
	Percent float64 `json:"percent"`
	// Open: the stage's devices are assigned the new image (State permitting).
	Open bool `json:"open"`
	// Targeted counts the group's devices in this stage (not in an earlier one).
	Targeted int `json:"targeted"`
	// OnNew counts those whose last attestation shows the new target.
	OnNew int `json:"on_new"`
	// Failed counts those whose latest update state is a failure and that do not run it.
	Failed int `json:"failed"`
	// Crashing counts those with an app_crash naming the target since the deployment.
	Crashing int `json:"crashing"`
}

// Status is a rollout now: per stage, and the gate's figures and verdict.
type Status struct {
	Deployment device.Deployment  `json:"deployment"`
	Stages     []StageStatus      `json:"stages"`
	Figures    device.GateFigures `json:"figures"`
	// Verdict: "advancing" (soak over, gate passed), "soaking", "waiting_for_data",
	// "tripped", or the state when not running.
	Verdict string `json:"verdict"`
	// NextStageAt is when the open stage's soak ends (running rollouts only).
	NextStageAt *time.Time `json:"next_stage_at,omitempty"`
}

// ReadStatus computes the status of d (which must have a rollout) in tx at now.
func ReadStatus(ctx context.Context, tx store.TenantTx, d device.Deployment, now time.Time) (Status, error) {
	return Status{}, errTODO
}

// Advancer advances running rollouts: the body of the server's "rollout-advance" job.
type Advancer struct {
	Store store.Store
	// Notify wakes the tenant's waiting devices (on every replica) after a change.
	Notify func(tenant.ID)
	Log    *slog.Logger
}

// Result counts what one Run did.
type Result struct {
	Advanced, Completed, Tripped, RolledBack int
}

// Run looks at every running rollout once: a stage whose soak is over and whose gate is
// ready advances (or the rollout completes); a tripped gate pauses the rollout with its
// Trip and, with AutoRollback, rolls the group back by a new deployment that reverts it.
// Each change is one conditional write with its audit event in one transaction, so a
// stage advances once however many replicas run the job at once.
func (a *Advancer) Run(ctx context.Context, now time.Time) (Result, error) {
	return Result{}, errTODO
}
