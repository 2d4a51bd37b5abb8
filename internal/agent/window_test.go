package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/boot"
	devicepkg "github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/sdk"
)

// Issue 12 on the device: maintenance windows and the app's update deferral, with real
// agents against a real server. Time is injected (clock): the tests that move it move the
// device's and the server's together; nothing sleeps.

// clock is a device clock ahead of the real one by an offset the test sets.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }
func (c *clock) setTo(t time.Time)       { c.off.Store(int64(time.Until(t))) }

// newClockedFleet is newFleet with the server on clk too: the test moves the device and
// the service forward together, as real time would (attestation refuses evidence more
// than five minutes off the service's clock).
func newClockedFleet(t *testing.T, clk *clock) *fleet {
	t.Helper()
	p := testenv.NewPlatform(t, testenv.WithConfig(func(c *server.Config) { c.Now = clk.now }))
	f := &fleet{Platform: p}
	f.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	f.app = p.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(f.app.Path)
	return f
}

// startClocked is fleet.start with the device's clock, and a count of the checks that
// reached the install gate with the image kept on disk (each re-verifies it: step
// "downloaded").
func (f *fleet) startClocked(t *testing.T, d testenv.Device, state string, clk *clock, downloads *atomic.Int32) *device {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	cfg := f.agentConfig(t, d, state)
	cfg.Now = clk.now
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(tlog{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Step = func(step string) {
		if step == "downloaded" && downloads != nil {
			downloads.Add(1)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dv := &device{Device: d, agent: a, state: state, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { dv.done <- a.Run(ctx) }()
	t.Cleanup(func() { dv.stop(t) })
	return dv
}

// setWindow gives DW100/Production the maintenance window w.
func (f *fleet) setWindow(t *testing.T, w client.MaintenanceWindow) {
	t.Helper()
	ctx := context.Background()
	g := f.group(t, "Production")
	if _, err := f.Admin.UpdateDeviceGroup(ctx, f.Tenant, f.Product, g.ID, g.Version, client.DeviceGroupUpdate{MaintenanceWindow: &w}); err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) group(t *testing.T, name string) client.DeviceGroup {
	t.Helper()
	gs, err := f.Admin.ListDeviceGroups(context.Background(), f.Tenant, f.Product, client.ListOptions{Name: name})
	if err != nil || len(gs.Items) != 1 {
		t.Fatalf("group %s: %v", name, err)
	}
	return gs.Items[0]
}

// setDeferral sets DW100's max update deferral.
func (f *fleet) setDeferral(t *testing.T, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	p, err := f.Admin.GetProduct(ctx, f.Tenant, f.Product)
	if err != nil {
		t.Fatal(err)
	}
	secs := int64(d / time.Second)
	if _, err := f.Admin.UpdateProduct(ctx, f.Tenant, f.Product, p.Version, client.ProductUpdate{MaxUpdateDeferralSeconds: &secs}); err != nil {
		t.Fatal(err)
	}
}

// windowFrom is a daily 15-minute window in UTC starting at start (to the minute).
func windowFrom(start time.Time) client.MaintenanceWindow {
	return client.MaintenanceWindow{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"},
		Start: start.UTC().Format("15:04"), Length: "15m", TimeZone: "UTC"}
}

// deferredState returns the newest deferred state the service holds for target.
func (f *fleet) deferredState(t *testing.T, id, target string) (client.UpdateState, bool) {
	t.Helper()
	page, err := f.Admin.ListUpdateStates(context.Background(), f.Tenant, id, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range page.Items {
		if r.Report.Target == target && r.Report.State == client.UpdateDeferred {
			return r.Report, true
		}
	}
	return client.UpdateState{}, false
}

// deferredAs waits until the service holds a deferred state for target with code and, if
// until is not zero, that deferred_until; it returns the state.
func (f *fleet) deferredAs(t *testing.T, id, target, code string, until time.Time) client.UpdateState {
	t.Helper()
	var got client.UpdateState
	eventually(t, "deferred "+code, func() (bool, string) {
		s, ok := f.deferredState(t, id, target)
		got = s
		if !ok || s.Code != code || s.DeferredUntil == nil || !until.IsZero() && !s.DeferredUntil.Equal(until) {
			return false, fmt.Sprintf("newest deferred state %+v, want code %s until %v", s, code, until)
		}
		return true, ""
	})
	return got
}

// nothingOnTrial checks that the device still runs app and has nothing on trial.
func nothingOnTrial(t *testing.T, state, app string) {
	t.Helper()
	rec, err := boot.ReadRecord(state)
	if err != nil {
		t.Fatal(err)
	}
	if rec.App.Pending != "" || rec.OS.Pending != "" || rec.App.Images[rec.App.Active].Path != app {
		t.Fatalf("boot record: app %+v, OS pending %q; want %s active and nothing on trial", rec.App, rec.OS.Pending, app)
	}
}

// keptDownload reports whether the image sha256 waits in the downloads directory.
func keptDownload(state, sha256 string) bool {
	m, _ := filepath.Glob(filepath.Join(state, "downloads", "app-"+sha256[:16]+".pkg"))
	return len(m) == 1
}

// checkRuns nudges the agent and waits until a check has passed the install gate again.
func checkRuns(t *testing.T, dv *device, downloads *atomic.Int32) {
	t.Helper()
	n := downloads.Load()
	dv.agent.Nudge()
	eventually(t, "a check with the kept download", func() (bool, string) {
		return downloads.Load() > n, fmt.Sprintf("%d checks", downloads.Load())
	})
}

// appClient connects to the running app's local API as the app would.
func appClient(t *testing.T, state string) *sdk.Client {
	t.Helper()
	sock := filepath.Join(state, "run", "app.sock")
	eventually(t, "the app's socket", func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})
	c, err := sdk.ConnectSocket(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAgent_OutsideWindowDownloadsButDoesNotInstall: with the group's window half an hour
// ahead, a new app is downloaded and verified at once, kept, reported deferred until the
// window opens with code maintenance_window, and nothing goes on trial, check after
// check; once the device's clock is inside the window it installs and runs it.
func TestAgent_OutsideWindowDownloadsButDoesNotInstall(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	f := newClockedFleet(t, clk)
	d := f.NewDevice(true, "DW100/Production")
	var downloads atomic.Int32
	state := t.TempDir()
	dv := f.startClocked(t, d, state, clk, &downloads)
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	start := time.Now().Add(30 * time.Minute).Truncate(time.Minute)
	f.setWindow(t, windowFrom(start))
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)

	f.deferredAs(t, d.ID, v11.Path, agent.CodeMaintenanceWindow, start.UTC())
	if !keptDownload(state, v11.SHA256) {
		t.Error("the deferred image is not kept in the downloads directory")
	}
	nothingOnTrial(t, state, f.app.Path)
	checkRuns(t, dv, &downloads) // another check: still only downloaded
	nothingOnTrial(t, state, f.app.Path)

	clk.setTo(start.Add(time.Minute))
	dv.agent.Nudge()
	eventually(t, "installs 1.1.0 inside the window", attested(f, t, d.ID, f.os.Path, v11.Path))
}

// TestAgent_IgnoreWindowInstallsAtOnce: a deployment that ignores the window (a security
// update) is installed outside it at once.
func TestAgent_IgnoreWindowInstallsAtOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	dv := f.start(t, d, t.TempDir())
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	f.setWindow(t, windowFrom(time.Now().Add(2*time.Hour)))
	sec := f.PublishAppWith("dw100-app", "1.0.1", 2, "DW100", testApp(t, "healthy"))
	f.plantDeployment(t, sec, true)
	dv.agent.Nudge()
	eventually(t, "installs the security update outside the window", attested(f, t, d.ID, f.os.Path, sec.Path))
}

// plantDeployment deploys im to DW100/Production through the store, with ignoreWindow (the
// deployment API's flag is another change's).
func (f *fleet) plantDeployment(t *testing.T, im testenv.Image, ignoreWindow bool) {
	t.Helper()
	g := f.group(t, "Production")
	now := time.Now()
	dep := devicepkg.Deployment{ID: ident.New(devicepkg.DeploymentIDPrefix, now), TenantID: tenant.ID(f.Tenant), ProductID: product.ID(f.Product),
		GroupID: product.GroupID(g.ID), Target: im.Path, SHA256: im.SHA256, CreatedAt: now, CreatedBy: "test", IgnoreWindow: ignoreWindow}
	err := f.Server.Store().InTx(context.Background(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(dep.TenantID)
		if err != nil {
			return err
		}
		return tt.Deployments().Create(context.Background(), dep)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAgent_DeferralIsBounded: the app defers for two hours, the product allows ten
// minutes. The agent holds the update, reports deferred until ten minutes after it first
// held it (not the app's two hours), still holds it five minutes on, and installs it once
// the bound has passed although the app still defers.
func TestAgent_DeferralIsBounded(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	f := newClockedFleet(t, clk)
	f.setDeferral(t, 10*time.Minute)
	d := f.NewDevice(true, "DW100/Production")
	var downloads atomic.Int32
	state := t.TempDir()
	dv := f.startClocked(t, d, state, clk, &downloads)
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	app := appClient(t, state)
	asked, err := app.DeferUpdates(t.Context(), 2*time.Hour)
	if err != nil {
		t.Fatalf("DeferUpdates = %v", err)
	}
	before := clk.now()
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	st := f.deferredAs(t, d.ID, v11.Path, agent.CodeAppDeferred, time.Time{})
	bound := *st.DeferredUntil
	if bound.Before(before.Add(10*time.Minute).Truncate(time.Second)) || bound.After(clk.now().Add(10*time.Minute)) || !bound.Before(asked) {
		t.Fatalf("deferred until %v; want ten minutes after the first hold (held from after %v), before the app's %v", bound, before, asked)
	}
	nothingOnTrial(t, state, f.app.Path)

	clk.advance(5 * time.Minute)
	checkRuns(t, dv, &downloads)
	nothingOnTrial(t, state, f.app.Path)

	clk.setTo(bound.Add(time.Second))
	dv.agent.Nudge()
	eventually(t, "installs 1.1.0 once the bound passed", attested(f, t, d.ID, f.os.Path, v11.Path))
}

// TestAgent_AllowUpdatesInstalls: an update held by the app's deferral installs as soon as
// the app allows updates, with no nudge from the test.
func TestAgent_AllowUpdatesInstalls(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	f.start(t, d, state)
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	app := appClient(t, state)
	if _, err := app.DeferUpdates(t.Context(), 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	f.deferredAs(t, d.ID, v11.Path, agent.CodeAppDeferred, time.Time{})
	nothingOnTrial(t, state, f.app.Path)

	if err := app.AllowUpdates(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "installs 1.1.0 once the app allows", attested(f, t, d.ID, f.os.Path, v11.Path))
}

// TestAgent_DeferralSurvivesRestart: the bound runs from the first hold, kept in the state
// directory: an agent restarted five minutes into a ten-minute bound reports the same
// deferred-until, not one ten minutes from its restart, and installs when it passes.
func TestAgent_DeferralSurvivesRestart(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	f := newClockedFleet(t, clk)
	f.setDeferral(t, 10*time.Minute)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	dv := f.startClocked(t, d, state, clk, nil)
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	app := appClient(t, state)
	if _, err := app.DeferUpdates(t.Context(), 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	app.Close()
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	first := f.deferredAs(t, d.ID, v11.Path, agent.CodeAppDeferred, time.Time{})
	bound := *first.DeferredUntil
	dv.stop(t)

	clk.advance(5 * time.Minute)
	dv = f.startClocked(t, d, state, clk, nil)
	eventually(t, "the restarted agent reports the same bound", func() (bool, string) {
		s, ok := f.deferredState(t, d.ID, v11.Path)
		if !ok || s.ID == first.ID {
			return false, "no new deferred state"
		}
		if !s.DeferredUntil.Equal(bound) {
			t.Fatalf("after the restart: deferred until %v, want %v (the bound from the first hold)", s.DeferredUntil, bound)
		}
		return true, ""
	})
	nothingOnTrial(t, state, f.app.Path)

	clk.setTo(bound.Add(time.Second))
	dv.agent.Nudge()
	eventually(t, "installs 1.1.0 once the bound passed", attested(f, t, d.ID, f.os.Path, v11.Path))
	if strings.Contains(dv.logs.String(), "update deferral state unreadable") {
		t.Error("the deferral state was unreadable after the restart")
	}
}
