// Package repo hosts moat's TUF image repository on the server: the platform's root chain,
// and one view per tenant (internal/tuf) whose files are kept in the store byte for byte, so
// that the repository survives restarts and is shared by every server replica.
//
// What it trusts and enforces (DESIGN rule 2; docs/design/updates.md):
//   - root.json and each tenant's targets.json come signed from the platform's offline
//     keys; the view verifies them (internal/tuf), and the first root must name this
//     server's online key for snapshot and timestamp, or nothing could ever be published;
//   - apps.json must verify under the delegation the operator signed AND carry a valid
//     signature by a key the tenant has registered and not revoked (internal/trust), so a
//     revoked key signs nothing from the moment it is revoked, before the operator re-signs
//     the delegation; attacked by TestRepo_RevokedKeySignsNothing;
//   - the server holds only the online key: it signs snapshot and timestamp and nothing that
//     adds software; attacked by internal/tuf's TestTUF_RejectsArbitrarySoftware;
//   - a tenant's files are reachable only through store.ForTenant (rule 3).
//
// Every write rebuilds the tenant's view from the store with tuf.Restore (which verifies
// everything again), applies the change, publishes a new snapshot and timestamp, and stores
// the new files in the same transaction; a concurrent writer on another replica loses on the
// immutable file names and gets store.ErrConflict. A Service is safe for concurrent use.
package repo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/trust"
	"github.com/moat-iot/moat/internal/tuf"
)

// Errors callers branch on, besides those of internal/tuf and internal/store.
var (
	// ErrNotInitialized: the platform has not uploaded its first root yet.
	ErrNotInitialized = errors.New("the image repository has no root yet (moat platform init)")
	// ErrWrongOnlineKey: a root that does not name this server's online key.
	ErrWrongOnlineKey = errors.New("the root does not name this server's online key for snapshot and timestamp")
	// ErrNoActiveKey: apps.json carries no valid signature by an active registered key.
	ErrNoActiveKey = errors.New("apps.json is not signed by any of the tenant's active registered signing keys")
	// ErrBadTarget: a target of apps.json is not an uploaded image package of the tenant
	// that matches its path (apps/<name>/<version>), or is not for one of its products.
	ErrBadTarget = errors.New("a target is not a matching image package uploaded by the tenant")
)

// Metadata lifetimes the server signs online.
const (
	SnapshotTTL  = 7 * 24 * time.Hour
	TimestampTTL = 24 * time.Hour
)

// Service is the hosted repository.
type Service struct {
	store     store.Store
	blobs     blob.Store
	online    signature.Signer
	onlinePub *ecdsa.PublicKey
	now       func() time.Time
	catalogs  catalogCache
	// defaultQuota is the storage quota of tenants without their own (0: DefaultStorageQuotaBytes).
	defaultQuota atomic.Int64
}

// New returns the service. online is the server's online signing key; blobs holds the
// uploaded image packages.
func New(st store.Store, blobs blob.Store, online *ecdsa.PrivateKey, now func() time.Time) (*Service, error) {
	if st == nil || blobs == nil || online == nil || now == nil {
		return nil, errors.New("repo: store, blob store, online key and clock are required")
	}
	s, err := keys.Signer(online)
	if err != nil {
		return nil, err
	}
	return &Service{store: st, blobs: blobs, online: s, onlinePub: &online.PublicKey, now: now}, nil
}

// OnlineKey is the public key the root must name for snapshot and timestamp.
func (s *Service) OnlineKey() *ecdsa.PublicKey { return s.onlinePub }

// PutRoot stores the next root of the platform chain and returns its version. The first
// must be version 1, self-signed, and name this server's online key; each next one must be
// signed by a threshold of the previous root's keys and its own.
func (s *Service) PutRoot(ctx context.Context, data []byte, record func(tx store.Tx, version int64) error) (int64, error) {
	r, err := parseRoot(data)
	if err != nil {
		return 0, err
	}
	version := r.Signed.Version
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		roots, err := tx.PlatformRoots().List(ctx)
		if err != nil {
			return err
		}
		if len(roots) == 0 {
			if _, err := tuf.Open(data); err != nil {
				return err
			}
		} else {
			v, err := tuf.Open(roots[0])
			if err != nil {
				return fmt.Errorf("stored root 1: %w", err)
			}
			for i, next := range append(roots[1:], data) {
				if err := v.PutRoot(next); err != nil {
					if i == len(roots)-1 {
						return err
					}
					return fmt.Errorf("stored root %d: %w", i+2, err)
				}
			}
		}
		if err := s.namesOnlineKey(r); err != nil {
			return err
		}
		if err := tx.PlatformRoots().Append(ctx, version, data, s.now().UTC()); err != nil {
			return err
		}
		if record != nil {
			return record(tx, version)
		}
		return nil
	})
	return version, err
}

