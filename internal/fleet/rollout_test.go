package fleet_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/errreport"
	fleetsvc "github.com/moat-iot/moat/internal/fleet"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/fleet/rollout"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/store/postgres"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/updstate"
)

// The server's own rollout-advance job runs in these fleets on the real clock. The tests
// give their rollouts an hour's soak and run the Advancer an hour or more ahead, so that
// the job never finds a soak over and every advance is the test's own.
const soak = "1h"

func ptrF(f float64) *float64 { return &f }

// rolled is a fleet with app 2.0.0 published beside the deployed 1.0.0 (same security
// version, so that devices can be rolled back to 1.0.0).
type rolled struct {
	*fleet
	newApp testenv.Image
	tid    tenant.ID
	pid    product.ID
	gid    product.GroupID
}

func newRolled(t *testing.T, opts ...testenv.ServerOption) *rolled {
	t.Helper()
	f := newFleetWith(t, opts...)
	return &rolled{fleet: f, newApp: f.PublishApp("dw100-app", "2.0.0", 1, "DW100"), tid: tenant.ID(f.Tenant),
		pid: product.ID(f.Product), gid: product.GroupID(f.group("Production").ID)}
}

// stage deploys the new app to Production in stages, as the management API does: the
// rollout made by rollout.New over the group's current deployment.
func (r *rolled) stage(t *testing.T, c device.RolloutCreate) device.Deployment {
	t.Helper()
	now := time.Now().UTC()
	var d device.Deployment
	err := r.Server.Store().InTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(r.tid)
		if err != nil {
			return err
		}
		base, err := tt.Deployments().Current(t.Context(), r.pid, r.gid)
		if err != nil {
			return err
		}
		ro, err := rollout.New(c, &base, now)
		if err != nil {
			return err
		}
		d = device.Deployment{ID: ident.New(device.DeploymentIDPrefix, now), TenantID: r.tid, ProductID: r.pid, GroupID: r.gid,
			Target: r.newApp.Path, SHA256: r.newApp.SHA256, CreatedAt: now, CreatedBy: "test", Rollout: ro}
		return tt.Deployments().Create(t.Context(), d)
	})
	if err != nil {
		t.Fatalf("staged deployment: %v", err)
	}
	return d
}

// setRollout writes d's rollout changed by change (rollout.Pause, ...) over its version.
func (r *rolled) setRollout(t *testing.T, d device.Deployment, change func(device.Rollout, time.Time) (device.Rollout, error)) device.Deployment {
	t.Helper()
	next, err := change(*d.Rollout, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d.Rollout = &next
	err = r.Server.Store().InTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(r.tid)
		if err != nil {
			return err
		}
		return tt.Deployments().UpdateRollout(t.Context(), d)
	})
	if err != nil {
		t.Fatalf("UpdateRollout: %v", err)
	}
	return d
}

