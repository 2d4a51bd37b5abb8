// Package capability is the development capability a tenant grants one device
// (`moat device enable-development`): a document signed by the security service's director
// key that names the device and tenant, so that the device runtime may run development
// (side-loaded) applications on that device and no other.
//
// What it trusts: the director public key the device learned from its pinned root
// (update.DirectorKeyFromRoot), the device's identity and clock.
//
// What it enforces: Verify accepts only the one canonical envelope (internal/envelope)
// signed by exactly that key, of this purpose and format, naming this device and tenant,
// inside its validity window (TestVerify_Rejects*). A production device, holding no
// capability or another device's, runs only images its update client verified. Bad input
// is an error, never a panic (FuzzVerify).
//
// Stateless; safe for concurrent use.
package capability

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/identity"
)

// Format is the only format version issued and accepted.
const Format = 1

// Development is the one purpose: run development applications.
const Development = "development"

// Limits.
const (
	MaxValidity = 30 * 24 * time.Hour
	ClockSkew   = 5 * time.Minute
	MaxBytes    = 4 << 10
)

// Errors callers branch on.
var (
	ErrSignature    = envelope.ErrSignature
	ErrMalformed    = envelope.ErrMalformed
	ErrNotCanonical = envelope.ErrNotCanonical
	ErrTooLarge     = envelope.ErrTooLarge
	ErrWrongDevice  = errors.New("capability for another device or tenant")
	ErrExpired      = errors.New("capability outside its validity window")
)

// Capability is what the director key signs; its JSON encoding, fields in this order and
// times in RFC 3339 UTC to the second, is the signed document.
type Capability struct {
	Format    int       `json:"format"`
	Purpose   string    `json:"purpose"`
	DeviceID  string    `json:"device_id"`
	TenantID  string    `json:"tenant_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Validate reports every problem with the capability's content, joined.
func (c Capability) Validate() error {
	var errs []error
	if c.Format != Format {
		errs = append(errs, fmt.Errorf("format %d, want %d", c.Format, Format))
	}
	if c.Purpose != Development {
		errs = append(errs, fmt.Errorf("purpose %q, want %q", c.Purpose, Development))
	}
	if !identity.ValidID(c.DeviceID) {
		errs = append(errs, errors.New("device_id: not a device ID"))
	}
	if c.TenantID == "" || len(c.TenantID) > 64 {
		errs = append(errs, errors.New("tenant_id: missing or too long"))
	}
	for name, t := range map[string]time.Time{"issued_at": c.IssuedAt, "expires_at": c.ExpiresAt} {
		if t.IsZero() || t.Location() != time.UTC || t.Nanosecond() != 0 {
			errs = append(errs, fmt.Errorf("%s: not a UTC time to the second", name))
		}
	}
	if v := c.ExpiresAt.Sub(c.IssuedAt); v <= 0 || v > MaxValidity {
		errs = append(errs, fmt.Errorf("validity %s, want more than 0 and at most %s", v, MaxValidity))
	}
	return errors.Join(errs...)
}

// Issue signs a development capability for one device with the director key, valid from
// now for validity.
func Issue(key *ecdsa.PrivateKey, deviceID, tenantID string, now time.Time, validity time.Duration) ([]byte, error) {
	now = now.UTC().Truncate(time.Second)
	c := Capability{Format: Format, Purpose: Development, DeviceID: deviceID, TenantID: tenantID, IssuedAt: now, ExpiresAt: now.Add(validity)}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("issue capability: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return envelope.Seal(&key.PublicKey, body, func(d []byte) ([]byte, error) { return ecdsa.SignASN1(rand.Reader, key, d) })
}

// Expect is what the device knows independently of the capability.
type Expect struct {
	DeviceID, TenantID string
	Now                time.Time
}

// Verify checks a capability envelope against the director key pub and the device.
func Verify(data []byte, pub *ecdsa.PublicKey, want Expect) (Capability, error) {
	var c Capability
	if err := envelope.Open(data, pub, MaxBytes, &c, func() ([]byte, error) { return json.Marshal(c) }); err != nil {
		return Capability{}, fmt.Errorf("capability: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Capability{}, fmt.Errorf("capability: %w: %w", ErrMalformed, err)
	}
	if c.DeviceID != want.DeviceID || c.TenantID != want.TenantID {
		return Capability{}, fmt.Errorf("capability for device %.16s of %s: %w", c.DeviceID, c.TenantID, ErrWrongDevice)
	}
	if want.Now.Add(ClockSkew).Before(c.IssuedAt) || !want.Now.Before(c.ExpiresAt) {
		return Capability{}, fmt.Errorf("capability valid %s to %s: %w", c.IssuedAt.Format(time.RFC3339), c.ExpiresAt.Format(time.RFC3339), ErrExpired)
	}
	return c, nil
}
