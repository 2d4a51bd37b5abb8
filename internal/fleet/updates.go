package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
//
// Each generation it reads also checks the device's cached assignment (cache.go): one
// computed from other inputs is dropped, so a change whose notification was lost (another
// replica's, while this one's LISTEN connection was down) is not answered "not modified"
// once the wait's periodic re-check has seen it.
func (s *Service) WaitUpdates(ctx context.Context, dev device.Device, since string) (Updates, error) {
	return s.waits.Wait(ctx, dev, since, s.generationOf(dev.TenantID, dev.ID, since))
}

// ParkUpdates is WaitUpdates without a goroutine (push.Waits.Park): when it answers at once
// cancel is nil; otherwise done gets the answer later, on another goroutine, and must not
// block. Its re-checks read the store with ctx, which should not end with the request that
// parked (context.WithoutCancel).
func (s *Service) ParkUpdates(ctx context.Context, dev device.Device, since string, done func(Updates, error)) (u Updates, cancel func() bool, err error) {
	return s.waits.Park(ctx, dev, since, s.generationOf(dev.TenantID, dev.ID, since), done)
}

// generationOf reads the device's generation for its wait since a generation, and drops
// its cached assignment when that was computed from other inputs. It keeps the device's
// tenant and ID only: a parked wait holds this function for up to MaxWait.
func (s *Service) generationOf(t tenant.ID, id device.ID, since string) push.Generation {
	return func(ctx context.Context) (string, error) {
		g, err := s.generation(ctx, t, id, since)
		if err == nil {
			s.cache.dropUnless(t, id, g)
		}
		return g, err
	}
}

// Notify wakes every device of the tenant waiting on this replica: something that may
// change their assignments changed. Call it after the change is committed, from the code
// that makes it (the management API's handlers, and any background job that changes
// deployments, groups, devices or the published images), never from a transport layer.
// It is cheap: a tenant without waiters costs a map lookup, and a false alarm one
// generation read per waiter, spread over up to two seconds.
//
// It also ends the tenant's cached assignments on this replica, before the waiters wake,
// and, through Config.Broadcast, on the others (cache.go).
func (s *Service) Notify(t tenant.ID) {
	s.cache.changed(t)
	s.waits.Notify(t)
	s.broadcast(t)
}

// Stop ends every wait at once (the server is shutting down).
func (s *Service) Stop() { s.waits.Stop() }

// generation fingerprints what the director's assignment for the device is computed from
// (inputs, assignment.go): the device's group, state, floors and what it runs (a paused
// rollout keeps the new image for devices that run it), the group's feed, policy and
// maintenance window, the product's deferral bound, the group's current deployment and
// its staged rollout's state, stage and version, and the tenant's published images. A
// Config.Policy whose choice depends on more must add that here too, or a waiting device
// learns of its change only at its next periodic check (and a cached assignment outlives
// it up to CacheMaxAge when the change's notification is lost).
//
// The device's row is read on every call; what its group and tenant contribute comes
// through the memo (memo.go), so the wake of a whole group after a deployment costs one
// small read per device. When the generation differs from since the device is answered
// now and asks for its assignment next: its row is kept for that request's authentication
// (devcache.go). Otherwise it waits on, and its row would only expire in the cache.
func (s *Service) generation(ctx context.Context, t tenant.ID, id device.ID, since string) (string, error) {
	epoch := s.cache.epoch() // before the row is read, for the device cache
	var dev device.Device
	err := s.readOne(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		dev, err = tt.Devices().Get(ctx, id)
		return err
	})
	if err != nil {
		return "", err
	}
	in, err := s.readInputs(ctx, dev, true)
	if err != nil {
		return "", err
	}
	g := in.generation()
	if g != since {
		s.devices.put(dev, epoch, s.cfg.Now())
	}
	return g, nil
}

// generation is the fingerprint of in (Service.generation).
func (in *inputs) generation() string {
	h := sha256.New()
	dev := &in.dev
	run, ok := dev.Attestation.Running()
	fmt.Fprintf(h, "device %s %s %t %v\n", dev.ProductID, dev.GroupID, dev.Blocked, dev.Floors)
	fmt.Fprintf(h, "running %t %q %q\n", ok, run.OSTarget, run.AppTarget)
	if in.grouped {
		g := in.group
		fmt.Fprintf(h, "group %s %s\n", g.OSFeed, g.UpdatePolicy)
		// A window that does not encode cannot be in a stored group; were it, the
		// fingerprint names it apart from every encodable one.
		if err := writeInstallPolicy(h, g, in.product); err != nil {
			fmt.Fprintf(h, "install unencodable\n")
		}
		if d := in.dep; d != nil {
			fmt.Fprintf(h, "deployment %s\n", d.ID)
			if r := d.Rollout; r != nil {
				// A stage that opens, a pause or a completion changes assignments without a
				// new deployment: waiting devices wake on it (assign.NewImageAllowed).
				fmt.Fprintf(h, "rollout %s %d %d\n", r.State, r.Stage, r.Version)
			}
		}
	}
	fmt.Fprintf(h, "catalog %s\n", in.catalog.Fingerprint())
	return hex.EncodeToString(h.Sum(nil)[:16])
}
