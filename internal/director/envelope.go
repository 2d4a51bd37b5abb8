package director

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/envelope"
)

// Signed is the envelope a device fetches: the canonical assignment bytes and the
// director's signature over them (internal/envelope).
type Signed = envelope.Signed

// Signature is an ECDSA P-256 signature over the SHA-256 of Signed.Signed.
type Signature = envelope.Signature

// Expect is what the device knows independently of the assignment it verifies.
type Expect struct {
	DeviceID    string
	TenantID    string
	Now         time.Time // the device's clock
	LastCounter uint64    // the counter of the last assignment the device accepted, 0 if none
	MaxBytes    int       // envelope size limit; 0 means DefaultMaxBytes
}

// KeyID returns the hex SHA-256 of the PKIX (SubjectPublicKeyInfo) DER encoding of pub.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	id, err := envelope.KeyID(pub)
	if err != nil {
		return "", fmt.Errorf("director key: %w", err)
	}
	return id, nil
}

// canonical returns the one encoding of a that is signed: encoding/json of the struct,
// with a missing image list written as [] (so that null and [] cannot both stand for it).
func canonical(a Assignment) ([]byte, error) {
	if a.Images == nil {
		a.Images = []Image{}
	}
	return json.Marshal(a)
}

// Issue validates a and returns the envelope signed by key. Times are converted to UTC
// and truncated to the second before validation.
func Issue(key *ecdsa.PrivateKey, a Assignment) ([]byte, error) {
	if key == nil {
		return nil, errors.New("issue assignment: no director key")
	}
	if _, err := KeyID(&key.PublicKey); err != nil {
		return nil, fmt.Errorf("issue assignment: %w", err)
	}
	a.IssuedAt = a.IssuedAt.UTC().Truncate(time.Second)
	a.ExpiresAt = a.ExpiresAt.UTC().Truncate(time.Second)
	if a.InstallWindows != nil {
		ws := make([]Window, len(a.InstallWindows))
		for i, w := range a.InstallWindows {
			ws[i] = Window{From: w.From.UTC().Truncate(time.Second), Until: w.Until.UTC().Truncate(time.Second)}
		}
		a.InstallWindows = ws
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("issue assignment for device %s: %w", a.DeviceID, err)
	}
	body, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("issue assignment for device %s: %w", a.DeviceID, err)
	}
	env, err := envelope.Seal(&key.PublicKey, body, func(digest []byte) ([]byte, error) {
		return ecdsa.SignASN1(rand.Reader, key, digest)
	})
	if err != nil {
		return nil, fmt.Errorf("issue assignment for device %s: %w", a.DeviceID, err)
	}
	return env, nil
}

// Verify checks an envelope fetched by the device and returns the assignment in it. The
// checks, in order: size; strict decoding of the envelope; exactly one signature, by pub,
// over the signed bytes; strict decoding of the assignment; both envelope and assignment
// are exactly their canonical encodings; the content is valid; it names want.DeviceID and
// want.TenantID; want.Now is before ExpiresAt and no more than ClockSkew before IssuedAt;
// Counter is above want.LastCounter. Errors wrap the package's sentinels.
//
// The caller bounds its read of data to the same limit (MaxBytes+1), and records the
// accepted Counter before acting on the assignment.
func Verify(data []byte, pub *ecdsa.PublicKey, want Expect) (Assignment, error) {
	max := want.MaxBytes
	if max == 0 {
		max = DefaultMaxBytes
	}
	switch {
	case max < 0:
		return Assignment{}, fmt.Errorf("verify assignment: max bytes %d is negative", max)
	case want.DeviceID == "" || want.TenantID == "":
		return Assignment{}, errors.New("verify assignment: expected device or tenant id is empty")
	case want.Now.IsZero():
		return Assignment{}, errors.New("verify assignment: no current time")
	}
	// Rule 2, ATTACKS row 22: signed by the pinned key, and the only encoding of what is
	// acted on (internal/envelope).
	var a Assignment
	if err := envelope.Open(data, pub, max, &a, func() ([]byte, error) { return canonical(a) }); err != nil {
		return Assignment{}, fmt.Errorf("verify assignment: %w", err)
	}
	if err := a.Validate(); err != nil {
		return Assignment{}, fmt.Errorf("verify assignment: %w: %w", ErrMalformed, err)
	}

	// ATTACKS row 19: an assignment for another device or tenant is refused.
	if a.DeviceID != want.DeviceID || a.TenantID != want.TenantID {
		return Assignment{}, fmt.Errorf("verify assignment: for device %s of tenant %s, this is device %s of tenant %s: %w",
			a.DeviceID, a.TenantID, want.DeviceID, want.TenantID, ErrWrongDevice)
	}
	if !want.Now.Before(a.ExpiresAt) {
		return Assignment{}, fmt.Errorf("verify assignment %d: expired at %s, now %s: %w",
			a.Counter, a.ExpiresAt.Format(time.RFC3339), want.Now.UTC().Format(time.RFC3339), ErrExpired)
	}
	if a.IssuedAt.After(want.Now.Add(ClockSkew)) {
		return Assignment{}, fmt.Errorf("verify assignment %d: issued at %s, in the future of %s beyond %s: %w",
			a.Counter, a.IssuedAt.Format(time.RFC3339), want.Now.UTC().Format(time.RFC3339), ClockSkew, ErrExpired)
	}
	if a.Counter <= want.LastCounter {
		return Assignment{}, fmt.Errorf("verify assignment: counter %d, last accepted %d: %w", a.Counter, want.LastCounter, ErrReplayed)
	}
	return a, nil
}
