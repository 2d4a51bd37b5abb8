// Package assign chooses the images the director assigns a device: the seam through which
// a rollout policy will decide what reaches a device, without editing the fleet service.
//
// The fleet service reads the inputs (the device, its group, the group's current
// deployment, the tenant's image catalog) and hands them to a Policy; Images then vets the
// Policy's Choice and turns it into the assignment's image list. Default is the behaviour
// a group has without a rollout: the newest OS image on the group's feed, and the app its
// current deployment names unless the group takes OS updates only.
//
// What it trusts: its Input, read by the caller from the store and from the catalog of
// internal/repo (images the offline keys signed and nobody revoked).
//
// What it enforces (DESIGN rule 2, and rule 1's floors): whatever a Policy chooses, Images
// assigns only an image the catalog lists now at that path with that hash (a revoked image
// never), of the kind its slot is for, at or above the device's anti-rollback floor for its
// component; a choice that fails is left out, not assigned (TestImages_RefusesWhatThePolicy
// MayNotAssign). Nor does any Policy assign a staged rollout's new image to a device the
// rollout holds it back from (NewImageAllowed: outside the open stages, or not running it
// already while the rollout is paused or aborted); Default assigns such a device the
// rollout's base image instead. The device checks the assignment against TUF again.
//
// A Policy must answer from its Input and its own state only, and must be safe for
// concurrent use: the director asks it on every assignment, from many requests at once.
// The functions of this package are pure and safe for concurrent use.
package assign

import (
	"context"
	"slices"

	"golang.org/x/mod/semver"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
)

// Input is what a device's assignment is chosen from.
type Input struct {
	// Device is the device, in a group (Device.ProductID is set).
	Device device.Device
	// Group is the device's group: its OS feed and update policy.
	Group product.Group
	// Deployment is the group's current deployment, nil when it has none.
	Deployment *device.Deployment
	// Catalog is the tenant's image catalog now (never nil).
	Catalog *repo.Catalog
}

// Choice is a Policy's answer: the OS and app images to assign, nil for none. They should
// come from Input.Catalog; Images vets them again.
type Choice struct {
	OS  *repo.Image
	App *repo.Image
}

// Policy chooses what a device is assigned.
type Policy interface {
	Choose(ctx context.Context, in Input) (Choice, error)
}

// PolicyFunc is a function that is a Policy.
type PolicyFunc func(ctx context.Context, in Input) (Choice, error)

// Choose calls f.
func (f PolicyFunc) Choose(ctx context.Context, in Input) (Choice, error) { return f(ctx, in) }

// Default is the policy of a fleet without rollouts: NewestOS and DeploymentApp.
var Default Policy = PolicyFunc(func(_ context.Context, in Input) (Choice, error) {
	var c Choice
	if os, ok := NewestOS(in); ok {
		c.OS = &os
	}
	if app, ok := DeploymentApp(in); ok {
		c.App = &app
	}
	return c, nil
})

// NewestOS picks the OS image with the highest semantic version on the group's feed that
// the device's floor allows (of equal versions, the first path).
func NewestOS(in Input) (repo.Image, bool) {
	var best repo.Image
	found := false
	for _, im := range in.Catalog.Images {
		if im.Kind != director.KindOS || !slices.Contains(im.Feeds, string(in.Group.OSFeed)) || im.SecurityVersion < in.Device.Floors[im.Component()] {
			continue
		}
		if !found || semver.Compare("v"+im.Version, "v"+best.Version) > 0 ||
			semver.Compare("v"+im.Version, "v"+best.Version) == 0 && im.Path < best.Path {
			best, found = im, true
		}
	}
	return best, found
}

// DeploymentApp is the app image the group's current deployment assigns the device, when
// the group takes app updates and the catalog still lists it with the deployed hash at or
// above the device's floor: the deployment's target, or, while a staged rollout holds it
// back from the device (NewImageAllowed), the rollout's base image (none without one).
func DeploymentApp(in Input) (repo.Image, bool) {
	d := in.Deployment
	if in.Group.UpdatePolicy != product.UpdateAll || d == nil {
		return repo.Image{}, false
	}
	target, sha := d.Target, d.SHA256
	if !NewImageAllowed(in) {
		target, sha = d.Rollout.BaseTarget, d.Rollout.BaseSHA256
	}
	im, ok := in.Catalog.Images[target]
	if target == "" || !ok || im.SHA256 != sha || im.SecurityVersion < in.Device.Floors[im.Component()] {
		return repo.Image{}, false
	}
	return im, true
}

// Images asks p for the device's choice and returns the images to assign, the OS first:
// each chosen image only if it passes Assignable, described as the catalog lists it. A nil
// p is Default.
func Images(ctx context.Context, p Policy, in Input) ([]director.Image, error) {
	if p == nil {
		p = Default
	}
	c, err := p.Choose(ctx, in)
	if err != nil {
		return nil, err
	}
	var out []director.Image
	if c.OS != nil && Assignable(in, *c.OS, director.KindOS) {
		out = append(out, toDirector(in.Catalog.Images[c.OS.Path]))
	}
	if c.App != nil && Assignable(in, *c.App, director.KindApp) && !heldBack(in, *c.App) {
		out = append(out, toDirector(in.Catalog.Images[c.App.Path]))
	}
	return out, nil
}

// Assignable reports whether im may be assigned to the device in the slot of kind: the
// catalog lists it now with the same hash, it is of that kind, and its security version
// is at or above the device's floor for its component (DESIGN rule 2).
func Assignable(in Input, im repo.Image, kind string) bool {
	listed, ok := in.Catalog.Images[im.Path]
	return ok && listed.SHA256 == im.SHA256 && listed.Kind == kind &&
		listed.SecurityVersion >= in.Device.Floors[listed.Component()]
}

// heldBack reports whether im is the new image of a staged rollout that does not let the
// device have it: whatever a Policy chooses, a device outside the open stages, or any device
// that does not run it yet while the rollout is paused or aborted, is not assigned it.
func heldBack(in Input, im repo.Image) bool {
	d := in.Deployment
	return d != nil && d.Rollout != nil && im.Path == d.Target && d.Target != d.Rollout.BaseTarget && !NewImageAllowed(in)
}

func toDirector(im repo.Image) director.Image {
	return director.Image{Kind: im.Kind, Path: im.Path, SHA256: im.SHA256, Length: im.Length, Version: im.Version, SecurityVersion: im.SecurityVersion}
}
