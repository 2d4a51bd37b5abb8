// Package s3blob is a blob.Store in S3-compatible object storage (AWS S3, MinIO, versitygw,
// Ceph RGW), through the minio-go client, so that several `moat server` replicas share one
// set of image blobs (DESIGN, Storage and scale).
//
// Layout: a blob lives under PREFIX + "sha256/" + its hex digest (content-addressed, never
// rewritten, so any HTTP cache or CDN may hold it); uploads in progress live under
// PREFIX + "tmp/" + a random name. Operators should give the bucket a lifecycle rule that
// expires PREFIX/tmp/ objects and incomplete multipart uploads after a day: a replica
// killed in the middle of an upload leaves one behind.
//
// What it trusts and enforces:
//
//   - The object store holds what it is given (S3 checks each request's payload checksum);
//     it is trusted with availability, not with deciding what a blob is.
//   - Nothing is visible under a blob's final key before its bytes were hashed and their
//     size checked against the limit (blob.Store contract, DESIGN rules 2 and 5). Content
//     of up to PartSizeBytes is read into memory, hashed, and PUT under its final key in one
//     request. Longer content streams into a temporary key by multipart upload while it is
//     hashed; only when the stream ended cleanly (the verifying reader of blob.PutExpect
//     fails its last read on a wrong digest, and a failed read aborts the upload) and the
//     size is within the limit is the temporary object copied server-side to its final key
//     (conditional on the ETag of what was uploaded) and the temporary key removed. Attacked
//     by blobtest's TooLargeStoresNothing, FailingReaderStoresNothing,
//     CancelledContextStoresNothing and PutExpect_Rejects* cases, run here against a real
//     S3 server with content on both sides of PartSizeBytes (TestS3_LargeBlobs).
//   - Memory per Put is bounded by two part buffers (ours and minio-go's), never the blob.
//   - Reads are ranged GETs pinned to the ETag seen at Open, so a resumed download reads
//     the same object it started on, and Seek costs no request.
//
// Concurrency: a Store is safe for concurrent use; concurrent Puts of the same content
// both succeed (the second PUT or copy writes identical bytes). A File is used by one
// goroutine.
package s3blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/moat-iot/moat/internal/blob"
)

const (
	// DefaultPartSizeBytes is the multipart part size, and the largest blob put in one PUT.
	DefaultPartSizeBytes = 16 << 20
	minPartSizeBytes     = 5 << 20 // S3's minimum part size
	maxPartSizeBytes     = 512 << 20
	// cleanupTimeout bounds the removal of a temporary object after a failed or cancelled
	// Put (which runs without the caller's context: that may be what was cancelled).
	cleanupTimeout = 30 * time.Second
)

// Config locates the bucket. Endpoint, Bucket, AccessKey and SecretKey are required.
type Config struct {
	// Endpoint is the S3 server's URL: https://host[:port], or http://host:port on a
	// loopback address only (credentials are signed, not sent, but blob traffic is clear).
	Endpoint string
	Bucket   string
	// Region is the bucket's region; empty is us-east-1.
	Region string
	// Prefix is put before every key ("moat/"); empty or ending in "/".
	Prefix    string
	AccessKey string
	SecretKey Secret
	// RootCAs verifies the endpoint's TLS certificate; nil is the system pool.
	RootCAs *x509.CertPool
	// PartSizeBytes is the multipart part size; 0 is DefaultPartSizeBytes.
	PartSizeBytes int64
}

// Secret is a secret access key; it redacts itself when printed or logged.
type Secret string

func (Secret) String() string { return "REDACTED" }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := c.endpoint(); err != nil {
		errs = append(errs, err)
	}
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		errs = append(errs, fmt.Errorf("bucket %q: %w", c.Bucket, err))
	}
	if c.Prefix != "" && (!strings.HasSuffix(c.Prefix, "/") || strings.HasPrefix(c.Prefix, "/") ||
		strings.Contains(c.Prefix, "//") || strings.Contains(c.Prefix, "..") || len(c.Prefix) > 256) {
		errs = append(errs, fmt.Errorf("prefix %q: must be empty or a relative path ending in /", c.Prefix))
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		errs = append(errs, errors.New("access key and secret key are required"))
	}
	if p := c.PartSizeBytes; p != 0 && (p < minPartSizeBytes || p > maxPartSizeBytes) {
		errs = append(errs, fmt.Errorf("part size %d bytes: must be between %d and %d", p, minPartSizeBytes, maxPartSizeBytes))
	}
	return errors.Join(errs...)
}

