package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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

// notifier wakes the waiters of a tenant.
type notifier struct {
	mu sync.Mutex
	ch map[tenant.ID]chan struct{}
}

func (n *notifier) wait(t tenant.ID) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = map[tenant.ID]chan struct{}{}
	}
	c, ok := n.ch[t]
	if !ok {
		c = make(chan struct{})
		n.ch[t] = c
	}
	return c
}

// Notify wakes every device of the tenant waiting on this replica: something that may
// change their assignments changed.
func (s *Service) Notify(t tenant.ID) {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	if c, ok := s.notify.ch[t]; ok {
		close(c)
		delete(s.notify.ch, t)
	}
}

// Stop ends every wait at once (the server is shutting down).
func (s *Service) Stop() { s.stopOnce.Do(func() { close(s.stopped) }) }

// WaitUpdates answers when the device's generation differs from since, or after MaxWait.
func (s *Service) WaitUpdates(ctx context.Context, dev device.Device, since string) (Updates, error) {
	deadline := time.NewTimer(MaxWait)
	defer deadline.Stop()
	for {
		woken := s.notify.wait(dev.TenantID)
		gen, err := s.generation(ctx, dev.TenantID, dev.ID)
		if err != nil {
			return Updates{}, err
		}
		if gen != since {
			return Updates{Generation: gen, Changed: true}, nil
		}
		recheck := time.NewTimer(recheckEvery)
		select {
		case <-woken:
		case <-recheck.C:
		case <-deadline.C:
			recheck.Stop()
			return Updates{Generation: gen}, nil
		case <-s.stopped:
			recheck.Stop()
			return Updates{Generation: gen}, nil
		case <-ctx.Done():
			recheck.Stop()
			return Updates{}, ctx.Err()
		}
		recheck.Stop()
	}
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
