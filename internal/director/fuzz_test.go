package director_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/director"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz")

// fuzzExpect is the device FuzzVerify verifies as.
func fuzzExpect() director.Expect {
	return director.Expect{DeviceID: deviceA, TenantID: tenantA, Now: issuedAt.Add(time.Hour)}
}

// FuzzVerify: no panic; whatever Verify accepts is valid, is its own canonical encoding,
// and verifies again to the same assignment.
func FuzzVerify(f *testing.F) {
	pub := &directorKey(f).PublicKey
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := director.Verify(data, pub, fuzzExpect())
		if err != nil {
			if a.Counter != 0 || a.Images != nil {
				t.Fatalf("Verify returned %+v with error %v", a, err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Verify accepted an invalid assignment: %v", err)
		}
		if a.DeviceID != deviceA || a.TenantID != tenantA || a.Counter == 0 {
			t.Fatalf("Verify accepted an assignment for %s/%s counter %d", a.TenantID, a.DeviceID, a.Counter)
		}
		again, err := director.Verify(bytes.Clone(data), pub, fuzzExpect())
		if err != nil {
			t.Fatalf("second Verify = %v, first accepted", err)
		}
		if diff := cmp.Diff(a, again); diff != "" {
			t.Fatalf("second Verify differs (-first +second):\n%s", diff)
		}
		e := fuzzExpect()
		e.LastCounter = a.Counter
		if _, err := director.Verify(data, pub, e); !errors.Is(err, director.ErrReplayed) {
			t.Fatalf("Verify after accepting counter %d = %v, want %v", a.Counter, err, director.ErrReplayed)
		}
	})
}

