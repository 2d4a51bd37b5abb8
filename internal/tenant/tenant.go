// Package tenant defines the tenant, the unit of isolation in moat: every device, product,
// image and audit event belongs to exactly one tenant, and nothing of one tenant is visible
// to another (rule 3). Pure types and validation; safe for concurrent use.
package tenant

import (
	"time"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
)

// ID identifies a tenant. The empty ID is never valid: stores refuse it (store.ErrNoTenant).
type ID string

// IDPrefix starts every tenant ID.
const IDPrefix = "tnt"

// Tenant is a manufacturer's account.
type Tenant struct {
	ID        ID        `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   int64     `json:"version"`
	// StorageQuotaBytes is the most the tenant's uploaded image packages may take, set by
	// the platform operator; absent: the server's default.
	StorageQuotaBytes *int64 `json:"storage_quota_bytes,omitempty"`
}

// Create is the body of a tenant creation request.
type Create struct {
	Name string `json:"name"`
}

// Validate reports every problem with the request.
func (c Create) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", c.Name)
	return v.Err()
}

// MaxStorageQuotaBytes bounds a storage quota (1 PiB), so that a slip of a few zeros is
// refused rather than taken as no limit.
const MaxStorageQuotaBytes = 1 << 50

// StorageQuota is the body that sets a tenant's storage quota (platform operators only).
type StorageQuota struct {
	// StorageQuotaBytes is required; 0 refuses every upload.
	StorageQuotaBytes *int64 `json:"storage_quota_bytes"`
}

// Validate reports every problem with the request.
func (q StorageQuota) Validate() error {
	var v problem.Validation
	switch {
	case q.StorageQuotaBytes == nil:
		v.Add("storage_quota_bytes", "required", "storage_quota_bytes is required")
	case *q.StorageQuotaBytes < 0 || *q.StorageQuotaBytes > MaxStorageQuotaBytes:
		v.Add("storage_quota_bytes", "out_of_range", "storage_quota_bytes must be 0 to 1125899906842624 (1 PiB)")
	}
	return v.Err()
}

// Storage is what a tenant's uploaded image packages take against its quota: distinct
// blobs, each counted once however often uploaded; OS packages the platform publishes for
// the tenant are not counted.
type Storage struct {
	TenantID   ID    `json:"tenant_id"`
	QuotaBytes int64 `json:"quota_bytes"`
	// QuotaDefault: the operator set no quota for the tenant; the server's default applies.
	QuotaDefault bool  `json:"quota_default"`
	UsedBytes    int64 `json:"used_bytes"`
	Blobs        int   `json:"blobs"`
}
