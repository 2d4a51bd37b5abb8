package fleet_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/device"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// storedDevice reads the device's record as the director reads it.
func storedDevice(t *testing.T, st store.Store, id string) device.Device {
	t.Helper()
	var dev device.Device
	err := st.InReadTx(t.Context(), func(tx store.Tx) error {
		var err error
		dev, err = tx.Devices().Get(t.Context(), device.ID(id))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// statusOf returns the device's status from the service's per-device list.
func statusOf(t *testing.T, svc *fleetsvc.Service, tid, id string, f device.Filter) fleetsvc.DeviceStatus {
	t.Helper()
	all, err := svc.DeviceStatuses(t.Context(), tenant.ID(tid), f, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if string(s.ID) == id {
			return s
		}
	}
	t.Fatalf("DeviceStatuses(%+v) has no device %s", f, id)
	return fleetsvc.DeviceStatus{}
}

func targets(s fleetsvc.Should) []string {
	var out []string
	if s.OS != nil {
		out = append(out, s.OS.Target)
	}
	if s.App != nil {
		out = append(out, s.App.Target)
	}
	return out
}

// TestStatus_ShouldMatchesTheSignedAssignment: what the status says a device should run is
// exactly what the director signs for it, under the default policy, under a policy that
// holds the app back, for an OS-only group, and for a device whose floor forbids its
// group's app (its own should differs from the group's, and says so).
func TestStatus_ShouldMatchesTheSignedAssignment(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	st := f.Server.Store()
	prod, dev := f.Server.Fleet(), f.NewDevice(true, "DW100/Production")
	osOnly := f.NewDevice(true, "DW100/Development")
	// This one attests app 2.0.0 (security version 2), then Production goes back to 1.0.0.
	app2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	floored := f.NewDevice(true, "DW100/Production")
	if _, err := f.Attest(floored, f.os.Measurement(), app2.Measurement()); err != nil {
		t.Fatal(err)
	}
	f.deploy("Production", f.app.Path)

	holdApp := replicaWith(t, st, fleetsvc.Config{Policy: assign.PolicyFunc(func(ctx context.Context, in assign.Input) (assign.Choice, error) {
		c, err := assign.Default.Choose(ctx, in)
		c.App = nil
		return c, err
	})})
	for _, c := range []struct {
		name      string
		svc       *fleetsvc.Service
		dev       testenv.Device
		group     string
		want      []string
		appReason string
		own       bool
	}{
		{"default policy", prod, dev, "Production", []string{f.os.Path, f.app.Path}, "deployment dep_", false},
		{"app held back", holdApp, dev, "Production", []string{f.os.Path}, "policy custom assigns no app", false},
		{"OS-only group", prod, osOnly, "Development", []string{f.os.Path}, "group takes OS updates only", false},
		{"floor above the group's app", prod, floored, "Production", []string{f.os.Path}, "deployment dep_", true},
	} {
		_, a, err := c.svc.Assignment(ctx, storedDevice(t, st, c.dev.ID))
		if err != nil {
			t.Fatal(err)
		}
		var signed []string
		for _, im := range a.Images {
			signed = append(signed, im.Path)
		}
		got := statusOf(t, c.svc, f.Tenant, c.dev.ID, device.Filter{ProductID: product.ID(f.Product)})
		if d := cmp.Diff(signed, targets(got.Should)); d != "" {
			t.Errorf("%s: status should differs from the signed assignment (-signed +should):\n%s", c.name, d)
		}
		if d := cmp.Diff(c.want, signed); d != "" {
			t.Errorf("%s: signed assignment (-want +got):\n%s", c.name, d)
		}
		if c.own && !strings.Contains(got.Should.AppReason, "below the device's floor for apps/dw100-app") {
			t.Errorf("%s: app reason = %q, want it to name the floor", c.name, got.Should.AppReason)
		}
		if !strings.HasPrefix(got.Should.AppReason, c.appReason) {
			t.Errorf("%s: app reason = %q, want it to start with %q", c.name, got.Should.AppReason, c.appReason)
		}
		if !strings.HasPrefix(got.Should.OSReason, "os feed Retail: newest "+f.os.Path) {
			t.Errorf("%s: OS reason = %q, want the feed and the newest image", c.name, got.Should.OSReason)
		}
		if got.OwnShould != c.own || c.own && (got.GroupShould == nil || got.GroupShould.App == nil || got.GroupShould.App.Target != f.app.Path) {
			t.Errorf("%s: own should = %v, group should %+v; want own %v", c.name, got.OwnShould, got.GroupShould, c.own)
		}
		// The group's should is the assignment of a device of the group without floors.
		gs, err := c.svc.GroupShoulds(ctx, tenant.ID(f.Tenant), product.ID(f.Product), product.GroupID(f.group(c.group).ID))
		if err != nil || len(gs) != 1 {
			t.Fatalf("GroupShoulds(%s) = %v, %v", c.group, gs, err)
		}
		if !c.own && !cmp.Equal(gs[0].Should, got.Should) {
			t.Errorf("%s: group should %+v, device should %+v; want the same", c.name, gs[0].Should, got.Should)
		}
	}
}

// setUpdateState writes the device's latest update state as the device API will.
func setUpdateState(t *testing.T, st store.Store, id, state string) {
	t.Helper()
	db := st.(interface{ SQL() *sql.DB }).SQL()
	if _, err := db.ExecContext(t.Context(), `UPDATE devices SET update_state = $1, update_state_at = $2 WHERE id = $3`,
		state, time.Now().UTC(), id); err != nil {
		t.Fatal(err)
	}
}

// TestStatus_MatrixAgreesWithTheStateFilter: the matrix counts each device of the product
// once, in the state the per-device list gives it, and the state filter lists exactly the
// devices the matrix counts in that state.
func TestStatus_MatrixAgreesWithTheStateFilter(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	st, svc := f.Server.Store(), f.Server.Fleet()
	tid, pid := tenant.ID(f.Tenant), product.ID(f.Product)
	ms := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}
	current := f.NewDevice(true, "DW100/Production")
	behind := f.NewDevice(true, "DW100/Production")
	failed := f.NewDevice(true, "DW100/Production")
	never := f.NewDevice(true, "DW100/Production")
	refused := f.NewDevice(true, "DW100/Production")
	for _, d := range []testenv.Device{current, behind, failed, refused} {
		if _, err := f.Attest(d, ms...); err != nil {
			t.Fatal(err)
		}
	}
	blocked := true
	f.Update(refused.ID, client.DeviceUpdate{Blocked: &blocked})
	if _, err := f.Attest(refused, ms...); err == nil {
		t.Fatal("a blocked device attested")
	}
	// Production moves on to app 1.1.0: current updates, behind and failed do not.
	app11 := f.PublishApp("dw100-app", "1.1.0", 1, "DW100")
	f.deploy("Production", app11.Path)
	if _, err := f.Attest(current, f.os.Measurement(), app11.Measurement()); err != nil {
		t.Fatal(err)
	}
	setUpdateState(t, st, failed.ID, "rolled_back")
	setUpdateState(t, st, behind.ID, "downloading")

	m, err := svc.Status(ctx, tid, pid, "")
	if err != nil {
		t.Fatal(err)
	}
	want := fleetsvc.StateCounts{Devices: 5, Current: 1, Pending: 1, Failed: 1, Refused: 1, Never: 1}
	if d := cmp.Diff(want, m.Totals); d != "" {
		t.Errorf("Status totals (-want +got):\n%s", d)
	}
	if len(m.Groups) != len(product.DefaultGroups) || m.Product != "DW100" || m.Truncated {
		t.Errorf("Status = %d groups, product %q, truncated %v; want %d, DW100, false", len(m.Groups), m.Product, m.Truncated, len(product.DefaultGroups))
	}
	var prodGroup fleetsvc.GroupStatus
	for _, g := range m.Groups {
		if g.Group == "Production" {
			prodGroup = g
		}
	}
	if prodGroup.Should.App == nil || prodGroup.Should.App.Target != app11.Path || prodGroup.Totals != want {
		t.Errorf("Production: should %+v, totals %+v; want app %s and %+v", prodGroup.Should, prodGroup.Totals, app11.Path, want)
	}
	counted := map[string]int{
		device.StateCurrent: m.Totals.Current, device.StatePending: m.Totals.Pending, device.StateFailed: m.Totals.Failed,
		device.StateRefused: m.Totals.Refused, device.StateNever: m.Totals.Never,
	}
	wantIDs := map[string]string{device.StateCurrent: current.ID, device.StatePending: behind.ID, device.StateFailed: failed.ID,
		device.StateRefused: refused.ID, device.StateNever: never.ID}
	for _, state := range device.States {
		filter, err := svc.StateFilter(ctx, tid, pid, "", state)
		if err != nil {
			t.Fatal(err)
		}
		list, err := svc.DeviceStatuses(ctx, tid, filter, store.Page{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != counted[state] || len(list) != 1 || string(list[0].ID) != wantIDs[state] || list[0].State != state {
			t.Errorf("DeviceStatuses(%s) = %+v, want %s alone (the matrix counts %d)", state, list, wantIDs[state], counted[state])
		}
	}
	if _, err := svc.StateFilter(ctx, tid, pid, "", "stale"); err == nil {
		t.Error("StateFilter(stale) error = nil, want ErrUnknownState")
	}
}
