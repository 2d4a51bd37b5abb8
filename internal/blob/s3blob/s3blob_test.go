package s3blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
	"github.com/moat-iot/moat/internal/blob/s3blob"
	"github.com/moat-iot/moat/internal/testenv"
)

func config(srv *testenv.S3Server, prefix string) s3blob.Config {
	return s3blob.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey,
		SecretKey: s3blob.Secret(srv.SecretKey), Prefix: prefix, PartSizeBytes: 5 << 20}
}

// freshPrefix gives each store its own keys in the shared bucket: an empty store.
func freshPrefix() string { return "t/" + strings.ToLower(rand.Text()) + "/" }

func open(t *testing.T, srv *testenv.S3Server) *s3blob.Store {
	t.Helper()
	s, err := s3blob.Open(t.Context(), config(srv, freshPrefix()))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	return s
}

func TestS3_Conformance(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	blobtest.Run(t, func(t *testing.T) blob.Store { return open(t, srv) })
}

// Content past one part goes the multipart way (temporary key, then a server-side copy);
// it must keep the same contract, and a failed or wrong stream must leave nothing behind,
// not even the temporary object.
func TestS3_LargeBlobs(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	prefix := freshPrefix()
	s, err := s3blob.Open(t.Context(), config(srv, prefix))
	if err != nil {
		t.Fatal(err)
	}
	b := blobtest.Content(100, 11<<20+3) // three parts of 5 MiB
	info, err := s.Put(t.Context(), bytes.NewReader(b), int64(len(b)))
	if err != nil || info != (blob.Info{Digest: blobtest.Sum(b), Size: int64(len(b))}) {
		t.Fatalf("Put(11 MiB) = %+v, %v", info, err)
	}
	blobtest.WantStored(t, s, b)
	if err := s.Verify(t.Context(), info.Digest); err != nil {
		t.Errorf("Verify = %v, want nil", err)
	}

	// Arbitrary software: one bit flipped in the last part.
	evil := bytes.Clone(b)
	evil[len(evil)-10] ^= 1
	_, err = blob.PutExpect(t.Context(), s, bytes.NewReader(evil), blobtest.Sum(b[:len(b)-1]), int64(len(b)))
	if !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("PutExpect(11 MiB, bit flipped) = %v, want ErrDigestMismatch", err)
	}
	blobtest.WantNotStored(t, s, blobtest.Sum(evil))
	// Too large: the limit falls in the third part.
	_, err = s.Put(t.Context(), bytes.NewReader(evil), int64(len(evil))-1)
	if !errors.Is(err, blob.ErrTooLarge) {
		t.Errorf("Put(11 MiB, limit one byte less) = %v, want ErrTooLarge", err)
	}
	blobtest.WantNotStored(t, s, blobtest.Sum(evil))
	// Cancelled in the middle of the second part.
	ctx, cancel := context.WithCancel(t.Context())
	r := io.MultiReader(bytes.NewReader(evil[:7<<20]), readFunc(func([]byte) (int, error) { cancel(); return 0, io.EOF }), bytes.NewReader(evil[7<<20:]))
	if _, err := s.Put(ctx, r, 1<<30); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(cancelled at 7 MiB) = %v, want context.Canceled", err)
	}
	blobtest.WantNotStored(t, s, blobtest.Sum(evil))

	// Only the good blob's object is left: no temporary objects, no half-written ones.
	c, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for o := range c.ListObjects(t.Context(), srv.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	if want := []string{prefix + "sha256/" + info.Digest.Hex()}; strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("objects under %s = %v, want %v", prefix, keys, want)
	}
	incomplete := 0
	for u := range c.ListIncompleteUploads(t.Context(), srv.Bucket, prefix, true) {
		if u.Err == nil {
			incomplete++
		}
	}
	if incomplete != 0 {
		t.Errorf("incomplete multipart uploads under %s = %d, want 0", prefix, incomplete)
	}
}

// Resumable downloads: blob.Serve answers Range requests from an S3 blob with ranged reads.
func TestS3_ServesRanges(t *testing.T) {
	t.Parallel()
	s := open(t, testenv.StartS3(t))
	b := blobtest.Content(7, 300_000)
	info, err := s.Put(t.Context(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(t.Context(), info.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
	defer ts.Close()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL, nil)
	req.Header.Set("Range", "bytes=123456-")
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusPartialContent || err != nil || !bytes.Equal(got, b[123456:]) {
		t.Errorf("GET Range bytes=123456- = %d, %d bytes, %v, want 206 and the %d bytes from 123456", res.StatusCode, len(got), err, len(b)-123456)
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	good := s3blob.Config{Endpoint: "https://s3.example.com", Bucket: "moat-blobs", AccessKey: "AK", SecretKey: "SK"}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	for name, c := range map[string]s3blob.Config{
		"plain http to a remote host": {Endpoint: "http://s3.example.com", Bucket: "b-1", AccessKey: "a", SecretKey: "s"},
		"endpoint with a path":        {Endpoint: "https://s3.example.com/bucket", Bucket: "b-1", AccessKey: "a", SecretKey: "s"},
		"endpoint with credentials":   {Endpoint: "https://u:p@s3.example.com", Bucket: "b-1", AccessKey: "a", SecretKey: "s"},
		"bad bucket":                  {Endpoint: "https://s3.example.com", Bucket: "Bad_Bucket", AccessKey: "a", SecretKey: "s"},
		"no secret":                   {Endpoint: "https://s3.example.com", Bucket: "b-1", AccessKey: "a"},
		"prefix without slash":        {Endpoint: "https://s3.example.com", Bucket: "b-1", AccessKey: "a", SecretKey: "s", Prefix: "moat"},
		"prefix escaping":             {Endpoint: "https://s3.example.com", Bucket: "b-1", AccessKey: "a", SecretKey: "s", Prefix: "../"},
		"tiny parts":                  {Endpoint: "https://s3.example.com", Bucket: "b-1", AccessKey: "a", SecretKey: "s", PartSizeBytes: 1 << 20},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%s) = nil, want an error", name)
		}
	}
	if err := (s3blob.Config{Endpoint: "http://127.0.0.1:9000", Bucket: "b-1", AccessKey: "a", SecretKey: "s"}).Validate(); err != nil {
		t.Errorf("Validate(http on loopback) = %v, want nil", err)
	}
	// All problems at once.
	if err := (s3blob.Config{}).Validate(); err == nil || strings.Count(err.Error(), "\n") < 2 {
		t.Errorf("Validate(empty) = %v, want every problem", err)
	}
}

// The secret key never prints.
func TestSecret_Redacts(t *testing.T) {
	t.Parallel()
	s := s3blob.Secret("hunter2-secret")
	c := s3blob.Config{SecretKey: s}
	for _, out := range []string{s.String(), fmt.Sprintf("%v %+v", c, c), fmt.Sprint(s)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("printed %q, want the secret redacted", out)
		}
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }
