// Package blobtest is the conformance suite every blob.Store implementation runs:
// blobtest.Run(t, open) from the implementation's tests. It holds the behaviour all stores
// share; what is particular to one store (files on disk, say) is tested beside it.
//
// The cases attack the Store contract: content over the limit, a failing or endless reader,
// a cancelled context and PutExpect's wrong digests and sizes must all store nothing
// (DESIGN rules 2 and 5). Run's cases are parallel; open is called once per case and must
// return a fresh, empty store.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/moat-iot/moat/internal/blob"
)

// Run runs every case against stores made by open.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"ExactlyTheLimit", testExactlyTheLimit},
		{"UnknownDigest", testUnknownDigest},
		{"Delete", testDelete},
		{"ConcurrentPutOfSameContent", testConcurrentPut},
		{"TooLargeStoresNothing", testTooLarge},
		{"EndlessReaderIsCutOff", testEndless},
		{"FailingReaderStoresNothing", testFailingReader},
		{"CancelledContextStoresNothing", testCancelled},
		{"PutExpect", testPutExpect},
		{"PutExpect_RejectsWrongDigest", testPutExpectWrongDigest},
		{"PutExpect_RejectsShortContent", testPutExpectShort},
		{"PutExpect_RejectsLongContent", testPutExpectLong},
		{"PutExpect_RejectsEndlessData", testPutExpectEndless},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// Content returns n reproducible pseudo-random bytes for seed.
func Content(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b) // never fails
	return b
}

// Sum is the digest of b.
func Sum(b []byte) blob.Digest { return blob.Digest(sha256.Sum256(b)) }

// Endless yields bytes forever and counts how many it gave.
type Endless struct {
	mu sync.Mutex
	n  int64
}

func (e *Endless) Read(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range p {
		p[i] = 'e'
	}
	e.n += int64(len(p))
	return len(p), nil
}

// N is how many bytes e has given.
func (e *Endless) N() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// failingReader yields b, then err.
type failingReader struct {
	b   []byte
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, f.err
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

// oneByteReader hands out at most one byte per Read, as a slow network does.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func mustPut(t *testing.T, s blob.Store, b []byte) blob.Info {
	t.Helper()
	info, err := s.Put(t.Context(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Put(%d bytes) = %v, want nil", len(b), err)
	}
	if want := (blob.Info{Digest: Sum(b), Size: int64(len(b))}); info != want {
		t.Fatalf("Put(%d bytes) = %+v, want %+v", len(b), info, want)
	}
	return info
}

// WantStored fails t unless s holds exactly b under its digest.
func WantStored(t *testing.T, s blob.Store, b []byte) {
	t.Helper()
	d := Sum(b)
	want := blob.Info{Digest: d, Size: int64(len(b))}
	info, err := s.Stat(t.Context(), d)
	if err != nil || info != want {
		t.Fatalf("Stat(%s) = %+v, %v, want %+v, nil", d, info, err, want)
	}
	f, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", d, err)
	}
	defer f.Close()
	if got := f.Info(); got != want {
		t.Errorf("Open(%s).Info() = %+v, want %+v", d, got, want)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("ReadAll(Open(%s)) = %d bytes, %v, want the %d bytes put", d, len(got), err, len(b))
	}
}

// WantNotStored fails t unless s reports ErrNotFound for d.
func WantNotStored(t *testing.T, s blob.Store, d blob.Digest) {
	t.Helper()
	if info, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(%s) = %+v, %v, want ErrNotFound", d, info, err)
	}
	f, err := s.Open(t.Context(), d)
	if !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open(%s) = %v, want ErrNotFound", d, err)
	}
	if err == nil {
		f.Close()
	}
}

func wantErr(t *testing.T, call string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", call, err, want)
	}
}

func testRoundTrip(t *testing.T, s blob.Store) {
	b := Content(1, 1<<20+7) // several copy buffers, not a multiple of any
	mustPut(t, s, b)
	WantStored(t, s, b)

	f, err := s.Open(t.Context(), Sum(b))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	defer f.Close()
	if pos, err := f.Seek(1000, io.SeekStart); pos != 1000 || err != nil {
		t.Fatalf("Seek(1000, SeekStart) = %d, %v, want 1000, nil", pos, err)
	}
	got := make([]byte, 10)
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, b[1000:1010]) {
		t.Errorf("read after Seek(1000) = %x, %v, want %x", got, err, b[1000:1010])
	}
	if end, err := f.Seek(0, io.SeekEnd); end != int64(len(b)) || err != nil {
		t.Errorf("Seek(0, SeekEnd) = %d, %v, want %d, nil", end, err, len(b))
	}

	// A second Put of the same content succeeds and changes nothing.
	mustPut(t, s, b)
	WantStored(t, s, b)
}

func testEmpty(t *testing.T, s blob.Store) {
	mustPut(t, s, nil)
	WantStored(t, s, nil)
}

func testExactlyTheLimit(t *testing.T, s blob.Store) {
	b := Content(2, 4096)
	info, err := s.Put(t.Context(), oneByteReader{bytes.NewReader(b)}, 4096)
	if err != nil || info.Size != 4096 {
		t.Fatalf("Put(4096 bytes, max 4096) = %+v, %v, want success", info, err)
	}
	WantStored(t, s, b)
}

func testUnknownDigest(t *testing.T, s blob.Store) {
	WantNotStored(t, s, Sum([]byte("never stored")))
}

