package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Issues (migration 14): error_reports.issue_id names each report's issue; error_issues,
// error_issue_devices, error_issue_versions and error_issue_days are aggregates over the
// stored reports that countIn adds each new report to and uncount takes each deleted one
// out of, in the transaction that stores or deletes it. Reading an issue list therefore
// costs one row per issue (BenchmarkListIssues). The aggregate rows of a report's issue are
// written after its device's count row is locked (Add), so in PostgreSQL two uploads that
// share an issue wait on the issue row in the order they reached it and cannot deadlock on
// each other beyond that one row.

// issueDay is the UTC day of receipt an issue's per-day count uses.
func issueDay(t time.Time) string { return t.UTC().Format(errreport.DayFormat) }

// countIn adds a report just stored to its issue's aggregates.
func (s errorReports) countIn(ctx context.Context, dev device.ID, r errreport.Report, issue, sig string, receivedAt time.Time) error {
	tid := s.t.id
	var n int64
	err := s.t.tx.queryRow(ctx, `INSERT INTO error_issue_devices (tenant_id, issue_id, device_id, reports) VALUES ($1, $2, $3, 1)
		ON CONFLICT (tenant_id, issue_id, device_id) DO UPDATE SET reports = error_issue_devices.reports + 1 RETURNING reports`,
		tid, issue, dev).Scan(&n)
	if err != nil {
		return fmt.Errorf("count issue %s of device %s: %w", issue, dev, err)
	}
	newDevice := 0
	if n == 1 {
		newDevice = 1
	}
	// The newest report's message is the issue's sample; a report received earlier than
	// the issue's last (equal times: the later Add) leaves it.
	_, err = s.t.tx.exec(ctx, `INSERT INTO error_issues (tenant_id, id, signature, kind, image_name, message, reports, devices, first_seen, last_seen)
		VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8)
		ON CONFLICT (tenant_id, id) DO UPDATE SET
			reports = error_issues.reports + 1,
			devices = error_issues.devices + $7,
			first_seen = CASE WHEN excluded.first_seen < error_issues.first_seen THEN excluded.first_seen ELSE error_issues.first_seen END,
			message = CASE WHEN excluded.last_seen >= error_issues.last_seen THEN excluded.message ELSE error_issues.message END,
			last_seen = CASE WHEN excluded.last_seen > error_issues.last_seen THEN excluded.last_seen ELSE error_issues.last_seen END`,
		tid, issue, sig, r.Kind, errreport.ImageName(r.ImagePath), r.Message, newDevice, utc(receivedAt).Truncate(time.Microsecond))
	if err != nil {
		return fmt.Errorf("count issue %s: %w", issue, err)
	}
	if r.ImageVersion != "" {
		if _, err := s.t.tx.exec(ctx, `INSERT INTO error_issue_versions (tenant_id, issue_id, version, reports) VALUES ($1, $2, $3, 1)
			ON CONFLICT (tenant_id, issue_id, version) DO UPDATE SET reports = error_issue_versions.reports + 1`,
			tid, issue, r.ImageVersion); err != nil {
			return fmt.Errorf("count issue %s of version %s: %w", issue, r.ImageVersion, err)
		}
	}
	_, err = s.t.tx.exec(ctx, `INSERT INTO error_issue_days (tenant_id, issue_id, day, reports) VALUES ($1, $2, $3, 1)
		ON CONFLICT (tenant_id, issue_id, day) DO UPDATE SET reports = error_issue_days.reports + 1`,
		tid, issue, issueDay(receivedAt))
	if err != nil {
		return fmt.Errorf("count issue %s by day: %w", issue, err)
	}
	return nil
}

// storedReport is what uncount needs of a report being deleted.
type storedReport struct {
	device   device.ID
	id       string
	issue    string
	version  string
	received time.Time
}

// selectStored returns the reports q selects, q reading device_id, id, issue_id,
// image_version and received_at.
func (s errorReports) selectStored(ctx context.Context, q string, args ...any) ([]storedReport, error) {
	return queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (storedReport, error) {
		var r storedReport
		err := row.Scan(&r.device, &r.id, &r.issue, &r.version, &r.received)
		return r, err
	}, q, args...)
}

