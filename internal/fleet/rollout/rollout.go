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
	"log/slog"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

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
