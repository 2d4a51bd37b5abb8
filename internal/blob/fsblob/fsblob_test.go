package fsblob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
	"github.com/moat-iot/moat/internal/blob/fsblob"
)

func TestStore(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blob.Store { return open(t, t.TempDir()) })
}

func open(t *testing.T, dir string) *fsblob.Store {
	t.Helper()
	s, err := fsblob.Open(dir)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	return s
}

// files lists the regular files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

func TestPut_Layout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	b := []byte("hello, dishwasher")
	d := blobtest.Sum(b)
	if _, err := s.Put(t.Context(), bytes.NewReader(b), 100); err != nil {
		t.Fatalf("Put = %v", err)
	}
	want := []string{"sha256/" + d.Hex()[:2] + "/" + d.Hex()}
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Errorf("files after Put (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(filepath.Join(dir, want[0]))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o440 {
		t.Errorf("blob mode = %v, want -r--r-----", got)
	}
	ti, err := os.Stat(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ti.Mode().Perm(); got != 0o700 {
		t.Errorf("tmp mode = %v, want drwx------", got)
	}
}

func TestPut_ConcurrentSameContentLeavesOneFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	b := blobtest.Content(1, 1<<20)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := s.Put(t.Context(), bytes.NewReader(b), 1<<20); err != nil {
				t.Errorf("concurrent Put = %v", err)
			}
		})
	}
	wg.Wait()
	d := blobtest.Sum(b)
	want := []string{"sha256/" + d.Hex()[:2] + "/" + d.Hex()}
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Errorf("files after 16 concurrent Puts (-want +got):\n%s", diff)
	}
	blobtest.WantStored(t, s, b)
}

// Every refused Put removes its temporary file: nothing is left on disk.
func TestPut_RefusedLeavesNoFiles(t *testing.T) {
	t.Parallel()
	b := blobtest.Content(2, 100000)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		put  func(s *fsblob.Store) error
		want error
	}{
		{"TooLarge", func(s *fsblob.Store) error {
			_, err := s.Put(t.Context(), bytes.NewReader(b), 99999)
			return err
		}, blob.ErrTooLarge},
		{"Endless", func(s *fsblob.Store) error {
			_, err := s.Put(t.Context(), &blobtest.Endless{}, 99999)
			return err
		}, blob.ErrTooLarge},
		{"ReaderFails", func(s *fsblob.Store) error {
			_, err := s.Put(t.Context(), io.MultiReader(bytes.NewReader(b), iotestErrReader{}), 1<<20)
			return err
		}, errBoom},
		{"Cancelled", func(s *fsblob.Store) error {
			_, err := s.Put(ctx, bytes.NewReader(b), 1<<20)
			return err
		}, context.Canceled},
		{"PutExpectMismatch", func(s *fsblob.Store) error {
			_, err := blob.PutExpect(t.Context(), s, bytes.NewReader(b), blobtest.Sum(nil), int64(len(b)))
			return err
		}, blob.ErrDigestMismatch},
		{"PutExpectLong", func(s *fsblob.Store) error {
			_, err := blob.PutExpect(t.Context(), s, bytes.NewReader(b), blobtest.Sum(b[:10]), 10)
			return err
		}, blob.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir)
			if err := tc.put(s); !errors.Is(err, tc.want) {
				t.Errorf("Put = %v, want %v", err, tc.want)
			}
			if got := files(t, dir); len(got) != 0 {
				t.Errorf("files after a refused Put = %q, want none", got)
			}
		})
	}
}

var errBoom = errors.New("boom")

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errBoom }

// A crash mid-Put leaves only a temporary file; the next Open removes it, and keeps every
// stored blob.
func TestOpen_RemovesLeftoverTemp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	b := blobtest.Content(3, 5000)
	if _, err := s.Put(t.Context(), bytes.NewReader(b), 5000); err != nil {
		t.Fatal(err)
	}
	// What a crash leaves: a half-written temporary file (and, for good measure, a
	// directory nobody should have made there).
	if err := os.WriteFile(filepath.Join(dir, "tmp", "put-123456"), b[:2500], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "odd", "deeper"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "odd", "deeper", "x"), b[:10], 0o400); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, dir)
	d := blobtest.Sum(b)
	want := []string{"sha256/" + d.Hex()[:2] + "/" + d.Hex()}
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Errorf("files after reopening (-want +got):\n%s", diff)
	}
	blobtest.WantStored(t, s2, b)
	blobtest.WantNotStored(t, s2, blobtest.Sum(b[:2500]))
}

func TestVerify_DetectsFlippedByte(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir)
	b := blobtest.Content(4, 70000)
	d := blobtest.Sum(b)
	if _, err := s.Put(t.Context(), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(t.Context(), d); err != nil {
		t.Fatalf("Verify(%s) = %v, want nil", d, err)
	}

	// The disk rots one bit.
	path := filepath.Join(dir, "sha256", d.Hex()[:2], d.Hex())
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[54321] ^ 0x10}, 54321); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if err := s.Verify(t.Context(), d); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("Verify(%s) after a flipped bit = %v, want ErrDigestMismatch", d, err)
	}
	if err := s.Verify(t.Context(), blobtest.Sum(nil)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Verify(unknown) = %v, want ErrNotFound", err)
	}
}

func TestOpen_CreatesDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "does", "not", "exist")
	s := open(t, dir)
	b := []byte("x")
	if _, err := s.Put(t.Context(), bytes.NewReader(b), 1); err != nil {
		t.Fatalf("Put = %v", err)
	}
	blobtest.WantStored(t, s, b)
}

func TestOpen_FailsOnFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := fsblob.Open(path); err == nil {
		t.Errorf("Open(a regular file) = %v, nil, want an error", s)
	}
}
