package agent_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
)

// history is the update history the service holds for a device's target, oldest first.
func (f *fleet) history(t *testing.T, id, target string) []client.UpdateState {
	t.Helper()
	recs, err := client.Collect(context.Background(), client.ListOptions{Limit: 1000}, func(ctx context.Context, o client.ListOptions) (client.Page[client.UpdateStateRecord], error) {
		return f.Admin.ListUpdateStates(ctx, f.Tenant, id, o)
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []client.UpdateState
	for _, r := range recs {
		if r.DeviceID != id {
			t.Errorf("update state %s is filed under %s, want %s", r.Report.ID, r.DeviceID, id)
		}
		if r.Report.Target == target {
			out = append(out, r.Report)
		}
	}
	slices.Reverse(out)
	return out
}

// steps names the states of a history, a download's progress once: "assigned downloading
// installed committed".
func steps(h []client.UpdateState) string {
	var s []string
	for _, r := range h {
		if len(s) == 0 || s[len(s)-1] != r.State {
			s = append(s, r.State)
		}
	}
	return strings.Join(s, " ")
}

// TestAgent_ReportsUpdateSteps is the update state from the device, end to end: a running
// device takes app 1.1.0 through assigned, downloading (ending with every byte), installed
// on trial and committed, each reported to the service as it happens; then 2.0.0, which
// crashes, ends rolled back with its reason, and the device's latest state says so.
func TestAgent_ReportsUpdateSteps(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	f.start(t, d, t.TempDir())
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	eventually(t, "1.1.0 committed and reported", func() (bool, string) {
		h := f.history(t, d.ID, v11.Path)
		return steps(h) == "assigned downloading installed committed", steps(h)
	})
	h := f.history(t, d.ID, v11.Path)
	for _, r := range h {
		if r.Kind != "app" || r.Version != "1.1.0" {
			t.Errorf("update state %s: kind %q version %q, want app 1.1.0", r.State, r.Kind, r.Version)
		}
	}
	var last client.UpdateState
	for _, r := range h {
		if r.State == client.UpdateDownloading {
			last = r
		}
	}
	if last.BytesTotal <= 0 || last.BytesDone != last.BytesTotal {
		t.Errorf("last downloading report: %d of %d bytes, want all of them", last.BytesDone, last.BytesTotal)
	}
	if rec := f.record(t, d.ID); rec.UpdateState != client.UpdateCommitted || rec.LastSeenAt == nil {
		t.Errorf("device: update state %q, last seen %v; want committed and a last contact", rec.UpdateState, rec.LastSeenAt)
	}

	bad := f.PublishAppWith("dw100-app", "2.0.0", 2, "DW100", testApp(t, "crash"))
	f.deploy(bad.Path)
	eventually(t, "2.0.0 rolled back and reported", func() (bool, string) {
		h := f.history(t, d.ID, bad.Path)
		return strings.HasSuffix(steps(h), "installed rolled_back"), steps(h)
	})
	h = f.history(t, d.ID, bad.Path)
	if s := steps(h); s != "assigned downloading installed rolled_back" {
		t.Errorf("2.0.0 history = %s, want assigned downloading installed rolled_back", s)
	}
	rb := h[len(h)-1]
	if rb.Code != "health_check_failed" || !strings.Contains(rb.Message, "rolled back to "+v11.Path) {
		t.Errorf("rolled_back report: code %q message %q, want health_check_failed naming %s", rb.Code, rb.Message, v11.Path)
	}
	eventually(t, "the device's latest state", func() (bool, string) {
		rec := f.record(t, d.ID)
		return rec.UpdateState == client.UpdateRolledBack, fmt.Sprint(rec.UpdateState)
	})
}
