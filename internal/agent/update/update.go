// Package update is the device side of moat's signed updates (DESIGN rule 2, the Uptane
// split): it checks a director assignment against the TUF image repository, downloads the
// assigned image packages and keeps the device's anti-rollback state.
//
// What it trusts: the platform root pinned in the device build (Config.Root, 1.root.json)
// and the root chain go-tuf verified from it (cached in StateDir/tuf), the director public
// key pinned beside it (Config.DirectorKey), the device's identity and clock (Config), and
// its own state directory: the counter of the last accepted assignment and the
// anti-rollback floors. Neither the server nor the network is trusted.
//
// What it enforces: Check installs nothing on the director's word alone. The assignment
// must be signed by the pinned director key, name this device and tenant, be unexpired and
// carry a counter above the last accepted one (director.Verify;
// TestUpdate_RejectsAssignmentForOtherDevice, TestUpdate_RejectsReplayedAssignment, which
// also restarts the Client: the counter is persisted); only a byte-identical copy of the
// last accepted assignment, kept in StateDir, passes with an equal counter, as unchanged
// (TestUpdate_ResentAssignmentIsUnchangedOlderIsReplayed). The tenant's view of the image
// repository is then verified with go-tuf's updater from the pinned root (rollback, freeze,
// mix-and-match and endless-data protections included), and every assigned image must be
// listed there with the same SHA-256, length and security version, which the offline key
// signed in the target's custom metadata (TestUpdate_RejectsDirectorOnlyCompromise), and be
// at or above the device's floor for its kind (TestUpdate_RejectsRollbackBelowFloor). The
// counter is recorded only when every check passed. Download fetches a planned image with
// blob.Fetch, streamed to disk, resumable, bounded by the signed length and by the stall and
// overall deadlines of Config.FetchOptions, and keeps it only if it hashes to the signed
// SHA-256 (TestUpdate_RejectsWrongPackageBytes) and is a well-formed image package whose
// manifest states the planned kind, name, version and security version
// (TestUpdate_RejectsManifestMismatch). Commit raises a floor after an install and never
// lowers one (TestUpdate_FloorNeverDecreases). Every state file is replaced atomically
// (temporary file, fsync, rename, fsync of the directory).
//
// Concurrency: Check and Commit serialize on the Client. Run one Check or Download at a
// time per Client; concurrent Downloads, if any, must use different destination files.
// Two Clients must not share a StateDir.
package update

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/target"
)

// Errors that callers branch on with errors.Is. Check's errors also wrap director's
// sentinels (director.ErrReplayed, director.ErrRepoMismatch, director.ErrBelowFloor, ...)
// and go-tuf's error types (metadata.ErrExpiredMetadata, ...); Download's wrap blob's
// (blob.ErrDigestMismatch, blob.ErrTooLarge, blob.ErrStalled, ...) and image's.
var (
	// ErrFloorDecrease: Commit was asked to lower an anti-rollback floor. Nothing changed.
	ErrFloorDecrease = errors.New("anti-rollback floor would decrease")
	// ErrManifestMismatch: a downloaded package's manifest is not the image the plan names
	// (kind, name, version or security version). The file was removed.
	ErrManifestMismatch = errors.New("image manifest differs from the plan")
	// ErrWrongProduct: an assigned app was signed for another product than the device's.
	ErrWrongProduct = errors.New("app image for another product")
)

