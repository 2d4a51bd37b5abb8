package fleet

import (
	"context"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/fleet/nonce"
)

// Attestation nonces are internal/fleet/nonce's; these names keep the service's API.

// Nonce is a fresh attestation nonce.
type Nonce = nonce.Nonce

// Throttled is AdmitNonce's refusal: come back after RetryAfter.
type Throttled = nonce.Throttled

// Nonce lifetime and request limits (see internal/fleet/nonce).
const (
	NonceTTL              = nonce.TTL
	NonceWindow           = nonce.Window
	NoncesPerWindow       = nonce.PerWindow
	NonceDevicesPerWindow = nonce.DevicesPerWindow
)

// NewNonce issues a single-use nonce to a device, valid for NonceTTL. It reads and writes
// nothing, whether the ID is registered or not.
func (s *Service) NewNonce(_ context.Context, id device.ID) (Nonce, error) {
	return s.nonces.Issue(id, s.cfg.Now()), nil
}

// AdmitNonce counts a nonce request for id against its budget and answers *Throttled when
// the budget or the replica's bound on tracked IDs is spent (nonce.Issuer.Admit).
func (s *Service) AdmitNonce(id device.ID) error { return s.nonces.Admit(id, s.cfg.Now()) }
