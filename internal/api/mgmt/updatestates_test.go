package mgmt_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/updstate"
)

const statesUploadPath = "/api/v1/device/update-states"

func (w *reportWorld) statesPath(device string) string {
	return "/api/v1/tenants/" + w.p.Tenant + "/devices/" + device + "/update-states"
}

// testStates returns one report of each step of an app update, a second apart, then a
// rollback.
func testStates() []updstate.Report {
	target := "apps/dw100-app/2.0.0"
	var out []updstate.Report
	for i, s := range []updstate.State{updstate.Assigned, updstate.Downloading, updstate.Installed, updstate.RolledBack} {
		at := reportTime.Add(time.Duration(i) * time.Second)
		r := updstate.Report{ID: errreport.NewID(at), At: at, State: s, Kind: updstate.KindApp, Target: target, Version: "2.0.0"}
		switch s {
		case updstate.Downloading:
			r.BytesDone, r.BytesTotal = 512, 4096
		case updstate.RolledBack:
			r.Code, r.Message = "health_check_failed", "the app crashed 3 times"
		}
		out = append(out, r)
	}
	return out
}

func uploadStates(t *testing.T, device *api, rs []updstate.Report) []string {
	t.Helper()
	var acc updstate.Accepted
	device.must(200, "POST", statesUploadPath, updstate.Batch{Reports: rs}).decode(t, &acc)
	return acc.Accepted
}

func (w *reportWorld) states(t *testing.T, device string) []updstate.Record {
	t.Helper()
	var page struct {
		Items []updstate.Record `json:"items"`
	}
	w.admin.must(200, "GET", w.statesPath(device), nil).decode(t, &page)
	return page.Items
}

func stateIDs(recs []updstate.Record) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.Report.ID)
	}
	return ids
}

// TestUpdateStates_StoredUnderCertificateDevice attacks rule 3 on the device API: the
// device is the certificate's. A body cannot name a device (strict decoding refuses the
// field); what a device posts is stored under its own ID only, and its latest state and
// last contact show on its record; the same report IDs from another device are that
// device's.
func TestUpdateStates_StoredUnderCertificateDevice(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		rs := testStates()
		p := w.device.must(400, "POST", statesUploadPath, map[string]any{"device_id": w.dev2.ID, "reports": rs}).problem(t)
		if p.Code != "unknown_field" || p.Field != "device_id" {
			t.Errorf("batch naming another device: code %q field %q, want unknown_field device_id", p.Code, p.Field)
		}
		withDevice := `{"reports":[{"device_id":"` + w.dev2.ID + `","id":"` + rs[0].ID + `","at":"2025-01-01T00:00:00Z","state":"assigned","kind":"app","target":"apps/a/1"}]}`
		if p := w.device.must(400, "POST", statesUploadPath, withDevice).problem(t); p.Code != "unknown_field" {
			t.Errorf("report naming another device: code %q, want unknown_field", p.Code)
		}
		if got := uploadStates(t, w.device, rs); !slices.Equal(got, stateIDs(recordsOf(rs))) {
			t.Errorf("accepted = %v, want %v", got, stateIDs(recordsOf(rs)))
		}
		got := w.states(t, w.dev.ID)
		want := stateIDs(recordsOf(rs))
		slices.Reverse(want)
		if !slices.Equal(stateIDs(got), want) {
			t.Errorf("history = %v, want newest first %v", stateIDs(got), want)
		}
		for _, r := range got {
			if string(r.DeviceID) != w.dev.ID {
				t.Errorf("report %s is stored for %s, want the certificate's device %s", r.Report.ID, r.DeviceID, w.dev.ID)
			}
		}
		if got[0].Report.Code != "health_check_failed" || got[0].Report.Message != rs[3].Message {
			t.Errorf("rolled_back report = %+v, want its reason", got[0].Report)
		}
		if other := w.states(t, w.dev2.ID); len(other) != 0 {
			t.Errorf("dev2 has %d update states, want none", len(other))
		}
		d, err := w.p.Admin.GetDevice(t.Context(), w.p.Tenant, w.dev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.UpdateState != client.UpdateRolledBack || d.UpdateStateAt == nil || !d.UpdateStateAt.Equal(rs[3].At) {
			t.Errorf("device update state = %q at %v, want rolled_back at %v", d.UpdateState, d.UpdateStateAt, rs[3].At)
		}
		if d.LastSeenAt == nil || time.Since(*d.LastSeenAt) > time.Minute {
			t.Errorf("device last seen = %v, want about now", d.LastSeenAt)
		}
		// The same ID from dev2 is dev2's own report and leaves dev's alone.
		uploadStates(t, w.device2, rs[:1])
		if n := len(w.states(t, w.dev2.ID)); n != 1 {
			t.Errorf("dev2 has %d update states, want 1", n)
		}
		if n := len(w.states(t, w.dev.ID)); n != len(rs) {
			t.Errorf("dev has %d update states, want %d", n, len(rs))
		}
		// Through the client too, and a Reader may list.
		page, err := w.p.Admin.ListUpdateStates(t.Context(), w.p.Tenant, w.dev.ID, client.ListOptions{Limit: 1})
		if err != nil || len(page.Items) != 1 || page.Items[0].Report.State != client.UpdateRolledBack || page.NextPageToken == "" {
			t.Errorf("client ListUpdateStates(limit 1) = %+v, %v; want the rollback and a next page", page, err)
		}
		w.reader.must(200, "GET", w.statesPath(w.dev.ID), nil)
		// No certificate or a bearer token: 401 and nothing stored.
		anon := &api{t: t, srv: w.p.Server, http: w.p.Server.HTTPClient(t)}
		anon.must(401, "POST", statesUploadPath, updstate.Batch{Reports: rs})
		w.admin.must(401, "POST", statesUploadPath, updstate.Batch{Reports: rs})
	})
}

