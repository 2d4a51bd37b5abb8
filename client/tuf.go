package client

import (
	"context"
	"io"
	"net/http"
	"strings"
)

// OnlineKey is the server's online public key, which the platform root names for the TUF
// repository's snapshot and timestamp roles.
type OnlineKey struct {
	PublicKeyPEM string `json:"public_key_pem"`
	TUFKeyID     string `json:"tuf_key_id"`
}

// TUFVersion is the version of uploaded TUF metadata.
type TUFVersion struct {
	Version int64 `json:"version"`
}

// Delegation is what a tenant's next targets.json must delegate to: its active keys.
type Delegation struct {
	TenantID       string          `json:"tenant_id"`
	TargetsVersion int64           `json:"targets_version"`
	Keys           []DelegationKey `json:"keys"`
	// CurrentTargets is the tenant's current targets.json, unverified: the signer checks it.
	CurrentTargets string `json:"current_targets,omitempty"`
}

// DelegationKey is one active registered key.
type DelegationKey struct {
	Name         string `json:"name"`
	TUFKeyID     string `json:"tuf_key_id"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// GetTenantDelegation returns what the tenant's next targets.json delegates to (platform
// operators).
func (c *Client) GetTenantDelegation(ctx context.Context, tenant string) (Delegation, error) {
	var out Delegation
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "tuf", "delegation"}}, &out)
	return out, err
}

// GetOnlineKey returns the server's online key (platform operators).
func (c *Client) GetOnlineKey(ctx context.Context) (OnlineKey, error) {
	var out OnlineKey
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"platform", "online-key"}}, &out)
	return out, err
}

// PutPlatformRoot uploads the next platform root.json, signed offline (platform operators).
func (c *Client) PutPlatformRoot(ctx context.Context, signed []byte) (TUFVersion, error) {
	var out TUFVersion
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"platform", "tuf", "root"}, raw: signed}, &out)
	return out, err
}

// PutTenantTargets uploads a tenant's targets.json, signed offline by the platform OS key
// (platform operators).
func (c *Client) PutTenantTargets(ctx context.Context, tenant string, signed []byte) (TUFVersion, error) {
	var out TUFVersion
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"tenants", tenant, "tuf", "targets"}, raw: signed}, &out)
	return out, err
}

// PutTenantApps uploads the tenant's apps.json, signed offline by one of its registered keys.
func (c *Client) PutTenantApps(ctx context.Context, tenant string, signed []byte) (TUFVersion, error) {
	var out TUFVersion
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"tenants", tenant, "tuf", "apps"}, raw: signed}, &out)
	return out, err
}

// GetTenantTUFFile returns a file of the tenant's TUF repository view byte for byte.
func (c *Client) GetTenantTUFFile(ctx context.Context, tenant, name string) ([]byte, error) {
	var out []byte
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "tuf", "metadata", name}}, &out)
	return out, err
}

// BlobInfo is an uploaded blob.
type BlobInfo struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// UploadBlob streams an image package to the tenant's blob store and returns its digest,
// which the tenant's signed apps.json then names.
func (c *Client) UploadBlob(ctx context.Context, tenant string, body io.Reader) (BlobInfo, error) {
	var out BlobInfo
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "blobs"}, stream: body}, &out)
	return out, err
}

// GetTenantTarget streams a target of the tenant's TUF view (by its hash-prefixed name,
// "apps/<name>/<sha256>.<version>") into w and returns the number of bytes written. The
// caller verifies the bytes against the signed metadata, as a TUF client does.
func (c *Client) GetTenantTarget(ctx context.Context, tenant, target string, w io.Writer) (int64, error) {
	var n int64
	path := append([]string{"tenants", tenant, "tuf", "targets"}, strings.Split(target, "/")...)
	err := c.do(ctx, request{method: http.MethodGet, path: path, sink: w}, &n)
	return n, err
}

// UploadPlatformBlob streams an OS image package for tenants' targets.json to name
// (platform operators).
func (c *Client) UploadPlatformBlob(ctx context.Context, body io.Reader) (BlobInfo, error) {
	var out BlobInfo
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"platform", "blobs"}, stream: body}, &out)
	return out, err
}

// ListPlatformAuditEvents lists the platform's audit log (platform operators).
func (c *Client) ListPlatformAuditEvents(ctx context.Context, opts ListOptions) (Page[AuditEvent], error) {
	var out Page[AuditEvent]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"platform", "audit-events"}, query: listQuery(opts)}, &out)
	return out, err
}
