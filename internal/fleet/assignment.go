package fleet

import (
	"context"
	"errors"
	"time"

	"github.com/moat-iot/moat/internal/capability"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
)

// Assignment computes what the device should run and returns it signed by the director
// key: what Config.Policy chooses (assign.Default when nil: the newest OS image on its
// group's feed, and, unless the group takes OS updates only, the app its group's current
// deployment names; with a staged rollout, the new image only where assign.NewImageAllowed
// lets it, the rollout's base image elsewhere). An image that is no longer in the catalog (revoked) or is below the
// device's floor is never assigned, whatever the policy chooses (assign.Images); a device
// outside any group is assigned nothing. The counter is the issuing time in milliseconds,
// kept strictly increasing by this process, so assignments need no write per check.
//
// It always reads the inputs from the store and signs anew; a device's update check goes
// through CheckAssignment, which answers "not modified" when the device holds the current
// one, and reuses what the device's group and tenant contribute (memo.go).
func (s *Service) Assignment(ctx context.Context, dev device.Device) ([]byte, director.Assignment, error) {
	data, a, _, err := s.assignment(ctx, dev, false)
	return data, a, err
}

// assignment is Assignment, with the generation of the inputs it was computed from; with
// memo, the group's and tenant's inputs come through the memo.
func (s *Service) assignment(ctx context.Context, dev device.Device, memo bool) ([]byte, director.Assignment, string, error) {
	in, err := s.readInputs(ctx, dev, memo)
	if err != nil {
		return nil, director.Assignment{}, "", err
	}
	now := s.cfg.Now().UTC()
	a := director.Assignment{
		Version: director.Format, DeviceID: string(dev.ID), TenantID: string(dev.TenantID),
		Counter: s.nextCounter(now), IssuedAt: now.Truncate(time.Second),
		ExpiresAt: now.Truncate(time.Second).Add(AssignmentTTL), Images: []director.Image{},
	}
	if dev.ProductID != "" {
		images, err := assign.Images(ctx, s.cfg.Policy, in.assignInput())
		if err != nil {
			return nil, director.Assignment{}, "", err
		}
		if images != nil {
			a.Images = images
		}
	}
	in.installPolicy(&a, now) // issue 12: maintenance window, deferral (window.go)
	data, err := director.Issue(s.cfg.Director, a)
	if err != nil {
		return nil, director.Assignment{}, "", err
	}
	s.metrics.assignments.Inc()
	return data, a, in.generation(), nil
}

func (s *Service) nextCounter(now time.Time) uint64 {
	ms := uint64(now.UnixMilli())
	for {
		last := s.counter.Load()
		next := max(ms, last+1)
		if s.counter.CompareAndSwap(last, next) {
			return next
		}
	}
}

// inputs is everything a device's assignment is computed from (and so everything its
// generation fingerprints, updates.go): the device, its group, its product, the group's
// current deployment and the tenant's catalog.
type inputs struct {
	dev     device.Device
	grouped bool // the device is in a group: group and product are set
	group   product.Group
	product product.Product
	dep     *device.Deployment // nil without one
	catalog *repo.Catalog
}

// readInputs reads the assignment inputs of dev (as authentication read it): what its
// group contributes in one snapshot, and the catalog after it; with memo, each is reused
// from the memo while no change to the tenant has been heard of and for inputsMemoMaxAge
// at most (memo.go).
func (s *Service) readInputs(ctx context.Context, dev device.Device, memo bool) (inputs, error) {
	in := inputs{dev: dev}
	if err := s.readGroupMemo(ctx, &in, memo); err != nil {
		return inputs{}, err
	}
	var err error
	if in.catalog, err = s.catalogFor(ctx, dev.TenantID, memo); err != nil {
		return inputs{}, err
	}
	return in, nil
}

// readGroupMemo is readGroup, through the memo (memo.go) when memo is set; the inputs it
// reads are kept in the memo either way.
func (s *Service) readGroupMemo(ctx context.Context, in *inputs, memo bool) error {
	if in.dev.ProductID == "" {
		return nil
	}
	now := s.cfg.Now()
	k := groupKey{tenant: in.dev.TenantID, product: in.dev.ProductID, group: in.dev.GroupID}
	if g, ok := s.memo.group(k, now); memo && ok {
		in.product, in.group, in.dep, in.grouped = g.product, g.group, g.dep, true
		return nil
	}
	readShare := func() (read[groupShare], error) {
		epoch := s.cache.epoch() // before the read: a change meanwhile keeps it out of the memo
		g := inputs{dev: in.dev}
		err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
			tt, err := tx.ForTenant(g.dev.TenantID)
			if err != nil {
				return err
			}
			return g.readGroup(ctx, tt)
		})
		if err != nil {
			return read[groupShare]{}, err
		}
		share := groupShare{product: g.product, group: g.group, dep: g.dep}
		s.memo.putGroup(k, share, epoch, now)
		return read[groupShare]{v: share, epoch: epoch}, nil
	}
	var share groupShare
	ok := false
	if memo {
		share, ok = shared(ctx, s.memo, "group/"+string(k.tenant)+"/"+string(k.product)+"/"+string(k.group), k.tenant, readShare)
		if ok && share.dep != nil {
			d := *share.dep // the shared read's deployment is every joiner's: copy it
			share.dep = &d
		}
	}
	if !ok {
		r, err := readShare()
		if err != nil {
			return err
		}
		share = r.v
	}
	in.product, in.group, in.dep, in.grouped = share.product, share.group, share.dep, true
	return nil
}

// readGroup reads what in.dev's group contributes: the group, its product and its
// current deployment. A device outside any group has none of them.
func (in *inputs) readGroup(ctx context.Context, tt store.TenantTx) error {
	if in.dev.ProductID == "" {
		return nil
	}
	var err error
	if in.product, err = tt.Products().Get(ctx, in.dev.ProductID); err != nil {
		return err
	}
	if in.group, err = tt.Groups().Get(ctx, in.dev.ProductID, in.dev.GroupID); err != nil {
		return err
	}
	in.grouped = true
	d, err := tt.Deployments().Current(ctx, in.dev.ProductID, in.dev.GroupID)
	switch {
	case err == nil:
		in.dep = &d
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return nil
}

func (in *inputs) assignInput() assign.Input {
	return assign.Input{Device: in.dev, Group: in.group, Deployment: in.dep, Catalog: in.catalog}
}

// CapabilityValidity is how long a development capability lasts; the device fetches it
// again while the capability stays granted.
const CapabilityValidity = 7 * 24 * time.Hour

// ErrNoCapability: the device has not been granted the development capability.
var ErrNoCapability = errors.New("the device has no development capability")

// DevelopmentCapability returns the device's development capability signed by the director
// key (internal/capability), or ErrNoCapability when its tenant has not granted it.
func (s *Service) DevelopmentCapability(dev device.Device) ([]byte, error) {
	if !dev.Development {
		return nil, ErrNoCapability
	}
	return capability.Issue(s.cfg.Director, string(dev.ID), string(dev.TenantID), s.cfg.Now(), CapabilityValidity)
}
