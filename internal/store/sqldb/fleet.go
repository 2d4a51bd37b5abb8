package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// Fleet queries: counts and filters over the indexed columns of migration 10, computed in
// the database. Each binds tenant_id from its tenantTx as $1, like every tenant-scoped query.

// deviceFilter returns f's conditions (" AND ...") over the arguments args, which it
// appends to; the caller's query binds args in order, tenant_id first.
func deviceFilter(f device.Filter, args ...any) (string, []any, error) {
	var q strings.Builder
	bind := func(cond string, v any) {
		args = append(args, v)
		q.WriteString(" AND " + cond + " $" + strconv.Itoa(len(args)))
	}
	if f.ProductID != "" {
		bind("product_id =", f.ProductID)
	}
	if f.GroupID != "" {
		bind("group_id =", f.GroupID)
	}
	for _, c := range []struct{ col, target string }{{"running_os_target", f.OSTarget}, {"running_app_target", f.AppTarget}} {
		switch c.target {
		case "":
		case device.NoTarget:
			q.WriteString(" AND " + c.col + " = ''")
		default:
			bind(c.col+" =", c.target)
		}
	}
	switch o := f.Outcome; {
	case o == "":
	case o == device.OutcomeNever:
		q.WriteString(" AND attested_at IS NULL")
	case o == device.OutcomeOK:
		q.WriteString(" AND attested_at IS NOT NULL AND refusal = ''")
	case o == device.OutcomeRefused:
		q.WriteString(" AND refusal <> ''")
	case slices.Contains(device.RefusalReasons, o):
		bind("refusal =", o)
	default:
		// Fail closed: a misspelt outcome would otherwise select nothing, silently.
		return "", nil, fmt.Errorf("filter devices: unknown attestation outcome %q", o)
	}
	if !f.AttestedBefore.IsZero() {
		bind("attested_at <", utc(f.AttestedBefore))
	}
	if f.State != "" {
		cond, more, err := stateFilter(f.State, f.Should, args)
		if err != nil {
			return "", nil, err
		}
		q.WriteString(cond)
		args = more
	}
	return q.String(), args, nil
}

// runningGroup is the grouping key of CountRunning, in the order of the devices_running
// index, so that SQLite counts by walking that index alone (TestCountRunning_UsesIndex).
// is SQLite's order already and makes PostgreSQL's (NULLS LAST) agree: devices
// in no group come first on both.
const runningGroup = `product_id, group_id, running_os_target, running_os_version, running_app_target, running_app_version`

// countRunningQuery is CountRunning's statement and arguments.
func countRunningQuery(tenant any, f device.Filter, n int) (string, []any, error) {
	cond, args, err := deviceFilter(f, tenant)
	if err != nil {
		return "", nil, err
	}
	args = append(args, limit(store.Page{Limit: n}))
	return `SELECT ` + runningGroup + `, count(*) FROM devices WHERE tenant_id = $1` + cond +
		` GROUP BY ` + runningGroup +
		` ORDER BY product_id NULLS FIRST, group_id NULLS FIRST, running_os_target, running_os_version, running_app_target, running_app_version` +
		` LIMIT $` + strconv.Itoa(len(args)), args, nil
}

func (s tenantDevices) CountRunning(ctx context.Context, f device.Filter, n int) ([]store.RunningCount, error) {
	q, args, err := countRunningQuery(s.t.id, f, n)
	if err != nil {
		return nil, err
	}
	return queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (store.RunningCount, error) {
		var c store.RunningCount
		var pid, gid sql.NullString
		r := &c.Running
		err := row.Scan(&pid, &gid, &r.OSTarget, &r.OSVersion, &r.AppTarget, &r.AppVersion, &c.Devices)
		c.ProductID, c.GroupID = product.ID(pid.String), product.GroupID(gid.String)
		return c, err
	}, q, args...)
}

// countByImageQuery is CountByImage's statement; the error_reports_image index holds every
// column it reads.
const countByImageQuery = `SELECT image_path, image_version, kind, count(*) AS n FROM error_reports
	WHERE tenant_id = $1 AND received_at >= $2
	GROUP BY image_path, image_version, kind
	ORDER BY n DESC, image_path, image_version, kind LIMIT $3`

func (s errorReports) CountByImage(ctx context.Context, since time.Time, n int) ([]store.ReportCount, error) {
	return queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (store.ReportCount, error) {
		var c store.ReportCount
		err := row.Scan(&c.ImagePath, &c.ImageVersion, &c.Kind, &c.Reports)
		return c, err
	}, countByImageQuery, s.t.id, utc(since), limit(store.Page{Limit: n}))
}
