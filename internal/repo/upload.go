package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Uploads are bounded three ways (issue 10, defect 3): each is read as an image package
// while it streams, so bytes that cannot become an image are refused before they are
// stored; a tenant's uploads together stay within its storage quota; and what no image
// refers to is collected after BlobGrace (GC).
//
// Why parse rather than bind an upload to an image: the package is self-describing (its
// header and manifest come first and declare the payload's length and SHA-256), so the
// server learns what an upload is, and how long it will be, from its first bytes, and
// refuses random data at byte 0 and an oversized package before its payload, with no extra
// round trip or state for the client. A binding (upload only a target that a signed
// apps.json already names) would need the signature before the bytes, which turns the
// publish flow around. The payload is hashed and its length checked, not decompressed:
// a well-formed envelope around junk costs its owner quota until GC removes it, and
// devices check the payload again before installing (rule 2).

// DefaultStorageQuotaBytes is a tenant's storage quota unless the platform operator set
// one for it; SetDefaultStorageQuota changes the default.
const DefaultStorageQuotaBytes int64 = 10 << 30

// Errors of uploads.
var (
	// ErrNotImage: the upload is not a well-formed image package (it wraps the image
	// package's error: image.ErrBadMagic, image.ErrNotCanonical, ...). Nothing was stored.
	ErrNotImage = errors.New("the upload is not an image package")
	// ErrWrongKind: an OS package uploaded by a tenant, or an app package by the platform.
	ErrWrongKind = errors.New("the image package is not of the kind this upload takes")
	// ErrQuotaExceeded: storing the upload would take the tenant past its storage quota
	// (a *QuotaError says by how much). Nothing was stored.
	ErrQuotaExceeded = errors.New("storage quota exceeded")
	// ErrCollected: garbage collection removed the content while it was being uploaded;
	// uploading again stores it.
	ErrCollected = errors.New("the blob was collected while it was uploaded")
)

// QuotaError is ErrQuotaExceeded with the figures.
type QuotaError struct {
	QuotaBytes, UsedBytes int64
	// SizeBytes is the upload's size, or -1 when it was refused before its size was known.
	SizeBytes int64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("an upload of %d bytes with %d of %d bytes used: %v", e.SizeBytes, e.UsedBytes, e.QuotaBytes, ErrQuotaExceeded)
}

func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// Upload is one streamed upload of an image package.
type Upload struct {
	Body io.Reader
	// Size is the declared length (Content-Length), or -1 when unknown. A declared size past
	// a limit is refused before anything is read.
	Size int64
	// MaxBytes bounds one package.
	MaxBytes int64
}

// SetDefaultStorageQuota sets the quota of tenants for which the operator set none. Call it
// before serving.
func (s *Service) SetDefaultStorageQuota(n int64) { s.defaultQuota.Store(n) }

func (s *Service) defaultStorageQuota() int64 {
	if n := s.defaultQuota.Load(); n > 0 {
		return n
	}
	return DefaultStorageQuotaBytes
}

// Storage returns what the tenant's uploads take against its quota.
func (s *Service) Storage(ctx context.Context, t tenant.ID) (tenant.Storage, error) {
	var out tenant.Storage
	err := s.store.InReadTx(ctx, func(tx store.Tx) error {
		var err error
		out, err = s.storage(ctx, tx, t)
		return err
	})
	return out, err
}

func (s *Service) storage(ctx context.Context, tx store.Tx, t tenant.ID) (tenant.Storage, error) {
	ten, err := tx.Tenants().Get(ctx, t)
	if err != nil {
		return tenant.Storage{}, err
	}
	tt, err := tx.ForTenant(t)
	if err != nil {
		return tenant.Storage{}, err
	}
	u, err := tt.Blobs().Usage(ctx)
	if err != nil {
		return tenant.Storage{}, err
	}
	out := tenant.Storage{TenantID: t, QuotaBytes: s.defaultStorageQuota(), QuotaDefault: true, UsedBytes: u.Bytes, Blobs: u.Count}
	if ten.StorageQuotaBytes != nil {
		out.QuotaBytes, out.QuotaDefault = *ten.StorageQuotaBytes, false
	}
	return out, nil
}

// SetStorageQuota sets the tenant's quota (nil: the default) and returns its storage;
// record (nil for none) runs in the same transaction. Lowering a quota below what is
// stored removes nothing: it refuses further uploads.
func (s *Service) SetStorageQuota(ctx context.Context, t tenant.ID, quota *int64, record func(tx store.Tx) error) (tenant.Storage, error) {
	var out tenant.Storage
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Tenants().SetStorageQuota(ctx, t, quota, s.now().UTC()); err != nil {
			return err
		}
		var err error
		if out, err = s.storage(ctx, tx, t); err != nil {
			return err
		}
		if record != nil {
			return record(tx)
		}
		return nil
	})
	return out, err
}