// Config is what the device build and its provisioning give the update client. Every field
// is required.
type Config struct {
	// MetadataURL and TargetsURL are the tenant's view of the image repository, each ending
	// in "/": <server>/api/v1/tenants/<t>/tuf/metadata/ and .../tuf/targets/. Only https.
	MetadataURL string
	TargetsURL  string
	// Root is the pinned platform root, 1.root.json.
	Root []byte
	// DirectorKey is the pinned director public key (ECDSA P-256).
	DirectorKey *ecdsa.PublicKey
	// DeviceID and TenantID are this device's identity, as assignments name it.
	DeviceID string
	TenantID string
	// StateDir holds the client's state: the last accepted counter, the floors and the
	// trusted TUF metadata. It is created (mode 0700) if missing. Exactly one of StateDir
	// and Memory is set.
	StateDir string
	// Memory, instead of StateDir, keeps the counter and the floors in memory (a simulated
	// device, `moat sim`, which holds no disk); it needs Repository for the TUF metadata.
	// A real device never uses it: its state would not survive a restart.
	Memory *MemoryState
	// Repository, optional, is a view of the tenant's image repository that the Clients of
	// many devices of one tenant share (shared.go) instead of each refreshing its own in
	// StateDir; its URLs must be MetadataURL and TargetsURL.
	Repository *Repository
	// HTTPClient carries the device's credential to the server.
	HTTPClient *http.Client
	// Now is the device's clock.
	Now func() time.Time
	// FetchOptions bound image downloads in time; Timeout must be set.
	FetchOptions blob.FetchOptions
	// Progress, optional, is called as an image's bytes arrive in Download with how many
	// of them the download holds (blob.FetchOptions.Progress); it throttles itself.
	Progress func(p PlannedImage, have int64)
	// MaxMetadataBytes bounds every TUF metadata file the client downloads.
	MaxMetadataBytes int64
	// Product, optional, is the product the device is (its name, pinned at manufacture):
	// an app image signed for another product is refused (ErrWrongProduct).
	Product string
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	errs := validateRepo(c.MetadataURL, c.TargetsURL, c.Root)
	if c.DirectorKey == nil {
		errs = append(errs, errors.New("director_key: required"))
	} else if c.DirectorKey.Curve != elliptic.P256() {
		errs = append(errs, errors.New("director_key: not a P-256 key"))
	}
	if c.DeviceID == "" {
		errs = append(errs, errors.New("device_id: required"))
	}
	if c.TenantID == "" {
		errs = append(errs, errors.New("tenant_id: required"))
	}
	switch {
	case c.StateDir == "" && c.Memory == nil:
		errs = append(errs, errors.New("state_dir: required"))
	case c.StateDir != "" && c.Memory != nil:
		errs = append(errs, errors.New("state_dir and memory: give one, not both"))
	case c.Memory != nil && c.Repository == nil:
		errs = append(errs, errors.New("memory: needs a repository for the TUF metadata"))
	}
	if r := c.Repository; r != nil && (r.cfg.MetadataURL != c.MetadataURL || r.cfg.TargetsURL != c.TargetsURL) {
		errs = append(errs, errors.New("repository: its URLs differ from metadata_url and targets_url"))
	}
	if c.HTTPClient == nil {
		errs = append(errs, errors.New("http_client: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if c.FetchOptions.Timeout <= 0 {
		errs = append(errs, errors.New("fetch_options.timeout: must be positive"))
	}
	if c.FetchOptions.StallTimeout < 0 {
		errs = append(errs, errors.New("fetch_options.stall_timeout: must not be negative"))
	}
	if c.MaxMetadataBytes <= 0 {
		errs = append(errs, errors.New("max_metadata_bytes: must be positive"))
	}
	return errors.Join(errs...)
}

// validateRepo checks the image repository's URLs and the pinned root.
func validateRepo(metadataURL, targetsURL string, root []byte) []error {
	var errs []error
	for _, u := range []struct{ name, v string }{{"metadata_url", metadataURL}, {"targets_url", targetsURL}} {
		p, err := url.Parse(u.v)
		switch {
		case u.v == "":
			errs = append(errs, fmt.Errorf("%s: required", u.name))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", u.name, err))
		case p.Scheme != "https" || p.Host == "":
			errs = append(errs, fmt.Errorf("%s: %q is not an https URL", u.name, u.v))
		case !strings.HasSuffix(p.Path, "/") || p.RawQuery != "" || p.Fragment != "":
			errs = append(errs, fmt.Errorf("%s: %q must end in / and have no query or fragment", u.name, u.v))
		}
	}
	if len(root) == 0 {
		errs = append(errs, errors.New("root: required"))
	} else if r, err := metadata.Root().FromBytes(root); err != nil {
		errs = append(errs, fmt.Errorf("root: %w", err))
	} else if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		errs = append(errs, fmt.Errorf("root: not signed by its own root keys: %w", err))
	}
	return errs
}

// Client checks assignments, downloads images and keeps the anti-rollback state of one device.
type Client struct {
	cfg Config
	mu  sync.Mutex // serializes access to the state files
}

// New validates cfg and returns a Client. It creates cfg.StateDir if missing and reads the
// state in it, so a damaged state directory is an error now rather than at the first Check.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("update client config: %w", err)
	}
	c := &Client{cfg: cfg}
	if cfg.Memory != nil {
		return c, nil
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("update client state: %w", err)
	}
	if _, err := c.readCounter(); err != nil {
		return nil, err
	}
	if _, err := c.readFloors(); err != nil {
		return nil, err
	}
	if _, err := c.readHeld(); err != nil {
		return nil, err
	}
	return c, nil
}

