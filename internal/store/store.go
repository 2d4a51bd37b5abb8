// Package store declares moat's persistent state as small per-aggregate interfaces, the
// errors callers branch on, and one transaction entry point. Two implementations keep the
// same behaviour, checked by the one conformance suite in store/storetest: store/sqlite (the
// embedded default) and store/postgres (scale-out).
//
// Tenant-owned data is reachable only through Tx.ForTenant, which refuses an empty tenant ID
// (ErrNoTenant), and every query under it filters on tenant_id: a bug in a handler cannot
// read across tenants (rule 3; attacked by storetest's TenantIsolation cases and by
// TestAPI_CrossTenantIsNotFound). Stores never read the clock: callers pass timestamps.
//
// A Store is safe for concurrent use; a Tx belongs to the one goroutine running the function
// given to InTx and must not be kept after it returns.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/trust"
)

// Errors callers branch on with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write would break a uniqueness rule (a duplicate name in its scope).
	ErrConflict = errors.New("conflict")
	// ErrStale: an optimistic write named a version that is no longer current.
	ErrStale = errors.New("stale version")
	// ErrNoTenant: tenant-scoped access without a tenant.
	ErrNoTenant = errors.New("no tenant")
	// ErrInUse: a delete would leave dependants behind.
	ErrInUse = errors.New("in use")
	// ErrNonceUsed: an attestation nonce presented a second time (a replay).
	ErrNonceUsed = errors.New("nonce already used")
	// ErrExpired: a record past its expiry, such as an attestation nonce.
	ErrExpired = errors.New("expired")
)

