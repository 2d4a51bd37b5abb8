package fleet

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/store"
)

// Attestation nonces are stateless (DESIGN rule 1: fresh and single-use). A nonce is
//
//	format (1 byte) | expiry, Unix seconds (4) | random (11) | HMAC-SHA256 (first 16 bytes)
//
// 32 bytes in all (attest.NonceBytes, what devices expect), the MAC taken over the device
// ID and the first 16 bytes under a key derived from the CA key-encryption key, which every
// replica sharing the database shares. Issuing one therefore reads and writes nothing, for a
// registered and an unknown device ID alike: the endpoint needs no login, so it must neither
// fill the store nor tell registered IDs from others by its work or its time (issue 10,
// defect 6; attacked by TestNonce_FloodOfOneDeviceStoresNothing and
// TestNonce_RegisteredAndUnknownDoTheSameStoreWork). Single use is enforced when the nonce
// is spent: the attestation's own transaction records it (store.Nonces.Spend), kept until it
// expires, so a second use is refused (TestAttest_Refusals "replayed nonce"); a nonce of
// another device, another secret or past its expiry is refused before that
// (TestNonce_RejectsNonceNotIssuedByThePlatform, TestAttest_Refusals).

// Nonce request limits: each device ID may have NoncesPerWindow nonces per NonceWindow, and
// a replica tracks at most NonceDevicesPerWindow IDs per window (about 6 MiB); past either
// AdmitNonce answers Throttled until the window ends. The count is kept per replica.
const (
	NonceWindow           = time.Minute
	NoncesPerWindow       = 10
	NonceDevicesPerWindow = 1 << 16
)

const (
	nonceFormat   = 1
	nonceMACBytes = 16
	nonceBody     = attest.NonceBytes - nonceMACBytes // format, expiry and random: what the MAC covers
	// nonceKeyLabel separates the nonce key from every other use of the KEK.
	nonceKeyLabel = "moat attestation nonce v1"
)

// errNonceForged: a nonce this platform did not issue to this device.
var errNonceForged = errors.New("nonce not issued to this device")

// errNonceExpired: a nonce past its expiry.
var errNonceExpired = errors.New("nonce expired")

var nonceEncoding = base64.RawURLEncoding.Strict()

// nonceKey derives the nonce MAC key from the CA key-encryption key.
func nonceKey(kek []byte) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, kek, nil, nonceKeyLabel, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("fleet: derive nonce key: %w", err)
	}
	return k, nil
}

func (s *Service) nonceMAC(id device.ID, body []byte) []byte {
	m := hmac.New(sha256.New, s.nonceKey)
	m.Write(body)
	m.Write([]byte(id))
	return m.Sum(nil)[:nonceMACBytes]
}

// NewNonce issues a single-use nonce to a device, valid for NonceTTL. It reads and writes
// nothing, whether the ID is registered or not.
func (s *Service) NewNonce(_ context.Context, id device.ID) (Nonce, error) {
	expires := s.cfg.Now().UTC().Add(NonceTTL).Truncate(time.Second)
	b := make([]byte, nonceBody, attest.NonceBytes)
	b[0] = nonceFormat
	binary.BigEndian.PutUint32(b[1:5], uint32(expires.Unix())) //nolint:gosec // Unix seconds fit until 2106
	_, _ = rand.Read(b[5:])                                    // crypto/rand.Read never returns an error
	b = append(b, s.nonceMAC(id, b)...)
	return Nonce{Nonce: nonceEncoding.EncodeToString(b), ExpiresAt: expires}, nil
}

// openNonce checks that nonce was issued to id by a replica sharing the secret and is
// unexpired at now, and returns its expiry.
func (s *Service) openNonce(id device.ID, nonce string, now time.Time) (time.Time, error) {
	b, err := nonceEncoding.DecodeString(nonce)
	if err != nil || len(b) != attest.NonceBytes || b[0] != nonceFormat {
		return time.Time{}, errNonceForged
	}
	if !hmac.Equal(b[nonceBody:], s.nonceMAC(id, b[:nonceBody])) {
		return time.Time{}, errNonceForged
	}
	expires := time.Unix(int64(binary.BigEndian.Uint32(b[1:5])), 0).UTC()
	if !expires.After(now) {
		return time.Time{}, errNonceExpired
	}
	return expires, nil
}

// spendNonce checks the device's nonce and records it spent in tx. Its errors that are the
// device's (forged, expired, spent) are errors.Is errNonceRefused.
func (s *Service) spendNonce(ctx context.Context, tx store.Tx, id device.ID, nonce string, now time.Time) error {
	expires, err := s.openNonce(id, nonce, now)
	if err != nil {
		return fmt.Errorf("%w: %w", errNonceRefused, err)
	}
	if err := tx.Nonces().Spend(ctx, string(id), nonce, expires, now); err != nil {
		if errors.Is(err, store.ErrNonceUsed) {
			return fmt.Errorf("%w: %w", errNonceRefused, err)
		}
		return err
	}
	return nil
}

var errNonceRefused = errors.New("nonce refused")

// Throttled is AdmitNonce's refusal: come back after RetryAfter.
type Throttled struct {
	RetryAfter time.Duration
}

func (t *Throttled) Error() string {
	return fmt.Sprintf("too many attestation nonce requests; retry after %s", t.RetryAfter)
}

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up, at least 1 (for the
// Retry-After header).
func (t *Throttled) RetryAfterSeconds() int {
	return max(1, int((t.RetryAfter+time.Second-1)/time.Second))
}

// AdmitNonce counts a nonce request for id against its budget and answers *Throttled when
// the budget or the replica's bound on tracked IDs is spent. It costs the same for a
// registered and an unknown ID: it never looks at the registry. Attacked by
// TestNonce_RateLimitedPerDevice and TestNonce_LimiterIsBounded.
func (s *Service) AdmitNonce(id device.ID) error {
	if wait := s.nonceLimit.admit(id, s.cfg.Now()); wait > 0 {
		return &Throttled{RetryAfter: wait}
	}
	return nil
}

// nonceLimiter counts nonce requests per device ID in fixed windows. The map is emptied
// when a window ends and never holds more than NonceDevicesPerWindow IDs.
type nonceLimiter struct {
	mu     sync.Mutex
	start  time.Time
	counts map[device.ID]uint8
}

// admit returns 0 when the request is admitted, else how long until the window ends.
func (l *nonceLimiter) admit(id device.ID, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil || now.Sub(l.start) >= NonceWindow || now.Before(l.start) {
		if l.counts == nil {
			l.counts = map[device.ID]uint8{}
		}
		clear(l.counts)
		l.start = now
	}
	n, seen := l.counts[id]
	if n >= NoncesPerWindow || !seen && len(l.counts) >= NonceDevicesPerWindow {
		return l.start.Add(NonceWindow).Sub(now)
	}
	l.counts[id] = n + 1
	return 0
}
