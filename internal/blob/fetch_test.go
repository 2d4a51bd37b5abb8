package blob_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
)

// fast bounds every download in these tests: a test that goes wrong fails in seconds.
var fast = blob.FetchOptions{StallTimeout: 5 * time.Second, Timeout: 20 * time.Second}

func TestFetch(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 300000)
	dst := filepath.Join(t.TempDir(), "image")
	if err := blob.Fetch(t.Context(), w.srv.Client(), w.url(), w.digest, int64(len(w.content)), dst, fast); err != nil {
		t.Fatalf("Fetch = %v, want nil", err)
	}
	wantFile(t, dst, w.content)
	wantNoFile(t, dst+".part")
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode of the downloaded file = %v, want -rw-------", got)
	}
}

func TestFetch_Empty(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	dst := filepath.Join(t.TempDir(), "image")
	if err := blob.Fetch(t.Context(), w.srv.Client(), w.url(), w.digest, 0, dst, fast); err != nil {
		t.Fatalf("Fetch(empty blob) = %v, want nil", err)
	}
	wantFile(t, dst, nil)
}

// A connection cut half-way keeps what arrived; the next Fetch asks for the rest only, with
// If-Range naming the blob's ETag, and checks the digest of the whole.
func TestFetch_ResumesAfterCutConnection(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 500000)
	size := len(w.content)
	var reqs requests
	srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if reqs.add(r) > 1 {
			blob.Serve(rw, r, w.store, w.digest)
			return
		}
		rw.Header().Set("Content-Length", strconv.Itoa(size))
		rw.Write(w.content[:size/2])
		rc := http.NewResponseController(rw)
		rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			t.Errorf("Hijack = %v", err)
			return
		}
		conn.Close()
	}))
	dst := filepath.Join(t.TempDir(), "image")

	err := blob.Fetch(t.Context(), srv.Client(), srv.URL, w.digest, int64(size), dst, fast)
	if err == nil || errors.Is(err, blob.ErrTooLarge) || errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("Fetch over a connection cut half-way = %v, want a transfer error", err)
	}
	wantNoFile(t, dst)
	fi, err := os.Stat(dst + ".part")
	if err != nil {
		t.Fatalf("no .part file after a cut connection: %v", err)
	}
	have := fi.Size()
	if have == 0 || have > int64(size/2) {
		t.Fatalf(".part file is %d bytes, want 1 to %d", have, size/2)
	}

	var n atomic.Int64
	if err := blob.Fetch(t.Context(), countingClient(srv, &n), srv.URL, w.digest, int64(size), dst, fast); err != nil {
		t.Fatalf("resuming Fetch = %v, want nil", err)
	}
	wantFile(t, dst, w.content)
	wantNoFile(t, dst+".part")
	want := []request{{}, {Range: fmt.Sprintf("bytes=%d-", have), IfRange: blob.ETag(w.digest)}}
	if diff := cmp.Diff(want, reqs.all()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if got := n.Load(); got != int64(size)-have {
		t.Errorf("resuming Fetch read %d bytes, want the %d missing", got, int64(size)-have)
	}
}