// Plan is what an accepted assignment asks the device to install.
type Plan struct {
	Counter uint64 // the assignment's counter, now recorded as the last accepted
	// Unchanged: the assignment is byte for byte the one accepted last (see Check).
	Unchanged bool
	Images    []PlannedImage
	// InstallWindows are when the images may be installed (the group's maintenance window),
	// ascending; none: at any time. An image with IgnoreWindow is installed at once.
	InstallWindows []director.Window
	// MaxDeferral bounds how long the app may defer installing a pending image.
	MaxDeferral time.Duration
}

// PlannedImage is one image to download and install, as both the director and the
// verified image repository name it.
type PlannedImage struct {
	Kind            string // director.KindOS or director.KindApp
	Path            string // TUF target path
	SHA256          string // lower-case hex
	Length          int64
	Version         string
	SecurityVersion uint32
	URL             string // hash-prefixed target URL: <TargetsURL><dir>/<sha256>.<basename>
	IgnoreWindow    bool   // install outside the install windows (a security update)
}

// repoTarget is the verified repository's entry for one target path.
type repoTarget struct {
	sha256          string
	length          int64
	securityVersion uint32
	product         string // apps: the product its signer named
}

// Check verifies an assignment envelope and cross-checks it against the tenant's image
// repository, verified now with go-tuf from the pinned root. Only when every check passes is
// the assignment's counter recorded, with the assignment itself (Held), and the plan
// returned. A plan with no images means the director assigns nothing.
//
// An assignment byte for byte the one accepted last is no change, not a replay (issue 15:
// the server answers an unchanged check with 304, and the device checks what it holds;
// TestUpdate_ResentAssignmentIsUnchangedOlderIsReplayed): it passes every check again,
// signature, device, expiry (a held assignment that expired is refused, as a freeze) and
// the repository (an image revoked since is refused), except that its counter may equal
// the last accepted one; nothing is written, and the plan says Unchanged. Any other
// assignment whose counter is not above the last accepted one is refused as replayed
// (director.ErrReplayed), an older one of the same server included.
func (c *Client) Check(ctx context.Context, assignment []byte) (Plan, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, err := c.readCounter()
	if err != nil {
		return Plan{}, err
	}
	held, err := c.readHeld()
	if err != nil {
		return Plan{}, err
	}
	want := director.Expect{DeviceID: c.cfg.DeviceID, TenantID: c.cfg.TenantID, Now: c.cfg.Now(), LastCounter: last}
	unchanged := last > 0 && held != nil && bytes.Equal(held, assignment)
	if unchanged {
		want.LastCounter = last - 1 // the same bytes carry the same counter: equal, never below
	}
	a, err := director.Verify(assignment, c.cfg.DirectorKey, want)
	if err != nil {
		return Plan{}, fmt.Errorf("verify assignment: %w", err)
	}
	// Held bytes whose counter is above the recorded one (a crash between the two writes
	// below) are accepted as new.
	unchanged = unchanged && a.Counter == last
	floors, err := c.readFloors()
	if err != nil {
		return Plan{}, err
	}
	var view repoView
	if c.cfg.Repository != nil {
		view, err = c.cfg.Repository.view(ctx, c.cfg.HTTPClient, a.Images, c.cfg.Now())
	} else {
		view, err = c.ownView(ctx, a.Images)
	}
	if err != nil {
		return Plan{}, err
	}
	repo, lookupErrs := view.targets, view.lookupErrs
	lookup := func(path string) (string, int64, uint32, bool) {
		rt, ok := repo[path]
		return rt.sha256, rt.length, rt.securityVersion, ok
	}
	if err := director.CheckAgainstRepo(a, lookup, floors); err != nil {
		// The lookup errors say why a path was missing (absent, unsigned custom metadata, or
		// the repository could not be read); any of them fails the check.
		return Plan{}, errors.Join(fmt.Errorf("assignment %d: %w", a.Counter, err), errors.Join(lookupErrs...))
	}
	if c.cfg.Product != "" {
		for _, im := range a.Images {
			// The offline key named the app's product; the director cannot change it.
			if p := repo[im.Path].product; im.Kind == director.KindApp && !strings.EqualFold(p, c.cfg.Product) {
				return Plan{}, fmt.Errorf("assignment %d: %s is signed for product %q, this device is a %s: %w", a.Counter, im.Path, p, c.cfg.Product, ErrWrongProduct)
			}
		}
	}
	consistent := view.consistent
	plan := Plan{Counter: a.Counter, Unchanged: unchanged, InstallWindows: a.InstallWindows, MaxDeferral: time.Duration(a.MaxDeferralSeconds) * time.Second}
	for _, im := range a.Images {
		plan.Images = append(plan.Images, PlannedImage{
			Kind: im.Kind, Path: im.Path, SHA256: im.SHA256, Length: im.Length,
			Version: im.Version, SecurityVersion: im.SecurityVersion,
			URL: targetURL(c.cfg.TargetsURL, im.Path, im.SHA256, consistent), IgnoreWindow: im.IgnoreWindow,
		})
	}
	if unchanged {
		return plan, nil
	}
	// The assignment first, then its counter: a crash between them leaves held bytes with a
	// counter above the recorded one, which are accepted again as new (never the reverse,
	// which would take an older assignment for the held one).
	if err := c.writeHeld(assignment); err != nil {
		return Plan{}, err
	}
	if err := c.writeCounter(a.Counter); err != nil {
		return Plan{}, err
	}
	return plan, nil
}

