package push

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/tenant"
)

// countingStore stands for the store: it records when each generation read began (a
// waiter's re-check is one) and answers the same generation every time.
type countingStore struct {
	mu    sync.Mutex
	reads []time.Time
}

func (c *countingStore) generation(context.Context) (string, error) {
	c.mu.Lock()
	c.reads = append(c.reads, time.Now())
	c.mu.Unlock()
	return "gen-1", nil
}

// readsFrom returns the read times from the i-th on.
func (c *countingStore) readsFrom(i int) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.reads[i:]...)
}

// readCount is the number of reads so far.
func (c *countingStore) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reads)
}

// waitFixture is a replica's waits with one tenant's devices, whose generation never
// changes.
type waitFixture struct {
	svc     *fixtureService
	store   *countingStore
	devices []device.Device
}

// fixtureService waits as the fleet service does, with the fixture's generation.
type fixtureService struct {
	*Waits
	store *countingStore
}

func (f *fixtureService) WaitUpdates(ctx context.Context, d device.Device, since string) (Updates, error) {
	return f.Wait(ctx, d, since, f.store.generation)
}

// Waiters is the number of devices waiting.
func Waiters(f *fixtureService) int { return f.Len() }

// newWaitFixture builds the fixture; inside a synctest bubble, its clock is the bubble's.
func newWaitFixture(t *testing.T, maxWaiters, devices int) *waitFixture {
	t.Helper()
	w, err := New(maxWaiters, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := &waitFixture{store: &countingStore{}}
	f.svc = &fixtureService{Waits: w, store: f.store}
	t.Cleanup(w.Stop)
	tid := tenant.ID("tnt_waits")
	for i := range devices {
		f.devices = append(f.devices, device.Device{ID: device.ID(fmt.Sprintf("%064x", i)), TenantID: tid})
	}
	return f
}

// generation is the device's current generation (a wait since "" answers at once).
func (f *waitFixture) generation(t *testing.T, d device.Device) string {
	t.Helper()
	u, err := f.svc.WaitUpdates(context.Background(), d, "")
	if err != nil || !u.Changed {
		t.Fatalf("WaitUpdates(%s, \"\") = %+v, %v; want the generation at once", d.ID, u, err)
	}
	return u.Generation
}

type waitResult struct {
	u   Updates
	err error
}

// TestWaitUpdates_OneWaiterPerDevice attacks the waits with one device certificate (issue
// 10, defect 5: 3,000 waits took a server from 34 MB to 300 MB): each new wait of the
// device ends the one before at once, with the generation unchanged, so however many it
// opens, one waits.
func TestWaitUpdates_OneWaiterPerDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWaitFixture(t, 100, 1)
		d := f.devices[0]
		gen := f.generation(t, d)
		const waits = 3000
		done := make(chan waitResult, waits)
		for range waits {
			go func() {
				u, err := f.svc.WaitUpdates(context.Background(), d, gen)
				done <- waitResult{u, err}
			}()
			synctest.Wait()
		}
		if n := Waiters(f.svc); n != 1 {
			t.Errorf("after %d waits of one device: %d waiters, want 1", waits, n)
		}
		if len(done) != waits-1 {
			t.Fatalf("after %d waits of one device, %d answered; want all but the last", waits, len(done))
		}
		for range waits - 1 {
			if r := <-done; r.err != nil || r.u.Changed || r.u.Generation != gen {
				t.Fatalf("a replaced wait = %+v, %v; want generation %s unchanged", r.u, r.err, gen)
			}
		}
		f.svc.Stop()
		if r := <-done; r.err != nil || r.u.Generation != gen {
			t.Errorf("the last wait at stop = %+v, %v", r.u, r.err)
		}
	})
}

// TestWaitUpdates_RefusedPastTheCap: a replica holds at most MaxWaiters waits; one more
// device is refused as Unavailable with a Retry-After (503 on the device API), while a
// device that waits already may renew its wait.
func TestWaitUpdates_RefusedPastTheCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 5
		f := newWaitFixture(t, limit, limit+1)
		done := make(chan waitResult, limit+1)
		for _, d := range f.devices[:limit] {
			gen := f.generation(t, d)
			go func() {
				u, err := f.svc.WaitUpdates(context.Background(), d, gen)
				done <- waitResult{u, err}
			}()
		}
		synctest.Wait()
		extra := f.devices[limit]
		_, err := f.svc.WaitUpdates(context.Background(), extra, "x")
		p, ok := errors.AsType[*problem.Error](err)
		if !ok || p.Kind != problem.Unavailable || p.RetryAfter <= 0 {
			t.Fatalf("wait %d past a cap of %d = %v; want Unavailable with a Retry-After", limit+1, limit, err)
		}
		if n := Waiters(f.svc); n != limit {
			t.Errorf("waiters after the refusal: %d, want %d", n, limit)
		}
		// The first device renews its wait at the cap: accepted, its earlier wait ends.
		first := f.devices[0]
		go func() {
			u, err := f.svc.WaitUpdates(context.Background(), first, f.generation(t, first))
			done <- waitResult{u, err}
		}()
		synctest.Wait()
		if len(done) != 1 || Waiters(f.svc) != limit {
			t.Errorf("a waiting device renews at the cap: %d answered, %d waiting; want 1 and %d", len(done), Waiters(f.svc), limit)
		}
		f.svc.Stop()
		for range limit + 1 {
			if r := <-done; r.err != nil {
				t.Errorf("wait: %v", r.err)
			}
		}
	})
}

// TestNotify_SpreadsTheRechecks attacks the wake-up (issue 10, defect 5: one tenant change
// woke 3,000 waiters at once and slowed other requests from 7 ms to 2 s): after one Notify
// with n waiters, their re-checks (one store read each) spread over about n *
// wakeSpreadEach, and none comes later than maxWakeSpread.
func TestNotify_SpreadsTheRechecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 500
		f := newWaitFixture(t, n, n)
		done := make(chan waitResult, n)
		for _, d := range f.devices {
			gen := f.generation(t, d)
			go func() {
				u, err := f.svc.WaitUpdates(context.Background(), d, gen)
				done <- waitResult{u, err}
			}()
		}
		synctest.Wait()
		start, before := time.Now(), f.store.readCount()
		f.svc.Notify(f.devices[0].TenantID)
		time.Sleep(maxWakeSpread + time.Second)
		reads := f.store.readsFrom(before)
		if len(reads) != n {
			t.Fatalf("re-checks after one Notify with %d waiters: %d store reads, want %d", n, len(reads), n)
		}
		const bucket = 100 * time.Millisecond
		perBucket := map[time.Duration]int{}
		var last time.Duration
		for _, r := range reads {
			at := r.Sub(start)
			perBucket[at/bucket]++
			last = max(last, at)
		}
		spread := time.Duration(n) * wakeSpreadEach
		if busiest := maxCount(perBucket); busiest > n/4 {
			t.Errorf("%d of %d re-checks in one %s, want them spread over %s", busiest, n, bucket, spread)
		}
		if last < spread/2 || last > maxWakeSpread {
			t.Errorf("last re-check %s after the Notify, want within %s and not much earlier", last, spread)
		}
		if len(done) != 0 {
			t.Errorf("%d waits answered though nothing changed", len(done))
		}
		f.svc.Stop()
		for range n {
			<-done
		}
	})
}

func maxCount(m map[time.Duration]int) int {
	best := 0
	for _, c := range m {
		best = max(best, c)
	}
	return best
}
