package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// The device registry is platform-wide (a device exists before any tenant claims it), so
// the platform-level devices type reaches every row; tenantDevices binds tenant_id from
// its tenantTx in every query, as the rest of the tenant-scoped types do.

const registerCols = `id, public_key_pem, registered_at, tenant_id, claimed_at, product_id, group_id, blocked, development, floors, attestation, certificate, version`

// deviceCols are what a read scans: registerCols and what the device reports (migration 13;
// written only by TenantDevices.Seen and UpdateEvents.Add, never by Update).
const deviceCols = registerCols + `, last_seen_at, update_state, update_state_at`

func scanDevice(row interface{ Scan(...any) error }) (device.Device, error) {
	var d device.Device
	var tid, pid, gid, att, cert sql.NullString
	var claimed, seen, stateAt sql.NullTime
	var floors string
	if err := row.Scan(&d.ID, &d.PublicKeyPEM, &d.RegisteredAt, &tid, &claimed, &pid, &gid, &d.Blocked, &d.Development,
		&floors, &att, &cert, &d.Version, &seen, &d.UpdateState, &stateAt); err != nil {
		return d, err
	}
	d.LastSeenAt, d.UpdateStateAt = timePtr(seen), timePtr(stateAt) // migration 13
	if cert.Valid {
		d.Certificate = new(device.Current)
		if err := json.Unmarshal([]byte(cert.String), d.Certificate); err != nil {
			return d, fmt.Errorf("device %s certificate: %w", d.ID, err)
		}
		d.Certificate.IssuedAt, d.Certificate.NotAfter = utc(d.Certificate.IssuedAt), utc(d.Certificate.NotAfter)
	}
	d.RegisteredAt, d.ClaimedAt = utc(d.RegisteredAt), timePtr(claimed)
	d.TenantID, d.ProductID, d.GroupID = tenant.ID(tid.String), product.ID(pid.String), product.GroupID(gid.String)
	if err := json.Unmarshal([]byte(floors), &d.Floors); err != nil {
		return d, fmt.Errorf("device %s floors: %w", d.ID, err)
	}
	if d.Floors == nil {
		d.Floors = map[string]uint32{}
	}
	if att.Valid {
		d.Attestation = new(device.Attestation)
		if err := json.Unmarshal([]byte(att.String), d.Attestation); err != nil {
			return d, fmt.Errorf("device %s attestation: %w", d.ID, err)
		}
		d.Attestation.At = utc(d.Attestation.At)
		if d.Attestation.Images == nil {
			d.Attestation.Images = []device.Measurement{}
		}
	}
	return d, nil
}

// deviceJSON encodes the JSON columns: nil floors as {}, no attestation as NULL, and an
// attestation's images as [] rather than null.
func deviceJSON(d device.Device) (floors string, att, cert sql.NullString, err error) {
	f := []byte("{}")
	if d.Floors != nil {
		if f, err = json.Marshal(d.Floors); err != nil {
			return "", att, cert, err
		}
	}
	if d.Attestation != nil {
		a := *d.Attestation
		a.At = utc(a.At)
		if a.Images == nil {
			a.Images = []device.Measurement{}
		}
		b, err := json.Marshal(a)
		if err != nil {
			return "", att, cert, err
		}
		att = sql.NullString{String: string(b), Valid: true}
	}
	if d.Certificate != nil {
		c := *d.Certificate
		c.IssuedAt, c.NotAfter = utc(c.IssuedAt), utc(c.NotAfter)
		b, err := json.Marshal(c)
		if err != nil {
			return "", att, cert, err
		}
		cert = sql.NullString{String: string(b), Valid: true}
	}
	return string(f), att, cert, nil
}

