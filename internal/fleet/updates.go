package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet/push"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// The update long-polls are internal/fleet/push's; these names keep the service's API.

// UpdatesWait asks to wait for a change.
type UpdatesWait = push.UpdatesWait

// Updates is the answer to a wait: the current generation of the device's assignment
// inputs.
type Updates = push.Updates

// Wait bounds (see internal/fleet/push).
const (
	MaxWait           = push.MaxWait
	DefaultMaxWaiters = push.DefaultMaxWaiters
)

// WaitUpdates answers when the device's generation differs from since, or after MaxWait,
// or at once with the generation it last read when a newer wait of the same device
// replaces it. Past Config.MaxWaiters it is a problem.Unavailable with a Retry-After.
func (s *Service) WaitUpdates(ctx context.Context, dev device.Device, since string) (Updates, error) {
	return s.waits.Wait(ctx, dev, since, func(ctx context.Context) (string, error) {
		return s.generation(ctx, dev.TenantID, dev.ID)
	})
}

// Notify wakes every device of the tenant waiting on this replica: something that may
// change their assignments changed. Call it after the change is committed, from the code
// that makes it (the management API's handlers, and any background job that changes
// deployments, groups, devices or the published images), never from a transport layer.
// It is cheap: a tenant without waiters costs a map lookup, and a false alarm one
// generation read per waiter, spread over up to two seconds.
func (s *Service) Notify(t tenant.ID) { s.waits.Notify(t); s.broadcast(t) }

// Stop ends every wait at once (the server is shutting down).
func (s *Service) Stop() { s.waits.Stop() }

// generation fingerprints what the director's assignment for the device is computed from:
// the device's group and state, the group's feed and policy, its current deployment, and
// its staged rollout's state, stage and version, and the tenant's published images. A
// Config.Policy whose choice depends on more must add that here too, or a waiting device learns of its change only at its
// next periodic check.
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
		if err := writeInstallPolicy(ctx, h, tt, g); err != nil { // issue 12 (window.go)
			return err
		}
		d, err := tt.Deployments().Current(ctx, dev.ProductID, dev.GroupID)
		switch {
		case err == nil:
			fmt.Fprintf(h, "deployment %s\n", d.ID)
			if r := d.Rollout; r != nil {
				// A stage that opens, a pause or a completion changes assignments without a
				// new deployment: waiting devices wake on it (assign.NewImageAllowed).
				fmt.Fprintf(h, "rollout %s %d %d\n", r.State, r.Stage, r.Version)
			}
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
