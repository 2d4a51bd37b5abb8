package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
)

// errorReports binds tenant_id from its tenantTx in every query, as the other tenant-scoped
// types do; the foreign key to devices (tenant_id, id) refuses a device that is not the
// tenant's.
type errorReports struct{ t *tenantTx }

func (t *tenantTx) ErrorReports() store.ErrorReports { return errorReports{t} }

// Add first locks the device's count row (an upsert that changes nothing), then inserts
// the report unless the device already has its ID, counts it and, past the bound, deletes
// the oldest. Every Add of a device takes the count row first and holds it to the commit,
// so in PostgreSQL concurrent uploads of one device queue there instead of deadlocking on
// each other's reports, and the bound holds.
func (s errorReports) Add(ctx context.Context, id device.ID, r errreport.Report, receivedAt time.Time) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode error report %s: %w", r.ID, err)
	}
	var count int64
	err = s.t.tx.queryRow(ctx, `INSERT INTO error_report_counts (tenant_id, device_id, n) VALUES ($1, $2, 0)
		ON CONFLICT (tenant_id, device_id) DO UPDATE SET n = error_report_counts.n RETURNING n`, s.t.id, id).Scan(&count)
	if errors.Is(s.t.tx.d.Classify(err), store.ErrInUse) {
		// The foreign key: no such device in this tenant.
		return fmt.Errorf("error report %s: device %s: %w", r.ID, id, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("count error reports of device %s: %w", id, err)
	}
	// image_path and image_version copy the body's for CountByImage (migration 10);
	// issue_id names the report's issue (migration 14, errissue.go).
	sig := errreport.Signature(r)
	issue := errreport.IssueID(sig)
	res, err := s.t.tx.exec(ctx, `INSERT INTO error_reports (tenant_id, device_id, id, kind, at, received_at, body, image_path, image_version, issue_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (tenant_id, device_id, id) DO NOTHING`,
		s.t.id, id, r.ID, r.Kind, utc(r.At), utc(receivedAt).Truncate(time.Microsecond), string(body), r.ImagePath, r.ImageVersion, issue)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // stored before: nothing to do
	}
	if err := s.countIn(ctx, id, r, issue, sig, receivedAt); err != nil {
		return err
	}
	count++
	if count > store.MaxErrorReportsPerDevice {
		deleted, err := s.removeOldestOfDevice(ctx, id, count-store.MaxErrorReportsPerDevice)
		if err != nil {
			return fmt.Errorf("delete oldest error reports of device %s: %w", id, err)
		}
		count -= deleted
	}
	_, err = s.t.tx.exec(ctx, `UPDATE error_report_counts SET n = $1 WHERE tenant_id = $2 AND device_id = $3`, count, s.t.id, id)
	return err
}

func (s errorReports) List(ctx context.Context, id device.ID, p store.Page) ([]errreport.Record, error) {
	q := `SELECT device_id, received_at, body FROM error_reports WHERE tenant_id = $1 AND device_id = $2`
	args := []any{s.t.id, id}
	if p.After != "" {
		// The position of the last report seen. When it is gone, the bound deleted it and
		// every older one: nothing follows.
		var after time.Time
		err := s.t.tx.queryRow(ctx, `SELECT received_at FROM error_reports WHERE tenant_id = $1 AND device_id = $2 AND id = $3`,
			s.t.id, id, p.After).Scan(&after)
		if errors.Is(err, sql.ErrNoRows) {
			return []errreport.Record{}, nil
		}
		if err != nil {
			return nil, err
		}
		args = append(args, after, p.After)
		q += ` AND (received_at < $3 OR (received_at = $3 AND id < $4))`
	}
	args = append(args, limit(p))
	q += ` ORDER BY received_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	return queryList(ctx, s.t.tx, scanErrorReport, q, args...)
}

func scanErrorReport(row interface{ Scan(...any) error }) (errreport.Record, error) {
	var rec errreport.Record
	var body string
	if err := row.Scan(&rec.DeviceID, &rec.ReceivedAt, &body); err != nil {
		return rec, err
	}
	rec.ReceivedAt = utc(rec.ReceivedAt)
	if err := json.Unmarshal([]byte(body), &rec.Report); err != nil {
		return rec, fmt.Errorf("error report of device %s: %w", rec.DeviceID, err)
	}
	return rec, nil
}
