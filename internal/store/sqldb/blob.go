package sqldb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

// blobs is a tenant's record of its blobs; every query binds tenant_id from the tenantTx.
type blobs struct{ t *tenantTx }

func scanBlob(row interface{ Scan(...any) error }) (store.BlobRecord, error) {
	var b store.BlobRecord
	err := row.Scan(&b.Digest, &b.Size, &b.Platform, &b.At)
	b.At = utc(b.At)
	return b, err
}

func (s blobs) Add(ctx context.Context, digest string, size int64, at time.Time) error {
	return s.add(ctx, digest, size, false, at)
}

func (s blobs) AddPlatform(ctx context.Context, digest string, size int64, at time.Time) error {
	return s.add(ctx, digest, size, true, at)
}

// add inserts the record or refreshes its time; a tenant upload (platform false) of a
// platform record makes it the tenant's, counted against its quota.
func (s blobs) add(ctx context.Context, digest string, size int64, platform bool, at time.Time) error {
	if err := (blobFiles{s.t.tx}).Hold(ctx, digest, size, at); err != nil {
		return err
	}
	cur, err := s.Get(ctx, digest)
	switch {
	case err == nil && cur.Size != size:
		return fmt.Errorf("blob %s recorded with size %d, not %d: %w", digest, cur.Size, size, store.ErrConflict)
	case err == nil:
		_, err := s.t.tx.exec(ctx, `UPDATE tenant_blobs SET created_at = $1, platform = $2 WHERE tenant_id = $3 AND digest = $4`,
			utc(at), cur.Platform && platform, s.t.id, digest)
		return err
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	_, err = s.t.tx.exec(ctx, `INSERT INTO tenant_blobs (tenant_id, digest, size, platform, created_at) VALUES ($1, $2, $3, $4, $5)`,
		s.t.id, digest, size, platform, utc(at))
	return err
}

func (s blobs) Size(ctx context.Context, digest string) (int64, error) {
	var size int64
	err := s.t.tx.queryRow(ctx, `SELECT size FROM tenant_blobs WHERE tenant_id = $1 AND digest = $2`, s.t.id, digest).Scan(&size)
	return size, oneRow(err)
}

func (s blobs) Get(ctx context.Context, digest string) (store.BlobRecord, error) {
	b, err := scanBlob(s.t.tx.queryRow(ctx,
		`SELECT digest, size, platform, created_at FROM tenant_blobs WHERE tenant_id = $1 AND digest = $2`, s.t.id, digest))
	return b, oneRow(err)
}

// Lock takes the tenant's row: a write that changes nothing, which PostgreSQL holds
// until the transaction ends (SQLite has one writer at a time anyway).
func (s blobs) Lock(ctx context.Context) error {
	r, err := s.t.tx.exec(ctx, `UPDATE tenants SET version = version WHERE id = $1`, s.t.id)
	if err != nil {
		return err
	}
	return affected(r)
}

func (s blobs) Usage(ctx context.Context) (store.BlobUsage, error) {
	var u store.BlobUsage
	err := s.t.tx.queryRow(ctx, `SELECT COALESCE(SUM(size), 0), count(*) FROM tenant_blobs WHERE tenant_id = $1 AND platform = $2`,
		s.t.id, false).Scan(&u.Bytes, &u.Count)
	return u, err
}

func (s blobs) List(ctx context.Context, p store.Page) ([]store.BlobRecord, error) {
	return queryList(ctx, s.t.tx, scanBlob,
		`SELECT digest, size, platform, created_at FROM tenant_blobs WHERE tenant_id = $1 AND digest > $2 ORDER BY digest LIMIT $3`,
		s.t.id, p.After, limit(p))
}

func (s blobs) Delete(ctx context.Context, digest string) error {
	r, err := s.t.tx.exec(ctx, `DELETE FROM tenant_blobs WHERE tenant_id = $1 AND digest = $2`, s.t.id, digest)
	if err != nil {
		return err
	}
	return affected(r)
}

func (t *tx) PlatformBlobs() store.PlatformBlobs { return platformBlobs{t} }

func (t *tx) BlobFiles() store.BlobFiles { return blobFiles{t} }

type platformBlobs struct{ t *tx }

func scanPlatformBlob(row interface{ Scan(...any) error }) (store.BlobRecord, error) {
	b := store.BlobRecord{Platform: true}
	err := row.Scan(&b.Digest, &b.Size, &b.At)
	b.At = utc(b.At)
	return b, err
}

func (s platformBlobs) Add(ctx context.Context, digest string, size int64, at time.Time) error {
	if err := blobFiles(s).Hold(ctx, digest, size, at); err != nil {
		return err
	}
	var cur int64
	err := s.t.queryRow(ctx, `SELECT size FROM platform_blobs WHERE digest = $1`, digest).Scan(&cur)
	switch err = oneRow(err); {
	case err == nil && cur != size:
		return fmt.Errorf("platform blob %s recorded with size %d, not %d: %w", digest, cur, size, store.ErrConflict)
	case err == nil:
		_, err := s.t.exec(ctx, `UPDATE platform_blobs SET created_at = $1 WHERE digest = $2`, utc(at), digest)
		return err
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	_, err = s.t.exec(ctx, `INSERT INTO platform_blobs (digest, size, created_at) VALUES ($1, $2, $3)`, digest, size, utc(at))
	return err
}

func (s platformBlobs) List(ctx context.Context, p store.Page) ([]store.BlobRecord, error) {
	return queryList(ctx, s.t, scanPlatformBlob,
		`SELECT digest, size, created_at FROM platform_blobs WHERE digest > $1 ORDER BY digest LIMIT $2`, p.After, limit(p))
}

func (s platformBlobs) Delete(ctx context.Context, digest string) error {
	r, err := s.t.exec(ctx, `DELETE FROM platform_blobs WHERE digest = $1`, digest)
	if err != nil {
		return err
	}
	return affected(r)
}

type blobFiles struct{ t *tx }

func scanBlobFile(row interface{ Scan(...any) error }) (store.BlobRecord, error) {
	var b store.BlobRecord
	err := row.Scan(&b.Digest, &b.Size, &b.At)
	b.At = utc(b.At)
	return b, err
}

// Hold upserts the row. ON CONFLICT DO UPDATE locks the existing row in PostgreSQL (and waits
// for a collector holding it); if the collector deleted it, the insert goes ahead.
func (s blobFiles) Hold(ctx context.Context, digest string, size int64, at time.Time) error {
	_, err := s.t.exec(ctx, `INSERT INTO blob_files (digest, size, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at`, digest, size, utc(at))
	return err
}

// Lock takes the row with a write that changes nothing, then reads it.
func (s blobFiles) Lock(ctx context.Context, digest string) (store.BlobRecord, error) {
	r, err := s.t.exec(ctx, `UPDATE blob_files SET size = size WHERE digest = $1`, digest)
	if err != nil {
		return store.BlobRecord{}, err
	}
	if err := affected(r); err != nil {
		return store.BlobRecord{}, err
	}
	b, err := scanBlobFile(s.t.queryRow(ctx, `SELECT digest, size, created_at FROM blob_files WHERE digest = $1`, digest))
	return b, oneRow(err)
}

func (s blobFiles) References(ctx context.Context, digest string) (int, error) {
	var n, m int
	if err := s.t.queryRow(ctx, `SELECT count(*) FROM tenant_blobs WHERE digest = $1`, digest).Scan(&n); err != nil {
		return 0, err
	}
	if err := s.t.queryRow(ctx, `SELECT count(*) FROM platform_blobs WHERE digest = $1`, digest).Scan(&m); err != nil {
		return 0, err
	}
	return n + m, nil
}

func (s blobFiles) Unreferenced(ctx context.Context, before time.Time, p store.Page) ([]store.BlobRecord, error) {
	return queryList(ctx, s.t, scanBlobFile,
		`SELECT f.digest, f.size, f.created_at FROM blob_files f
		 WHERE f.created_at < $1 AND f.digest > $2
		   AND NOT EXISTS (SELECT 1 FROM tenant_blobs t WHERE t.digest = f.digest)
		   AND NOT EXISTS (SELECT 1 FROM platform_blobs b WHERE b.digest = f.digest)
		 ORDER BY f.digest LIMIT $3`, utc(before), p.After, limit(p))
}

func (s blobFiles) Delete(ctx context.Context, digest string) error {
	r, err := s.t.exec(ctx, `DELETE FROM blob_files WHERE digest = $1`, digest)
	if err != nil {
		return err
	}
	return affected(r)
}
