package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// BlobGrace is how long garbage collection keeps a blob that nothing names: from its
// upload (so that a publish may follow), and from the moment the metadata that named it
// was superseded (so that a device that fetched that metadata can still download it).
const BlobGrace = 24 * time.Hour

// gcPage is how many records GC reads per query.
const gcPage = 500

// GC removes the blobs that no image refers to any more, and returns how many files it
// removed and their bytes. Meant to run as a background job on one replica at a time; a
// second concurrent run is safe but wasted.
//
// A blob is referenced while a tenant's stored TUF metadata names it: the current
// apps.json and targets.json (OS packages the platform published for the tenant), and any
// earlier version superseded less than BlobGrace before now. A tenant's record of a blob
// that nothing references and that was uploaded more than BlobGrace ago is deleted; so is
// the platform's record of an OS package that no tenant's metadata names. A file goes when
// no record of any tenant or the platform names it: content shared by several tenants
// stays while one of them refers to it. Uploads, publishes and collection of one tenant
// take the tenant's blob lock, and recording and removing one file take its row
// (store.BlobFiles), so a publish never names a removed blob.
// Attacked by TestGC_RemovesUnpublished and TestGC_KeepsPublished.
func (s *Service) GC(ctx context.Context, now time.Time) (removed int, bytes int64, err error) {
	cutoff := now.Add(-BlobGrace)
	named := map[string]bool{} // digests any tenant's metadata names
	var tenants []tenant.ID
	err = s.store.InReadTx(ctx, func(tx store.Tx) error {
		page := store.Page{Limit: gcPage}
		for {
			ts, err := tx.Tenants().List(ctx, page)
			if err != nil {
				return err
			}
			for _, t := range ts {
				tenants = append(tenants, t.ID)
			}
			if len(ts) < page.Limit {
				return nil
			}
			page.After = string(ts[len(ts)-1].ID)
		}
	})
	if err != nil {
		return 0, 0, fmt.Errorf("collect blobs: list tenants: %w", err)
	}
	var errs []error
	for _, t := range tenants {
		if err := s.gcTenant(ctx, t, cutoff, named); err != nil {
			errs = append(errs, fmt.Errorf("collect blobs of tenant %s: %w", t, err))
		}
	}
	if len(errs) > 0 {
		// Without every tenant's references, no platform record or file may go.
		return 0, 0, errors.Join(errs...)
	}
	if err := s.gcPlatform(ctx, cutoff, named); err != nil {
		return 0, 0, fmt.Errorf("collect platform blobs: %w", err)
	}
	removed, bytes, err = s.gcFiles(ctx, cutoff)
	if err != nil {
		return removed, bytes, fmt.Errorf("collect blob files: %w", err)
	}
	return removed, bytes, nil
}

