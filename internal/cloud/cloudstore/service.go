package cloudstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Service requests, part reservations and purchase prompts: what the cloud did, or an
// owner asked, about an appliance (issue 14).

// Service request sources and states.
const (
	SourceOwner   = "owner"
	SourceRule    = "rule"
	SourceSupport = "support"

	RequestOpen      = "open"
	RequestScheduled = "scheduled"
	RequestDone      = "done"
	RequestCancelled = "cancelled"
)

// Limits of service request text.
const (
	MaxDescriptionBytes = 2000
	MaxNoteBytes        = 2000
)

// ServiceRequest asks the repair shop to look at an appliance.
type ServiceRequest struct {
	ID          int64
	Device      string
	OwnerID     int64 // 0: none (a rule's request for an unclaimed appliance)
	AlertID     int64 // 0: none
	Source      string
	Description string
	Preferred   time.Time // the owner's preferred time, zero for none
	State       string
	Note        string // support's note to the owner
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// NewServiceRequest is what CreateServiceRequest stores.
type NewServiceRequest struct {
	Device      string
	OwnerID     int64
	AlertID     int64
	Source      string
	Description string
	Preferred   time.Time
	CreatedAt   time.Time
}

func (n NewServiceRequest) validate() error {
	var errs []error
	if !telemetry.ValidDeviceID(n.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	switch n.Source {
	case SourceOwner, SourceRule, SourceSupport:
	default:
		errs = append(errs, errors.New("source: must be owner, rule or support"))
	}
	if strings.TrimSpace(n.Description) == "" {
		errs = append(errs, errors.New("description: required"))
	} else if err := CheckText("description", n.Description, MaxDescriptionBytes, true); err != nil {
		errs = append(errs, err)
	}
	if n.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at: required"))
	}
	if !n.Preferred.IsZero() && (n.Preferred.Before(n.CreatedAt.Add(-time.Hour)) || n.Preferred.After(n.CreatedAt.AddDate(1, 0, 0))) {
		errs = append(errs, errors.New("preferred: must be between now and a year from now"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: service request: %w", ErrInvalid, err)
	}
	return nil
}

func nullID(id int64) sql.NullInt64 { return sql.NullInt64{Int64: id, Valid: id != 0} }

func nullTime(t time.Time) sql.NullInt64 { return sql.NullInt64{Int64: us(t), Valid: !t.IsZero()} }

// CreateServiceRequest stores a new open request. A second request for the same alert is
// ErrConflict (a rule's action run twice opens one).
func (s *Store) CreateServiceRequest(ctx context.Context, n NewServiceRequest) (ServiceRequest, error) {
	if err := n.validate(); err != nil {
		return ServiceRequest{}, err
	}
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO service_requests (device, owner_id, alert_id, source, description, preferred_us, state, created_us, updated_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id`,
			n.Device, nullID(n.OwnerID), nullID(n.AlertID), n.Source, n.Description, nullTime(n.Preferred), RequestOpen, us(n.CreatedAt)).Scan(&id)
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("a service request for alert %d exists already: %w", n.AlertID, ErrConflict)
		}
		return err
	})
	if err != nil {
		return ServiceRequest{}, err
	}
	return s.GetServiceRequest(ctx, id)
}

const serviceRequestColumns = `id, device, owner_id, alert_id, source, description, preferred_us, state, note, created_us, updated_us`

func scanServiceRequest(sc interface{ Scan(...any) error }) (ServiceRequest, error) {
	var r ServiceRequest
	var owner, alert, preferred sql.NullInt64
	var created, updated int64
	err := sc.Scan(&r.ID, &r.Device, &owner, &alert, &r.Source, &r.Description, &preferred, &r.State, &r.Note, &created, &updated)
	r.OwnerID, r.AlertID, r.Preferred = owner.Int64, alert.Int64, fromNullUS(preferred)
	r.CreatedAt, r.UpdatedAt = fromUS(created), fromUS(updated)
	return r, err
}

// GetServiceRequest returns request id, or ErrNotFound.
func (s *Store) GetServiceRequest(ctx context.Context, id int64) (ServiceRequest, error) {
	var r ServiceRequest
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		r, err = scanServiceRequest(tx.QueryRowContext(ctx, `SELECT `+serviceRequestColumns+` FROM service_requests WHERE id = $1`, id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return ServiceRequest{}, fmt.Errorf("service request: %w", ErrNotFound)
	}
	return r, err
}

// ServiceRequestFilter selects requests; empty fields match all.
type ServiceRequestFilter struct {
	Device  string
	OwnerID int64
	AlertID int64
	State   string
	// Since, when set, returns only requests made at or after it (an owner sees their
	// appliance's requests since they claimed it).
	Since time.Time
	// BeforeID pages: only requests with a smaller ID (newest first).
	BeforeID int64
	// Limit is 1 to 1000; 0 means 100.
	Limit int
}

// ListServiceRequests returns requests newest first.
func (s *Store) ListServiceRequests(ctx context.Context, f ServiceRequestFilter) ([]ServiceRequest, error) {
	var w where
	w.add("device = $%d", f.Device, f.Device != "")
	w.add("owner_id = $%d", f.OwnerID, f.OwnerID != 0)
	w.add("alert_id = $%d", f.AlertID, f.AlertID != 0)
	w.add("state = $%d", f.State, f.State != "")
	w.add("created_us >= $%d", us(f.Since), !f.Since.IsZero())
	w.add("id < $%d", f.BeforeID, f.BeforeID != 0)
	return listRows(ctx, s, `SELECT `+serviceRequestColumns+` FROM service_requests`, w, "id DESC", f.Limit, scanServiceRequest)
}

var requestStates = map[string]bool{RequestOpen: true, RequestScheduled: true, RequestDone: true, RequestCancelled: true}

// UpdateServiceRequest sets the state and note of request id at at. A finished request
// (done, cancelled) is ErrConflict.
func (s *Store) UpdateServiceRequest(ctx context.Context, id int64, state, note string, at time.Time) (ServiceRequest, error) {
	var errs []error
	if !requestStates[state] {
		errs = append(errs, fmt.Errorf("%w: state: must be open, scheduled, done or cancelled", ErrInvalid))
	}
	if err := CheckText("note", note, MaxNoteBytes, true); err != nil {
		errs = append(errs, err)
	}
	if at.IsZero() {
		errs = append(errs, fmt.Errorf("%w: updated_at: required", ErrInvalid))
	}
	if err := errors.Join(errs...); err != nil {
		return ServiceRequest{}, err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE service_requests SET state = $1, note = $2, updated_us = $3
			WHERE id = $4 AND state IN ('open', 'scheduled')`, state, note, us(at), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var st string
			if err := tx.QueryRowContext(ctx, `SELECT state FROM service_requests WHERE id = $1`, id).Scan(&st); errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("service request: %w", ErrNotFound)
			}
			return fmt.Errorf("service request %d is %s already: %w", id, st, ErrConflict)
		}
		return nil
	})
	if err != nil {
		return ServiceRequest{}, err
	}
	return s.GetServiceRequest(ctx, id)
}

