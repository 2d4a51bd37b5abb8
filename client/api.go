package client

import (
	"context"
	"errors"
	"iter"
	"net/http"
)

// One method per operation of the management API's route table, named for its OperationID.
// Tenant-scoped methods take the tenant ID first; objects are addressed by ID.

// GetMe returns the calling user, the token it called with and its roles.
func (c *Client) GetMe(ctx context.Context) (Me, error) {
	var out Me
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"me"}}, &out)
	return out, err
}

// ListTokens lists the calling user's API tokens.
func (c *Client) ListTokens(ctx context.Context, opts ListOptions) (Page[Token], error) {
	var out Page[Token]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tokens"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateToken creates an API token for the calling user. The secret in the result is shown
// this once.
func (c *Client) CreateToken(ctx context.Context, req TokenCreate) (TokenCreated, error) {
	var out TokenCreated
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tokens"}, body: req}, &out)
	return out, err
}

// RevokeToken revokes one of the calling user's API tokens and returns its record.
func (c *Client) RevokeToken(ctx context.Context, id string) (Token, error) {
	var out Token
	err := c.do(ctx, request{method: http.MethodDelete, path: []string{"tokens", id}}, &out)
	return out, err
}

// ListTenants lists the tenants the caller may see (all of them for a platform operator).
func (c *Client) ListTenants(ctx context.Context, opts ListOptions) (Page[Tenant], error) {
	var out Page[Tenant]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateTenant creates a tenant; the caller, a platform operator, becomes its Administrator.
func (c *Client) CreateTenant(ctx context.Context, req TenantCreate) (Tenant, error) {
	var out Tenant
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants"}, body: req}, &out)
	return out, err
}

// GetTenant returns a tenant.
func (c *Client) GetTenant(ctx context.Context, tenant string) (Tenant, error) {
	var out Tenant
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant}}, &out)
	return out, err
}

// ListMembers lists the tenant's users and their roles.
func (c *Client) ListMembers(ctx context.Context, tenant string, opts ListOptions) (Page[Member], error) {
	var out Page[Member]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "members"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateMember creates a user with a role in the tenant and its first API token, whose
// secret in the result is shown this once.
func (c *Client) CreateMember(ctx context.Context, tenant string, req MemberCreate) (MemberCreated, error) {
	var out MemberCreated
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "members"}, body: req}, &out)
	return out, err
}

// PutMember grants an existing user a role in the tenant, or changes it.
func (c *Client) PutMember(ctx context.Context, tenant, user string, role Role) (Member, error) {
	var out Member
	err := c.do(ctx, request{method: http.MethodPut, path: []string{"tenants", tenant, "members", user}, body: memberPut{Role: role}}, &out)
	return out, err
}

// DeleteMember removes a user's role in the tenant.
func (c *Client) DeleteMember(ctx context.Context, tenant, user string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: []string{"tenants", tenant, "members", user}}, nil)
}

// ListAuditEvents lists the tenant's audit log, oldest first.
func (c *Client) ListAuditEvents(ctx context.Context, tenant string, opts ListOptions) (Page[AuditEvent], error) {
	var out Page[AuditEvent]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "audit-events"}, query: listQuery(opts)}, &out)
	return out, err
}

// ListProducts lists the tenant's products.
func (c *Client) ListProducts(ctx context.Context, tenant string, opts ListOptions) (Page[Product], error) {
	var out Page[Product]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "products"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateProduct creates a product with its five default device groups.
func (c *Client) CreateProduct(ctx context.Context, tenant string, req ProductCreate) (Product, error) {
	var out Product
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "products"}, body: req}, &out)
	return out, err
}

// GetProduct returns a product.
func (c *Client) GetProduct(ctx context.Context, tenant, id string) (Product, error) {
	var out Product
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "products", id}}, &out)
	return out, err
}

