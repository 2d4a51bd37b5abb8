package director_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moat-iot/moat/internal/director"
)

func TestIssueVerify_RoundTrip(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	for name, a := range map[string]director.Assignment{
		"os-and-app": validAssignment(),
		"no-images":  func() director.Assignment { a := validAssignment(); a.Images = nil; return a }(),
		"os-only":    func() director.Assignment { a := validAssignment(); a.Images = a.Images[:1]; return a }(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := mustIssue(t, key, a)
			got, err := director.Verify(env, &key.PublicKey, expectA())
			if err != nil {
				t.Fatalf("Verify(Issue(a)) = %v", err)
			}
			if diff := cmp.Diff(a, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Verify(Issue(a)) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIssue_NormalizesTimes(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	a := validAssignment()
	zone := time.FixedZone("CET", 3600)
	a.IssuedAt = issuedAt.Add(700 * time.Millisecond).In(zone)
	a.ExpiresAt = a.ExpiresAt.Add(300 * time.Millisecond).In(zone)
	got, err := director.Verify(mustIssue(t, key, a), &key.PublicKey, expectA())
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if !got.IssuedAt.Equal(issuedAt) || got.IssuedAt.Location() != time.UTC {
		t.Errorf("IssuedAt = %v, want %v", got.IssuedAt, issuedAt)
	}
	if want := issuedAt.Add(24 * time.Hour); !got.ExpiresAt.Equal(want) || got.ExpiresAt.Location() != time.UTC {
		t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, want)
	}
	if s := signedOf(t, mustIssue(t, key, a)); !bytes.Contains(s, []byte(`"issued_at":"2026-03-01T12:00:00Z"`)) {
		t.Errorf("signed = %s, want issued_at in RFC 3339 UTC seconds", s)
	}
}

func TestIssue_RefusesInvalid(t *testing.T) {
	t.Parallel()
	a := validAssignment()
	a.Images = append(a.Images, a.Images[0])
	if env, err := director.Issue(directorKey(t), a); err == nil {
		t.Fatalf("Issue(two os images) = %s, want error", env)
	}
	if _, err := director.Issue(nil, validAssignment()); err == nil {
		t.Fatal("Issue(nil key) succeeded")
	}
}

// TestVerify_Rejects is the table of crafted envelopes; each must fail with its sentinel.
// The named attack tests below cover the rules the package comment cites.
func TestVerify_Rejects(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	valid := mustIssue(t, key, validAssignment())
	validSigned := signedOf(t, valid)
	with := func(f func(*director.Assignment)) []byte {
		a := validAssignment()
		f(&a)
		return resigned(t, marshal(t, a))
	}
	expect := func(f func(*director.Expect)) director.Expect {
		e := expectA()
		f(&e)
		return e
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		expect director.Expect
		want   error
	}{
		// Signature (rule 2).
		{"bad-signature", envelope(t, validSigned, sign(t, key, []byte("something else"))), expectA(), director.ErrSignature},
		{"signature-not-base64", replaceOnce(t, valid, `"sig":"`, `"sig":"*`), expectA(), director.ErrSignature},
		{"signature-base64-with-newline", replaceOnce(t, valid, `"sig":"`, `"sig":"\n`), expectA(), director.ErrSignature},
		{"signature-by-second-key", envelope(t, validSigned, sign(t, otherKey(t), validSigned)), expectA(), director.ErrSignature},
		{"second-key-signature-under-pinned-keyid", envelope(t, validSigned, director.Signature{
			KeyID: keyID(t, key), Sig: sign(t, otherKey(t), validSigned).Sig,
		}), expectA(), director.ErrSignature},
		{"two-signatures", envelope(t, validSigned, sign(t, key, validSigned), sign(t, key, validSigned)), expectA(), director.ErrSignature},
		{"pinned-and-other-signature", envelope(t, validSigned, sign(t, key, validSigned), sign(t, otherKey(t), validSigned)), expectA(), director.ErrSignature},
		{"no-signatures", envelope(t, validSigned), expectA(), director.ErrSignature},
		{"flipped-byte-in-signed", replaceOnce(t, valid, `"counter":7`, `"counter":8`), expectA(), director.ErrSignature},
		{"flipped-hash-in-signed", replaceOnce(t, valid, `"sha256":"abab`, `"sha256":"abac`), expectA(), director.ErrSignature},

		// Canonical form (ATTACKS row 22); each re-signed by the director key.
		{"reindented-signed", resigned(t, indent(t, validSigned)), expectA(), director.ErrNotCanonical},
		{"padded-signed", resigned(t, replaceOnce(t, validSigned, `{"version"`, `{ "version"`)), expectA(), director.ErrNotCanonical},
		{"duplicate-key", resigned(t, replaceOnce(t, validSigned, `"counter":7`, `"counter":7,"counter":8`)), expectA(), director.ErrNotCanonical},
		{"duplicate-image-key", resigned(t, replaceOnce(t, validSigned, `"kind":"os"`, `"kind":"app","kind":"os"`)), expectA(), director.ErrNotCanonical},
		{"reordered-fields", resigned(t, replaceOnce(t, validSigned, `"version":1,"device_id":"`+deviceA+`"`, `"device_id":"`+deviceA+`","version":1`)), expectA(), director.ErrNotCanonical},
		{"escaped-character", resigned(t, replaceOnce(t, validSigned, `"device_id":"dev_`, `"device_id":"\u0064ev_`)), expectA(), director.ErrNotCanonical},
		{"time-with-offset", resigned(t, replaceOnce(t, validSigned, `"2026-03-01T12:00:00Z"`, `"2026-03-01T13:00:00+01:00"`)), expectA(), director.ErrMalformed},
		{"time-with-zero-offset", resigned(t, replaceOnce(t, validSigned, `"2026-03-01T12:00:00Z"`, `"2026-03-01T12:00:00+00:00"`)), expectA(), director.ErrNotCanonical},
		{"time-with-zero-fraction", resigned(t, replaceOnce(t, validSigned, `"2026-03-01T12:00:00Z"`, `"2026-03-01T12:00:00.000Z"`)), expectA(), director.ErrNotCanonical},
		{"null-images", resigned(t, replaceOnce(t, marshal(t, func() director.Assignment { a := validAssignment(); a.Images = nil; return a }()), `"images":null`, `"images":null`)), expectA(), director.ErrNotCanonical},
		{"envelope-reordered", []byte(`{"signatures":` + string(mustJSON(t, envelopeOf(t, valid).Signatures)) + `,"signed":` + string(validSigned) + `}`), expectA(), director.ErrNotCanonical},
		{"envelope-duplicate-signed", replaceOnce(t, valid, `{"signed":`, `{"signed":{},"signed":`), expectA(), director.ErrNotCanonical},
		{"trailing-newline", append(bytes.Clone(valid), '\n'), expectA(), director.ErrNotCanonical},

		// Strict decoding.
		{"unknown-field", resigned(t, replaceOnce(t, validSigned, `"counter":7`, `"counter":7,"priority":"force"`)), expectA(), director.ErrMalformed},
		{"unknown-image-field", resigned(t, replaceOnce(t, validSigned, `"kind":"os"`, `"kind":"os","url":"http://evil"`)), expectA(), director.ErrMalformed},
		{"unknown-envelope-field", replaceOnce(t, valid, `{"signed":`, `{"unsigned":{"counter":9},"signed":`), expectA(), director.ErrMalformed},
		{"trailing-data", append(bytes.Clone(valid), 'x'), expectA(), director.ErrMalformed},
		{"trailing-value", append(bytes.Clone(valid), valid...), expectA(), director.ErrMalformed},
		{"not-json", []byte("signed"), expectA(), director.ErrMalformed},
		{"empty", nil, expectA(), director.ErrMalformed},
		{"signed-null", envelope(t, []byte("null"), sign(t, key, []byte("null"))), expectA(), director.ErrMalformed},
		{"signed-array", resigned(t, []byte("[]")), expectA(), director.ErrMalformed},
		{"counter-float", resigned(t, replaceOnce(t, validSigned, `"counter":7`, `"counter":7.0`)), expectA(), director.ErrMalformed},
		{"length-negative", with(func(a *director.Assignment) { a.Images[0].Length = -1 }), expectA(), director.ErrMalformed},

		// Content (Validate).
		{"two-os-images", with(func(a *director.Assignment) { a.Images[1] = a.Images[0] }), expectA(), director.ErrMalformed},
		{"nine-images", with(func(a *director.Assignment) {
			for len(a.Images) < 9 {
				a.Images = append(a.Images, a.Images[0])
			}
		}), expectA(), director.ErrMalformed},
		{"hash-upper-case", with(func(a *director.Assignment) { a.Images[0].SHA256 = strings.Repeat("AB", 32) }), expectA(), director.ErrMalformed},
		{"hash-short", with(func(a *director.Assignment) { a.Images[0].SHA256 = "abab" }), expectA(), director.ErrMalformed},
		{"hash-not-hex", with(func(a *director.Assignment) { a.Images[0].SHA256 = strings.Repeat("zz", 32) }), expectA(), director.ErrMalformed},
		{"zero-length", with(func(a *director.Assignment) { a.Images[0].Length = 0 }), expectA(), director.ErrMalformed},
		{"length-over-max", with(func(a *director.Assignment) { a.Images[0].Length = director.MaxImageBytes + 1 }), expectA(), director.ErrMalformed},
		{"unknown-kind", with(func(a *director.Assignment) { a.Images[0].Kind = "firmware" }), expectA(), director.ErrMalformed},
		{"os-kind-app-path", with(func(a *director.Assignment) { a.Images[0].Path = "apps/moat-os/3.1.0" }), expectA(), director.ErrMalformed},
		{"app-kind-os-path", with(func(a *director.Assignment) { a.Images[1].Path = "os/dw100/1.2.0" }), expectA(), director.ErrMalformed},
		{"path-traversal", with(func(a *director.Assignment) { a.Images[1].Path = "apps/../os/1.2.0" }), expectA(), director.ErrMalformed},
		{"path-not-version", with(func(a *director.Assignment) { a.Images[1].Path = "apps/dw100/1.1.0" }), expectA(), director.ErrMalformed},
		{"format-2", with(func(a *director.Assignment) { a.Version = 2 }), expectA(), director.ErrMalformed},
		{"counter-zero", with(func(a *director.Assignment) { a.Counter = 0 }), expect(func(e *director.Expect) { e.LastCounter = 0 }), director.ErrMalformed},
		{"fractional-seconds", with(func(a *director.Assignment) { a.IssuedAt = a.IssuedAt.Add(time.Millisecond) }), expectA(), director.ErrMalformed},
		{"validity-too-long", with(func(a *director.Assignment) { a.ExpiresAt = a.IssuedAt.Add(director.MaxValidity + time.Second) }), expectA(), director.ErrMalformed},
		{"expires-before-issued", with(func(a *director.Assignment) { a.ExpiresAt = a.IssuedAt.Add(-time.Second) }), expectA(), director.ErrMalformed},
		{"empty-device-id", with(func(a *director.Assignment) { a.DeviceID = "" }), expectA(), director.ErrMalformed},

		// Binding to this device (ATTACKS row 19).
		{"other-device", valid, expect(func(e *director.Expect) { e.DeviceID = deviceB }), director.ErrWrongDevice},
		{"other-tenant", valid, expect(func(e *director.Expect) { e.TenantID = tenantB }), director.ErrWrongDevice},

		// Validity window (freeze).
		{"expired-at-expiry", valid, expect(func(e *director.Expect) { e.Now = issuedAt.Add(24 * time.Hour) }), director.ErrExpired},
		{"expired-after", valid, expect(func(e *director.Expect) { e.Now = issuedAt.Add(48 * time.Hour) }), director.ErrExpired},
		{"issued-in-future", valid, expect(func(e *director.Expect) { e.Now = issuedAt.Add(-director.ClockSkew - time.Second) }), director.ErrExpired},

		// Counter (replay of an older assignment).
		{"counter-equal", valid, expect(func(e *director.Expect) { e.LastCounter = 7 }), director.ErrReplayed},
		{"counter-lower", valid, expect(func(e *director.Expect) { e.LastCounter = 1 << 40 }), director.ErrReplayed},

		// Size.
		{"over-max-bytes", valid, expect(func(e *director.Expect) { e.MaxBytes = len(valid) - 1 }), director.ErrTooLarge},
		{"over-default-max", append(bytes.Clone(valid), bytes.Repeat([]byte(" "), director.DefaultMaxBytes)...), expectA(), director.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, err := director.Verify(tc.data, &key.PublicKey, tc.expect)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify(%.200s) = %+v, %v, want %v", tc.data, a, err, tc.want)
			}
			if diff := cmp.Diff(director.Assignment{}, a); diff != "" {
				t.Errorf("Verify returned a non-zero assignment with an error:\n%s", diff)
			}
		})
	}
}

func TestVerify_Accepts(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	valid := mustIssue(t, key, validAssignment())
	for name, e := range map[string]func(*director.Expect){
		"within-clock-skew":  func(e *director.Expect) { e.Now = issuedAt.Add(-director.ClockSkew) },
		"just-before-expiry": func(e *director.Expect) { e.Now = issuedAt.Add(24*time.Hour - time.Nanosecond) },
		"first-assignment":   func(e *director.Expect) { e.LastCounter = 0 },
		"exact-max-bytes":    func(e *director.Expect) { e.MaxBytes = len(valid) },
		"now-in-other-zone":  func(e *director.Expect) { e.Now = e.Now.In(time.FixedZone("X", -7*3600)) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := expectA()
			e(&want)
			if _, err := director.Verify(valid, &key.PublicKey, want); err != nil {
				t.Fatalf("Verify = %v, want nil", err)
			}
		})
	}
}

