package fleet_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
)

// The tests of the assignment cache (cache.go, issue 15): a device that names the
// assignment it holds is answered 304 only while nothing it was computed from changed.
// Each test first shows the cache answering 304 (so that it is in play), then makes one
// change and asserts that the next check is answered with a new assignment.

// holder is a device that holds its assignment and checks as the agent does.
type holder struct {
	f    *fleet
	d    testenv.Device
	dc   *client.Client
	held []byte
	a    director.Assignment
}

// hold attests d and fetches its first assignment.
func hold(t *testing.T, f *fleet, d testenv.Device) *holder {
	t.Helper()
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	return holdWith(t, f, d, cert)
}

func holdWith(t *testing.T, f *fleet, d testenv.Device, cert tls.Certificate) *holder {
	t.Helper()
	h := &holder{f: f, d: d, dc: f.DeviceClient(cert)}
	data, err := h.dc.GetAssignment(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	h.accept(t, data)
	return h
}

func (h *holder) accept(t *testing.T, data []byte) {
	t.Helper()
	a, err := director.Verify(data, h.f.directorKey(t), director.Expect{DeviceID: h.d.ID, TenantID: h.f.Tenant,
		Now: time.Now().Add(time.Duration(h.f.offset.Load()))})
	if err != nil {
		t.Fatalf("the served assignment does not verify: %v", err)
	}
	h.held, h.a = data, a
}

// check is one conditional update check; changed is false on 304.
func (h *holder) check(t *testing.T) (bool, error) {
	t.Helper()
	data, changed, err := h.dc.GetAssignmentIfChanged(t.Context(), h.held)
	if err != nil {
		return false, err
	}
	if changed {
		h.accept(t, data)
	}
	return changed, nil
}

// unchanged asserts that the check is answered 304.
func (h *holder) unchanged(t *testing.T, when string) {
	t.Helper()
	if changed, err := h.check(t); err != nil || changed {
		t.Fatalf("%s: check = changed %t, %v; want 304 (the cache must be in play for this test)", when, changed, err)
	}
}

// changed asserts that the check is answered with a new assignment, after change.
func (h *holder) changed(t *testing.T, change string) {
	t.Helper()
	if changed, err := h.check(t); err != nil || !changed {
		t.Fatalf("after %s: check = changed %t, %v; want a new assignment, never the cached one", change, changed, err)
	}
}

// paths are the image paths of the held assignment by kind.
func (h *holder) path(kind string) string {
	for _, im := range h.a.Images {
		if im.Kind == kind {
			return im.Path
		}
	}
	return ""
}

// readDevice is the device's row, as authentication reads it.
func readDevice(t *testing.T, st store.Store, id string) device.Device {
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

// writeDevice changes the device's row in the store alone, as another replica does before
// its notification arrives: no Notify here.
func writeDevice(t *testing.T, st store.Store, id string, change func(*device.Device)) {
	t.Helper()
	err := st.InTx(t.Context(), func(tx store.Tx) error {
		d, err := tx.Devices().Get(t.Context(), device.ID(id))
		if err != nil {
			return err
		}
		tt, err := tx.ForTenant(d.TenantID)
		if err != nil {
			return err
		}
		change(&d)
		d.Version++
		return tt.Devices().Update(t.Context(), d)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAssignmentCache_NotServedAfterDeploymentChange: a new deployment to the device's
// group changes nothing of the device's row; only the change event ends the cached
// assignment. Without the epoch the device would be told 304 and stay on the old app.
func TestAssignmentCache_NotServedAfterDeploymentChange(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	h.unchanged(t, "before the deployment")
	f.deploy("Production", v2.Path)
	h.changed(t, "a deployment")
	if got := h.path(director.KindApp); got != v2.Path {
		t.Errorf("app after the deployment = %q, want %s", got, v2.Path)
	}
	h.unchanged(t, "after the new assignment")
}

// TestAssignmentCache_NotServedAfterGroupChange: the device moved to another group (here
// written to the store, and the tenant's change event delivered as another replica's
// NOTIFY arrives: WakeLocal; the event ends the entry and the device row authentication
// kept, devcache.go), and its group's feed, update policy and maintenance window changed
// (the change event ends it).
func TestAssignmentCache_NotServedAfterGroupChange(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	st := f.Server.Store()
	t.Run("device moved", func(t *testing.T) {
		d := f.NewDevice(true, "DW100/Production")
		h := hold(t, f, d)
		h.unchanged(t, "before the move")
		dev := f.group("Development")
		writeDevice(t, st, d.ID, func(x *device.Device) { x.GroupID = product.GroupID(dev.ID) })
		f.Server.Fleet().WakeLocal(tenant.ID(f.Tenant))
		h.changed(t, "the device moved to Development")
		if got := h.path(director.KindApp); got != "" {
			t.Errorf("app after the move to a group without a deployment = %q, want none", got)
		}
	})
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	for _, step := range []struct {
		name   string
		update client.DeviceGroupUpdate
		check  func() error
	}{
		{"the group's feed", client.DeviceGroupUpdate{OSFeed: ptr(client.OSFeedRetailEval)}, nil},
		{"the group's maintenance window", client.DeviceGroupUpdate{MaintenanceWindow: &client.MaintenanceWindow{
			Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Start: "02:00", Length: "1h", TimeZone: "UTC"}},
			func() error {
				if len(h.a.InstallWindows) == 0 {
					return errors.New("no install windows")
				}
				return nil
			}},
		{"the group's update policy", client.DeviceGroupUpdate{UpdatePolicy: ptr(client.UpdatePolicy("UpdateOSOnly"))}, func() error {
			if got := h.path(director.KindApp); got != "" {
				return fmt.Errorf("app %q assigned to a group that takes OS updates only", got)
			}
			return nil
		}},
	} {
		h.unchanged(t, "before "+step.name)
		g := f.group("Production")
		if _, err := f.Admin.UpdateDeviceGroup(ctx, f.Tenant, f.Product, g.ID, g.Version, step.update); err != nil {
			t.Fatal(err)
		}
		h.changed(t, step.name)
		if step.check != nil {
			if err := step.check(); err != nil {
				t.Errorf("after %s: %v", step.name, err)
			}
		}
	}
}

// TestAssignmentCache_NotServedAfterBlockedChange: the cache never confirms an assignment
// to a device row whose blocked state differs from the one it was computed for (asked
// directly, past authentication, with the row written to the store alone); a device
// blocked through another replica (the row written, its event delivered: WakeLocal) is
// refused at authentication. Unblocked, the device gets a new assignment.
func TestAssignmentCache_NotServedAfterBlockedChange(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	st := f.Server.Store()
	d := f.NewDevice(true, "DW100/Production")
	h := hold(t, f, d)
	h.unchanged(t, "before blocking")
	etag := client.AssignmentETag(h.held)

	writeDevice(t, st, d.ID, func(x *device.Device) { x.Blocked = true })
	res, err := f.Server.Fleet().CheckAssignment(t.Context(), readDevice(t, st, d.ID), etag)
	if err != nil || res.NotModified {
		t.Errorf("CheckAssignment(blocked device) = %+v, %v; want a new assignment, not 304", res, err)
	}
	f.Server.Fleet().WakeLocal(tenant.ID(f.Tenant))
	if _, err := h.check(t); !isStatus(err, http.StatusUnauthorized) {
		t.Errorf("check of the blocked device = %v, want 401", err)
	}

	f.Update(d.ID, client.DeviceUpdate{Blocked: ptr(false)})
	h.changed(t, "unblocking")
	h.unchanged(t, "after the new assignment")
}

func isStatus(err error, status int) bool {
	ce, ok := errors.AsType[*client.Error](err)
	return ok && ce.Status == status
}

// TestAssignmentCache_NotServedAfterRolloutStageAdvance: a staged rollout's next stage
// opens without a new deployment; a device outside the first stage held the base image
// and gets the new one once its stage opens.
func TestAssignmentCache_NotServedAfterRolloutStageAdvance(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	v2 := f.PublishApp("dw100-app", "2.0.0", 1, "DW100")
	g := f.group("Production")
	dep, err := f.Admin.CreateDeployment(ctx, f.Tenant, f.Product, g.ID, client.DeploymentCreate{Target: v2.Path,
		Rollout: &client.RolloutCreate{Stages: []float64{50, 100}, Soak: soak}})
	if err != nil {
		t.Fatal(err)
	}
	// A device outside the first stage (half of them are).
	var d testenv.Device
	for range 64 {
		d = f.NewDevice(true, "DW100/Production")
		if device.StageBucket(dep.ID, device.ID(d.ID)) >= 50*100 {
			break
		}
	}
	h := hold(t, f, d)
	if got := h.path(director.KindApp); got != f.app.Path {
		t.Fatalf("app outside the open stage = %q, want the base %s", got, f.app.Path)
	}
	h.unchanged(t, "before the stage opened")
	if _, err := f.Admin.PromoteDeployment(ctx, f.Tenant, f.Product, g.ID, dep.ID, client.RolloutAction{Force: true, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	h.changed(t, "the next stage opened")
	if got := h.path(director.KindApp); got != v2.Path {
		t.Errorf("app once its stage opened = %q, want %s", got, v2.Path)
	}
}

// TestAssignmentCache_NotServedAfterCatalogChange: a publication (a newer OS on the
// group's feed), a revoked image and a revoked signing key each end the cached assignment.
func TestAssignmentCache_NotServedAfterCatalogChange(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	f.deploy("Production", v2.Path)
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))

	h.unchanged(t, "before the publication")
	os2 := f.PublishOS("moat-os", "2.0.0", 2, "Retail")
	h.changed(t, "an OS publication")
	if got := h.path(director.KindOS); got != os2.Path {
		t.Errorf("OS after the publication = %q, want %s", got, os2.Path)
	}

	h.unchanged(t, "before the revocation")
	f.RevokeApp(v2.Path)
	h.changed(t, "an app revocation")
	if got := h.path(director.KindApp); got != "" {
		t.Errorf("app after its revocation = %q, want none", got)
	}

	f.deploy("Production", f.app.Path)
	h.changed(t, "a deployment of the old app")
	h.unchanged(t, "before the key revocation")
	f.revokeSigningKeys(t)
	h.changed(t, "the signing key's revocation")
	if got := h.path(director.KindApp); got != "" {
		t.Errorf("app after its key's revocation = %q, want none", got)
	}
}

// TestAssignmentCache_NotServedAfterChangeOnAnotherReplica: two servers over one
// PostgreSQL database; a deployment made through the first reaches the second's cache by
// the replicas' change events (Config.Broadcast, LISTEN/NOTIFY, WakeLocal), which end the
// entry there; nothing of the device's row changes.
func TestAssignmentCache_NotServedAfterChangeOnAnotherReplica(t *testing.T) {
	t.Parallel()
	f, b := twoReplicas(t)
	ctx := t.Context()
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	d := f.NewDevice(true, "DW100/Production")
	if _, err := f.Attest(d, f.os.Measurement(), f.app.Measurement()); err != nil {
		t.Fatal(err)
	}
	dev := readDevice(t, b.Store(), d.ID)
	svc := b.Fleet()
	first, err := svc.CheckAssignment(ctx, dev, "")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := svc.CheckAssignment(ctx, dev, first.ETag); err != nil || !res.NotModified {
		t.Fatalf("second replica's check before the change = %+v, %v; want 304", res, err)
	}

	f.deploy("Production", v2.Path) // through the first replica
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := svc.CheckAssignment(ctx, dev, first.ETag)
		if err != nil {
			t.Fatal(err)
		}
		if !res.NotModified {
			a, err := director.Verify(res.Signed, f.directorKey(t), director.Expect{DeviceID: d.ID, TenantID: f.Tenant, Now: time.Now()})
			if err != nil || len(a.Images) != 2 || a.Images[1].Path != v2.Path {
				t.Errorf("second replica's assignment after the change = %+v, %v; want the new deployment", a.Images, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the second replica still answered 304 ten seconds after a deployment through the first")
		}
		time.Sleep(10 * time.Millisecond) // polling for the notification, not an assertion
	}
}

// cacheService is a fleet service over st with cfg's AssignmentCacheEntries.
func cacheService(t *testing.T, st store.Store, entries int) *fleetsvc.Service {
	t.Helper()
	online, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := fsblob.Open(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.New(st, blobs, online, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := fleetsvc.New(fleetsvc.Config{Store: st, Repo: rp, Logger: slog.New(slog.DiscardHandler), Now: time.Now,
		KEK: make([]byte, 32), Director: online, Registerer: prometheus.NewRegistry(), AssignmentCacheEntries: entries})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestAssignmentCache_IsBounded: a replica remembers at most AssignmentCacheEntries
// devices, the least recently checked going first; a forgotten device is signed a new
// assignment, never refused.
func TestAssignmentCache_IsBounded(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	st := f.Server.Store()
	const max = 3
	svc := cacheService(t, st, max)
	var devs []device.Device
	var tags []string
	for range max + 2 {
		dev := readDevice(t, st, f.NewDevice(true, "DW100/Production").ID)
		res, err := svc.CheckAssignment(ctx, dev, "")
		if err != nil {
			t.Fatal(err)
		}
		devs, tags = append(devs, dev), append(tags, res.ETag)
		if n := fleetsvc.AssignmentCacheLen(svc); n > max {
			t.Fatalf("cache holds %d devices, bound %d", n, max)
		}
	}
	if n := fleetsvc.AssignmentCacheLen(svc); n != max {
		t.Errorf("cache holds %d devices, want %d", n, max)
	}
	// The newest first: a check of an evicted device signs anew and evicts the oldest.
	for i := len(devs) - 1; i >= 0; i-- {
		dev := devs[i]
		res, err := svc.CheckAssignment(ctx, dev, tags[i])
		if err != nil {
			t.Fatal(err)
		}
		if evicted := i < 2; res.NotModified == evicted {
			t.Errorf("device %d (evicted: %t): NotModified %t", i, evicted, res.NotModified)
		}
	}
	if _, err := fleetsvc.New(fleetsvc.Config{AssignmentCacheEntries: -1}); err == nil || !strings.Contains(err.Error(), "AssignmentCacheEntries") {
		t.Errorf("New with a negative bound = %v, want an error naming AssignmentCacheEntries", err)
	}
}

// TestAssignmentCache_NotServedPastMaxAge: an entry is confirmed for at most
// CacheMaxAge, even with no change at all, so a lost change event costs no more than that
// and a confirmed assignment keeps most of its validity.
func TestAssignmentCache_NotServedPastMaxAge(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	h.unchanged(t, "at once")
	f.offset.Add(int64(fleetsvc.CacheMaxAge - time.Minute))
	h.unchanged(t, "a minute before CacheMaxAge")
	f.offset.Add(int64(time.Minute))
	h.changed(t, "CacheMaxAge")
	if left := h.a.ExpiresAt.Sub(h.a.IssuedAt); left != fleetsvc.AssignmentTTL {
		t.Errorf("new assignment valid for %s, want %s", left, fleetsvc.AssignmentTTL)
	}
}

// TestAssignmentCache_WaitRecheckEndsStaleEntry: a change whose event never arrived (here
// a deployment written to the store with no Notify) is found by the waiting device's
// generation read once the group's memoized inputs have aged out (memo.go; a re-check is
// 15 s apart, more than their age), which ends the entry: the check that follows is a new
// assignment.
func TestAssignmentCache_WaitRecheckEndsStaleEntry(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ctx := t.Context()
	v2 := f.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	h := hold(t, f, f.NewDevice(true, "DW100/Production"))
	first, err := h.dc.WaitForUpdates(ctx, client.UpdatesWait{})
	if err != nil {
		t.Fatal(err)
	}
	h.unchanged(t, "before the change")
	deployLost(t, f, "Production", v2)
	f.offset.Add(int64(fleetsvc.InputsMemoMaxAge))
	defer f.offset.Store(0)
	u, err := h.dc.WaitForUpdates(ctx, client.UpdatesWait{Since: first.Generation})
	if err != nil || !u.Changed {
		t.Fatalf("wait after the change = %+v, %v; want changed at once", u, err)
	}
	h.changed(t, "a change the waiting device's generation read found")
	if got := h.path(director.KindApp); got != v2.Path {
		t.Errorf("app = %q, want %s", got, v2.Path)
	}
}

// TestAssignmentETag_ClientAgrees: the server's ETag is the one the client computes from
// the bytes it holds, and only that exact strong ETag is answered 304: a list, "*", a weak
// or an upper-case form is answered with the assignment.
func TestAssignmentETag_ClientAgrees(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	cert, err := f.Attest(d, f.os.Measurement(), f.app.Measurement())
	if err != nil {
		t.Fatal(err)
	}
	hc := f.DeviceHTTPClient(cert)
	get := func(inm string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.Server.DeviceURL+"/api/v1/device/assignment", nil)
		if err != nil {
			t.Fatal(err)
		}
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body [64 << 10]byte
		n, _ := res.Body.Read(body[:])
		return res, body[:n]
	}
	res, body := get("")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET assignment = %d", res.StatusCode)
	}
	tag := res.Header.Get("ETag")
	if tag != client.AssignmentETag(body) || tag != fleetsvc.AssignmentETag(body) {
		t.Fatalf("ETag %s, client computes %s, fleet %s", tag, client.AssignmentETag(body), fleetsvc.AssignmentETag(body))
	}
	if res, _ := get(tag); res.StatusCode != http.StatusNotModified || res.Header.Get("ETag") != tag {
		t.Fatalf("GET with If-None-Match %s = %d (ETag %s), want 304 with it", tag, res.StatusCode, res.Header.Get("ETag"))
	}
	for _, inm := range []string{"*", "W/" + tag, tag + ", " + tag, strings.ToUpper(tag), tag[:len(tag)-1], `"` + strings.Repeat("0", 32) + `"`} {
		if res, _ := get(inm); res.StatusCode != http.StatusOK {
			t.Errorf("GET with If-None-Match %q = %d, want 200", inm, res.StatusCode)
		}
	}
}

// deployLost writes a deployment of im to the group straight into the store, with no
// change event: another replica's deployment whose NOTIFY was lost.
func deployLost(t *testing.T, f *fleet, group string, im testenv.Image) {
	t.Helper()
	g := f.group(group)
	now := time.Now().UTC()
	err := f.Server.Store().InTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(tenant.ID(f.Tenant))
		if err != nil {
			return err
		}
		return tt.Deployments().Create(t.Context(), device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: tenant.ID(f.Tenant),
			ProductID: product.ID(f.Product), GroupID: product.GroupID(g.ID), Target: im.Path, SHA256: im.SHA256, CreatedAt: now, CreatedBy: "lost"})
	})
	if err != nil {
		t.Fatal(err)
	}
}
