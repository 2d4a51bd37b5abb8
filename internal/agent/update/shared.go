package update

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/internal/director"
)

// DefaultRepositoryMaxAge is the MaxAge of a RepositoryConfig that gives none.
const DefaultRepositoryMaxAge = 30 * time.Second

// RepositoryConfig configures a Repository. Every field but MaxAge is required.
type RepositoryConfig struct {
	// MetadataURL and TargetsURL are the tenant's view of the image repository, as in
	// Config; the Clients that share the Repository name the same.
	MetadataURL string
	TargetsURL  string
	// Root is the pinned platform root, 1.root.json.
	Root []byte
	// Dir holds go-tuf's trusted metadata for every Client that shares the Repository. It
	// is created (mode 0700) if missing. No Client's StateDir may be Dir.
	Dir string
	// MaxMetadataBytes bounds every TUF metadata file downloaded.
	MaxMetadataBytes int64
	// MaxAge, optional, is how long a refreshed view serves Checks before the next one
	// refreshes it again (DefaultRepositoryMaxAge).
	MaxAge time.Duration
}

// Repository is one verified view of a tenant's image repository that the Clients of many
// devices of that tenant share: the simulator (`moat sim`) runs thousands of devices in one
// process, and each refreshing a copy of its own would cost a directory on disk per device
// and four requests per device per check.
//
// The view is refreshed with go-tuf from the pinned root exactly as a Client refreshes its
// own (root chain, rollback, freeze, mix-and-match and length checks), its trusted metadata
// kept in Dir, so the rollback protection spans refreshes as it does on a device. A Check
// uses the current view only while it is younger than MaxAge, none of its trusted roles has
// expired by the Client's clock, and it lists every assigned path with the assigned SHA-256;
// otherwise the Check refreshes it first, with the Client's HTTP client (one refresh at a
// time: the Checks that wait for it use its result, and a failed refresh fails them all).
// What stays per Client are the director's checks (signature, device, tenant, expiry,
// counter), the product and the floors. A view is never served past an expiry, and never
// instead of a refresh that an unknown path asked for.
//
// Concurrency: safe for concurrent use.
type Repository struct {
	cfg RepositoryConfig

	mu sync.Mutex
	up *updater.Updater // the last refreshed view; nil before the first
	at time.Time        // when up was refreshed, by the caller's clock
}

// NewRepository validates cfg and creates cfg.Dir if missing.
func NewRepository(cfg RepositoryConfig) (*Repository, error) {
	err := errors.Join(validateRepo(cfg.MetadataURL, cfg.TargetsURL, cfg.Root)...)
	if cfg.MaxMetadataBytes <= 0 {
		err = errors.Join(err, errors.New("max_metadata_bytes: must be positive"))
	}
	if cfg.Dir == "" {
		err = errors.Join(err, errors.New("dir: required"))
	}
	if cfg.MaxAge < 0 {
		err = errors.Join(err, errors.New("max_age: must not be negative"))
	}
	if err != nil {
		return nil, fmt.Errorf("update repository config: %w", err)
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultRepositoryMaxAge
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("update repository: %w", err)
	}
	return &Repository{cfg: cfg}, nil
}

// view returns what the verified repository says about images, refreshing it first when
// it is stale, expired by now, or does not list every image as assigned.
func (r *Repository) view(ctx context.Context, hc *http.Client, images []director.Image, now time.Time) (repoView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up != nil && now.Sub(r.at) < r.cfg.MaxAge && now.After(r.at) && !r.expired(now) {
		if v := lookupAll(r.up, images); len(v.lookupErrs) == 0 && matches(v, images) {
			return v, nil
		}
	}
	up, err := refresh(ctx, r.cfg.Dir, r.cfg.Root, r.cfg.MetadataURL, r.cfg.TargetsURL, hc, r.cfg.MaxMetadataBytes, now)
	if err != nil {
		return repoView{}, err
	}
	r.up, r.at = up, now
	return lookupAll(up, images), nil
}

// expired reports whether any trusted role of the current view has expired by now.
func (r *Repository) expired(now time.Time) bool {
	t := r.up.GetTrustedMetadataSet()
	if t.Root == nil || t.Timestamp == nil || t.Snapshot == nil ||
		t.Root.Signed.IsExpired(now) || t.Timestamp.Signed.IsExpired(now) || t.Snapshot.Signed.IsExpired(now) {
		return true
	}
	for _, m := range t.Targets {
		if m.Signed.IsExpired(now) {
			return true
		}
	}
	return false
}

// matches reports whether the view lists every image with its assigned SHA-256: a
// different one may be a newer publication the view has not seen yet.
func matches(v repoView, images []director.Image) bool {
	for _, im := range images {
		if v.targets[im.Path].sha256 != im.SHA256 {
			return false
		}
	}
	return true
}
