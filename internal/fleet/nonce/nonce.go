// Package nonce issues and spends the attestation nonces of internal/fleet, and limits how
// often each device ID may ask for one.
//
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
// is spent: the attestation's own transaction records it (Record, store.Nonces.Spend), kept
// until it expires, so a second use is refused (TestAttest_Refusals "replayed nonce",
// TestNonce_SingleUseAcrossRestart); internal/fleet keeps the nonces spent through a
// replica in memory in front of that record, but the store's uniqueness decides
// (TestNonce_SingleUseUnderConcurrency); a nonce of
// another device, another secret or past its expiry is refused before that
// (TestNonce_RejectsNonceNotIssuedByThePlatform, TestAttest_Refusals; the tests are internal/fleet's,
// since they attack the endpoint and the attestation, and TestIssuer_* here).
//
// What it trusts: the key-encryption key it derives its MAC key from (shared by every
// replica of one database) and the store's record of spent nonces. What it enforces: DESIGN
// rule 1's fresh, single-use nonce, bound to one device ID; and a per-replica budget of
// nonce requests per device ID (Issuer.Admit).
//
// An Issuer is safe for concurrent use: issuing and opening are pure, the limiter takes a
// mutex.
package nonce

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

// TTL is how long a nonce is valid.
const TTL = 2 * time.Minute

// Nonce request limits: each device ID may have PerWindow nonces per Window, and a replica
// tracks at most DevicesPerWindow IDs per window (about 6 MiB); past either Admit answers
// Throttled until the window ends. The count is kept per replica.
const (
	Window           = time.Minute
	PerWindow        = 10
	DevicesPerWindow = 1 << 16
)

const (
	format   = 1
	macBytes = 16
	body     = attest.NonceBytes - macBytes // format, expiry and random: what the MAC covers
	// keyLabel separates the nonce key from every other use of the KEK.
	keyLabel = "moat attestation nonce v1"
)

// Nonce is a fresh attestation nonce.
type Nonce struct {
	Nonce     string    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ErrRefused wraps every error of Spend that is the device's (a nonce forged, expired or
// spent already), as opposed to the store's.
var ErrRefused = errors.New("nonce refused")

// errForged: a nonce this platform did not issue to this device.
var errForged = errors.New("nonce not issued to this device")

// errExpired: a nonce past its expiry.
var errExpired = errors.New("nonce expired")

var encoding = base64.RawURLEncoding.Strict()

// Issuer issues, checks and spends nonces, and keeps the request budgets of this replica.
type Issuer struct {
	key   []byte // MAC key, derived from the KEK
	limit limiter
}

// SetPerWindow changes how many nonces each device ID may ask for per Window (n < 1 keeps
// PerWindow). Call it before the Issuer is used.
func (i *Issuer) SetPerWindow(n int) {
	if n >= 1 {
		i.limit.perWindow = min(n, 1<<16)
	}
}

// NewIssuer returns an Issuer whose MAC key is derived from the CA key-encryption key kek.
func NewIssuer(kek []byte) (*Issuer, error) {
	k, err := hkdf.Key(sha256.New, kek, nil, keyLabel, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive nonce key: %w", err)
	}
	return &Issuer{key: k}, nil
}

func (i *Issuer) mac(id device.ID, b []byte) []byte {
	m := hmac.New(sha256.New, i.key)
	m.Write(b)
	m.Write([]byte(id))
	return m.Sum(nil)[:macBytes]
}

// Issue returns a single-use nonce for the device, valid for TTL from now. It reads and
// writes nothing, whether the ID is registered or not.
func (i *Issuer) Issue(id device.ID, now time.Time) Nonce {
	expires := now.UTC().Add(TTL).Truncate(time.Second)
	b := make([]byte, body, attest.NonceBytes)
	b[0] = format
	binary.BigEndian.PutUint32(b[1:5], uint32(expires.Unix())) //nolint:gosec // Unix seconds fit until 2106
	_, _ = rand.Read(b[5:])                                    // crypto/rand.Read never returns an error
	b = append(b, i.mac(id, b)...)
	return Nonce{Nonce: encoding.EncodeToString(b), ExpiresAt: expires}
}

// open checks that nonce was issued to id by a replica sharing the secret and is unexpired
// at now, and returns its expiry.
func (i *Issuer) open(id device.ID, nonce string, now time.Time) (time.Time, error) {
	b, err := encoding.DecodeString(nonce)
	if err != nil || len(b) != attest.NonceBytes || b[0] != format {
		return time.Time{}, errForged
	}
	if !hmac.Equal(b[body:], i.mac(id, b[:body])) {
		return time.Time{}, errForged
	}
	expires := time.Unix(int64(binary.BigEndian.Uint32(b[1:5])), 0).UTC()
	if !expires.After(now) {
		return time.Time{}, errExpired
	}
	return expires, nil
}

// Check checks, without the store, that nonce was issued to id by a replica sharing the
// secret and is unexpired at now, and returns its expiry. Its errors are errors.Is
// ErrRefused. Record makes the spend durable.
func (i *Issuer) Check(id device.ID, nonce string, now time.Time) (time.Time, error) {
	expires, err := i.open(id, nonce, now)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return expires, nil
}

// Spend checks the device's nonce and records it spent in tx. Its errors that are the
// device's (forged, expired, spent) are errors.Is ErrRefused.
func (i *Issuer) Spend(ctx context.Context, tx store.Tx, id device.ID, nonce string, now time.Time) error {
	expires, err := i.Check(id, nonce, now)
	if err != nil {
		return err
	}
	return Record(ctx, tx, id, nonce, expires, now)
}

// Record records a nonce Check accepted as spent in tx, kept until it expires; a nonce
// spent before, here or on any replica sharing the database, is errors.Is ErrRefused (the
// store's uniqueness decides).
func Record(ctx context.Context, tx store.Tx, id device.ID, nonce string, expires, now time.Time) error {
	if err := tx.Nonces().Spend(ctx, string(id), nonce, expires, now); err != nil {
		if errors.Is(err, store.ErrNonceUsed) {
			return fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return err
	}
	return nil
}

// Throttled is Admit's refusal: come back after RetryAfter.
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

// Admit counts a nonce request for id at now against its budget and answers *Throttled when
// the budget or the replica's bound on tracked IDs is spent. It costs the same for a
// registered and an unknown ID: it never looks at the registry. Attacked by
// TestNonce_RateLimitedPerDevice and TestNonce_LimiterIsBounded.
func (i *Issuer) Admit(id device.ID, now time.Time) error {
	if wait := i.limit.admit(id, now); wait > 0 {
		return &Throttled{RetryAfter: wait}
	}
	return nil
}

// limiter counts nonce requests per device ID in fixed windows. The map is emptied when a
// window ends and never holds more than DevicesPerWindow IDs.
type limiter struct {
	mu        sync.Mutex
	start     time.Time
	counts    map[device.ID]uint32
	perWindow int // 0: PerWindow
}

// admit returns 0 when the request is admitted, else how long until the window ends.
func (l *limiter) admit(id device.ID, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil || now.Sub(l.start) >= Window || now.Before(l.start) {
		if l.counts == nil {
			l.counts = map[device.ID]uint32{}
		}
		clear(l.counts)
		l.start = now
	}
	per := PerWindow
	if l.perWindow > 0 {
		per = l.perWindow
	}
	n, seen := l.counts[id]
	if int(n) >= per || !seen && len(l.counts) >= DevicesPerWindow {
		return l.start.Add(Window).Sub(now)
	}
	l.counts[id] = n + 1
	return 0
}