// A server that does not continue the .part file as asked gets the whole blob read from the
// start, and the result is still exactly the blob.
func TestFetch_RestartsWhenServerDoesNotResume(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 200000)
	size := len(w.content)
	full := func(rw http.ResponseWriter, status int) {
		rw.Header().Set("Content-Length", strconv.Itoa(size))
		rw.WriteHeader(status)
		rw.Write(w.content)
	}
	etag := blob.ETag(w.digest)
	tests := []struct {
		name    string
		prefix  []byte // what the .part file holds before
		handler func(rw http.ResponseWriter, r *http.Request)
		want    []request
	}{
		{
			// A cache or plain file server that ignores Range: the garbage prefix is dropped.
			name:    "IgnoresRange",
			prefix:  []byte(strings.Repeat("garbage ", 125)),
			handler: func(rw http.ResponseWriter, r *http.Request) { full(rw, http.StatusOK) },
			want:    []request{{"bytes=1000-", etag}},
		},
		{
			// A server with its own ETags (an object store, say) answers If-Range with 200.
			name:   "OtherETag",
			prefix: []byte(strings.Repeat("garbage ", 125)),
			handler: func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("ETag", `"d41d8cd98f00b204e9800998ecf8427e"`)
				http.ServeContent(rw, r, "", time.Time{}, strings.NewReader(string(w.content)))
			},
			want: []request{{"bytes=1000-", etag}},
		},
		{
			name:   "WrongContentRange",
			prefix: w.content[:1000],
			handler: func(rw http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					rw.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", size-1, size))
					full(rw, http.StatusPartialContent)
					return
				}
				full(rw, http.StatusOK)
			},
			want: []request{{"bytes=1000-", etag}, {}},
		},
		{
			name:   "WrongTotal",
			prefix: w.content[:1000],
			handler: func(rw http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					rw.Header().Set("Content-Range", fmt.Sprintf("bytes 1000-%d/%d", size-1, size+1))
					rw.WriteHeader(http.StatusPartialContent)
					rw.Write(w.content[1000:])
					return
				}
				full(rw, http.StatusOK)
			},
			want: []request{{"bytes=1000-", etag}, {}},
		},
		{
			name:   "RangeNotSatisfiable",
			prefix: w.content[:1000],
			handler: func(rw http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					rw.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
					return
				}
				full(rw, http.StatusOK)
			},
			want: []request{{"bytes=1000-", etag}, {}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var reqs requests
			srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				reqs.add(r)
				tc.handler(rw, r)
			}))
			dst := filepath.Join(t.TempDir(), "image")
			if err := os.WriteFile(dst+".part", tc.prefix, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := blob.Fetch(t.Context(), srv.Client(), srv.URL, w.digest, int64(size), dst, fast); err != nil {
				t.Fatalf("Fetch = %v, want nil", err)
			}
			wantFile(t, dst, w.content)
			wantNoFile(t, dst+".part")
			if diff := cmp.Diff(tc.want, reqs.all()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

// Endless data (rule 2): a response longer than the blob is cut off one byte past the
// blob's size, and nothing is kept.
func TestFetch_RejectsEndlessData(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 100000)
	size := int64(len(w.content))
	endless := func(rw http.ResponseWriter) {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := rw.Write(chunk); err != nil {
				return // the client hung up
			}
		}
	}
	tests := []struct {
		name     string
		prefix   []byte
		handler  func(rw http.ResponseWriter, r *http.Request)
		wantRead int64 // at most
	}{
		{
			name:     "Endless",
			handler:  func(rw http.ResponseWriter, r *http.Request) { endless(rw) },
			wantRead: size + 1,
		},
		{
			name: "EndlessAfterTheBlob",
			handler: func(rw http.ResponseWriter, r *http.Request) {
				rw.Write(w.content)
				endless(rw)
			},
			wantRead: size + 1,
		},
		{
			name:   "EndlessResumed",
			prefix: w.content[:1000],
			handler: func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Content-Range", fmt.Sprintf("bytes 1000-%d/%d", size-1, size))
				rw.WriteHeader(http.StatusPartialContent)
				endless(rw)
			},
			wantRead: size - 1000 + 1,
		},
		{
			// A declared length over the blob's size is refused before reading any of it.
			name: "DeclaredTooLong",
			handler: func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Content-Length", strconv.FormatInt(size+1, 10))
				rw.Write(w.content)
				rw.Write([]byte{0})
			},
			wantRead: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(tc.handler))
			dst := filepath.Join(t.TempDir(), "image")
			if tc.prefix != nil {
				if err := os.WriteFile(dst+".part", tc.prefix, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var n atomic.Int64
			err := blob.Fetch(t.Context(), countingClient(srv, &n), srv.URL, w.digest, size, dst, fast)
			if !errors.Is(err, blob.ErrTooLarge) {
				t.Errorf("Fetch = %v, want ErrTooLarge", err)
			}
			if got := n.Load(); got > tc.wantRead {
				t.Errorf("Fetch read %d bytes of the response, want at most %d", got, tc.wantRead)
			}
			wantNoFile(t, dst)
			wantNoFile(t, dst+".part")
		})
	}
}

