package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// The report-insight cases (issue 11, migration 16): the tenant-wide report list that the
// list and the download page through, and the figures of version health.
var reportInsightTests = []test{
	{"ListTenantNewestFirstFiltersAndPages", testListTenant},
	{"ListTenantSeesOnlyItsTenant", testListTenantIsolation},
	{"VersionFiguresKnownFigures", testVersionFiguresKnown},
	{"VersionFiguresSinceFollowsAttestation", testVersionFiguresSince},
	{"VersionFiguresOSCountsCrashesSinceRunning", testVersionFiguresOS},
	{"VersionFiguresRefusesUnknownKind", testVersionFiguresKind},
}

func (h *harness) listTenant(tid tenant.ID, f store.ReportFilter, after store.ReportCursor, n int) ([]store.TenantReport, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]store.TenantReport, error) {
		return tt.ErrorReports().ListTenant(ctx, f, after, n)
	})
}

func (h *harness) figures(tid tenant.ID, q store.FiguresQuery) ([]store.VersionFigures, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]store.VersionFigures, error) {
		return tt.ErrorReports().VersionFigures(ctx, q)
	})
}

// tenantReport is what ListTenant returns for a report added with mustAddReport.
func tenantReport(d device.Device, rec errreport.Record) store.TenantReport {
	return store.TenantReport{DeviceID: d.ID, ProductID: d.ProductID, GroupID: d.GroupID, ReceivedAt: rec.ReceivedAt.UTC(), Report: rec.Report}
}