func TestVerify_RefusesBadExpect(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	valid := mustIssue(t, key, validAssignment())
	for name, f := range map[string]func(*director.Expect){
		"no-device":    func(e *director.Expect) { e.DeviceID = "" },
		"no-tenant":    func(e *director.Expect) { e.TenantID = "" },
		"no-time":      func(e *director.Expect) { e.Now = time.Time{} },
		"negative-max": func(e *director.Expect) { e.MaxBytes = -1 },
	} {
		e := expectA()
		f(&e)
		if _, err := director.Verify(valid, &key.PublicKey, e); err == nil {
			t.Errorf("Verify with %s = nil, want error", name)
		}
	}
	if _, err := director.Verify(valid, nil, expectA()); err == nil {
		t.Error("Verify with a nil key = nil, want error")
	}
}

// TestVerify_RejectsForgery: rule 2; an assignment the director key did not sign, or whose
// signed bytes were changed, is refused.
func TestVerify_RejectsForgery(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	valid := mustIssue(t, key, validAssignment())
	signed := signedOf(t, valid)
	i := bytes.Index(valid, signed)
	for off := range signed {
		env := bytes.Clone(valid)
		env[i+off] ^= 0x01
		if a, err := director.Verify(env, &key.PublicKey, expectA()); err == nil {
			t.Fatalf("Verify(signed byte %d flipped) = %+v, want error", off, a)
		}
	}
	forged := mustIssue(t, otherKey(t), validAssignment())
	if _, err := director.Verify(forged, &key.PublicKey, expectA()); !errors.Is(err, director.ErrSignature) {
		t.Fatalf("Verify(issued by another key) = %v, want %v", err, director.ErrSignature)
	}
}

