package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Updates in seconds, not days: a connected device long-polls WaitUpdates with the
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
// more than one. A replica holds at most Config.MaxWaiters waits; past it a wait is refused
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

// errTooManyWaiters: the replica holds Config.MaxWaiters waits already.
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

// notifier holds the waits of a replica and wakes those of a tenant.
type notifier struct {
	mu       sync.Mutex
	byDevice map[waitKey]*waiter
	count    map[tenant.ID]int // waiters per tenant
	wakes    map[tenant.ID]*wake
}

// add registers the device's wait, ending its earlier one; a device that does not wait
// yet is refused when limit devices do.
func (n *notifier) add(k waitKey, limit int) (*waiter, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byDevice == nil {
		n.byDevice, n.count, n.wakes = map[waitKey]*waiter{}, map[tenant.ID]int{}, map[tenant.ID]*wake{}
	}
	w := &waiter{ended: make(chan struct{})}
	if old, ok := n.byDevice[k]; ok {
		close(old.ended)
	} else {
		if len(n.byDevice) >= limit {
			return nil, errTooManyWaiters
		}
		n.count[k.tenant]++
	}
	n.byDevice[k] = w
	return w, nil
}

// remove ends the device's wait w unless a newer one replaced it.
func (n *notifier) remove(k waitKey, w *waiter) {
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

func (n *notifier) next(t tenant.ID) *wake {
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
func (s *Service) Notify(t tenant.ID) {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	if wk, ok := s.notify.wakes[t]; ok {
		s.metrics.wakeups.Inc()
		wk.woken = s.notify.count[t]
		close(wk.c)
		delete(s.notify.wakes, t)
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
func (s *Service) Stop() { s.stopOnce.Do(func() { close(s.stopped) }) }

// WaitUpdates answers when the device's generation differs from since, or after MaxWait,
// or at once with the generation it last read when a newer wait of the same device
// replaces it. Past Config.MaxWaiters it is a problem.Unavailable with a Retry-After.
func (s *Service) WaitUpdates(ctx context.Context, dev device.Device, since string) (Updates, error) {
	k := waitKey{dev.TenantID, dev.ID}
	w, err := s.notify.add(k, s.cfg.MaxWaiters)
	if err != nil {
		s.metrics.waitsRefused.Inc()
		return Updates{}, &problem.Error{Kind: problem.Unavailable, Code: "too_many_waiters", Err: err,
			Detail:     "the server holds as many waiting devices as it may; check again later",
			RetryAfter: waitRetryAfter + rand.N(waitRetryAfter)} //nolint:gosec // G404: jitter to spread retries, not a secret
	}
	s.metrics.waiters.Inc()
	defer s.metrics.waiters.Dec()
	defer s.notify.remove(k, w)
	deadline := time.NewTimer(MaxWait)
	defer deadline.Stop()
	for {
		wk := s.notify.next(dev.TenantID)
		gen, err := s.generation(ctx, dev.TenantID, dev.ID)
		if err != nil {
			return Updates{}, err
		}
		if gen != since {
			return Updates{Generation: gen, Changed: true}, nil
		}
		// Until a wake-up, then a spread delay, or the periodic re-check (changes made
		// through another replica).
		woken, err := s.pause(ctx, w, deadline.C, wk.c, recheckEvery)
		if err == nil && woken {
			_, err = s.pause(ctx, w, deadline.C, nil, wakeDelay(wk.woken))
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
func (s *Service) pause(ctx context.Context, w *waiter, deadline <-chan time.Time, wake <-chan struct{}, d time.Duration) (woken bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-wake:
		return true, nil
	case <-deadline:
	case <-w.ended:
	case <-s.stopped:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return false, errWaitOver
}

// generation fingerprints what the director's assignment for the device is computed from:
// the device's group and state, the group's feed and policy, its current deployment, and
// the tenant's published images.
func (s *Service) generation(ctx context.Context, t tenant.ID, id device.ID) (string, error) {
	h := sha256.New()
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		dev, err := tt.Devices().Get(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "device %s %s %t %v\n", dev.ProductID, dev.GroupID, dev.Blocked, dev.Floors)
		if dev.ProductID == "" {
			return nil
		}
		g, err := tt.Groups().Get(ctx, dev.ProductID, dev.GroupID)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "group %s %s\n", g.OSFeed, g.UpdatePolicy)
		d, err := tt.Deployments().Current(ctx, dev.ProductID, dev.GroupID)
		switch {
		case err == nil:
			fmt.Fprintf(h, "deployment %s\n", d.ID)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	cat, err := s.cfg.Repo.Catalog(ctx, t)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "catalog %s\n", cat.Fingerprint())
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}