// UploadBlob stores an app image package for the tenant, within its quota, and records it
// as the tenant's, so that its apps.json may name it and its devices fetch it. record (nil
// for none) runs in the transaction that records the blob: its audit event commits with it.
// Bytes that are not an app package, or that would exceed the quota, store nothing.
// Attacked by TestUpload_RejectsRandomBytes, TestUpload_RejectsOverQuota and, through the
// API, TestBlobs_RejectsRandomBytes and TestBlobs_RejectsOverQuota.
func (s *Service) UploadBlob(ctx context.Context, t tenant.ID, u Upload, record func(tt store.TenantTx, info blob.Info) error) (blob.Info, error) {
	st, err := s.Storage(ctx, t)
	if err != nil {
		return blob.Info{}, err
	}
	remaining := max(st.QuotaBytes-st.UsedBytes, 0)
	limit := min(u.MaxBytes, remaining)
	overQuota := func(size int64) error {
		if limit < u.MaxBytes && (size < 0 || size <= u.MaxBytes) {
			return &QuotaError{QuotaBytes: st.QuotaBytes, UsedBytes: st.UsedBytes, SizeBytes: size}
		}
		return nil
	}
	if u.Size > limit {
		if err := overQuota(u.Size); err != nil {
			return blob.Info{}, err
		}
		return blob.Info{}, fmt.Errorf("declared %d bytes, more than %d: %w", u.Size, u.MaxBytes, blob.ErrTooLarge)
	}
	pr := &packageReader{src: u.Body, kind: image.KindApp, limit: limit}
	info, err := s.blobs.Put(ctx, pr, limit)
	if err != nil {
		if errors.Is(err, blob.ErrTooLarge) {
			if qerr := overQuota(pr.declared); qerr != nil {
				return blob.Info{}, qerr
			}
		}
		return blob.Info{}, err
	}
	// Concurrent uploads of the tenant check the quota one after the other.
	err = s.inLockedTenant(ctx, t, func(tx store.Tx, tt store.TenantTx) error {
		st, err := s.storage(ctx, tx, t)
		if err != nil {
			return err
		}
		cur, err := tt.Blobs().Get(ctx, info.Digest.String())
		counted := err == nil && !cur.Platform
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !counted && st.UsedBytes+info.Size > st.QuotaBytes {
			return &QuotaError{QuotaBytes: st.QuotaBytes, UsedBytes: st.UsedBytes, SizeBytes: info.Size}
		}
		if err := tt.Blobs().Add(ctx, info.Digest.String(), info.Size, s.now().UTC()); err != nil {
			return err
		}
		if err := s.stillStored(ctx, info.Digest); err != nil {
			return err
		}
		if record != nil {
			return record(tt, info)
		}
		return nil
	})
	if err != nil {
		return blob.Info{}, errors.Join(err, s.dropIfUnreferenced(ctx, info.Digest))
	}
	return info, nil
}

// UploadPlatformBlob stores an OS image package the platform operator uploads. It becomes a
// tenant's only when a targets.json the OS key signed names it. record (nil for none) runs
// in the transaction that records the blob.
func (s *Service) UploadPlatformBlob(ctx context.Context, u Upload, record func(tx store.Tx, info blob.Info) error) (blob.Info, error) {
	if u.Size > u.MaxBytes {
		return blob.Info{}, fmt.Errorf("declared %d bytes, more than %d: %w", u.Size, u.MaxBytes, blob.ErrTooLarge)
	}
	info, err := s.blobs.Put(ctx, &packageReader{src: u.Body, kind: image.KindOS, limit: u.MaxBytes}, u.MaxBytes)
	if err != nil {
		return blob.Info{}, err
	}
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		if err := tx.PlatformBlobs().Add(ctx, info.Digest.String(), info.Size, s.now().UTC()); err != nil {
			return err
		}
		if err := s.stillStored(ctx, info.Digest); err != nil {
			return err
		}
		if record != nil {
			return record(tx, info)
		}
		return nil
	})
	if err != nil {
		return blob.Info{}, errors.Join(err, s.dropIfUnreferenced(ctx, info.Digest))
	}
	return info, nil
}

// AddBlob is UploadBlob of a body of unknown size, recording nothing else.
func (s *Service) AddBlob(ctx context.Context, t tenant.ID, r io.Reader, maxBytes int64) (blob.Info, error) {
	return s.UploadBlob(ctx, t, Upload{Body: r, Size: -1, MaxBytes: maxBytes}, nil)
}