// endpoint splits Endpoint into minio-go's host[:port] and secure flag.
func (c Config) endpoint() (host string, secure bool, err error) {
	u, err := url.Parse(c.Endpoint)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("endpoint %q: want https://host[:port]", c.Endpoint)
	}
	switch u.Scheme {
	case "https":
		return u.Host, true, nil
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", false, fmt.Errorf("endpoint %q: http is allowed on a loopback address only; use https", c.Endpoint)
		}
		return u.Host, false, nil
	}
	return "", false, fmt.Errorf("endpoint %q: want https://host[:port]", c.Endpoint)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Store is a blob.Store in an S3 bucket.
type Store struct {
	c        *minio.Client
	bucket   string
	prefix   string
	partSize int64
}

var _ blob.Store = (*Store)(nil)

// Open connects to the bucket and checks that it exists and the credentials reach it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	host, secure, _ := cfg.endpoint()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
	tr.ResponseHeaderTimeout = time.Minute
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, string(cfg.SecretKey), ""),
		Secure:       secure,
		Transport:    tr,
		Region:       region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 blob store: bucket %s does not exist at %s", cfg.Bucket, cfg.Endpoint)
	}
	part := cfg.PartSizeBytes
	if part == 0 {
		part = DefaultPartSizeBytes
	}
	return &Store{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix, partSize: part}, nil
}

func (s *Store) key(d blob.Digest) string { return s.prefix + "sha256/" + d.Hex() }

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, r io.Reader, maxBytes int64) (blob.Info, error) {
	if maxBytes < 0 {
		return blob.Info{}, fmt.Errorf("put blob: negative limit %d", maxBytes)
	}
	hr := &hashingReader{ctx: ctx, r: r, h: sha256.New(), max: maxBytes}
	// Up to one part is read first: content that ends within it goes up in one PUT under
	// its final key, its digest known before the request.
	var head bytes.Buffer
	if _, err := io.CopyN(&head, hr, s.partSize); err != nil && !errors.Is(err, io.EOF) {
		return blob.Info{}, fmt.Errorf("put blob: %w", err)
	}
	if hr.eof {
		info := hr.info()
		if err := s.putSmall(ctx, info, head.Bytes()); err != nil {
			return blob.Info{}, fmt.Errorf("put blob %s: %w", info.Digest, err)
		}
		return info, nil
	}
	info, err := s.putLarge(ctx, io.MultiReader(&head, hr), hr)
	if err != nil {
		return blob.Info{}, fmt.Errorf("put blob: %w", err)
	}
	return info, nil
}

func (s *Store) putSmall(ctx context.Context, info blob.Info, b []byte) error {
	if _, err := s.Stat(ctx, info.Digest); err == nil {
		return nil // stored already: content-addressed, so identical
	}
	_, err := s.c.PutObject(ctx, s.bucket, s.key(info.Digest), bytes.NewReader(b), info.Size,
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	return err
}

// putLarge streams r to a temporary key, then, once hr has verified the whole stream,
// copies it to its final key. Nothing reaches the final key from a failed stream.
func (s *Store) putLarge(ctx context.Context, r io.Reader, hr *hashingReader) (info blob.Info, err error) {
	tmp := s.prefix + "tmp/" + rand.Text()
	defer func() {
		// Whatever happened, the temporary object goes (a failed multipart upload was
		// aborted by minio-go already; this removes a completed one).
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if rerr := s.c.RemoveObject(cctx, s.bucket, tmp, minio.RemoveObjectOptions{}); rerr != nil && err == nil && !isNotFound(rerr) {
			err = fmt.Errorf("remove temporary object: %w", rerr)
		}
	}()
	up, err := s.c.PutObject(ctx, s.bucket, tmp, r, -1, minio.PutObjectOptions{
		ContentType: "application/octet-stream", PartSize: uint64(s.partSize)}) //nolint:gosec // G115: Validate keeps it within 5 MiB..512 MiB
	if err != nil {
		return blob.Info{}, hr.cause(err)
	}
	if !hr.eof {
		// Unreachable: minio-go completes an upload only after its reader's io.EOF.
		return blob.Info{}, errors.New("upload completed before the end of its content")
	}
	info = hr.info()
	if up.Size != info.Size {
		return blob.Info{}, fmt.Errorf("object store took %d bytes of %d", up.Size, info.Size)
	}
	if _, err := s.Stat(ctx, info.Digest); err == nil {
		return info, nil
	}
	_, err = s.c.ComposeObject(ctx,
		minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(info.Digest), ReplaceMetadata: true,
			UserMetadata: map[string]string{"Content-Type": "application/octet-stream"}},
		minio.CopySrcOptions{Bucket: s.bucket, Object: tmp, MatchETag: up.ETag})
	if err != nil {
		return blob.Info{}, fmt.Errorf("copy %s to its final key: %w", info.Digest, err)
	}
	return info, nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	oi, err := s.c.StatObject(ctx, s.bucket, s.key(d), minio.StatObjectOptions{})
	if err != nil {
		return blob.Info{}, notFound(d, err)
	}
	return blob.Info{Digest: d, Size: oi.Size}, nil
}