// gcTenant deletes the tenant's records that its metadata does not name and that are older
// than cutoff, and adds what its metadata names to named.
func (s *Service) gcTenant(ctx context.Context, t tenant.ID, cutoff time.Time, named map[string]bool) error {
	return s.inLockedTenant(ctx, t, func(_ store.Tx, tt store.TenantTx) error {
		refs, err := s.referenced(ctx, tt, cutoff)
		if err != nil {
			return err
		}
		for d := range refs {
			named[d] = true
		}
		var stale []string
		page := store.Page{Limit: gcPage}
		for {
			bs, err := tt.Blobs().List(ctx, page)
			if err != nil {
				return err
			}
			for _, b := range bs {
				if !refs[b.Digest] && b.At.Before(cutoff) {
					stale = append(stale, b.Digest)
				}
			}
			if len(bs) < page.Limit {
				break
			}
			page.After = bs[len(bs)-1].Digest
		}
		for _, d := range stale {
			if err := tt.Blobs().Delete(ctx, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// referenced returns the digests the tenant's metadata names: the current apps.json and
// targets.json, and versions superseded after cutoff.
func (s *Service) referenced(ctx context.Context, tt store.TenantTx, cutoff time.Time) (map[string]bool, error) {
	files, err := tt.TUFFiles().All(ctx)
	if err != nil {
		return nil, err
	}
	created, err := tt.TUFFiles().Created(ctx)
	if err != nil {
		return nil, err
	}
	type version struct {
		n    int64
		name string
		data []byte
	}
	roles := map[string][]version{}
	for _, f := range files {
		for _, suffix := range []string{".apps.json", ".targets.json"} {
			if n, ok := fileVersion(f.Name, suffix); ok {
				roles[suffix] = append(roles[suffix], version{n, f.Name, f.Data})
			}
		}
	}
	out := map[string]bool{}
	for _, vs := range roles {
		sort.Slice(vs, func(i, j int) bool { return vs[i].n < vs[j].n })
		for i, v := range vs {
			// Kept: the current version, and one whose successor came after cutoff.
			if i < len(vs)-1 && !created[vs[i+1].name].After(cutoff) {
				continue
			}
			meta, err := parseTargets(v.data)
			if err != nil {
				return nil, fmt.Errorf("stored %s: %w", v.name, err)
			}
			for path, tf := range meta.Signed.Targets {
				h, ok := tf.Hashes["sha256"]
				if !ok {
					continue
				}
				d, err := blob.ParseDigest(h.String())
				if err != nil {
					return nil, fmt.Errorf("stored %s: target %s: %w", v.name, path, err)
				}
				out[d.String()] = true
			}
		}
	}
	return out, nil
}

// gcPlatform deletes the platform's records of OS packages that no tenant's metadata names
// and that were uploaded before cutoff.
func (s *Service) gcPlatform(ctx context.Context, cutoff time.Time, named map[string]bool) error {
	var stale []string
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		page := store.Page{Limit: gcPage}
		for {
			bs, err := tx.PlatformBlobs().List(ctx, page)
			if err != nil {
				return err
			}
			for _, b := range bs {
				if !named[b.Digest] && b.At.Before(cutoff) {
					stale = append(stale, b.Digest)
				}
			}
			if len(bs) < page.Limit {
				return nil
			}
			page.After = bs[len(bs)-1].Digest
		}
	})
	if err != nil {
		return err
	}
	for _, d := range stale {
		err := s.store.InTx(ctx, func(tx store.Tx) error {
			err := tx.PlatformBlobs().Delete(ctx, d)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// gcFiles removes the files that no record names, each under its row.
func (s *Service) gcFiles(ctx context.Context, cutoff time.Time) (removed int, bytes int64, err error) {
	page := store.Page{Limit: gcPage}
	for {
		var cands []store.BlobRecord
		err := s.store.InReadTx(ctx, func(tx store.Tx) error {
			var err error
			cands, err = tx.BlobFiles().Unreferenced(ctx, cutoff, page)
			return err
		})
		if err != nil {
			return removed, bytes, err
		}
		for _, c := range cands {
			d, err := blob.ParseDigest(c.Digest)
			if err != nil {
				return removed, bytes, err
			}
			gone := false
			err = s.store.InTx(ctx, func(tx store.Tx) error {
				rec, err := tx.BlobFiles().Lock(ctx, c.Digest)
				if errors.Is(err, store.ErrNotFound) || err == nil && !rec.At.Before(cutoff) {
					return nil // removed meanwhile, or uploaded again: a new grace period
				}
				if err != nil {
					return err
				}
				n, err := tx.BlobFiles().References(ctx, c.Digest)
				if err != nil || n > 0 {
					return err
				}
				gone = true
				return s.removeIfUnreferenced(ctx, tx, d)
			})
			if err != nil {
				return removed, bytes, err
			}
			if gone {
				removed++
				bytes += c.Size
			}
		}
		if len(cands) < page.Limit {
			return removed, bytes, nil
		}
		page.After = cands[len(cands)-1].Digest
	}
}