// TestVerify_RejectsSignatureBySecondKey: only the pinned key counts, and exactly one
// signature: a valid signature by the pinned key beside one by another key is refused too.
func TestVerify_RejectsSignatureBySecondKey(t *testing.T) {
	t.Parallel()
	key, other := directorKey(t), otherKey(t)
	signed := signedOf(t, mustIssue(t, key, validAssignment()))
	for name, env := range map[string][]byte{
		"other-only":      envelope(t, signed, sign(t, other, signed)),
		"other-then-ours": envelope(t, signed, sign(t, other, signed), sign(t, key, signed)),
		"ours-then-other": envelope(t, signed, sign(t, key, signed), sign(t, other, signed)),
	} {
		if _, err := director.Verify(env, &key.PublicKey, expectA()); !errors.Is(err, director.ErrSignature) {
			t.Errorf("Verify(%s) = %v, want %v", name, err, director.ErrSignature)
		}
	}
}

// TestVerify_RejectsAmbiguousEncoding: ATTACKS row 22. A field appended after signing, or a
// duplicate of a signed field inside the signed bytes (re-signed, as a compromised or buggy
// signer might), never influences what is installed.
func TestVerify_RejectsAmbiguousEncoding(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	valid := mustIssue(t, key, validAssignment())
	signed := signedOf(t, valid)
	evil := `"sha256":"` + strings.Repeat("ee", 32) + `"`
	for name, env := range map[string][]byte{
		"duplicate-hash-signed":     resigned(t, replaceOnce(t, signed, `"sha256":"abab`, evil+`,"sha256":"abab`)),
		"duplicate-hash-last":       resigned(t, replaceOnce(t, signed, `"length":50331648`, `"length":50331648,`+evil)),
		"unsigned-field-appended":   replaceOnce(t, valid, `"signatures":`, `"images":[],"signatures":`),
		"second-signed-in-envelope": replaceOnce(t, valid, `,"signatures":`, `,"signed":`+string(resignedSignedWith(t, signed, evil))+`,"signatures":`),
	} {
		if a, err := director.Verify(env, &key.PublicKey, expectA()); err == nil {
			t.Errorf("Verify(%s) = %+v, want error", name, a)
		}
	}
}

