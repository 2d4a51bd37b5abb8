// Package push answers the devices that long-poll for updates (POST /device/updates) as
// soon as what the director would assign them may have changed.
//
// What it trusts: its caller, to have authenticated the device (internal/fleet does, DESIGN
// rule 3) and to compute the device's generation, a fingerprint of its assignment inputs.
// It never reads the store itself.
//
// What it enforces (issue 10, defect 5): one wait per device, at most MaxWaiters per
// replica, wake-ups spread over time (the bounds below, and the tests named there).
//
// Concurrency: a Waits is safe for concurrent use; one mutex guards its tables, and each
// wait is one goroutine (the request's) that blocks on channels and timers, never on the
// mutex while it waits.
package push

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/tenant"
)

// Updates in seconds, not days: a connected device long-polls Wait with the
// generation it last saw; the answer comes as soon as what the director would assign it may
// have changed (a deployment, a publication, a change to its group or itself), or after
// MaxWait with the same generation. A change made through this replica wakes its waiters at
// once (Notify); one made through another replica is seen at the next re-check
// (recheckEvery), so the load of a waiting fleet is one cheap read per device per recheck,
// not per second. Devices still check on a jittered interval as a fallback.

// Wait bounds.
const (
	MaxWait      = 50 * time.Second // under the server's 60 s write timeout
	recheckEvery = 15 * time.Second
)

// UpdatesWait asks to wait for a change.
type UpdatesWait struct {
	// Since is the generation the device last saw; "" answers at once.
	Since string `json:"since"`
}

// Validate checks the request's shape.
func (u UpdatesWait) Validate() error {
	var v problem.Validation
	if len(u.Since) > 64 {
		v.Add("since", "invalid_generation", "since must be a generation this server returned")
	}
	return v.Err()
}

// Updates is the answer: the current generation of the device's assignment inputs.
type Updates struct {
	Generation string `json:"generation"`
	// Changed says the generation differs from Since: check the assignment now.
	Changed bool `json:"changed"`
}

// Bounds of the waits (issue 10, defect 5). A device has one wait at a time: a newer one
// ends the older at once (TestWaitUpdates_OneWaiterPerDevice), so a certificate cannot hold
// more than one. A replica holds at most MaxWaiters waits (New's maxWaiters); past it a wait is refused
// as Unavailable with a Retry-After (TestWaitUpdates_RefusedPastTheCap). A tenant change
// wakes its waiters over a spread that grows with their number, wakeSpreadEach each up to
// maxWakeSpread, so one publication does not turn into every device's re-check in the same
// instant (TestNotify_SpreadsTheRechecks).
const (
	DefaultMaxWaiters = 50_000
	wakeSpreadEach    = 2 * time.Millisecond
	maxWakeSpread     = 2 * time.Second
	// waitRetryAfter (and up to as much again, at random) is when a refused wait may come
	// back: the waiters of a full replica end within MaxWait.
	waitRetryAfter = 20 * time.Second
)

// errTooManyWaiters: the replica holds as many waits as New allowed already.
var errTooManyWaiters = errors.New("too many devices waiting")

type waitKey struct {
	tenant tenant.ID
	device device.ID
}

// waiter is one device's wait; ended is closed when a newer wait of the device replaces it.
type waiter struct{ ended chan struct{} }

// wake is a tenant's next wake-up: Notify closes c, having set woken to the number of the
// tenant's waiters then (which the woken spread their re-checks by).
type wake struct {
	c     chan struct{}
	woken int
}

// Waits holds the waits of a replica and wakes those of a tenant.
type Waits struct {
	max     int
	metrics metrics
	stopped chan struct{} // closed by Stop
	once    sync.Once

	mu       sync.Mutex
	byDevice map[waitKey]*waiter
	count    map[tenant.ID]int // waiters per tenant
	wakes    map[tenant.ID]*wake
}

type metrics struct {
	waiters      prometheus.Gauge
	waitsRefused prometheus.Counter
	wakeups      prometheus.Counter
}

// New returns the waits of a replica that holds at most maxWaiters (at least 1), with
// their metrics registered on reg.
func New(maxWaiters int, reg prometheus.Registerer) (*Waits, error) {
	if maxWaiters < 1 {
		return nil, fmt.Errorf("push: at most %d waiters: want at least 1", maxWaiters)
	}
	n := &Waits{max: maxWaiters, stopped: make(chan struct{}),
		byDevice: map[waitKey]*waiter{}, count: map[tenant.ID]int{}, wakes: map[tenant.ID]*wake{}}
	n.metrics = metrics{
		waiters:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_device_update_waiters", Help: "Devices waiting for updates on this replica (long-polls)."}),
		waitsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_device_update_waits_refused_total", Help: "Waits for updates refused because the replica held MaxWaiters already."}),
		wakeups:      prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_device_update_wakeups_total", Help: "Tenant changes that woke devices waiting for updates on this replica."}),
	}
	for _, c := range []prometheus.Collector{n.metrics.waiters, n.metrics.waitsRefused, n.metrics.wakeups} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("push: register metrics: %w", err)
		}
	}
	return n, nil
}

