package storetest

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var errorIssueTests = []test{
	{"AddGroupsReportsIntoIssues", testIssuesGroup},
	{"ListSortsFiltersAndPages", testIssuesList},
	{"IssueReportsNewestFirstAndPages", testIssueReports},
	{"RetentionKeepsAggregatesExact", testIssuesRetention},
	{"BoundKeepsAggregatesExact", testIssuesBound},
	{"DuplicateCountsOnce", testIssuesDuplicate},
}

// issueReport returns an app crash whose signature depends on image and message only.
func (h *harness) issueReport(image, version, msg string) errreport.Report {
	at := h.tick()
	code := 2
	return errreport.Report{ID: errreport.NewID(at), Kind: errreport.AppCrash, At: at, ImagePath: image + "/" + version,
		ImageVersion: version, ExitCode: &code, Message: msg}
}

// wantIssues computes every issue of recs (the reports the tenant still stores) as the
// store must report them, and compares them with ListIssues and GetIssue at now.
func (h *harness) wantIssues(call string, tid tenant.ID, now time.Time, recs []errreport.Record) {
	h.t.Helper()
	type model struct {
		is       errreport.Issue
		devices  map[device.ID]bool
		versions map[string]int64
		days     map[string]int64
	}
	byID := map[string]*model{}
	for _, rec := range recs {
		sig := errreport.Signature(rec.Report)
		id := errreport.IssueID(sig)
		at := rec.ReceivedAt.UTC()
		m := byID[id]
		if m == nil {
			m = &model{is: errreport.Issue{ID: id, Signature: sig, Kind: rec.Report.Kind, ImageName: errreport.ImageName(rec.Report.ImagePath),
				FirstSeen: at, LastSeen: at}, devices: map[device.ID]bool{}, versions: map[string]int64{}, days: map[string]int64{}}
			byID[id] = m
		}
		m.is.Reports++
		m.devices[rec.DeviceID] = true
		if at.Before(m.is.FirstSeen) {
			m.is.FirstSeen = at
		}
		if !at.Before(m.is.LastSeen) {
			m.is.LastSeen, m.is.Message = at, rec.Report.Message
		}
		if v := rec.Report.ImageVersion; v != "" {
			m.versions[v]++
		}
		m.days[at.Format(errreport.DayFormat)]++
	}
	want := []errreport.Issue{}
	for _, m := range byID {
		m.is.Devices = int64(len(m.devices))
		want = append(want, m.is)
	}
	slices.SortFunc(want, func(a, b errreport.Issue) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), cmp.Compare(b.ID, a.ID))
	})
	got, err := h.listIssues(tid, errreport.IssueFilter{}, store.Page{})
	wantEqual(h.t, call+": ListIssues", got, err, want)
	for _, is := range want {
		m := byID[is.ID]
		d := errreport.IssueDetail{Issue: is, Versions: []errreport.IssueVersion{}}
		for _, v := range slices.Sorted(maps.Keys(m.versions)) {
			d.Versions = append(d.Versions, errreport.IssueVersion{Version: v, Reports: m.versions[v]})
		}
		slices.SortStableFunc(d.Versions, func(a, b errreport.IssueVersion) int { return cmp.Compare(b.Reports, a.Reports) })
		start := now.UTC().AddDate(0, 0, -(errreport.IssueDays - 1))
		for i := range errreport.IssueDays {
			day := start.AddDate(0, 0, i).Format(errreport.DayFormat)
			d.Days = append(d.Days, errreport.IssueDay{Day: day, Reports: m.days[day]})
		}
		gotD, err := h.getIssue(tid, is.ID, now)
		wantEqual(h.t, call+": GetIssue("+is.ID+")", gotD, err, d)
	}
}

func (h *harness) listIssues(tid tenant.ID, f errreport.IssueFilter, p store.Page) ([]errreport.Issue, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]errreport.Issue, error) {
		return tt.ErrorReports().ListIssues(ctx, f, p)
	})
}

func (h *harness) getIssue(tid tenant.ID, id string, now time.Time) (errreport.IssueDetail, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (errreport.IssueDetail, error) {
		return tt.ErrorReports().GetIssue(ctx, id, now)
	})
}

func (h *harness) listIssueReports(tid tenant.ID, id string, p store.Page) ([]errreport.Record, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]errreport.Record, error) {
		return tt.ErrorReports().ListIssueReports(ctx, id, p)
	})
}

func (h *harness) deleteBefore(tid tenant.ID, before time.Time, n int) (int, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (int, error) {
		return tt.ErrorReports().DeleteReceivedBefore(ctx, before, n)
	})
}

