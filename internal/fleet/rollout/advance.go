package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
)

// Audit actions the Advancer writes, with SystemActor as the actor.
const (
	ActionStageAdvanced = "deployment.stage_advanced"
	ActionCompleted     = "deployment.rollout_completed"
	ActionGateTripped   = "deployment.gate_tripped"
	// ActionRolledBack is the revert deployment the gate created (AutoRollback), as
	// "deployment.rollback" records one an operator created.
	ActionRolledBack = "deployment.rollback"
	// SystemActor is the actor name of the Advancer's audit events: no user or token.
	SystemActor = "system"
)

// runPage is how many running rollouts Run reads at a time.
const runPage = 100

// Run looks at every running rollout once: a stage whose soak is over and whose gate is
// ready advances (or the rollout completes); a tripped gate pauses the rollout with its
// Trip and, with AutoRollback, rolls the group back by a new deployment that reverts it.
// Each change is one conditional write with its audit event in one transaction, so a
// stage advances once however many replicas run the job at once.
//
// Per rollout it costs, on every run, the few set-based statements of
// GateFigures and one transaction; it never loops over the group's devices. A rollout
// that fails is logged and the others go on; the errors are returned joined.
func (a *Advancer) Run(ctx context.Context, now time.Time) (Result, error) {
	var (
		res   Result
		errs  []error
		after string
	)
	for {
		var page []device.Deployment
		err := a.Store.InReadTx(ctx, func(tx store.Tx) error {
			var err error
			page, err = tx.Rollouts().Running(ctx, after, runPage)
			return err
		})
		if err != nil {
			return res, errors.Join(append(errs, fmt.Errorf("list running rollouts: %w", err))...)
		}
		for _, d := range page {
			if err := a.advance(ctx, d, now, &res); err != nil {
				a.Log.ErrorContext(ctx, "advance rollout", "tenant_id", d.TenantID, "deployment_id", d.ID, "err", err)
				errs = append(errs, fmt.Errorf("deployment %s: %w", d.ID, err))
			}
			if ctx.Err() != nil {
				return res, errors.Join(append(errs, ctx.Err())...)
			}
		}
		if len(page) < runPage {
			return res, errors.Join(errs...)
		}
		after = page[len(page)-1].ID
	}
}

// change is what the advance decided for one rollout: the rollout to write, its audit
// events, and a revert deployment to create with it (nil for none).
type change struct {
	d      device.Deployment
	events []audit.Event
	revert *device.Deployment
	count  func(*Result)
}

// advance judges one running rollout read by Run and writes what it decided.
func (a *Advancer) advance(ctx context.Context, d device.Deployment, now time.Time, res *Result) error {
	r := *d.Rollout
	if r.State != device.RolloutRunning {
		return nil
	}
	var f device.GateFigures
	err := a.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(d.TenantID)
		if err != nil {
			return err
		}
		f, err = tt.Deployments().GateFigures(ctx, d.ProductID, d.GroupID, d.Target, d.CreatedAt, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("gate figures: %w", err)
	}
	c, ok := decide(d, f, now)
	if !ok {
		return nil // soaking, or waiting for data
	}
	err = a.Store.InTx(ctx, func(tx store.Tx) error { return write(ctx, tx, d, c) })
	switch {
	case errors.Is(err, store.ErrStale), errors.Is(err, errReplaced):
		// Another replica wrote this rollout first, or a newer deployment replaced it.
		a.Log.DebugContext(ctx, "rollout changed meanwhile", "tenant_id", d.TenantID, "deployment_id", d.ID, "err", err)
		return nil
	case err != nil:
		return err
	}
	c.count(res)
	for _, e := range c.events {
		a.Log.InfoContext(ctx, "rollout "+e.Action, "tenant_id", d.TenantID, "deployment_id", d.ID, "detail", e.Detail)
	}
	if a.Notify != nil {
		a.Notify(d.TenantID)
	}
	return nil
}

