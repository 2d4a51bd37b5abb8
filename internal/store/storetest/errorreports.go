package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var errorReportTests = []test{
	{"AddList", testErrorReportAddList},
	{"SameIDAgainIsStoredOnce", testErrorReportDuplicate},
	{"ConcurrentSameIDStoredOnce", testErrorReportConcurrentDuplicate},
	{"ConcurrentOverlappingUploads", testErrorReportConcurrentBatches},
	{"IDsArePerDevice", testErrorReportPerDevice},
	{"ListNewestFirstAndPages", testErrorReportListPages},
	{"OrderSurvivesFractionalSeconds", testErrorReportFractions},
	{"DeviceMustBeTheTenants", testErrorReportUnknownDevice},
	{"BoundKeepsNewest", testErrorReportBound},
	{"ReadTxRefusesAdd", testErrorReportReadTx},
}

// newReport returns a valid report made at the harness clock.
func (h *harness) newReport(kind errreport.Kind) errreport.Report {
	at := h.tick()
	r := errreport.Report{ID: errreport.NewID(at), Kind: kind, At: at, ImagePath: "apps/dw100-app/1.0.0", ImageVersion: "1.0.0",
		Message: "something failed: " + string(kind)}
	switch kind {
	case errreport.AppCrash:
		code := 2
		r.ExitCode, r.UptimeSeconds, r.StderrTail = &code, 42, "panic: heater\n"
	case errreport.UpdateFailed:
		r.Step, r.Target, r.Code = errreport.StepVerify, "apps/dw100-app/2.0.0", "signature_invalid"
	case errreport.CapabilityDenied:
		r.Capability = "gpio:5"
	case errreport.Agent:
		r.ImagePath, r.ImageVersion, r.Code, r.Dropped = "", "", errreport.CodeQueueFull, 3
	}
	return r
}

func (h *harness) addReport(tid tenant.ID, d device.ID, r errreport.Report, at time.Time) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.ErrorReports().Add(h.ctx(), d, r, at) })
}

func (h *harness) mustAddReport(tid tenant.ID, d device.ID, r errreport.Report, at time.Time) errreport.Record {
	h.t.Helper()
	if err := h.addReport(tid, d, r, at); err != nil {
		h.t.Fatalf("ErrorReports().Add(%s, %s) = %v, want nil", d, r.ID, err)
	}
	return errreport.Record{DeviceID: d, ReceivedAt: at, Report: r}
}

func (h *harness) listReports(tid tenant.ID, d device.ID, p store.Page) ([]errreport.Record, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]errreport.Record, error) {
		return tt.ErrorReports().List(ctx, d, p)
	})
}

func recordID(r errreport.Record) string { return r.Report.ID }

func testErrorReportAddList(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	var want []errreport.Record
	for _, k := range errreport.Kinds {
		want = append(want, h.mustAddReport(a.ID, d.ID, h.newReport(k), h.tick()))
	}
	slices.Reverse(want)
	got, err := h.listReports(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "ErrorReports().List", got, err, want)
	got, err = h.listReports(a.ID, h.claimed(a.ID).ID, store.Page{})
	wantEmpty(h.t, "ErrorReports().List(device without reports)", got, err)
}

