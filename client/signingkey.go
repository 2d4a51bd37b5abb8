package client

import (
	"context"
	"net/http"
	"time"
)

// SigningKey is a tenant's registered offline public signing key.
type SigningKey struct {
	ID           string     `json:"id"`
	TenantID     string     `json:"tenant_id"`
	Name         string     `json:"name"`
	TUFKeyID     string     `json:"tuf_key_id"`
	Algorithm    string     `json:"algorithm"`
	PublicKeyPEM string     `json:"public_key_pem"`
	CreatedAt    time.Time  `json:"created_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
}

// SigningKeyCreate registers a public key (PEM, ECDSA P-256).
type SigningKeyCreate struct {
	Name         string `json:"name"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// ListSigningKeys lists the tenant's registered signing keys, revoked ones included.
func (c *Client) ListSigningKeys(ctx context.Context, tenant string, opts ListOptions) (Page[SigningKey], error) {
	var out Page[SigningKey]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "signing-keys"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateSigningKey registers an offline public signing key for the tenant's images.
func (c *Client) CreateSigningKey(ctx context.Context, tenant string, req SigningKeyCreate) (SigningKey, error) {
	var out SigningKey
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "signing-keys"}, body: req}, &out)
	return out, err
}

// GetSigningKey returns a registered signing key.
func (c *Client) GetSigningKey(ctx context.Context, tenant, id string) (SigningKey, error) {
	var out SigningKey
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "signing-keys", id}}, &out)
	return out, err
}

// RevokeSigningKey revokes a signing key and returns its record.
func (c *Client) RevokeSigningKey(ctx context.Context, tenant, id string) (SigningKey, error) {
	var out SigningKey
	err := c.do(ctx, request{method: http.MethodDelete, path: []string{"tenants", tenant, "signing-keys", id}}, &out)
	return out, err
}
