package push

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/tenant"
)

// gens is a device's generation as the store would answer it, changed by the test.
type gens struct {
	mu  sync.Mutex
	gen string
	err error
}

func (g *gens) read(context.Context) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen, g.err
}

func (g *gens) set(gen string, err error) {
	g.mu.Lock()
	g.gen, g.err = gen, err
	g.mu.Unlock()
}

// answers records each done call of a parked wait.
type answers struct {
	mu  sync.Mutex
	got []waitResult
}

func (a *answers) done(u Updates, err error) {
	a.mu.Lock()
	a.got = append(a.got, waitResult{u, err})
	a.mu.Unlock()
}

func (a *answers) all() []waitResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]waitResult(nil), a.got...)
}

// TestPark_EachEndAnswersOnce: a parked wait, which holds no goroutine, gets exactly one
// answer whatever ends it, the one Wait gives for the same end, and cancel ends it with
// none; nothing of it is left in the replica's tables after.
func TestPark_EachEndAnswersOnce(t *testing.T) {
	dev := device.Device{ID: "dev_1", TenantID: tenant.ID("tnt_park")}
	for _, tc := range []struct {
		name string
		end  func(n *Waits, g *gens, cancel func() bool)
		want waitResult
	}{
		{"change, woken", func(n *Waits, g *gens, _ func() bool) { g.set("gen-2", nil); n.Notify(dev.TenantID) },
			waitResult{u: Updates{Generation: "gen-2", Changed: true}}},
		{"change, seen by the periodic re-check", func(_ *Waits, g *gens, _ func() bool) { g.set("gen-2", nil); time.Sleep(recheckEvery) },
			waitResult{u: Updates{Generation: "gen-2", Changed: true}}},
		{"deadline", func(*Waits, *gens, func() bool) { time.Sleep(MaxWait) },
			waitResult{u: Updates{Generation: "gen-1"}}},
		{"replaced by a newer wait", func(n *Waits, g *gens, _ func() bool) {
			go n.Wait(context.Background(), dev, "gen-1", g.read)
			synctest.Wait()
		}, waitResult{u: Updates{Generation: "gen-1"}}},
		{"stop", func(n *Waits, _ *gens, _ func() bool) { n.Stop() }, waitResult{u: Updates{Generation: "gen-1"}}},
		{"a failed re-check", func(n *Waits, g *gens, _ func() bool) { g.set("", errors.New("store down")); n.Notify(dev.TenantID) },
			waitResult{err: errors.New("store down")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n, err := New(10, prometheus.NewRegistry())
				if err != nil {
					t.Fatal(err)
				}
				g := &gens{gen: "gen-1"}
				var a answers
				u, cancel, err := n.Park(context.Background(), dev, "gen-1", g.read, a.done)
				if err != nil || cancel == nil {
					t.Fatalf("Park = %+v, %v, parked %v; want parked", u, err, cancel != nil)
				}
				tc.end(n, g, cancel)
				time.Sleep(maxWakeSpread)
				synctest.Wait()
				got := a.all()
				if len(got) != 1 {
					t.Fatalf("%d answers, want 1: %+v", len(got), got)
				}
				if got[0].u != tc.want.u || (got[0].err == nil) != (tc.want.err == nil) {
					t.Errorf("answer %+v, want %+v", got[0], tc.want)
				}
				if cancel() {
					t.Error("cancel after the answer reported that it ended the wait")
				}
				n.Stop() // ends the newer wait of "replaced"
				if n.Len() != 0 || n.Armed(dev.TenantID) {
					t.Errorf("after the end: %d waiting, armed %v", n.Len(), n.Armed(dev.TenantID))
				}
			})
		})
	}
	t.Run("cancel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			n, _ := New(10, prometheus.NewRegistry())
			var a answers
			_, cancel, _ := n.Park(context.Background(), dev, "gen-1", (&gens{gen: "gen-1"}).read, a.done)
			if !cancel() {
				t.Fatal("cancel of a parked wait reported that it had ended")
			}
			time.Sleep(2 * MaxWait)
			n.Stop()
			synctest.Wait()
			if got := a.all(); len(got) != 0 || n.Len() != 0 {
				t.Errorf("a cancelled wait: answers %+v, %d waiting; want none", got, n.Len())
			}
		})
	})
}

// TestPark_AnswersAtOnceWithoutParking: a wait whose generation differs at once, or whose
// first read fails, is answered by Park itself and never through done.
func TestPark_AnswersAtOnceWithoutParking(t *testing.T) {
	n, _ := New(10, prometheus.NewRegistry())
	dev := device.Device{ID: "dev_1", TenantID: tenant.ID("tnt_park")}
	var a answers
	u, cancel, err := n.Park(context.Background(), dev, "gen-0", (&gens{gen: "gen-1"}).read, a.done)
	if err != nil || cancel != nil || u != (Updates{Generation: "gen-1", Changed: true}) {
		t.Errorf("Park since an old generation = %+v, %v, parked %v; want changed at once", u, err, cancel != nil)
	}
	_, cancel, err = n.Park(context.Background(), dev, "gen-0", (&gens{err: errors.New("down")}).read, a.done)
	if err == nil || cancel != nil {
		t.Errorf("Park with a failing read = %v, parked %v; want the error at once", err, cancel != nil)
	}
	if n.Len() != 0 || len(a.all()) != 0 {
		t.Errorf("%d waiting, %d answers through done; want none", n.Len(), len(a.all()))
	}
}
