package fleet

import (
	"context"
	"errors"
	"slices"
	"time"

	"golang.org/x/mod/semver"

	"github.com/moat-iot/moat/internal/capability"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
)

// Assignment computes what the device should run and returns it signed by the director
// key: the newest OS image on its group's feed, and, unless the group takes OS updates
// only, the app its group's current deployment names. An image that is no longer in the
// catalog (revoked) or is below the device's floor is never assigned; a device outside any
// group is assigned nothing. The counter is the issuing time in milliseconds, kept strictly
// increasing by this process, so assignments need no write per check.
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

func (s *Service) assignedImages(ctx context.Context, dev device.Device) ([]director.Image, error) {
	var g product.Group
	var dep *device.Deployment
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(dev.TenantID)
		if err != nil {
			return err
		}
		if g, err = tt.Groups().Get(ctx, dev.ProductID, dev.GroupID); err != nil {
			return err
		}
		d, err := tt.Deployments().Current(ctx, dev.ProductID, dev.GroupID)
		if err == nil {
			dep = &d
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cat, err := s.cfg.Repo.Catalog(ctx, dev.TenantID)
	if err != nil {
		return nil, err
	}
	var out []director.Image
	if os, ok := newestOS(cat, g.OSFeed, dev.Floors); ok {
		out = append(out, toDirector(os))
	}
	if g.UpdatePolicy == product.UpdateAll && dep != nil {
		im, ok := cat.Images[dep.Target]
		if ok && im.SHA256 == dep.SHA256 && im.SecurityVersion >= dev.Floors[im.Component()] {
			out = append(out, toDirector(im))
		}
	}
	return out, nil
}

// newestOS picks the OS image with the highest semantic version on the feed that the
// device's floor allows.
func newestOS(cat *repo.Catalog, feed product.OSFeed, floors map[string]uint32) (repo.Image, bool) {
	var best repo.Image
	found := false
	for _, im := range cat.Images {
		if im.Kind != director.KindOS || !slices.Contains(im.Feeds, string(feed)) || im.SecurityVersion < floors[im.Component()] {
			continue
		}
		if !found || semver.Compare("v"+im.Version, "v"+best.Version) > 0 ||
			semver.Compare("v"+im.Version, "v"+best.Version) == 0 && im.Path < best.Path {
			best, found = im, true
		}
	}
	return best, found
}

func toDirector(im repo.Image) director.Image {
	return director.Image{Kind: im.Kind, Path: im.Path, SHA256: im.SHA256, Length: im.Length, Version: im.Version, SecurityVersion: im.SecurityVersion}
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
