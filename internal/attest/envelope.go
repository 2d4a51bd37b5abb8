package attest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/identity"
)

// nonceEncoding is how nonces are written: base64url without padding, strict.
var nonceEncoding = base64.RawURLEncoding.Strict()

// Signed is the envelope a device sends: the canonical evidence bytes and the identity
// key's signature over them (internal/envelope).
type Signed = envelope.Signed

// Signature is an ECDSA P-256 signature over the SHA-256 of Signed.Signed.
type Signature = envelope.Signature

// Expect is what the server knows independently of the evidence it verifies.
type Expect struct {
	DeviceID string        // the registered device whose key is passed to Verify
	Nonce    string        // the nonce the server issued for this session
	Now      time.Time     // the server's clock
	MaxSkew  time.Duration // allowed |evidence time - Now|; 0 means DefaultMaxSkew
	MaxBytes int           // envelope size limit; 0 means DefaultMaxBytes
}

// NewNonce returns a fresh nonce: NonceBytes bytes from crypto/rand, unpadded base64url.
func NewNonce() string {
	b := make([]byte, NonceBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error (it crashes the program instead)
	return nonceEncoding.EncodeToString(b)
}

// KeyID returns the hex SHA-256 of the PKIX (SubjectPublicKeyInfo) DER encoding of pub:
// for an identity key, the same string as its device ID.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	id, err := envelope.KeyID(pub)
	if err != nil {
		return "", fmt.Errorf("attest key: %w", err)
	}
	return id, nil
}

// canonical returns the one encoding of e that is signed: encoding/json of the struct,
// with a missing measurement list written as [] (so that null and [] cannot both stand
// for it).
func canonical(e Evidence) ([]byte, error) {
	if e.Measurements == nil {
		e.Measurements = []Measurement{}
	}
	return json.Marshal(e)
}

// Sign validates e and returns the envelope signed by s. The time is converted to UTC and
// truncated to the second before validation; a zero Format is set to Format.
func Sign(s identity.Signer, e Evidence) ([]byte, error) {
	if s == nil {
		return nil, errors.New("sign evidence: no identity key")
	}
	if _, err := KeyID(s.Public()); err != nil {
		return nil, fmt.Errorf("sign evidence: %w", err)
	}
	if e.Format == 0 {
		e.Format = Format
	}
	e.Time = e.Time.UTC().Truncate(time.Second)
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("sign evidence of device %s: %w", e.DeviceID, err)
	}
	body, err := canonical(e)
	if err != nil {
		return nil, fmt.Errorf("sign evidence of device %s: %w", e.DeviceID, err)
	}
	env, err := envelope.Seal(s.Public(), body, s.Sign)
	if err != nil {
		return nil, fmt.Errorf("sign evidence of device %s: %w", e.DeviceID, err)
	}
	return env, nil
}

// Verify checks an evidence envelope a device sent and returns the evidence in it. pub is
// the device's registered identity key. The checks, in order: size; strict decoding of the
// envelope; exactly one signature, by pub, over the signed bytes; strict decoding of the
// evidence; both envelope and evidence are exactly their canonical encodings; the content
// is valid; it names want.DeviceID, which is the device ID of pub; it carries want.Nonce
// (compared in constant time); its time is within want.MaxSkew of want.Now. Errors wrap
// the package's sentinels; on error the returned Evidence is zero.
//
// The caller bounds its read of data to the same limit (MaxBytes+1), and consumes the
// nonce in its store (once) before acting on the evidence.
func Verify(data []byte, pub *ecdsa.PublicKey, want Expect) (Evidence, error) {
	k, err := envelope.NewKey(pub)
	if err != nil {
		return Evidence{}, fmt.Errorf("verify evidence: attest key: %w", err)
	}
	return VerifyKey(data, k, want)
}

// VerifyKey is Verify with the device's key and its ID worked out once (envelope.NewKey),
// for a server that caches registered keys.
func VerifyKey(data []byte, k envelope.Key, want Expect) (Evidence, error) {
	max := want.MaxBytes
	if max == 0 {
		max = DefaultMaxBytes
	}
	skew := want.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	}
	switch {
	case max < 0:
		return Evidence{}, fmt.Errorf("verify evidence: max bytes %d is negative", max)
	case skew < 0:
		return Evidence{}, fmt.Errorf("verify evidence: max skew %s is negative", skew)
	case want.DeviceID == "" || want.Nonce == "":
		return Evidence{}, errors.New("verify evidence: expected device id or nonce is empty")
	case want.Now.IsZero():
		return Evidence{}, errors.New("verify evidence: no current time")
	}
	kid := k.ID()
	if kid == "" {
		return Evidence{}, errors.New("verify evidence: no key")
	}
	// Rule 1, ATTACKS row 5: signed by the registered key, and the only encoding of what
	// is judged (internal/envelope).
	var e Evidence
	if err := envelope.OpenKey(data, k, max, &e, func() ([]byte, error) { return canonical(e) }); err != nil {
		return Evidence{}, fmt.Errorf("verify evidence: %w", err)
	}
	if err := e.Validate(); err != nil {
		return Evidence{}, fmt.Errorf("verify evidence: %w: %w", ErrMalformed, err)
	}

	// Evidence must name the device the session is for, and that must be the device the
	// signing key identifies: one device's key cannot speak for another.
	if e.DeviceID != want.DeviceID || e.DeviceID != kid {
		return Evidence{}, fmt.Errorf("verify evidence: names device %.16s, session is for %.16s, key is %.16s: %w",
			e.DeviceID, want.DeviceID, kid, ErrWrongDevice)
	}
	// ATTACKS row 2: evidence captured in one session is refused in another.
	if subtle.ConstantTimeCompare([]byte(e.Nonce), []byte(want.Nonce)) != 1 {
		return Evidence{}, fmt.Errorf("verify evidence of device %.16s: nonce does not match the session's: %w", e.DeviceID, ErrNonce)
	}
	if d := e.Time.Sub(want.Now); d > skew || d < -skew {
		return Evidence{}, fmt.Errorf("verify evidence of device %.16s: time %s, now %s, more than %s apart: %w",
			e.DeviceID, e.Time.Format(time.RFC3339), want.Now.UTC().Format(time.RFC3339), skew, ErrStale)
	}
	return e, nil
}