func resignedSignedWith(t *testing.T, signed []byte, hash string) []byte {
	return replaceOnce(t, signed, `"sha256":"`+strings.Repeat("ab", 32)+`"`, hash)
}

// TestVerify_RejectsReplayToOtherDevice: ATTACKS row 19. An assignment issued for device A,
// valid in every other way, is refused by device B, and by a device of the same ID in
// another tenant.
func TestVerify_RejectsReplayToOtherDevice(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	forA := mustIssue(t, key, validAssignment())
	if _, err := director.Verify(forA, &key.PublicKey, expectA()); err != nil {
		t.Fatalf("Verify as device A = %v", err)
	}
	asB := expectA()
	asB.DeviceID = deviceB
	if _, err := director.Verify(forA, &key.PublicKey, asB); !errors.Is(err, director.ErrWrongDevice) {
		t.Errorf("Verify(for A) as device B = %v, want %v", err, director.ErrWrongDevice)
	}
	inB := expectA()
	inB.TenantID = tenantB
	if _, err := director.Verify(forA, &key.PublicKey, inB); !errors.Is(err, director.ErrWrongDevice) {
		t.Errorf("Verify(for A) as device A of tenant B = %v, want %v", err, director.ErrWrongDevice)
	}
}

// TestVerify_RejectsReplayedCounter: an older (or the same) assignment, replayed after a
// newer one was accepted, is refused.
func TestVerify_RejectsReplayedCounter(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	older := mustIssue(t, key, validAssignment())
	newer := validAssignment()
	newer.Counter++
	e := expectA()
	got, err := director.Verify(mustIssue(t, key, newer), &key.PublicKey, e)
	if err != nil {
		t.Fatal(err)
	}
	e.LastCounter = got.Counter
	for name, env := range map[string][]byte{"older": older, "same": mustIssue(t, key, newer)} {
		if _, err := director.Verify(env, &key.PublicKey, e); !errors.Is(err, director.ErrReplayed) {
			t.Errorf("Verify(%s) after counter %d = %v, want %v", name, e.LastCounter, err, director.ErrReplayed)
		}
	}
}

