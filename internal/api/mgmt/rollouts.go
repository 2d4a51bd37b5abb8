package mgmt

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet/rollout"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
)

// Staged rollouts (issue 12) as the operator drives them: a deployment created with a
// rollout, its pause, resume, abort and promote, and its status. The state machine and the
// gate are internal/fleet/rollout's; this file reads the deployment, lets rollout decide,
// and writes the change with UpdateRollout over the version it read, with its audit event,
// in one transaction (so an advance by the background job in between is a 409, never a lost
// write), then wakes the tenant's devices.
//
// Rule 3: every route reads the deployment through the path's tenant and group, so another
// tenant's deployment is NotFound (attacked by TestDeployments_OtherTenantCannotSeeOrChangeRollout
// and TestAPI_CrossTenantIsNotFound); changes need Contributor (TestDeployments_ReaderCannotChangeRollout).

// Audit actions of rollout changes. A forced promote has its own action, so that skipping
// the gate stands out in the audit log.
const (
	auditPause        = "deployment.pause"
	auditResume       = "deployment.resume"
	auditAbort        = "deployment.abort"
	auditPromote      = "deployment.promote"
	auditPromoteForce = "deployment.promote_forced"
)

// stagedParts makes the rollout and checks IgnoreWindow of a new deployment of im against
// the group's current deployment (base, nil when none). It returns the rollout (nil for a
// deployment to the whole group at once).
func (a *API) stagedParts(c *call, req device.DeploymentCreate, im repo.Image, base *device.Deployment) (*device.Rollout, error) {
	if req.IgnoreWindow {
		if err := a.checkSecurityBump(c, im, base); err != nil {
			return nil, err
		}
	}
	if req.Rollout == nil {
		return nil, nil
	}
	r, err := rollout.New(*req.Rollout, base, c.now)
	if err != nil {
		return nil, storeProblem(err, "deployment", "")
	}
	return r, nil
}

// checkSecurityBump allows ignore_window only for a security update with a new anti-rollback
// floor: im's security version, from the tenant's catalog, above the base deployment's
// image's. A base no longer in the catalog (revoked) cannot show its floor, so the request
// is refused (fail closed); a group without a deployment has floor 0. Attacked by
// TestDeployments_RefusesBadRolloutRequests.
func (a *API) checkSecurityBump(c *call, im repo.Image, base *device.Deployment) error {
	var floor uint32
	if base != nil {
		cat, err := a.repo.Catalog(c.ctx, c.tenant)
		if err != nil {
			return problem.Wrap(err)
		}
		bim, ok := cat.Images[base.Target]
		if !ok || bim.SHA256 != base.SHA256 {
			return &problem.Error{Kind: problem.Unprocessable, Code: "ignore_window_refused", Field: "ignore_window",
				Detail: fmt.Sprintf("ignore_window needs a security update: the current deployment's image %s is no longer published, so its anti-rollback floor cannot be compared", base.Target)}
		}
		floor = bim.SecurityVersion
	}
	if im.SecurityVersion <= floor {
		return &problem.Error{Kind: problem.Unprocessable, Code: "ignore_window_refused", Field: "ignore_window",
			Detail: fmt.Sprintf("ignore_window is only for a security update with a new anti-rollback floor: %s has security version %d, not above the current deployment's %d", im.Path, im.SecurityVersion, floor)}
	}
	return nil
}

// currentOf reads the group's current deployment; nil when the group has none.
func currentOf(c *call, tt store.TenantTx, pid product.ID, gid product.GroupID) (*device.Deployment, error) {
	d, err := tt.Deployments().Current(c.ctx, pid, gid)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return &d, nil
}

// sameDeployment reports whether a and b name the same deployment (or both none).
func sameDeployment(a, b *device.Deployment) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID
}

// rolloutChange is one operator change: it returns the changed rollout (Version+1) and the
// audit action and detail, or a problem.
type rolloutChange func(r device.Rollout, f device.GateFigures, req device.RolloutAction) (device.Rollout, string, error)