// Held returns the assignment accepted last, byte for byte as it was served (nil if none
// was, or it was accepted by an agent that did not keep it). The device names it to the
// server (client.Client.GetAssignmentIfChanged) and, when told it is still current, checks
// it again with Check.
func (c *Client) Held() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readHeld()
}

// repoView is what the verified image repository says about an assignment's images.
type repoView struct {
	targets    map[string]repoTarget
	lookupErrs []error // why a path is missing from targets
	consistent bool    // the root uses consistent snapshots
}

// ownView refreshes the Client's own view of the repository, in StateDir, and looks up
// images in it.
func (c *Client) ownView(ctx context.Context, images []director.Image) (repoView, error) {
	up, err := refresh(ctx, filepath.Join(c.cfg.StateDir, tufDir), c.cfg.Root, c.cfg.MetadataURL, c.cfg.TargetsURL, c.cfg.HTTPClient, c.cfg.MaxMetadataBytes, c.cfg.Now())
	if err != nil {
		return repoView{}, err
	}
	return lookupAll(up, images), nil
}

// lookupAll looks up every image's path in a refreshed updater.
func lookupAll(up *updater.Updater, images []director.Image) repoView {
	v := repoView{targets: make(map[string]repoTarget, len(images)), consistent: up.GetTrustedMetadataSet().Root.Signed.ConsistentSnapshot}
	for _, im := range images {
		rt, err := lookupTarget(up, im.Path)
		if err != nil {
			v.lookupErrs = append(v.lookupErrs, err)
			continue
		}
		v.targets[im.Path] = rt
	}
	return v
}

// refresh builds a go-tuf updater from the trusted root in dir (the cached one, which
// go-tuf verified from the pinned one, when present) and refreshes the top-level metadata.
func refresh(ctx context.Context, dir string, pinned []byte, metadataURL, targetsURL string, hc *http.Client, limit int64, now time.Time) (*updater.Updater, error) {
	root := pinned
	switch b, err := os.ReadFile(filepath.Join(dir, metadata.ROOT+".json")); {
	case err == nil:
		root = b
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read trusted root: %w", err)
	}
	tc, err := config.New(metadataURL, root)
	if err != nil {
		return nil, fmt.Errorf("image repository: %w", err)
	}
	tc.LocalMetadataDir, tc.LocalTargetsDir = dir, dir // targets are never written here
	tc.RemoteTargetsURL = targetsURL
	tc.Fetcher = tufFetcher{ctx: ctx, hc: hc, limit: limit, roots: filepath.Join(dir, rootsDir)}
	tc.RootMaxLength = min(tc.RootMaxLength, limit)
	tc.TimestampMaxLength = min(tc.TimestampMaxLength, limit)
	tc.SnapshotMaxLength = min(tc.SnapshotMaxLength, limit)
	tc.TargetsMaxLength = min(tc.TargetsMaxLength, limit)
	up, err := updater.New(tc)
	if err != nil {
		return nil, fmt.Errorf("load trusted root: %w", err)
	}
	// Expiry is judged by the device's clock, the same one the assignment is judged by.
	up.UnsafeSetRefTime(now.UTC())
	if err := up.Refresh(); err != nil {
		return nil, fmt.Errorf("refresh image repository: %w", err)
	}
	return up, nil
}

