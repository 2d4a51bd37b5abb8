package cloudstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Alert states.
const (
	AlertOpen    = "open"
	AlertCleared = "cleared"
)

// MaxEvidenceBytes bounds an alert's evidence (the readings that fired it, as JSON).
const MaxEvidenceBytes = 64 << 10

// Alert is one episode of a rule firing on a device.
type Alert struct {
	ID        int64
	Product   string
	Device    string
	Rule      string
	Severity  string
	State     string
	OpenedAt  time.Time
	ClearedAt time.Time // zero while open
	Value     float64
	Message   string
	Evidence  json.RawMessage
	// DiagnosticID, DiagnosticState and DiagnosticResult follow the latest diagnostics
	// request made for the alert (CreateDiagnostic with its AlertID); the store fills them
	// as the request is created, answered or timed out.
	DiagnosticID     string
	DiagnosticState  string
	DiagnosticResult json.RawMessage
}

// NewAlert is what OpenAlert stores.
type NewAlert struct {
	Product  string
	Device   string
	Rule     string
	Severity string
	OpenedAt time.Time
	Value    float64
	Message  string
	// Evidence is one JSON value (at most MaxEvidenceBytes), typically the readings that
	// fired the rule.
	Evidence json.RawMessage
	// Outbox are the alert's actions, stored in the alert's transaction with its ID: an
	// alert is never stored without its actions or its actions without it. An item's Key
	// should name the episode (product, device, rule and OpenedAt) so that the items of an
	// alert opened twice (two replicas) are enqueued once.
	Outbox []OutboxItem
}

var (
	ruleRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)
	severityRE = regexp.MustCompile(`^[a-z]{1,16}$`)
)

func (a NewAlert) validate() error {
	var errs []error
	if !productRE.MatchString(a.Product) {
		errs = append(errs, errors.New("product: must be 1 to 64 letters, digits, '_', '.' or '-'"))
	}
	if !telemetry.ValidDeviceID(a.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !ruleRE.MatchString(a.Rule) {
		errs = append(errs, errors.New("rule: must be 1 to 128 letters, digits or _.:-"))
	}
	if !severityRE.MatchString(a.Severity) {
		errs = append(errs, errors.New("severity: must be 1 to 16 lower-case letters"))
	}
	if a.OpenedAt.IsZero() {
		errs = append(errs, errors.New("opened_at: required"))
	}
	if math.IsNaN(a.Value) || math.IsInf(a.Value, 0) {
		errs = append(errs, errors.New("value: must be a finite number"))
	}
	if len(a.Message) > telemetry.MaxMessageBytes {
		errs = append(errs, fmt.Errorf("message: at most %d bytes", telemetry.MaxMessageBytes))
	}
	if len(a.Evidence) > MaxEvidenceBytes || len(a.Evidence) > 0 && !json.Valid(a.Evidence) {
		errs = append(errs, fmt.Errorf("evidence: must be one JSON value of at most %d bytes", MaxEvidenceBytes))
	}
	for _, it := range a.Outbox {
		if err := it.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: alert: %w", ErrInvalid, err)
	}
	return nil
}

// OpenAlert stores a new open alert. While an alert of the same rule is open on the device
// it is ErrConflict: one alert per episode.
func (s *Store) OpenAlert(ctx context.Context, a NewAlert) (Alert, error) {
	if err := a.validate(); err != nil {
		return Alert{}, err
	}
	evidence := string(a.Evidence)
	if evidence == "" {
		evidence = "null"
	}
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO alerts (product, device, rule, severity, state, opened_us, value, message, evidence)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
			a.Product, a.Device, a.Rule, a.Severity, AlertOpen, us(a.OpenedAt), a.Value, a.Message, evidence).Scan(&id)
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("alert %s on device %.16s is open already: %w", a.Rule, a.Device, ErrConflict)
		}
		if err != nil {
			return err
		}
		return s.enqueue(ctx, tx, a.OpenedAt, id, a.Outbox)
	})
	if err != nil {
		return Alert{}, err
	}
	return s.GetAlert(ctx, id)
}

