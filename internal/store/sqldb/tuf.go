package sqldb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

type tufFiles struct{ t *tenantTx }

func (s tufFiles) Put(ctx context.Context, f store.File, at time.Time) error {
	if f.Name == "" || len(f.Data) == 0 || len(f.Data) > store.MaxTUFFileBytes {
		return fmt.Errorf("tuf file %q: empty or larger than %d bytes", f.Name, store.MaxTUFFileBytes)
	}
	if f.Name == store.TimestampFile {
		r, err := s.t.tx.exec(ctx, `UPDATE tuf_files SET data = $1, updated_at = $2 WHERE tenant_id = $3 AND name = $4`,
			f.Data, utc(at), s.t.id, f.Name)
		if err != nil {
			return err
		}
		switch err := affected(r); {
		case err == nil:
			return nil
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
	} else {
		cur, err := s.Get(ctx, f.Name)
		switch {
		case err == nil && bytes.Equal(cur, f.Data):
			return nil // published before, byte for byte
		case err == nil:
			return fmt.Errorf("tuf file %s is immutable: %w", f.Name, store.ErrConflict)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
	}
	_, err := s.t.tx.exec(ctx, `INSERT INTO tuf_files (tenant_id, name, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)`,
		s.t.id, f.Name, f.Data, utc(at), utc(at))
	return err
}

func (s tufFiles) Get(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := s.t.tx.queryRow(ctx, `SELECT data FROM tuf_files WHERE tenant_id = $1 AND name = $2`, s.t.id, name).Scan(&data)
	return data, oneRow(err)
}

func (s tufFiles) All(ctx context.Context) ([]store.File, error) {
	return queryList(ctx, s.t.tx, func(row interface{ Scan(...any) error }) (store.File, error) {
		var f store.File
		err := row.Scan(&f.Name, &f.Data)
		return f, err
	}, `SELECT name, data FROM tuf_files WHERE tenant_id = $1 ORDER BY name`, s.t.id)
}

func (s tufFiles) Created(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.t.tx.query(ctx, `SELECT name, created_at FROM tuf_files WHERE tenant_id = $1`, s.t.id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var name string
		var at time.Time
		if err := rows.Scan(&name, &at); err != nil {
			return nil, err
		}
		out[name] = utc(at)
	}
	return out, rows.Err()
}

type platformRoots struct{ t *tx }

func (s platformRoots) Append(ctx context.Context, version int64, data []byte, at time.Time) error {
	if len(data) == 0 || len(data) > store.MaxTUFFileBytes {
		return fmt.Errorf("root version %d: empty or larger than %d bytes", version, store.MaxTUFFileBytes)
	}
	var last int64
	if err := s.t.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM platform_roots`).Scan(&last); err != nil {
		return err
	}
	if version != last+1 {
		return fmt.Errorf("root version %d after %d: %w", version, last, store.ErrConflict)
	}
	_, err := s.t.exec(ctx, `INSERT INTO platform_roots (version, data, created_at) VALUES ($1, $2, $3)`, version, data, utc(at))
	return err
}

func (s platformRoots) List(ctx context.Context) ([][]byte, error) {
	return queryList(ctx, s.t, func(row interface{ Scan(...any) error }) ([]byte, error) {
		var b []byte
		err := row.Scan(&b)
		return b, err
	}, `SELECT data FROM platform_roots ORDER BY version`)
}