// lookupTarget returns the verified repository's entry for path. The security version and
// product are the ones the target's signer put in its custom metadata; a target without
// valid custom metadata cannot be matched.
func lookupTarget(up *updater.Updater, p string) (repoTarget, error) {
	tf, err := up.GetTargetInfo(p)
	if err != nil {
		return repoTarget{}, fmt.Errorf("image repository target %s: %w", p, err)
	}
	return repoTargetOf(p, tf)
}

func repoTargetOf(p string, tf *metadata.TargetFiles) (repoTarget, error) {
	sum, ok := tf.Hashes["sha256"]
	if !ok {
		return repoTarget{}, fmt.Errorf("image repository target %s has no sha256", p)
	}
	// The same strict reader as the server's catalog (target.DecodeCustom): a target without
	// a security version or with a field the device does not know is refused, not defaulted.
	// Attacked by TestUpdate_RejectsBadCustomMetadata.
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	custom, err := target.DecodeCustom(p, raw)
	if err != nil {
		return repoTarget{}, fmt.Errorf("image repository: %w", err)
	}
	return repoTarget{sha256: hex.EncodeToString(sum), length: tf.Length, securityVersion: custom.SecurityVersion, product: custom.Product}, nil
}

// targetURL is the URL go-tuf downloads target p from: with consistent snapshots,
// <base><dir>/<sha256>.<basename>.
func targetURL(base, p, sha string, consistent bool) string {
	if !consistent {
		return base + p
	}
	dir, name := path.Split(p)
	return base + dir + sha + "." + name
}

// Download fetches the planned image into dst and checks that it is the image package the
// plan names. dst is written only if the bytes hash to the planned SHA-256 and length
// (blob.Fetch; an interrupted download resumes from dst+".part"), and removed again if the
// package is malformed or its manifest differs from the plan (ErrManifestMismatch).
func (c *Client) Download(ctx context.Context, p PlannedImage, dst string) error {
	want, err := blob.ParseDigest(p.SHA256)
	if err != nil {
		return fmt.Errorf("download %s: %w", p.Path, err)
	}
	opts := c.cfg.FetchOptions
	if c.cfg.Progress != nil {
		opts.Progress = func(have int64) { c.cfg.Progress(p, have) }
	}
	if err := blob.Fetch(ctx, c.cfg.HTTPClient, p.URL, want, p.Length, dst, opts); err != nil {
		return fmt.Errorf("download %s: %w", p.Path, err)
	}
	if err := checkPackage(dst, p); err != nil {
		return errors.Join(fmt.Errorf("download %s: %w", p.Path, err), os.Remove(dst))
	}
	return nil
}

// checkPackage opens the package at name, reads its payload through (so its hash is
// checked) and compares its manifest with p.
func checkPackage(name string, p PlannedImage) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return checkStream(f, p)
}

// Commit records that an image of kind with securityVersion is installed: it raises the
// kind's anti-rollback floor to securityVersion. Lowering a floor is ErrFloorDecrease and
// changes nothing; committing the current floor again is a no-op.
func (c *Client) Commit(kind string, securityVersion uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	floors, err := c.readFloors()
	if err != nil {
		return err
	}
	cur, ok := floors[kind]
	if !ok {
		return fmt.Errorf("commit: unknown image kind %q", kind)
	}
	if securityVersion < cur {
		return fmt.Errorf("commit %s security version %d: %w (floor %d)", kind, securityVersion, ErrFloorDecrease, cur)
	}
	if securityVersion == cur {
		return nil
	}
	floors[kind] = securityVersion
	return c.writeFloors(floors)
}

// DirectorKeyFromRoot returns the server's online key as a platform root names it for the
// timestamp role: the key that also signs director assignments. A device provisioned with
// only its pinned root learns the director key from it, and a root rotation that replaces
// the online key replaces the director key with it.
func DirectorKeyFromRoot(root []byte) (*ecdsa.PublicKey, error) {
	r, err := metadata.Root().FromBytes(root)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	role, ok := r.Signed.Roles[metadata.TIMESTAMP]
	if !ok || len(role.KeyIDs) != 1 {
		return nil, errors.New("root: the timestamp role must name exactly one key (the server's online key)")
	}
	k, ok := r.Signed.Keys[role.KeyIDs[0]]
	if !ok {
		return nil, errors.New("root: the timestamp key is not listed")
	}
	pub, err := k.ToPublicKey()
	if err != nil {
		return nil, fmt.Errorf("root: timestamp key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("root: the timestamp key is not ECDSA P-256")
	}
	return ec, nil
}