// Slow retrieval (rule 2): a server that stops sending is cut off after StallTimeout, and
// the download leaves no goroutine behind. Not parallel: it counts goroutines.
func TestFetch_RejectsStalledServer(t *testing.T) {
	const size = 100000
	content := blobtest.Content(1, size)
	tests := []struct {
		name     string
		write    func(rw http.ResponseWriter)
		wantPart int64
	}{
		{"BeforeHeaders", func(http.ResponseWriter) {}, -1},
		{"AfterHeaders", func(rw http.ResponseWriter) {
			rw.Header().Set("Content-Length", strconv.Itoa(size))
			rw.WriteHeader(http.StatusOK)
			http.NewResponseController(rw).Flush()
		}, -1},
		{"AfterOneByte", func(rw http.ResponseWriter) {
			rw.Header().Set("Content-Length", strconv.Itoa(size))
			rw.Write(content[:1])
			http.NewResponseController(rw).Flush()
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			release := make(chan struct{})
			srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				tc.write(rw)
				select { // stall until the client gives up (or the test ends)
				case <-r.Context().Done():
				case <-release:
				}
			}))
			hc := srv.Client()
			dst := filepath.Join(t.TempDir(), "image")

			// Real sockets on a machine that may be busy: the bounds are loose here, and
			// exact in the synctest cases (TestFetch_SlowRetrievalTiming).
			const stall = 500 * time.Millisecond
			start := time.Now()
			err := blob.Fetch(t.Context(), hc, srv.URL, blobtest.Sum(content), size, dst, blob.FetchOptions{StallTimeout: stall, Timeout: time.Minute})
			took := time.Since(start)
			if !errors.Is(err, blob.ErrStalled) {
				t.Errorf("Fetch from a stalled server = %v, want ErrStalled", err)
			}
			if took < stall || took > 20*time.Second {
				t.Errorf("Fetch from a stalled server gave up after %v, want soon after %v (and long before the 1m Timeout)", took, stall)
			}
			wantNoFile(t, dst)
			if tc.wantPart < 0 {
				wantNoFile(t, dst+".part")
			} else {
				wantFile(t, dst+".part", content[:tc.wantPart])
			}

			close(release)
			hc.CloseIdleConnections()
			srv.Close()
			waitGoroutines(t, before)
		})
	}
}

// waitGoroutines fails t unless the number of goroutines drops to at most n within a few
// seconds (connection goroutines end shortly after their connection closes). Real sockets
// rule out testing/synctest here.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines left, want at most %d:\n%s", runtime.NumGoroutine(), n, buf)
		}
		<-tick.C
	}
}

