package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
)

// TestAssignment_CarriesInstallPolicy: the signed assignment lists the group's maintenance
// window over the next 8 days, the product's deferral bound, and ignore_window on the app
// of a deployment that ignores the window; a change of window or bound changes the
// device's update generation, so a waiting device hears of it at once.
func TestAssignment_CarriesInstallPolicy(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	st := f.Server.Store()
	readDev := func() device.Device {
		var dev device.Device
		if err := st.InReadTx(ctx, func(tx store.Tx) error {
			var err error
			dev, err = tx.Devices().Get(ctx, device.ID(d.ID))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return dev
	}
	dev := readDev()
	svc := replicaWith(t, st, fleetsvc.Config{})
	generation := func() string {
		u, err := svc.WaitUpdates(ctx, dev, "")
		if err != nil {
			t.Fatal(err)
		}
		return u.Generation
	}

	_, a, err := svc.Assignment(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if a.InstallWindows != nil || a.MaxDeferralSeconds != 86400 {
		t.Errorf("without a window: windows %v, max deferral %d; want none and 86400", a.InstallWindows, a.MaxDeferralSeconds)
	}
	gen0 := generation()

	g := f.group("Production")
	if _, err := f.Admin.UpdateDeviceGroup(context.Background(), f.Tenant, f.Product, g.ID, g.Version, client.DeviceGroupUpdate{
		MaintenanceWindow: &client.MaintenanceWindow{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Start: "02:00", Length: "1h", TimeZone: "UTC"},
	}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	_, a, err = svc.Assignment(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.InstallWindows); n < 8 || n > 9 {
		t.Fatalf("daily window over 8 days: %d windows %v", n, a.InstallWindows)
	}
	for _, w := range a.InstallWindows {
		if w.From.Hour() != 2 || w.From.Minute() != 0 || w.Until.Sub(w.From) != time.Hour {
			t.Errorf("window %v, want 02:00 to 03:00 UTC", w)
		}
	}
	if last := a.InstallWindows[len(a.InstallWindows)-1]; last.From.After(before.Add(8*24*time.Hour + time.Minute)) {
		t.Errorf("last window %v beyond the 8-day horizon", last)
	}
	if first := a.InstallWindows[0]; !first.Until.After(before.Add(-time.Minute)) {
		t.Errorf("first window %v is over", first)
	}
	gen1 := generation()
	if gen1 == gen0 {
		t.Error("the generation did not change with the maintenance window")
	}

	p, err := f.Admin.GetProduct(ctx, f.Tenant, f.Product)
	if err != nil {
		t.Fatal(err)
	}
	bound := int64(3600)
	if _, err := f.Admin.UpdateProduct(ctx, f.Tenant, f.Product, p.Version, client.ProductUpdate{MaxUpdateDeferralSeconds: &bound}); err != nil {
		t.Fatal(err)
	}
	if _, a, err = svc.Assignment(ctx, dev); err != nil || a.MaxDeferralSeconds != 3600 {
		t.Errorf("after the product update: max deferral %d, %v; want 3600", a.MaxDeferralSeconds, err)
	}
	if generation() == gen1 {
		t.Error("the generation did not change with the deferral bound")
	}

	// A deployment that ignores the window marks its app image, not the OS.
	now := time.Now()
	dep := device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: dev.TenantID, ProductID: dev.ProductID,
		GroupID: dev.GroupID, Target: f.app.Path, SHA256: f.app.SHA256, CreatedAt: now, CreatedBy: "test", IgnoreWindow: true}
	if err := st.InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		return tt.Deployments().Create(ctx, dep)
	}); err != nil {
		t.Fatal(err)
	}
	if _, a, err = svc.Assignment(ctx, dev); err != nil {
		t.Fatal(err)
	}
	for _, im := range a.Images {
		if want := im.Path == f.app.Path; im.IgnoreWindow != want {
			t.Errorf("image %s: ignore_window %v, want %v", im.Path, im.IgnoreWindow, want)
		}
	}
	if len(a.Images) != 2 {
		t.Errorf("assigned %d images, want the OS and the app", len(a.Images))
	}
}