// ClearAlert clears the open alert id at at. An unknown id is ErrNotFound, a cleared one
// ErrConflict.
func (s *Store) ClearAlert(ctx context.Context, id int64, at time.Time) (Alert, error) {
	if at.IsZero() {
		return Alert{}, fmt.Errorf("%w: cleared_at: required", ErrInvalid)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE alerts SET state = $1, cleared_us = $2 WHERE id = $3 AND state = $4`,
			AlertCleared, us(at), id, AlertOpen)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM alerts WHERE id = $1`, id).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("alert %d: %w", id, ErrNotFound)
		}
		return fmt.Errorf("alert %d is cleared already: %w", id, ErrConflict)
	})
	if err != nil {
		return Alert{}, err
	}
	return s.GetAlert(ctx, id)
}

const alertColumns = `id, product, device, rule, severity, state, opened_us, cleared_us, value, message, evidence,
	diagnostic_id, diagnostic_state, diagnostic_result`

func scanAlert(sc interface{ Scan(...any) error }) (Alert, error) {
	var a Alert
	var opened int64
	var cleared sql.NullInt64
	var evidence string
	var diagID, diagState, diagResult sql.NullString
	if err := sc.Scan(&a.ID, &a.Product, &a.Device, &a.Rule, &a.Severity, &a.State, &opened, &cleared, &a.Value, &a.Message,
		&evidence, &diagID, &diagState, &diagResult); err != nil {
		return Alert{}, err
	}
	a.OpenedAt, a.ClearedAt = fromUS(opened), fromNullUS(cleared)
	if evidence != "null" {
		a.Evidence = json.RawMessage(evidence)
	}
	a.DiagnosticID, a.DiagnosticState, a.DiagnosticResult = diagID.String, diagState.String, rawJSON(diagResult)
	return a, nil
}

// GetAlert returns the alert id, or ErrNotFound.
func (s *Store) GetAlert(ctx context.Context, id int64) (Alert, error) {
	var a Alert
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		a, err = scanAlert(tx.QueryRowContext(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("alert %d: %w", id, ErrNotFound)
		}
		return err
	})
	return a, err
}

// AlertFilter selects alerts for ListAlerts; empty fields match all.
type AlertFilter struct {
	State   string
	Device  string
	Product string
	Rule    string
	// Before, when not 0, returns only alerts with a smaller ID (the previous page's last):
	// pages run newest first.
	Before int64
	// Limit is 1 to 1000; 0 means 100.
	Limit int
}

// ListAlerts returns alerts newest first, and the Before of the next page (0 when this
// page is the last).
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, int64, error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return nil, 0, err
	}
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.State != "" {
		add("state = $%d", f.State)
	}
	if f.Device != "" {
		add("device = $%d", f.Device)
	}
	if f.Product != "" {
		add("product = $%d", f.Product)
	}
	if f.Rule != "" {
		add("rule = $%d", f.Rule)
	}
	if f.Before != 0 {
		add("id < $%d", f.Before)
	}
	q := `SELECT ` + alertColumns + ` FROM alerts`
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY id DESC LIMIT $%d", len(args)) //nolint:gosec // G201/G202: only constant SQL and $n placeholders are formatted in; every value is bound
	var out []Alert
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAlert(rows)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, err
	}
	var next int64
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].ID
	}
	return out, next, nil
}

// OpenAlerts returns every open alert (a rules engine restores its episodes from them),
// oldest first.
func (s *Store) OpenAlerts(ctx context.Context) ([]Alert, error) {
	var all []Alert
	f := AlertFilter{State: AlertOpen, Limit: 1000}
	for {
		page, next, err := s.ListAlerts(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == 0 {
			break
		}
		f.Before = next
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all, nil
}
