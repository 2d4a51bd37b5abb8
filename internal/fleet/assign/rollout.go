package assign

import (
	"github.com/moat-iot/moat/internal/device"
)

// NewImageAllowed reports whether the group's current deployment lets the device have its
// new image (the deployment's target) now. Without a staged rollout it always does. With
// one (device.Rollout), by its state:
//
//   - running: only a device in an open stage, by the stable hash of (deployment, device),
//     so a device never flips between old and new and a device added to the group later
//     lands in its stage;
//   - completed: every device;
//   - paused or aborted: only a device whose last successful attestation shows it runs the
//     new image already: a paused or aborted rollout assigns nothing new;
//   - rolled back, or a state this code does not know: none (fail closed).
//
// Attacked by TestAssignment_DeviceOutsideStageNeverGetsNewImage and
// TestAssignment_PausedOrAbortedAssignsNothingNew (internal/fleet).
func NewImageAllowed(in Input) bool {
	d := in.Deployment
	if d == nil || d.Rollout == nil {
		return true
	}
	r := d.Rollout
	switch r.State {
	case device.RolloutRunning:
		// No device ID: the group's should of the fleet status (internal/fleet/status.go),
		// which is the base until the rollout completes; each device's own should follows
		// its stage.
		return in.Device.ID != "" && r.Stage >= 0 && r.Stage < len(r.Stages) && r.InOpenStage(d.ID, in.Device.ID)
	case device.RolloutCompleted:
		return true
	case device.RolloutPaused, device.RolloutAborted:
		running, ok := in.Device.Attestation.Running()
		return ok && running.AppTarget == d.Target
	}
	return false
}
