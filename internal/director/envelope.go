package director

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Signed is the envelope a device fetches: the canonical assignment bytes and the
// director's signature over them.
type Signed struct {
	Signed     json.RawMessage `json:"signed"`
	Signatures []Signature     `json:"signatures"`
}

// Signature is an ECDSA P-256 signature over the SHA-256 of Signed.Signed.
type Signature struct {
	KeyID string `json:"keyid"` // KeyID of the signing key
	Sig   string `json:"sig"`   // ASN.1 DER, standard base64 with padding
}

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
	if err := checkKey(pub); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("director key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

func checkKey(pub *ecdsa.PublicKey) error {
	if pub == nil || pub.Curve != elliptic.P256() {
		return errors.New("director key: not an ECDSA P-256 public key")
	}
	return nil
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
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("issue assignment: %w", err)
	}
	a.IssuedAt = a.IssuedAt.UTC().Truncate(time.Second)
	a.ExpiresAt = a.ExpiresAt.UTC().Truncate(time.Second)
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("issue assignment for device %s: %w", a.DeviceID, err)
	}
	body, err := canonical(a)
	if err != nil {
		return nil, fmt.Errorf("issue assignment for device %s: %w", a.DeviceID, err)
	}
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		return nil, fmt.Errorf("issue assignment for device %s: sign: %w", a.DeviceID, err)
	}
	env, err := json.Marshal(Signed{
		Signed:     body,
		Signatures: []Signature{{KeyID: kid, Sig: base64.StdEncoding.EncodeToString(sig)}},
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
	kid, err := KeyID(pub)
	if err != nil {
		return Assignment{}, fmt.Errorf("verify assignment: %w", err)
	}
	if len(data) > max {
		return Assignment{}, fmt.Errorf("verify assignment: %d bytes, limit %d: %w", len(data), max, ErrTooLarge)
	}

	var env Signed
	if err := decodeStrict(data, &env); err != nil {
		return Assignment{}, fmt.Errorf("verify assignment: envelope: %w: %w", ErrMalformed, err)
	}
	if len(env.Signed) == 0 || bytes.Equal(env.Signed, []byte("null")) {
		return Assignment{}, fmt.Errorf("verify assignment: envelope: no signed field: %w", ErrMalformed)
	}

	// Rule 2: the signature is checked over the raw bytes before anything in them is read.
	if n := len(env.Signatures); n != 1 {
		return Assignment{}, fmt.Errorf("verify assignment: %d signatures, want exactly 1: %w", n, ErrSignature)
	}
	s := env.Signatures[0]
	if s.KeyID != kid {
		return Assignment{}, fmt.Errorf("verify assignment: signed by key %.16q, want the pinned director key %.16s: %w", s.KeyID, kid, ErrSignature)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
	if err != nil || base64.StdEncoding.EncodeToString(sig) != s.Sig {
		return Assignment{}, fmt.Errorf("verify assignment: signature is not standard base64: %w", ErrSignature)
	}
	sum := sha256.Sum256(env.Signed)
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return Assignment{}, fmt.Errorf("verify assignment: signature by key %.16s does not verify: %w", kid, ErrSignature)
	}

	var a Assignment
	if err := decodeStrict(env.Signed, &a); err != nil {
		return Assignment{}, fmt.Errorf("verify assignment: signed: %w: %w", ErrMalformed, err)
	}
	// Rule 2, ATTACKS row 22: the bytes signed are the only encoding of what is acted on,
	// so a duplicate key, an escape, padding or a reordering is refused, not interpreted.
	c, err := canonical(a)
	if err != nil {
		return Assignment{}, fmt.Errorf("verify assignment: signed: %w: %w", ErrMalformed, err)
	}
	if !bytes.Equal(c, env.Signed) {
		return Assignment{}, fmt.Errorf("verify assignment: signed bytes are not the canonical encoding: %w", ErrNotCanonical)
	}
	if e, err := json.Marshal(env); err != nil || !bytes.Equal(e, data) {
		return Assignment{}, fmt.Errorf("verify assignment: envelope is not the canonical encoding: %w", ErrNotCanonical)
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

// decodeStrict decodes exactly one JSON value into v: unknown fields and trailing data
// (other than white space, which the canonical check then refuses) are errors.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
