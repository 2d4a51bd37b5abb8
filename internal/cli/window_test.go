package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestDeviceGroup_MaintenanceWindowAndDeferralFlags: --maintenance-window sets a group's
// window (and --clear-maintenance-window removes it), --max-update-deferral a product's
// bound; malformed values are usage errors before any request, and values the server
// refuses change nothing.
func TestDeviceGroup_MaintenanceWindowAndDeferralFlags(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	op.must("tenant", "create", "--name", "Contoso")
	op.must("tenant", "select", "Contoso")

	p := mustJSON[client.Product](op, "product", "create", "--name", "DW100", "--max-update-deferral", "4h")
	if p.MaxUpdateDeferralSeconds != 4*3600 {
		t.Errorf("product create --max-update-deferral 4h: %d seconds", p.MaxUpdateDeferralSeconds)
	}
	p = mustJSON[client.Product](op, "product", "update", "DW100", "--max-update-deferral", "0s")
	if p.MaxUpdateDeferralSeconds != 0 {
		t.Errorf("product update --max-update-deferral 0s: %d seconds", p.MaxUpdateDeferralSeconds)
	}
	for _, bad := range []string{"169h", "-1s", "1.5s", "soon"} {
		op.want(2, "product", "update", "DW100", "--max-update-deferral", bad)
	}

	g := mustJSON[client.DeviceGroup](op, "device-group", "create", "--product", "DW100", "--name", "Night", "--os-feed", "Retail",
		"--update-policy", "UpdateAll", "--maintenance-window", "mon,tue,wed,thu,fri 02:00 3h Europe/Berlin")
	want := &client.MaintenanceWindow{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "02:00", Length: "3h", TimeZone: "Europe/Berlin"}
	if d := cmp.Diff(want, g.MaintenanceWindow); d != "" {
		t.Errorf("device-group create --maintenance-window (-want +got):\n%s", d)
	}
	if out := op.must("device-group", "show", "DW100/Night"); !strings.Contains(out, "mon,tue,wed,thu,fri 02:00 3h Europe/Berlin") {
		t.Errorf("device-group show does not show the window:\n%s", out)
	}
	g = mustJSON[client.DeviceGroup](op, "device-group", "update", "DW100/Night", "--maintenance-window", "daily 23:30 24h UTC")
	if g.MaintenanceWindow == nil || len(g.MaintenanceWindow.Days) != 7 || g.MaintenanceWindow.Start != "23:30" {
		t.Errorf("device-group update --maintenance-window daily: %+v", g.MaintenanceWindow)
	}
	op.want(2, "device-group", "update", "DW100/Night", "--maintenance-window", "mon 02:00 3h")
	op.want(2, "device-group", "update", "DW100/Night", "--maintenance-window", "mon 02:00 3h UTC", "--clear-maintenance-window")
	if r := op.run("device-group", "update", "DW100/Night", "--maintenance-window", "mon 02:00 3h Mars/Olympus"); r.code == 0 {
		t.Errorf("an unknown time zone was accepted")
	}
	g = mustJSON[client.DeviceGroup](op, "device-group", "update", "DW100/Night", "--clear-maintenance-window")
	if g.MaintenanceWindow != nil {
		t.Errorf("device-group update --clear-maintenance-window: window %+v", g.MaintenanceWindow)
	}
	if out := op.must("device-group", "show", "DW100/Night"); !strings.Contains(out, "any time") {
		t.Errorf("device-group show without a window:\n%s", out)
	}
}