func (s *Service) namesOnlineKey(r *metadata.Metadata[metadata.RootType]) error {
	id := keys.KeyID(s.onlinePub)
	for _, role := range []string{metadata.SNAPSHOT, metadata.TIMESTAMP} {
		rr, ok := r.Signed.Roles[role]
		if !ok || !contains(rr.KeyIDs, id) {
			return ErrWrongOnlineKey
		}
	}
	return nil
}

// Record is called inside the transaction of a successful change, with its version, so that
// the caller's audit event commits or rolls back with it. Nil records nothing.
type Record func(tt store.TenantTx, version int64) error

// PutTargets applies a tenant's new top-level targets.json (signed offline by the platform
// OS key) and publishes; it returns the targets version.
func (s *Service) PutTargets(ctx context.Context, t tenant.ID, data []byte, record Record) (int64, error) {
	var version int64
	err := s.update(ctx, t, func(tt store.TenantTx, v *tuf.View) error {
		meta, err := parseTargets(data)
		if err != nil {
			return err
		}
		for path, tf := range meta.Signed.Targets {
			if err := s.checkOSTarget(ctx, tt, path, tf); err != nil {
				return err
			}
		}
		if err := v.PutTargets(data); err != nil {
			return err
		}
		version = meta.Signed.Version
		return nil
	}, func(tt store.TenantTx) error { return record.call(tt, version) })
	return version, err
}

func (r Record) call(tt store.TenantTx, version int64) error {
	if r == nil {
		return nil
	}
	return r(tt, version)
}

// PutApps applies a tenant's new apps.json (signed offline by the tenant) and publishes; it
// returns the apps version.
func (s *Service) PutApps(ctx context.Context, t tenant.ID, data []byte, record Record) (int64, error) {
	var version int64
	err := s.update(ctx, t, func(tt store.TenantTx, v *tuf.View) error {
		meta, err := parseTargets(data)
		if err != nil {
			return err
		}
		ks, err := allSigningKeys(ctx, tt)
		if err != nil {
			return err
		}
		if err := signedByActiveKey(ks, meta); err != nil {
			return err
		}
		for path, tf := range meta.Signed.Targets {
			if err := s.checkTarget(ctx, tt, path, tf); err != nil {
				return err
			}
		}
		if err := v.PutApps(data); err != nil {
			return err
		}
		version = meta.Signed.Version
		return nil
	}, func(tt store.TenantTx) error { return record.call(tt, version) })
	return version, err
}

// checkOSTarget ties an OS target of targets.json to a package the platform uploaded (an OS
// image at os/<name>/<version>) and records it as the tenant's, so the tenant's devices may
// fetch it.
func (s *Service) checkOSTarget(ctx context.Context, tt store.TenantTx, path string, tf *metadata.TargetFiles) error {
	d, m, err := s.openPackage(ctx, path, tf)
	if err != nil {
		return err
	}
	if m.Kind != image.KindOS || path != "os/"+m.Name+"/"+m.Version {
		return fmt.Errorf("%w: %s holds %s %s %s", ErrBadTarget, path, m.Kind, m.Name, m.Version)
	}
	if err := checkCustom(path, tf, m); err != nil {
		return err
	}
	if err := tt.Blobs().AddPlatform(ctx, d.String(), tf.Length, s.now().UTC()); err != nil {
		return err
	}
	// The record holds the file's row, so a garbage collection that removed the file is
	// over: the file must still be here (TestGC_KeepsPublished).
	if err := s.stillStored(ctx, d); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadTarget, path, err)
	}
	return nil
}