func (a *API) pauseDeployment(c *call) (any, error) {
	return a.changeRollout(c, false, func(r device.Rollout, _ device.GateFigures, _ device.RolloutAction) (device.Rollout, string, error) {
		r, err := rollout.Pause(r, c.now)
		return r, auditPause, err
	})
}

func (a *API) resumeDeployment(c *call) (any, error) {
	return a.changeRollout(c, false, func(r device.Rollout, _ device.GateFigures, _ device.RolloutAction) (device.Rollout, string, error) {
		r, err := rollout.Resume(r, c.now)
		return r, auditResume, err
	})
}

// abortDeployment stops a rollout for good. Unlike the other changes it is allowed on a
// deployment that a newer one replaced: its rollout is inert already, and abort only says so.
func (a *API) abortDeployment(c *call) (any, error) {
	return a.changeRollout(c, true, func(r device.Rollout, _ device.GateFigures, _ device.RolloutAction) (device.Rollout, string, error) {
		r, err := rollout.Abort(r, c.now)
		return r, auditAbort, err
	})
}

// promoteDeployment opens the next stage now. Without force rollout.Promote judges the
// gate's thresholds on the figures read in the same transaction and refuses a trip; with
// force the gate is skipped and the audit event is deployment.promote_forced (attacked by
// TestDeployments_PauseResumeAbortPromote).
func (a *API) promoteDeployment(c *call) (any, error) {
	return a.changeRollout(c, false, func(r device.Rollout, f device.GateFigures, req device.RolloutAction) (device.Rollout, string, error) {
		r, err := rollout.Promote(r, f, req.Force, c.now)
		if req.Force {
			return r, auditPromoteForce, err
		}
		return r, auditPromote, err
	})
}

// changeRollout reads the path's deployment, lets change decide, and writes the result
// over the version read with its audit event, in one transaction; then it wakes the
// tenant's devices. anyDeployment allows a deployment that is not the group's current one.
func (a *API) changeRollout(c *call, anyDeployment bool, change rolloutChange) (any, error) {
	req := c.body.(device.RolloutAction)
	pid, gid := product.ID(c.r.PathValue("product")), product.GroupID(c.r.PathValue("group"))
	id, err := pathID(c.r, "deployment", device.DeploymentIDPrefix, "deployment")
	if err != nil {
		return nil, err
	}
	var d device.Deployment
	err = a.inTenant(c, func(tt store.TenantTx) error {
		if d, err = stagedDeployment(c, tt, pid, gid, id); err != nil {
			return err
		}
		if !anyDeployment {
			cur, err := currentOf(c, tt, pid, gid)
			if err != nil {
				return err
			}
			if cur == nil || cur.ID != d.ID {
				return &problem.Error{Kind: problem.Conflict, Code: "not_current_deployment",
					Detail: fmt.Sprintf("%s is no longer the group's current deployment; only the current one's rollout can be changed", d.ID)}
			}
		}
		// The figures only matter to promote; read them for every change so that the audit
		// event records what the gate saw when a person acted.
		f, err := tt.Deployments().GateFigures(c.ctx, pid, gid, d.Target, d.CreatedAt, c.now)
		if err != nil {
			return err
		}
		before := *d.Rollout
		next, action, err := change(before, f, req)
		if err != nil {
			return err
		}
		d.Rollout = &next
		if err := tt.Deployments().UpdateRollout(c.ctx, d); err != nil {
			return rolloutWriteProblem(err, d.ID)
		}
		return c.audit(tt, action, "deployment", d.ID, rolloutAuditDetail(before, next, f, req))
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	a.fleet.Notify(c.tenant) // what the group's devices are assigned may have changed
	return d, nil
}

// stagedDeployment reads the group and its deployment id, which must have a rollout.
func stagedDeployment(c *call, tt store.TenantTx, pid product.ID, gid product.GroupID, id string) (device.Deployment, error) {
	if _, err := tt.Groups().Get(c.ctx, pid, gid); err != nil {
		return device.Deployment{}, storeProblem(err, "device_group", string(gid))
	}
	d, err := tt.Deployments().Get(c.ctx, pid, gid, id)
	if err != nil {
		return d, storeProblem(err, "deployment", id)
	}
	if d.Rollout == nil {
		return d, &problem.Error{Kind: problem.Conflict, Code: "not_staged",
			Detail: fmt.Sprintf("%s went to the whole group at once: it has no rollout to change", d.ID)}
	}
	return d, nil
}

// rolloutWriteProblem maps UpdateRollout's errors: a version that moved on (the rollout
// job advanced or tripped it, or another person changed it) is a conflict to look at
// again, not a precondition of the caller's.
func rolloutWriteProblem(err error, id string) error {
	if errors.Is(err, store.ErrStale) {
		// Not wrapping err: the transaction's caller maps a wrapped ErrStale to 412 (an
		// If-Match precondition), which this is not (TestDeployments_PauseResumeAbortPromote
		// on PostgreSQL, where concurrent pauses read the same version).
		return &problem.Error{Kind: problem.Conflict, Code: "rollout_changed",
			Detail: fmt.Sprintf("the rollout of %s changed while this request ran; look at its status and retry", id)}
	}
	return storeProblem(err, "deployment", id)
}

// rolloutAuditDetail says what changed, why, and what the gate saw.
func rolloutAuditDetail(before, after device.Rollout, f device.GateFigures, req device.RolloutAction) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s stage %d (%g%%) -> %s stage %d (%g%%)", before.State, before.Stage+1, stagePercent(before),
		after.State, after.Stage+1, stagePercent(after))
	fmt.Fprintf(&b, "; gate: crash rate %.4g/device-hour, crash-free %.4g%%, failed installs %.4g%% over %.4g device-hours and %d installs",
		f.CrashRate(), f.CrashFreePercent(), f.FailedInstallPercent(), f.DeviceHours, f.InstallAttempts)
	if before.Trip != nil {
		fmt.Fprintf(&b, "; tripped: %s", before.Trip)
	}
	if req.Reason != "" {
		fmt.Fprintf(&b, "; reason: %s", req.Reason)
	}
	return b.String()
}

