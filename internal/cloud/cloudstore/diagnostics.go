package cloudstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Diagnostic states.
const (
	DiagnosticPending   = "pending"   // created, not yet published to the device
	DiagnosticSent      = "sent"      // published; waiting for the reply
	DiagnosticSucceeded = "succeeded" // the device answered ok
	DiagnosticFailed    = "failed"    // the device answered with an error
	DiagnosticTimedOut  = "timed_out" // no answer before the deadline
)

// Diagnostic is one remote diagnostics request and its outcome.
type Diagnostic struct {
	ID      string
	Device  string
	Command string
	Args    json.RawMessage
	// RequestedBy names the operator or the rule ("rule:heater-drying-temp").
	RequestedBy string
	RequestedAt time.Time
	Deadline    time.Time
	State       string
	Result      json.RawMessage
	Error       string
	// FinishedAt is when the reply arrived or the request timed out (cloud clock); DeviceAt
	// when the device says it finished (its clock).
	FinishedAt time.Time
	DeviceAt   time.Time
	// AlertID is the alert the request belongs to, 0 for none.
	AlertID int64
}

// NewDiagnostic is what CreateDiagnostic stores.
type NewDiagnostic struct {
	ID          string
	Device      string
	Command     string
	Args        json.RawMessage
	RequestedBy string
	RequestedAt time.Time
	Deadline    time.Time
	AlertID     int64
}

var requesterRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$`)

func (n NewDiagnostic) validate() error {
	var errs []error
	// The request itself must be one the device would accept (telemetry's rules).
	req := telemetry.DiagnosticRequest{V: telemetry.Version, ID: n.ID, Command: n.Command, Args: n.Args, Deadline: n.Deadline}
	if err := req.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !telemetry.ValidDeviceID(n.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !requesterRE.MatchString(n.RequestedBy) {
		errs = append(errs, errors.New("requested_by: must be 1 to 128 letters, digits or _.:@+-"))
	}
	if n.RequestedAt.IsZero() || !n.Deadline.After(n.RequestedAt) {
		errs = append(errs, errors.New("deadline: must be after requested_at"))
	}
	if n.AlertID < 0 {
		errs = append(errs, errors.New("alert_id: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: diagnostic: %w", ErrInvalid, err)
	}
	return nil
}

// CreateDiagnostic stores a pending request. A used ID is ErrConflict; an AlertID that
// names no alert is ErrNotFound. With an AlertID, the alert's diagnostic fields name the
// request.
func (s *Store) CreateDiagnostic(ctx context.Context, n NewDiagnostic) (Diagnostic, error) {
	if err := n.validate(); err != nil {
		return Diagnostic{}, err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var alert sql.NullInt64
		if n.AlertID != 0 {
			alert = sql.NullInt64{Int64: n.AlertID, Valid: true}
			res, err := tx.ExecContext(ctx, `UPDATE alerts SET diagnostic_id = $1, diagnostic_state = $2, diagnostic_result = NULL WHERE id = $3`,
				n.ID, DiagnosticPending, n.AlertID)
			if err != nil {
				return err
			}
			if k, err := res.RowsAffected(); err != nil || k == 0 {
				return cmpErr(err, fmt.Errorf("alert %d: %w", n.AlertID, ErrNotFound))
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO diagnostics
			(id, device, command, args, requested_by, requested_us, deadline_us, state, error, alert_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '', $9)`,
			n.ID, n.Device, n.Command, nullJSON(n.Args), n.RequestedBy, us(n.RequestedAt), us(n.Deadline), DiagnosticPending, alert)
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("diagnostic %s: %w", n.ID, ErrConflict)
		}
		return err
	})
	if err != nil {
		return Diagnostic{}, err
	}
	return s.GetDiagnostic(ctx, n.ID)
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// MarkDiagnosticSent records that the request was published. Only a pending request may
// be marked (else ErrConflict).
func (s *Store) MarkDiagnosticSent(ctx context.Context, id string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE diagnostics SET state = $1 WHERE id = $2 AND state = $3`, DiagnosticSent, id, DiagnosticPending)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		return s.missingOrConflict(ctx, tx, id)
	})
}

func (s *Store) missingOrConflict(ctx context.Context, tx *sql.Tx, id string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM diagnostics WHERE id = $1`, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("diagnostic %.64s: %w", id, ErrNotFound)
	}
	return fmt.Errorf("diagnostic %.64s is not pending: %w", id, ErrConflict)
}

