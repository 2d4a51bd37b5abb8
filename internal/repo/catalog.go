package repo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/trust"
	"github.com/moat-iot/moat/internal/tuf"
)

// Image is one image the tenant's current repository view lists: an OS image of
// targets.json (signed by the platform OS key) or an app of apps.json (signed by the
// tenant's key), with the custom metadata the offline key signed.
type Image struct {
	Path            string   // TUF target path: os/<name>/<version> or apps/<name>/<version>
	Kind            string   // "os" or "app"
	Name            string   // the path's middle segment
	Version         string   // semantic version
	SecurityVersion uint32   // anti-rollback floor the image sets
	SHA256          string   // lower-case hex
	Length          int64    // bytes
	Product         string   // apps: the product it is for
	Feeds           []string // os: the feeds it is published to
}

// Component is the image's anti-rollback component: its path without the version.
func (im Image) Component() string { return im.Path[:strings.LastIndexByte(im.Path, '/')] }

// Catalog is the set of images a tenant's current repository view lists: what is genuine
// and approved now. An image once listed and no longer is revoked.
type Catalog struct {
	Images map[string]Image // by path
	key    string           // the revision it was computed from (catalogRevision)
}

// Fingerprint names the catalog's content: the images it lists, with their hashes and
// security versions. A re-signed timestamp does not change it; a publication that adds,
// changes or revokes an image does.
func (c *Catalog) Fingerprint() string {
	paths := slices.Sorted(maps.Keys(c.Images))
	h := sha256.New()
	for _, p := range paths {
		im := c.Images[p]
		fmt.Fprintf(h, "%s %s %d %s\n", p, im.SHA256, im.SecurityVersion, strings.Join(im.Feeds, ","))
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:16])
}

type catalogCache struct {
	mu sync.Mutex
	m  map[tenant.ID]*Catalog
}

