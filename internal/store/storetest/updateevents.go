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
	"github.com/moat-iot/moat/internal/updstate"
)

var updateEventTests = []test{
	{"AddListAndLatestState", testUpdateEventAddList},
	{"SameIDAgainIsStoredOnce", testUpdateEventDuplicate},
	{"LateOlderReportKeepsLatestState", testUpdateEventLate},
	{"EqualTimesOrderByID", testUpdateEventEqualTimes},
	{"ListNewestFirstAndPages", testUpdateEventPages},
	{"DeviceMustBeTheTenants", testUpdateEventUnknownDevice},
	{"BoundKeepsNewest", testUpdateEventBound},
	{"ConcurrentUploadsOfOneDevice", testUpdateEventConcurrent},
	{"UpdateKeepsReportedColumns", testUpdateEventDeviceUpdate},
	{"SeenIsCoarse", testDeviceSeen},
}

// newUpdateState returns a valid report of state s made at the harness clock.
func (h *harness) newUpdateState(s updstate.State) updstate.Report {
	at := h.tick()
	r := updstate.Report{ID: errreport.NewID(at), At: at, State: s, Kind: updstate.KindApp, Target: "apps/dw100-app/2.0.0", Version: "2.0.0"}
	switch s {
	case updstate.Downloading:
		r.BytesDone, r.BytesTotal = 10, 100
	case updstate.Failed, updstate.RolledBack:
		r.Code, r.Message = "health_check_failed", "crashed"
	case updstate.Deferred:
		until := at.Add(time.Hour)
		r.DeferredUntil = &until
	}
	return r
}

func (h *harness) addUpdateState(tid tenant.ID, d device.ID, r updstate.Report, at time.Time) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.UpdateEvents().Add(h.ctx(), d, r, at) })
}

func (h *harness) mustAddUpdateState(tid tenant.ID, d device.ID, r updstate.Report) updstate.Record {
	h.t.Helper()
	at := h.tick()
	if err := h.addUpdateState(tid, d, r, at); err != nil {
		h.t.Fatalf("UpdateEvents().Add(%s, %s) = %v, want nil", d, r.ID, err)
	}
	return updstate.Record{DeviceID: d, ReceivedAt: at, Report: r}
}

func (h *harness) listUpdateStates(tid tenant.ID, d device.ID, p store.Page) ([]updstate.Record, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]updstate.Record, error) {
		return tt.UpdateEvents().List(ctx, d, p)
	})
}

func updateRecordID(r updstate.Record) string { return r.Report.ID }

// wantState checks the device's latest update state as Get shows it.
func (h *harness) wantState(tid tenant.ID, id device.ID, want updstate.Report) {
	h.t.Helper()
	d, err := h.getTenantDevice(tid, id)
	if err != nil {
		h.t.Fatalf("Devices().Get(%s) = %v", id, err)
	}
	if d.UpdateState != want.State || d.UpdateStateAt == nil || !d.UpdateStateAt.Equal(want.At) {
		h.t.Errorf("device %s update state = %q at %v, want %q at %v", id, d.UpdateState, d.UpdateStateAt, want.State, want.At)
	}
}

func testUpdateEventAddList(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	if d.UpdateState != "" || d.UpdateStateAt != nil || d.LastSeenAt != nil {
		h.t.Errorf("new device: update state %q at %v, last seen %v; want none", d.UpdateState, d.UpdateStateAt, d.LastSeenAt)
	}
	var want []updstate.Record
	for _, s := range updstate.States {
		want = append(want, h.mustAddUpdateState(a.ID, d.ID, h.newUpdateState(s)))
		h.wantState(a.ID, d.ID, want[len(want)-1].Report)
	}
	slices.Reverse(want)
	got, err := h.listUpdateStates(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "UpdateEvents().List", got, err, want)
	got, err = h.listUpdateStates(a.ID, h.claimed(a.ID).ID, store.Page{})
	wantEmpty(h.t, "UpdateEvents().List(device without reports)", got, err)
}

// testUpdateEventDuplicate: delivery is at-least-once; a report ID the device stored is a
// no-op, and the first copy stays even if the second differs.
func testUpdateEventDuplicate(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	r := h.newUpdateState(updstate.Installed)
	first := h.mustAddUpdateState(a.ID, d.ID, r)
	changed := r
	changed.State, changed.Code = updstate.Failed, "x"
	changed.At = r.At.Add(time.Hour)
	h.mustAddUpdateState(a.ID, d.ID, r)
	h.mustAddUpdateState(a.ID, d.ID, changed)
	got, err := h.listUpdateStates(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "UpdateEvents().List after the same ID three times", got, err, []updstate.Record{first})
	h.wantState(a.ID, d.ID, r)
}

// testUpdateEventLate: a report the device made earlier but delivered later (its queue
// sends in order, but a lost answer or an old agent's queue may not) joins the history in
// its place and leaves the latest state alone.
func testUpdateEventLate(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	early := h.newUpdateState(updstate.Downloading)
	committed := h.newUpdateState(updstate.Committed)
	c := h.mustAddUpdateState(a.ID, d.ID, committed)
	e := h.mustAddUpdateState(a.ID, d.ID, early)
	h.wantState(a.ID, d.ID, committed)
	got, err := h.listUpdateStates(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "UpdateEvents().List", got, err, []updstate.Record{c, e})
}

func testUpdateEventEqualTimes(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	lo, hi := h.newUpdateState(updstate.Installed), h.newUpdateState(updstate.RolledBack)
	hi.At = lo.At
	lo.ID, hi.ID = "01JXA7Q3ZK4M9V6T2B8R5N1C0A", "01JXA7Q3ZK4M9V6T2B8R5N1C0B"
	h.mustAddUpdateState(a.ID, d.ID, hi)
	h.mustAddUpdateState(a.ID, d.ID, lo)
	h.wantState(a.ID, d.ID, hi)
}

func testUpdateEventPages(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	var want []updstate.Record
	base := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	// Fractional seconds of different lengths order by time, not by their text.
	for i, frac := range []time.Duration{0, 400_000 * time.Microsecond, 450_000 * time.Microsecond, 450_001 * time.Microsecond,
		500_000 * time.Microsecond, time.Second, time.Second + time.Microsecond, 10 * time.Second} {
		r := h.newUpdateState(updstate.States[i%len(updstate.States)])
		r.At = base.Add(frac)
		if r.DeferredUntil != nil {
			until := r.At.Add(time.Hour)
			r.DeferredUntil = &until
		}
		want = append(want, h.mustAddUpdateState(a.ID, d.ID, r))
	}
	slices.Reverse(want)
	checkList(h, "UpdateEvents().List", want, updateRecordID, func(p store.Page) ([]updstate.Record, error) {
		return h.listUpdateStates(a.ID, d.ID, p)
	})
	got, err := h.listUpdateStates(a.ID, d.ID, store.Page{After: errreport.NewID(h.tick())})
	wantEmpty(h.t, "UpdateEvents().List(After: an ID never stored)", got, err)
}

func testUpdateEventUnknownDevice(h *harness) {
	a := h.tenant("A")
	unclaimed, unregistered := h.device(), h.newDevice()
	for _, d := range []device.Device{unclaimed, unregistered} {
		err := h.addUpdateState(a.ID, d.ID, h.newUpdateState(updstate.Assigned), h.tick())
		wantErr(h.t, "UpdateEvents().Add(device not the tenant's)", err, store.ErrNotFound)
		got, err := h.listUpdateStates(a.ID, d.ID, store.Page{})
		wantEmpty(h.t, "UpdateEvents().List(device not the tenant's)", got, err)
	}
}

// testUpdateEventBound: a device keeps its newest MaxUpdateEventsPerDevice reports; another
// device's history is untouched.
func testUpdateEventBound(h *harness) {
	a := h.tenant("A")
	d, other := h.claimed(a.ID), h.claimed(a.ID)
	otherRec := h.mustAddUpdateState(a.ID, other.ID, h.newUpdateState(updstate.Assigned))
	const extra = 5
	total := store.MaxUpdateEventsPerDevice + extra
	recs := make([]updstate.Record, total)
	h.mustIn(fmt.Sprintf("UpdateEvents().Add x%d", total), a.ID, func(tt store.TenantTx) error {
		for i := range recs {
			r, at := h.newUpdateState(updstate.Downloading), h.tick()
			recs[i] = updstate.Record{DeviceID: d.ID, ReceivedAt: at, Report: r}
			if err := tt.UpdateEvents().Add(h.ctx(), d.ID, r, at); err != nil {
				return err
			}
		}
		return nil
	})
	// An old report delivered late, beyond the bound, is not kept.
	old := h.newUpdateState(updstate.Assigned)
	old.At = time.Unix(0, 0).UTC()
	h.mustAddUpdateState(a.ID, d.ID, old)
	want := slices.Clone(recs[extra:])
	slices.Reverse(want)
	got, err := h.listUpdateStates(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "UpdateEvents().List past the bound", got, err, want)
	got, err = h.listUpdateStates(a.ID, other.ID, store.Page{})
	wantEqual(h.t, "UpdateEvents().List(other device)", got, err, []updstate.Record{otherRec})
	h.wantState(a.ID, d.ID, recs[total-1].Report)
}

// testUpdateEventConcurrent: overlapping uploads of one device, in different orders, all
// succeed (no deadlock in PostgreSQL) and leave the newest state.
func testUpdateEventConcurrent(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	var rs []updstate.Report
	for range 12 {
		rs = append(rs, h.newUpdateState(updstate.Downloading))
	}
	at := h.tick()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		order := slices.Clone(rs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		wg.Go(func() {
			errs[i] = h.in(a.ID, func(tt store.TenantTx) error {
				for _, r := range order {
					if err := tt.UpdateEvents().Add(h.ctx(), d.ID, r, at); err != nil {
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
	got, err := h.listUpdateStates(a.ID, d.ID, store.Page{})
	if err != nil || len(got) != len(rs) {
		h.t.Errorf("UpdateEvents().List after overlapping uploads = %d reports (%v), want %d", len(got), err, len(rs))
	}
	h.wantState(a.ID, d.ID, rs[len(rs)-1])
}

// testUpdateEventDeviceUpdate: a management write of a device loaded before a report (or a
// check-in) does not overwrite what the device reported.
func testUpdateEventDeviceUpdate(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	r := h.newUpdateState(updstate.Committed)
	h.mustAddUpdateState(a.ID, d.ID, r)
	seenAt := h.tick()
	h.mustIn("Devices().Seen", a.ID, func(tt store.TenantTx) error {
		_, err := tt.Devices().Seen(h.ctx(), d.ID, seenAt, time.Minute)
		return err
	})
	d.Blocked, d.Version = true, d.Version+1
	if err := h.updateTenantDevice(a.ID, d); err != nil {
		h.t.Fatal(err)
	}
	h.wantState(a.ID, d.ID, r)
	got, err := h.getTenantDevice(a.ID, d.ID)
	if err != nil || got.LastSeenAt == nil || !got.LastSeenAt.Equal(seenAt) {
		h.t.Errorf("after Update: LastSeenAt = %v (%v), want %v", got.LastSeenAt, err, seenAt)
	}
}

// testDeviceSeen: last_seen_at moves only when it is older than every, so a device that
// checks in every few seconds is one write per interval.
func testDeviceSeen(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	d := h.claimed(a.ID)
	seen := func(tid tenant.ID, at time.Time) bool {
		h.t.Helper()
		var wrote bool
		h.mustIn("Devices().Seen", tid, func(tt store.TenantTx) error {
			var err error
			wrote, err = tt.Devices().Seen(h.ctx(), d.ID, at, 5*time.Minute)
			return err
		})
		return wrote
	}
	t0 := h.tick()
	steps := []struct {
		at    time.Time
		wrote bool
		last  time.Time
	}{
		{t0, true, t0},
		{t0.Add(time.Minute), false, t0},
		{t0.Add(5*time.Minute - time.Microsecond), false, t0},
		{t0.Add(5 * time.Minute), true, t0.Add(5 * time.Minute)},
		{t0, false, t0.Add(5 * time.Minute)}, // never back
	}
	for i, s := range steps {
		if got := seen(a.ID, s.at); got != s.wrote {
			h.t.Errorf("step %d: Seen(%v) = %t, want %t", i, s.at, got, s.wrote)
		}
		got, err := h.getTenantDevice(a.ID, d.ID)
		if err != nil || got.LastSeenAt == nil || !got.LastSeenAt.Equal(s.last) {
			h.t.Errorf("step %d: LastSeenAt = %v (%v), want %v", i, got.LastSeenAt, err, s.last)
		}
	}
	// Rule 3: B writes nothing on A's device.
	if seen(b.ID, t0.Add(time.Hour)) {
		h.t.Error("B: Devices().Seen(A's device) wrote")
	}
	if got, _ := h.getTenantDevice(a.ID, d.ID); got.LastSeenAt == nil || !got.LastSeenAt.Equal(t0.Add(5*time.Minute)) {
		h.t.Errorf("after B's Seen: A's device LastSeenAt = %v", got.LastSeenAt)
	}
}

func testIsolationUpdateEvents(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	d := h.claimed(a.ID)
	mine := h.claimed(b.ID)
	r := h.newUpdateState(updstate.Installed)
	rec := h.mustAddUpdateState(a.ID, d.ID, r)

	err := h.addUpdateState(b.ID, d.ID, h.newUpdateState(updstate.Failed), h.tick())
	wantErr(h.t, "B: UpdateEvents().Add(A's device)", err, store.ErrNotFound)
	got, err := h.listUpdateStates(b.ID, d.ID, store.Page{})
	wantEmpty(h.t, "B: UpdateEvents().List(A's device)", got, err)
	got, err = h.listUpdateStates(b.ID, d.ID, store.Page{After: r.ID})
	wantEmpty(h.t, "B: UpdateEvents().List(A's device, After: A's report)", got, err)

	// The same report ID on B's own device is B's, and leaves A's report and state alone.
	own := h.mustAddUpdateState(b.ID, mine.ID, r)
	got, err = h.listUpdateStates(b.ID, mine.ID, store.Page{})
	wantEqual(h.t, "B: UpdateEvents().List(own device)", got, err, []updstate.Record{own})
	got, err = h.listUpdateStates(a.ID, mine.ID, store.Page{})
	wantEmpty(h.t, "A: UpdateEvents().List(B's device)", got, err)
	got, err = h.listUpdateStates(a.ID, d.ID, store.Page{})
	wantEqual(h.t, "A: UpdateEvents().List after B's attempts", got, err, []updstate.Record{rec})
	h.wantState(a.ID, d.ID, r)
}