// FinishDiagnostic records device's reply to its request reply.ID at (the cloud's clock).
// The request must be device's and pending or sent: a reply of another device, or one after
// the request finished or timed out, is ErrConflict and changes nothing (an unknown ID is
// ErrNotFound). The ingest records replies through WriteBatch; this is for callers that
// receive replies otherwise.
func (s *Store) FinishDiagnostic(ctx context.Context, device string, reply telemetry.DiagnosticReply, at time.Time) (Diagnostic, error) {
	if err := reply.Validate(); err != nil {
		return Diagnostic{}, fmt.Errorf("%w: reply: %w", ErrInvalid, err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ok, err := s.finishFromReply(ctx, tx, device, reply, at)
		if err != nil || ok {
			return err
		}
		return s.missingOrConflict(ctx, tx, reply.ID)
	})
	if err != nil {
		return Diagnostic{}, err
	}
	return s.GetDiagnostic(ctx, reply.ID)
}

// finishFromReply finishes device's pending or sent request reply.ID and reports whether
// it did. The device check backs the broker's topic rule: a device cannot answer another
// device's request (ATTACKS row 32).
func (s *Store) finishFromReply(ctx context.Context, tx *sql.Tx, device string, reply telemetry.DiagnosticReply, at time.Time) (bool, error) {
	state := DiagnosticSucceeded
	if !reply.OK {
		state = DiagnosticFailed
	}
	var alert sql.NullInt64
	err := tx.QueryRowContext(ctx, `UPDATE diagnostics SET state = $1, result = $2, error = $3, finished_us = $4, device_at_us = $5
		WHERE id = $6 AND device = $7 AND state IN ($8, $9) RETURNING alert_id`,
		state, nullJSON(reply.Result), reply.Error, us(at), us(reply.At), reply.ID, device, DiagnosticPending, DiagnosticSent).Scan(&alert)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, s.noteOnAlert(ctx, tx, alert, reply.ID, state, outcomeJSON(reply.Result, reply.Error))
}

// noteOnAlert copies a diagnostic's outcome onto its alert.
func (s *Store) noteOnAlert(ctx context.Context, tx *sql.Tx, alert sql.NullInt64, id, state string, result sql.NullString) error {
	if !alert.Valid {
		return nil
	}
	_, err := tx.ExecContext(ctx, `UPDATE alerts SET diagnostic_state = $1, diagnostic_result = $2 WHERE id = $3 AND diagnostic_id = $4`,
		state, result, alert.Int64, id)
	return err
}

// outcomeJSON is what an alert shows of a diagnostic's outcome: the result, or the error
// as a JSON string.
func outcomeJSON(result json.RawMessage, errText string) sql.NullString {
	if len(result) > 0 {
		return sql.NullString{String: string(result), Valid: true}
	}
	if errText != "" {
		b, _ := json.Marshal(map[string]string{"error": errText})
		return sql.NullString{String: string(b), Valid: true}
	}
	return sql.NullString{}
}

// maxExpire bounds the requests one ExpireDiagnostics call times out.
const maxExpire = 1000