// fleetArgs are the values of the columns that migration 10 copies out of the attestation
// for fleet queries, in the order running_os_target, running_os_version,
// running_app_target, running_app_version, attested_at, refusal. What the device runs
// changes only with a successful attestation: after any other, the running values are
// NULL, and the writes keep the stored ones (COALESCE), so they stay those of the last
// successful attestation.
func fleetArgs(d device.Device) []any {
	args := make([]any, 0, 6)
	if r, ok := d.Attestation.Running(); ok {
		args = append(args, r.OSTarget, r.OSVersion, r.AppTarget, r.AppVersion)
	} else {
		args = append(args, sql.NullString{}, sql.NullString{}, sql.NullString{}, sql.NullString{})
	}
	if a := d.Attestation; a != nil {
		return append(args, sql.NullTime{Time: utc(a.At), Valid: true}, a.Refusal)
	}
	return append(args, sql.NullTime{}, "")
}

// nullString stores an empty string as NULL (an unclaimed device's tenant, an ungrouped
// device's product and group: NULL keeps the foreign key to device_groups unchecked).
func nullString[S ~string](s S) sql.NullString {
	return sql.NullString{String: string(s), Valid: s != ""}
}

type devices struct{ t *tx }

// Register stores the device unclaimed and at version 1, whatever d says about its tenant,
// group or version: only Claim puts a device into a tenant.
func (s devices) Register(ctx context.Context, d device.Device) error {
	floors, att, cert, err := deviceJSON(d)
	if err != nil {
		return err
	}
	args := append([]any{d.ID, d.PublicKeyPEM, utc(d.RegisteredAt), d.Blocked, d.Development, floors, att, cert}, fleetArgs(d)...)
	_, err = s.t.exec(ctx, `INSERT INTO devices (`+registerCols+`, `+fleetCols+`)
		VALUES ($1, $2, $3, NULL, NULL, NULL, NULL, $4, $5, $6, $7, $8, 1,
		COALESCE($9, ''), COALESCE($10, ''), COALESCE($11, ''), COALESCE($12, ''), $13, $14)`, args...)
	return err
}

