package sim

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/mod/semver"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// world is what the setup resolved: where the devices go and what they run at start.
type world struct {
	tenant      string
	product     client.Product
	group       client.DeviceGroup
	groupRef    string // PRODUCT/GROUP by names, as a device update names it
	os, app     *runImage
	root        []byte
	directorKey *ecdsa.PublicKey
}

// runImage is an image a device runs, as it measures it.
type runImage struct {
	kind, path, sha256, version string
	securityVersion             uint32
}

func (im *runImage) measurement() attest.Measurement {
	return attest.Measurement{Kind: im.kind, Path: im.path, SHA256: im.sha256, Version: im.version, SecurityVersion: im.securityVersion}
}

// resolve finds the tenant, product, group, the pinned root and the images the devices run.
func (s *Sim) resolve(ctx context.Context) error {
	w := &s.world
	var err error
	if w.tenant, err = s.findTenant(ctx); err != nil {
		return err
	}
	if w.product, err = findProduct(ctx, s.mgmt, w.tenant, s.cfg.Product); err != nil {
		return err
	}
	if w.group, err = findGroup(ctx, s.mgmt, w.tenant, w.product.ID, s.cfg.Group); err != nil {
		return err
	}
	w.groupRef = w.product.Name + "/" + w.group.Name
	w.root = s.cfg.Root
	if len(w.root) == 0 {
		if w.root, err = s.mgmt.GetTenantTUFFile(ctx, w.tenant, "1.root.json"); err != nil {
			return fmt.Errorf("the platform root: %w", err)
		}
	}
	if w.directorKey, err = update.DirectorKeyFromRoot(w.root); err != nil {
		return err
	}
	images, err := s.listImages(ctx)
	if err != nil {
		return err
	}
	if w.os, err = s.chooseOS(images); err != nil {
		return err
	}
	w.app, err = s.chooseApp(ctx, images)
	return err
}

func (s *Sim) findTenant(ctx context.Context) (string, error) {
	ref := s.cfg.Tenant
	switch {
	case ident.Valid("tnt", ref):
		t, err := s.mgmt.GetTenant(ctx, ref)
		return t.ID, err
	case ref != "":
		p, err := s.mgmt.ListTenants(ctx, client.ListOptions{Name: ref})
		if err != nil {
			return "", err
		}
		if len(p.Items) != 1 {
			return "", fmt.Errorf("tenant %q: not found", ref)
		}
		return p.Items[0].ID, nil
	}
	me, err := s.mgmt.GetMe(ctx)
	if err != nil {
		return "", err
	}
	if len(me.Roles) != 1 {
		return "", fmt.Errorf("the token holds a role in %d tenants: name one with the tenant", len(me.Roles))
	}
	return me.Roles[0].TenantID, nil
}

func findProduct(ctx context.Context, c *client.Client, tenant, ref string) (client.Product, error) {
	if ident.Valid("prd", ref) {
		return c.GetProduct(ctx, tenant, ref)
	}
	p, err := c.ListProducts(ctx, tenant, client.ListOptions{Name: ref})
	if err != nil {
		return client.Product{}, err
	}
	if len(p.Items) != 1 {
		return client.Product{}, fmt.Errorf("product %q: not found", ref)
	}
	return p.Items[0], nil
}

func findGroup(ctx context.Context, c *client.Client, tenant, product, ref string) (client.DeviceGroup, error) {
	if ident.Valid("grp", ref) {
		return c.GetDeviceGroup(ctx, tenant, product, ref)
	}
	p, err := c.ListDeviceGroups(ctx, tenant, product, client.ListOptions{Name: ref})
	if err != nil {
		return client.DeviceGroup{}, err
	}
	if len(p.Items) != 1 {
		return client.DeviceGroup{}, fmt.Errorf("device group %q: not found", ref)
	}
	return p.Items[0], nil
}

// listedImage is a target of the tenant's repository as its metadata lists it.
type listedImage struct {
	runImage
	custom target.Custom
}

