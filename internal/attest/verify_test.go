package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
)

func TestAttest_AcceptsValidEvidence(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]attest.Evidence{
		"two measurements": validEvidence(t),
		"no measurements":  func() attest.Evidence { e := validEvidence(t); e.Measurements = nil; return e }(),
		"development":      func() attest.Evidence { e := validEvidence(t); e.DevelopmentMode = true; return e }(),
	} {
		env := mustSign(t, keyA(t), e)
		got, err := attest.Verify(env, &keyA(t).PublicKey, expectA(t))
		if err != nil {
			t.Fatalf("%s: Verify = %v", name, err)
		}
		if e.Measurements == nil {
			e.Measurements = []attest.Measurement{}
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("%s: Verify (-signed +verified):\n%s", name, diff)
		}
	}
}

func TestKeyID_IsDeviceID(t *testing.T) {
	t.Parallel()
	kid, err := attest.KeyID(&keyA(t).PublicKey)
	if err != nil || kid != idOf(keyA(t)) {
		t.Errorf("KeyID = %q, %v; want the device ID %q", kid, err, idOf(keyA(t)))
	}
}

// TestAttest_RejectsReplayedEvidence (ATTACKS row 2): evidence captured in the session
// with nonce A is refused in a new session with nonce B.
func TestAttest_RejectsReplayedEvidence(t *testing.T) {
	t.Parallel()
	env := mustSign(t, keyA(t), validEvidence(t))
	want := expectA(t)
	want.Nonce = nonceB
	got, err := attest.Verify(env, &keyA(t).PublicKey, want)
	if !errors.Is(err, attest.ErrNonce) {
		t.Fatalf("Verify(evidence for nonce A, session nonce B) = %v, want %v", err, attest.ErrNonce)
	}
	if !cmp.Equal(got, attest.Evidence{}) {
		t.Errorf("Verify returned %+v with an error", got)
	}
	// A nonce of the same length differing in one character is still refused.
	want.Nonce = nonceA[:len(nonceA)-2] + "Q" + nonceA[len(nonceA)-1:]
	if _, err := attest.Verify(env, &keyA(t).PublicKey, want); !errors.Is(err, attest.ErrNonce) {
		t.Errorf("Verify(nonce differing in one character) = %v, want %v", err, attest.ErrNonce)
	}
}

// TestAttest_RejectsOtherDevicesKey: evidence naming device A but signed by device B's
// key is refused whether the server checks it against A's key or B's.
func TestAttest_RejectsOtherDevicesKey(t *testing.T) {
	t.Parallel()
	forged := mustSign(t, keyB(t), validEvidence(t)) // names A, signed by B
	// Checked as device A (A's registered key): the signature is not A's.
	if _, err := attest.Verify(forged, &keyA(t).PublicKey, expectA(t)); !errors.Is(err, attest.ErrSignature) {
		t.Errorf("Verify(A's evidence signed by B, A's key) = %v, want %v", err, attest.ErrSignature)
	}
	// Checked with B's key for a session claiming to be A: the key does not identify A.
	if _, err := attest.Verify(forged, &keyB(t).PublicKey, expectA(t)); !errors.Is(err, attest.ErrWrongDevice) {
		t.Errorf("Verify(A's evidence signed by B, B's key, session A) = %v, want %v", err, attest.ErrWrongDevice)
	}
	// Checked as device B: the evidence names A.
	wantB := expectA(t)
	wantB.DeviceID = idOf(keyB(t))
	if _, err := attest.Verify(forged, &keyB(t).PublicKey, wantB); !errors.Is(err, attest.ErrWrongDevice) {
		t.Errorf("Verify(A's evidence signed by B, session B) = %v, want %v", err, attest.ErrWrongDevice)
	}
	// B's honest evidence presented in a session for A.
	e := validEvidence(t)
	e.DeviceID = idOf(keyB(t))
	honestB := mustSign(t, keyB(t), e)
	if _, err := attest.Verify(honestB, &keyB(t).PublicKey, expectA(t)); !errors.Is(err, attest.ErrWrongDevice) {
		t.Errorf("Verify(B's evidence, session A) = %v, want %v", err, attest.ErrWrongDevice)
	}
	if _, err := attest.Verify(honestB, &keyB(t).PublicKey, wantB); err != nil {
		t.Errorf("Verify(B's evidence, session B) = %v", err)
	}
}

func TestAttest_RejectsStaleEvidence(t *testing.T) {
	t.Parallel()
	env := mustSign(t, keyA(t), validEvidence(t))
	for _, tc := range []struct {
		now  time.Time
		skew time.Duration
		want error
	}{
		{attestedAt, 0, nil},
		{attestedAt.Add(attest.DefaultMaxSkew), 0, nil},
		{attestedAt.Add(-attest.DefaultMaxSkew), 0, nil},
		{attestedAt.Add(attest.DefaultMaxSkew + time.Second), 0, attest.ErrStale},  // old evidence
		{attestedAt.Add(-attest.DefaultMaxSkew - time.Second), 0, attest.ErrStale}, // from the future
		{attestedAt.Add(24 * time.Hour), 0, attest.ErrStale},
		{attestedAt.Add(30 * time.Second), 10 * time.Second, attest.ErrStale},
		{attestedAt.Add(10 * time.Second), 10 * time.Second, nil},
	} {
		want := expectA(t)
		want.Now, want.MaxSkew = tc.now, tc.skew
		_, err := attest.Verify(env, &keyA(t).PublicKey, want)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Verify(now %s, skew %s) = %v, want %v", tc.now.Format(time.RFC3339), tc.skew, err, tc.want)
		}
	}
}