// TestVerify_RejectsOutsideValidity: freeze; an expired assignment, or one issued further
// in the future than the clock skew allows, is refused.
func TestVerify_RejectsOutsideValidity(t *testing.T) {
	t.Parallel()
	key := directorKey(t)
	env := mustIssue(t, key, validAssignment())
	for _, now := range []time.Time{
		issuedAt.Add(24 * time.Hour), issuedAt.Add(365 * 24 * time.Hour),
		issuedAt.Add(-director.ClockSkew - time.Second), issuedAt.Add(-24 * time.Hour),
	} {
		e := expectA()
		e.Now = now
		if _, err := director.Verify(env, &key.PublicKey, e); !errors.Is(err, director.ErrExpired) {
			t.Errorf("Verify at %s = %v, want %v", now, err, director.ErrExpired)
		}
	}
}

func TestValidate_ReportsEveryProblem(t *testing.T) {
	t.Parallel()
	a := validAssignment()
	a.Version = 0
	a.DeviceID = "dev A"
	a.TenantID = ""
	a.Counter = 0
	a.IssuedAt = time.Time{}
	a.Images[0].SHA256 = "x"
	a.Images[1].Kind = "os"
	err := a.Validate()
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate() = %v, want joined errors", err)
	}
	if got, want := len(j.Unwrap()), 8; got != want {
		t.Errorf("Validate() reported %d problems, want %d: %v", got, want, err)
	}
	if err := validAssignment().Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}

func TestKeyID(t *testing.T) {
	t.Parallel()
	a, b := keyID(t, directorKey(t)), keyID(t, otherKey(t))
	if len(a) != 64 || a == b || a != keyID(t, directorKey(t)) {
		t.Errorf("KeyID = %s, %s: want distinct, stable 64-hex IDs", a, b)
	}
	if _, err := director.KeyID(nil); err == nil {
		t.Error("KeyID(nil) = nil error")
	}
}

func indent(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envelopeOf(tb testing.TB, env []byte) director.Signed {
	tb.Helper()
	var s director.Signed
	if err := json.Unmarshal(env, &s); err != nil {
		tb.Fatal(err)
	}
	return s
}