// issueFixture stores reports of three issues over three devices and two versions, a day
// apart, and returns them.
func (h *harness) issueFixture(tid tenant.ID) []errreport.Record {
	d1, d2, d3 := h.claimed(tid), h.claimed(tid), h.claimed(tid)
	var recs []errreport.Record
	add := func(d device.Device, r errreport.Report) {
		h.clock = h.clock.Add(7 * time.Hour)
		recs = append(recs, h.mustAddReport(tid, d.ID, r, h.tick()))
	}
	add(d1, h.issueReport("apps/dw100", "1.0.0", "heater at 93 C"))
	add(d1, h.issueReport("apps/dw100", "1.0.1", "heater at 97 C"))
	add(d2, h.issueReport("apps/dw100", "1.0.1", "heater at 99 C"))
	add(d2, h.issueReport("apps/dw100", "1.0.1", "pump stuck"))
	add(d3, h.issueReport("apps/dw200", "1.0.1", "heater at 93 C"))
	add(d1, h.newReport(errreport.Agent))
	add(d3, h.issueReport("apps/dw100", "1.0.0", "heater at 91 C"))
	return recs
}

func testIssuesGroup(h *harness) {
	a := h.tenant("A")
	recs := h.issueFixture(a.ID)
	h.wantIssues("after adding", a.ID, h.clock, recs)
	got, err := h.listIssues(a.ID, errreport.IssueFilter{}, store.Page{})
	if err != nil || len(got) != 4 {
		h.t.Fatalf("ListIssues = %d issues, %v; want 4 (heater on dw100, pump, heater on dw200, agent)", len(got), err)
	}
	heater := errreport.IssueID(errreport.Signature(recs[0].Report))
	if got[0].ID != heater || got[0].Reports != 4 || got[0].Devices != 3 {
		h.t.Errorf("ListIssues()[0] = %s with %d reports from %d devices, want %s with 4 from 3", got[0].ID, got[0].Reports, got[0].Devices, heater)
	}
	// Another tenant sees none of it (rule 3).
	b := h.tenant("B")
	list, err := h.listIssues(b.ID, errreport.IssueFilter{}, store.Page{})
	wantEmpty(h.t, "B: ListIssues", list, err)
	_, err = h.getIssue(b.ID, heater, h.clock)
	wantErr(h.t, "B: GetIssue(A's issue)", err, store.ErrNotFound)
	reps, err := h.listIssueReports(b.ID, heater, store.Page{})
	wantEmpty(h.t, "B: ListIssueReports(A's issue)", reps, err)
	reps, err = h.listIssueReports(b.ID, heater, store.Page{After: store.ReportKey(recs[6])})
	wantEmpty(h.t, "B: ListIssueReports(A's issue, After: A's report)", reps, err)
	n, err := h.deleteBefore(b.ID, h.tick(), 100)
	wantEqual(h.t, "B: DeleteReceivedBefore(now)", n, err, 0)
	h.wantIssues("after B's attempts", a.ID, h.clock, recs)
	// B's report of the same signature is B's issue, and leaves A's counts alone.
	own := h.mustAddReport(b.ID, h.claimed(b.ID).ID, recs[0].Report, h.tick())
	h.wantIssues("B's own", b.ID, h.clock, []errreport.Record{own})
	h.wantIssues("A after B's own", a.ID, h.clock, recs)
	_, err = h.getIssue(a.ID, "iss_00000000000000000000", h.clock)
	wantErr(h.t, "GetIssue(unknown)", err, store.ErrNotFound)
}

