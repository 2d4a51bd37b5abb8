package storetest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// The fleet cases check the queries the support console builds on (migration 10): what
// each device runs by its last successful attestation, filters over it, and counts.
var fleetTests = []test{
	{"RunningFollowsSuccessfulAttestationsOnly", testFleetRunning},
	{"ListFiltersByRunningAndOutcome", testFleetListFilters},
	{"ListRefusesUnknownOutcome", testFleetUnknownOutcome},
	{"CountRunningPerGroup", testFleetCountRunning},
	{"CountReportsByImageSince", testFleetCountReports},
}

// Images the fleet cases attest. Their paths differ early, in letters, so that both
// databases' collations order them alike.
var (
	osA  = device.Measurement{Kind: "os", Path: "os/moat/1.0.0", SHA256: strings.Repeat("a1", 32), Version: "1.0.0", SecurityVersion: 1}
	osB  = device.Measurement{Kind: "os", Path: "os/moat/2.0.0", SHA256: strings.Repeat("b2", 32), Version: "2.0.0", SecurityVersion: 2}
	appX = device.Measurement{Kind: "app", Path: "apps/dishwasher/1.0.0", SHA256: strings.Repeat("c3", 32), Version: "1.0.0", SecurityVersion: 1}
	appY = device.Measurement{Kind: "app", Path: "apps/dishwasher/2.0.0", SHA256: strings.Repeat("d4", 32), Version: "2.0.0", SecurityVersion: 2}
)

// running is what a device attesting images runs.
func running(images ...device.Measurement) device.Running {
	r, _ := (&device.Attestation{Images: images}).Running()
	return r
}

// attest records an attestation outcome on the tenant's device as internal/fleet does:
// through the platform-level Devices().Update. refusal "" is a success.
func (h *harness) attest(d device.Device, refusal string, images ...device.Measurement) device.Device {
	h.t.Helper()
	d.Attestation = &device.Attestation{At: h.tick(), Refusal: refusal, Images: append([]device.Measurement{}, images...)}
	if refusal == "" {
		d.Attestation.Serial = fmt.Sprintf("%x", h.tick().UnixNano())
	}
	d.Version++
	h.must("Devices().Update(attestation)", func(tx store.Tx) error { return tx.Devices().Update(h.ctx(), d) })
	return d
}

func (h *harness) countRunning(tid tenant.ID, f device.Filter, n int) ([]store.RunningCount, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]store.RunningCount, error) {
		return tt.Devices().CountRunning(ctx, f, n)
	})
}

func (h *harness) countReports(tid tenant.ID, since time.Time, n int) ([]store.ReportCount, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]store.ReportCount, error) {
		return tt.ErrorReports().CountByImage(ctx, since, n)
	})
}

func testFleetRunning(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.placed(a.ID, g)
	count := func(call string, want device.Running) {
		h.t.Helper()
		got, err := h.countRunning(a.ID, device.Filter{}, 0)
		wantEqual(h.t, call, got, err, []store.RunningCount{{ProductID: p.ID, GroupID: g.ID, Running: want, Devices: 1}})
	}
	count("CountRunning before any attestation", device.Running{})

	d = h.attest(d, "", osA, appX)
	count("CountRunning after attesting osA, appX", running(osA, appX))

	// A refused attestation names what the device claims, not what it was allowed to run.
	d = h.attest(d, device.RefusedUnknownImage, osB, appY)
	count("CountRunning after a refused attestation of osB, appY", running(osA, appX))

	// So does a write that changes something else, and one through the TenantTx.
	d.Blocked, d.Version = true, d.Version+1
	h.mustIn("Devices().Update(blocked)", a.ID, func(tt store.TenantTx) error { return tt.Devices().Update(h.ctx(), d) })
	count("CountRunning after blocking", running(osA, appX))
	d.Attestation, d.Version = nil, d.Version+1
	h.mustIn("Devices().Update(no attestation)", a.ID, func(tt store.TenantTx) error { return tt.Devices().Update(h.ctx(), d) })
	count("CountRunning after clearing the attestation", running(osA, appX))

	// A success replaces both kinds: one not measured is "".
	d = h.attest(d, "", osB)
	count("CountRunning after attesting osB alone", running(osB))
	h.attest(d, "", osB, appY)
	count("CountRunning after attesting osB, appY", running(osB, appY))
}

