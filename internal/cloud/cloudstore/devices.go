package cloudstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Device is a device as the broker saw it connect.
type Device struct {
	ID      string
	Product string
	// FirstSeen and LastSeen are the first and latest connections.
	FirstSeen, LastSeen time.Time
	// CertNotAfter and CertSerial are those of the certificate of the latest connection.
	// The ingest drops what a device sent after CertNotAfter.
	CertNotAfter time.Time
	CertSerial   string
}

var (
	productRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	serialRE  = regexp.MustCompile(`^[0-9A-Fa-f:]{1,128}$`)
)

func (d Device) validate() error {
	var errs []error
	if !telemetry.ValidDeviceID(d.ID) {
		errs = append(errs, errors.New("id: must be 64 lower-case hex digits"))
	}
	if !productRE.MatchString(d.Product) {
		errs = append(errs, errors.New("product: must be 1 to 64 letters, digits, '_', '.' or '-'"))
	}
	if d.CertNotAfter.IsZero() {
		errs = append(errs, errors.New("cert_not_after: required"))
	}
	if !serialRE.MatchString(d.CertSerial) {
		errs = append(errs, errors.New("cert_serial: must be 1 to 128 hex digits or ':'"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: device: %w", ErrInvalid, err)
	}
	return nil
}

// UpsertDevice records a connection of d at now: a new device is inserted with FirstSeen
// now; a known one gets LastSeen now, its product, and the certificate of this connection
// (a renewed certificate moves CertNotAfter forward). d.FirstSeen and d.LastSeen are
// ignored.
func (s *Store) UpsertDevice(ctx context.Context, d Device, now time.Time) error {
	if err := d.validate(); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO devices
			(id, product, first_seen_us, last_seen_us, cert_not_after_us, cert_serial)
			VALUES ($1, $2, $3, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET product = excluded.product, last_seen_us = excluded.last_seen_us,
				cert_not_after_us = excluded.cert_not_after_us, cert_serial = excluded.cert_serial`,
			d.ID, d.Product, us(now), us(d.CertNotAfter), d.CertSerial)
		return err
	})
}

// GetDevice returns the device id, or ErrNotFound.
func (s *Store) GetDevice(ctx context.Context, id string) (Device, error) {
	ds, err := s.Devices(ctx, []string{id})
	if err != nil {
		return Device{}, err
	}
	d, ok := ds[id]
	if !ok {
		return Device{}, fmt.Errorf("device %.16s: %w", id, ErrNotFound)
	}
	return d, nil
}

// maxDeviceLookup bounds the IDs of one Devices call (one statement's parameters).
const maxDeviceLookup = 1000

// Devices returns the known devices among ids (at most 1000), keyed by ID; unknown IDs are
// absent.
func (s *Store) Devices(ctx context.Context, ids []string) (map[string]Device, error) {
	if len(ids) > maxDeviceLookup {
		return nil, fmt.Errorf("%w: at most %d devices per lookup, not %d", ErrInvalid, maxDeviceLookup, len(ids))
	}
	out := make(map[string]Device, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		q := `SELECT id, product, first_seen_us, last_seen_us, cert_not_after_us, cert_serial FROM devices WHERE id IN (` + //nolint:gosec // G202: only constant SQL and $n placeholders are joined; every value is bound
			placeholders(1, len(ids)) + `)`
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d Device
			var first, last, notAfter int64
			if err := rows.Scan(&d.ID, &d.Product, &first, &last, &notAfter, &d.CertSerial); err != nil {
				return err
			}
			d.FirstSeen, d.LastSeen, d.CertNotAfter = fromUS(first), fromUS(last), fromUS(notAfter)
			out[d.ID] = d
		}
		return rows.Err()
	})
	return out, err
}

// DeviceFilter selects devices for ListDevices.
type DeviceFilter struct {
	// Product, when set, keeps only that product's devices.
	Product string
	// After, when set, continues past this device ID (the previous page's last): pages run
	// in ID order, which reconnecting devices do not reorder.
	After string
	// Limit is 1 to 1000; 0 means 100.
	Limit int
}

// ListDevices returns the devices f selects, by ID.
func (s *Store) ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return nil, err
	}
	q := `SELECT id, product, first_seen_us, last_seen_us, cert_not_after_us, cert_serial FROM devices WHERE id > $1`
	args := []any{f.After}
	if f.Product != "" {
		q += ` AND product = $2`
		args = append(args, f.Product)
	}
	args = append(args, limit)
	q += fmt.Sprintf(` ORDER BY id LIMIT $%d`, len(args)) //nolint:gosec // G202: only constant SQL and $n placeholders are joined; every value is bound
	var out []Device
	err = s.inReadTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d Device
			var first, last, notAfter int64
			if err := rows.Scan(&d.ID, &d.Product, &first, &last, &notAfter, &d.CertSerial); err != nil {
				return err
			}
			d.FirstSeen, d.LastSeen, d.CertNotAfter = fromUS(first), fromUS(last), fromUS(notAfter)
			out = append(out, d)
		}
		return rows.Err()
	})
	return out, err
}