// Part reservation states.
const (
	ReservationReserved       = "reserved"
	ReservationOutOfStock     = "out_of_stock"
	ReservationOutOfWarranty  = "out_of_warranty"
	ReservationNoShop         = "no_shop"
	ReservationFailed         = "failed"
	maxReservationFieldsBytes = 1024
)

// Reservation is what a warranty part reservation came to.
type Reservation struct {
	ID        int64
	Device    string
	AlertID   int64
	Part      string
	Shop      string
	State     string
	Reference string // the shop's ID of the reservation
	Reason    string // why not, in words
	CreatedAt time.Time
}

var (
	partRE             = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	reservationStates  = map[string]bool{ReservationReserved: true, ReservationOutOfStock: true, ReservationOutOfWarranty: true, ReservationNoShop: true, ReservationFailed: true}
	errReservationPart = errors.New("part: must be 1 to 64 letters, digits, '_', '.' or '-'")
)

// RecordReservation stores the outcome of a reservation. A second outcome for the same
// alert and part is ErrConflict: one reservation per alert.
func (s *Store) RecordReservation(ctx context.Context, r Reservation) (Reservation, error) {
	var errs []error
	if !telemetry.ValidDeviceID(r.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !partRE.MatchString(r.Part) {
		errs = append(errs, errReservationPart)
	}
	if r.Shop != "" && !shopIDRE.MatchString(r.Shop) {
		errs = append(errs, errors.New("shop: must be 1 to 64 lower-case letters, digits or '-'"))
	}
	if !reservationStates[r.State] {
		errs = append(errs, errors.New("state: unknown"))
	}
	if CheckText("reference", r.Reference, 128, false) != nil || CheckText("reason", r.Reason, maxReservationFieldsBytes, false) != nil {
		errs = append(errs, errors.New("reference, reason: printable text of at most 128 and 1024 bytes"))
	}
	if r.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return Reservation{}, fmt.Errorf("%w: reservation: %w", ErrInvalid, err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO part_reservations (device, alert_id, part, shop, state, reference, reason, created_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
			r.Device, nullID(r.AlertID), r.Part, r.Shop, r.State, r.Reference, r.Reason, us(r.CreatedAt)).Scan(&r.ID)
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("part %s for alert %d is recorded already: %w", r.Part, r.AlertID, ErrConflict)
		}
		return err
	})
	r.CreatedAt = r.CreatedAt.UTC().Truncate(time.Microsecond)
	return r, err
}

const reservationColumns = `id, device, alert_id, part, shop, state, reference, reason, created_us`

func scanReservation(sc interface{ Scan(...any) error }) (Reservation, error) {
	var r Reservation
	var alert sql.NullInt64
	var created int64
	err := sc.Scan(&r.ID, &r.Device, &alert, &r.Part, &r.Shop, &r.State, &r.Reference, &r.Reason, &created)
	r.AlertID, r.CreatedAt = alert.Int64, fromUS(created)
	return r, err
}

