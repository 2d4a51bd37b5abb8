// Package fsblob is the blob.Store on a local filesystem, moat's embedded default (DESIGN,
// Storage and scale).
//
// Layout under the store's directory:
//
//	sha256/<first 2 hex>/<64 hex>   stored blobs, mode 0440, never modified (directories 0750)
//	tmp/                            uploads in progress (mode 0700)
//
// What it enforces: a blob appears under its digest only complete and verified. Put writes
// to a temporary file while hashing, syncs it, renames it into place and syncs the
// directory, so a crash at any moment leaves either the whole blob or only a temporary
// file, which the next Open removes (TestOpen_RemovesLeftoverTemp). Content over the limit,
// a failing reader and a cancelled context store nothing (blobtest). It trusts the
// filesystem to keep what was synced; Verify rehashes a blob to find out whether it did.
//
// A *Store is safe for concurrent use: two Puts of the same content both succeed and leave
// one file. One directory must have one Store: Open removes the temporary files of every
// earlier user of the directory, and a Put whose temporary file was removed that way fails
// (it never stores a partial blob).
package fsblob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/moat-iot/moat/internal/blob"
)

// Store keeps blobs in a directory. Create it with Open.
type Store struct {
	dir string
}

var _ blob.Store = (*Store)(nil)

const (
	blobsDir = "sha256"
	tempDir  = "tmp"
	blobMode = 0o440
)

// Open returns the store in dir, creating the directory and its layout if needed, and
// removes temporary files left by a crash.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir}
	if err := s.init(); err != nil {
		return nil, fmt.Errorf("open blob store %s: %w", dir, err)
	}
	return s, nil
}

func (s *Store) init() error {
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, tempDir)
	// Whatever is in tmp belongs to a Put that did not finish: never a blob.
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove leftover temporary files: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	// All 256 shard directories exist from here on, so a Put need sync only the one
	// directory it renames into.
	root := filepath.Join(s.dir, blobsDir)
	if err := os.MkdirAll(root, 0o750); err != nil {
		return err
	}
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprintf("%02x", i)), 0o750); err != nil {
			return err
		}
	}
	for _, d := range []string{root, s.dir} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// path is where blob d lives.
func (s *Store) path(d blob.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, blobsDir, h[:2], h)
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, r io.Reader, maxBytes int64) (blob.Info, error) {
	info, err := s.put(ctx, r, maxBytes)
	if err != nil {
		return blob.Info{}, fmt.Errorf("store blob: %w", err)
	}
	return info, nil
}

func (s *Store) put(ctx context.Context, r io.Reader, maxBytes int64) (info blob.Info, err error) {
	if maxBytes < 0 {
		return blob.Info{}, fmt.Errorf("negative size limit %d", maxBytes)
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, tempDir), "put-*")
	if err != nil {
		return blob.Info{}, err
	}
	name, closed := tmp.Name(), false
	defer func() {
		if !closed {
			tmp.Close()
		}
		if err != nil {
			os.Remove(name)
		}
	}()

	limit := maxBytes
	if limit < math.MaxInt64 {
		limit++ // one byte more than allowed tells "too large" from "exactly the limit"
	}
	h := sha256.New()
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, r}, limit), buf)
	if err != nil {
		return blob.Info{}, err
	}
	if n > maxBytes {
		return blob.Info{}, fmt.Errorf("more than %d bytes: %w", maxBytes, blob.ErrTooLarge)
	}
	info = blob.Info{Digest: blob.Digest(h.Sum(nil)), Size: n}

	// Read-only before it is visible under its name; synced before it is renamed, so the
	// name never points at data that is not on disk.
	if err := tmp.Chmod(blobMode); err != nil {
		return blob.Info{}, err
	}
	if err := tmp.Sync(); err != nil {
		return blob.Info{}, err
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return blob.Info{}, err
	}
	final := s.path(info.Digest)
	if _, err := os.Lstat(final); err == nil {
		// Content-addressed: the blob is already here, byte for byte.
		os.Remove(name)
		return info, nil
	}
	if err := os.Rename(name, final); err != nil {
		return blob.Info{}, err
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return blob.Info{}, err
	}
	return info, nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Lstat(s.path(d))
	if err != nil {
		return blob.Info{}, notFound(d, err)
	}
	if !fi.Mode().IsRegular() {
		return blob.Info{}, fmt.Errorf("stat blob %s: not a regular file", d)
	}
	return blob.Info{Digest: d, Size: fi.Size()}, nil
}

// Open implements blob.Store. The file is the stored blob itself, opened read-only.
func (s *Store) Open(ctx context.Context, d blob.Digest) (blob.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(d))
	if err != nil {
		return nil, notFound(d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open blob %s: not a regular file", d)
	}
	return &file{File: f, info: blob.Info{Digest: d, Size: fi.Size()}}, nil
}

// Delete implements blob.Store. A reader that has the blob open keeps reading it (the
// file goes when the last handle closes); the directory is synced so that the removal
// survives a crash.
func (s *Store) Delete(ctx context.Context, d blob.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.path(d)
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// Verify rehashes stored blob d and returns an error wrapping blob.ErrDigestMismatch when
// its bytes no longer hash to d (on-disk corruption). It repairs nothing: it reports.
func (s *Store) Verify(ctx context.Context, d blob.Digest) error {
	f, err := s.Open(ctx, d)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("verify blob %s: %w", d, err)
	}
	if got := blob.Digest(h.Sum(nil)); got != d {
		return fmt.Errorf("verify blob %s: content hashes to %s: %w", d, got, blob.ErrDigestMismatch)
	}
	return nil
}

type file struct {
	*os.File
	info blob.Info
}

func (f *file) Info() blob.Info { return f.info }

func notFound(d blob.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", d, blob.ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", d, err)
}

// ctxReader stops a copy between reads once ctx is done. A Read that blocks is the
// reader's own to end (a request body ends with its request).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
