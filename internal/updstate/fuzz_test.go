package updstate_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/updstate"
)

// FuzzDecode feeds arbitrary bytes to Decode, which reads reports from a device's queue
// files and, through the same validation, from uploads: no panic, anything accepted is
// valid, and it re-encodes to bytes that decode to the same report and encode again to the
// same bytes. The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, r := range valid() {
		b, err := updstate.Encode(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := updstate.Decode(data)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Decode(%q) accepted an invalid report: %v", data, err)
		}
		enc, err := updstate.Encode(r)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)) = %v", data, err)
		}
		again, err := updstate.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(r)) = %v for %q", err, enc)
		}
		if d := cmp.Diff(r, again); d != "" {
			t.Fatalf("Decode(Encode(r)) differs (-first +again):\n%s", d)
		}
		enc2, err := updstate.Encode(again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable: %q then %q (%v)", enc, enc2, err)
		}
	})
}