// current is the group's current deployment.
func (r *rolled) current(t *testing.T) device.Deployment {
	t.Helper()
	var d device.Deployment
	err := r.Server.Store().InReadTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(r.tid)
		if err != nil {
			return err
		}
		d, err = tt.Deployments().Current(t.Context(), r.pid, r.gid)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// member is a device of Production that only this test knows: fleet.Assignment reads the
// group, its deployment and the catalog, not the device's row.
func (r *rolled) member(t *testing.T) device.Device {
	t.Helper()
	var b [32]byte
	rand.Read(b[:])
	return device.Device{ID: device.ID(hex.EncodeToString(b[:])), TenantID: r.tid, ProductID: r.pid, GroupID: r.gid, Floors: map[string]uint32{}}
}

// app is the app path of dev's assignment from svc ("" for none).
func app(t *testing.T, svc *fleetsvc.Service, dev device.Device) string {
	t.Helper()
	_, a, err := svc.Assignment(t.Context(), dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range a.Images {
		if im.Kind == director.KindApp {
			return im.Path
		}
	}
	return ""
}

// inStage says, from the stage hash alone, whether dev is in the first stages up to
// percent: the expectation the director is held to.
func inStage(d device.Deployment, dev device.Device, percent float64) bool {
	return device.StageBucket(d.ID, dev.ID) < uint64(percent*100)
}

// TestAssignment_DeviceOutsideStageNeverGetsNewImage attacks the rollout's first rule: over
// five hundred device IDs, the director assigns the new image exactly to the devices whose
// stage hash puts them in an open stage and the base image to every other; a device never
// flips back when the next stage opens, and a device new to the group lands where its hash
// says. Without the stage check every device would get 2.0.0 at once.
func TestAssignment_DeviceOutsideStageNeverGetsNewImage(t *testing.T) {
	t.Parallel()
	r := newRolled(t)
	d := r.stage(t, device.RolloutCreate{Stages: []float64{10, 50, 100}, Soak: soak})
	svc := r.Server.Fleet()
	devs := make([]device.Device, 500)
	for i := range devs {
		devs[i] = r.member(t)
	}
	had := map[device.ID]bool{}
	for i, percent := range d.Rollout.Stages {
		if i > 0 {
			d = r.setRollout(t, d, func(ro device.Rollout, now time.Time) (device.Rollout, error) {
				return rollout.Promote(ro, device.GateFigures{}, false, now)
			})
			devs = append(devs, r.member(t)) // a device added to the group later
		}
		onNew := 0
		for _, dev := range devs {
			got, want := app(t, svc, dev), r.app.Path
			if inStage(d, dev, percent) {
				want = r.newApp.Path
			}
			if got != want {
				t.Fatalf("stage %g%%: device %s (bucket %d) assigned %q, want %q", percent, dev.ID, device.StageBucket(d.ID, dev.ID), got, want)
			}
			if got == r.newApp.Path {
				onNew++
				had[dev.ID] = true
			} else if had[dev.ID] {
				t.Fatalf("stage %g%%: device %s flipped back from the new image", percent, dev.ID)
			}
		}
		// The hash spreads: the stage holds about its share of the group.
		if want := percent / 100 * float64(len(devs)); float64(onNew) < want*0.6 || float64(onNew) > want*1.4+5 {
			t.Errorf("stage %g%%: %d of %d devices on the new image, want about %.0f", percent, onNew, len(devs), want)
		}
	}
	if r.current(t).Rollout.Stage != 2 {
		t.Fatalf("rollout stage = %d, want 2", r.current(t).Rollout.Stage)
	}
	d = r.setRollout(t, d, func(ro device.Rollout, now time.Time) (device.Rollout, error) {
		return rollout.Promote(ro, device.GateFigures{}, false, now)
	})
	if d.Rollout.State != device.RolloutCompleted || app(t, svc, r.member(t)) != r.newApp.Path {
		t.Errorf("completed rollout: state %s, want every device on the new image", d.Rollout.State)
	}
}

// TestImages_PolicyCannotAssignNewImageOutsideStage: a Policy that chooses the new image
// for every device still cannot give it to a device outside the open stages.
func TestImages_PolicyCannotAssignNewImageOutsideStage(t *testing.T) {
	t.Parallel()
	r := newRolled(t)
	d := r.stage(t, device.RolloutCreate{Stages: []float64{50, 100}, Soak: soak})
	greedy := replicaWith(t, r.Server.Store(), fleetsvc.Config{Policy: newImageForAll{}})
	for range 50 {
		dev := r.member(t)
		got := app(t, greedy, dev)
		if in := inStage(d, dev, 50); in && got != r.newApp.Path || !in && got != "" {
			t.Fatalf("device %s (in stage: %t) assigned %q by a greedy policy", dev.ID, in, got)
		}
	}
}

// TestAssignment_PausedOrAbortedAssignsNothingNew attacks the second rule: once paused or
// aborted, a device in an open stage that does not run the new image yet is assigned the
// base image, and only the devices whose last attestation shows the new image keep it.
func TestAssignment_PausedOrAbortedAssignsNothingNew(t *testing.T) {
	t.Parallel()
	for _, stop := range []struct {
		name string
		fn   func(device.Rollout, time.Time) (device.Rollout, error)
	}{{"paused", rollout.Pause}, {"aborted", rollout.Abort}} {
		t.Run(stop.name, func(t *testing.T) {
			t.Parallel()
			r := newRolled(t)
			d := r.stage(t, device.RolloutCreate{Stages: []float64{50, 100}, Soak: soak})
			svc := r.Server.Fleet()
			var waiting, running, outside []device.Device
			runs := &device.Attestation{At: time.Now(), Serial: "01", Images: []device.Measurement{
				{Kind: attest.KindApp, Path: r.newApp.Path, SHA256: r.newApp.SHA256, Version: r.newApp.Version, SecurityVersion: 1}}}
			for len(waiting) < 20 || len(running) < 20 || len(outside) < 20 {
				dev := r.member(t)
				switch {
				case !inStage(d, dev, 50):
					outside = append(outside, dev)
				case len(waiting) < 20:
					waiting = append(waiting, dev)
				default:
					dev.Attestation = runs
					running = append(running, dev)
				}
			}
			for _, dev := range waiting {
				if got := app(t, svc, dev); got != r.newApp.Path {
					t.Fatalf("running rollout: device %s in the open stage assigned %q, want the new image", dev.ID, got)
				}
			}
			r.setRollout(t, d, stop.fn)
			want := map[string][]device.Device{r.app.Path: slices.Concat(waiting, outside), r.newApp.Path: running}
			for path, devs := range want {
				for _, dev := range devs {
					if got := app(t, svc, dev); got != path {
						t.Errorf("%s rollout: device %s assigned %q, want %q", stop.name, dev.ID, got, path)
					}
				}
			}
			// A refused last attestation shows nothing the device runs: nothing new either.
			refused := running[0]
			refused.Attestation = &device.Attestation{At: time.Now(), Refusal: device.RefusedBelowFloor, Images: runs.Images}
			if got := app(t, svc, refused); got != r.app.Path {
				t.Errorf("%s rollout: device whose last attestation was refused assigned %q, want the base", stop.name, got)
			}
		})
	}
}

// advancer runs rollout.Advancer over st and counts the tenants it notified.
type advancer struct {
	rollout.Advancer
	notified atomic.Int64
}

func newAdvancer(t *testing.T, st store.Store) *advancer {
	a := &advancer{}
	a.Advancer = rollout.Advancer{Store: st, Notify: func(tenant.ID) { a.notified.Add(1) }, Log: slog.New(slog.DiscardHandler)}
	return a
}

// events returns the tenant's audit events of action, oldest first.
func (r *rolled) events(t *testing.T, st store.Store, action string) []audit.Event {
	t.Helper()
	var out []audit.Event
	err := st.InReadTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(r.tid)
		if err != nil {
			return err
		}
		for p := (store.Page{Limit: store.MaxLimit}); ; {
			es, err := tt.Audit().List(t.Context(), p)
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Action == action {
					out = append(out, e)
				}
			}
			if len(es) < p.Limit {
				return nil
			}
			p.After = es[len(es)-1].ID
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b audit.Event) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// onNew makes n devices of Production that attested running the new app, and returns them.
func (r *rolled) onNew(t *testing.T, n int) []testenv.Device {
	t.Helper()
	var out []testenv.Device
	for range n {
		d := r.NewDevice(true, "DW100/Production")
		if _, err := r.Attest(d, r.os.Measurement(), r.newApp.Measurement()); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// crash records an app_crash of the new app from the device.
func (r *rolled) crash(t *testing.T, id string) {
	t.Helper()
	now := time.Now()
	code := 2
	rep := errreport.Report{ID: errreport.NewID(now), Kind: errreport.AppCrash, At: now, ImagePath: r.newApp.Path,
		ImageVersion: r.newApp.Version, Message: "app exited", ExitCode: &code}
	err := r.Server.Store().InTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(r.tid)
		if err != nil {
			return err
		}
		return tt.ErrorReports().Add(t.Context(), device.ID(id), rep, now)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAdvance_TripPausesAndRollsBack: two of three devices on the new image crash; after
// the soak the gate trips on the crash-free figure, the rollout is rolled back with its
// Trip recorded, a revert deployment of the base image is created in the same step, the
// audit log says why, and the devices (also those that run the new image) are assigned
// the base again.
func TestAdvance_TripPausesAndRollsBack(t *testing.T) {
	t.Parallel()
	r := newRolled(t)
	d := r.stage(t, device.RolloutCreate{Stages: []float64{100}, Soak: soak, AutoRollback: true,
		Gate: device.Gate{MinCrashFree: ptrF(90)}})
	devs := r.onNew(t, 3)
	r.crash(t, devs[0].ID)
	r.crash(t, devs[1].ID)
	st := r.Server.Store()
	a := newAdvancer(t, st)

	// The gate is judged during the soak too: the crashing stage stops at once.
	at := d.CreatedAt.Add(30 * time.Minute)
	res, err := a.Run(t.Context(), at)
	if err != nil || res != (rollout.Result{Tripped: 1, RolledBack: 1}) {
		t.Fatalf("Run during the soak = %+v, %v, want one trip rolled back", res, err)
	}
	cur := r.current(t)
	if cur.Reverts != d.ID || cur.Target != r.app.Path || cur.SHA256 != r.app.SHA256 || cur.Rollout != nil {
		t.Fatalf("current deployment = %+v, want a revert of %s to %s", cur, d.ID, r.app.Path)
	}
	var old device.Deployment
	err = st.InReadTx(t.Context(), func(tx store.Tx) error {
		tt, _ := tx.ForTenant(r.tid)
		old, err = tt.Deployments().Get(t.Context(), r.pid, r.gid, d.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	trip := old.Rollout.Trip
	if old.Rollout.State != device.RolloutRolledBack || trip == nil || trip.Figure != device.FigureCrashFree ||
		trip.Threshold != 90 || trip.Value > 34 || trip.Value < 33 || old.Rollout.Version != 2 {
		t.Fatalf("rolled back rollout = %+v (trip %+v), want rolled_back at v2 with the crash-free trip", old.Rollout, trip)
	}
	tripped := r.events(t, st, rollout.ActionGateTripped)
	if len(tripped) != 1 || tripped[0].ObjectID != d.ID || tripped[0].ActorName != rollout.SystemActor ||
		!strings.Contains(tripped[0].Detail, device.FigureCrashFree) || !strings.Contains(tripped[0].Detail, cur.ID) {
		t.Errorf("gate_tripped events = %+v, want one naming the figure and the revert", tripped)
	}
	if rb := r.events(t, st, rollout.ActionRolledBack); len(rb) != 1 || rb[0].ObjectID != cur.ID {
		t.Errorf("rollback events = %+v, want one for %s", rb, cur.ID)
	}
	if a.notified.Load() != 1 {
		t.Errorf("tenant notified %d times, want 1", a.notified.Load())
	}
	for _, dev := range devs {
		if got := assignedPaths(t, r.Server.Fleet(), st, dev.ID); !slices.Contains(got, r.app.Path) || slices.Contains(got, r.newApp.Path) {
			t.Errorf("device %s on the new image assigned %v after the rollback, want the base %s", dev.ID, got, r.app.Path)
		}
	}
	// Nothing left to advance.
	if res, err := a.Run(t.Context(), at.Add(time.Hour)); err != nil || res != (rollout.Result{}) {
		t.Errorf("Run after the rollback = %+v, %v, want nothing", res, err)
	}
}

// TestAdvance_HealthyStageAdvances: the same gate over devices that do not crash opens the
// next stage once, then completes the rollout.
func TestAdvance_HealthyStageAdvances(t *testing.T) {
	t.Parallel()
	r := newRolled(t)
	d := r.stage(t, device.RolloutCreate{Stages: []float64{50, 100}, Soak: soak, AutoRollback: true,
		Gate: device.Gate{MinCrashFree: ptrF(90)}})
	r.onNew(t, 3)
	st := r.Server.Store()
	a := newAdvancer(t, st)
	at := d.CreatedAt.Add(2 * time.Hour)
	if res, err := a.Run(t.Context(), at); err != nil || res != (rollout.Result{Advanced: 1}) {
		t.Fatalf("Run = %+v, %v, want one stage advanced", res, err)
	}
	if res, err := a.Run(t.Context(), at); err != nil || res != (rollout.Result{}) {
		t.Fatalf("Run again at once = %+v, %v, want nothing: the new stage soaks", res, err)
	}
	if res, err := a.Run(t.Context(), at.Add(2*time.Hour)); err != nil || res != (rollout.Result{Completed: 1}) {
		t.Fatalf("Run after the second soak = %+v, %v, want completed", res, err)
	}
	cur := r.current(t)
	if cur.ID != d.ID || cur.Rollout.State != device.RolloutCompleted || cur.Rollout.Trip != nil {
		t.Errorf("rollout = %+v, want completed", cur.Rollout)
	}
	if n, m := len(r.events(t, st, rollout.ActionStageAdvanced)), len(r.events(t, st, rollout.ActionCompleted)); n != 1 || m != 1 {
		t.Errorf("audit: %d stage_advanced, %d rollout_completed, want 1 and 1", n, m)
	}
}

// TestAdvance_ExactlyOncePerStageOnPostgres: four replicas, each with its own connection
// pool to one PostgreSQL database, run the Advancer at the same moments; every stage opens
// once, with one audit event, however the replicas interleave. Run with -race.
func TestAdvance_ExactlyOncePerStageOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := testenv.FreshPostgresDatabase(t)
	r := newRolled(t, testenv.WithDatabase(dsn))
	d := r.stage(t, device.RolloutCreate{Stages: []float64{1, 10, 50, 100}, Soak: soak})
	const replicas = 4
	var advancers []*advancer
	var total rollout.Result
	for range replicas {
		st, err := postgres.Open(t.Context(), dsn, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// Every replica reads the rollout before any writes it, so that all of them try to
		// advance the same version.
		advancers = append(advancers, newAdvancer(t, &barrierStore{Store: st}))
	}
	barrier := newBarrier(replicas)
	for _, a := range advancers {
		a.Store.(*barrierStore).b = barrier
	}
	for round := range len(d.Rollout.Stages) + 1 {
		at := d.CreatedAt.Add(time.Duration(round+1) * 2 * time.Hour)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, a := range advancers {
			wg.Go(func() {
				res, err := a.Run(t.Context(), at)
				if err != nil {
					t.Errorf("round %d: Run = %v", round, err)
				}
				mu.Lock()
				total.Advanced += res.Advanced
				total.Completed += res.Completed
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	if total != (rollout.Result{Advanced: 3, Completed: 1}) {
		t.Errorf("replicas together = %+v, want 3 advances and 1 completion", total)
	}
	st := r.Server.Store()
	advanced := r.events(t, st, rollout.ActionStageAdvanced)
	var stages []string
	for _, e := range advanced {
		stages = append(stages, strings.SplitN(e.Detail, " (", 2)[0])
	}
	want := []string{r.newApp.Path + ": stage 2 of 4", r.newApp.Path + ": stage 3 of 4", r.newApp.Path + ": stage 4 of 4"}
	if !slices.Equal(stages, want) {
		t.Errorf("stage_advanced events = %q, want one per stage %q", stages, want)
	}
	if n := len(r.events(t, st, rollout.ActionCompleted)); n != 1 {
		t.Errorf("rollout_completed events = %d, want 1", n)
	}
	if cur := r.current(t); cur.Rollout.State != device.RolloutCompleted || cur.Rollout.Version != 5 {
		t.Errorf("rollout = %s at version %d, want completed at version 5", cur.Rollout.State, cur.Rollout.Version)
	}
}

// barrier holds up to n callers until all n arrived or a moment passed (a replica that
// found nothing to do does not arrive).
type barrier struct {
	mu      sync.Mutex
	n, in   int
	release chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, release: make(chan struct{})} }

func (b *barrier) wait() {
	b.mu.Lock()
	b.in++
	ch := b.release
	if b.in == b.n {
		close(b.release)
		b.in, b.release = 0, make(chan struct{})
	}
	b.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(time.Second):
	}
}

// barrierStore makes every write transaction wait at the barrier before it starts.
type barrierStore struct {
	store.Store
	b *barrier
}

func (s *barrierStore) InTx(ctx context.Context, fn func(store.Tx) error) error {
	s.b.wait()
	return s.Store.InTx(ctx, fn)
}

// TestAdvance_ReplicaKilledMidAdvanceLeavesNoHalfAdvancedStage: a replica whose
// transaction dies after it wrote the rollout and before it wrote the audit event (the
// audit write fails, as a killed connection would) leaves the rollout as it was, with no
// revert deployment and no event; the next run, on a healthy replica, does the whole step
// once.
func TestAdvance_ReplicaKilledMidAdvanceLeavesNoHalfAdvancedStage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		crash  bool
		want   rollout.Result
		action string
	}{
		{"advance", false, rollout.Result{Advanced: 1}, rollout.ActionStageAdvanced},
		{"trip and roll back", true, rollout.Result{Tripped: 1, RolledBack: 1}, rollout.ActionGateTripped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRolled(t)
			d := r.stage(t, device.RolloutCreate{Stages: []float64{50, 100}, Soak: soak, AutoRollback: true,
				Gate: device.Gate{MinCrashFree: ptrF(90)}})
			devs := r.onNew(t, 2)
			if tc.crash {
				r.crash(t, devs[0].ID)
			}
			st := r.Server.Store()
			dying := &dyingStore{Store: st, pid: r.pid, gid: r.gid}
			a := newAdvancer(t, dying)
			at := d.CreatedAt.Add(2 * time.Hour)
			res, err := a.Run(t.Context(), at)
			if !errors.Is(err, errKilled) || res != (rollout.Result{}) {
				t.Fatalf("Run on the dying replica = %+v, %v, want %v and nothing counted", res, err, errKilled)
			}
			if v := dying.sawVersion.Load(); v != 2 {
				t.Fatalf("the audit write saw the rollout at version %d, want 2: it must come after the rollout write", v)
			}
			cur := r.current(t)
			if cur.ID != d.ID || cur.Rollout.Version != 1 || cur.Rollout.Stage != 0 || cur.Rollout.State != device.RolloutRunning {
				t.Fatalf("after the dying replica: current %s, rollout %+v, want %s unchanged at version 1", cur.ID, cur.Rollout, d.ID)
			}
			if es := r.events(t, st, tc.action); len(es) != 0 || a.notified.Load() != 0 {
				t.Fatalf("after the dying replica: %d events, %d notifications, want none", len(es), a.notified.Load())
			}
			if res, err := newAdvancer(t, st).Run(t.Context(), at); err != nil || res != tc.want {
				t.Fatalf("Run on a healthy replica = %+v, %v, want %+v", res, err, tc.want)
			}
			if es := r.events(t, st, tc.action); len(es) != 1 {
				t.Errorf("after the healthy replica: %d %s events, want 1", len(es), tc.action)
			}
		})
	}
}

var errKilled = errors.New("replica killed")

// dyingStore is the store of a replica that dies in the middle of its write: every audit
// write fails after it checked that the rollout write came first, in the same transaction.
type dyingStore struct {
	store.Store
	pid        product.ID
	gid        product.GroupID
	sawVersion atomic.Int64
}

func (s *dyingStore) InTx(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.InTx(ctx, func(tx store.Tx) error { return fn(dyingTx{tx, s}) })
}

type dyingTx struct {
	store.Tx
	s *dyingStore
}

func (t dyingTx) ForTenant(id tenant.ID) (store.TenantTx, error) {
	tt, err := t.Tx.ForTenant(id)
	return dyingTenantTx{tt, t.s}, err
}

type dyingTenantTx struct {
	store.TenantTx
	s *dyingStore
}

func (t dyingTenantTx) Audit() store.AuditLog { return dyingAudit{t.TenantTx, t.s} }

type dyingAudit struct {
	tt store.TenantTx
	s  *dyingStore
}

func (a dyingAudit) Append(ctx context.Context, e audit.Event) error {
	d, err := a.tt.Deployments().Get(ctx, a.s.pid, a.s.gid, e.ObjectID)
	if err == nil && d.Rollout != nil {
		a.s.sawVersion.Store(d.Rollout.Version)
	}
	return fmt.Errorf("append %s: %w", e.Action, errKilled)
}

func (a dyingAudit) List(ctx context.Context, p store.Page) ([]audit.Event, error) {
	return a.tt.Audit().List(ctx, p)
}

// newImageForAll is a Policy that chooses the group's deployed image for every device,
// whatever its stage.
type newImageForAll struct{}

func (newImageForAll) Choose(_ context.Context, in assign.Input) (assign.Choice, error) {
	im := in.Catalog.Images[in.Deployment.Target]
	return assign.Choice{App: &im}, nil
}

// TestReadStatus_CountsEachStage: the status places every device of the group in the stage
// its hash says, and counts those on the new image, failing, and crashing; the figures and
// the verdict are the gate's.
func TestReadStatus_CountsEachStage(t *testing.T) {
	t.Parallel()
	r := newRolled(t)
	d := r.stage(t, device.RolloutCreate{Stages: []float64{50, 100}, Soak: soak, Gate: device.Gate{MinCrashFree: ptrF(10)}})
	st := r.Server.Store()
	on := r.onNew(t, 4)
	r.crash(t, on[0].ID)
	var failed []testenv.Device
	for range 3 {
		dev := r.NewDevice(true, "DW100/Production")
		now := time.Now()
		rep := updstate.Report{ID: errreport.NewID(now), At: now, State: updstate.Failed, Kind: updstate.KindApp,
			Target: r.newApp.Path, Version: r.newApp.Version, Code: "health_check_failed", Message: "crashed"}
		err := st.InTx(t.Context(), func(tx store.Tx) error {
			tt, _ := tx.ForTenant(r.tid)
			return tt.UpdateEvents().Add(t.Context(), device.ID(dev.ID), rep, now)
		})
		if err != nil {
			t.Fatal(err)
		}
		failed = append(failed, dev)
	}
	idle := []testenv.Device{r.NewDevice(true, "DW100/Production"), r.NewDevice(true, "DW100/Production")}
	r.NewDevice(true, "DW100/Field Test") // another group

	want := make([]rollout.StageStatus, 2)
	want[0] = rollout.StageStatus{Percent: 50, Open: true}
	want[1] = rollout.StageStatus{Percent: 100}
	count := func(devs []testenv.Device, fn func(*rollout.StageStatus)) {
		for _, dev := range devs {
			s := &want[d.Rollout.StageOf(d.ID, device.ID(dev.ID))]
			s.Targeted++
			fn(s)
		}
	}
	count(on, func(s *rollout.StageStatus) { s.OnNew++ })
	count(on[:1], func(s *rollout.StageStatus) { s.Targeted--; s.Crashing++ })
	count(failed, func(s *rollout.StageStatus) { s.Failed++ })
	count(idle, func(*rollout.StageStatus) {})

	now := time.Now().Add(time.Minute)
	var got rollout.Status
	err := st.InReadTx(t.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(r.tid)
		if err != nil {
			return err
		}
		got, err = rollout.ReadStatus(t.Context(), tt, d, now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Stages, want) {
		t.Errorf("ReadStatus stages = %+v, want %+v", got.Stages, want)
	}
	if f := got.Figures; f.Running != 4 || f.CrashedRunning != 1 || f.Crashes != 1 || f.InstallAttempts != 7 || f.FailedInstalls != 3 {
		t.Errorf("ReadStatus figures = %+v, want 4 running, 1 crashed, 7 attempts, 3 failed", f)
	}
	if next := d.Rollout.StageStartedAt.Add(time.Hour); got.Verdict != rollout.VerdictSoaking || got.NextStageAt == nil || !got.NextStageAt.Equal(next) {
		t.Errorf("ReadStatus verdict = %s, next stage at %v, want soaking until %v", got.Verdict, got.NextStageAt, next)
	}
}