func testConcurrentPut(t *testing.T, s blob.Store) {
	b := Content(3, 300<<10)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	infos := make([]blob.Info, n)
	for i := range n {
		wg.Go(func() {
			infos[i], errs[i] = s.Put(t.Context(), oneByteReaderEvery(i, b), int64(len(b)))
		})
	}
	wg.Wait()
	want := blob.Info{Digest: Sum(b), Size: int64(len(b))}
	for i := range n {
		if errs[i] != nil || infos[i] != want {
			t.Errorf("concurrent Put #%d = %+v, %v, want %+v, nil", i, infos[i], errs[i], want)
		}
	}
	WantStored(t, s, b)
}

// oneByteReaderEvery slows every other concurrent Put down, so that Puts interleave.
func oneByteReaderEvery(i int, b []byte) io.Reader {
	if i%2 == 0 {
		return bytes.NewReader(b)
	}
	return io.MultiReader(oneByteReader{bytes.NewReader(b[:1000])}, bytes.NewReader(b[1000:]))
}

func testTooLarge(t *testing.T, s blob.Store) {
	b := Content(4, 5000)
	_, err := s.Put(t.Context(), bytes.NewReader(b), 4999)
	wantErr(t, "Put(5000 bytes, max 4999)", err, blob.ErrTooLarge)
	WantNotStored(t, s, Sum(b))
	WantNotStored(t, s, Sum(b[:4999]))
	WantNotStored(t, s, Sum(b[:5000]))
}

func testEndless(t *testing.T, s blob.Store) {
	var e Endless
	_, err := s.Put(t.Context(), &e, 10000)
	wantErr(t, "Put(endless, max 10000)", err, blob.ErrTooLarge)
	if n := e.N(); n > 10001 {
		t.Errorf("Put(endless, max 10000) read %d bytes, want at most 10001", n)
	}
}

func testFailingReader(t *testing.T, s blob.Store) {
	b := Content(5, 100000)
	boom := errors.New("connection reset")
	_, err := s.Put(t.Context(), &failingReader{b: b, err: boom}, 1<<20)
	wantErr(t, "Put(reader failing after 100000 bytes)", err, boom)
	WantNotStored(t, s, Sum(b))
}

func testCancelled(t *testing.T, s blob.Store) {
	b := Content(6, 100000)
	ctx, cancel := context.WithCancel(t.Context())
	// The reader cancels the context half-way, as a client going away does.
	r := io.MultiReader(bytes.NewReader(b[:50000]), readFunc(func([]byte) (int, error) {
		cancel()
		return 0, io.EOF
	}), bytes.NewReader(b[50000:]))
	_, err := s.Put(ctx, r, 1<<20)
	wantErr(t, "Put(context cancelled half-way)", err, context.Canceled)
	WantNotStored(t, s, Sum(b))
	WantNotStored(t, s, Sum(b[:50000]))
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

func testPutExpect(t *testing.T, s blob.Store) {
	b := Content(7, 70000)
	info, err := blob.PutExpect(t.Context(), s, bytes.NewReader(b), Sum(b), int64(len(b)))
	if want := (blob.Info{Digest: Sum(b), Size: int64(len(b))}); err != nil || info != want {
		t.Fatalf("PutExpect = %+v, %v, want %+v, nil", info, err, want)
	}
	WantStored(t, s, b)
}

// Arbitrary software: content that is not what was signed is refused and not stored.
func testPutExpectWrongDigest(t *testing.T, s blob.Store) {
	b := Content(8, 70000)
	evil := bytes.Clone(b)
	evil[len(evil)/2] ^= 1
	_, err := blob.PutExpect(t.Context(), s, bytes.NewReader(evil), Sum(b), int64(len(b)))
	wantErr(t, "PutExpect(one bit flipped)", err, blob.ErrDigestMismatch)
	WantNotStored(t, s, Sum(evil))
	WantNotStored(t, s, Sum(b))
}

func testPutExpectShort(t *testing.T, s blob.Store) {
	b := Content(9, 70000)
	_, err := blob.PutExpect(t.Context(), s, bytes.NewReader(b[:69999]), Sum(b), int64(len(b)))
	wantErr(t, "PutExpect(one byte short)", err, blob.ErrDigestMismatch)
	WantNotStored(t, s, Sum(b[:69999]))
}

func testPutExpectLong(t *testing.T, s blob.Store) {
	b := Content(10, 70000)
	_, err := blob.PutExpect(t.Context(), s, bytes.NewReader(append(bytes.Clone(b), 0)), Sum(b), int64(len(b)))
	wantErr(t, "PutExpect(one byte long)", err, blob.ErrTooLarge)
	// Not even the expected prefix is kept: the stream as a whole was wrong.
	WantNotStored(t, s, Sum(b))
}

// Endless data: the reader is cut off one byte past the expected size.
func testPutExpectEndless(t *testing.T, s blob.Store) {
	var e Endless
	const size = 12345
	_, err := blob.PutExpect(t.Context(), s, &e, Sum([]byte("whatever")), size)
	wantErr(t, "PutExpect(endless)", err, blob.ErrTooLarge)
	if n := e.N(); n > size+1 {
		t.Errorf("PutExpect(endless, size %d) read %d bytes, want at most %d", size, n, size+1)
	}
}

// testDelete: a deleted blob is gone, its neighbours stay, and deleting again (or an
// unknown digest) is no error.
func testDelete(t *testing.T, s blob.Store) {
	keep, drop := Content(11, 1000), Content(12, 1000)
	mustPut(t, s, keep)
	info := mustPut(t, s, drop)
	for range 2 {
		if err := s.Delete(t.Context(), info.Digest); err != nil {
			t.Fatalf("Delete(%s) = %v, want nil", info.Digest, err)
		}
	}
	WantNotStored(t, s, info.Digest)
	WantStored(t, s, keep)
	// Storing it again after the delete works.
	mustPut(t, s, drop)
	WantStored(t, s, drop)
}