func testFleetListFilters(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	g, g2, gq := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development"), h.group(a.ID, q.ID, "Production")

	// Devices in ID order; the comments say how each ends up.
	var ds [7]device.Device
	ds[0] = h.attest(h.placed(a.ID, g), "", osA, appX)                                                // g: osA appX, ok
	ds[1] = h.attest(h.attest(h.placed(a.ID, g), "", osA, appY), device.RefusedBelowFloor, osA, appX) // g: osA appY, refused
	ds[2] = h.attest(h.placed(a.ID, g2), "", osB, appY)                                               // g2: osB appY, ok
	ds[3] = h.placed(a.ID, gq)                                                                        // gq: never attested
	ds[4] = h.attest(h.placed(a.ID, gq), device.RefusedNoGroup, osA)                                  // gq: refused, never succeeded
	ds[5] = h.attest(h.claimed(a.ID), "", osB)                                                        // no group: osB, no app, ok
	ds[6] = h.attest(h.placed(a.ID, g), "", osA, appX)                                                // g: osA appX, ok, attested last
	pick := func(is ...int) []device.Device {
		out := []device.Device{}
		for _, i := range is {
			out = append(out, ds[i])
		}
		return out
	}
	cutoff := ds[5].Attestation.At.Add(time.Microsecond) // after every attestation but ds[6]'s

	id := func(d device.Device) string { return string(d.ID) }
	for _, c := range []struct {
		f    device.Filter
		want []device.Device
	}{
		{device.Filter{AppTarget: appX.Path}, pick(0, 6)},
		{device.Filter{AppTarget: appY.Path}, pick(1, 2)},
		{device.Filter{AppTarget: device.NoTarget}, pick(3, 4, 5)},
		{device.Filter{OSTarget: osA.Path}, pick(0, 1, 6)},
		{device.Filter{OSTarget: osB.Path, AppTarget: device.NoTarget}, pick(5)},
		{device.Filter{OSTarget: device.NoTarget}, pick(3, 4)},
		{device.Filter{ProductID: p.ID, GroupID: g.ID, OSTarget: osA.Path, AppTarget: appX.Path}, pick(0, 6)},
		{device.Filter{ProductID: p.ID, AppTarget: appY.Path}, pick(1, 2)},
		{device.Filter{ProductID: q.ID, AppTarget: appX.Path}, pick()},
		{device.Filter{AppTarget: "apps/dishwasher/9.9.9"}, pick()},
		{device.Filter{Outcome: device.OutcomeNever}, pick(3)},
		{device.Filter{Outcome: device.OutcomeOK}, pick(0, 2, 5, 6)},
		{device.Filter{Outcome: device.OutcomeRefused}, pick(1, 4)},
		{device.Filter{Outcome: device.RefusedBelowFloor}, pick(1)},
		{device.Filter{Outcome: device.RefusedBlocked}, pick()},
		{device.Filter{Outcome: device.OutcomeRefused, AppTarget: appY.Path}, pick(1)},
		{device.Filter{AttestedBefore: cutoff}, pick(0, 1, 2, 4, 5)},
		{device.Filter{AttestedBefore: ds[0].Attestation.At}, pick()},
		{device.Filter{AttestedBefore: cutoff, Outcome: device.OutcomeOK, ProductID: p.ID}, pick(0, 2)},
	} {
		call := fmt.Sprintf("A: Devices().List(%+v)", c.f)
		if len(c.want) == 0 {
			list, err := h.listDevices(a.ID, c.f, store.Page{})
			wantEmpty(h.t, call, list, err)
			continue
		}
		checkList(h, call, c.want, id, func(pg store.Page) ([]device.Device, error) { return h.listDevices(a.ID, c.f, pg) })
	}
}