// ExpireDiagnostics times out the pending and sent requests whose deadline is at or before
// now (at most 1000 per call; call again while it returns that many) and returns their IDs.
func (s *Store) ExpireDiagnostics(ctx context.Context, now time.Time) ([]string, error) {
	var ids []string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ids = nil
		type due struct {
			id    string
			alert sql.NullInt64
		}
		var dues []due
		err := func() error {
			rows, err := tx.QueryContext(ctx, `SELECT id, alert_id FROM diagnostics WHERE state IN ($1, $2) AND deadline_us <= $3
				ORDER BY deadline_us, id LIMIT $4`, DiagnosticPending, DiagnosticSent, us(now), maxExpire)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var d due
				if err := rows.Scan(&d.id, &d.alert); err != nil {
					return err
				}
				dues = append(dues, d)
			}
			return rows.Err()
		}()
		if err != nil {
			return err
		}
		const why = "no reply before the deadline"
		for _, d := range dues {
			if _, err := tx.ExecContext(ctx, `UPDATE diagnostics SET state = $1, error = $2, finished_us = $3 WHERE id = $4`,
				DiagnosticTimedOut, why, us(now), d.id); err != nil {
				return err
			}
			if err := s.noteOnAlert(ctx, tx, d.alert, d.id, DiagnosticTimedOut, outcomeJSON(nil, why)); err != nil {
				return err
			}
			ids = append(ids, d.id)
		}
		return nil
	})
	return ids, err
}

const diagnosticColumns = `id, device, command, args, requested_by, requested_us, deadline_us, state, result, error,
	finished_us, device_at_us, alert_id`

func scanDiagnostic(sc interface{ Scan(...any) error }) (Diagnostic, error) {
	var d Diagnostic
	var args, result sql.NullString
	var requested, deadline int64
	var finished, deviceAt, alert sql.NullInt64
	if err := sc.Scan(&d.ID, &d.Device, &d.Command, &args, &d.RequestedBy, &requested, &deadline, &d.State, &result, &d.Error,
		&finished, &deviceAt, &alert); err != nil {
		return Diagnostic{}, err
	}
	d.Args, d.Result = rawJSON(args), rawJSON(result)
	d.RequestedAt, d.Deadline = fromUS(requested), fromUS(deadline)
	d.FinishedAt, d.DeviceAt = fromNullUS(finished), fromNullUS(deviceAt)
	d.AlertID = alert.Int64
	return d, nil
}

// GetDiagnostic returns the request id, or ErrNotFound.
func (s *Store) GetDiagnostic(ctx context.Context, id string) (Diagnostic, error) {
	var d Diagnostic
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = scanDiagnostic(tx.QueryRowContext(ctx, `SELECT `+diagnosticColumns+` FROM diagnostics WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("diagnostic %.64s: %w", id, ErrNotFound)
		}
		return err
	})
	return d, err
}

// DiagnosticFilter selects requests for ListDiagnostics; empty fields match all.
type DiagnosticFilter struct {
	Device  string
	State   string
	AlertID int64
	// Before, when set, returns only requests made before it (the previous page's last
	// RequestedAt): pages run newest first.
	Before time.Time
	// Limit is 1 to 1000; 0 means 100.
	Limit int
}

// ListDiagnostics returns requests newest first.
func (s *Store) ListDiagnostics(ctx context.Context, f DiagnosticFilter) ([]Diagnostic, error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return nil, err
	}
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.Device != "" {
		add("device = $%d", f.Device)
	}
	if f.State != "" {
		add("state = $%d", f.State)
	}
	if f.AlertID != 0 {
		add("alert_id = $%d", f.AlertID)
	}
	if !f.Before.IsZero() {
		add("requested_us < $%d", us(f.Before))
	}
	q := `SELECT ` + diagnosticColumns + ` FROM diagnostics`
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY requested_us DESC, id DESC LIMIT $%d", len(args)) //nolint:gosec // G201/G202: only constant SQL and $n placeholders are formatted in; every value is bound
	var out []Diagnostic
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			d, err := scanDiagnostic(rows)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	return out, err
}

// pageLimit checks a page size: 0 means 100, at most 1000.
func pageLimit(n int) (int, error) {
	switch {
	case n == 0:
		return 100, nil
	case n < 0 || n > 1000:
		return 0, fmt.Errorf("%w: limit must be 1 to 1000, not %d", ErrInvalid, n)
	}
	return n, nil
}

func nullJSON(raw json.RawMessage) sql.NullString {
	if len(raw) == 0 {
		return sql.NullString{}
	}
	return sql.NullString{String: string(raw), Valid: true}
}

func rawJSON(s sql.NullString) json.RawMessage {
	if !s.Valid {
		return nil
	}
	return json.RawMessage(s.String)
}
