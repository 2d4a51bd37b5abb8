package blob_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
)

func TestVerifyingReader(t *testing.T) {
	t.Parallel()
	b := blobtest.Content(1, 10000)
	d := blobtest.Sum(b)
	flipped := bytes.Clone(b)
	flipped[0] ^= 1
	tests := []struct {
		name     string
		in       []byte
		wantErr  error // nil: reads to io.EOF
		wantRead int   // bytes handed to the caller
	}{
		{"Exact", b, nil, 10000},
		{"Flipped", flipped, blob.ErrDigestMismatch, 10000},
		{"Short", b[:9999], blob.ErrDigestMismatch, 9999},
		{"Empty", nil, blob.ErrDigestMismatch, 0},
		// The caller never sees a byte past the expected size.
		{"Long", append(bytes.Clone(b), 'x'), blob.ErrTooLarge, 10000},
		{"MuchLonger", append(bytes.Clone(b), make([]byte, 1<<20)...), blob.ErrTooLarge, 10000},
	}
	for _, tc := range tests {
		for _, slow := range []bool{false, true} {
			name := tc.name
			r := io.Reader(bytes.NewReader(tc.in))
			if slow {
				name += "/OneByteReads"
				r = iotest.OneByteReader(r)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				got, err := io.ReadAll(blob.VerifyingReader(r, d, int64(len(b))))
				if !errors.Is(err, tc.wantErr) { // nil: ReadAll saw io.EOF
					t.Errorf("ReadAll(VerifyingReader) error = %v, want %v", err, tc.wantErr)
				}
				if len(got) != tc.wantRead || !bytes.Equal(got, tc.in[:tc.wantRead]) {
					t.Errorf("ReadAll(VerifyingReader) = %d bytes, want the first %d", len(got), tc.wantRead)
				}
			})
		}
	}
}

func TestVerifyingReader_ErrorIsSticky(t *testing.T) {
	t.Parallel()
	r := blob.VerifyingReader(bytes.NewReader([]byte("abc")), blobtest.Sum([]byte("abd")), 3)
	if _, err := io.ReadAll(r); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("ReadAll = %v, want ErrDigestMismatch", err)
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("Read after the verdict = %d, %v, want 0, ErrDigestMismatch", n, err)
	}
}
