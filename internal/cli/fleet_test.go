package cli

import (
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestFleet_StatusAndDeviceStates: 'moat fleet status' shows each group's should beside
// what its devices run, with the counts and the reasons, and 'moat device list --state'
// lists the devices behind each count with should/does/state columns.
func TestFleet_StatusAndDeviceStates(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	current, behind, never := p.NewDevice(true, "DW100/Production"), p.NewDevice(true, "DW100/Production"), p.NewDevice(true, "DW100/Production")
	for _, d := range []testenv.Device{current, behind} {
		if _, err := p.Attest(d, osImg.Measurement(), app.Measurement()); err != nil {
			t.Fatal(err)
		}
	}
	u := newUser(t)
	u.login(p.Server, p.Server.OperatorToken)
	u.must("tenant", "select", "Contoso")
	app2 := p.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	u.must("deployment", "create", "--device-group", "DW100/Production", "--image", app2.Path)
	if _, err := p.Attest(current, osImg.Measurement(), app2.Measurement()); err != nil {
		t.Fatal(err)
	}

	out := u.must("fleet", "status", "--product", "DW100")
	for _, want := range []string{
		"DW100: 3 devices: 1 current, 1 pending, 0 failed, 0 refused, 1 never attested",
		"moat-os 1.0.0 + dw100-app 2.0.0", "moat-os 1.0.0 + dw100-app 1.0.0", "- (never attested)",
		"os feed Retail: newest os/moat-os/1.0.0", "deployment dep_", "group takes OS updates only",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fleet status lacks %q:\n%s", want, out)
		}
	}
	m := mustJSON[client.FleetStatus](u, "fleet", "status", "--product", "DW100", "--group", "Production")
	if len(m.Groups) != 1 || m.Totals != (client.StateCounts{Devices: 3, Current: 1, Pending: 1, Never: 1}) {
		t.Errorf("fleet status --group Production -o json = %+v, want one group with 1 current, 1 pending, 1 never", m)
	}

	for state, id := range map[string]string{client.StateCurrent: current.ID, client.StatePending: behind.ID, client.StateNever: never.ID} {
		list := mustJSON[[]client.DeviceStatus](u, "device", "list", "--product", "DW100", "--group", "Production", "--state", state)
		if len(list) != 1 || list[0].ID != id || list[0].State != state {
			t.Errorf("device list --state %s = %+v, want %s alone", state, list, id)
		}
	}
	out = u.must("device", "list", "--product", "DW100", "--state", "pending")
	for _, want := range []string{"SHOULD RUN", "DOES RUN", "STATE", behind.ID, "moat-os 1.0.0 + dw100-app 2.0.0", "moat-os 1.0.0 + dw100-app 1.0.0", "pending"} {
		if !strings.Contains(out, want) {
			t.Errorf("device list --state pending lacks %q:\n%s", want, out)
		}
	}
	if list := mustJSON[[]client.DeviceStatus](u, "device", "list", "--product", "DW100", "--state", "failed"); len(list) != 0 {
		t.Errorf("device list --state failed = %+v, want none", list)
	}

	// Usage errors before any request; an unknown product or group is not found.
	u.want(ExitUsage, "fleet", "status")
	u.want(ExitUsage, "device", "list", "--state", "broken", "--product", "DW100")
	u.want(ExitUsage, "device", "list", "--state", "failed")
	u.want(ExitUsage, "device", "list", "--group", "Production")
	u.want(ExitNotFound, "fleet", "status", "--product", "DW999")
	u.want(ExitNotFound, "fleet", "status", "--product", "DW100", "--group", "Nowhere")
}
