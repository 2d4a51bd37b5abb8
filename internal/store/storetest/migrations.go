package storetest

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
)

// CheckMigrations fails the test unless db's schema_migrations records every migration file
// matching glob exactly once, in order, under the version its name starts with (several
// branches each add a numbered migration, so a branch may hold 0010 without 0009).
func CheckMigrations(t *testing.T, db *sql.DB, glob string) {
	t.Helper()
	type applied struct {
		Version int
		Name    string
	}
	rows, err := db.QueryContext(t.Context(), `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []applied
	for rows.Next() {
		var a applied
		if err := rows.Scan(&a.Version, &a.Name); err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files %s: %v, %v", glob, files, err)
	}
	var want []applied
	for _, f := range files {
		v, err := strconv.Atoi(strings.SplitN(filepath.Base(f), "_", 2)[0])
		if err != nil {
			t.Fatalf("migration file %s: name must be NNNN_name.sql", f)
		}
		want = append(want, applied{v, filepath.Base(f)})
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("schema_migrations mismatch (-want +got):\n%s", d)
	}
}

// MigrationsBelow returns the migration files in dir (NNNN_name.sql) numbered below
// version: the schema an older release left, for tests of a later migration.
func MigrationsBelow(t *testing.T, dir string, version int) fs.FS {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files in %s: %v, %v", dir, files, err)
	}
	out := fstest.MapFS{}
	for _, f := range files {
		v, err := strconv.Atoi(strings.SplitN(filepath.Base(f), "_", 2)[0])
		if err != nil {
			t.Fatalf("migration file %s: name must be NNNN_name.sql", f)
		}
		if v >= version {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = &fstest.MapFile{Data: b}
	}
	return out
}

// CheckFleetBackfill attacks migration 10 with rows an older release wrote: devices and
// error reports whose attestation, certificates and report bodies exist only as JSON text.
// older opens a fresh database migrated below version 10 and returns it as a store, and a
// function that closes it, migrates it fully and returns the new store. Afterwards the
// fleet queries must see every old row as if the current store had written it.
func CheckFleetBackfill(t *testing.T, older func(t *testing.T) (store.Store, *sql.DB, func() store.Store)) {
	t.Helper()
	old, db, migrate := older(t)
	h := newHarness(t, old)
	a := h.tenant("A")
	p, g := legacyProductAndGroup(h, db, a.ID)
	ctx := t.Context()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("schema 9: %s ... = %v", strings.Join(strings.Fields(q)[:3], " "), err)
		}
	}
	// Rows as sqldb wrote them before migration 10: JSON with UTC times.
	jsonOf := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	insertDevice := func(grouped bool, att *device.Attestation) device.Device {
		d := h.newDevice()
		d.TenantID, d.Version = a.ID, 3
		claimed := h.tick().UTC()
		d.ClaimedAt = &claimed
		pid, gid := sql.NullString{}, sql.NullString{}
		if grouped {
			d.ProductID, d.GroupID = p.ID, g.ID
			pid, gid = sql.NullString{String: string(p.ID), Valid: true}, sql.NullString{String: string(g.ID), Valid: true}
		}
		attJSON := sql.NullString{}
		if att != nil {
			att.At = att.At.UTC()
			d.Attestation = att
			seen := att.At // migration 13: last seen is the last attestation
			d.LastSeenAt = &seen
			attJSON = sql.NullString{String: jsonOf(att), Valid: true}
		}
		exec(`INSERT INTO devices (id, public_key_pem, registered_at, tenant_id, claimed_at, product_id, group_id,
			blocked, development, floors, attestation, certificate, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, 3)`,
			d.ID, d.PublicKeyPEM, d.RegisteredAt.UTC(), a.ID, claimed, pid, gid, false, false, "{}", attJSON)
		return d
	}
	insertCert := func(d device.Device, images ...device.Measurement) {
		at := h.tick().UTC()
		exec(`INSERT INTO device_certificates (serial, tenant_id, device_id, ca_id, product_id, group_id, images, issued_at, not_after)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			fmt.Sprintf("%x", at.UnixNano()), a.ID, d.ID, "dca_1", p.ID, g.ID, jsonOf(images), at, at.Add(24*time.Hour))
	}
	wholeSecond := h.tick().Truncate(time.Second) // a time whose JSON has no fraction
	ok := insertDevice(true, &device.Attestation{At: wholeSecond, Serial: "01", Images: []device.Measurement{osA, appX}})
	insertCert(ok, osA, appX)
	// Refused now; the newest certificate, not the older one, is its last success.
	refused := insertDevice(true, nil)
	insertCert(refused, osB, appX)
	insertCert(refused, osA, appY)
	refused = func() device.Device {
		att := &device.Attestation{At: h.tick(), Refusal: device.RefusedBelowFloor, Detail: "apps/dishwasher 1 < 2", Images: []device.Measurement{osB, appX}}
		att.At = att.At.UTC()
		exec(`UPDATE devices SET attestation = $1 WHERE id = $2`, jsonOf(att), refused.ID)
		refused.Attestation = att
		seen := att.At
		refused.LastSeenAt = &seen
		return refused
	}()
	never := insertDevice(true, nil)
	neverOK := insertDevice(false, &device.Attestation{At: h.tick(), Refusal: device.RefusedNoGroup, Images: []device.Measurement{osA}})
	osOnly := insertDevice(false, &device.Attestation{At: h.tick(), Serial: "02", Images: []device.Measurement{osB}})

	since := h.tick()
	crash := h.newReport(errreport.AppCrash)
	agent := h.newReport(errreport.Agent)
	for _, r := range []errreport.Report{crash, agent} {
		exec(`INSERT INTO error_reports (tenant_id, device_id, id, kind, at, received_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			a.ID, ok.ID, r.ID, r.Kind, r.At.UTC(), h.tick().UTC(), jsonOf(r))
	}

	clock := h.clock
	h = newHarness(t, migrate())
	h.clock = clock

	counts, err := h.countRunning(a.ID, device.Filter{}, 0)
	wantEqual(t, "Devices().CountRunning after migration 10", counts, err, []store.RunningCount{
		{Running: device.Running{}, Devices: 1},
		{Running: running(osB), Devices: 1},
		{ProductID: p.ID, GroupID: g.ID, Running: device.Running{}, Devices: 1},
		{ProductID: p.ID, GroupID: g.ID, Running: running(osA, appX), Devices: 1},
		{ProductID: p.ID, GroupID: g.ID, Running: running(osA, appY), Devices: 1},
	})
	for _, c := range []struct {
		f    device.Filter
		want []device.Device
	}{
		{device.Filter{Outcome: device.OutcomeOK}, []device.Device{ok, osOnly}},
		{device.Filter{Outcome: device.RefusedBelowFloor}, []device.Device{refused}},
		{device.Filter{Outcome: device.OutcomeRefused}, []device.Device{refused, neverOK}},
		{device.Filter{Outcome: device.OutcomeNever}, []device.Device{never}},
		{device.Filter{AppTarget: appY.Path}, []device.Device{refused}},
		// attested_at compares with bound times exactly (SQLite compares the text).
		{device.Filter{AttestedBefore: wholeSecond}, []device.Device{}},
		{device.Filter{AttestedBefore: wholeSecond.Add(time.Microsecond)}, []device.Device{ok}},
		{device.Filter{AttestedBefore: neverOK.Attestation.At}, []device.Device{ok, refused}},
		{device.Filter{AttestedBefore: neverOK.Attestation.At.Add(time.Microsecond)}, []device.Device{ok, refused, neverOK}},
	} {
		list, err := h.listDevices(a.ID, c.f, store.Page{})
		wantEqual(t, fmt.Sprintf("Devices().List(%+v) after migration 10", c.f), list, err, sortedByID(c.want))
	}
	reports, err := h.countReports(a.ID, since, 0)
	wantEqual(t, "ErrorReports().CountByImage after migration 10", reports, err, []store.ReportCount{
		{Kind: errreport.Agent, Reports: 1},
		{ImagePath: crash.ImagePath, ImageVersion: crash.ImageVersion, Kind: errreport.AppCrash, Reports: 1},
	})

	// The store keeps the backfilled rows in step: a refusal keeps what the device runs.
	ok.Attestation = &device.Attestation{At: h.tick(), Refusal: device.RefusedRevokedImage, Images: []device.Measurement{osB, appY}}
	ok.Version++
	h.must("Devices().Update(refusal) after migration 10", func(tx store.Tx) error { return tx.Devices().Update(h.ctx(), ok) })
	list, err := h.listDevices(a.ID, device.Filter{AppTarget: appX.Path, Outcome: device.RefusedRevokedImage}, store.Page{})
	wantEqual(t, "Devices().List(appX, revoked_image) after a refusal", list, err, sortedByID([]device.Device{ok}))
}

func sortedByID(ds []device.Device) []device.Device {
	out := slices.Clone(ds)
	slices.SortFunc(out, func(a, b device.Device) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}