// stagePercent is the open stage's share of the group (0 for a malformed rollout).
func stagePercent(r device.Rollout) float64 {
	if r.Stage < 0 || r.Stage >= len(r.Stages) {
		return 0
	}
	return r.Stages[r.Stage]
}

// getDeploymentStatus is a rollout now: per stage, and the gate's figures and verdict. A
// deployment without a rollout has no status: 404 rollout_not_found.
func (a *API) getDeploymentStatus(c *call) (any, error) {
	pid, gid := product.ID(c.r.PathValue("product")), product.GroupID(c.r.PathValue("group"))
	id, err := pathID(c.r, "deployment", device.DeploymentIDPrefix, "deployment")
	if err != nil {
		return nil, err
	}
	var st rollout.Status
	err = a.readTenant(c, func(tt store.TenantTx) error {
		d, err := stagedDeployment(c, tt, pid, gid, id)
		if p, ok := errors.AsType[*problem.Error](err); ok && p.Code == "not_staged" {
			return &problem.Error{Kind: problem.NotFound, Code: "rollout_not_found",
				Detail: fmt.Sprintf("%s went to the whole group at once: it has no rollout", id)}
		}
		if err != nil {
			return err
		}
		st, err = rollout.ReadStatus(c.ctx, tt, d, c.now)
		return err
	})
	if err != nil {
		return nil, storeProblem(err, "device_group", string(gid))
	}
	return st, nil
}

// deploymentAuditDetail says what a new deployment does: its image and group, and its
// stages, soak and gate, or that it ignores maintenance windows.
func deploymentAuditDetail(d device.Deployment, gid product.GroupID) string {
	s := d.Target + " to group " + string(gid)
	if r := d.Rollout; r != nil {
		s += fmt.Sprintf(" in stages %v%% with soak %s", r.Stages, r.Soak())
		if r.AutoRollback {
			s += " and auto-rollback"
		}
		if r.BaseTarget != "" {
			s += ", others on " + r.BaseTarget
		}
	}
	if d.IgnoreWindow {
		s += ", ignoring maintenance windows"
	}
	return s
}
