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
// Concurrency: a Waits is safe for concurrent use; one mutex guards its tables and its
// waits. A wait holds no goroutine: a timer drives it (Park), and its re-checks read the
// store on the timer's goroutine, never under the mutex. Wait blocks its caller on a
// parked wait for those who keep a goroutine per request anyway.
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

// recheckTimeout bounds one re-check's generation read: a parked wait has no request whose
// end would stop it.
const recheckTimeout = 10 * time.Second

type waitKey struct {
	tenant tenant.ID
	device device.ID
}

// waiter is one device's wait. It holds no goroutine (issue 15, memory per waiting
// device): one timer drives it, set to its next re-check (the periodic one, or a woken
// one's spread delay) and never past its deadline, and a re-check's read runs on the
// timer's goroutine. Every field after done is guarded by Waits.mu.
type waiter struct {
	k        waitKey
	ctx      context.Context
	since    string
	gen      Generation
	done     func(Updates, error)
	deadline time.Time

	timer    *time.Timer
	last     string // the generation last read
	checking bool   // a re-check is reading the generation
	woken    int    // a wake-up came while checking: re-check after a spread for this many (0: none)
	over     bool   // ended: done was called, or will not be (Cancel)
}

// Waits holds the waits of a replica and wakes those of a tenant.
type Waits struct {
	max     int
	metrics metrics

	mu       sync.Mutex
	stopped  bool
	byDevice map[waitKey]*waiter
	byTenant map[tenant.ID]map[*waiter]struct{}
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
	n := &Waits{max: maxWaiters, byDevice: map[waitKey]*waiter{}, byTenant: map[tenant.ID]map[*waiter]struct{}{}}
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

// ended is a wait that ended and the answer its done gets, called once the lock is
// released (done may take locks of its own).
type ended struct {
	w   *waiter
	u   Updates
	err error
}

func (e ended) answer() {
	if e.w != nil {
		e.w.done(e.u, e.err)
	}
}

// endLocked ends w, which gets u and err.
func (n *Waits) endLocked(w *waiter, u Updates, err error) ended {
	if w.over {
		return ended{}
	}
	w.over = true
	if w.timer != nil {
		w.timer.Stop()
	}
	if n.byDevice[w.k] == w {
		delete(n.byDevice, w.k)
	}
	if set := n.byTenant[w.k.tenant]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(n.byTenant, w.k.tenant)
		}
	}
	n.metrics.waiters.Dec()
	return ended{w, u, err}
}

// add registers w, ending the device's earlier wait (returned, to be answered unchanged); a
// device that does not wait yet is refused when n.max devices do.
func (n *Waits) addLocked(w *waiter) (ended, error) {
	var old ended
	if prev, ok := n.byDevice[w.k]; ok {
		old = n.endLocked(prev, Updates{Generation: prev.last}, nil)
	} else if len(n.byDevice) >= n.max {
		return old, errTooManyWaiters
	}
	n.byDevice[w.k] = w
	set := n.byTenant[w.k.tenant]
	if set == nil {
		set = map[*waiter]struct{}{}
		n.byTenant[w.k.tenant] = set
	}
	set[w] = struct{}{}
	n.metrics.waiters.Inc()
	return old, nil
}

// scheduleLocked sets w's next re-check d from now, or its deadline if that comes first.
func (n *Waits) scheduleLocked(w *waiter, d time.Duration) {
	d = min(d, time.Until(w.deadline))
	if w.timer == nil {
		w.timer = time.AfterFunc(d, func() { n.fire(w) })
		return
	}
	w.timer.Reset(d)
}

// fire is w's timer: at the deadline the wait ends unchanged; before it, a re-check.
func (n *Waits) fire(w *waiter) {
	n.mu.Lock()
	if w.over || w.checking {
		n.mu.Unlock()
		return
	}
	if !time.Now().Before(w.deadline) {
		e := n.endLocked(w, Updates{Generation: w.last}, nil)
		n.mu.Unlock()
		e.answer()
		return
	}
	w.checking, w.woken = true, 0
	n.mu.Unlock()

	ctx, cancel := context.WithTimeout(w.ctx, recheckTimeout)
	gen, err := w.gen(ctx)
	cancel()

	n.mu.Lock()
	w.checking = false
	var e ended
	switch {
	case w.over: // replaced, cancelled or stopped while it read: answered already
	case err != nil:
		e = n.endLocked(w, Updates{}, err)
	case gen != w.since:
		e = n.endLocked(w, Updates{Generation: gen, Changed: true}, nil)
	case w.woken > 0: // woken while it read: that change may not be in what it read
		w.last = gen
		n.scheduleLocked(w, wakeDelay(w.woken))
	default:
		w.last = gen
		n.scheduleLocked(w, recheckEvery)
	}
	n.mu.Unlock()
	e.answer()
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
	set := n.byTenant[t]
	if len(set) == 0 {
		return
	}
	n.metrics.wakeups.Inc()
	n.wakeLocked(set, len(set))
}