// FuzzVerifySigned reaches what FuzzVerify's mutations cannot get past the signature:
// it signs the fuzzed assignment bytes with the director key, so strict decoding, the
// canonical check and Validate see arbitrary signed input. Accepted bytes must be exactly
// the canonical encoding of what Verify returned. Its seeds are the signed parts of the
// FuzzVerify corpus, added in code (they hold no signature, so they never go stale).
func FuzzVerifySigned(f *testing.F) {
	key := directorKey(f)
	valid := mustIssue(f, key, validAssignment())
	signed := signedOf(f, valid)
	f.Add(signed)
	f.Add(replaceOnce(f, signed, `"counter":7`, `"counter":7,"counter":8`))
	f.Add(replaceOnce(f, signed, `"kind":"app"`, `"kind":"os"`))
	f.Add(replaceOnce(f, signed, `"2026-03-01T12:00:00Z"`, `"2026-03-01T12:00:00.5Z"`))
	f.Add([]byte(`{"version":1,"images":null}`))
	f.Add(signedOf(f, mustIssue(f, key, withWindows())))
	f.Add(replaceOnce(f, signed, `]}`, `],"install_windows":[{"from":"2026-03-01T14:00:00Z","until":"2026-03-01T13:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, signed []byte) {
		env := resigned(t, signed)
		a, err := director.Verify(env, &key.PublicKey, fuzzExpect())
		if err != nil {
			// Unless the bytes are one JSON value without surrounding white space, the
			// envelope does not carry them as written, and the signature rightly fails.
			if errors.Is(err, director.ErrSignature) && json.Valid(signed) && len(bytes.TrimSpace(signed)) == len(signed) {
				t.Fatalf("Verify of bytes signed by the director key = %v", err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Verify accepted an invalid assignment: %v", err)
		}
		if a.Images == nil {
			a.Images = []director.Image{}
		}
		if c := marshal(t, a); !bytes.Equal(c, signed) {
			t.Fatalf("Verify accepted %q, whose canonical encoding is %q", signed, c)
		}
	})
}

// seedCorpus is the seed input of FuzzVerify by file name, with the sentinel each must
// fail with under fuzzExpect (nil: accepted).
func seedCorpus(t *testing.T) map[string]struct {
	data []byte
	want error
} {
	key := directorKey(t)
	valid := mustIssue(t, key, validAssignment())
	signed := signedOf(t, valid)
	windowsSigned := signedOf(t, mustIssue(t, key, withWindows()))
	noImages := validAssignment()
	noImages.Images = nil
	type seed = struct {
		data []byte
		want error
	}
	return map[string]seed{
		"valid":           {valid, nil},
		"valid-no-images": {mustIssue(t, key, noImages), nil},
		"other-key":       {mustIssue(t, otherKey(t), validAssignment()), director.ErrSignature},
		"two-signatures":  {envelope(t, signed, sign(t, key, signed), sign(t, key, signed)), director.ErrSignature},
		"flipped-byte":    {replaceOnce(t, valid, `"counter":7`, `"counter":8`), director.ErrSignature},
		"reindented":      {resigned(t, indent(t, signed)), director.ErrNotCanonical},
		"duplicate-key":   {resigned(t, replaceOnce(t, signed, `"counter":7`, `"counter":7,"counter":8`)), director.ErrNotCanonical},
		"unknown-field":   {resigned(t, replaceOnce(t, signed, `"counter":7`, `"counter":7,"x":1`)), director.ErrMalformed},
		"trailing-data":   {append(bytes.Clone(valid), "{}"...), director.ErrMalformed},
		"two-os-images":   {resigned(t, replaceOnce(t, signed, `"kind":"app"`, `"kind":"os"`)), director.ErrMalformed},
		"zero-length":     {resigned(t, replaceOnce(t, signed, `"length":3145728`, `"length":0`)), director.ErrMalformed},
		"other-device":    {mustIssue(t, key, func() director.Assignment { a := validAssignment(); a.DeviceID = deviceB; return a }()), director.ErrWrongDevice},
		"expired": {mustIssue(t, key, func() director.Assignment {
			a := validAssignment()
			a.IssuedAt = issuedAt.Add(-2 * time.Hour)
			a.ExpiresAt = issuedAt
			return a
		}()), director.ErrExpired},
		"empty": {[]byte{}, director.ErrMalformed},
		// Issue 12: install windows, the deferral bound and ignore_window.
		"valid-windows":       {mustIssue(t, key, withWindows()), nil},
		"overlapping-windows": {resigned(t, replaceOnce(t, windowsSigned, `"from":"2026-03-02T14:00:00Z"`, `"from":"2026-03-01T16:00:00Z"`)), director.ErrMalformed},
		"empty-window-list":   {resigned(t, replaceOnce(t, signed, `]}`, `],"install_windows":[]}`)), director.ErrNotCanonical},
		"deferral-over-bound": {resigned(t, replaceOnce(t, windowsSigned, `"max_deferral_seconds":86400`, `"max_deferral_seconds":604801`)), director.ErrMalformed},
	}
}

// TestFuzzSeeds checks that the committed seed corpus still means what its names say (the
// valid seeds are signed by the fixed test key); with -update it writes it anew.
func TestFuzzSeeds(t *testing.T) {
	t.Parallel()
	seeds := seedCorpus(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, s := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s.data)))
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != len(seeds) {
		t.Fatalf("seed corpus %s: %d files, %v; want %d (run with -update)", dir, len(ents), err, len(seeds))
	}
	pub := &directorKey(t).PublicKey
	for _, e := range ents {
		s, ok := seeds[e.Name()]
		if !ok {
			t.Errorf("%s/%s: not a known seed (run with -update)", dir, e.Name())
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lit, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), "go test fuzz v1\n[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")")
		data, err := strconv.Unquote(lit)
		if !ok || !ok2 || err != nil {
			t.Errorf("%s/%s: not a []byte seed: %v", dir, e.Name(), err)
			continue
		}
		_, err = director.Verify([]byte(data), pub, fuzzExpect())
		if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
			t.Errorf("Verify(%s/%s) = %v, want %v", dir, e.Name(), err, s.want)
		}
	}
}
