package sqldb

import (
	"context"
	"database/sql"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/trust"
)

type signingKeys struct{ t *tenantTx }

const signingKeyCols = `id, tenant_id, name, tuf_key_id, algorithm, public_key_pem, created_at, revoked_at`

func scanSigningKey(row interface{ Scan(...any) error }) (trust.SigningKey, error) {
	var k trust.SigningKey
	var rev sql.NullTime
	err := row.Scan(&k.ID, &k.TenantID, &k.Name, &k.TUFKeyID, &k.Algorithm, &k.PublicKeyPEM, &k.CreatedAt, &rev)
	k.CreatedAt, k.RevokedAt = utc(k.CreatedAt), timePtr(rev)
	return k, err
}

func (s signingKeys) Create(ctx context.Context, k trust.SigningKey) error {
	_, err := s.t.tx.exec(ctx, `INSERT INTO signing_keys (id, tenant_id, name, name_fold, tuf_key_id, algorithm, public_key_pem, created_at, revoked_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.ID, s.t.id, k.Name, fold(k.Name), k.TUFKeyID, k.Algorithm, k.PublicKeyPEM, utc(k.CreatedAt), nullTime(k.RevokedAt))
	return err
}

func (s signingKeys) Get(ctx context.Context, id trust.KeyID) (trust.SigningKey, error) {
	k, err := scanSigningKey(s.t.tx.queryRow(ctx,
		`SELECT `+signingKeyCols+` FROM signing_keys WHERE tenant_id = $1 AND id = $2`, s.t.id, id))
	return k, oneRow(err)
}

func (s signingKeys) List(ctx context.Context, p store.Page) ([]trust.SigningKey, error) {
	return queryList(ctx, s.t.tx, scanSigningKey,
		`SELECT `+signingKeyCols+` FROM signing_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`, s.t.id, p.After, limit(p))
}

func (s signingKeys) Revoke(ctx context.Context, id trust.KeyID, at time.Time) (trust.SigningKey, error) {
	if _, err := s.t.tx.exec(ctx, `UPDATE signing_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL`,
		utc(at), s.t.id, id); err != nil {
		return trust.SigningKey{}, err
	}
	return s.Get(ctx, id)
}
