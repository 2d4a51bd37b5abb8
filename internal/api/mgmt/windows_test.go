package mgmt_test

import (
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type windowBody struct {
	Days     []string `json:"days"`
	Start    string   `json:"start"`
	Length   string   `json:"length"`
	TimeZone string   `json:"time_zone"`
}

type groupWithWindow struct {
	ID                string      `json:"id"`
	Version           int64       `json:"version"`
	MaintenanceWindow *windowBody `json:"maintenance_window"`
}

type productWithDeferral struct {
	ID       string `json:"id"`
	Version  int64  `json:"version"`
	Deferral int64  `json:"max_update_deferral_seconds"`
}

func etagOf(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// TestAPI_GroupMaintenanceWindowRoundTrips: a window given at creation or by an update is
// what the group reads back; clear_maintenance_window removes it; invalid windows are
// refused naming the field, and change nothing.
func TestAPI_GroupMaintenanceWindowRoundTrips(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.a
	win := &windowBody{Days: []string{"mon", "fri"}, Start: "02:00", Length: "3h", TimeZone: "Europe/Berlin"}
	var g groupWithWindow
	a.admin.must(201, "POST", a.productPath()+"/device-groups", map[string]any{
		"name": "Night", "os_feed": "Retail", "update_policy": "UpdateAll", "maintenance_window": win,
	}).decode(t, &g)
	path := a.productPath() + "/device-groups/" + g.ID
	var got groupWithWindow
	a.admin.must(200, "GET", path, nil).decode(t, &got)
	if d := cmp.Diff(win, got.MaintenanceWindow); d != "" {
		t.Errorf("GET group after create: window (-want +got):\n%s", d)
	}

	for _, bad := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"maintenance_window": windowBody{Days: []string{"someday"}, Start: "02:00", Length: "3h", TimeZone: "UTC"}}, "maintenance_window.days[0]"},
		{map[string]any{"maintenance_window": windowBody{Days: []string{"mon"}, Start: "26:00", Length: "3h", TimeZone: "UTC"}}, "maintenance_window.start"},
		{map[string]any{"maintenance_window": windowBody{Days: []string{"mon"}, Start: "02:00", Length: "48h", TimeZone: "UTC"}}, "maintenance_window.length"},
		{map[string]any{"maintenance_window": windowBody{Days: []string{"mon"}, Start: "02:00", Length: "3h", TimeZone: "Nowhere/Atlantis"}}, "maintenance_window.time_zone"},
		{map[string]any{"maintenance_window": win, "clear_maintenance_window": true}, "clear_maintenance_window"},
	} {
		if p := a.admin.must(400, "PATCH", path, bad.body, "If-Match", etagOf(got.Version)).problem(t); p.Field != bad.field {
			t.Errorf("PATCH %v: field %q, want %s", bad.body, p.Field, bad.field)
		}
	}
	if p := a.admin.must(400, "POST", a.productPath()+"/device-groups", map[string]any{
		"name": "Bad", "os_feed": "Retail", "update_policy": "UpdateAll",
		"maintenance_window": windowBody{Days: []string{"mon"}, Start: "02:00", Length: "10m", TimeZone: "UTC"},
	}).problem(t); p.Field != "maintenance_window.length" {
		t.Errorf("POST group with a 10m window: field %q, want maintenance_window.length", p.Field)
	}

	win2 := &windowBody{Days: []string{"sun"}, Start: "23:30", Length: "24h", TimeZone: "America/New_York"}
	a.admin.must(200, "PATCH", path, map[string]any{"maintenance_window": win2}, "If-Match", etagOf(got.Version)).decode(t, &got)
	a.admin.must(200, "GET", path, nil).decode(t, &got)
	if d := cmp.Diff(win2, got.MaintenanceWindow); d != "" {
		t.Errorf("GET group after update: window (-want +got):\n%s", d)
	}
	// Another update leaves the window alone.
	a.admin.must(200, "PATCH", path, map[string]any{"description": "night shift"}, "If-Match", etagOf(got.Version)).decode(t, &got)
	if d := cmp.Diff(win2, got.MaintenanceWindow); d != "" {
		t.Errorf("group after an unrelated update: window (-want +got):\n%s", d)
	}
	a.admin.must(200, "PATCH", path, map[string]any{"clear_maintenance_window": true}, "If-Match", etagOf(got.Version))
	var cleared groupWithWindow
	a.admin.must(200, "GET", path, nil).decode(t, &cleared)
	if cleared.MaintenanceWindow != nil {
		t.Errorf("GET group after clearing: window %+v, want none", cleared.MaintenanceWindow)
	}
}

// TestAPI_ProductDeferralRoundTrips: a product defers 24 h unless told; the bound set at
// creation or by an update is read back; one outside 0 to 7 days is refused.
func TestAPI_ProductDeferralRoundTrips(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.a
	var p productWithDeferral
	a.admin.must(200, "GET", a.productPath(), nil).decode(t, &p)
	if p.Deferral != 86400 {
		t.Errorf("default max_update_deferral_seconds = %d, want 86400", p.Deferral)
	}
	a.admin.must(201, "POST", "/api/v1/tenants/"+a.tenant+"/products", map[string]any{"name": "DW200", "max_update_deferral_seconds": 0}).decode(t, &p)
	if p.Deferral != 0 {
		t.Errorf("created with 0: max_update_deferral_seconds = %d", p.Deferral)
	}
	path := "/api/v1/tenants/" + a.tenant + "/products/" + p.ID
	a.admin.must(200, "PATCH", path, map[string]any{"max_update_deferral_seconds": 3600}, "If-Match", etagOf(p.Version)).decode(t, &p)
	a.admin.must(200, "GET", path, nil).decode(t, &p)
	if p.Deferral != 3600 {
		t.Errorf("after update: max_update_deferral_seconds = %d, want 3600", p.Deferral)
	}
	for _, bad := range []int64{-1, 7*86400 + 1} {
		if pr := a.admin.must(400, "PATCH", path, map[string]any{"max_update_deferral_seconds": bad}, "If-Match", etagOf(p.Version)).problem(t); pr.Field != "max_update_deferral_seconds" {
			t.Errorf("PATCH deferral %d: field %q", bad, pr.Field)
		}
		if pr := a.admin.must(400, "POST", "/api/v1/tenants/"+a.tenant+"/products", map[string]any{"name": "DW300", "max_update_deferral_seconds": bad}).problem(t); pr.Field != "max_update_deferral_seconds" {
			t.Errorf("POST deferral %d: field %q", bad, pr.Field)
		}
	}
	a.admin.must(200, "GET", path, nil).decode(t, &p)
	if p.Deferral != 3600 {
		t.Errorf("after refused updates: max_update_deferral_seconds = %d, want 3600", p.Deferral)
	}
}