// TestAttest_RejectsAmbiguousEncoding (ATTACKS row 5): each case is signed by the right
// key, so only the encoding rule refuses it.
func TestAttest_RejectsAmbiguousEncoding(t *testing.T) {
	t.Parallel()
	valid := mustSign(t, keyA(t), validEvidence(t))
	signed := signedOf(t, valid)
	for name, tc := range map[string]struct {
		env  []byte
		want error
	}{
		"duplicate key":          {resigned(t, replaceOnce(t, signed, `"development_mode":false`, `"development_mode":true,"development_mode":false`)), attest.ErrNotCanonical},
		"duplicate nonce":        {resigned(t, replaceOnce(t, signed, `"nonce":`, `"nonce":"`+nonceB+`","nonce":`)), attest.ErrNotCanonical},
		"reordered":              {resigned(t, replaceOnce(t, replaceOnce(t, signed, `"format":1,`, ``), `"nonce":`, `"format":1,"nonce":`)), attest.ErrNotCanonical},
		"padded":                 {resigned(t, indent(t, signed)), attest.ErrNotCanonical},
		"escaped":                {resigned(t, replaceOnce(t, signed, `"os/moat-os/3.1.0"`, `"os\/moat-os\/3.1.0"`)), attest.ErrNotCanonical},
		"null measurements":      {resigned(t, replaceOnce(t, marshal(t, func() attest.Evidence { e := validEvidence(t); e.Measurements = nil; return e }()), `"measurements":[]`, `"measurements":null`)), attest.ErrNotCanonical},
		"fractional time":        {resigned(t, replaceOnce(t, signed, `"2026-03-01T12:00:00Z"`, `"2026-03-01T12:00:00.000Z"`)), attest.ErrNotCanonical},
		"offset time":            {resigned(t, replaceOnce(t, signed, `"2026-03-01T12:00:00Z"`, `"2026-03-01T13:00:00+01:00"`)), attest.ErrMalformed}, // round-trips, so Validate refuses it,
		"envelope padded":        {append([]byte(" "), valid...), attest.ErrNotCanonical},
		"envelope reordered":     {[]byte(`{"signatures":` + string(mustJSON(t, envelopeOf(t, valid).Signatures)) + `,"signed":` + string(signed) + `}`), attest.ErrNotCanonical},
		"envelope duplicate key": {replaceOnce(t, valid, `{"signed":`, `{"signatures":[],"signed":`), attest.ErrNotCanonical},
		"trailing data":          {append(bytes.Clone(valid), "{}"...), attest.ErrMalformed},
		"trailing in signed":     {resigned(t, append(bytes.Clone(signed), ` {}`...)), attest.ErrMalformed},
		"unknown field":          {resigned(t, replaceOnce(t, signed, `"format":1`, `"format":1,"x":1`)), attest.ErrMalformed},
		"unknown envelope field": {replaceOnce(t, valid, `{"signed":`, `{"x":1,"signed":`), attest.ErrMalformed},
		"signed is null":         {envelope(t, []byte("null")), attest.ErrMalformed},
	} {
		_, err := attest.Verify(tc.env, &keyA(t).PublicKey, expectA(t))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.want)
		}
	}
}

func TestAttest_RejectsSignatureProblems(t *testing.T) {
	t.Parallel()
	valid := mustSign(t, keyA(t), validEvidence(t))
	signed := signedOf(t, valid)
	s := envelopeOf(t, valid).Signatures[0]
	unpadded := s
	unpadded.Sig = strings.TrimRight(s.Sig, "=")
	urlSafe := s
	urlSafe.Sig = strings.NewReplacer("+", "-", "/", "_").Replace(s.Sig)
	for name, env := range map[string][]byte{
		"no signatures":    envelope(t, signed),
		"two signatures":   envelope(t, signed, sign(t, keyA(t), signed), sign(t, keyA(t), signed)),
		"wrong key id":     envelope(t, signed, attest.Signature{KeyID: idOf(keyB(t)), Sig: s.Sig}),
		"unpadded base64":  envelope(t, signed, unpadded),
		"url-safe base64":  envelope(t, signed, urlSafe),
		"empty signature":  envelope(t, signed, attest.Signature{KeyID: s.KeyID}),
		"signed by B as A": envelope(t, signed, attest.Signature{KeyID: s.KeyID, Sig: sign(t, keyB(t), signed).Sig}),
	} {
		if name == "unpadded base64" && unpadded.Sig == s.Sig || name == "url-safe base64" && urlSafe.Sig == s.Sig {
			continue // this signature happens to have no such characters
		}
		if _, err := attest.Verify(env, &keyA(t).PublicKey, expectA(t)); !errors.Is(err, attest.ErrSignature) {
			t.Errorf("%s: Verify = %v, want %v", name, err, attest.ErrSignature)
		}
	}
}

