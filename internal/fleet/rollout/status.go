package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/updstate"
)

// Verdicts of a running rollout (Status.Verdict); a rollout that is not running has its
// state as its verdict.
const (
	VerdictAdvancing      = "advancing"
	VerdictSoaking        = "soaking"
	VerdictWaitingForData = "waiting_for_data"
	VerdictTripped        = "tripped"
)

// ReadStatus computes the status of d (which must have a rollout) in tx at now.
//
// A status read may scan: it streams the group's devices a page at a time and places
// each in its stage in Go, and streams the crash reports naming the target to find the
// crashing devices. The advance never does (Advancer.Run reads GateFigures only).
func ReadStatus(ctx context.Context, tx store.TenantTx, d device.Deployment, now time.Time) (Status, error) {
	r := d.Rollout
	if r == nil || len(r.Stages) == 0 {
		return Status{}, problem.New(problem.NotFound, "no_rollout", "deployment %s has no staged rollout", d.ID)
	}
	st := Status{Deployment: d, Stages: make([]StageStatus, len(r.Stages))}
	for i, p := range r.Stages {
		st.Stages[i] = StageStatus{Percent: p, Open: i <= r.Stage || r.State == device.RolloutCompleted}
	}
	crashing, err := crashingDevices(ctx, tx, d, now)
	if err != nil {
		return Status{}, err
	}
	if err := countStages(ctx, tx, d, crashing, st.Stages); err != nil {
		return Status{}, err
	}
	if st.Figures, err = tx.Deployments().GateFigures(ctx, d.ProductID, d.GroupID, d.Target, d.CreatedAt, now); err != nil {
		return Status{}, fmt.Errorf("gate figures of deployment %s: %w", d.ID, err)
	}
	st.Verdict = verdict(*r, st.Figures, now)
	if r.State == device.RolloutRunning {
		next := r.StageStartedAt.Add(r.Soak()).UTC()
		st.NextStageAt = &next
	}
	return st, nil
}

// verdict says what the advance job would do with r now.
func verdict(r device.Rollout, f device.GateFigures, now time.Time) string {
	if r.State != device.RolloutRunning {
		return string(r.State)
	}
	trip, ready := Judge(r.Gate, f, r.Stage, now)
	switch {
	case trip != nil:
		return VerdictTripped
	case now.Before(r.StageStartedAt.Add(r.Soak())):
		return VerdictSoaking
	case !ready:
		return VerdictWaitingForData
	}
	return VerdictAdvancing
}

// countStages streams the group's devices and counts each in the stage its hash places it.
func countStages(ctx context.Context, tx store.TenantTx, d device.Deployment, crashing map[device.ID]bool, stages []StageStatus) error {
	f := device.Filter{ProductID: d.ProductID, GroupID: d.GroupID}
	p := store.Page{Limit: store.MaxLimit}
	for {
		rows, err := tx.Devices().ListStatus(ctx, f, p)
		if err != nil {
			return fmt.Errorf("list devices of group %s: %w", d.GroupID, err)
		}
		for _, row := range rows {
			s := &stages[d.Rollout.StageOf(d.ID, row.Device.ID)]
			s.Targeted++
			onNew := row.Running.AppTarget == d.Target
			switch {
			case onNew:
				s.OnNew++
			case updstate.State(row.UpdateState).Failure() && (row.UpdateStateAt == nil || !row.UpdateStateAt.Before(d.CreatedAt)):
				s.Failed++
			}
			if crashing[row.Device.ID] {
				s.Crashing++
			}
		}
		if len(rows) < p.Limit {
			return nil
		}
		p.After = string(rows[len(rows)-1].Device.ID)
	}
}

// crashingDevices are the group's devices with an app_crash report naming d's target since
// d was created.
func crashingDevices(ctx context.Context, tx store.TenantTx, d device.Deployment, now time.Time) (map[device.ID]bool, error) {
	out := map[device.ID]bool{}
	f := store.ReportFilter{ProductID: d.ProductID, GroupID: d.GroupID, Kind: errreport.AppCrash,
		ImagePath: d.Target, Since: d.CreatedAt, Until: now}
	var after store.ReportCursor
	for {
		rs, err := tx.ErrorReports().ListTenant(ctx, f, after, store.MaxLimit)
		if err != nil {
			return nil, fmt.Errorf("list crash reports of deployment %s: %w", d.ID, err)
		}
		for _, r := range rs {
			out[r.DeviceID] = true
		}
		if len(rs) < store.MaxLimit {
			return out, nil
		}
		after = rs[len(rs)-1].Cursor()
	}
}