// testFleetUnknownOutcome: a misspelt outcome is an error, not an empty list that reads as
// "no such devices".
func testFleetUnknownOutcome(h *harness) {
	a := h.tenant("A")
	h.attest(h.claimed(a.ID), device.RefusedBlocked)
	for _, o := range []string{"refused ", "Blocked", "okay"} {
		_, err := h.listDevices(a.ID, device.Filter{Outcome: o}, store.Page{})
		if err == nil {
			h.t.Errorf("Devices().List(Outcome: %q) error = nil, want an error", o)
		}
		_, err = h.countRunning(a.ID, device.Filter{Outcome: o}, 0)
		if err == nil {
			h.t.Errorf("Devices().CountRunning(Outcome: %q) error = nil, want an error", o)
		}
	}
}

func testFleetCountRunning(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	// Group IDs ascend with creation: g before g2.
	g, g2 := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development")
	for range 3 {
		h.attest(h.placed(a.ID, g), "", osA, appX)
	}
	h.attest(h.placed(a.ID, g), "", osA, appY)
	h.attest(h.placed(a.ID, g), "", osB, appY)
	h.placed(a.ID, g)
	h.attest(h.placed(a.ID, g2), "", osB, appY)
	h.attest(h.claimed(a.ID), "", osA)
	h.claimed(a.ID)

	in := func(g product.Group, r device.Running, n int) store.RunningCount {
		return store.RunningCount{ProductID: g.ProductID, GroupID: g.ID, Running: r, Devices: n}
	}
	ungrouped := func(r device.Running, n int) store.RunningCount { return store.RunningCount{Running: r, Devices: n} }
	all := []store.RunningCount{
		ungrouped(device.Running{}, 1),
		ungrouped(running(osA), 1),
		in(g, device.Running{}, 1),
		in(g, running(osA, appX), 3),
		in(g, running(osA, appY), 1),
		in(g, running(osB, appY), 1),
		in(g2, running(osB, appY), 1),
	}
	for _, c := range []struct {
		f     device.Filter
		limit int
		want  []store.RunningCount
	}{
		{device.Filter{}, 0, all},
		{device.Filter{}, 3, all[:3]},
		{device.Filter{ProductID: p.ID}, 0, all[2:]},
		{device.Filter{ProductID: p.ID, GroupID: g2.ID}, 0, all[6:]},
		{device.Filter{AppTarget: appY.Path}, 0, []store.RunningCount{all[4], all[5], all[6]}},
		{device.Filter{Outcome: device.OutcomeNever}, 0, []store.RunningCount{all[0], all[2]}},
	} {
		got, err := h.countRunning(a.ID, c.f, c.limit)
		wantEqual(h.t, fmt.Sprintf("Devices().CountRunning(%+v, %d)", c.f, c.limit), got, err, c.want)
	}
}