func recordsOf(rs []updstate.Report) []updstate.Record {
	out := make([]updstate.Record, len(rs))
	for i, r := range rs {
		out[i] = updstate.Record{Report: r}
	}
	return out
}

// TestUpdateStates_BadBatchChangesNothing: an oversized, malformed or partly invalid batch
// is refused whole with a problem naming the report, and nothing of it is stored (rule 5).
func TestUpdateStates_BadBatchChangesNothing(t *testing.T) {
	t.Parallel()
	onBothPlatforms(t, func(t *testing.T, w *reportWorld) {
		kept := testStates()[:1]
		uploadStates(t, w.device, kept)
		bad := func(fn func(*updstate.Report)) []updstate.Report {
			rs := slices.Clone(testStates()[1:])
			fn(&rs[len(rs)-1])
			return rs
		}
		many := slices.Repeat(testStates()[:1], updstate.MaxBatch+1)
		huge := strings.Repeat("x", updstate.MaxBatchBytes)
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
			field  string
		}{
			{"101 reports", updstate.Batch{Reports: many}, 400, "too_many_reports", "reports"},
			{"no reports", updstate.Batch{Reports: []updstate.Report{}}, 400, "reports_required", "reports"},
			{"unknown state", updstate.Batch{Reports: bad(func(r *updstate.Report) { r.State = "bricked" })}, 400, "invalid_state", "reports[2].state"},
			{"rollback without reason", updstate.Batch{Reports: bad(func(r *updstate.Report) { r.Code = "" })}, 400, "code_required", "reports[2].code"},
			{"bytes on a rollback", updstate.Batch{Reports: bad(func(r *updstate.Report) { r.BytesDone = 1 })}, 400, "field_not_allowed", "reports[2].bytes_done"},
			{"terminal escape", updstate.Batch{Reports: bad(func(r *updstate.Report) { r.Message = "\x1b[2J" })}, 400, "control_character", "reports[2].message"},
			{"target a URL", updstate.Batch{Reports: bad(func(r *updstate.Report) { r.Target = "https://evil/x" })}, 400, "invalid_target", "reports[2].target"},
			{"malformed JSON", `{"reports":[{"id":`, 400, "malformed_json", ""},
			{"wrong type", `{"reports":{}}`, 400, "wrong_type", "reports"},
			{"body over the limit", `{"reports":[{"message":"` + huge + `"}]}`, 413, "body_too_large", ""},
		} {
			r := w.device.do("POST", statesUploadPath, tc.body)
			if r.Status != tc.status {
				t.Errorf("%s: status %d %.300s, want %d", tc.name, r.Status, r.Body, tc.status)
				continue
			}
			if p := r.problem(t); p.Code != tc.code || p.Field != tc.field {
				t.Errorf("%s: code %q field %q, want %q %q", tc.name, p.Code, p.Field, tc.code, tc.field)
			}
		}
		if ids := stateIDs(w.states(t, w.dev.ID)); !slices.Equal(ids, stateIDs(recordsOf(kept))) {
			t.Errorf("after refused batches the device has %v, want only %v", ids, stateIDs(recordsOf(kept)))
		}
		d, err := w.p.Admin.GetDevice(t.Context(), w.p.Tenant, w.dev.ID)
		if err != nil || d.UpdateState != client.UpdateAssigned {
			t.Errorf("device update state = %q (%v), want assigned", d.UpdateState, err)
		}
	})
}

// TestUpdateStates_OtherTenantGetsNotFound attacks rule 3: another tenant's administrator,
// with Contoso's tenant or its own in the path, finds no such device.
func TestUpdateStates_OtherTenantGetsNotFound(t *testing.T) {
	t.Parallel()
	w := newReportWorld(t)
	uploadStates(t, w.device, testStates())
	for _, path := range []string{
		w.statesPath(w.dev.ID),
		"/api/v1/tenants/" + w.fabTenant + "/devices/" + w.dev.ID + "/update-states",
	} {
		if p := w.fabrikam.must(404, "GET", path, nil).problem(t); p.Code != "tenant_not_found" && p.Code != "device_not_found" {
			t.Errorf("Fabrikam GET %s: code %q, want tenant_not_found or device_not_found", path, p.Code)
		}
	}
	for _, id := range []string{strings.Repeat("0", 64), "not-a-device"} {
		w.admin.must(404, "GET", w.statesPath(id), nil)
	}
}