// Catalog returns the images the tenant's current view lists (empty before anything is
// published). Apps are listed only while apps.json carries a signature by an active
// registered key (a revoked key signs nothing).
//
// The cached catalog is checked on every call against the catalog's revision read from the
// store in the same snapshot: the SHA-256 of the current timestamp.json (which changes with
// every publication, so with every image revoked by a new targets.json or apps.json) and of
// the tenant's signing keys with their revocation state. A revocation through any replica
// sharing the database therefore takes effect at once on every replica, with no TTL (issue
// 10, defect 7; attacked by TestRevocation_KeyRevokedRefusesAtOnce and
// TestRevocation_ReachesOtherReplicasAtOnce in internal/fleet, and by
// TestCatalog_RevokedKeyAtOnce here). The price is one read of the tenant's signing keys
// per call.
func (s *Service) Catalog(ctx context.Context, t tenant.ID) (*Catalog, error) {
	var c *Catalog
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		c, err = s.CatalogIn(ctx, tt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CatalogIn is Catalog read in the caller's transaction, so that a caller that reads
// other things with it (an attestation, its device) opens one transaction, not two.
func (s *Service) CatalogIn(ctx context.Context, tt store.TenantTx) (*Catalog, error) {
	t := tt.ID()
	ts, err := tt.TUFFiles().Get(ctx, store.TimestampFile)
	if errors.Is(err, store.ErrNotFound) {
		return &Catalog{Images: map[string]Image{}}, nil
	}
	if err != nil {
		return nil, err
	}
	ks, err := allSigningKeys(ctx, tt)
	if err != nil {
		return nil, err
	}
	key := catalogRevision(ts, ks)
	s.catalogs.mu.Lock()
	c := s.catalogs.m[t]
	s.catalogs.mu.Unlock()
	if c != nil && c.key == key {
		return c, nil
	}
	if c, err = s.loadCatalog(ctx, tt, ts, ks); err != nil {
		return nil, err
	}
	c.key = key
	s.catalogs.mu.Lock()
	if s.catalogs.m == nil {
		s.catalogs.m = map[tenant.ID]*Catalog{}
	}
	s.catalogs.m[t] = c
	s.catalogs.mu.Unlock()
	return c, nil
}

// catalogRevision names what a catalog is computed from: the timestamp.json bytes and each
// signing key with whether it is active.
func catalogRevision(timestamp []byte, ks []trust.SigningKey) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\n", len(timestamp))
	h.Write(timestamp)
	for _, k := range ks {
		fmt.Fprintf(h, "%s %t\n", k.ID, k.Active())
	}
	return string(h.Sum(nil))
}

// invalidate drops the tenant's cached catalog (after a publication on this replica: the
// revision would tell anyway, this frees the old one sooner).
func (s *Service) invalidate(t tenant.ID) {
	s.catalogs.mu.Lock()
	delete(s.catalogs.m, t)
	s.catalogs.mu.Unlock()
}

func (s *Service) loadCatalog(ctx context.Context, tt store.TenantTx, tsData []byte, ks []trust.SigningKey) (*Catalog, error) {
	c := &Catalog{Images: map[string]Image{}}
	err := func() error {
		ts, err := metadata.Timestamp().FromBytes(tsData)
		if err != nil {
			return fmt.Errorf("stored timestamp: %w", err)
		}
		snapMeta, ok := ts.Signed.Meta["snapshot.json"]
		if !ok {
			return errors.New("stored timestamp names no snapshot")
		}
		snapData, err := tt.TUFFiles().Get(ctx, strconv.FormatInt(snapMeta.Version, 10)+".snapshot.json")
		if err != nil {
			return fmt.Errorf("stored snapshot %d: %w", snapMeta.Version, err)
		}
		snap, err := metadata.Snapshot().FromBytes(snapData)
		if err != nil {
			return fmt.Errorf("stored snapshot: %w", err)
		}
		for role, prefix := range map[string]string{"targets": "os/", "apps": "apps/"} {
			m, ok := snap.Signed.Meta[role+".json"]
			if !ok {
				continue
			}
			data, err := tt.TUFFiles().Get(ctx, strconv.FormatInt(m.Version, 10)+"."+role+".json")
			if err != nil {
				return fmt.Errorf("stored %s %d: %w", role, m.Version, err)
			}
			md, err := parseTargets(data)
			if err != nil {
				return err
			}
			if role == "apps" {
				if err := signedByActiveKey(ks, md); err != nil {
					if errors.Is(err, ErrNoActiveKey) {
						continue // every app of a revoked key is unapproved
					}
					return err
				}
			}
			if err := addImages(c.Images, md, prefix); err != nil {
				return err
			}
		}
		return nil
	}()
	return c, err
}

// addImages adds the targets of md under prefix to images.
func addImages(images map[string]Image, md *metadata.Metadata[metadata.TargetsType], prefix string) error {
	files, err := tuf.TargetFilesOf(md)
	if err != nil {
		return err
	}
	for path, f := range files {
		if !strings.HasPrefix(path, prefix) || strings.Count(path, "/") != 2 {
			continue
		}
		images[path] = imageOf(path, f)
	}
	return nil
}

func imageOf(path string, f tuf.TargetFile) Image {
	parts := strings.Split(path, "/")
	// tuf.TargetFilesOf decoded the custom metadata strictly (target.DecodeCustom), as
	// devices do: a target without a security version is an error, never 0. The offline key
	// signed it; the server checked the package behind it at upload.
	c := f.Custom
	return Image{Path: path, Kind: c.Kind, Name: parts[1], Version: c.Version, SHA256: f.SHA256, Length: f.Length,
		SecurityVersion: c.SecurityVersion, Product: c.Product, Feeds: c.Feeds}
}

// WasListed reports whether any version of the tenant's targets.json or apps.json ever
// listed path with this SHA-256: it tells a revoked image from one never signed.
func (s *Service) WasListed(ctx context.Context, t tenant.ID, path, sha256Hex string) (bool, error) {
	var found bool
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		found, err = WasListedIn(ctx, tt, path, sha256Hex)
		return err
	})
	return found, err
}

// WasListedIn is WasListed in the caller's transaction (so that a caller inside a write
// transaction does not wait for a second pooled connection).
func WasListedIn(ctx context.Context, tt store.TenantTx, path, sha256Hex string) (bool, error) {
	files, err := tt.TUFFiles().All(ctx)
	if err != nil {
		return false, err
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Name, ".targets.json") && !strings.HasSuffix(f.Name, ".apps.json") {
			continue
		}
		md, err := parseTargets(f.Data)
		if err != nil {
			return false, err
		}
		if tf, ok := md.Signed.Targets[path]; ok {
			if h, ok := tf.Hashes["sha256"]; ok && h.String() == sha256Hex {
				return true, nil
			}
		}
	}
	return false, nil
}