// remove deletes the reports and takes them out of their issues' aggregates, keeping them
// exact: counts drop, a device's or version's or day's row goes with its last report, an
// issue goes with its last report, and the first and last seen of an issue that keeps
// reports are read again from those left (the error_reports_issue index).
func (s errorReports) remove(ctx context.Context, rows []storedReport) error {
	tid := s.t.id
	issues, devs, versions, days := map[string]int64{}, map[issueKey]int64{}, map[issueKey]int64{}, map[issueKey]int64{}
	for _, r := range rows {
		if _, err := s.t.tx.exec(ctx, `DELETE FROM error_reports WHERE tenant_id = $1 AND device_id = $2 AND id = $3`,
			tid, r.device, r.id); err != nil {
			return fmt.Errorf("delete error report %s of device %s: %w", r.id, r.device, err)
		}
		issues[r.issue]++
		devs[issueKey{r.issue, string(r.device)}]++
		if r.version != "" {
			versions[issueKey{r.issue, r.version}]++
		}
		days[issueKey{r.issue, issueDay(r.received)}]++
	}
	// decrement takes n from a row's reports, deleting the row when none are left; it
	// reports whether it deleted.
	decrement := func(table, col string, k issueKey, n int64) (bool, error) {
		res, err := s.t.tx.exec(ctx, `UPDATE `+table+` SET reports = reports - $1
			WHERE tenant_id = $2 AND issue_id = $3 AND `+col+` = $4 AND reports > $1`, n, tid, k.issue, k.sub)
		if err != nil {
			return false, err
		}
		if c, err := res.RowsAffected(); err != nil || c > 0 {
			return false, err
		}
		_, err = s.t.tx.exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1 AND issue_id = $2 AND `+col+` = $3`, tid, k.issue, k.sub)
		return true, err
	}
	goneDevices := map[string]int64{}
	for _, k := range sortedKeys(devs) {
		gone, err := decrement("error_issue_devices", "device_id", k, devs[k])
		if err != nil {
			return fmt.Errorf("uncount issue %s of device %s: %w", k.issue, k.sub, err)
		}
		if gone {
			goneDevices[k.issue]++
		}
	}
	for _, k := range sortedKeys(versions) {
		if _, err := decrement("error_issue_versions", "version", k, versions[k]); err != nil {
			return fmt.Errorf("uncount issue %s of version %s: %w", k.issue, k.sub, err)
		}
	}
	for _, k := range sortedKeys(days) {
		if _, err := decrement("error_issue_days", "day", k, days[k]); err != nil {
			return fmt.Errorf("uncount issue %s on %s: %w", k.issue, k.sub, err)
		}
	}
	for _, issue := range slices.Sorted(maps.Keys(issues)) {
		if err := s.uncountIssue(ctx, issue, issues[issue], goneDevices[issue]); err != nil {
			return fmt.Errorf("uncount issue %s: %w", issue, err)
		}
	}
	return nil
}

// issueKey is an aggregate row of one issue: a device, a version or a day.
type issueKey struct{ issue, sub string }

// sortedKeys orders the keys so that concurrent removals touch rows in one order.
func sortedKeys(m map[issueKey]int64) []issueKey {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b issueKey) int {
		if c := strings.Compare(a.issue, b.issue); c != 0 {
			return c
		}
		return strings.Compare(a.sub, b.sub)
	})
	return keys
}

// uncountIssue takes n reports of gone devices out of the issue's row, deleting it with
// its last report.
func (s errorReports) uncountIssue(ctx context.Context, issue string, n, goneDevices int64) error {
	tid := s.t.id
	var first, last time.Time
	err := s.t.tx.queryRow(ctx, `SELECT received_at FROM error_reports WHERE tenant_id = $1 AND issue_id = $2
		ORDER BY received_at LIMIT 1`, tid, issue).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = s.t.tx.exec(ctx, `DELETE FROM error_issues WHERE tenant_id = $1 AND id = $2`, tid, issue)
		return err
	}
	if err != nil {
		return err
	}
	if err := s.t.tx.queryRow(ctx, `SELECT received_at FROM error_reports WHERE tenant_id = $1 AND issue_id = $2
		ORDER BY received_at DESC LIMIT 1`, tid, issue).Scan(&last); err != nil {
		return err
	}
	_, err = s.t.tx.exec(ctx, `UPDATE error_issues SET reports = reports - $1, devices = devices - $2, first_seen = $3, last_seen = $4
		WHERE tenant_id = $5 AND id = $6`, n, goneDevices, utc(first), utc(last), tid, issue)
	return err
}

// removeOldestOfDevice deletes the device's n oldest received reports (the bound of Add).
func (s errorReports) removeOldestOfDevice(ctx context.Context, dev device.ID, n int64) (int64, error) {
	rows, err := s.selectStored(ctx, `SELECT device_id, id, issue_id, image_version, received_at FROM error_reports
		WHERE tenant_id = $1 AND device_id = $2 ORDER BY received_at, id LIMIT $3`, s.t.id, dev, n)
	if err != nil {
		return 0, err
	}
	return int64(len(rows)), s.remove(ctx, rows)
}

func (s errorReports) DeleteReceivedBefore(ctx context.Context, before time.Time, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	rows, err := s.selectStored(ctx, `SELECT device_id, id, issue_id, image_version, received_at FROM error_reports
		WHERE tenant_id = $1 AND received_at < $2 ORDER BY received_at, device_id, id LIMIT $3`, s.t.id, utc(before), n)
	if err != nil {
		return 0, err
	}
	if err := s.remove(ctx, rows); err != nil {
		return 0, err
	}
	// Keep each device's count of reports (the bound's) in step.
	perDevice := map[device.ID]int64{}
	for _, r := range rows {
		perDevice[r.device]++
	}
	for _, d := range slices.Sorted(maps.Keys(perDevice)) {
		if _, err := s.t.tx.exec(ctx, `UPDATE error_report_counts SET n = n - $1 WHERE tenant_id = $2 AND device_id = $3`,
			perDevice[d], s.t.id, d); err != nil {
			return 0, fmt.Errorf("count error reports of device %s: %w", d, err)
		}
	}
	return len(rows), nil
}

const issueColumns = `id, signature, kind, image_name, message, reports, devices, first_seen, last_seen`

func scanIssue(row interface{ Scan(...any) error }) (errreport.Issue, error) {
	var is errreport.Issue
	err := row.Scan(&is.ID, &is.Signature, &is.Kind, &is.ImageName, &is.Message, &is.Reports, &is.Devices, &is.FirstSeen, &is.LastSeen)
	is.FirstSeen, is.LastSeen = utc(is.FirstSeen), utc(is.LastSeen)
	return is, err
}

// listIssuesQuery builds ListIssues' statement: it walks error_issues_last_seen or
// error_issues_reports backwards from the page's position, filtering as it goes.
func listIssuesQuery(tid tenant.ID, f errreport.IssueFilter, p store.Page) (string, []any, error) {
	col := "last_seen"
	if f.Sort == errreport.ByReports {
		col = "reports"
	} else if f.Sort != "" && f.Sort != errreport.ByLastSeen {
		return "", nil, fmt.Errorf("issue order %q: %w", f.Sort, store.ErrNotFound)
	}
	var b strings.Builder
	args := []any{tid}
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	b.WriteString(`SELECT ` + issueColumns + ` FROM error_issues WHERE tenant_id = $1`)
	if f.Kind != "" {
		b.WriteString(` AND kind = ` + arg(string(f.Kind)))
	}
	if !f.Since.IsZero() {
		b.WriteString(` AND last_seen >= ` + arg(utc(f.Since)))
	}
	if f.ImageNames != nil {
		if len(f.ImageNames) == 0 {
			b.WriteString(` AND 1 = 0`)
		} else {
			ph := make([]string, len(f.ImageNames))
			for i, n := range f.ImageNames {
				ph[i] = arg(n)
			}
			b.WriteString(` AND image_name IN (` + strings.Join(ph, ", ") + `)`)
		}
	}
	if p.After != "" {
		v, id, ok := errreport.ParseSortKey(p.After)
		if !ok {
			return "", nil, fmt.Errorf("issue page position %q: %w", p.After, store.ErrNotFound)
		}
		var at any = v
		if col == "last_seen" {
			at = time.UnixMicro(v).UTC()
		}
		a := arg(at)
		fmt.Fprintf(&b, ` AND (%s < %s OR (%s = %s AND id < %s))`, col, a, col, a, arg(id))
	}
	fmt.Fprintf(&b, ` ORDER BY %s DESC, id DESC LIMIT %s`, col, arg(limit(p)))
	return b.String(), args, nil
}

func (s errorReports) ListIssues(ctx context.Context, f errreport.IssueFilter, p store.Page) ([]errreport.Issue, error) {
	q, args, err := listIssuesQuery(s.t.id, f, p)
	if err != nil {
		return nil, err
	}
	return queryList(ctx, s.t.tx, scanIssue, q, args...)
}

func (s errorReports) GetIssue(ctx context.Context, id string, now time.Time) (errreport.IssueDetail, error) {
	var d errreport.IssueDetail
	var err error
	d.Issue, err = scanIssue(s.t.tx.queryRow(ctx, `SELECT `+issueColumns+` FROM error_issues WHERE tenant_id = $1 AND id = $2`, s.t.id, id))
	if err != nil {
		return d, oneRow(err)
	}
	d.Versions, err = queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (errreport.IssueVersion, error) {
		var v errreport.IssueVersion
		err := row.Scan(&v.Version, &v.Reports)
		return v, err
	}, `SELECT version, reports FROM error_issue_versions WHERE tenant_id = $1 AND issue_id = $2 ORDER BY reports DESC, version`, s.t.id, id)
	if err != nil {
		return d, err
	}
	end := now.UTC()
	start := end.AddDate(0, 0, -(errreport.IssueDays - 1))
	counts := map[string]int64{}
	days, err := queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (errreport.IssueDay, error) {
		var v errreport.IssueDay
		err := row.Scan(&v.Day, &v.Reports)
		return v, err
	}, `SELECT day, reports FROM error_issue_days WHERE tenant_id = $1 AND issue_id = $2 AND day >= $3 AND day <= $4`,
		s.t.id, id, issueDay(start), issueDay(end))
	if err != nil {
		return d, err
	}
	for _, x := range days {
		counts[x.Day] = x.Reports
	}
	d.Days = make([]errreport.IssueDay, 0, errreport.IssueDays)
	for i := range errreport.IssueDays {
		day := issueDay(start.AddDate(0, 0, i))
		d.Days = append(d.Days, errreport.IssueDay{Day: day, Reports: counts[day]})
	}
	return d, nil
}

func (s errorReports) ListIssueReports(ctx context.Context, id string, p store.Page) ([]errreport.Record, error) {
	q := `SELECT device_id, received_at, body FROM error_reports WHERE tenant_id = $1 AND issue_id = $2`
	args := []any{s.t.id, id}
	if p.After != "" {
		dev, rid, ok := strings.Cut(p.After, "/")
		if !ok {
			return nil, fmt.Errorf("report page position %q: %w", p.After, store.ErrNotFound)
		}
		// The position of the last report seen. When it is gone, it and every older report
		// of its device were deleted (the bound, retention): nothing older is left to show
		// in order, so the list ends.
		var after time.Time
		err := s.t.tx.queryRow(ctx, `SELECT received_at FROM error_reports WHERE tenant_id = $1 AND device_id = $2 AND id = $3 AND issue_id = $4`,
			s.t.id, dev, rid, id).Scan(&after)
		if errors.Is(err, sql.ErrNoRows) {
			return []errreport.Record{}, nil
		}
		if err != nil {
			return nil, err
		}
		args = append(args, after, dev, rid)
		q += ` AND (received_at < $3 OR (received_at = $3 AND (device_id < $4 OR (device_id = $4 AND id < $5))))`
	}
	args = append(args, limit(p))
	q += ` ORDER BY received_at DESC, device_id DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	return queryList(ctx, s.t.tx, scanErrorReport, q, args...)
}

// migrationSteps are Go steps of migrations, run in the migration's transaction right
// after its SQL, for what SQL cannot compute.
var migrationSteps = map[int]func(ctx context.Context, t *tx) error{
	14: backfillErrorIssues,
}

// backfillErrorIssues gives every report stored before migration 14 its issue (the
// signature is Go code), a batch at a time in primary-key order, then builds the issue
// aggregates from them (rebuildIssues).
func backfillErrorIssues(ctx context.Context, t *tx) error {
	type row struct {
		tenant tenant.ID
		device device.ID
		id     string
		body   string
	}
	var last row
	for {
		rows, err := queryList(ctx, t, func(r interface{ Scan(...any) error }) (row, error) {
			var x row
			err := r.Scan(&x.tenant, &x.device, &x.id, &x.body)
			return x, err
		}, `SELECT tenant_id, device_id, id, body FROM error_reports WHERE (tenant_id, device_id, id) > ($1, $2, $3)
			ORDER BY tenant_id, device_id, id LIMIT 500`, last.tenant, last.device, last.id)
		if err != nil {
			return err
		}
		for _, x := range rows {
			var r errreport.Report
			if err := json.Unmarshal([]byte(x.body), &r); err != nil {
				return fmt.Errorf("error report %s of device %s: %w", x.id, x.device, err)
			}
			if _, err := t.exec(ctx, `UPDATE error_reports SET issue_id = $1 WHERE tenant_id = $2 AND device_id = $3 AND id = $4`,
				errreport.IssueID(errreport.Signature(r)), x.tenant, x.device, x.id); err != nil {
				return err
			}
		}
		if len(rows) < 500 {
			break
		}
		last = rows[len(rows)-1]
	}
	return rebuildIssues(ctx, t)
}

// rebuildIssues recomputes every issue aggregate from error_reports.issue_id: the
// per-device and per-version counts in SQL, the per-issue and per-day figures in one
// ordered pass over the reports' issue and time of receipt, and each issue's signature,
// kind, image and message from its newest report.
func rebuildIssues(ctx context.Context, t *tx) error {
	for _, q := range []string{
		`DELETE FROM error_issues`, `DELETE FROM error_issue_devices`, `DELETE FROM error_issue_versions`, `DELETE FROM error_issue_days`,
		`INSERT INTO error_issue_devices (tenant_id, issue_id, device_id, reports)
			SELECT tenant_id, issue_id, device_id, count(*) FROM error_reports GROUP BY tenant_id, issue_id, device_id`,
		`INSERT INTO error_issue_versions (tenant_id, issue_id, version, reports)
			SELECT tenant_id, issue_id, image_version, count(*) FROM error_reports WHERE image_version <> ''
			GROUP BY tenant_id, issue_id, image_version`,
	} {
		if _, err := t.exec(ctx, q); err != nil {
			return fmt.Errorf("rebuild error issues: %w", err)
		}
	}
	all, err := issueFigures(ctx, t)
	if err != nil {
		return err
	}
	for _, a := range all {
		var body string
		if err := t.queryRow(ctx, `SELECT body FROM error_reports WHERE tenant_id = $1 AND issue_id = $2 ORDER BY received_at DESC, device_id DESC, id DESC LIMIT 1`,
			a.tenant, a.issue).Scan(&body); err != nil {
			return err
		}
		var r errreport.Report
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			return fmt.Errorf("error report of issue %s: %w", a.issue, err)
		}
		if _, err := t.exec(ctx, `INSERT INTO error_issues (tenant_id, id, signature, kind, image_name, message, reports, devices, first_seen, last_seen)
			VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT count(*) FROM error_issue_devices WHERE tenant_id = $1 AND issue_id = $2), $8, $9)`,
			a.tenant, a.issue, errreport.Signature(r), r.Kind, errreport.ImageName(r.ImagePath), r.Message, a.reports, utc(a.first), utc(a.last)); err != nil {
			return err
		}
		for _, day := range slices.Sorted(maps.Keys(a.days)) {
			if _, err := t.exec(ctx, `INSERT INTO error_issue_days (tenant_id, issue_id, day, reports) VALUES ($1, $2, $3, $4)`,
				a.tenant, a.issue, day, a.days[day]); err != nil {
				return err
			}
		}
	}
	return nil
}

// issueAgg is one issue's figures as rebuildIssues counts them.
type issueAgg struct {
	tenant      tenant.ID
	issue       string
	reports     int64
	first, last time.Time
	days        map[string]int64
}

// issueFigures reads every report's issue and time of receipt in issue order and counts
// each issue's reports, first and last seen and reports per day.
func issueFigures(ctx context.Context, t *tx) ([]*issueAgg, error) {
	rows, err := t.query(ctx, `SELECT tenant_id, issue_id, received_at FROM error_reports ORDER BY tenant_id, issue_id, received_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var all []*issueAgg
	for rows.Next() {
		var tid tenant.ID
		var issue string
		var at time.Time
		if err := rows.Scan(&tid, &issue, &at); err != nil {
			return nil, err
		}
		if n := len(all); n == 0 || all[n-1].tenant != tid || all[n-1].issue != issue {
			all = append(all, &issueAgg{tenant: tid, issue: issue, first: at, days: map[string]int64{}})
		}
		a := all[len(all)-1]
		a.reports++
		a.last = at
		a.days[issueDay(at)]++
	}
	return all, rows.Err()
}
