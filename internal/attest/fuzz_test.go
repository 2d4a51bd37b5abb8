package attest_test

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

	"github.com/moat-iot/moat/internal/attest"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz")

// FuzzVerify (ATTACKS row 5): no panic; whatever Verify accepts is valid, names device A
// and nonce A, and verifies again to the same evidence; with another nonce it is refused.
func FuzzVerify(f *testing.F) {
	pub := &keyA(f).PublicKey
	want := expectA(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := attest.Verify(data, pub, want)
		if err != nil {
			if !cmp.Equal(e, attest.Evidence{}) {
				t.Fatalf("Verify returned %+v with error %v", e, err)
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("Verify accepted invalid evidence: %v", err)
		}
		if e.DeviceID != want.DeviceID || e.Nonce != want.Nonce {
			t.Fatalf("Verify accepted evidence of device %s nonce %s", e.DeviceID, e.Nonce)
		}
		again, err := attest.Verify(bytes.Clone(data), pub, want)
		if err != nil {
			t.Fatalf("second Verify = %v, first accepted", err)
		}
		if diff := cmp.Diff(e, again); diff != "" {
			t.Fatalf("second Verify differs (-first +second):\n%s", diff)
		}
		other := want
		other.Nonce = nonceB
		if _, err := attest.Verify(data, pub, other); !errors.Is(err, attest.ErrNonce) {
			t.Fatalf("Verify with another nonce = %v, want %v", err, attest.ErrNonce)
		}
	})
}

// FuzzVerifySigned reaches what FuzzVerify's mutations cannot get past the signature: it
// signs the fuzzed evidence bytes with device A's key, so strict decoding, the canonical
// check and Validate see arbitrary signed input. Accepted bytes must be exactly the
// canonical encoding of what Verify returned.
func FuzzVerifySigned(f *testing.F) {
	key := keyA(f)
	signed := signedOf(f, mustSign(f, key, validEvidence(f)))
	f.Add(signed)
	f.Add(replaceOnce(f, signed, `"format":1`, `"format":1,"format":2`))
	f.Add(replaceOnce(f, signed, `"kind":"app"`, `"kind":"os"`))
	f.Add(replaceOnce(f, signed, `"2026-03-01T12:00:00Z"`, `"2026-03-01T12:00:00.5Z"`))
	f.Add([]byte(`{"format":1,"measurements":null}`))
	f.Fuzz(func(t *testing.T, signed []byte) {
		env := resigned(t, signed)
		e, err := attest.Verify(env, &key.PublicKey, expectA(t))
		if err != nil {
			if errors.Is(err, attest.ErrSignature) && json.Valid(signed) && len(bytes.TrimSpace(signed)) == len(signed) {
				t.Fatalf("Verify of bytes signed by the device key = %v", err)
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("Verify accepted invalid evidence: %v", err)
		}
		if c := marshal(t, e); !bytes.Equal(c, signed) {
			t.Fatalf("Verify accepted %q, whose canonical encoding is %q", signed, c)
		}
	})
}

type seed struct {
	data []byte
	want error
}

// seedCorpus is the seed input of FuzzVerify by file name, with the sentinel each must
// fail with under expectA (nil: accepted).
func seedCorpus(t *testing.T) map[string]seed {
	key := keyA(t)
	valid := mustSign(t, key, validEvidence(t))
	signed := signedOf(t, valid)
	with := func(change func(*attest.Evidence)) attest.Evidence {
		e := validEvidence(t)
		change(&e)
		return e
	}
	return map[string]seed{
		"valid":             {valid, nil},
		"valid-no-measures": {mustSign(t, key, with(func(e *attest.Evidence) { e.Measurements = nil })), nil},
		"valid-development": {mustSign(t, key, with(func(e *attest.Evidence) { e.DevelopmentMode = true })), nil},
		"other-key":         {mustSign(t, keyB(t), validEvidence(t)), attest.ErrSignature},
		"two-signatures":    {envelope(t, signed, sign(t, key, signed), sign(t, key, signed)), attest.ErrSignature},
		"flipped-byte":      {replaceOnce(t, valid, `"development_mode":false`, `"development_mode":true`), attest.ErrSignature},
		"reindented":        {resigned(t, indent(t, signed)), attest.ErrNotCanonical},
		"duplicate-key":     {resigned(t, replaceOnce(t, signed, `"format":1`, `"format":1,"format":1`)), attest.ErrNotCanonical},
		"unknown-field":     {resigned(t, replaceOnce(t, signed, `"format":1`, `"format":1,"x":1`)), attest.ErrMalformed},
		"trailing-data":     {append(bytes.Clone(valid), "{}"...), attest.ErrMalformed},
		"two-os":            {resigned(t, replaceOnce(t, signed, `"kind":"app"`, `"kind":"os"`)), attest.ErrMalformed},
		"other-device":      {mustSign(t, key, with(func(e *attest.Evidence) { e.DeviceID = idOf(keyB(t)) })), attest.ErrWrongDevice},
		"other-nonce":       {mustSign(t, key, with(func(e *attest.Evidence) { e.Nonce = nonceB })), attest.ErrNonce},
		"stale":             {mustSign(t, key, with(func(e *attest.Evidence) { e.Time = attestedAt.Add(-time.Hour) })), attest.ErrStale},
		"empty":             {[]byte{}, attest.ErrMalformed},
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
	pub := &keyA(t).PublicKey
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
		_, err = attest.Verify([]byte(data), pub, expectA(t))
		if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
			t.Errorf("Verify(%s/%s) = %v, want %v", dir, e.Name(), err, s.want)
		}
	}
}
