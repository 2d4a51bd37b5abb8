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
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/updstate"
)

// updateEvents binds tenant_id from its tenantTx in every query, as the other tenant-scoped
// types do (migration 13).
type updateEvents struct{ t *tenantTx }

func (t *tenantTx) UpdateEvents() store.UpdateEvents { return updateEvents{t} }

// Add first takes the device's row (an UPDATE that changes nothing, but matches only the
// tenant's device and holds the row lock to the commit): concurrent uploads of one device
// queue there in PostgreSQL, so the bound and the latest state hold. Then it inserts the
// report unless the device has its ID, deletes the oldest beyond the bound, and sets the
// device's state when the report is its newest by (at, id).
func (s updateEvents) Add(ctx context.Context, id device.ID, r updstate.Report, receivedAt time.Time) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode update state %s: %w", r.ID, err)
	}
	res, err := s.t.tx.exec(ctx, `UPDATE devices SET update_state = update_state WHERE tenant_id = $1 AND id = $2`, s.t.id, id)
	if err != nil {
		return fmt.Errorf("lock device %s: %w", id, err)
	}
	if err := affected(res); err != nil {
		return fmt.Errorf("update state %s: device %s: %w", r.ID, id, err)
	}
	// at is kept to the microsecond in both databases, so that (at, id) orders alike.
	at := utc(r.At).Truncate(time.Microsecond)
	res, err = s.t.tx.exec(ctx, `INSERT INTO device_update_events (tenant_id, device_id, id, state, at, received_at, body, target)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, device_id, id) DO NOTHING`,
		s.t.id, id, r.ID, r.State, at, utc(receivedAt).Truncate(time.Microsecond), string(body), r.Target)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // stored before: nothing to do
	}
	var count int64
	if err := s.t.tx.queryRow(ctx, `SELECT count(*) FROM device_update_events WHERE tenant_id = $1 AND device_id = $2`,
		s.t.id, id).Scan(&count); err != nil {
		return err
	}
	if count > store.MaxUpdateEventsPerDevice {
		if _, err := s.t.tx.exec(ctx, `DELETE FROM device_update_events WHERE tenant_id = $1 AND device_id = $2 AND id IN (
			SELECT id FROM device_update_events WHERE tenant_id = $1 AND device_id = $2 ORDER BY at, id LIMIT $3)`,
			s.t.id, id, count-store.MaxUpdateEventsPerDevice); err != nil {
			return fmt.Errorf("delete oldest update states of device %s: %w", id, err)
		}
	}
	var newest string
	err = s.t.tx.queryRow(ctx, `SELECT id FROM device_update_events WHERE tenant_id = $1 AND device_id = $2
		ORDER BY at DESC, id DESC LIMIT 1`, s.t.id, id).Scan(&newest)
	if err != nil || newest != r.ID {
		return oneRow(err) // an older report than the device's newest: its state stays
	}
	_, err = s.t.tx.exec(ctx, `UPDATE devices SET update_state = $1, update_state_at = $2 WHERE tenant_id = $3 AND id = $4`,
		r.State, at, s.t.id, id)
	return err
}

func (s updateEvents) List(ctx context.Context, id device.ID, p store.Page) ([]updstate.Record, error) {
	q := `SELECT device_id, received_at, body FROM device_update_events WHERE tenant_id = $1 AND device_id = $2`
	args := []any{s.t.id, id}
	if p.After != "" {
		// The position of the last report seen. When it is gone, the bound deleted it and
		// every older one: nothing follows.
		var after time.Time
		err := s.t.tx.queryRow(ctx, `SELECT at FROM device_update_events WHERE tenant_id = $1 AND device_id = $2 AND id = $3`,
			s.t.id, id, p.After).Scan(&after)
		if errors.Is(err, sql.ErrNoRows) {
			return []updstate.Record{}, nil
		}
		if err != nil {
			return nil, err
		}
		args = append(args, after, p.After)
		q += ` AND (at < $3 OR (at = $3 AND id < $4))`
	}
	args = append(args, limit(p))
	q += ` ORDER BY at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	return queryList(ctx, s.t.tx, scanUpdateEvent, q, args...)
}

func scanUpdateEvent(row interface{ Scan(...any) error }) (updstate.Record, error) {
	var rec updstate.Record
	var body string
	if err := row.Scan(&rec.DeviceID, &rec.ReceivedAt, &body); err != nil {
		return rec, err
	}
	rec.ReceivedAt = utc(rec.ReceivedAt)
	if err := json.Unmarshal([]byte(body), &rec.Report); err != nil {
		return rec, fmt.Errorf("update state of device %s: %w", rec.DeviceID, err)
	}
	return rec, nil
}

// Seen is one conditional UPDATE: a device that checks in every few seconds writes its row
// once per every, and the other check-ins match nothing.
func (s tenantDevices) Seen(ctx context.Context, id device.ID, at time.Time, every time.Duration) (bool, error) {
	at = utc(at).Truncate(time.Microsecond)
	res, err := s.t.tx.exec(ctx, `UPDATE devices SET last_seen_at = $1 WHERE tenant_id = $2 AND id = $3
		AND (last_seen_at IS NULL OR last_seen_at <= $4)`, at, s.t.id, id, at.Add(-every))
	if err != nil {
		return false, fmt.Errorf("device %s last seen: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