// UpdateProduct changes a product's name or description. ifMatchVersion is the Version of
// the product as last read; when it changed since, the server answers 412 (Code
// "etag_mismatch") and nothing changes.
func (c *Client) UpdateProduct(ctx context.Context, tenant, id string, ifMatchVersion int64, upd ProductUpdate) (Product, error) {
	var out Product
	if ifMatchVersion <= 0 {
		return out, errors.New("client: UpdateProduct needs the version read (If-Match)")
	}
	err := c.do(ctx, request{method: http.MethodPatch, path: []string{"tenants", tenant, "products", id}, body: upd, ifMatch: ifMatchVersion}, &out)
	return out, err
}

// DeleteProduct deletes a product and its device groups. A non-zero ifMatchVersion makes
// the delete conditional on the product still being at that version; 0 deletes whatever
// version is current.
func (c *Client) DeleteProduct(ctx context.Context, tenant, id string, ifMatchVersion int64) error {
	return c.do(ctx, request{method: http.MethodDelete, path: []string{"tenants", tenant, "products", id}, ifMatch: ifMatchVersion}, nil)
}

// ListDeviceGroups lists a product's device groups.
func (c *Client) ListDeviceGroups(ctx context.Context, tenant, product string, opts ListOptions) (Page[DeviceGroup], error) {
	var out Page[DeviceGroup]
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "products", product, "device-groups"}, query: listQuery(opts)}, &out)
	return out, err
}

// CreateDeviceGroup creates a device group in a product.
func (c *Client) CreateDeviceGroup(ctx context.Context, tenant, product string, req DeviceGroupCreate) (DeviceGroup, error) {
	var out DeviceGroup
	err := c.do(ctx, request{method: http.MethodPost, path: []string{"tenants", tenant, "products", product, "device-groups"}, body: req}, &out)
	return out, err
}

// GetDeviceGroup returns a device group.
func (c *Client) GetDeviceGroup(ctx context.Context, tenant, product, group string) (DeviceGroup, error) {
	var out DeviceGroup
	err := c.do(ctx, request{method: http.MethodGet, path: []string{"tenants", tenant, "products", product, "device-groups", group}}, &out)
	return out, err
}

// UpdateDeviceGroup changes a device group. ifMatchVersion is the Version of the group as
// last read, as for UpdateProduct.
func (c *Client) UpdateDeviceGroup(ctx context.Context, tenant, product, group string, ifMatchVersion int64, upd DeviceGroupUpdate) (DeviceGroup, error) {
	var out DeviceGroup
	if ifMatchVersion <= 0 {
		return out, errors.New("client: UpdateDeviceGroup needs the version read (If-Match)")
	}
	err := c.do(ctx, request{method: http.MethodPatch, path: []string{"tenants", tenant, "products", product, "device-groups", group}, body: upd, ifMatch: ifMatchVersion}, &out)
	return out, err
}

// DeleteDeviceGroup deletes a device group; ifMatchVersion as for DeleteProduct.
func (c *Client) DeleteDeviceGroup(ctx context.Context, tenant, product, group string, ifMatchVersion int64) error {
	return c.do(ctx, request{method: http.MethodDelete, path: []string{"tenants", tenant, "products", product, "device-groups", group}, ifMatch: ifMatchVersion}, nil)
}

// All iterates over every item of a list, page by page, starting from opts (whose Limit
// sets the page size). It stops at the first error, which it yields with a zero item.
//
//	for p, err := range client.All(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.Product], error) {
//		return c.ListProducts(ctx, tenant, o)
//	}) { ... }
func All[T any](ctx context.Context, opts ListOptions, list func(context.Context, ListOptions) (Page[T], error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		seen := map[string]bool{}
		for {
			p, err := list(ctx, opts)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range p.Items {
				if !yield(it, nil) {
					return
				}
			}
			if p.NextPageToken == "" {
				return
			}
			if seen[p.NextPageToken] {
				var zero T
				yield(zero, errors.New("client: the server repeated a page token"))
				return
			}
			seen[p.NextPageToken] = true
			opts.PageToken = p.NextPageToken
		}
	}
}

// Collect returns every item of a list, as All iterates over them.
func Collect[T any](ctx context.Context, opts ListOptions, list func(context.Context, ListOptions) (Page[T], error)) ([]T, error) {
	out := []T{}
	for it, err := range All(ctx, opts, list) {
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, nil
}
