package blob_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
	"github.com/moat-iot/moat/internal/blob/fsblob"
	"github.com/moat-iot/moat/internal/problem"
)

// world is a blob store holding one blob, served over TLS on loopback at /blobs/{digest}
// as the API layer would: Handler, with errors as RFC 9457 problems.
type world struct {
	dir     string
	store   *fsblob.Store
	content []byte
	digest  blob.Digest
	srv     *httptest.Server
}

func newWorld(t testing.TB, size int) *world {
	t.Helper()
	dir := t.TempDir()
	s, err := fsblob.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := blobtest.Content(uint64(size), size)
	if _, err := s.Put(t.Context(), bytes.NewReader(b), int64(size)); err != nil {
		t.Fatal(err)
	}
	w := &world{dir: dir, store: s, content: b, digest: blobtest.Sum(b)}
	w.srv = newServer(t, blobMux(s))
	return w
}

func (w *world) url() string { return w.srv.URL + "/blobs/" + w.digest.String() }

func blobMux(s blob.Store) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /blobs/{digest}", blob.Handler(s,
		func(r *http.Request) (blob.Digest, error) { return blob.ParseDigest(r.PathValue("digest")) },
		func(w http.ResponseWriter, r *http.Request, err error) {
			p := problem.Wrap(err)
			switch {
			case errors.Is(err, blob.ErrNotFound):
				p = problem.New(problem.NotFound, "blob_not_found", "no such blob")
			case errors.Is(err, blob.ErrInvalidDigest):
				p = problem.New(problem.Invalid, "invalid_digest", "not a sha256 digest")
			}
			problem.Write(w, r, p)
		}))
	return mux
}

// newServer starts an HTTPS server (HTTP/1.1, so handlers can hijack) for the test.
func newServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// countingClient returns a client of srv that counts the response body bytes it hands to
// the caller.
func countingClient(srv *httptest.Server, n *atomic.Int64) *http.Client {
	c := *srv.Client()
	c.Transport = countingTransport{rt: c.Transport, n: n}
	return &c
}

type countingTransport struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := c.rt.RoundTrip(r)
	if err == nil {
		res.Body = &countingBody{ReadCloser: res.Body, n: c.n}
	}
	return res, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// requests records the Range and If-Range headers of the requests a handler saw.
type requests struct {
	mu   sync.Mutex
	seen []request
}

type request struct{ Range, IfRange string }

func (rs *requests) add(r *http.Request) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.seen = append(rs.seen, request{r.Header.Get("Range"), r.Header.Get("If-Range")})
	return len(rs.seen)
}

func (rs *requests) all() []request {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]request(nil), rs.seen...)
}

func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadFile(%s) = %d bytes, %v, want the %d bytes of the blob", path, len(got), err, len(want))
	}
}

func wantNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Lstat(%s) = %v, want not exist", path, err)
	}
}