func testFleetCountReports(h *harness) {
	a := h.tenant("A")
	d, d2 := h.claimed(a.ID), h.claimed(a.ID)
	report := func(d device.Device, kind errreport.Kind, path, version string) time.Time {
		h.t.Helper()
		r := h.newReport(kind)
		if kind != errreport.Agent {
			r.ImagePath, r.ImageVersion = path, version
		}
		at := h.tick()
		h.mustAddReport(a.ID, d.ID, r, at)
		return at
	}
	first := report(d, errreport.AppCrash, appX.Path, appX.Version) // before since
	since := report(d, errreport.AppCrash, appX.Path, appX.Version)
	report(d2, errreport.AppCrash, appX.Path, appX.Version)
	report(d2, errreport.AppCrash, appY.Path, appY.Version)
	report(d, errreport.CapabilityDenied, appX.Path, appX.Version)
	report(d, errreport.Agent, "", "")
	report(d, errreport.UpdateFailed, osA.Path, osA.Version)
	report(d2, errreport.UpdateFailed, osA.Path, osA.Version)

	count := func(path, version string, kind errreport.Kind, n int) store.ReportCount {
		return store.ReportCount{ImagePath: path, ImageVersion: version, Kind: kind, Reports: n}
	}
	// The most reported first; ties by path ("" first), version and kind.
	want := []store.ReportCount{
		count(appX.Path, appX.Version, errreport.AppCrash, 2),
		count(osA.Path, osA.Version, errreport.UpdateFailed, 2),
		count("", "", errreport.Agent, 1),
		count(appX.Path, appX.Version, errreport.CapabilityDenied, 1),
		count(appY.Path, appY.Version, errreport.AppCrash, 1),
	}
	got, err := h.countReports(a.ID, since, 0)
	wantEqual(h.t, "ErrorReports().CountByImage(since)", got, err, want)
	got, err = h.countReports(a.ID, since, 2)
	wantEqual(h.t, "ErrorReports().CountByImage(since, 2)", got, err, want[:2])
	got, err = h.countReports(a.ID, first, 1)
	wantEqual(h.t, "ErrorReports().CountByImage(from the first report, 1)", got, err,
		[]store.ReportCount{count(appX.Path, appX.Version, errreport.AppCrash, 3)})
	got, err = h.countReports(a.ID, h.tick(), 0)
	wantEmpty(h.t, "ErrorReports().CountByImage(now)", got, err)
}

// testIsolationFleet: B's fleet queries, given A's product, group and image names, never
// count or list A's devices or reports; with a device of its own, B counts that one alone.
func testIsolationFleet(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.attest(h.placed(a.ID, g), "", osA, appX)
	h.attest(h.placed(a.ID, g), device.RefusedBelowFloor, osA, appX)
	h.claimed(a.ID)
	since := h.tick()
	h.mustAddReport(a.ID, d.ID, h.newReport(errreport.AppCrash), h.tick())

	filters := []device.Filter{
		{}, {ProductID: p.ID}, {ProductID: p.ID, GroupID: g.ID}, {OSTarget: osA.Path}, {AppTarget: appX.Path},
		{AppTarget: device.NoTarget}, {Outcome: device.OutcomeOK}, {Outcome: device.OutcomeRefused},
		{Outcome: device.OutcomeNever}, {AttestedBefore: h.tick()},
	}
	for _, f := range filters {
		list, err := h.listDevices(b.ID, f, store.Page{})
		wantEmpty(h.t, fmt.Sprintf("B: Devices().List(%+v)", f), list, err)
		counts, err := h.countRunning(b.ID, f, 0)
		wantEmpty(h.t, fmt.Sprintf("B: Devices().CountRunning(%+v)", f), counts, err)
	}
	reports, err := h.countReports(b.ID, since, 0)
	wantEmpty(h.t, "B: ErrorReports().CountByImage", reports, err)

	mine := h.attest(h.claimed(b.ID), "", osA, appX)
	h.mustAddReport(b.ID, mine.ID, h.newReport(errreport.AppCrash), h.tick())
	counts, err := h.countRunning(b.ID, device.Filter{}, 0)
	wantEqual(h.t, "B: Devices().CountRunning with a device of its own", counts, err,
		[]store.RunningCount{{Running: running(osA, appX), Devices: 1}})
	list, err := h.listDevices(b.ID, device.Filter{AppTarget: appX.Path}, store.Page{})
	wantEqual(h.t, "B: Devices().List(appX) with a device of its own", list, err, []device.Device{mine})
	r := h.newReport(errreport.AppCrash)
	reports, err = h.countReports(b.ID, since, 0)
	wantEqual(h.t, "B: ErrorReports().CountByImage with a report of its own", reports, err,
		[]store.ReportCount{{ImagePath: r.ImagePath, ImageVersion: r.ImageVersion, Kind: errreport.AppCrash, Reports: 1}})
}