// testErrorReportDuplicate: delivery is at-least-once; a report ID the device stored is a
// no-op, and the first copy stays even if the second differs.
func testErrorReportDuplicate(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	r := h.newReport(errreport.AppCrash)
	first := h.mustAddReport(a.ID, d.ID, r, h.tick())
	changed := r
	changed.Message, changed.Signal, changed.ExitCode = "a different copy", "SIGKILL", nil
	h.mustAddReport(a.ID, d.ID, r, h.tick())
	h.mustAddReport(a.ID, d.ID, changed, h.tick())
	// Twice in one transaction too.
	h.mustIn("ErrorReports().Add twice in one transaction", a.ID, func(tt store.TenantTx) error {
		for range 2 {
			if err := tt.ErrorReports().Add(h.ctx(), d.ID, r, h.tick()); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := h.listReports(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "ErrorReports().List after the same ID four times", got, err, []errreport.Record{first})
}

// testErrorReportConcurrentDuplicate: a device that retries while its first upload is still
// running gets its report stored once, and both uploads succeed.
func testErrorReportConcurrentDuplicate(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	r := h.newReport(errreport.UpdateFailed)
	at := h.tick()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = h.addReport(a.ID, d.ID, r, at) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			h.t.Errorf("concurrent ErrorReports().Add #%d = %v, want nil", i, err)
		}
	}
	got, err := h.listReports(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "ErrorReports().List after concurrent Adds of one ID", got, err, []errreport.Record{{DeviceID: d.ID, ReceivedAt: at, Report: r}})
}

// testErrorReportConcurrentBatches: uploads of one device that overlap, each in its own
// transaction and in a different order, all succeed and store each report once.
func testErrorReportConcurrentBatches(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	var rs []errreport.Report
	for range 20 {
		rs = append(rs, h.newReport(errreport.CapabilityDenied))
	}
	at := h.tick()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		order := slices.Clone(rs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		order = append(order[i:], order[:i]...)
		wg.Go(func() {
			errs[i] = h.in(a.ID, func(tt store.TenantTx) error {
				for _, r := range order {
					if err := tt.ErrorReports().Add(h.ctx(), d.ID, r, at); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			h.t.Errorf("concurrent upload #%d = %v, want nil", i, err)
		}
	}
	got, err := h.listReports(a.ID, d.ID, store.Page{})
	if err != nil {
		h.t.Fatal(err)
	}
	var gotIDs, want []string
	for _, r := range got {
		gotIDs = append(gotIDs, r.Report.ID)
	}
	for _, r := range rs {
		want = append(want, r.ID)
	}
	slices.Sort(gotIDs)
	slices.Sort(want)
	wantEqual(h.t, "ErrorReports().List after overlapping uploads", gotIDs, nil, want)
}

// testErrorReportPerDevice: IDs are made on devices; two devices may pick the same one.
func testErrorReportPerDevice(h *harness) {
	a := h.tenant("A")
	d1, d2 := h.claimed(a.ID), h.claimed(a.ID)
	r := h.newReport(errreport.Agent)
	one := h.mustAddReport(a.ID, d1.ID, r, h.tick())
	two := h.mustAddReport(a.ID, d2.ID, r, h.tick())
	got, err := h.listReports(a.ID, d1.ID, store.Page{})
	wantEqual(h.t, "ErrorReports().List(d1)", got, err, []errreport.Record{one})
	got, err = h.listReports(a.ID, d2.ID, store.Page{})
	wantEqual(h.t, "ErrorReports().List(d2)", got, err, []errreport.Record{two})
}

// testErrorReportListPages: newest received first; reports of one upload (one receivedAt)
// by ID, descending; pages continue after the last ID.
func testErrorReportListPages(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	var want []errreport.Record
	for range 3 {
		upload := h.tick()
		for range 3 {
			want = append(want, h.mustAddReport(a.ID, d.ID, h.newReport(errreport.CapabilityDenied), upload))
		}
	}
	// A report whose device clock is far behind still sorts by when it arrived.
	late := h.newReport(errreport.AttestationRefused)
	late.At = time.Unix(0, 0).UTC()
	want = append(want, h.mustAddReport(a.ID, d.ID, late, h.tick()))
	slices.Reverse(want)
	checkList(h, "ErrorReports().List", want, recordID, func(p store.Page) ([]errreport.Record, error) {
		return h.listReports(a.ID, d.ID, p)
	})
	got, err := h.listReports(a.ID, d.ID, store.Page{After: errreport.NewID(h.tick())})
	wantEmpty(h.t, "ErrorReports().List(After: an ID never stored)", got, err)
}

// testErrorReportFractions: receipt times whose fractional seconds have different numbers
// of digits order and page by time, not by their text.
func testErrorReportFractions(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	base := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	var want []errreport.Record
	for _, frac := range []time.Duration{0, 400_000 * time.Microsecond, 450_000 * time.Microsecond, 450_001 * time.Microsecond,
		500_000 * time.Microsecond, time.Second, time.Second + time.Microsecond, 10 * time.Second} {
		want = append(want, h.mustAddReport(a.ID, d.ID, h.newReport(errreport.Agent), base.Add(frac)))
	}
	slices.Reverse(want)
	checkList(h, "ErrorReports().List", want, recordID, func(p store.Page) ([]errreport.Record, error) {
		return h.listReports(a.ID, d.ID, p)
	})
}

func testErrorReportUnknownDevice(h *harness) {
	a := h.tenant("A")
	unclaimed, unregistered := h.device(), h.newDevice()
	for _, d := range []device.Device{unclaimed, unregistered} {
		err := h.addReport(a.ID, d.ID, h.newReport(errreport.Agent), h.tick())
		wantErr(h.t, "ErrorReports().Add(device not the tenant's)", err, store.ErrNotFound)
		got, err := h.listReports(a.ID, d.ID, store.Page{})
		wantEmpty(h.t, "ErrorReports().List(device not the tenant's)", got, err)
	}
}

// testErrorReportBound: a device keeps its newest MaxErrorReportsPerDevice reports; each
// Add beyond deletes the oldest received, and a duplicate of a kept one changes nothing.
func testErrorReportBound(h *harness) {
	a := h.tenant("A")
	d, other := h.claimed(a.ID), h.claimed(a.ID)
	otherRec := h.mustAddReport(a.ID, other.ID, h.newReport(errreport.Agent), h.tick())
	const extra = 3
	total := store.MaxErrorReportsPerDevice + extra
	recs := make([]errreport.Record, total)
	const perTx = 2500
	for start := 0; start < total; start += perTx {
		h.mustIn(fmt.Sprintf("ErrorReports().Add #%d..", start), a.ID, func(tt store.TenantTx) error {
			for i := start; i < min(start+perTx, total); i++ {
				r, at := h.newReport(errreport.CapabilityDenied), h.tick()
				recs[i] = errreport.Record{DeviceID: d.ID, ReceivedAt: at, Report: r}
				if err := tt.ErrorReports().Add(h.ctx(), d.ID, r, at); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// The oldest kept one sent again is still a no-op, and deletes nothing.
	h.mustAddReport(a.ID, d.ID, recs[extra].Report, h.tick())

	var got []errreport.Record
	after := ""
	for {
		page, err := h.listReports(a.ID, d.ID, store.Page{After: after, Limit: 1000})
		if err != nil {
			h.t.Fatalf("ErrorReports().List = %v", err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].Report.ID
	}
	want := slices.Clone(recs[extra:])
	slices.Reverse(want)
	if len(got) != len(want) || got[0].Report.ID != want[0].Report.ID || got[len(got)-1].Report.ID != want[len(want)-1].Report.ID {
		h.t.Fatalf("after %d reports, List holds %d from %s to %s; want the newest %d, from %s to %s", total, len(got),
			recordID(got[0]), recordID(got[len(got)-1]), len(want), recordID(want[0]), recordID(want[len(want)-1]))
	}
	wantEqual(h.t, "ErrorReports().List after the bound", got, nil, want)

	// One more deletes exactly the next oldest.
	last := h.mustAddReport(a.ID, d.ID, h.newReport(errreport.Agent), h.tick())
	page, err := h.listReports(a.ID, d.ID, store.Page{After: recs[extra+1].Report.ID})
	wantEmpty(h.t, "ErrorReports().List(After: the now oldest)", page, err)
	page, err = h.listReports(a.ID, d.ID, store.Page{After: recs[extra+2].Report.ID})
	wantEqual(h.t, "ErrorReports().List(After: the second oldest)", page, err, []errreport.Record{recs[extra+1]})
	page, err = h.listReports(a.ID, d.ID, store.Page{After: recs[extra].Report.ID})
	wantEmpty(h.t, "ErrorReports().List(After: a deleted report)", page, err)
	page, err = h.listReports(a.ID, d.ID, store.Page{Limit: 1})
	wantEqual(h.t, "ErrorReports().List(newest)", page, err, []errreport.Record{last})
	// Other devices keep theirs.
	page, err = h.listReports(a.ID, other.ID, store.Page{})
	wantEqual(h.t, "ErrorReports().List(other device)", page, err, []errreport.Record{otherRec})
}

func testErrorReportReadTx(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	err := h.readTx(h.ctx(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(a.ID)
		if err != nil {
			return err
		}
		return tt.ErrorReports().Add(h.ctx(), d.ID, h.newReport(errreport.Agent), h.tick())
	})
	if err == nil {
		h.t.Error("InReadTx(ErrorReports().Add) = nil, want a write error")
	}
	got, err := h.listReports(a.ID, d.ID, store.Page{})
	wantEmpty(h.t, "ErrorReports().List after an Add in InReadTx", got, err)
}

// testIsolationErrorReports: tenant B, handed A's device ID, can neither add a report to it
// nor read its reports; B's own device may use the same report IDs.
func testIsolationErrorReports(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	d := h.claimed(a.ID)
	mine := h.claimed(b.ID)
	r := h.newReport(errreport.AppCrash)
	rec := h.mustAddReport(a.ID, d.ID, r, h.tick())

	planted := h.newReport(errreport.Agent)
	err := h.addReport(b.ID, d.ID, planted, h.tick())
	wantErr(h.t, "B: ErrorReports().Add(A's device)", err, store.ErrNotFound)
	got, err := h.listReports(b.ID, d.ID, store.Page{})
	wantEmpty(h.t, "B: ErrorReports().List(A's device)", got, err)
	got, err = h.listReports(b.ID, d.ID, store.Page{After: r.ID})
	wantEmpty(h.t, "B: ErrorReports().List(A's device, After: A's report)", got, err)

	// The same report ID on B's own device is B's, and leaves A's report alone.
	own := h.mustAddReport(b.ID, mine.ID, r, h.tick())
	got, err = h.listReports(b.ID, mine.ID, store.Page{})
	wantEqual(h.t, "B: ErrorReports().List(own device)", got, err, []errreport.Record{own})
	got, err = h.listReports(a.ID, mine.ID, store.Page{})
	wantEmpty(h.t, "A: ErrorReports().List(B's device)", got, err)
	got, err = h.listReports(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "A: ErrorReports().List after B's attempts", got, err, []errreport.Record{rec})
}