// add registers the device's wait, ending its earlier one; a device that does not wait
// yet is refused when n.max devices do.
func (n *Waits) add(k waitKey) (*waiter, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := &waiter{ended: make(chan struct{})}
	if old, ok := n.byDevice[k]; ok {
		close(old.ended)
	} else {
		if len(n.byDevice) >= n.max {
			return nil, errTooManyWaiters
		}
		n.count[k.tenant]++
	}
	n.byDevice[k] = w
	return w, nil
}

// remove ends the device's wait w unless a newer one replaced it.
func (n *Waits) remove(k waitKey, w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byDevice[k] != w {
		return
	}
	delete(n.byDevice, k)
	if n.count[k.tenant]--; n.count[k.tenant] == 0 {
		delete(n.count, k.tenant)
		delete(n.wakes, k.tenant)
	}
}

func (n *Waits) next(t tenant.ID) *wake {
	n.mu.Lock()
	defer n.mu.Unlock()
	wk, ok := n.wakes[t]
	if !ok {
		wk = &wake{c: make(chan struct{})}
		n.wakes[t] = wk
	}
	return wk
}

// Notify wakes every device of the tenant waiting on this replica: something that may
// change their assignments changed. Call it after the change is committed, from the code
// that makes it (the management API's handlers, and any background job that changes
// deployments, groups, devices or the published images), never from a transport layer.
// It is cheap: a tenant without waiters costs a map lookup, and a false alarm one
// generation read per waiter, spread over up to maxWakeSpread.
func (n *Waits) Notify(t tenant.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if wk, ok := n.wakes[t]; ok {
		n.metrics.wakeups.Inc()
		wk.woken = n.count[t]
		close(wk.c)
		delete(n.wakes, t)
	}
}

// wakeDelay is how long a waiter woken with woken others waits before its re-check: at
// random within a spread of wakeSpreadEach per waiter, at most maxWakeSpread.
func wakeDelay(woken int) time.Duration {
	spread := min(time.Duration(woken)*wakeSpreadEach, maxWakeSpread)
	if spread <= 0 {
		return 0
	}
	return rand.N(spread) //nolint:gosec // G404: jitter to spread re-checks, not a secret
}

// Stop ends every wait at once (the server is shutting down).
func (n *Waits) Stop() { n.once.Do(func() { close(n.stopped) }) }

// Len is the number of devices waiting.
func (n *Waits) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byDevice)
}

// Armed reports whether a device of the tenant waits for a wake-up.
func (n *Waits) Armed(t tenant.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.wakes[t]
	return ok
}

// Generation computes a device's generation: a fingerprint of what its assignment is
// computed from, which changes when the assignment may.
type Generation func(ctx context.Context) (string, error)

// Wait answers when the device's generation differs from since, or after MaxWait, or at
// once with the generation it last read when a newer wait of the same device replaces it.
// Past the replica's bound of waiters it is a problem.Unavailable with a Retry-After.
func (n *Waits) Wait(ctx context.Context, dev device.Device, since string, generation Generation) (Updates, error) {
	k := waitKey{dev.TenantID, dev.ID}
	w, err := n.add(k)
	if err != nil {
		n.metrics.waitsRefused.Inc()
		return Updates{}, &problem.Error{Kind: problem.Unavailable, Code: "too_many_waiters", Err: err,
			Detail:     "the server holds as many waiting devices as it may; check again later",
			RetryAfter: waitRetryAfter + rand.N(waitRetryAfter)} //nolint:gosec // G404: jitter to spread retries, not a secret
	}
	n.metrics.waiters.Inc()
	defer n.metrics.waiters.Dec()
	defer n.remove(k, w)
	deadline := time.NewTimer(MaxWait)
	defer deadline.Stop()
	for {
		wk := n.next(dev.TenantID)
		gen, err := generation(ctx)
		if err != nil {
			return Updates{}, err
		}
		if gen != since {
			return Updates{Generation: gen, Changed: true}, nil
		}
		// Until a wake-up, then a spread delay, or the periodic re-check (changes made
		// through another replica).
		woken, err := n.pause(ctx, w, deadline.C, wk.c, recheckEvery)
		if err == nil && woken {
			_, err = n.pause(ctx, w, deadline.C, nil, wakeDelay(wk.woken))
		}
		if errors.Is(err, errWaitOver) {
			return Updates{Generation: gen}, nil
		}
		if err != nil {
			return Updates{}, err
		}
	}
}

// errWaitOver: the wait ends with the generation unchanged (MaxWait passed, a newer wait
// of the device replaced it, or the server is stopping).
var errWaitOver = errors.New("wait over")

// pause waits d, or until woken is closed (woken reports it), or the wait is over or its
// context done.
func (n *Waits) pause(ctx context.Context, w *waiter, deadline <-chan time.Time, wake <-chan struct{}, d time.Duration) (woken bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-wake:
		return true, nil
	case <-deadline:
	case <-w.ended:
	case <-n.stopped:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return false, errWaitOver
}