// Open implements blob.Store. The File reads by ranged GETs, from the first Read after
// each Seek, each pinned to the ETag seen here.
func (s *Store) Open(ctx context.Context, d blob.Digest) (blob.File, error) {
	oi, err := s.c.StatObject(ctx, s.bucket, s.key(d), minio.StatObjectOptions{})
	if err != nil {
		return nil, notFound(d, err)
	}
	return &file{ctx: ctx, s: s, key: s.key(d), etag: oi.ETag, info: blob.Info{Digest: d, Size: oi.Size}}, nil
}

// Delete implements blob.Store. A delete of an absent key is no error in S3.
func (s *Store) Delete(ctx context.Context, d blob.Digest) error {
	if err := s.c.RemoveObject(ctx, s.bucket, s.key(d), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// Verify rehashes stored blob d and returns an error wrapping blob.ErrDigestMismatch when
// its bytes no longer hash to d. It repairs nothing: it reports.
func (s *Store) Verify(ctx context.Context, d blob.Digest) error {
	f, err := s.Open(ctx, d)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("verify blob %s: %w", d, err)
	}
	if got := blob.Digest(h.Sum(nil)); got != d {
		return fmt.Errorf("verify blob %s: content hashes to %s: %w", d, got, blob.ErrDigestMismatch)
	}
	return nil
}

// hashingReader hashes and counts what it yields, stops at max+1 bytes with
// blob.ErrTooLarge, and stops once ctx is done. It never returns io.EOF early: eof is set
// only when the underlying reader ended within the limit.
type hashingReader struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	max int64
	n   int64
	eof bool
	err error // the first error it returned other than io.EOF
}

func (h *hashingReader) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	if err := h.ctx.Err(); err != nil {
		h.err = err
		return 0, err
	}
	if left := h.max + 1 - h.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	switch {
	case h.n > h.max:
		h.err = fmt.Errorf("content is longer than %d bytes: %w", h.max, blob.ErrTooLarge)
		return n - int(h.n-h.max), h.err
	case errors.Is(err, io.EOF):
		if err := h.ctx.Err(); err != nil { // cancelled while the last read ran
			h.err = err
			return n, err
		}
		h.eof = true
		return n, io.EOF
	case err != nil:
		h.err = err
	}
	return n, err
}

func (h *hashingReader) info() blob.Info {
	return blob.Info{Digest: blob.Digest(h.h.Sum(nil)), Size: h.n}
}

// cause prefers the reader's own error (the content was too large, wrong, or failed) to
// minio-go's rendering of it, so that callers can errors.Is it.
func (h *hashingReader) cause(err error) error {
	if h.err != nil {
		return h.err
	}
	if cerr := h.ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// file reads a stored object by ranged GETs.
type file struct {
	ctx  context.Context
	s    *Store
	key  string
	etag string
	info blob.Info
	off  int64
	body io.ReadCloser // open at off, or nil
}

func (f *file) Info() blob.Info { return f.info }

func (f *file) Read(p []byte) (int, error) {
	if f.off >= f.info.Size {
		return 0, io.EOF
	}
	if f.body == nil {
		var opts minio.GetObjectOptions
		if err := opts.SetMatchETag(f.etag); err != nil {
			return 0, err
		}
		if f.off > 0 {
			if err := opts.SetRange(f.off, 0); err != nil {
				return 0, err
			}
		}
		body, _, _, err := minio.Core{Client: f.s.c}.GetObject(f.ctx, f.s.bucket, f.key, opts)
		if err != nil {
			return 0, fmt.Errorf("read blob %s at %d: %w", f.info.Digest, f.off, notFound(f.info.Digest, err))
		}
		f.body = body
	}
	n, err := f.body.Read(p)
	f.off += int64(n)
	if errors.Is(err, io.EOF) && f.off < f.info.Size {
		err = fmt.Errorf("read blob %s: object ended at %d of %d bytes: %w", f.info.Digest, f.off, f.info.Size, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = f.off + offset
	case io.SeekEnd:
		abs = f.info.Size + offset
	default:
		return 0, fmt.Errorf("seek blob %s: invalid whence %d", f.info.Digest, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek blob %s: negative position %d", f.info.Digest, abs)
	}
	if abs != f.off {
		f.closeBody()
		f.off = abs
	}
	return abs, nil
}

func (f *file) Close() error {
	f.closeBody()
	return nil
}

func (f *file) closeBody() {
	if f.body != nil {
		f.body.Close()
		f.body = nil
	}
}

func isNotFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == minio.NoSuchKey || code == "NotFound" || minio.ToErrorResponse(err).StatusCode == http.StatusNotFound
}

func notFound(d blob.Digest, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("blob %s: %w", d, blob.ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", d, err)
}
