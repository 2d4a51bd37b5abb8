package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/device"
	fl "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// wakeWithin bounds how long a woken device may take to answer: less than the re-check
// every waiter does anyway (15 s), so only a wake-up answers in time.
const wakeWithin = 30 * time.Second // a bound for a loaded CI machine, not a latency claim

// waiting is a device's long-poll in flight.
type waiting struct {
	cancel context.CancelFunc
	done   chan struct{}
	u      client.Updates
	err    error
}

// wait starts a long-poll of dc since gen and returns once the device waits for a wake-up.
func (f *fleet) wait(t *testing.T, dc *client.Client, gen string) *waiting {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wakeWithin)
	w := &waiting{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.u, w.err = dc.WaitForUpdates(ctx, client.UpdatesWait{Since: gen})
	}()
	svc := f.Server.Fleet()
	for !fl.Armed(svc, tenant.ID(f.Tenant)) {
		select {
		case <-w.done:
			t.Fatalf("wait since %s ended before it waited: %+v, %v", gen, w.u, w.err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return w
}

// changed returns the new generation the woken wait answered.
func (w *waiting) changed(t *testing.T, what, since string) string {
	t.Helper()
	<-w.done
	if w.err != nil || !w.u.Changed || w.u.Generation == since {
		t.Fatalf("%s: the waiting device was answered %+v, %v; want changed within %s", what, w.u, w.err, wakeWithin)
	}
	return w.u.Generation
}

// TestNotify_EachChangeWakesWaitingDevices (issue 10, seam 2): every management change
// that may change what a tenant's devices should run wakes the devices waiting for updates
// (moat_device_update_wakeups_total rises by one), from the code that makes the change,
// not from the HTTP wrapper; where the change alters the waiting device's inputs, its wait
// answers at once.
func TestNotify_EachChangeWakesWaitingDevices(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	dc := f.DeviceClient(cert)
	first, err := dc.WaitForUpdates(ctx, client.UpdatesWait{})
	if err != nil {
		t.Fatal(err)
	}
	gen := first.Generation
	check := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var v2 testenv.Image
	prod := f.group("Production")
	for _, step := range []struct {
		name    string
		change  func()
		changes bool // the waiting device's generation changes
	}{
		{"publish apps.json", func() { v2 = f.PublishApp("dw100-app", "2.0.0", 2, "DW100") }, true},
		{"publish targets.json", func() { f.PublishOS("moat-os", "2.0.0", 2, "Retail") }, true},
		{"create a deployment", func() { f.deploy("Production", v2.Path) }, true},
		{"revoke an image", func() { f.RevokeApp(v2.Path) }, true},
		{"change the group's feed", func() {
			feed := client.OSFeedRetailEval
			check(f.Admin.UpdateDeviceGroup(ctx, f.Tenant, f.Product, prod.ID, prod.Version, client.DeviceGroupUpdate{OSFeed: &feed}))
		}, true},
		{"change the group's policy", func() {
			g := f.group("Production")
			policy := client.UpdatePolicy("UpdateOSOnly")
			check(f.Admin.UpdateDeviceGroup(ctx, f.Tenant, f.Product, g.ID, g.Version, client.DeviceGroupUpdate{UpdatePolicy: &policy}))
		}, true},
		{"move the device", func() { f.Update(d.ID, client.DeviceUpdate{DeviceGroup: ptr("DW100/Development")}) }, true},
		{"rename the product", func() {
			name := "DW100"
			p, err := f.Admin.GetProduct(ctx, f.Tenant, f.Product)
			if err != nil {
				t.Fatal(err)
			}
			check(f.Admin.UpdateProduct(ctx, f.Tenant, f.Product, p.Version, client.ProductUpdate{Name: &name}))
		}, false},
		{"claim a device", func() { f.NewDevice(true, "") }, false},
		{"revoke a signing key", func() {
			keys, err := f.Admin.ListSigningKeys(ctx, f.Tenant, client.ListOptions{})
			if err != nil || len(keys.Items) == 0 {
				t.Fatalf("signing keys: %+v, %v", keys, err)
			}
			check(f.Admin.RevokeSigningKey(ctx, f.Tenant, keys.Items[0].ID))
		}, true}, // the apps it signed leave the catalog at once (defect 7)
		{"block the device", func() { f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(true)}) }, true},
	} {
		w := f.wait(t, dc, gen)
		before := f.metric(t, "moat_device_update_wakeups_total")
		step.change()
		if after := f.metric(t, "moat_device_update_wakeups_total"); after != before+1 {
			t.Errorf("%s: moat_device_update_wakeups_total went from %v to %v, want one more", step.name, before, after)
		}
		if step.changes {
			gen = w.changed(t, step.name, gen)
			continue
		}
		w.cancel()
		<-w.done
		// The server ends the abandoned wait when it sees the connection close; until then
		// it still counts as armed, and the next step's wait must arm itself.
		svc := f.Server.Fleet()
		deadline := time.Now().Add(wakeWithin)
		for fl.Armed(svc, tenant.ID(f.Tenant)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the abandoned wait was still armed after %s", step.name, wakeWithin)
			}
			time.Sleep(5 * time.Millisecond) // polling, not an assertion
		}
	}
}

// TestNotify_WakesOnChangesOutsideTheAPI (issue 10, seam 2): a change made without the
// HTTP layer, as a background job makes it (here a deployment written to the store, then
// Notify), reaches the waiting device at once.
func TestNotify_WakesOnChangesOutsideTheAPI(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	dc := f.DeviceClient(cert)
	first, err := dc.WaitForUpdates(ctx, client.UpdatesWait{})
	if err != nil {
		t.Fatal(err)
	}
	w := f.wait(t, dc, first.Generation)
	g := f.group("Production")
	now := time.Now().UTC()
	err = f.Server.Store().InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(f.Tenant))
		if err != nil {
			return err
		}
		return tt.Deployments().Create(ctx, device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: tenant.ID(f.Tenant),
			ProductID: product.ID(f.Product), GroupID: product.GroupID(g.ID), Target: v2.Path, SHA256: v2.SHA256, CreatedAt: now, CreatedBy: "rollout"})
	})
	if err != nil {
		t.Fatal(err)
	}
	f.Server.Fleet().Notify(tenant.ID(f.Tenant))
	w.changed(t, "a deployment made by a job", first.Generation)
}
