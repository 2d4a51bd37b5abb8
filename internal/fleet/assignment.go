package fleet

import (
	"context"
	"errors"
	"time"

	"github.com/moat-iot/moat/internal/capability"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/fleet/assign"
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
func (s *Service) Assignment(ctx context.Context, dev device.Device) ([]byte, director.Assignment, error) {
	now := s.cfg.Now().UTC()
	a := director.Assignment{
		Version: director.Format, DeviceID: string(dev.ID), TenantID: string(dev.TenantID),
		Counter: s.nextCounter(now), IssuedAt: now.Truncate(time.Second),
		ExpiresAt: now.Truncate(time.Second).Add(AssignmentTTL), Images: []director.Image{},
	}
	if dev.ProductID != "" {
		images, err := s.assignedImages(ctx, dev)
		if err != nil {
			return nil, director.Assignment{}, err
		}
		a.Images = images
	}
	if err := s.installPolicy(ctx, dev, &a, now); err != nil { // issue 12: maintenance window, deferral (window.go)
		return nil, director.Assignment{}, err
	}
	data, err := director.Issue(s.cfg.Director, a)
	if err != nil {
		return nil, director.Assignment{}, err
	}
	s.metrics.assignments.Inc()
	return data, a, nil
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

// assignedImages reads the device's assignment inputs and asks the policy (assign.Images).
func (s *Service) assignedImages(ctx context.Context, dev device.Device) ([]director.Image, error) {
	in := assign.Input{Device: dev}
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		if in.Group, err = tt.Groups().Get(ctx, dev.ProductID, dev.GroupID); err != nil {
			return err
		}
		d, err := tt.Deployments().Current(ctx, dev.ProductID, dev.GroupID)
		if err == nil {
			in.Deployment = &d
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if in.Catalog, err = s.cfg.Repo.Catalog(ctx, dev.TenantID); err != nil {
		return nil, err
	}
	return assign.Images(ctx, s.cfg.Policy, in)
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
