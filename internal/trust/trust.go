// Package trust defines the offline public keys a tenant registers so that moat can check
// what the tenant signed: the image signing keys of DESIGN.md's trust model. Only public keys
// are ever registered; the private keys stay with the tenant (`moat key generate`). A revoked
// key stays on record, so that what it signed can still be explained, but signs nothing more.
//
// Pure types and validation; safe for concurrent use.
package trust

import (
	"time"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/tenant"
)

// KeyID identifies a registered key record.
type KeyID string

// IDPrefix starts every key record ID.
const IDPrefix = "key"

// Algorithm names the one key type moat accepts: ECDSA on P-256, which hardware secure
// elements and TPM 2.0 can hold.
const Algorithm = "ecdsa-p256"

// SigningKey is a tenant's registered public signing key.
type SigningKey struct {
	ID       KeyID     `json:"id"`
	TenantID tenant.ID `json:"tenant_id"`
	Name     string    `json:"name"`
	// TUFKeyID is the key's ID in TUF metadata (hex SHA-256 of its canonical TUF form).
	TUFKeyID     string     `json:"tuf_key_id"`
	Algorithm    string     `json:"algorithm"`
	PublicKeyPEM string     `json:"public_key_pem"`
	CreatedAt    time.Time  `json:"created_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
}

// Active reports whether the key may still sign.
func (k SigningKey) Active() bool { return k.RevokedAt == nil }

// MaxPublicKeyPEMBytes bounds a registered key's PEM text.
const MaxPublicKeyPEMBytes = 4096

// KeyCreate registers a public key.
type KeyCreate struct {
	Name         string `json:"name"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// Validate checks the request's shape; the key itself is parsed by the caller.
func (c KeyCreate) Validate() error {
	var v problem.Validation
	ident.CheckName(&v, "name", c.Name)
	switch {
	case c.PublicKeyPEM == "":
		v.Add("public_key_pem", "public_key_required", "public_key_pem must hold a PEM public key")
	case len(c.PublicKeyPEM) > MaxPublicKeyPEMBytes:
		v.Add("public_key_pem", "public_key_too_long", "public_key_pem must be at most %d bytes", MaxPublicKeyPEMBytes)
	}
	return v.Err()
}