func testListTenant(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	g1, g2, gq := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Beta"), h.group(a.ID, q.ID, "Production")
	d1, d2, d3, d4 := h.placed(a.ID, g1), h.placed(a.ID, g2), h.placed(a.ID, gq), h.claimed(a.ID)

	// Newest first: want is built oldest first and reversed. Two reports of two devices
	// and two of one device share a receive time, so the order must break ties by device
	// and ID.
	var all []store.TenantReport
	add := func(d device.Device, kind errreport.Kind, at time.Time) {
		all = append(all, tenantReport(d, h.mustAddReport(a.ID, d.ID, h.newReport(kind), at)))
	}
	add(d1, errreport.AppCrash, h.tick())
	add(d2, errreport.UpdateFailed, h.tick())
	same := h.tick()
	add(d3, errreport.AppCrash, same)
	add(d4, errreport.Agent, same)
	add(d1, errreport.CapabilityDenied, same)
	add(d1, errreport.AppCrash, same)
	cutoff := h.tick()
	add(d2, errreport.AppCrash, h.tick())
	add(d4, errreport.AttestationRefused, h.tick())
	slices.SortStableFunc(all, func(x, y store.TenantReport) int {
		switch {
		case !x.ReceivedAt.Equal(y.ReceivedAt):
			return -x.ReceivedAt.Compare(y.ReceivedAt)
		case x.DeviceID != y.DeviceID:
			return -cmpString(string(x.DeviceID), string(y.DeviceID))
		}
		return -cmpString(x.Report.ID, y.Report.ID)
	})
	pick := func(keep func(store.TenantReport) bool) []store.TenantReport {
		out := []store.TenantReport{}
		for _, r := range all {
			if keep(r) {
				out = append(out, r)
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    store.ReportFilter
		want []store.TenantReport
	}{
		{"all", store.ReportFilter{}, all},
		{"product", store.ReportFilter{ProductID: p.ID}, pick(func(r store.TenantReport) bool { return r.ProductID == p.ID })},
		{"group", store.ReportFilter{ProductID: p.ID, GroupID: g2.ID}, pick(func(r store.TenantReport) bool { return r.GroupID == g2.ID })},
		{"device", store.ReportFilter{DeviceID: d1.ID}, pick(func(r store.TenantReport) bool { return r.DeviceID == d1.ID })},
		{"kind", store.ReportFilter{Kind: errreport.AppCrash}, pick(func(r store.TenantReport) bool { return r.Report.Kind == errreport.AppCrash })},
		{"image", store.ReportFilter{ImagePath: "apps/dw100-app/1.0.0", ImageVersion: "1.0.0"},
			pick(func(r store.TenantReport) bool { return r.Report.ImagePath == "apps/dw100-app/1.0.0" })},
		{"since", store.ReportFilter{Since: cutoff}, pick(func(r store.TenantReport) bool { return !r.ReceivedAt.Before(cutoff) })},
		{"until", store.ReportFilter{Until: cutoff}, pick(func(r store.TenantReport) bool { return r.ReceivedAt.Before(cutoff) })},
		{"since same", store.ReportFilter{Since: same, Until: same.Add(time.Microsecond)},
			pick(func(r store.TenantReport) bool { return r.ReceivedAt.Equal(same) })},
		{"nothing", store.ReportFilter{Kind: errreport.Kind("nope")}, []store.TenantReport{}},
	} {
		got, err := h.listTenant(a.ID, c.f, store.ReportCursor{}, 0)
		wantEqual(h.t, "ListTenant("+c.name+")", got, err, c.want)

		// Pages of two, each after the last one's cursor, make the same list.
		var paged []store.TenantReport
		var after store.ReportCursor
		for range len(all) + 2 {
			page, err := h.listTenant(a.ID, c.f, after, 2)
			if err != nil {
				h.t.Fatalf("ListTenant(%s, after %+v) = %v", c.name, after, err)
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1].Cursor()
		}
		if paged == nil {
			paged = []store.TenantReport{}
		}
		wantEqual(h.t, "ListTenant("+c.name+") in pages of 2", paged, nil, c.want)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testListTenantIsolation(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	da, db := h.claimed(a.ID), h.claimed(b.ID)
	want := []store.TenantReport{tenantReport(da, h.mustAddReport(a.ID, da.ID, h.newReport(errreport.Agent), h.tick()))}
	h.mustAddReport(b.ID, db.ID, h.newReport(errreport.AppCrash), h.tick())
	got, err := h.listTenant(a.ID, store.ReportFilter{}, store.ReportCursor{}, 0)
	wantEqual(h.t, "ListTenant(A)", got, err, want)
	got, err = h.listTenant(a.ID, store.ReportFilter{DeviceID: db.ID}, store.ReportCursor{}, 0)
	wantEmpty(h.t, "ListTenant(A, B's device)", got, err)
	figs, err := h.figures(a.ID, store.FiguresQuery{Kind: "app", From: h.clock.Add(-time.Hour), Until: h.tick()})
	wantEmpty(h.t, "VersionFigures(A) with only B's crashes", figs, err)
}

// attestAt records a successful attestation at a given time.
func (h *harness) attestAt(d device.Device, at time.Time, images ...device.Measurement) device.Device {
	h.t.Helper()
	d.Attestation = &device.Attestation{At: at, Images: append([]device.Measurement{}, images...), Serial: fmt.Sprintf("%x", at.UnixNano())}
	d.Version++
	h.must("Devices().Update(attestation)", func(tx store.Tx) error { return tx.Devices().Update(h.ctx(), d) })
	return d
}

// crash is an app_crash report of the image m.
func (h *harness) crash(m device.Measurement) errreport.Report {
	r := h.newReport(errreport.AppCrash)
	r.ImagePath, r.ImageVersion = m.Path, m.Version
	return r
}

// testVersionFiguresKnown: four devices run appX for ten hours each within the window, one
// of them crashed once: 40 device-hours, one crashed device of four, one crash.
func testVersionFiguresKnown(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	start := h.tick().Truncate(time.Second)
	end := start.Add(10 * time.Hour)
	var ds []device.Device
	for range 4 {
		// Attested at start and again at the end with the same images: the version's
		// time stays at start, the last contact moves to the end.
		ds = append(ds, h.attestAt(h.attestAt(h.placed(a.ID, g), start, osA, appX), end, osA, appX))
	}
	h.mustAddReport(a.ID, ds[0].ID, h.crash(appX), start.Add(time.Hour))
	// Not counted: before the window, another kind, another version.
	h.mustAddReport(a.ID, ds[1].ID, h.crash(appX), start.Add(-2*time.Hour))
	h.mustAddReport(a.ID, ds[1].ID, h.newReport(errreport.CapabilityDenied), start.Add(time.Hour))
	other := h.claimed(a.ID)
	h.mustAddReport(a.ID, other.ID, h.crash(appY), start.Add(time.Hour))

	q := store.FiguresQuery{Kind: "app", From: start.Add(-time.Hour), Until: end.Add(5 * time.Hour)}
	got, err := h.figures(a.ID, q)
	want := []store.VersionFigures{
		{Target: appX.Path, Version: appX.Version, Running: 4, CrashedRunning: 1, Crashes: 1, DeviceHours: 40},
		{Target: appY.Path, Version: appY.Version, Crashes: 1},
	}
	wantFigures(h, "VersionFigures(app)", got, err, want)

	q.ProductID = p.ID
	got, err = h.figures(a.ID, q)
	wantFigures(h, "VersionFigures(app, product)", got, err, want[:1])

	// A window that starts five hours in halves the device-hours.
	q.From = start.Add(5 * time.Hour)
	got, err = h.figures(a.ID, q)
	wantFigures(h, "VersionFigures(app, from +5h)", got, err,
		[]store.VersionFigures{{Target: appX.Path, Version: appX.Version, Running: 4, DeviceHours: 20}})
}

// wantFigures compares figures with device-hours to a microsecond.
func wantFigures(h *harness, call string, got []store.VersionFigures, err error, want []store.VersionFigures) {
	h.t.Helper()
	for i := range got {
		got[i].DeviceHours = math.Round(got[i].DeviceHours*1e6) / 1e6
	}
	if want == nil {
		want = []store.VersionFigures{}
	}
	wantEqual(h.t, call, got, err, want)
}

// testVersionFiguresSince: the version's time starts at the first successful attestation
// that shows it; a repeated one and a refused one leave it, another version restarts it.
func testVersionFiguresSince(h *harness) {
	a := h.tenant("A")
	t0 := h.tick().Truncate(time.Second)
	d := h.attestAt(h.claimed(a.ID), t0, osA, appX)
	d = h.attestAt(d, t0.Add(2*time.Hour), osA, appX)
	q := store.FiguresQuery{Kind: "app", From: t0.Add(-time.Hour), Until: t0.Add(100 * time.Hour)}
	got, err := h.figures(a.ID, q)
	wantFigures(h, "VersionFigures after two attestations of appX", got, err,
		[]store.VersionFigures{{Target: appX.Path, Version: appX.Version, Running: 1, DeviceHours: 2}})

	d.Attestation = &device.Attestation{At: t0.Add(3 * time.Hour), Refusal: device.RefusedUnknownImage, Images: []device.Measurement{osA, appY}}
	d.Version++
	h.must("Devices().Update(refused)", func(tx store.Tx) error { return tx.Devices().Update(h.ctx(), d) })
	got, err = h.figures(a.ID, q)
	wantFigures(h, "VersionFigures after a refused attestation of appY", got, err,
		[]store.VersionFigures{{Target: appX.Path, Version: appX.Version, Running: 1, DeviceHours: 3}})

	d = h.attestAt(d, t0.Add(4*time.Hour), osA, appY)
	h.attestAt(d, t0.Add(7*time.Hour), osA, appY)
	got, err = h.figures(a.ID, q)
	wantFigures(h, "VersionFigures after attesting appY", got, err,
		[]store.VersionFigures{{Target: appY.Path, Version: appY.Version, Running: 1, DeviceHours: 3}})
	q.Kind = "os"
	got, err = h.figures(a.ID, q)
	wantFigures(h, "VersionFigures(os): the OS did not change", got, err,
		[]store.VersionFigures{{Target: osA.Path, Version: osA.Version, Running: 1, DeviceHours: 7}})
}

// testVersionFiguresOS: an OS version's crashes are the app crashes of its devices since
// they run it.
func testVersionFiguresOS(h *harness) {
	a := h.tenant("A")
	t0 := h.tick().Truncate(time.Second)
	d1 := h.attestAt(h.claimed(a.ID), t0, osA, appX)
	d2 := h.attestAt(h.claimed(a.ID), t0, osA, appX)
	h.mustAddReport(a.ID, d2.ID, h.crash(appX), t0.Add(time.Hour)) // on osA: it moves to osB after
	d2 = h.attestAt(d2, t0.Add(2*time.Hour), osB, appX)
	h.attestAt(d2, t0.Add(4*time.Hour), osB, appX)
	h.mustAddReport(a.ID, d2.ID, h.crash(appX), t0.Add(3*time.Hour))
	h.mustAddReport(a.ID, d2.ID, h.crash(appX), t0.Add(3*time.Hour+time.Minute))
	h.attestAt(d1, t0.Add(4*time.Hour), osA, appX)

	got, err := h.figures(a.ID, store.FiguresQuery{Kind: "os", From: t0, Until: t0.Add(24 * time.Hour)})
	wantFigures(h, "VersionFigures(os)", got, err, []store.VersionFigures{
		{Target: osA.Path, Version: osA.Version, Running: 1, DeviceHours: 4},
		{Target: osB.Path, Version: osB.Version, Running: 1, CrashedRunning: 1, Crashes: 2, DeviceHours: 2},
	})
}

func testVersionFiguresKind(h *harness) {
	a := h.tenant("A")
	_, err := h.figures(a.ID, store.FiguresQuery{Kind: "firmware", Until: h.tick()})
	if err == nil {
		h.t.Errorf("VersionFigures(kind firmware) = nil error, want one")
	}
}

// CheckSinceBackfill attacks migration 16 with devices an older release wrote: what they
// run and when they last attested exist, when they started running it does not. older
// opens a fresh database migrated below version 16 and returns it as a store, and a
// function that closes it, migrates it fully and returns the new store. Afterwards each
// running version starts at the device's last attestation, and a device that runs no
// image of a kind has no time for it.
func CheckSinceBackfill(t *testing.T, older func(t *testing.T) (store.Store, *sql.DB, func() store.Store)) {
	t.Helper()
	old, db, migrate := older(t)
	h := newHarness(t, old)
	a := h.tenant("A")
	at := h.tick().UTC().Truncate(time.Second)
	insert := func(os, app device.Measurement, attested, seen *time.Time) device.Device {
		t.Helper()
		d := h.newDevice()
		_, err := db.ExecContext(t.Context(), `INSERT INTO devices (id, public_key_pem, registered_at, tenant_id, claimed_at, blocked, development,
			floors, version, running_os_target, running_os_version, running_app_target, running_app_version, attested_at, last_seen_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', 2, $8, $9, $10, $11, $12, $13)`,
			d.ID, d.PublicKeyPEM, d.RegisteredAt.UTC(), a.ID, at, false, false, os.Path, os.Version, app.Path, app.Version,
			nullTimeOf(attested), nullTimeOf(seen))
		if err != nil {
			t.Fatalf("schema 15: insert device = %v", err)
		}
		return d
	}
	seen := at.Add(5 * time.Hour)
	withApp := insert(osA, appX, &at, &seen)
	osOnly := insert(osB, device.Measurement{}, &at, nil)
	never := insert(device.Measurement{}, device.Measurement{}, nil, nil)

	s := migrate()
	h = newHarness(t, s)
	sq, ok := s.(interface{ SQL() *sql.DB })
	if !ok {
		t.Fatalf("store %T does not expose its database", s)
	}
	got := map[device.ID][2]*time.Time{}
	rows, err := sq.SQL().QueryContext(t.Context(), `SELECT id, running_os_since, running_app_since FROM devices WHERE tenant_id = $1`, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id device.ID
		var osSince, appSince sql.NullTime
		if err := rows.Scan(&id, &osSince, &appSince); err != nil {
			t.Fatal(err)
		}
		got[id] = [2]*time.Time{timeOf(osSince), timeOf(appSince)}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[device.ID][2]*time.Time{withApp.ID: {&at, &at}, osOnly.ID: {&at, nil}, never.ID: {nil, nil}}
	wantEqual(t, "running_os_since, running_app_since after migration 16", got, nil, want)

	figs, err := h.figures(a.ID, store.FiguresQuery{Kind: "app", From: at.Add(-time.Hour), Until: at.Add(24 * time.Hour)})
	wantFigures(h, "VersionFigures(app) after migration 16", figs, err,
		[]store.VersionFigures{{Target: appX.Path, Version: appX.Version, Running: 1, DeviceHours: 5}})
}

func nullTimeOf(t *time.Time) sql.NullTime {
	if t == nil {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: t.UTC(), Valid: true}
}

func timeOf(n sql.NullTime) *time.Time {
	if !n.Valid {
		return nil
	}
	t := n.Time.UTC()
	return &t
}
