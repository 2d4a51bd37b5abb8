package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
)

// Every query in this file binds tenant_id from the tenantTx, never from an argument.

type products struct{ t *tenantTx }

const productCols = `id, tenant_id, name, description, max_update_deferral_seconds, created_at, updated_at, version`

func scanProduct(row interface{ Scan(...any) error }) (product.Product, error) {
	var p product.Product
	err := row.Scan(&p.ID, &p.TenantID, &p.Name, &p.Description, &p.MaxUpdateDeferralSeconds, &p.CreatedAt, &p.UpdatedAt, &p.Version)
	p.CreatedAt, p.UpdatedAt = utc(p.CreatedAt), utc(p.UpdatedAt)
	return p, err
}

func (s products) Create(ctx context.Context, p product.Product) error {
	_, err := s.t.tx.exec(ctx, `INSERT INTO products (id, tenant_id, name, name_fold, description, max_update_deferral_seconds, created_at, updated_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		p.ID, s.t.id, p.Name, fold(p.Name), p.Description, p.MaxUpdateDeferralSeconds, utc(p.CreatedAt), utc(p.UpdatedAt), p.Version)
	return err
}

func (s products) Get(ctx context.Context, id product.ID) (product.Product, error) {
	p, err := scanProduct(s.t.tx.queryRow(ctx,
		`SELECT `+productCols+` FROM products WHERE tenant_id = $1 AND id = $2`, s.t.id, id))
	return p, oneRow(err)
}

func (s products) GetByName(ctx context.Context, name string) (product.Product, error) {
	p, err := scanProduct(s.t.tx.queryRow(ctx,
		`SELECT `+productCols+` FROM products WHERE tenant_id = $1 AND name_fold = $2`, s.t.id, fold(name)))
	return p, oneRow(err)
}

func (s products) List(ctx context.Context, p store.Page) ([]product.Product, error) {
	return queryList(ctx, s.t.tx, scanProduct,
		`SELECT `+productCols+` FROM products WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`, s.t.id, p.After, limit(p))
}

func (s products) Update(ctx context.Context, p product.Product) error {
	r, err := s.t.tx.exec(ctx, `UPDATE products SET name = $1, name_fold = $2, description = $3, max_update_deferral_seconds = $4, updated_at = $5, version = $6
		WHERE tenant_id = $7 AND id = $8 AND version = $9`,
		p.Name, fold(p.Name), p.Description, p.MaxUpdateDeferralSeconds, utc(p.UpdatedAt), p.Version, s.t.id, p.ID, p.Version-1)
	if err != nil {
		return err
	}
	return s.t.tx.versioned(ctx, r, `SELECT count(*) FROM products WHERE tenant_id = $1 AND id = $2`, s.t.id, p.ID)
}

func (s products) Delete(ctx context.Context, id product.ID, version int64) error {
	// The product's groups go with it (ON DELETE CASCADE), and their deployments with them: a
	// product is deleted whole. A device still in one of its groups holds the group (its
	// foreign key has no action), so the delete fails with ErrInUse and changes nothing.
	r, err := s.t.tx.exec(ctx, `DELETE FROM products WHERE tenant_id = $1 AND id = $2 AND (CAST($3 AS BIGINT) = 0 OR version = $3)`, s.t.id, id, version)
	if err != nil {
		return err
	}
	if err := s.t.tx.versioned(ctx, r, `SELECT count(*) FROM products WHERE tenant_id = $1 AND id = $2`, s.t.id, id); err != nil {
		return err
	}
	return nil
}

type groups struct{ t *tenantTx }

const groupCols = `id, tenant_id, product_id, name, description, os_feed, update_policy, maintenance_window, created_at, updated_at, version`

func scanGroup(row interface{ Scan(...any) error }) (product.Group, error) {
	var g product.Group
	var window sql.NullString
	err := row.Scan(&g.ID, &g.TenantID, &g.ProductID, &g.Name, &g.Description, &g.OSFeed, &g.UpdatePolicy, &window, &g.CreatedAt, &g.UpdatedAt, &g.Version)
	g.CreatedAt, g.UpdatedAt = utc(g.CreatedAt), utc(g.UpdatedAt)
	if err == nil && window.Valid {
		g.MaintenanceWindow, err = decodeWindow(window.String)
	}
	return g, err
}

func (s groups) Create(ctx context.Context, g product.Group) error {
	window, err := encodeWindow(g.MaintenanceWindow)
	if err != nil {
		return err
	}
	_, err = s.t.tx.exec(ctx, `INSERT INTO device_groups (id, tenant_id, product_id, name, name_fold, description, os_feed, update_policy, maintenance_window, created_at, updated_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		g.ID, s.t.id, g.ProductID, g.Name, fold(g.Name), g.Description, g.OSFeed, g.UpdatePolicy, window, utc(g.CreatedAt), utc(g.UpdatedAt), g.Version)
	return err
}

func (s groups) Get(ctx context.Context, pid product.ID, id product.GroupID) (product.Group, error) {
	g, err := scanGroup(s.t.tx.queryRow(ctx,
		`SELECT `+groupCols+` FROM device_groups WHERE tenant_id = $1 AND product_id = $2 AND id = $3`, s.t.id, pid, id))
	return g, oneRow(err)
}

func (s groups) GetByName(ctx context.Context, pid product.ID, name string) (product.Group, error) {
	g, err := scanGroup(s.t.tx.queryRow(ctx,
		`SELECT `+groupCols+` FROM device_groups WHERE tenant_id = $1 AND product_id = $2 AND name_fold = $3`, s.t.id, pid, fold(name)))
	return g, oneRow(err)
}

func (s groups) List(ctx context.Context, pid product.ID, p store.Page) ([]product.Group, error) {
	return queryList(ctx, s.t.tx, scanGroup,
		`SELECT `+groupCols+` FROM device_groups WHERE tenant_id = $1 AND product_id = $2 AND id > $3 ORDER BY id LIMIT $4`,
		s.t.id, pid, p.After, limit(p))
}

func (s groups) Update(ctx context.Context, g product.Group) error {
	window, err := encodeWindow(g.MaintenanceWindow)
	if err != nil {
		return err
	}
	r, err := s.t.tx.exec(ctx, `UPDATE device_groups SET name = $1, name_fold = $2, description = $3, os_feed = $4, update_policy = $5, maintenance_window = $6, updated_at = $7, version = $8
		WHERE tenant_id = $9 AND product_id = $10 AND id = $11 AND version = $12`,
		g.Name, fold(g.Name), g.Description, g.OSFeed, g.UpdatePolicy, window, utc(g.UpdatedAt), g.Version, s.t.id, g.ProductID, g.ID, g.Version-1)
	if err != nil {
		return err
	}
	return s.t.tx.versioned(ctx, r, `SELECT count(*) FROM device_groups WHERE tenant_id = $1 AND product_id = $2 AND id = $3`, s.t.id, g.ProductID, g.ID)
}

// Delete removes the group and its deployments (ON DELETE CASCADE); a group that still has
// devices is ErrInUse (the devices' foreign key to it has no action).
func (s groups) Delete(ctx context.Context, pid product.ID, id product.GroupID, version int64) error {
	r, err := s.t.tx.exec(ctx, `DELETE FROM device_groups WHERE tenant_id = $1 AND product_id = $2 AND id = $3 AND (CAST($4 AS BIGINT) = 0 OR version = $4)`,
		s.t.id, pid, id, version)
	if err != nil {
		return err
	}
	return s.t.tx.versioned(ctx, r, `SELECT count(*) FROM device_groups WHERE tenant_id = $1 AND product_id = $2 AND id = $3`, s.t.id, pid, id)
}

type members struct{ t *tenantTx }

func scanMember(row interface{ Scan(...any) error }) (auth.Member, error) {
	var m auth.Member
	err := row.Scan(&m.TenantID, &m.Role, &m.User.ID, &m.User.Name, &m.User.PlatformOperator, &m.User.CreatedAt)
	m.User.CreatedAt = utc(m.User.CreatedAt)
	return m, err
}

const memberSelect = `SELECT m.tenant_id, m.role, u.id, u.name, u.platform_operator, u.created_at
	FROM members m JOIN users u ON u.id = m.user_id`

func (s members) Put(ctx context.Context, user auth.UserID, role auth.Role, at time.Time) error {
	r, err := s.t.tx.exec(ctx, `UPDATE members SET role = $1, updated_at = $2 WHERE tenant_id = $3 AND user_id = $4`, role, utc(at), s.t.id, user)
	if err != nil {
		return err
	}
	switch err := affected(r); {
	case err == nil:
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	_, err = s.t.tx.exec(ctx, `INSERT INTO members (tenant_id, user_id, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)`,
		s.t.id, user, role, utc(at), utc(at))
	return err
}

func (s members) Get(ctx context.Context, user auth.UserID) (auth.Member, error) {
	m, err := scanMember(s.t.tx.queryRow(ctx, memberSelect+` WHERE m.tenant_id = $1 AND m.user_id = $2`, s.t.id, user))
	return m, oneRow(err)
}

func (s members) List(ctx context.Context, p store.Page) ([]auth.Member, error) {
	return queryList(ctx, s.t.tx, scanMember,
		memberSelect+` WHERE m.tenant_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3`, s.t.id, p.After, limit(p))
}

func (s members) Delete(ctx context.Context, user auth.UserID) error {
	r, err := s.t.tx.exec(ctx, `DELETE FROM members WHERE tenant_id = $1 AND user_id = $2`, s.t.id, user)
	if err != nil {
		return err
	}
	return affected(r)
}

func (s members) CountRole(ctx context.Context, role auth.Role) (int, error) {
	var n int
	err := s.t.tx.queryRow(ctx, `SELECT count(*) FROM members WHERE tenant_id = $1 AND role = $2`, s.t.id, role).Scan(&n)
	return n, err
}

type auditLog struct{ t *tenantTx }

const auditCols = `id, tenant_id, at, actor_id, actor_name, token_id, action, object_type, object_id, remote_addr, request_id, detail`

func scanEvent(row interface{ Scan(...any) error }) (audit.Event, error) {
	var e audit.Event
	err := row.Scan(&e.ID, &e.TenantID, &e.At, &e.ActorID, &e.ActorName, &e.TokenID, &e.Action, &e.ObjectType, &e.ObjectID, &e.RemoteAddr, &e.RequestID, &e.Detail)
	e.At = utc(e.At)
	return e, err
}

func (s auditLog) Append(ctx context.Context, e audit.Event) error {
	_, err := s.t.tx.exec(ctx, `INSERT INTO audit_events (`+auditCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		e.ID, s.t.id, utc(e.At), e.ActorID, e.ActorName, e.TokenID, e.Action, e.ObjectType, e.ObjectID, e.RemoteAddr, e.RequestID, e.Detail)
	return err
}

func (s auditLog) List(ctx context.Context, p store.Page) ([]audit.Event, error) {
	return queryList(ctx, s.t.tx, scanEvent,
		`SELECT `+auditCols+` FROM audit_events WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`, s.t.id, p.After, limit(p))
}

// platformAudit is the platform's audit log: the same events, without a tenant.
type platformAudit struct{ t *tx }

const platformAuditCols = `id, at, actor_id, actor_name, token_id, action, object_type, object_id, remote_addr, request_id, detail`

func scanPlatformEvent(row interface{ Scan(...any) error }) (audit.Event, error) {
	var e audit.Event
	err := row.Scan(&e.ID, &e.At, &e.ActorID, &e.ActorName, &e.TokenID, &e.Action, &e.ObjectType, &e.ObjectID, &e.RemoteAddr, &e.RequestID, &e.Detail)
	e.At = utc(e.At)
	return e, err
}

func (s platformAudit) Append(ctx context.Context, e audit.Event) error {
	_, err := s.t.exec(ctx, `INSERT INTO platform_audit_events (`+platformAuditCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		e.ID, utc(e.At), e.ActorID, e.ActorName, e.TokenID, e.Action, e.ObjectType, e.ObjectID, e.RemoteAddr, e.RequestID, e.Detail)
	return err
}

func (s platformAudit) List(ctx context.Context, p store.Page) ([]audit.Event, error) {
	return queryList(ctx, s.t, scanPlatformEvent,
		`SELECT `+platformAuditCols+` FROM platform_audit_events WHERE id > $1 ORDER BY id LIMIT $2`, p.After, limit(p))
}
