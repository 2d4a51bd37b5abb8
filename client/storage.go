package client

import (
	"context"
	"net/http"
)

// TenantStorage is what a tenant's uploaded image packages take against its storage quota:
// distinct blobs, each counted once; OS packages the platform publishes are not counted.
type TenantStorage struct {
	TenantID   string `json:"tenant_id"`
	QuotaBytes int64  `json:"quota_bytes"`
	// QuotaDefault: the operator set no quota for the tenant; the server's default applies.
	QuotaDefault bool  `json:"quota_default"`
	UsedBytes    int64 `json:"used_bytes"`
	Blobs        int   `json:"blobs"`
}

// TenantStorageQuota sets a tenant's storage quota.
type TenantStorageQuota struct {
	// StorageQuotaBytes is required; 0 refuses every upload.
	StorageQuotaBytes *int64 `json:"storage_quota_bytes"`
}

// GetTenantStorage shows what the tenant's uploads take against its storage quota.
func (c *Client) GetTenantStorage(ctx context.Context, tenant string) (TenantStorage, error) {
	var out TenantStorage
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "storage"}}, &out)
	return out, err
}

// PutTenantStorageQuota sets a tenant's storage quota (platform operators only); uploads that
// would take the tenant past it are refused with the code storage_quota_exceeded.
func (c *Client) PutTenantStorageQuota(ctx context.Context, tenant string, q TenantStorageQuota) (TenantStorage, error) {
	var out TenantStorage
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"tenants", tenant, "storage-quota"}, body: q}, &out)
	return out, err
}
