package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// Error-report insights (issue 11): the tenant-wide report list and download, and the
// figures of version health. Each query binds tenant_id from its tenantTx as $1. The
// indexes are those of migration 16.

// sinceSet is the part of deviceSet that keeps devices.running_os_since and
// running_app_since (migration 16), over deviceSet's arguments: $9 to $12 the running OS
// and app target and version of the attestation, NULL after a refused one (fleetArgs),
// and $13 its time. A successful attestation that shows another target or version than
// the stored one starts the version's time at $13; anything else keeps it. SQL reads the
// row as it was before the UPDATE in every SET expression, so the comparison sees the old
// target and version. Attacked by storetest's ReportInsights/VersionFiguresSinceFollowsAttestation.
const sinceSet = `running_os_since = CASE WHEN $9 IS NULL OR ($9 = running_os_target AND $10 = running_os_version)
		THEN running_os_since ELSE $13 END,
	running_app_since = CASE WHEN $11 IS NULL OR ($11 = running_app_target AND $12 = running_app_version)
		THEN running_app_since ELSE $13 END`

// listTenantQuery is ListTenant's statement and arguments.
func listTenantQuery(tenant any, f store.ReportFilter, after store.ReportCursor, n int) (string, []any) {
	var q strings.Builder
	args := []any{tenant}
	bind := func(cond string, v any) {
		args = append(args, v)
		q.WriteString(" AND " + cond + " $" + strconv.Itoa(len(args)))
	}
	q.WriteString(`SELECT r.device_id, d.product_id, d.group_id, r.received_at, r.body FROM error_reports r
	JOIN devices d ON d.tenant_id = r.tenant_id AND d.id = r.device_id
	WHERE r.tenant_id = $1`)
	if f.ProductID != "" {
		bind("d.product_id =", f.ProductID)
	}
	if f.GroupID != "" {
		bind("d.group_id =", f.GroupID)
	}
	if f.DeviceID != "" {
		bind("r.device_id =", f.DeviceID)
	}
	if f.Kind != "" {
		bind("r.kind =", f.Kind)
	}
	if f.ImagePath != "" {
		bind("r.image_path =", f.ImagePath)
	}
	if f.ImageVersion != "" {
		bind("r.image_version =", f.ImageVersion)
	}
	if !f.Since.IsZero() {
		bind("r.received_at >=", utc(f.Since))
	}
	if !f.Until.IsZero() {
		bind("r.received_at <", utc(f.Until))
	}
	if !after.IsZero() {
		args = append(args, utc(after.ReceivedAt), after.DeviceID, after.ID)
		n := len(args)
		fmt.Fprintf(&q, " AND (r.received_at, r.device_id, r.id) < ($%d, $%d, $%d)", n-2, n-1, n)
	}
	args = append(args, limit(store.Page{Limit: n}))
	q.WriteString(" ORDER BY r.received_at DESC, r.device_id DESC, r.id DESC LIMIT $" + strconv.Itoa(len(args)))
	return q.String(), args
}

func (s errorReports) ListTenant(ctx context.Context, f store.ReportFilter, after store.ReportCursor, n int) ([]store.TenantReport, error) {
	q, args := listTenantQuery(s.t.id, f, after, n)
	return queryList(ctx, s.t.tx, scanTenantReport, q, args...)
}

func scanTenantReport(row interface{ Scan(...any) error }) (store.TenantReport, error) {
	var r store.TenantReport
	var pid, gid sql.NullString
	var body string
	if err := row.Scan(&r.DeviceID, &pid, &gid, &r.ReceivedAt, &body); err != nil {
		return r, err
	}
	r.ProductID, r.GroupID, r.ReceivedAt = product.ID(pid.String), product.GroupID(gid.String), utc(r.ReceivedAt)
	if err := json.Unmarshal([]byte(body), &r.Report); err != nil {
		return r, fmt.Errorf("error report of device %s: %w", r.DeviceID, err)
	}
	return r, nil
}

// versionKey names one image version.
type versionKey struct{ target, version string }

// VersionFigures runs three grouped queries and adds device-hours up while it reads the
// running devices row by row: the memory it holds grows with the number of versions, not
// of devices. Device-hours are summed in Go because the two databases share no function
// from a timestamp to seconds (SQLite stores Go's time text).
func (s errorReports) VersionFigures(ctx context.Context, q store.FiguresQuery) ([]store.VersionFigures, error) {
	if q.Kind != attest.KindOS && q.Kind != attest.KindApp {
		return nil, fmt.Errorf("version figures: unknown image kind %q", q.Kind)
	}
	figs := map[versionKey]*store.VersionFigures{}
	get := func(k versionKey) *store.VersionFigures {
		f := figs[k]
		if f == nil {
			f = &store.VersionFigures{Target: k.target, Version: k.version}
			figs[k] = f
		}
		return f
	}
	if err := s.runningFigures(ctx, q, get); err != nil {
		return nil, err
	}
	if err := s.crashFigures(ctx, q, get); err != nil {
		return nil, err
	}
	out := make([]store.VersionFigures, 0, len(figs))
	for _, f := range figs {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Version < out[j].Version
	})
	return out, nil
}

