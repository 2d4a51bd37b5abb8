// Package blob is moat's content-addressed blob storage as its consumers see it: the Digest
// type, the small Store interface that fsblob (and later an S3 store) implement, a verifying
// upload (PutExpect), an HTTP handler that serves blobs so that any HTTP cache or CDN can
// hold them (Serve), and the resuming, bounded download a device uses (Fetch).
//
// What it trusts and enforces:
//
//   - A blob is named by the SHA-256 of its bytes and never changes (DESIGN, Storage and
//     scale). Stores hash while streaming and never hold a blob in memory (STYLE, Storage).
//   - Nothing is trusted to be the size or content it claims. Put stops reading at
//     maxBytes+1 and stores nothing past the limit (ErrTooLarge); PutExpect and Fetch read
//     at most the expected size plus one byte and store nothing that does not hash to the
//     expected digest (ErrDigestMismatch). This is the "endless data" and "arbitrary
//     software" defence of rule 2, attacked by TestFetch_RejectsEndlessData,
//     TestFetch_RejectsWrongContent and blobtest's PutExpect cases; bad input changes
//     nothing (rule 5).
//   - Fetch bounds time as well as bytes: a server that sends nothing for
//     FetchOptions.StallTimeout, or does not finish within FetchOptions.Timeout, is cut
//     off ("slow retrieval", rule 2; attacked by TestFetch_SlowRetrievalTiming and
//     TestFetch_RejectsStalledServer).
//   - Serve does no authorization. Knowing a digest is not authority to read it: the caller
//     decides which tenant or device may fetch which digest (rule 3) before calling Serve.
//
// Concurrency: Digest and Info are values. Every Store implementation is safe for
// concurrent use, including concurrent Puts of the same content. Serve and Fetch keep no
// state between calls; two Fetches must not share a destination file.
package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

var (
	// ErrNotFound: no blob with this digest is stored (or the server has none).
	ErrNotFound = errors.New("blob not found")
	// ErrTooLarge: the content is longer than the limit or the expected size. Nothing was
	// stored.
	ErrTooLarge = errors.New("blob too large")
	// ErrDigestMismatch: the content does not have the expected digest or size. Nothing was
	// stored (or, from a store's Verify, the stored bytes were corrupted).
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrInvalidDigest: a digest string is not "sha256:" and 64 lower-case hex digits.
	ErrInvalidDigest = errors.New("invalid blob digest")
)

// Info describes a stored blob.
type Info struct {
	Digest Digest
	Size   int64
}

// File is an open stored blob. Reading it yields exactly Info().Size bytes.
type File interface {
	io.ReadSeekCloser
	Info() Info
}

// Store is what moat needs of blob storage.
//
// Put streams r into the store while hashing it and returns the blob's digest and size. It
// reads at most maxBytes+1 bytes of r: longer content is ErrTooLarge. A read error from r,
// a cancelled ctx or content over the limit store nothing. Storing content that is already
// stored succeeds and changes nothing. Stat and Open report ErrNotFound for an unknown
// digest. Delete removes a blob; an unknown digest is no error, so a garbage collector
// that stopped half-way can run again. Whether a blob may be deleted (nothing refers to it)
// is the caller's to decide. Implementations are safe for concurrent use.
type Store interface {
	Put(ctx context.Context, r io.Reader, maxBytes int64) (Info, error)
	Stat(ctx context.Context, d Digest) (Info, error)
	Open(ctx context.Context, d Digest) (File, error)
	Delete(ctx context.Context, d Digest) error
}

// PutExpect stores the content of r only if it is exactly wantSize bytes that hash to want.
// It reads at most wantSize+1 bytes of r, so an endless stream is cut off. Content longer
// than wantSize is ErrTooLarge; shorter, or of another digest, is ErrDigestMismatch. Either
// way nothing is stored.
func PutExpect(ctx context.Context, s Store, r io.Reader, want Digest, wantSize int64) (Info, error) {
	if wantSize < 0 {
		return Info{}, fmt.Errorf("put blob %s: negative size %d", want, wantSize)
	}
	// The verifying reader fails the last Read instead of returning io.EOF, so the store
	// sees a read error and, by the Store contract, keeps nothing.
	info, err := s.Put(ctx, VerifyingReader(r, want, wantSize), wantSize)
	if err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", want, err)
	}
	if info.Digest != want || info.Size != wantSize {
		// Unreachable with a store that keeps its contract; say so rather than pass it on.
		return Info{}, fmt.Errorf("put blob %s: store returned %s (%d bytes): %w", want, info.Digest, info.Size, ErrDigestMismatch)
	}
	return info, nil
}

// VerifyingReader returns a reader that yields r's content as long as it can still be the
// size bytes that hash to want. It reads at most size+1 bytes of r. In place of io.EOF its
// last Read returns ErrDigestMismatch when the content is shorter than size or hashes to
// another digest; it returns ErrTooLarge as soon as the content is longer than size. Only a
// reader that reaches io.EOF has been verified: a consumer must treat any other error as
// "not verified".
func VerifyingReader(r io.Reader, want Digest, size int64) io.Reader {
	return &verifyingReader{r: r, want: want, size: size, h: sha256.New()}
}

type verifyingReader struct {
	r    io.Reader
	want Digest
	size int64
	h    hash.Hash
	n    int64
	err  error // sticky verdict
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	// One byte past size is enough to know the content is too long.
	if left := v.size + 1 - v.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	switch {
	case v.n > v.size:
		v.err = fmt.Errorf("content of %s is longer than %d bytes: %w", v.want, v.size, ErrTooLarge)
		// Hand back only the bytes within size: the caller never sees the extra one.
		return n - int(v.n-v.size), v.err
	case err == io.EOF:
		if v.n != v.size {
			v.err = fmt.Errorf("content of %s is %d bytes, want %d: %w", v.want, v.n, v.size, ErrDigestMismatch)
		} else if got := Digest(v.h.Sum(nil)); got != v.want {
			v.err = fmt.Errorf("content is %s, want %s: %w", got, v.want, ErrDigestMismatch)
		} else {
			v.err = io.EOF
		}
		return n, v.err
	}
	return n, err
}