func (s devices) Get(ctx context.Context, id device.ID) (device.Device, error) {
	d, err := scanDevice(s.t.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	return d, oneRow(err)
}

// Claim is one conditional UPDATE, so that of two tenants claiming a device at once exactly
// one changes the row; the loser's statement matches nothing (PostgreSQL re-checks the
// WHERE clause against the winner's committed row), and a read says why.
func (s devices) Claim(ctx context.Context, id device.ID, t tenant.ID, at time.Time) (device.Device, error) {
	if t == "" {
		return device.Device{}, store.ErrNoTenant
	}
	r, err := s.t.exec(ctx, `UPDATE devices SET tenant_id = $1, claimed_at = $2, version = version + 1
		WHERE id = $3 AND tenant_id IS NULL`, t, utc(at), id)
	if err != nil {
		return device.Device{}, err
	}
	if err := affected(r); err != nil && !errors.Is(err, store.ErrNotFound) {
		return device.Device{}, err
	}
	d, err := s.Get(ctx, id)
	switch {
	case err != nil:
		return device.Device{}, err
	case d.TenantID != t:
		return device.Device{}, fmt.Errorf("device %s is claimed by another tenant: %w", id, store.ErrConflict)
	}
	return d, nil
}

// fleetCols are the columns of fleetArgs (migration 10).
const fleetCols = `running_os_target, running_os_version, running_app_target, running_app_version, attested_at, refusal`

// deviceSet is the UPDATE of a device's changeable columns, $1 to $14 (deviceSetArgs);
// identity, registration and tenant (tenant_id, claimed_at) are never written by Update.
const deviceSet = `UPDATE devices SET product_id = $1, group_id = $2, blocked = $3, development = $4, floors = $5,
	attestation = $6, certificate = $7, version = $8,
	running_os_target = COALESCE($9, running_os_target), running_os_version = COALESCE($10, running_os_version),
	running_app_target = COALESCE($11, running_app_target), running_app_version = COALESCE($12, running_app_version),
	attested_at = $13, refusal = $14, ` + sinceSet

// deviceSetArgs returns the arguments of deviceSet followed by where.
func deviceSetArgs(d device.Device, where ...any) ([]any, error) {
	floors, att, cert, err := deviceJSON(d)
	if err != nil {
		return nil, err
	}
	args := append([]any{nullString(d.ProductID), nullString(d.GroupID), d.Blocked, d.Development, floors, att, cert, d.Version},
		fleetArgs(d)...)
	return append(args, where...), nil
}

func (s devices) Update(ctx context.Context, d device.Device) error {
	args, err := deviceSetArgs(d, d.ID, d.Version-1)
	if err != nil {
		return err
	}
	r, err := s.t.exec(ctx, deviceSet+` WHERE id = $15 AND version = $16`, args...)
	if err != nil {
		return err
	}
	return s.t.versioned(ctx, r, `SELECT count(*) FROM devices WHERE id = $1`, d.ID)
}

// Attested writes an attestation's outcome (store.Devices.Attested) with one of the
// statements attestedSQL built: floors, attestation, certificate, version and attested_at
// always (only attested_at is indexed, and it always changes); refusal when it differs
// from prev's; the running columns and their times when a successful attestation shows
// other images than prev's successful one (after any other, the stored running columns are
// not known here, and are written, as Update does); last_seen_at when seen is given.
func (s devices) Attested(ctx context.Context, prev, d device.Device, seen *time.Time) error {
	if d.ID != prev.ID || d.Version != prev.Version+1 || d.TenantID != prev.TenantID || d.ProductID != prev.ProductID ||
		d.GroupID != prev.GroupID || d.Blocked != prev.Blocked || d.Development != prev.Development || d.Attestation == nil {
		return fmt.Errorf("device %s: an attestation changes only floors, attestation and certificate", d.ID)
	}
	floors, att, cert, err := deviceJSON(d)
	if err != nil {
		return err
	}
	var shape int
	args := make([]any, 0, 13)
	args = append(args, floors, att, cert, d.Version, utc(d.Attestation.At))
	var was string
	if prev.Attestation != nil {
		was = prev.Attestation.Refusal
	}
	if d.Attestation.Refusal != was {
		shape |= attestedRefusal
		args = append(args, d.Attestation.Refusal)
	}
	if r, ok := d.Attestation.Running(); ok {
		if p, pok := prev.Attestation.Running(); !pok || p != r {
			shape |= attestedRunning
			args = append(args, r.OSTarget, r.OSVersion, r.AppTarget, r.AppVersion)
		}
	}
	if seen != nil {
		shape |= attestedSeen
		args = append(args, utc(*seen).Truncate(time.Microsecond))
	}
	args = append(args, d.ID, prev.Version)
	r, err := s.t.exec(ctx, attestedSQL[shape], args...)
	if err != nil {
		return err
	}
	return s.t.versioned(ctx, r, `SELECT count(*) FROM devices WHERE id = $1`, d.ID)
}

// The parts of an Attested statement beyond the columns it always writes.
const (
	attestedRefusal = 1 << iota
	attestedRunning
	attestedSeen
)

// attestedSQL is Attested's statement for each combination of its parts, made once. The
// running times follow sinceSet: a version's time starts at the attestation that first
// shows it.
var attestedSQL = func() (qs [1 << 3]string) {
	for shape := range qs {
		var b strings.Builder
		n := 5
		arg := func() string { n++; return "$" + strconv.Itoa(n) }
		b.WriteString(`UPDATE devices SET floors = $1, attestation = $2, certificate = $3, version = $4, attested_at = $5`)
		if shape&attestedRefusal != 0 {
			b.WriteString(`, refusal = ` + arg())
		}
		if shape&attestedRunning != 0 {
			ot, ov, at, av := arg(), arg(), arg(), arg()
			b.WriteString(`, running_os_target = ` + ot + `, running_os_version = ` + ov +
				`, running_app_target = ` + at + `, running_app_version = ` + av +
				`, running_os_since = CASE WHEN ` + ot + ` = running_os_target AND ` + ov + ` = running_os_version THEN running_os_since ELSE $5 END` +
				`, running_app_since = CASE WHEN ` + at + ` = running_app_target AND ` + av + ` = running_app_version THEN running_app_since ELSE $5 END`)
		}
		if shape&attestedSeen != 0 {
			seen := arg()
			b.WriteString(`, last_seen_at = CASE WHEN last_seen_at > ` + seen + ` THEN last_seen_at ELSE ` + seen + ` END`)
		}
		id := arg()
		b.WriteString(` WHERE id = ` + id + ` AND version = ` + arg())
		qs[shape] = b.String()
	}
	return qs
}()

type tenantDevices struct{ t *tenantTx }

func (s tenantDevices) Get(ctx context.Context, id device.ID) (device.Device, error) {
	d, err := scanDevice(s.t.tx.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE tenant_id = $1 AND id = $2`, s.t.id, id))
	return d, oneRow(err)
}

func (s tenantDevices) List(ctx context.Context, f device.Filter, p store.Page) ([]device.Device, error) {
	cond, args, err := deviceFilter(f, s.t.id, p.After)
	if err != nil {
		return nil, err
	}
	args = append(args, limit(p))
	q := `SELECT ` + deviceCols + ` FROM devices WHERE tenant_id = $1 AND id > $2` + cond +
		` ORDER BY id LIMIT $` + strconv.Itoa(len(args))
	return queryList(ctx, s.t.tx, scanDevice, q, args...)
}

func (s tenantDevices) Update(ctx context.Context, d device.Device) error {
	args, err := deviceSetArgs(d, s.t.id, d.ID, d.Version-1)
	if err != nil {
		return err
	}
	r, err := s.t.tx.exec(ctx, deviceSet+` WHERE tenant_id = $15 AND id = $16 AND version = $17`, args...)
	if err != nil {
		return err
	}
	return s.t.tx.versioned(ctx, r, `SELECT count(*) FROM devices WHERE tenant_id = $1 AND id = $2`, s.t.id, d.ID)
}

func (s tenantDevices) CountInGroup(ctx context.Context, pid product.ID, gid product.GroupID) (int, error) {
	var n int
	err := s.t.tx.queryRow(ctx, `SELECT count(*) FROM devices WHERE tenant_id = $1 AND product_id = $2 AND group_id = $3`,
		s.t.id, pid, gid).Scan(&n)
	return n, err
}

type platformCA struct{ t *tx }

func (s platformCA) Put(ctx context.Context, certPEM string, at time.Time) error {
	_, err := s.t.exec(ctx, `INSERT INTO platform_ca (id, certificate_pem, updated_at) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET certificate_pem = excluded.certificate_pem, updated_at = excluded.updated_at`,
		certPEM, utc(at))
	return err
}

func (s platformCA) Get(ctx context.Context) (string, error) {
	var pem string
	err := s.t.queryRow(ctx, `SELECT certificate_pem FROM platform_ca WHERE id = 1`).Scan(&pem)
	return pem, oneRow(err)
}

const caCols = `tenant_id, id, state, created_at, csr_pem, certificate_pem, activated_at, retire_at, wrapped_key, version`

func scanCA(row interface{ Scan(...any) error }) (device.CA, error) {
	var c device.CA
	var activated, retire sql.NullTime
	err := row.Scan(&c.TenantID, &c.ID, &c.State, &c.CreatedAt, &c.CSRPEM, &c.CertificatePEM, &activated, &retire, &c.WrappedKey, &c.Version)
	c.CreatedAt, c.ActivatedAt, c.RetireAt = utc(c.CreatedAt), timePtr(activated), timePtr(retire)
	return c, err
}

// nonNilBytes keeps an empty key from becoming NULL.
func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// PendingCAs reads every tenant's CAs: the platform root certifies them all.
func (t *tx) PendingCAs(ctx context.Context) ([]device.CA, error) {
	return queryList(ctx, t, scanCA,
		`SELECT `+caCols+` FROM device_cas WHERE state = $1 ORDER BY created_at, tenant_id, id`, device.CAPending)
}

type deviceCAs struct{ t *tenantTx }

// Create stores the CA at version 1 in the TenantTx's tenant.
func (s deviceCAs) Create(ctx context.Context, c device.CA) error {
	_, err := s.t.tx.exec(ctx, `INSERT INTO device_cas (`+caCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)`,
		s.t.id, c.ID, c.State, utc(c.CreatedAt), c.CSRPEM, c.CertificatePEM, nullTime(c.ActivatedAt), nullTime(c.RetireAt),
		nonNilBytes(c.WrappedKey))
	return err
}

func (s deviceCAs) Get(ctx context.Context, id string) (device.CA, error) {
	c, err := scanCA(s.t.tx.queryRow(ctx, `SELECT `+caCols+` FROM device_cas WHERE tenant_id = $1 AND id = $2`, s.t.id, id))
	return c, oneRow(err)
}

func (s deviceCAs) List(ctx context.Context) ([]device.CA, error) {
	return queryList(ctx, s.t.tx, scanCA, `SELECT `+caCols+` FROM device_cas WHERE tenant_id = $1 ORDER BY created_at, id`, s.t.id)
}

// Update writes what changes over a CA's life (state, certificate, times, the wrapped key
// when the key-encryption key rotates); its creation time and request stay.
func (s deviceCAs) Update(ctx context.Context, c device.CA) error {
	r, err := s.t.tx.exec(ctx, `UPDATE device_cas SET state = $1, certificate_pem = $2, activated_at = $3, retire_at = $4, wrapped_key = $5, version = $6
		WHERE tenant_id = $7 AND id = $8 AND version = $9`,
		c.State, c.CertificatePEM, nullTime(c.ActivatedAt), nullTime(c.RetireAt), nonNilBytes(c.WrappedKey), c.Version, s.t.id, c.ID, c.Version-1)
	if err != nil {
		return err
	}
	return s.t.tx.versioned(ctx, r, `SELECT count(*) FROM device_cas WHERE tenant_id = $1 AND id = $2`, s.t.id, c.ID)
}

type certificates struct{ t *tenantTx }

const certCols = `serial, tenant_id, device_id, ca_id, product_id, group_id, images, issued_at, not_after`

func scanCertificate(row interface{ Scan(...any) error }) (device.Certificate, error) {
	var c device.Certificate
	var images string
	if err := row.Scan(&c.Serial, &c.TenantID, &c.DeviceID, &c.CAID, &c.ProductID, &c.GroupID, &images, &c.IssuedAt, &c.NotAfter); err != nil {
		return c, err
	}
	c.IssuedAt, c.NotAfter = utc(c.IssuedAt), utc(c.NotAfter)
	if err := json.Unmarshal([]byte(images), &c.Images); err != nil {
		return c, fmt.Errorf("certificate %s images: %w", c.Serial, err)
	}
	if c.Images == nil {
		c.Images = []device.Measurement{}
	}
	return c, nil
}

// Record stores the certificate in the TenantTx's tenant; the serial is the primary key,
// so a serial any tenant used is ErrConflict.
func (s certificates) Record(ctx context.Context, c device.Certificate) error {
	images := c.Images
	if images == nil {
		images = []device.Measurement{}
	}
	b, err := json.Marshal(images)
	if err != nil {
		return err
	}
	_, err = s.t.tx.exec(ctx, `INSERT INTO device_certificates (`+certCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		c.Serial, s.t.id, c.DeviceID, c.CAID, c.ProductID, c.GroupID, string(b), utc(c.IssuedAt), utc(c.NotAfter))
	return err
}

func (s certificates) Get(ctx context.Context, serial string) (device.Certificate, error) {
	c, err := scanCertificate(s.t.tx.queryRow(ctx,
		`SELECT `+certCols+` FROM device_certificates WHERE tenant_id = $1 AND serial = $2`, s.t.id, serial))
	return c, oneRow(err)
}

func (s certificates) ListForDevice(ctx context.Context, id device.ID, n int) ([]device.Certificate, error) {
	return queryList(ctx, s.t.tx, scanCertificate,
		`SELECT `+certCols+` FROM device_certificates WHERE tenant_id = $1 AND device_id = $2
		ORDER BY issued_at DESC, serial DESC LIMIT $3`, s.t.id, id, limit(store.Page{Limit: n}))
}

type deployments struct{ t *tenantTx }

const deploymentCols = `id, tenant_id, product_id, group_id, target, sha256, created_at, created_by, reverts, rollout, ignore_window`

func scanDeployment(row interface{ Scan(...any) error }) (device.Deployment, error) {
	var d device.Deployment
	var reverts, rollout sql.NullString
	err := row.Scan(&d.ID, &d.TenantID, &d.ProductID, &d.GroupID, &d.Target, &d.SHA256, &d.CreatedAt, &d.CreatedBy, &reverts, &rollout, &d.IgnoreWindow)
	if err != nil {
		return d, err
	}
	d.CreatedAt, d.Reverts = utc(d.CreatedAt), reverts.String
	if rollout.Valid {
		d.Rollout = new(device.Rollout)
		if err := json.Unmarshal([]byte(rollout.String), d.Rollout); err != nil {
			return d, fmt.Errorf("deployment %s: rollout: %w", d.ID, err)
		}
	}
	return d, nil
}

// rolloutColumns are the stored forms of d's rollout: its JSON, state and version, all NULL
// without one.
func rolloutColumns(d device.Deployment) (rollout, state sql.NullString, version sql.NullInt64, err error) {
	if d.Rollout == nil {
		return rollout, state, version, nil
	}
	b, err := json.Marshal(d.Rollout)
	if err != nil {
		return rollout, state, version, err
	}
	return sql.NullString{String: string(b), Valid: true}, sql.NullString{String: string(d.Rollout.State), Valid: true},
		sql.NullInt64{Int64: d.Rollout.Version, Valid: true}, nil
}

// Create stores the deployment in the TenantTx's tenant; the foreign key to device_groups
// (tenant_id first) refuses a group that is not the tenant's.
func (s deployments) Create(ctx context.Context, d device.Deployment) error {
	rollout, state, version, err := rolloutColumns(d)
	if err != nil {
		return err
	}
	_, err = s.t.tx.exec(ctx, `INSERT INTO deployments (`+deploymentCols+`, rollout_state, rollout_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		d.ID, s.t.id, d.ProductID, d.GroupID, d.Target, d.SHA256, utc(d.CreatedAt), d.CreatedBy,
		sql.NullString{String: d.Reverts, Valid: d.Reverts != ""}, rollout, d.IgnoreWindow, state, version)
	return err
}

func (s deployments) Get(ctx context.Context, pid product.ID, gid product.GroupID, id string) (device.Deployment, error) {
	d, err := scanDeployment(s.t.tx.queryRow(ctx, `SELECT `+deploymentCols+` FROM deployments
		WHERE tenant_id = $1 AND product_id = $2 AND group_id = $3 AND id = $4`, s.t.id, pid, gid, id))
	return d, oneRow(err)
}

func (s deployments) Current(ctx context.Context, pid product.ID, gid product.GroupID) (device.Deployment, error) {
	d, err := scanDeployment(s.t.tx.queryRow(ctx, `SELECT `+deploymentCols+` FROM deployments
		WHERE tenant_id = $1 AND product_id = $2 AND group_id = $3 ORDER BY created_at DESC, id DESC LIMIT 1`, s.t.id, pid, gid))
	return d, oneRow(err)
}

// List pages newest first by ID (identifiers ascend with their creation time): After is the
// last ID of the previous page, and the next page holds older deployments.
func (s deployments) List(ctx context.Context, pid product.ID, gid product.GroupID, p store.Page) ([]device.Deployment, error) {
	q := `SELECT ` + deploymentCols + ` FROM deployments WHERE tenant_id = $1 AND product_id = $2 AND group_id = $3`
	args := []any{s.t.id, pid, gid}
	if p.After != "" {
		args = append(args, p.After)
		q += ` AND id < $` + strconv.Itoa(len(args))
	}
	args = append(args, limit(p))
	q += ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	return queryList(ctx, s.t.tx, scanDeployment, q, args...)
}
