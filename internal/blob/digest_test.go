package blob_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/blob/blobtest"
)

// The digest of the empty string.
const emptyHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestDigest_String(t *testing.T) {
	t.Parallel()
	d := blobtest.Sum(nil)
	if got := d.String(); got != "sha256:"+emptyHex {
		t.Errorf("Sum(nil).String() = %q, want %q", got, "sha256:"+emptyHex)
	}
	if got := d.Hex(); got != emptyHex {
		t.Errorf("Sum(nil).Hex() = %q, want %q", got, emptyHex)
	}
	if got := blob.ETag(d); got != `"sha256:`+emptyHex+`"` {
		t.Errorf("ETag(Sum(nil)) = %s, want the quoted digest", got)
	}
}

func TestParseDigest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"Canonical", "sha256:" + emptyHex, true},
		{"Bare", emptyHex, true},
		{"Empty", "", false},
		{"PrefixOnly", "sha256:", false},
		{"UpperCase", strings.ToUpper(emptyHex), false},
		{"UpperCasePrefix", "SHA256:" + emptyHex, false},
		{"OtherAlgorithm", "sha512:" + emptyHex, false},
		{"Short", "sha256:" + emptyHex[1:], false},
		{"Long", "sha256:" + emptyHex + "0", false},
		{"NotHex", "sha256:" + emptyHex[:63] + "g", false},
		{"Space", " sha256:" + emptyHex, false},
		{"DoublePrefix", "sha256:sha256:" + emptyHex, false},
		{"PathTraversal", "sha256:../../../../../../../../../../../../../../../../etc/passwd", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := blob.ParseDigest(tc.in)
			if !tc.ok {
				if !errors.Is(err, blob.ErrInvalidDigest) {
					t.Errorf("ParseDigest(%q) = %v, %v, want ErrInvalidDigest", tc.in, d, err)
				}
				return
			}
			if err != nil || d != blobtest.Sum(nil) {
				t.Errorf("ParseDigest(%q) = %v, %v, want %v, nil", tc.in, d, err, blobtest.Sum(nil))
			}
		})
	}
}

func TestDigest_JSON(t *testing.T) {
	t.Parallel()
	type doc struct {
		Digest blob.Digest `json:"digest"`
	}
	in := doc{blobtest.Sum([]byte("x"))}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"digest":"` + in.Digest.String() + `"}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("json.Unmarshal(%s) = %v, %v, want %v", b, out, err, in)
	}
	if err := json.Unmarshal([]byte(`{"digest":"sha256:00"}`), &out); !errors.Is(err, blob.ErrInvalidDigest) {
		t.Errorf("json.Unmarshal(short digest) = %v, want ErrInvalidDigest", err)
	}
}

// FuzzParseDigest: a digest from a URL or a document never panics, and what parses has
// exactly one spelling that parses back to it.
func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + emptyHex)
	f.Add(emptyHex)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := blob.ParseDigest(s)
		if err != nil {
			if !errors.Is(err, blob.ErrInvalidDigest) {
				t.Fatalf("ParseDigest(%q) = %v, want ErrInvalidDigest", s, err)
			}
			return
		}
		if s != d.String() && s != d.Hex() {
			t.Fatalf("ParseDigest(%q) = %v: accepted a non-canonical spelling", s, d)
		}
		if d2, err := blob.ParseDigest(d.String()); err != nil || d2 != d {
			t.Fatalf("ParseDigest(%q) = %v, %v, want %v", d.String(), d2, err, d)
		}
	})
}