// ReservationFilter selects reservations; empty fields match all.
type ReservationFilter struct {
	Device   string
	AlertID  int64
	State    string
	Since    time.Time
	BeforeID int64
	Limit    int
}

// ListReservations returns reservations newest first.
func (s *Store) ListReservations(ctx context.Context, f ReservationFilter) ([]Reservation, error) {
	var w where
	w.add("device = $%d", f.Device, f.Device != "")
	w.add("alert_id = $%d", f.AlertID, f.AlertID != 0)
	w.add("state = $%d", f.State, f.State != "")
	w.add("created_us >= $%d", us(f.Since), !f.Since.IsZero())
	w.add("id < $%d", f.BeforeID, f.BeforeID != 0)
	return listRows(ctx, s, `SELECT `+reservationColumns+` FROM part_reservations`, w, "id DESC", f.Limit, scanReservation)
}

// Prompt asks an owner to buy a consumable.
type Prompt struct {
	ID          int64
	Device      string
	AlertID     int64
	Consumable  string
	BuyURL      string
	CreatedAt   time.Time
	DismissedAt time.Time
}

// CreatePrompt stores a purchase prompt. A second prompt for the same alert and consumable
// is ErrConflict: at most one per alert episode, that is per refill.
func (s *Store) CreatePrompt(ctx context.Context, p Prompt) (Prompt, error) {
	var errs []error
	if !telemetry.ValidDeviceID(p.Device) {
		errs = append(errs, errors.New("device: must be 64 lower-case hex digits"))
	}
	if !partRE.MatchString(p.Consumable) {
		errs = append(errs, errors.New("consumable: must be 1 to 64 letters, digits, '_', '.' or '-'"))
	}
	if !strings.HasPrefix(p.BuyURL, "https://") || CheckText("buy_url", p.BuyURL, 512, false) != nil {
		errs = append(errs, errors.New("buy_url: must be an https URL of at most 512 bytes"))
	}
	if p.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return Prompt{}, fmt.Errorf("%w: prompt: %w", ErrInvalid, err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO purchase_prompts (device, alert_id, consumable, buy_url, created_us) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			p.Device, nullID(p.AlertID), p.Consumable, p.BuyURL, us(p.CreatedAt)).Scan(&p.ID)
		if err != nil && s.d.uniqueViolation(err) {
			return fmt.Errorf("a %s prompt for alert %d exists already: %w", p.Consumable, p.AlertID, ErrConflict)
		}
		return err
	})
	p.CreatedAt = p.CreatedAt.UTC().Truncate(time.Microsecond)
	return p, err
}

const promptColumns = `id, device, alert_id, consumable, buy_url, created_us, dismissed_us`

func scanPrompt(sc interface{ Scan(...any) error }) (Prompt, error) {
	var p Prompt
	var alert, dismissed sql.NullInt64
	var created int64
	err := sc.Scan(&p.ID, &p.Device, &alert, &p.Consumable, &p.BuyURL, &created, &dismissed)
	p.AlertID, p.CreatedAt, p.DismissedAt = alert.Int64, fromUS(created), fromNullUS(dismissed)
	return p, err
}

// PromptFilter selects prompts; empty fields match all.
type PromptFilter struct {
	Device string
	// Open returns only prompts not dismissed.
	Open  bool
	Since time.Time
	Limit int
}

// ListPrompts returns prompts newest first.
func (s *Store) ListPrompts(ctx context.Context, f PromptFilter) ([]Prompt, error) {
	var w where
	w.add("device = $%d", f.Device, f.Device != "")
	w.add("created_us >= $%d", us(f.Since), !f.Since.IsZero())
	if f.Open {
		w.conds = append(w.conds, "dismissed_us IS NULL")
	}
	return listRows(ctx, s, `SELECT `+promptColumns+` FROM purchase_prompts`, w, "id DESC", f.Limit, scanPrompt)
}

// DismissPrompt marks prompt id of device dismissed at at; an unknown one, or another
// device's, is ErrNotFound.
func (s *Store) DismissPrompt(ctx context.Context, device string, id int64, at time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE purchase_prompts SET dismissed_us = $1 WHERE id = $2 AND device = $3 AND dismissed_us IS NULL`, us(at), id, device)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("prompt: %w", ErrNotFound)
		}
		return nil
	})
}

// where builds a WHERE clause of constant conditions with numbered placeholders.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, v any, on bool) {
	if !on {
		return
	}
	w.args = append(w.args, v)
	w.conds = append(w.conds, fmt.Sprintf(cond, len(w.args)))
}

// listRows runs a list query of constant SQL with w's conditions, order and a page limit.
func listRows[T any](ctx context.Context, s *Store, q string, w where, order string, limit int, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, err
	}
	if len(w.conds) > 0 {
		q += " WHERE " + strings.Join(w.conds, " AND ")
	}
	args := append(w.args, limit)
	q += fmt.Sprintf(" ORDER BY %s LIMIT $%d", order, len(args))
	var out []T
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}