// wakeLocked has each waiter of set re-check after a spread for woken waiters; one that
// reads already re-checks once more after it, since its read may predate the change.
func (n *Waits) wakeLocked(set map[*waiter]struct{}, woken int) {
	for w := range set {
		if w.checking {
			w.woken = woken
			continue
		}
		n.scheduleLocked(w, wakeDelay(woken))
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

// Stop ends every wait at once, unchanged (the server is shutting down); a wait that comes
// after reads its generation once and answers at once.
func (n *Waits) Stop() {
	n.mu.Lock()
	n.stopped = true
	all := make([]ended, 0, len(n.byDevice))
	for _, w := range n.byDevice {
		all = append(all, n.endLocked(w, Updates{Generation: w.last}, nil))
	}
	n.mu.Unlock()
	for _, e := range all {
		e.answer()
	}
}

// Len is the number of devices waiting.
func (n *Waits) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byDevice)
}

// Armed reports whether a device of the tenant waits (a change from now on wakes it).
func (n *Waits) Armed(t tenant.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byTenant[t]) > 0
}

// Generation computes a device's generation: a fingerprint of what its assignment is
// computed from, which changes when the assignment may.
type Generation func(ctx context.Context) (string, error)

// Wait answers when the device's generation differs from since, or after MaxWait, or at
// once with the generation it last read when a newer wait of the same device replaces it.
// Past the replica's bound of waiters it is a problem.Unavailable with a Retry-After. It
// blocks its caller: Park is the same wait without a goroutine.
func (n *Waits) Wait(ctx context.Context, dev device.Device, since string, generation Generation) (Updates, error) {
	answer := make(chan result, 1)
	u, cancel, err := n.Park(ctx, dev, since, generation, func(u Updates, err error) { answer <- result{u, err} })
	if err != nil || cancel == nil {
		return u, err
	}
	select {
	case r := <-answer:
		return r.u, r.err
	case <-ctx.Done():
		cancel()
		return Updates{}, ctx.Err()
	}
}

type result struct {
	u   Updates
	err error
}

// Park is Wait for a caller that does not block on it. It reads the device's generation
// once: when it differs from since, or the read fails, or the wait is refused, Park
// answers at once and cancel is nil. Otherwise the wait is parked: done gets its answer
// exactly once, later, on another goroutine (a timer's, or that of the Notify, Stop or
// newer wait that ends it), and must not block; cancel ends the wait without an answer,
// and reports false when it had ended already (done has, or will have, its answer).
// The re-checks read the generation with ctx, each for at most recheckTimeout.
func (n *Waits) Park(ctx context.Context, dev device.Device, since string, generation Generation, done func(Updates, error)) (u Updates, cancel func() bool, err error) {
	w := &waiter{k: waitKey{dev.TenantID, dev.ID}, ctx: ctx, since: since, gen: generation, done: done,
		deadline: time.Now().Add(MaxWait), last: since, checking: true}
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		gen, err := generation(ctx)
		return Updates{Generation: gen, Changed: err == nil && gen != since}, nil, err
	}
	old, err := n.addLocked(w)
	n.mu.Unlock()
	old.answer()
	if err != nil {
		n.metrics.waitsRefused.Inc()
		return Updates{}, nil, &problem.Error{Kind: problem.Unavailable, Code: "too_many_waiters", Err: err,
			Detail:     "the server holds as many waiting devices as it may; check again later",
			RetryAfter: waitRetryAfter + rand.N(waitRetryAfter)} //nolint:gosec // G404: jitter to spread retries, not a secret
	}

	// Registered before the read: a change committed after it wakes the wait.
	gen, err := generation(ctx)
	n.mu.Lock()
	defer n.mu.Unlock()
	w.checking = false
	switch {
	case w.over: // ended while it read (a newer wait, Stop): done has its answer
		return Updates{}, func() bool { return false }, nil
	case err != nil:
		n.endLocked(w, Updates{}, nil) // answered here, not through done
		return Updates{}, nil, err
	case gen != since:
		n.endLocked(w, Updates{}, nil)
		return Updates{Generation: gen, Changed: true}, nil, nil
	}
	w.last = gen
	if w.woken > 0 {
		n.scheduleLocked(w, wakeDelay(w.woken))
	} else {
		n.scheduleLocked(w, recheckEvery)
	}
	return Updates{}, func() bool { return n.cancel(w) }, nil
}

// cancel ends w without an answer (its caller is gone), and reports whether it did: false
// when it had ended already, and done has its answer.
func (n *Waits) cancel(w *waiter) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.endLocked(w, Updates{}, nil).w != nil
}
