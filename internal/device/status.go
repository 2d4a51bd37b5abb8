package device

import "slices"

// Fleet status: where a device stands between what it should run (its group's assignment,
// chosen by internal/fleet/assign) and what it does run (Running). Each device of a group
// is in exactly one state, checked in this order:
//
//	never:   it never attested (nothing is known of what it runs)
//	refused: its last attestation was refused (it has no certificate now)
//	current: it runs what it should (Should.Matches)
//	failed:  it does not, and its latest update report is failed or rolled_back
//	pending: it does not, and no update of it failed (the update is on its way)
//
// The store's Filter.State and the fleet-status counts select by these same rules in SQL
// (the storetest Fleet cases check both against Classify).
const (
	StateNever   = "never"
	StateRefused = "refused"
	StateCurrent = "current"
	StateFailed  = "failed"
	StatePending = "pending"
)

// States lists the fleet states in the order they are checked.
var States = []string{StateNever, StateRefused, StateCurrent, StateFailed, StatePending}

// FailedUpdateStates are the update states (devices.update_state, reported by the device)
// that make a device that does not run what it should StateFailed rather than StatePending.
var FailedUpdateStates = []string{"failed", "rolled_back"}

// Should is what the devices of one group should run: the target paths the director
// assigns them, "" for a kind it assigns none of (the device keeps whatever it runs).
type Should struct {
	OSTarget  string `json:"os_target"`
	AppTarget string `json:"app_target"`
}

// Matches reports whether a device running r runs what s says: each kind s names is the
// one r runs; a kind s leaves "" matches anything.
func (s Should) Matches(r Running) bool {
	return (s.OSTarget == "" || s.OSTarget == r.OSTarget) && (s.AppTarget == "" || s.AppTarget == r.AppTarget)
}

// Classify returns the fleet state of a device that should run s: attested is whether it
// ever attested, refusal its last attestation's refusal ("" on success), r what it runs by
// its last successful attestation and updateState its latest reported update state.
func Classify(s Should, attested bool, refusal string, r Running, updateState string) string {
	switch {
	case !attested:
		return StateNever
	case refusal != "":
		return StateRefused
	case s.Matches(r):
		return StateCurrent
	case slices.Contains(FailedUpdateStates, updateState):
		return StateFailed
	}
	return StatePending
}