// Store is an open database.
type Store interface {
	// InTx runs fn in one transaction: committed when fn returns nil, rolled back otherwise.
	InTx(ctx context.Context, fn func(Tx) error) error
	// InReadTx runs fn in a read-only transaction: it sees one consistent snapshot, never
	// waits for writers, and any write in it fails. Authentication and GETs use it.
	InReadTx(ctx context.Context, fn func(Tx) error) error
	// Ping checks that the database answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// Tx is one transaction.
type Tx interface {
	Tenants() Tenants
	Users() Users
	Tokens() Tokens
	PlatformRoots() PlatformRoots
	// PlatformAudit is the audit log of platform-level changes (the root of trust, OS
	// uploads, tenant creation); events in it have no tenant.
	PlatformAudit() AuditLog
	// Nonces holds the attestation nonces handed to devices, each usable once.
	Nonces() Nonces
	// Devices is the platform's device registry (registration, claiming, attestation).
	Devices() Devices
	// PlatformCA holds the platform root's X.509 certificate, which certifies tenant CAs.
	PlatformCA() PlatformCA
	// PendingCAs lists every tenant's device CAs that wait for the platform root.
	PendingCAs(ctx context.Context) ([]device.CA, error)
	// ForTenant scopes access to one tenant's data. An empty ID is ErrNoTenant.
	ForTenant(id tenant.ID) (TenantTx, error)
	// PlatformBlobs records the OS packages the platform operator uploaded.
	PlatformBlobs() PlatformBlobs
	// BlobFiles is the registry of stored blob files, shared by every tenant and the
	// platform, that garbage collection removes from.
	BlobFiles() BlobFiles
	// Leases hand each period of a background job to one server replica.
	Leases() Leases
	// ConsoleSessions holds the web console's sessions and sign-in links.
	ConsoleSessions() ConsoleSessions
	// Rollouts finds the staged rollouts of every tenant that the advance job looks at.
	Rollouts() Rollouts
}

// Rollouts reads staged rollouts across tenants, for the job that advances them.
type Rollouts interface {
	// Running returns the deployments, of every tenant, whose rollout is running and that
	// are their group's current deployment, ordered by ID after the ID after ("" from the
	// start), at most limit (MaxLimit when not positive or larger).
	Running(ctx context.Context, after string, limit int) ([]device.Deployment, error)
}

// Leases hand each period of a named background job to one claimant among the server
// replicas that share the database (internal/server's jobs). A lease is a claim on one
// period: it cannot be renewed early, not even by its holder, so two claims of one name
// are at least a period apart; a holder that stops leaves nothing to clean up, since its
// lease lapses at the end of its period.
type Leases interface {
	// Acquire claims name for holder until expires when no lease of that name exists or
	// the current one's expiry is at or before now. It reports whether the claim was
	// granted, and the expiry of the lease now in force (expires when granted). Of
	// concurrent claims at most one is granted.
	Acquire(ctx context.Context, name, holder string, now, expires time.Time) (granted bool, until time.Time, err error)
}

// TenantTx reaches the data of one tenant.
type TenantTx interface {
	ID() tenant.ID
	Products() Products
	Groups() Groups
	Members() Members
	Audit() AuditLog
	SigningKeys() SigningKeys
	TUFFiles() TUFFiles
	Blobs() Blobs
	// Devices reaches the devices the tenant claimed, and no others.
	Devices() TenantDevices
	DeviceCAs() DeviceCAs
	Certificates() Certificates
	Deployments() Deployments
	// ErrorReports holds the error reports of the tenant's devices.
	ErrorReports() ErrorReports
	// UpdateEvents holds the update history of the tenant's devices (updateevents.go).
	UpdateEvents() UpdateEvents
}

// MaxLimit bounds Page.Limit (a larger or non-positive one is MaxLimit): the API's largest
// page, 1000, plus the one item more it asks for to learn whether another page follows.
const MaxLimit = 1001

// Page selects a slice of a list ordered by ID: items after the ID After, at most Limit.
type Page struct {
	After string
	Limit int
}

// Tenants is the platform-level tenant registry.
type Tenants interface {
	Create(ctx context.Context, t tenant.Tenant) error
	Get(ctx context.Context, id tenant.ID) (tenant.Tenant, error)
	// GetByName finds a tenant by name, case-insensitively.
	GetByName(ctx context.Context, name string) (tenant.Tenant, error)
	// List returns every tenant (for platform operators).
	List(ctx context.Context, p Page) ([]tenant.Tenant, error)
	// ListForUser returns the tenants in which the user holds a role.
	ListForUser(ctx context.Context, user auth.UserID, p Page) ([]tenant.Tenant, error)
	// SetStorageQuota sets the tenant's storage quota in bytes (nil: the server's default),
	// advances its version and returns it; ErrNotFound for an unknown tenant.
	SetStorageQuota(ctx context.Context, id tenant.ID, quota *int64, at time.Time) (tenant.Tenant, error)
}

// Users holds users and their roles.
type Users interface {
	Create(ctx context.Context, u auth.User) error
	Get(ctx context.Context, id auth.UserID) (auth.User, error)
	// CountOperators counts platform operators (bootstrap runs when there is none).
	CountOperators(ctx context.Context) (int, error)
	// Roles returns the user's role in every tenant where it has one.
	Roles(ctx context.Context, id auth.UserID) (map[tenant.ID]auth.Role, error)
}

// Tokens holds API token records (hashes, never secrets).
type Tokens interface {
	Create(ctx context.Context, t auth.Token) error
	Get(ctx context.Context, id auth.TokenID) (auth.Token, error)
	ListForUser(ctx context.Context, user auth.UserID, p Page) ([]auth.Token, error)
	// Revoke marks the user's token revoked at the given time; ErrNotFound when the user
	// has no such token. Revoking twice keeps the first time.
	Revoke(ctx context.Context, user auth.UserID, id auth.TokenID, at time.Time) (auth.Token, error)
}

// Products holds one tenant's products.
type Products interface {
	Create(ctx context.Context, p product.Product) error
	Get(ctx context.Context, id product.ID) (product.Product, error)
	// GetByName finds a product by name, case-insensitively.
	GetByName(ctx context.Context, name string) (product.Product, error)
	List(ctx context.Context, p Page) ([]product.Product, error)
	// Update writes p when the stored version is p.Version-1 (ErrStale otherwise).
	Update(ctx context.Context, p product.Product) error
	// Delete removes the product and its device groups; version 0 skips the version check.
	Delete(ctx context.Context, id product.ID, version int64) error
}

// Groups holds one tenant's device groups.
type Groups interface {
	Create(ctx context.Context, g product.Group) error
	Get(ctx context.Context, pid product.ID, id product.GroupID) (product.Group, error)
	// GetByName finds a product's group by name, case-insensitively.
	GetByName(ctx context.Context, pid product.ID, name string) (product.Group, error)
	List(ctx context.Context, pid product.ID, p Page) ([]product.Group, error)
	// Update writes g when the stored version is g.Version-1 (ErrStale otherwise).
	Update(ctx context.Context, g product.Group) error
	// Delete removes the group; version 0 skips the version check.
	Delete(ctx context.Context, pid product.ID, id product.GroupID, version int64) error
}

// Members holds one tenant's role assignments.
type Members interface {
	// Put grants the user the role, replacing any earlier role in this tenant.
	Put(ctx context.Context, user auth.UserID, role auth.Role, at time.Time) error
	Get(ctx context.Context, user auth.UserID) (auth.Member, error)
	List(ctx context.Context, p Page) ([]auth.Member, error)
	Delete(ctx context.Context, user auth.UserID) error
	// CountRole counts the users holding the role (the last administrator cannot leave).
	CountRole(ctx context.Context, role auth.Role) (int, error)
}

// AuditLog holds one tenant's audit events, append-only.
type AuditLog interface {
	Append(ctx context.Context, e audit.Event) error
	List(ctx context.Context, p Page) ([]audit.Event, error)
}

// SigningKeys holds one tenant's registered public signing keys.
type SigningKeys interface {
	// Create registers a key; ErrConflict when the tenant already has a key with this name
	// or this TUF key ID.
	Create(ctx context.Context, k trust.SigningKey) error
	Get(ctx context.Context, id trust.KeyID) (trust.SigningKey, error)
	List(ctx context.Context, p Page) ([]trust.SigningKey, error)
	// Revoke marks the key revoked at the given time; revoking twice keeps the first time.
	Revoke(ctx context.Context, id trust.KeyID, at time.Time) (trust.SigningKey, error)
}

// File is a named file of bytes, such as one TUF metadata file.
type File struct {
	Name string
	Data []byte
}

// TimestampFile is the one TUF file that is replaced rather than versioned.
const TimestampFile = "timestamp.json"

// MaxTUFFileBytes bounds one stored TUF metadata file.
const MaxTUFFileBytes = 4 << 20

// TUFFiles holds the files of one tenant's view of the TUF image repository (what
// internal/tuf's View publishes), so that the view survives a restart byte for byte.
type TUFFiles interface {
	// Put stores a file. Every name but TimestampFile is immutable: the same bytes again is
	// a no-op, other bytes are ErrConflict. TimestampFile is replaced.
	Put(ctx context.Context, f File, at time.Time) error
	Get(ctx context.Context, name string) ([]byte, error)
	// All returns every stored file, ordered by name.
	All(ctx context.Context) ([]File, error)
	// Created returns when each stored file was first stored, by name (garbage collection
	// keeps what metadata superseded within its grace period named).
	Created(ctx context.Context) (map[string]time.Time, error)
}

// PlatformRoots holds the platform's chain of TUF root metadata, version 1 first.
type PlatformRoots interface {
	// Append stores the next root version; a version that is not the next is ErrConflict.
	Append(ctx context.Context, version int64, data []byte, at time.Time) error
	List(ctx context.Context) ([][]byte, error)
}

// BlobRecord is a record of a content-addressed blob, by "sha256:<hex>" digest.
type BlobRecord struct {
	Digest string
	Size   int64
	// Platform marks a tenant's record of an OS package that the platform's targets.json
	// for the tenant names: not the tenant's upload, not counted against its quota.
	Platform bool
	// At is when the blob was last uploaded or named: the start of its grace period before
	// garbage collection.
	At time.Time
}

// BlobUsage is what a tenant's uploads take: the bytes and number of its distinct blobs,
// without the OS packages the platform names for it.
type BlobUsage struct {
	Bytes int64
	Count int
}

// Blobs records which content-addressed blobs (by "sha256:<hex>" digest) a tenant uploaded,
// so that a tenant's metadata can name, and its devices fetch, only the tenant's own blobs.
type Blobs interface {
	// Add records the tenant's upload of the blob. Adding it again refreshes its time (and
	// counts a record that was the platform's); another size is ErrConflict. Add,
	// AddPlatform and PlatformBlobs.Add also Hold the file's row in BlobFiles.
	Add(ctx context.Context, digest string, size int64, at time.Time) error
	// AddPlatform records an OS package the platform's targets.json names for the tenant
	// (Platform, unless the tenant uploaded it too). Again refreshes its time.
	AddPlatform(ctx context.Context, digest string, size int64, at time.Time) error
	// Size returns the recorded size; ErrNotFound when the tenant never uploaded it.
	Size(ctx context.Context, digest string) (int64, error)
	// Get returns the record; ErrNotFound when there is none.
	Get(ctx context.Context, digest string) (BlobRecord, error)
	// Lock holds the tenant's blob records until the transaction ends, so that uploads
	// (checking the quota), publishes (naming recorded blobs) and garbage collection of one
	// tenant happen one after the other. Write transactions only; ErrNotFound for an
	// unknown tenant.
	Lock(ctx context.Context) error
	// Usage sums the tenant's blobs that are not Platform records.
	Usage(ctx context.Context) (BlobUsage, error)
	// List returns the tenant's records ordered by digest (Page.After is a digest).
	List(ctx context.Context, p Page) ([]BlobRecord, error)
	// Delete removes the record; ErrNotFound when there is none.
	Delete(ctx context.Context, digest string) error
}

// PlatformBlobs records the OS packages the platform operator uploaded.
type PlatformBlobs interface {
	// Add records the upload; again refreshes its time; another size is ErrConflict.
	Add(ctx context.Context, digest string, size int64, at time.Time) error
	// List returns the records ordered by digest (Page.After is a digest).
	List(ctx context.Context, p Page) ([]BlobRecord, error)
	// Delete removes the record; ErrNotFound when there is none.
	Delete(ctx context.Context, digest string) error
}

// BlobFiles is the registry of stored blob files: one row per content-addressed file,
// whichever tenants (or the platform) hold records of it. Recording a reference to a file
// (Hold) and removing the file (Lock, then Delete) both take its row, so an upload and a
// garbage collection of the same content happen one after the other.
type BlobFiles interface {
	// Hold records the stored file, or refreshes its time, and holds its row until the
	// transaction ends.
	Hold(ctx context.Context, digest string, size int64, at time.Time) error
	// Lock holds the file's row until the transaction ends and returns it; ErrNotFound when
	// there is none.
	Lock(ctx context.Context, digest string) (BlobRecord, error)
	// References counts the tenants' and the platform's records of the digest.
	References(ctx context.Context, digest string) (int, error)
	// Unreferenced lists files recorded before the given time that no tenant or platform
	// record names, ordered by digest (Page.After is a digest).
	Unreferenced(ctx context.Context, before time.Time, p Page) ([]BlobRecord, error)
	// Delete removes the file's row; ErrNotFound when there is none.
	Delete(ctx context.Context, digest string) error
}

// Nonces records the attestation nonces devices have spent. Issuing a nonce stores nothing
// (internal/fleet makes nonces it can verify by themselves); spending one records it until
// it expires, so that it is accepted once (rule 1; a replayed quote is refused). Spend is
// atomic: of two concurrent spenders of one nonce exactly one succeeds.
type Nonces interface {
	// Spend records the nonce as used by the device at now, kept until expires.
	// ErrNonceUsed when the nonce was spent before, by this device or any other.
	Spend(ctx context.Context, deviceID, nonce string, expires, now time.Time) error
	// DeleteExpired removes spent nonces that expired before the given time and returns how
	// many. A nonce must be refused as expired before it is spent, or pruning would let it
	// be spent again.
	DeleteExpired(ctx context.Context, before time.Time) (int64, error)
}

// Devices is the platform-wide device registry.
type Devices interface {
	// Register records a new device (unclaimed, Version 1); ErrConflict when its ID is
	// already registered.
	Register(ctx context.Context, d device.Device) error
	Get(ctx context.Context, id device.ID) (device.Device, error)
	// Claim puts an unclaimed device into tenant t at the given time and returns it.
	// Claiming a device the same tenant already claimed returns it unchanged; a device
	// another tenant claimed is ErrConflict; an unknown one ErrNotFound.
	Claim(ctx context.Context, id device.ID, t tenant.ID, at time.Time) (device.Device, error)
	// Update writes d when the stored version is d.Version-1 (ErrStale otherwise). It
	// never changes the device's tenant (Claim does).
	Update(ctx context.Context, d device.Device) error
	// Attested writes an attestation's outcome: d over prev, the device as read at
	// version d.Version-1 (ErrStale when the stored version is another), differing from
	// it only in Floors, Attestation and Certificate (an error otherwise). What it stores
	// is what Update would; and when seen is not nil, seen is recorded as the device's last
	// contact as Seen with no coarseness does (a later one already stored stays). Only
	// the indexed columns that differ from prev's are written, so that their indexes are
	// not rewritten: on SQLite, Update's every column rewrote ten of the table's indexes,
	// most of an attestation's store work (issue 15).
	Attested(ctx context.Context, prev, d device.Device, seen *time.Time) error
}

// TenantDevices reaches the devices one tenant claimed. Another tenant's device, or an
// unclaimed one, is ErrNotFound.
type TenantDevices interface {
	Get(ctx context.Context, id device.ID) (device.Device, error)
	// List returns the tenant's devices ordered by ID, filtered.
	List(ctx context.Context, f device.Filter, p Page) ([]device.Device, error)
	// Update writes d when the stored version is d.Version-1 (ErrStale otherwise) and the
	// device is the tenant's (ErrNotFound otherwise). It never changes the tenant.
	Update(ctx context.Context, d device.Device) error
	// CountInGroup counts the tenant's devices in a group (a group with devices cannot be
	// deleted).
	CountInGroup(ctx context.Context, pid product.ID, gid product.GroupID) (int, error)
	// CountRunning counts the tenant's devices that f selects per device group and what
	// they run (device.Running), ordered by product, group, then Running's fields; devices
	// in no group count under empty IDs. At most limit counts (MaxLimit when limit is not
	// positive or larger): ask for one more to learn whether the list was cut.
	CountRunning(ctx context.Context, f device.Filter, limit int) ([]RunningCount, error)
	// Seen records that the device called the service at at, coarsely: only when its
	// last_seen_at is unset or older than at-every (one conditional UPDATE). It reports
	// whether it wrote; a device that is not the tenant's is not written (false, nil).
	Seen(ctx context.Context, id device.ID, at time.Time, every time.Duration) (bool, error)
	// CountStatus counts the devices of f.ProductID (required) that f selects per group,
	// what they run (target paths; each version is its path's last segment), last refusal
	// and latest update state (StatusCount), ordered by those fields. Same limit as
	// CountRunning.
	CountStatus(ctx context.Context, f device.Filter, limit int) ([]StatusCount, error)
	// ListStatus is List with each device's fleet columns (DeviceRow).
	ListStatus(ctx context.Context, f device.Filter, p Page) ([]DeviceRow, error)
}

// DeviceRow is a device with the columns the fleet status reads beside it: what it runs by
// its last successful attestation, and its latest update report and last contact (schema
// 13; "" and nil before any).
type DeviceRow struct {
	Device        device.Device
	Running       device.Running
	UpdateState   string
	UpdateStateAt *time.Time
	LastSeenAt    *time.Time
}

// StatusCount is how many of a group's devices run one combination of images, with one
// refusal of their last attestation ("" on success or before any) and one latest update
// state, and how many of them ever attested (Attested; the others never did).
type StatusCount struct {
	ProductID   product.ID
	GroupID     product.GroupID
	Running     device.Running
	Refusal     string
	UpdateState string
	Devices     int
	Attested    int
}

// RunningCount is how many of a group's devices run one combination of images.
type RunningCount struct {
	ProductID product.ID
	GroupID   product.GroupID
	Running   device.Running
	Devices   int
}

// PlatformCA holds the platform root certificate (PEM), one at a time.
type PlatformCA interface {
	// Put stores the certificate, replacing any earlier one.
	Put(ctx context.Context, certPEM string, at time.Time) error
	// Get returns it; ErrNotFound before the platform is initialised.
	Get(ctx context.Context) (string, error)
}

// DeviceCAs holds one tenant's device certificate authorities.
type DeviceCAs interface {
	// Create stores a new CA (Version 1); ErrConflict on a duplicate ID.
	Create(ctx context.Context, ca device.CA) error
	Get(ctx context.Context, id string) (device.CA, error)
	// List returns every CA of the tenant, oldest first.
	List(ctx context.Context) ([]device.CA, error)
	// Update writes ca when the stored version is ca.Version-1 (ErrStale otherwise).
	Update(ctx context.Context, ca device.CA) error
}

// Certificates records the device certificates issued to one tenant's devices.
type Certificates interface {
	// Record stores an issued certificate; ErrConflict when the serial exists (serials are
	// unique across all tenants).
	Record(ctx context.Context, c device.Certificate) error
	Get(ctx context.Context, serial string) (device.Certificate, error)
	// ListForDevice returns a device's certificates, newest first, at most limit.
	ListForDevice(ctx context.Context, id device.ID, limit int) ([]device.Certificate, error)
}

// Deployments holds one tenant's application deployments to device groups.
type Deployments interface {
	// Create records a deployment; it becomes its group's current one.
	Create(ctx context.Context, d device.Deployment) error
	// Current returns the group's newest deployment; ErrNotFound when it has none.
	Current(ctx context.Context, pid product.ID, gid product.GroupID) (device.Deployment, error)
	// Get returns one deployment of the group; ErrNotFound when the group has none by that ID.
	Get(ctx context.Context, pid product.ID, gid product.GroupID, id string) (device.Deployment, error)
	// List returns a group's deployments, newest first.
	List(ctx context.Context, pid product.ID, gid product.GroupID, p Page) ([]device.Deployment, error)
	// UpdateRollout writes d.Rollout (d must have one) when the stored rollout's version is
	// d.Rollout.Version-1: one conditional UPDATE, so of two replicas that read the same
	// rollout and both try to advance it, one writes and the other gets ErrStale. ErrNotFound
	// when the tenant has no such deployment or it has no rollout.
	UpdateRollout(ctx context.Context, d device.Deployment) error
	// GateFigures counts, in set-based statements, the figures a rollout gate judges for the
	// devices of group (pid, gid) and the image target, over [since, until] (docs in
	// device.GateFigures).
	GateFigures(ctx context.Context, pid product.ID, gid product.GroupID, target string, since, until time.Time) (device.GateFigures, error)
}

// MaxErrorReportsPerDevice bounds the error reports stored for one device: ErrorReports.Add
// deletes the oldest received beyond it, so a device that floods reports costs bounded
// space and keeps its newest ones.
const MaxErrorReportsPerDevice = 10000

// ErrorReports holds the error reports of one tenant's devices.
type ErrorReports interface {
	// Add stores the report of the tenant's device (ErrNotFound when the device is not the
	// tenant's), received at receivedAt (stored to the microsecond). A report ID the device
	// already stored is a no-op that returns nil, whatever the content: devices deliver at
	// least once, the store keeps each report once, the first copy. Beyond
	// MaxErrorReportsPerDevice reports of the device, the oldest received are deleted.
	Add(ctx context.Context, deviceID device.ID, r errreport.Report, receivedAt time.Time) error
	// List returns the device's reports, newest received first (reports received together
	// by ID, descending): Page.After is the ID of the last report of the previous page. A
	// device with no reports, or that is not the tenant's, has an empty list.
	List(ctx context.Context, deviceID device.ID, p Page) ([]errreport.Record, error)
	// CountByImage counts the tenant's reports received at or after since per image path,
	// image version and kind, the most reported first (then by path, version and kind).
	// Reports that name no image count under empty strings. At most limit counts (MaxLimit
	// when limit is not positive or larger).
	CountByImage(ctx context.Context, since time.Time, limit int) ([]ReportCount, error)
	ReportQueries // tenant-wide list, download and version figures (errexport.go)
	ErrorIssues
}

// ReportCount is how many reports of one kind named one image version.
type ReportCount struct {
	ImagePath    string
	ImageVersion string
	Kind         errreport.Kind
	Reports      int
}

// OneReader is a Store that reads with one statement on that statement's own snapshot,
// without the cost of a read-only transaction (sqldb.DB.ReadOne, issue 15: on SQLite the
// transaction was most of a one-row read's time). fn must run one statement: a second one
// fails there.
type OneReader interface {
	ReadOne(ctx context.Context, fn func(Tx) error) error
}

// OneRead is st's one-statement read, or InReadTx where st has none.
func OneRead(st Store) func(context.Context, func(Tx) error) error {
	if r, ok := st.(OneReader); ok {
		return r.ReadOne
	}
	return st.InReadTx
}