// AddPlatformBlob is UploadPlatformBlob of a body of unknown size, recording nothing else.
func (s *Service) AddPlatformBlob(ctx context.Context, r io.Reader, maxBytes int64) (blob.Info, error) {
	return s.UploadPlatformBlob(ctx, Upload{Body: r, Size: -1, MaxBytes: maxBytes}, nil)
}

// stillStored checks, after the record holds the file's row (store.BlobFiles), that the
// file is there: a collection that removed it before is over, and none can start until
// this transaction ends.
func (s *Service) stillStored(ctx context.Context, d blob.Digest) error {
	_, err := s.blobs.Stat(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("blob %s: %w", d, ErrCollected)
	}
	return err
}

// dropIfUnreferenced removes a stored file that a refused upload left and nothing else
// refers to, so that a refusal leaves nothing behind.
func (s *Service) dropIfUnreferenced(ctx context.Context, d blob.Digest) error {
	// The refusal may come from a cancelled request: clean up all the same.
	ctx = context.WithoutCancel(ctx)
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		info, err := s.blobs.Stat(ctx, d)
		if errors.Is(err, blob.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := tx.BlobFiles().Hold(ctx, d.String(), info.Size, s.now().UTC()); err != nil {
			return err
		}
		return s.removeIfUnreferenced(ctx, tx, d)
	})
	if err != nil {
		return fmt.Errorf("remove refused upload %s: %w", d, err)
	}
	return nil
}

// removeIfUnreferenced deletes the file and its row when no record names it; the caller
// holds the row.
func (s *Service) removeIfUnreferenced(ctx context.Context, tx store.Tx, d blob.Digest) error {
	n, err := tx.BlobFiles().References(ctx, d.String())
	if err != nil || n > 0 {
		return err
	}
	if err := s.blobs.Delete(ctx, d); err != nil {
		return err
	}
	return tx.BlobFiles().Delete(ctx, d.String())
}

// packageReader passes an upload through while reading it as an image package of one kind:
// the header and manifest first (image.Open, strict), then the payload, whose last Read
// returns io.EOF only when its length and SHA-256 match the manifest and nothing follows.
// Any other ending is a read error, so the blob store keeps nothing (blob.Store contract).
type packageReader struct {
	src   io.Reader
	kind  image.Kind
	limit int64
	// declared is the whole package's size as its header and manifest declare it (-1 until
	// they are read).
	declared int64
	head     bytes.Buffer // header and manifest, handed on before the payload
	payload  io.Reader
	err      error
}

func (p *packageReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.payload == nil {
		p.declared = -1
		if err := p.open(); err != nil {
			p.err = err
			return 0, err
		}
	}
	if p.head.Len() > 0 {
		return p.head.Read(b)
	}
	n, err := p.payload.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		p.err = imageError(err)
		return n, p.err
	}
	return n, err
}

func (p *packageReader) open() error {
	tee := &switchTee{r: p.src, w: &p.head, on: true}
	r, err := image.Open(tee)
	if err != nil {
		return imageError(err)
	}
	tee.on = false // the payload streams through, never into memory
	m := r.Manifest()
	if m.Kind != p.kind {
		return fmt.Errorf("%w: an %s package; this upload takes %s packages", ErrWrongKind, m.Kind, p.kind)
	}
	p.declared = int64(p.head.Len()) + m.Payload.Length
	if p.declared > p.limit {
		return fmt.Errorf("the package declares %d bytes, more than %d: %w", p.declared, p.limit, blob.ErrTooLarge)
	}
	p.payload = r.Payload()
	return nil
}

// imageErrors are the image package's sentinels for what is wrong with a package.
var imageErrors = []error{
	image.ErrBadMagic, image.ErrUnsupportedVersion, image.ErrTruncated, image.ErrTrailingData,
	image.ErrPayloadMismatch, image.ErrNotCanonical, image.ErrInvalidManifest, image.ErrTooLarge, image.ErrUnsafePath,
}

// imageError marks an error of the package's content as ErrNotImage; a failing body (a
// dropped connection, say) stays what it is.
func imageError(err error) error {
	for _, e := range imageErrors {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", ErrNotImage, err)
		}
	}
	return err
}

// switchTee copies what it reads into w while on.
type switchTee struct {
	r  io.Reader
	w  *bytes.Buffer
	on bool
}

func (t *switchTee) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	if t.on && n > 0 {
		t.w.Write(b[:n])
	}
	return n, err
}