// Arbitrary software (rule 2): content that does not hash to the expected digest is
// refused and nothing is kept, whether it came in one response or was resumed.
func TestFetch_RejectsWrongContent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 100000)
	size := int64(len(w.content))
	evil := append([]byte(nil), w.content...)
	evil[size/2] ^= 1

	t.Run("Whole", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Write(evil)
		}))
		dst := filepath.Join(t.TempDir(), "image")
		err := blob.Fetch(t.Context(), srv.Client(), srv.URL, w.digest, size, dst, fast)
		if !errors.Is(err, blob.ErrDigestMismatch) {
			t.Errorf("Fetch(one bit flipped) = %v, want ErrDigestMismatch", err)
		}
		wantNoFile(t, dst)
		wantNoFile(t, dst+".part")
	})
	t.Run("Short", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Write(w.content[:size-1])
		}))
		dst := filepath.Join(t.TempDir(), "image")
		err := blob.Fetch(t.Context(), srv.Client(), srv.URL, w.digest, size, dst, fast)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Fetch(one byte short) = %v, want io.ErrUnexpectedEOF", err)
		}
		wantNoFile(t, dst)
		// What arrived is kept: a later Fetch asks for the last byte.
		wantFile(t, dst+".part", w.content[:size-1])
		if err := blob.Fetch(t.Context(), w.srv.Client(), w.url(), w.digest, size, dst, fast); err != nil {
			t.Fatalf("Fetch after a short response = %v, want nil", err)
		}
		wantFile(t, dst, w.content)
	})
	t.Run("ResumedPrefix", func(t *testing.T) {
		t.Parallel()
		// The server's rest is right, but the kept prefix is not: the whole file is
		// checked, so this is caught, and the next Fetch starts over.
		dst := filepath.Join(t.TempDir(), "image")
		if err := os.WriteFile(dst+".part", evil[:size/2+1], 0o600); err != nil {
			t.Fatal(err)
		}
		err := blob.Fetch(t.Context(), w.srv.Client(), w.url(), w.digest, size, dst, fast)
		if !errors.Is(err, blob.ErrDigestMismatch) {
			t.Errorf("Fetch(bad prefix) = %v, want ErrDigestMismatch", err)
		}
		wantNoFile(t, dst)
		wantNoFile(t, dst+".part")
		if err := blob.Fetch(t.Context(), w.srv.Client(), w.url(), w.digest, size, dst, fast); err != nil {
			t.Fatalf("Fetch after a bad prefix = %v, want nil", err)
		}
		wantFile(t, dst, w.content)
	})
	t.Run("PartLongerThanBlob", func(t *testing.T) {
		t.Parallel()
		dst := filepath.Join(t.TempDir(), "image")
		if err := os.WriteFile(dst+".part", append(append([]byte(nil), w.content...), 0), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := blob.Fetch(t.Context(), w.srv.Client(), w.url(), w.digest, size, dst, fast); err != nil {
			t.Fatalf("Fetch with a .part longer than the blob = %v, want nil", err)
		}
		wantFile(t, dst, w.content)
	})
}

// A download that finished but was not renamed (a crash in between) is checked and renamed
// without a request.
func TestFetch_CompletePartNeedsNoRequest(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 10000)
	srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
		rw.WriteHeader(http.StatusTeapot)
	}))
	dst := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(dst+".part", w.content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := blob.Fetch(t.Context(), srv.Client(), srv.URL, w.digest, int64(len(w.content)), dst, fast); err != nil {
		t.Fatalf("Fetch = %v, want nil", err)
	}
	wantFile(t, dst, w.content)
	wantNoFile(t, dst+".part")
}

func TestFetch_Errors(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1000)
	size := int64(len(w.content))
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		url  string
		want error
	}{
		{"NotFound", t.Context(), w.srv.URL + "/blobs/" + blobtest.Sum(nil).String(), blob.ErrNotFound},
		{"Cancelled", cancelled, w.url(), context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := filepath.Join(t.TempDir(), "image")
			err := blob.Fetch(tc.ctx, w.srv.Client(), tc.url, w.digest, size, dst, fast)
			if !errors.Is(err, tc.want) {
				t.Errorf("Fetch = %v, want %v", err, tc.want)
			}
			wantNoFile(t, dst)
			wantNoFile(t, dst+".part")
		})
	}
	t.Run("ServerError", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}))
		dst := filepath.Join(t.TempDir(), "image")
		err := blob.Fetch(t.Context(), srv.Client(), srv.URL, w.digest, size, dst, fast)
		if err == nil || errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrDigestMismatch) {
			t.Errorf("Fetch from a 503 = %v, want an error", err)
		}
		wantNoFile(t, dst)
	})
}