// openPackage reads the manifest of the stored blob a target names, checking its length.
func (s *Service) openPackage(ctx context.Context, path string, tf *metadata.TargetFiles) (blob.Digest, image.Manifest, error) {
	hexsum, ok := tf.Hashes["sha256"]
	if !ok {
		return blob.Digest{}, image.Manifest{}, fmt.Errorf("%w: %s has no sha256", ErrBadTarget, path)
	}
	d, err := blob.ParseDigest(hexsum.String())
	if err != nil {
		return d, image.Manifest{}, fmt.Errorf("%w: %s: %w", ErrBadTarget, path, err)
	}
	info, err := s.blobs.Stat(ctx, d)
	if errors.Is(err, blob.ErrNotFound) || err == nil && info.Size != tf.Length {
		return d, image.Manifest{}, fmt.Errorf("%w: %s: no uploaded blob %s of %d bytes", ErrBadTarget, path, d, tf.Length)
	}
	if err != nil {
		return d, image.Manifest{}, err
	}
	f, err := s.blobs.Open(ctx, d)
	if err != nil {
		return d, image.Manifest{}, fmt.Errorf("open blob %s: %w", d, err)
	}
	defer f.Close()
	pkg, err := image.Open(f)
	if err != nil {
		return d, image.Manifest{}, fmt.Errorf("%w: %s: %w", ErrBadTarget, path, err)
	}
	return d, pkg.Manifest(), nil
}

// CurrentTargets returns the tenant's current targets.json, or nil when it has none.
func (s *Service) CurrentTargets(ctx context.Context, t tenant.ID) ([]byte, error) {
	v, err := s.TargetsVersion(ctx, t)
	if err != nil || v == 0 {
		return nil, err
	}
	return s.File(ctx, t, strconv.FormatInt(v, 10)+".targets.json")
}

// checkTarget ties a signed target to what the tenant uploaded: the blob with that SHA-256
// and length is the tenant's, it is an image package whose manifest names the same path
// (apps/<name>/<version>), it is an app, and its product exists in the tenant. The device
// checks the same package again (hash, length, manifest) before installing.
func (s *Service) checkTarget(ctx context.Context, tt store.TenantTx, path string, tf *metadata.TargetFiles) error {
	d, m, err := s.openPackage(ctx, path, tf)
	if err != nil {
		return err
	}
	if size, err := tt.Blobs().Size(ctx, d.String()); errors.Is(err, store.ErrNotFound) || err == nil && size != tf.Length {
		return fmt.Errorf("%w: %s: the tenant uploaded no blob %s of %d bytes", ErrBadTarget, path, d, tf.Length)
	} else if err != nil {
		return err
	}
	if m.Kind != image.KindApp || path != "apps/"+m.Name+"/"+m.Version {
		return fmt.Errorf("%w: %s holds %s %s %s", ErrBadTarget, path, m.Kind, m.Name, m.Version)
	}
	if err := checkCustom(path, tf, m); err != nil {
		return err
	}
	if _, err := tt.Products().GetByName(ctx, m.Product); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %s is for product %q, which the tenant does not have", ErrBadTarget, path, m.Product)
		}
		return err
	}
	return nil
}

// checkCustom reads the signed custom metadata of the target at path as the catalog and
// devices do (target.DecodeCustom: a missing or unknown field is an error, never a default),
// and requires its product to be the package's: devices and the attestation policy take
// the product from it. Kind and version are the path's, which the caller compared with the
// manifest; the security version devices compare with the manifest themselves at download
// and boot (TestUpdate_RejectsManifestMismatch). Attacked by
// TestRepo_RejectsTargetsThatAreNotTheTenantsPackages.
func checkCustom(path string, tf *metadata.TargetFiles, m image.Manifest) error {
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	c, err := target.DecodeCustom(path, raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadTarget, err)
	}
	if c.Product != m.Product {
		return fmt.Errorf("%w: %s: the signed product %q differs from the package's %q", ErrBadTarget, path, c.Product, m.Product)
	}
	return nil
}

// allSigningKeys lists every signing key of the tenant, revoked ones included, by ID.
func allSigningKeys(ctx context.Context, tt store.TenantTx) ([]trust.SigningKey, error) {
	var all []trust.SigningKey
	page := store.Page{Limit: 1000}
	for {
		ks, err := tt.SigningKeys().List(ctx, page)
		if err != nil {
			return nil, err
		}
		all = append(all, ks...)
		if len(ks) < page.Limit {
			return all, nil
		}
		page.After = string(ks[len(ks)-1].ID)
	}
}

// signedByActiveKey checks that apps carries a valid signature by one of the keys of ks
// that are active (revocation takes effect at once).
func signedByActiveKey(ks []trust.SigningKey, apps *metadata.Metadata[metadata.TargetsType]) error {
	var active []trust.SigningKey
	for _, k := range ks {
		if k.Active() {
			active = append(active, k)
		}
	}
	if len(active) == 0 {
		return ErrNoActiveKey
	}
	pubs := make([]*ecdsa.PublicKey, 0, len(active))
	for _, k := range active {
		pub, err := keys.ParsePublicPEM([]byte(k.PublicKeyPEM))
		if err != nil {
			return fmt.Errorf("registered key %s: %w", k.ID, err)
		}
		pubs = append(pubs, pub)
	}
	if err := tuf.VerifySignedByAny(apps, pubs); err != nil {
		return fmt.Errorf("%w: %w", ErrNoActiveKey, err)
	}
	return nil
}