// productCond binds the product filter on the devices alias d.
func productCond(q store.FiguresQuery, args []any) (string, []any) {
	if q.ProductID == "" {
		return "", args
	}
	args = append(args, q.ProductID)
	return " AND d.product_id = $" + strconv.Itoa(len(args)), args
}

// runningFigures counts the devices running each version and their device-hours in the
// window.
func (s errorReports) runningFigures(ctx context.Context, q store.FiguresQuery, get func(versionKey) *store.VersionFigures) error {
	k := q.Kind
	cond, args := productCond(q, []any{s.t.id})
	rows, err := s.t.tx.query(ctx, `SELECT d.running_`+k+`_target, d.running_`+k+`_version, d.running_`+k+`_since, d.attested_at, d.last_seen_at
		FROM devices d WHERE d.tenant_id = $1 AND d.running_`+k+`_target <> ''`+cond, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var key versionKey
		var since, attested, seen sql.NullTime
		if err := rows.Scan(&key.target, &key.version, &since, &attested, &seen); err != nil {
			return err
		}
		f := get(key)
		f.Running++
		f.DeviceHours += store.DeviceHours(timePtr(since), timePtr(attested), timePtr(seen), q.From, q.Until)
	}
	return rows.Err()
}

// crashFigures counts the crash reports attributed to each version in the window and the
// running devices that made at least one.
func (s errorReports) crashFigures(ctx context.Context, q store.FiguresQuery, get func(versionKey) *store.VersionFigures) error {
	scan := func(set func(f *store.VersionFigures, n int)) func(row interface{ Scan(...any) error }) (struct{}, error) {
		return func(row interface{ Scan(...any) error }) (struct{}, error) {
			var key versionKey
			var n int
			if err := row.Scan(&key.target, &key.version, &n); err != nil {
				return struct{}{}, err
			}
			set(get(key), n)
			return struct{}{}, nil
		}
	}
	cond, args := productCond(q, []any{s.t.id, errreport.AppCrash, utc(q.From), utc(q.Until)})
	if q.Kind == attest.KindApp {
		// An app version's crashes are the app_crash reports that name it, whichever
		// device sent them and whatever it runs now.
		join := ""
		if q.ProductID != "" {
			join = " JOIN devices d ON d.tenant_id = r.tenant_id AND d.id = r.device_id"
		}
		_, err := queryList(ctx, s.t.tx, scan(func(f *store.VersionFigures, n int) { f.Crashes = n }),
			`SELECT r.image_path, r.image_version, count(*) FROM error_reports r`+join+`
			WHERE r.tenant_id = $1 AND r.kind = $2 AND r.received_at >= $3 AND r.received_at < $4 AND r.image_path <> ''`+cond+`
			GROUP BY r.image_path, r.image_version`, args...)
		if err != nil {
			return err
		}
		_, err = queryList(ctx, s.t.tx, scan(func(f *store.VersionFigures, n int) { f.CrashedRunning = n }),
			`SELECT d.running_app_target, d.running_app_version, count(*) FROM devices d
			WHERE d.tenant_id = $1 AND d.running_app_target <> ''`+cond+` AND EXISTS (SELECT 1 FROM error_reports r
				WHERE r.tenant_id = d.tenant_id AND r.device_id = d.id AND r.kind = $2 AND r.received_at >= $3 AND r.received_at < $4
				AND r.image_path = d.running_app_target AND r.image_version = d.running_app_version)
			GROUP BY d.running_app_target, d.running_app_version`, args...)
		return err
	}
	// An OS version's crashes are the app_crash reports of the devices that run it, sent
	// since they started running it: an app crash names the app, not the OS under it.
	_, err := queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (struct{}, error) {
		var key versionKey
		var n, devices int
		if err := row.Scan(&key.target, &key.version, &n, &devices); err != nil {
			return struct{}{}, err
		}
		f := get(key)
		f.Crashes, f.CrashedRunning = n, devices
		return struct{}{}, nil
	}, `SELECT d.running_os_target, d.running_os_version, count(*), count(DISTINCT d.id) FROM devices d
		JOIN error_reports r ON r.tenant_id = d.tenant_id AND r.device_id = d.id
		WHERE d.tenant_id = $1 AND d.running_os_target <> ''`+cond+` AND r.kind = $2 AND r.received_at >= $3 AND r.received_at < $4
		AND r.received_at >= COALESCE(d.running_os_since, d.attested_at)
		GROUP BY d.running_os_target, d.running_os_version`, args...)
	return err
}