// listImages reads the tenant's current targets.json and apps.json (following
// timestamp.json and the snapshot). Nothing here is trusted: it only tells the simulator
// what its devices claim to run; the service checks that at attestation, and the devices
// check every update with the update client.
func (s *Sim) listImages(ctx context.Context) (map[string]listedImage, error) {
	tenant := s.world.tenant
	raw, err := s.mgmt.GetTenantTUFFile(ctx, tenant, "timestamp.json")
	if err != nil {
		return nil, fmt.Errorf("the tenant's image repository: %w", err)
	}
	ts, err := metadata.Timestamp().FromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("timestamp.json: %w", err)
	}
	sm, ok := ts.Signed.Meta["snapshot.json"]
	if !ok {
		return nil, errors.New("timestamp.json names no snapshot")
	}
	if raw, err = s.mgmt.GetTenantTUFFile(ctx, tenant, fmt.Sprintf("%d.snapshot.json", sm.Version)); err != nil {
		return nil, err
	}
	snap, err := metadata.Snapshot().FromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("snapshot.json: %w", err)
	}
	out := map[string]listedImage{}
	for _, role := range []string{metadata.TARGETS, tuf.AppsRole} {
		m, ok := snap.Signed.Meta[role+".json"]
		if !ok {
			continue
		}
		if raw, err = s.mgmt.GetTenantTUFFile(ctx, tenant, fmt.Sprintf("%d.%s.json", m.Version, role)); err != nil {
			return nil, err
		}
		t, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("%s.json: %w", role, err)
		}
		for p, tf := range t.Signed.Targets {
			var c []byte
			if tf.Custom != nil {
				c = *tf.Custom
			}
			custom, err := target.DecodeCustom(p, c)
			if err != nil {
				continue // a device could not install it either
			}
			out[p] = listedImage{custom: custom, runImage: runImage{kind: custom.Kind, path: p, sha256: hex.EncodeToString(tf.Hashes["sha256"]),
				version: custom.Version, securityVersion: custom.SecurityVersion}}
		}
	}
	return out, nil
}

// chooseOS returns Config.OS, or the newest OS on the group's feed.
func (s *Sim) chooseOS(images map[string]listedImage) (*runImage, error) {
	if s.cfg.OS != "" {
		im, ok := images[s.cfg.OS]
		if !ok || im.kind != target.KindOS {
			return nil, fmt.Errorf("os %q: no such OS image in the tenant's repository", s.cfg.OS)
		}
		return &im.runImage, nil
	}
	var best *runImage
	for _, im := range sorted(images) {
		if im.kind != target.KindOS || !contains(im.custom.Feeds, string(s.world.group.OSFeed)) {
			continue
		}
		if best == nil || newer(im.runImage, *best) {
			best = &im.runImage
		}
	}
	return best, nil
}

// chooseApp returns Config.App, or the group's current deployment, or none.
func (s *Sim) chooseApp(ctx context.Context, images map[string]listedImage) (*runImage, error) {
	path := s.cfg.App
	if path == "" {
		ds, err := s.mgmt.ListDeployments(ctx, s.world.tenant, s.world.product.ID, s.world.group.ID, client.ListOptions{Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(ds.Items) == 0 {
			return nil, nil
		}
		path = ds.Items[0].Target
	}
	im, ok := images[path]
	if !ok || im.kind != target.KindApp || !strings.EqualFold(im.custom.Product, s.world.product.Name) {
		return nil, fmt.Errorf("app %q: no such app of product %s in the tenant's repository", path, s.world.product.Name)
	}
	return &im.runImage, nil
}

func sorted(m map[string]listedImage) []listedImage {
	out := make([]listedImage, 0, len(m))
	for _, im := range m {
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// newer orders images by security version, then by semantic version.
func newer(a, b runImage) bool {
	if a.securityVersion != b.securityVersion {
		return a.securityVersion > b.securityVersion
	}
	return semver.Compare("v"+a.version, "v"+b.version) > 0
}