// update rebuilds the tenant's view, applies fn, publishes and stores the new files, all in
// one transaction.
func (s *Service) update(ctx context.Context, t tenant.ID, fn func(store.TenantTx, *tuf.View) error, after func(store.TenantTx) error) error {
	return s.inLockedTenant(ctx, t, func(tx store.Tx, tt store.TenantTx) error {
		v, err := s.load(ctx, tx, tt)
		if err != nil {
			return err
		}
		if err := fn(tt, v); err != nil {
			return err
		}
		now := s.now().UTC()
		if err := v.Publish(s.online, now, SnapshotTTL, TimestampTTL); err != nil {
			return err
		}
		for _, f := range v.Files() {
			if err := tt.TUFFiles().Put(ctx, store.File{Name: f.Name, Data: f.Data}, now); err != nil {
				return fmt.Errorf("store %s: %w", f.Name, err)
			}
		}
		s.invalidate(t)
		return after(tt)
	})
}

// inLockedTenant runs fn in a transaction of tenant t that holds the tenant's blob lock. A
// publish names blobs the tenant recorded; garbage collection removes records that nothing
// names: one at a time per tenant, so neither acts on what the other changes
// (TestGC_KeepsPublished).
func (s *Service) inLockedTenant(ctx context.Context, t tenant.ID, fn func(store.Tx, store.TenantTx) error) error {
	return s.store.InTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		if err := tt.Blobs().Lock(ctx); err != nil {
			return err
		}
		return fn(tx, tt)
	})
}

// load rebuilds the tenant's view from the platform roots and the tenant's stored files,
// verifying everything (tuf.Restore).
func (s *Service) load(ctx context.Context, tx store.Tx, tt store.TenantTx) (*tuf.View, error) {
	roots, err := tx.PlatformRoots().List(ctx)
	if err != nil {
		return nil, err
	}
	if len(roots) == 0 {
		return nil, ErrNotInitialized
	}
	stored, err := tt.TUFFiles().All(ctx)
	if err != nil {
		return nil, err
	}
	if len(stored) == 0 {
		v, err := tuf.Open(roots[0])
		if err != nil {
			return nil, err
		}
		for _, r := range roots[1:] {
			if err := v.PutRoot(r); err != nil {
				return nil, err
			}
		}
		return v, nil
	}
	// The platform chain may have grown since the tenant's files were stored.
	files := make([]tuf.File, 0, len(stored)+len(roots))
	have := map[string]bool{}
	for _, f := range stored {
		files = append(files, tuf.File{Name: f.Name, Data: f.Data})
		have[f.Name] = true
	}
	for i, r := range roots {
		if name := rootName(int64(i + 1)); !have[name] {
			files = append(files, tuf.File{Name: name, Data: r})
		}
	}
	return tuf.Restore(files)
}

// File returns a file of the tenant's view as a TUF client asks for it: N.root.json,
// N.targets.json, N.apps.json, N.snapshot.json or timestamp.json; store.ErrNotFound
// otherwise. Root files come from the platform chain, so a rotation reaches every tenant.
func (s *Service) File(ctx context.Context, t tenant.ID, name string) ([]byte, error) {
	var data []byte
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		if n, ok := rootVersion(name); ok {
			roots, err := tx.PlatformRoots().List(ctx)
			if err != nil {
				return err
			}
			if n < 1 || n > int64(len(roots)) {
				return store.ErrNotFound
			}
			data = roots[n-1]
			return nil
		}
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		data, err = tt.TUFFiles().Get(ctx, name)
		return err
	})
	return data, err
}

// TargetsVersion returns the version of the tenant's current targets.json, 0 when it has
// none yet.
func (s *Service) TargetsVersion(ctx context.Context, t tenant.ID) (int64, error) {
	var version int64
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		files, err := tt.TUFFiles().All(ctx)
		if err != nil {
			return err
		}
		for _, f := range files {
			if n, ok := fileVersion(f.Name, ".targets.json"); ok && n > version {
				version = n
			}
		}
		return nil
	})
	return version, err
}

func rootName(n int64) string { return strconv.FormatInt(n, 10) + ".root.json" }

