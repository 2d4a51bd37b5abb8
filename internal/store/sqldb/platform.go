package sqldb

import (
	"context"
	"database/sql"
	"time"

	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

type tenants struct{ t *tx }

const tenantCols = `id, name, created_at, updated_at, version, storage_quota_bytes`

func scanTenant(row interface{ Scan(...any) error }) (tenant.Tenant, error) {
	var x tenant.Tenant
	var quota sql.NullInt64
	err := row.Scan(&x.ID, &x.Name, &x.CreatedAt, &x.UpdatedAt, &x.Version, &quota)
	x.CreatedAt, x.UpdatedAt = utc(x.CreatedAt), utc(x.UpdatedAt)
	if quota.Valid {
		x.StorageQuotaBytes = &quota.Int64
	}
	return x, err
}

func (s tenants) Create(ctx context.Context, x tenant.Tenant) error {
	_, err := s.t.exec(ctx, `INSERT INTO tenants (id, name, name_fold, created_at, updated_at, version, storage_quota_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		x.ID, x.Name, fold(x.Name), utc(x.CreatedAt), utc(x.UpdatedAt), x.Version, nullInt64(x.StorageQuotaBytes))
	return err
}

func (s tenants) SetStorageQuota(ctx context.Context, id tenant.ID, quota *int64, at time.Time) (tenant.Tenant, error) {
	r, err := s.t.exec(ctx, `UPDATE tenants SET storage_quota_bytes = $1, updated_at = $2, version = version + 1 WHERE id = $3`,
		nullInt64(quota), utc(at), id)
	if err != nil {
		return tenant.Tenant{}, err
	}
	if err := affected(r); err != nil {
		return tenant.Tenant{}, err
	}
	return s.Get(ctx, id)
}

func nullInt64(p *int64) sql.NullInt64 {
	if p == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: *p, Valid: true}
}

func (s tenants) Get(ctx context.Context, id tenant.ID) (tenant.Tenant, error) {
	x, err := scanTenant(s.t.queryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE id = $1`, id))
	return x, oneRow(err)
}

func (s tenants) GetByName(ctx context.Context, name string) (tenant.Tenant, error) {
	x, err := scanTenant(s.t.queryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE name_fold = $1`, fold(name)))
	return x, oneRow(err)
}

func (s tenants) List(ctx context.Context, p store.Page) ([]tenant.Tenant, error) {
	return queryList(ctx, s.t, scanTenant,
		`SELECT `+tenantCols+` FROM tenants WHERE id > $1 ORDER BY id LIMIT $2`, p.After, limit(p))
}

func (s tenants) ListForUser(ctx context.Context, user auth.UserID, p store.Page) ([]tenant.Tenant, error) {
	return queryList(ctx, s.t, scanTenant,
		`SELECT t.id, t.name, t.created_at, t.updated_at, t.version, t.storage_quota_bytes FROM tenants t
		 JOIN members m ON m.tenant_id = t.id
		 WHERE m.user_id = $1 AND t.id > $2 ORDER BY t.id LIMIT $3`, user, p.After, limit(p))
}

// queryList runs a list query and scans every row.
func queryList[T any](ctx context.Context, t *tx, scan func(interface{ Scan(...any) error }) (T, error), q string, args ...any) ([]T, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		x, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

type users struct{ t *tx }

func scanUser(row interface{ Scan(...any) error }) (auth.User, error) {
	var u auth.User
	err := row.Scan(&u.ID, &u.Name, &u.PlatformOperator, &u.CreatedAt)
	u.CreatedAt = utc(u.CreatedAt)
	return u, err
}

func (s users) Create(ctx context.Context, u auth.User) error {
	_, err := s.t.exec(ctx, `INSERT INTO users (id, name, platform_operator, created_at) VALUES ($1, $2, $3, $4)`,
		u.ID, u.Name, u.PlatformOperator, utc(u.CreatedAt))
	return err
}

func (s users) Get(ctx context.Context, id auth.UserID) (auth.User, error) {
	u, err := scanUser(s.t.queryRow(ctx, `SELECT id, name, platform_operator, created_at FROM users WHERE id = $1`, id))
	return u, oneRow(err)
}

func (s users) CountOperators(ctx context.Context) (int, error) {
	var n int
	err := s.t.queryRow(ctx, `SELECT count(*) FROM users WHERE platform_operator = $1`, true).Scan(&n)
	return n, err
}

func (s users) Roles(ctx context.Context, id auth.UserID) (map[tenant.ID]auth.Role, error) {
	rows, err := s.t.query(ctx, `SELECT tenant_id, role FROM members WHERE user_id = $1`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[tenant.ID]auth.Role{}
	for rows.Next() {
		var t tenant.ID
		var r auth.Role
		if err := rows.Scan(&t, &r); err != nil {
			return nil, err
		}
		out[t] = r
	}
	return out, rows.Err()
}

type tokens struct{ t *tx }

const tokenCols = `id, user_id, name, hash, created_at, expires_at, revoked_at`

func scanToken(row interface{ Scan(...any) error }) (auth.Token, error) {
	var k auth.Token
	var exp, rev sql.NullTime
	err := row.Scan(&k.ID, &k.UserID, &k.Name, &k.Hash, &k.CreatedAt, &exp, &rev)
	k.CreatedAt = utc(k.CreatedAt)
	k.ExpiresAt, k.RevokedAt = timePtr(exp), timePtr(rev)
	return k, err
}

func (s tokens) Create(ctx context.Context, k auth.Token) error {
	_, err := s.t.exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		k.ID, k.UserID, k.Name, k.Hash, utc(k.CreatedAt), nullTime(k.ExpiresAt), nullTime(k.RevokedAt))
	return err
}

func (s tokens) Get(ctx context.Context, id auth.TokenID) (auth.Token, error) {
	k, err := scanToken(s.t.queryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1`, id))
	return k, oneRow(err)
}

func (s tokens) ListForUser(ctx context.Context, user auth.UserID, p store.Page) ([]auth.Token, error) {
	return queryList(ctx, s.t, scanToken,
		`SELECT `+tokenCols+` FROM tokens WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`, user, p.After, limit(p))
}

func (s tokens) Revoke(ctx context.Context, user auth.UserID, id auth.TokenID, at time.Time) (auth.Token, error) {
	r, err := s.t.exec(ctx, `UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL`, utc(at), id, user)
	if err != nil {
		return auth.Token{}, err
	}
	if _, err := r.RowsAffected(); err != nil {
		return auth.Token{}, err
	}
	k, err := scanToken(s.t.queryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1 AND user_id = $2`, id, user))
	return k, oneRow(err)
}