// TestAttest_RejectsForgery flips every bit of every byte of a valid envelope; no variant
// is accepted.
func TestAttest_RejectsForgery(t *testing.T) {
	t.Parallel()
	valid := mustSign(t, keyA(t), validEvidence(t))
	pub := &keyA(t).PublicKey
	want := expectA(t)
	for i := range valid {
		for bit := range 8 {
			b := bytes.Clone(valid)
			b[i] ^= 1 << bit
			if e, err := attest.Verify(b, pub, want); err == nil {
				t.Fatalf("Verify accepted the envelope with bit %d of byte %d flipped: %+v", bit, i, e)
			}
		}
	}
}

func TestAttest_RejectsTooLarge(t *testing.T) {
	t.Parallel()
	valid := mustSign(t, keyA(t), validEvidence(t))
	want := expectA(t)
	want.MaxBytes = len(valid) - 1
	if _, err := attest.Verify(valid, &keyA(t).PublicKey, want); !errors.Is(err, attest.ErrTooLarge) {
		t.Errorf("Verify(%d bytes, limit %d) = %v, want %v", len(valid), want.MaxBytes, err, attest.ErrTooLarge)
	}
	want.MaxBytes = len(valid)
	if _, err := attest.Verify(valid, &keyA(t).PublicKey, want); err != nil {
		t.Errorf("Verify(at the limit) = %v", err)
	}
	big := append(bytes.Clone(valid), bytes.Repeat([]byte(" "), attest.DefaultMaxBytes)...)
	if _, err := attest.Verify(big, &keyA(t).PublicKey, expectA(t)); !errors.Is(err, attest.ErrTooLarge) {
		t.Errorf("Verify(over the default limit) = %v, want %v", err, attest.ErrTooLarge)
	}
}

func TestVerify_RefusesBadExpectations(t *testing.T) {
	t.Parallel()
	valid := mustSign(t, keyA(t), validEvidence(t))
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		pub  *ecdsa.PublicKey
		want func(*attest.Expect)
	}{
		"no device":     {&keyA(t).PublicKey, func(e *attest.Expect) { e.DeviceID = "" }},
		"no nonce":      {&keyA(t).PublicKey, func(e *attest.Expect) { e.Nonce = "" }},
		"no time":       {&keyA(t).PublicKey, func(e *attest.Expect) { e.Now = time.Time{} }},
		"negative max":  {&keyA(t).PublicKey, func(e *attest.Expect) { e.MaxBytes = -1 }},
		"negative skew": {&keyA(t).PublicKey, func(e *attest.Expect) { e.MaxSkew = -time.Second }},
		"nil key":       {nil, func(*attest.Expect) {}},
		"P-384 key":     {&p384.PublicKey, func(*attest.Expect) {}},
	} {
		want := expectA(t)
		tc.want(&want)
		if _, err := attest.Verify(valid, tc.pub, want); err == nil {
			t.Errorf("%s: Verify accepted", name)
		}
	}
}

func TestSign_RefusesInvalidEvidence(t *testing.T) {
	t.Parallel()
	e := validEvidence(t)
	e.Nonce = "short"
	if _, err := attest.Sign(keySigner{keyA(t)}, e); err == nil {
		t.Error("Sign accepted an invalid nonce")
	}
	if _, err := attest.Sign(nil, validEvidence(t)); err == nil {
		t.Error("Sign accepted a nil signer")
	}
	// Sign normalises the time and format.
	e = validEvidence(t)
	e.Format = 0
	e.Time = attestedAt.Add(700 * time.Millisecond).In(time.FixedZone("X", 3600))
	got, err := attest.Verify(mustSign(t, keyA(t), e), &keyA(t).PublicKey, expectA(t))
	if err != nil || !got.Time.Equal(attestedAt) || got.Format != attest.Format {
		t.Errorf("Verify(signed with a local fractional time) = %+v, %v", got, err)
	}
}

func TestSign_WithFileKey(t *testing.T) {
	t.Parallel()
	k, err := identity.CreateFileKey(t.TempDir() + "/identity.pem")
	if err != nil {
		t.Fatal(err)
	}
	e := validEvidence(t)
	e.DeviceID = string(k.ID())
	env, err := attest.Sign(k, e)
	if err != nil {
		t.Fatal(err)
	}
	want := expectA(t)
	want.DeviceID = string(k.ID())
	if _, err := attest.Verify(env, k.Public(), want); err != nil {
		t.Errorf("Verify(evidence signed by a FileKey) = %v", err)
	}
}

func TestNewNonce(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		n := attest.NewNonce()
		e := validEvidence(t)
		e.Nonce = n
		if err := e.Validate(); err != nil {
			t.Fatalf("NewNonce() = %q: %v", n, err)
		}
		if seen[n] {
			t.Fatalf("NewNonce repeated %q", n)
		}
		seen[n] = true
	}
}