// rootVersion parses "N.root.json" with N canonical.
func rootVersion(name string) (int64, bool) { return fileVersion(name, ".root.json") }

// fileVersion parses "N<suffix>" with N canonical and at least 1.
func fileVersion(name, suffix string) (int64, bool) {
	if len(name) <= len(suffix) || name[len(name)-len(suffix):] != suffix {
		return 0, false
	}
	num := name[:len(name)-len(suffix)]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != num {
		return 0, false
	}
	return n, true
}

func parseRoot(data []byte) (r *metadata.Metadata[metadata.RootType], err error) {
	defer recoverMalformed(&err)
	r, err = metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: root: %w", tuf.ErrMalformed, err)
	}
	return r, nil
}

func parseTargets(data []byte) (t *metadata.Metadata[metadata.TargetsType], err error) {
	defer recoverMalformed(&err)
	t, err = metadata.Targets().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: targets: %w", tuf.ErrMalformed, err)
	}
	return t, nil
}

// recoverMalformed turns a panic in go-tuf's parser on hostile bytes into ErrMalformed.
func recoverMalformed(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", tuf.ErrMalformed, r)
	}
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// ServeBlob serves one of the tenant's blobs (with Range and a strong ETag); another
// tenant's blob is store.ErrNotFound, as is a blob nobody uploaded.
func (s *Service) ServeBlob(w http.ResponseWriter, r *http.Request, t tenant.ID, d blob.Digest) error {
	err := s.store.InReadTx(r.Context(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		_, err = tt.Blobs().Size(r.Context(), d.String())
		return err
	})
	if err != nil {
		return err
	}
	if err := blob.Serve(privateCache{w}, r, s.blobs, d); errors.Is(err, blob.ErrNotFound) {
		return store.ErrNotFound
	} else if err != nil {
		return err
	}
	return nil
}

// privateCache keeps a tenant's blob out of shared caches: it is immutable, so the client may
// keep it for a year, but it was served to an authenticated tenant member.
type privateCache struct{ http.ResponseWriter }

func (p privateCache) WriteHeader(code int) {
	if strings.HasPrefix(p.Header().Get("Cache-Control"), "public") {
		p.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	}
	p.ResponseWriter.WriteHeader(code)
}

// Refresh re-signs, for every tenant view that has published anything, a timestamp nearing
// expiry (and a snapshot when it would expire first), so that clients never see a frozen
// repository (DESIGN rule 2, freeze). It returns the number of views it changed; an error
// on one tenant does not stop the others, and all errors are returned joined.
func (s *Service) Refresh(ctx context.Context) (int, error) {
	var tenants []tenant.ID
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		page := store.Page{Limit: 1000}
		for {
			ts, err := tx.Tenants().List(ctx, page)
			if err != nil {
				return err
			}
			for _, t := range ts {
				tt, err := tx.ForTenant(t.ID)
				if err != nil {
					return err
				}
				if _, err := tt.TUFFiles().Get(ctx, store.TimestampFile); err == nil {
					tenants = append(tenants, t.ID)
				} else if !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			if len(ts) < page.Limit {
				return nil
			}
			page.After = string(ts[len(ts)-1].ID)
		}
	})
	if err != nil {
		return 0, err
	}
	var changed int
	var errs []error
	for _, t := range tenants {
		err := s.store.InTx(ctx, func(tx store.Tx) error {
			tt, err := tx.ForTenant(t)
			if err != nil {
				return err
			}
			v, err := s.load(ctx, tx, tt)
			if err != nil {
				return err
			}
			before, err := v.File(store.TimestampFile)
			if err != nil {
				return err
			}
			now := s.now().UTC()
			err = v.RefreshTimestamp(s.online, now, TimestampTTL)
			if errors.Is(err, tuf.ErrExpired) {
				// A restored view does not know the last snapshot lifetime: publish anew.
				err = v.Publish(s.online, now, SnapshotTTL, TimestampTTL)
			}
			if err != nil {
				return err
			}
			after, err := v.File(store.TimestampFile)
			if err != nil || bytes.Equal(before, after) {
				return err
			}
			for _, f := range v.Files() {
				if err := tt.TUFFiles().Put(ctx, store.File{Name: f.Name, Data: f.Data}, now); err != nil {
					return fmt.Errorf("store %s: %w", f.Name, err)
				}
			}
			changed++
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("refresh tenant %s: %w", t, err))
		}
	}
	return changed, errors.Join(errs...)
}