// decide judges d's rollout on f at now: ok is false while the stage soaks or waits for
// data. The gate is judged on every run, during the soak too, so a crashing release is
// stopped as soon as its figures pass a threshold with enough data behind them, not at the
// end of the soak; only an advance waits for the soak (TestAdvance_TripPausesAndRollsBack).
func decide(d device.Deployment, f device.GateFigures, now time.Time) (change, bool) {
	r := *d.Rollout
	trip, ready := Judge(r.Gate, f, r.Stage, now)
	next := changed(r, now)
	c := change{d: d}
	c.d.Rollout = &next
	switch {
	case trip != nil:
		next.State, next.Trip = device.RolloutPaused, trip
		detail := fmt.Sprintf("%s: %s; rollout paused", d.Target, trip)
		c.count = func(res *Result) { res.Tripped++ }
		if r.AutoRollback && r.BaseTarget != "" {
			next.State = device.RolloutRolledBack
			c.revert = &device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: d.TenantID,
				ProductID: d.ProductID, GroupID: d.GroupID, Target: r.BaseTarget, SHA256: r.BaseSHA256,
				CreatedAt: now.UTC(), CreatedBy: SystemActor, Reverts: d.ID}
			detail = fmt.Sprintf("%s: %s; rolled back to %s by %s", d.Target, trip, r.BaseTarget, c.revert.ID)
			c.count = func(res *Result) { res.Tripped++; res.RolledBack++ }
			c.events = append(c.events, event(d, now, ActionRolledBack, c.revert.ID,
				fmt.Sprintf("%s to group %s, reverting %s (gate tripped)", r.BaseTarget, d.GroupID, d.ID)))
		} else if r.AutoRollback {
			detail += "; nothing to roll back to: the group had no deployment before"
		}
		c.events = append([]audit.Event{event(d, now, ActionGateTripped, d.ID, detail)}, c.events...)
	case !ready || now.Before(r.StageStartedAt.Add(r.Soak())):
		return change{}, false
	case r.Stage >= len(r.Stages)-1:
		next.State = device.RolloutCompleted
		c.count = func(res *Result) { res.Completed++ }
		c.events = []audit.Event{event(d, now, ActionCompleted, d.ID,
			fmt.Sprintf("%s: every device of group %s (gate: %s)", d.Target, d.GroupID, figures(f)))}
	default:
		next.Stage++
		next.StageStartedAt = now.UTC()
		c.count = func(res *Result) { res.Advanced++ }
		c.events = []audit.Event{event(d, now, ActionStageAdvanced, d.ID,
			fmt.Sprintf("%s: stage %d of %d (%g%% of group %s) opened (gate: %s)",
				d.Target, next.Stage+1, len(r.Stages), r.Stages[next.Stage], d.GroupID, figures(f)))}
	}
	return c, true
}

// errReplaced: a newer deployment of the group came in after Run read the rollout.
var errReplaced = errors.New("the group has a newer deployment")

// write makes change c in tx: the rollout over the version read, the revert deployment,
// the audit events. Any error rolls all of it back (TestAdvance_ReplicaKilledMidAdvance
// LeavesNoHalfAdvancedStage).
func write(ctx context.Context, tx store.Tx, d device.Deployment, c change) error {
	tt, err := tx.ForTenant(d.TenantID)
	if err != nil {
		return err
	}
	// Only the group's current deployment moves on: a revert deployment created over a
	// newer one would undo the operator's later choice.
	cur, err := tt.Deployments().Current(ctx, d.ProductID, d.GroupID)
	if err != nil {
		return fmt.Errorf("current deployment: %w", err)
	}
	if cur.ID != d.ID {
		return errReplaced
	}
	if err := tt.Deployments().UpdateRollout(ctx, c.d); err != nil {
		return fmt.Errorf("update rollout: %w", err)
	}
	if c.revert != nil {
		if err := tt.Deployments().Create(ctx, *c.revert); err != nil {
			return fmt.Errorf("create revert deployment: %w", err)
		}
	}
	for _, e := range c.events {
		if err := tt.Audit().Append(ctx, e); err != nil {
			return fmt.Errorf("append audit event %s: %w", e.Action, err)
		}
	}
	return nil
}

func event(d device.Deployment, now time.Time, action, objID, detail string) audit.Event {
	return audit.Event{ID: ident.New(audit.IDPrefix, now), TenantID: d.TenantID, At: now.UTC(), ActorName: SystemActor,
		Action: action, ObjectType: "deployment", ObjectID: objID, Detail: detail}
}

// figures says the gate's inputs for the audit log.
func figures(f device.GateFigures) string {
	return fmt.Sprintf("%d devices on the new version, %.1f device-hours, crash rate %.4g/h, %.1f%% crash-free, %d of %d installs failed",
		f.Running, f.DeviceHours, f.CrashRate(), f.CrashFreePercent(), f.FailedInstalls, f.InstallAttempts)
}
