package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// UpdateRollout is one conditional UPDATE over the version read (schema 19): of two
// replicas that advance the same stage, the database lets one write.
func (s deployments) UpdateRollout(ctx context.Context, d device.Deployment) error {
	if d.Rollout == nil {
		return errors.New("update rollout: the deployment has no rollout")
	}
	rollout, state, version, err := rolloutColumns(d)
	if err != nil {
		return err
	}
	r, err := s.t.tx.exec(ctx, `UPDATE deployments SET rollout = $1, rollout_state = $2, rollout_version = $3
		WHERE tenant_id = $4 AND product_id = $5 AND group_id = $6 AND id = $7 AND rollout_version = $8`,
		rollout, state, version, s.t.id, d.ProductID, d.GroupID, d.ID, d.Rollout.Version-1)
	if err != nil {
		return err
	}
	return s.t.tx.versioned(ctx, r, `SELECT count(*) FROM deployments
		WHERE tenant_id = $1 AND product_id = $2 AND group_id = $3 AND id = $4 AND rollout IS NOT NULL`,
		s.t.id, d.ProductID, d.GroupID, d.ID)
}

// GateFigures reads the group's devices on the target (their count and device-hours), the
// crash reports naming the target, and the install attempts, in four statements whatever
// the group's size. Device-hours are summed as the rows stream, as version health does
// (store.DeviceHours): the databases disagree on time arithmetic.
func (s deployments) GateFigures(ctx context.Context, pid product.ID, gid product.GroupID, target string, since, until time.Time) (device.GateFigures, error) {
	var f device.GateFigures
	rows, err := s.t.tx.query(ctx, `SELECT d.running_app_since, d.attested_at, d.last_seen_at FROM devices d
		WHERE d.tenant_id = $1 AND d.product_id = $2 AND d.group_id = $3 AND d.running_app_target = $4`,
		s.t.id, pid, gid, target)
	if err != nil {
		return f, err
	}
	defer rows.Close()
	for rows.Next() {
		var from, attested, seen sql.NullTime
		if err := rows.Scan(&from, &attested, &seen); err != nil {
			return f, err
		}
		f.Running++
		f.DeviceHours += store.DeviceHours(timePtr(from), timePtr(attested), timePtr(seen), since, until)
	}
	if err := rows.Err(); err != nil {
		return f, err
	}
	args := []any{s.t.id, pid, gid, target, errreport.AppCrash, utc(since), utc(until)}
	crash := `r.tenant_id = d.tenant_id AND r.device_id = d.id AND r.kind = $5 AND r.image_path = $4
		AND r.received_at >= $6 AND r.received_at < $7`
	if err := s.t.tx.queryRow(ctx, `SELECT count(*) FROM error_reports r JOIN devices d ON `+crash+`
		WHERE d.tenant_id = $1 AND d.product_id = $2 AND d.group_id = $3`, args...).Scan(&f.Crashes); err != nil {
		return f, err
	}
	if err := s.t.tx.queryRow(ctx, `SELECT count(*) FROM devices d
		WHERE d.tenant_id = $1 AND d.product_id = $2 AND d.group_id = $3 AND d.running_app_target = $4
		AND EXISTS (SELECT 1 FROM error_reports r WHERE `+crash+`)`, args...).Scan(&f.CrashedRunning); err != nil {
		return f, err
	}
	// An attempt is a device of the group that runs the target or reported a step for it
	// since; it failed when the device does not run the target and its latest step for it
	// failed or rolled back.
	args = []any{s.t.id, pid, gid, target, utc(since)}
	latest := `(SELECT e.state FROM device_update_events e WHERE e.tenant_id = d.tenant_id AND e.device_id = d.id
		AND e.target = $4 AND e.received_at >= $5 ORDER BY e.at DESC, e.id DESC LIMIT 1)`
	var failed sql.NullInt64
	if err := s.t.tx.queryRow(ctx, `SELECT count(*), sum(CASE WHEN d.running_app_target <> $4 AND `+latest+` IN `+failedUpdates+` THEN 1 ELSE 0 END)
		FROM devices d WHERE d.tenant_id = $1 AND d.product_id = $2 AND d.group_id = $3 AND (d.running_app_target = $4
		OR EXISTS (SELECT 1 FROM device_update_events e WHERE e.tenant_id = d.tenant_id AND e.device_id = d.id
			AND e.target = $4 AND e.received_at >= $5))`, args...).Scan(&f.InstallAttempts, &failed); err != nil {
		return f, err
	}
	f.FailedInstalls = int(failed.Int64)
	return f, nil
}

func (t *tx) Rollouts() store.Rollouts { return rollouts{t} }

type rollouts struct{ t *tx }

// Running reads the partial index deployments_rollout; a rollout that a newer deployment
// of its group replaced is left out.
func (s rollouts) Running(ctx context.Context, after string, n int) ([]device.Deployment, error) {
	args := []any{string(device.RolloutRunning), after, limit(store.Page{Limit: n})}
	return queryList(ctx, s.t, scanDeployment, `SELECT `+deploymentCols+` FROM deployments d
		WHERE d.rollout_state = $1 AND d.id > $2 AND NOT EXISTS (SELECT 1 FROM deployments n
			WHERE n.tenant_id = d.tenant_id AND n.product_id = d.product_id AND n.group_id = d.group_id
			AND (n.created_at > d.created_at OR n.created_at = d.created_at AND n.id > d.id))
		ORDER BY d.id LIMIT $`+strconv.Itoa(len(args)), args...)
}