func testIssuesList(h *harness) {
	a := h.tenant("A")
	recs := h.issueFixture(a.ID)
	all, err := h.listIssues(a.ID, errreport.IssueFilter{}, store.Page{})
	if err != nil {
		h.t.Fatal(err)
	}
	ids := func(is []errreport.Issue) []string {
		out := []string{}
		for _, x := range is {
			out = append(out, x.ID)
		}
		return out
	}
	byReports := slices.Clone(all)
	slices.SortStableFunc(byReports, func(a, b errreport.Issue) int {
		return cmp.Or(cmp.Compare(b.Reports, a.Reports), cmp.Compare(b.ID, a.ID))
	})
	for _, sort := range []errreport.IssueSort{errreport.ByLastSeen, errreport.ByReports} {
		want := all
		if sort == errreport.ByReports {
			want = byReports
		}
		var got []errreport.Issue
		p := store.Page{Limit: 1}
		for range 10 {
			page, err := h.listIssues(a.ID, errreport.IssueFilter{Sort: sort}, p)
			if err != nil {
				h.t.Fatalf("ListIssues(%s, %+v) = %v", sort, p, err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			p.After = sort.SortKey(page[0])
		}
		wantEqual(h.t, fmt.Sprintf("ListIssues(%s) a page of one at a time", sort), ids(got), nil, ids(want))
	}
	heater := errreport.IssueID(errreport.Signature(recs[0].Report))
	pump := errreport.IssueID(errreport.Signature(recs[3].Report))
	dw200 := errreport.IssueID(errreport.Signature(recs[4].Report))
	agent := errreport.IssueID(errreport.Signature(recs[5].Report))
	for _, c := range []struct {
		f    errreport.IssueFilter
		want []string
	}{
		{errreport.IssueFilter{Kind: errreport.Agent}, []string{agent}},
		{errreport.IssueFilter{ImageNames: []string{"apps/dw200"}}, []string{dw200}},
		{errreport.IssueFilter{ImageNames: []string{"apps/dw100", "apps/dw200"}, Sort: errreport.ByReports}, []string{heater, max(pump, dw200), min(pump, dw200)}},
		{errreport.IssueFilter{ImageNames: []string{}}, []string{}},
		{errreport.IssueFilter{Since: recs[4].ReceivedAt}, []string{heater, agent, dw200}},
		{errreport.IssueFilter{Since: recs[4].ReceivedAt.Add(time.Microsecond)}, []string{heater, agent}},
		{errreport.IssueFilter{Kind: errreport.UpdateFailed}, []string{}},
	} {
		got, err := h.listIssues(a.ID, c.f, store.Page{})
		wantEqual(h.t, fmt.Sprintf("ListIssues(%+v)", c.f), ids(got), err, c.want)
	}
	_, err = h.listIssues(a.ID, errreport.IssueFilter{}, store.Page{After: "not a key"})
	wantErr(h.t, "ListIssues(After: malformed)", err, store.ErrNotFound)
}

func testIssueReports(h *harness) {
	a := h.tenant("A")
	recs := h.issueFixture(a.ID)
	heater := errreport.IssueID(errreport.Signature(recs[0].Report))
	want := []errreport.Record{recs[6], recs[2], recs[1], recs[0]}
	got, err := h.listIssueReports(a.ID, heater, store.Page{})
	wantEqual(h.t, "ListIssueReports", got, err, want)
	var paged []errreport.Record
	p := store.Page{Limit: 3}
	for range 5 {
		page, err := h.listIssueReports(a.ID, heater, p)
		if err != nil {
			h.t.Fatal(err)
		}
		paged = append(paged, page...)
		if len(page) < p.Limit {
			break
		}
		p.After = store.ReportKey(page[len(page)-1])
	}
	wantEqual(h.t, "ListIssueReports in pages of 3", paged, nil, want)
	got, err = h.listIssueReports(a.ID, "iss_00000000000000000000", store.Page{})
	wantEmpty(h.t, "ListIssueReports(unknown)", got, err)
}

// testIssuesRetention: deleting the oldest reports in batches takes them out of every
// figure: counts, devices, first seen, versions and days; an issue goes with its last
// report.
func testIssuesRetention(h *harness) {
	a := h.tenant("A")
	recs := h.issueFixture(a.ID)
	now := h.clock
	for cut := 1; cut <= len(recs); cut += 2 {
		before := recs[cut-1].ReceivedAt.Add(time.Microsecond)
		if cut < len(recs) {
			before = recs[cut].ReceivedAt
		}
		// Batches of one: every call deletes the oldest left.
		deleted := 0
		for {
			n, err := h.deleteBefore(a.ID, before, 1)
			if err != nil {
				h.t.Fatalf("DeleteReceivedBefore = %v", err)
			}
			if n == 0 {
				break
			}
			deleted += n
		}
		h.wantIssues(fmt.Sprintf("after deleting the oldest %d", cut), a.ID, now, recs[cut:])
		if cut >= len(recs) {
			break
		}
	}
	// The device counts the bound reads are in step: a device's reports can be added again.
	d := h.claimed(a.ID)
	late := h.mustAddReport(a.ID, d.ID, h.issueReport("apps/dw100", "2.0.0", "heater at 1 C"), h.tick())
	h.wantIssues("after a new report", a.ID, h.clock, []errreport.Record{late})
}

// testIssuesBound: the per-device bound deletes a device's oldest reports and takes them
// out of their issues.
func testIssuesBound(h *harness) {
	a := h.tenant("A")
	d, other := h.claimed(a.ID), h.claimed(a.ID)
	var recs []errreport.Record
	recs = append(recs, h.mustAddReport(a.ID, other.ID, h.issueReport("apps/dw100", "1.0.0", "heater"), h.tick()))
	const perTx = 2500
	for start := 0; start < store.MaxErrorReportsPerDevice; start += perTx {
		h.mustIn(fmt.Sprintf("ErrorReports().Add #%d..", start), a.ID, func(tt store.TenantTx) error {
			for i := start; i < min(start+perTx, store.MaxErrorReportsPerDevice); i++ {
				msg, v := "heater", "1.0.0"
				if i < 2 {
					msg, v = "once", "0.9.0" // an issue, and a version, only the oldest two have
				}
				r, at := h.issueReport("apps/dw100", v, msg), h.tick()
				rec := errreport.Record{DeviceID: d.ID, ReceivedAt: at, Report: r}
				if i >= 3 { // the bound deletes the oldest three
					recs = append(recs, rec)
				}
				if err := tt.ErrorReports().Add(h.ctx(), d.ID, r, at); err != nil {
					return err
				}
			}
			return nil
		})
	}
	extra := []errreport.Record{
		h.mustAddReport(a.ID, d.ID, h.issueReport("apps/dw100", "1.0.0", "pump"), h.tick()),
		h.mustAddReport(a.ID, d.ID, h.issueReport("apps/dw100", "1.0.0", "pump"), h.tick()),
		h.mustAddReport(a.ID, d.ID, h.issueReport("apps/dw100", "1.0.0", "pump"), h.tick()),
	}
	h.wantIssues("after the bound", a.ID, h.clock, append(recs, extra...))
}

func testIssuesDuplicate(h *harness) {
	a := h.tenant("A")
	d := h.claimed(a.ID)
	r := h.issueReport("apps/dw100", "1.0.0", "heater")
	rec := h.mustAddReport(a.ID, d.ID, r, h.tick())
	h.mustAddReport(a.ID, d.ID, r, h.tick())
	h.wantIssues("after the same report twice", a.ID, h.clock, []errreport.Record{rec})
}

// CheckIssueBackfill attacks migration 14 with reports an older release stored: rows
// without an issue. older opens a fresh database migrated below version 14 and returns it
// as a store, and a function that closes it, migrates it fully and returns the new store.
// Afterwards every report is in its issue exactly as if Add had stored it, and Add goes on
// counting into the backfilled issues.
func CheckIssueBackfill(t *testing.T, older func(t *testing.T) (store.Store, *sql.DB, func() store.Store)) {
	t.Helper()
	old, db, migrate := older(t)
	h := newHarness(t, old)
	a, b := h.tenant("A"), h.tenant("B")
	devs := []device.Device{h.claimed(a.ID), h.claimed(a.ID), h.claimed(b.ID)}
	var recsA, recsB []errreport.Record
	msgs := []string{"heater at 93 C", "heater at 95 C", "pump stuck", "heater at 90 C"}
	for i := range 700 { // more than one backfill batch of 500
		d := devs[i%3]
		r := h.issueReport("apps/dw100", fmt.Sprintf("1.0.%d", i%2), msgs[i%4])
		if i%5 == 0 {
			r.ImageVersion = ""
		}
		rec := errreport.Record{DeviceID: d.ID, ReceivedAt: h.tick().UTC(), Report: r}
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(t.Context(), `INSERT INTO error_reports (tenant_id, device_id, id, kind, at, received_at, body, image_path, image_version)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, d.TenantID, d.ID, r.ID, r.Kind, r.At.UTC(), rec.ReceivedAt, string(body), r.ImagePath, r.ImageVersion); err != nil {
			t.Fatalf("schema 13: insert error report = %v", err)
		}
		if _, err := db.ExecContext(t.Context(), `INSERT INTO error_report_counts (tenant_id, device_id, n) VALUES ($1, $2, 1)
			ON CONFLICT (tenant_id, device_id) DO UPDATE SET n = error_report_counts.n + 1`, d.TenantID, d.ID); err != nil {
			t.Fatalf("schema 13: count error report = %v", err)
		}
		if d.TenantID == a.ID {
			recsA = append(recsA, rec)
		} else {
			recsB = append(recsB, rec)
		}
	}
	clock := h.clock
	h = newHarness(t, migrate())
	h.clock = clock
	h.wantIssues("A after migration 14", a.ID, h.clock, recsA)
	h.wantIssues("B after migration 14", b.ID, h.clock, recsB)
	recsA = append(recsA, h.mustAddReport(a.ID, devs[0].ID, h.issueReport("apps/dw100", "1.0.7", "heater at 1 C"), h.tick()))
	h.wantIssues("A after an Add", a.ID, h.clock, recsA)
	n, err := h.deleteBefore(a.ID, recsA[100].ReceivedAt, 1000)
	wantEqual(t, "DeleteReceivedBefore(the 100 oldest)", n, err, 100)
	h.wantIssues("A after retention", a.ID, h.clock, recsA[100:])
}
