package owners

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password rules and argon2id parameters. The parameters are OWASP's first recommended
// set for argon2id (m=19 MiB, t=2, p=1), stored with every hash in the PHC string so
// they can be raised later without breaking old hashes.
const (
	MinPasswordBytes = 10
	MaxPasswordBytes = 128

	argonMemoryKiB = 19456
	argonTime      = 2
	argonThreads   = 1
	argonSaltBytes = 16
	argonKeyBytes  = 32
)

// Bounds on the parameters of a stored hash: a hash with larger ones (a corrupted or
// planted row) is refused rather than allowed to exhaust memory or CPU.
const (
	maxArgonMemoryKiB = 256 << 10
	maxArgonTime      = 10
	maxArgonThreads   = 8
	maxArgonKeyBytes  = 64
)

// checkPassword enforces the password rules, in words an owner understands.
func checkPassword(password, email string) error {
	switch {
	case len(password) < MinPasswordBytes || len(password) > MaxPasswordBytes:
		return fmt.Errorf("%w: password: must be %d to %d characters long", ErrInvalid, MinPasswordBytes, MaxPasswordBytes)
	case !utf8.ValidString(password):
		return fmt.Errorf("%w: password: not valid text", ErrInvalid)
	case strings.Count(password, password[:1]) == len(password) || allSameRune(password):
		return fmt.Errorf("%w: password: must not repeat one character", ErrInvalid)
	case email != "" && strings.EqualFold(strings.TrimSpace(password), strings.TrimSpace(email)):
		return fmt.Errorf("%w: password: must not be your email address", ErrInvalid)
	}
	return nil
}

func allSameRune(s string) bool {
	first, _ := utf8.DecodeRuneInString(s)
	for _, r := range s {
		if r != first {
			return false
		}
	}
	return true
}

// hasher computes argon2id hashes, at most cap(slots) at once: each takes argonMemoryKiB
// of memory, so a flood of sign-ins waits for a slot (at most wait) and is then refused
// with ErrBusy instead of exhausting memory. Attacked by TestOwners_HashFloodIsRefused.
type hasher struct {
	slots chan struct{}
	wait  time.Duration
}

func (h *hasher) acquire(ctx context.Context) (func(), error) {
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	default:
	}
	if h.wait <= 0 {
		return nil, ErrBusy
	}
	t := time.NewTimer(h.wait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// hash returns the PHC string of password with a fresh salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	release, err := h.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	salt := make([]byte, argonSaltBytes)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails (Go 1.24+)
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyBytes)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errBadHash = errors.New("not an argon2id PHC string this service accepts")

type phc struct {
	m       uint32
	t       uint32
	p       uint8
	salt    []byte
	key     []byte
	version int
}

func parsePHC(s string) (phc, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return phc{}, errBadHash
	}
	var v phc
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v.version); err != nil || v.version != argon2.Version {
		return phc{}, errBadHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &v.m, &v.t, &v.p); err != nil {
		return phc{}, errBadHash
	}
	var err1, err2 error
	v.salt, err1 = base64.RawStdEncoding.DecodeString(parts[4])
	v.key, err2 = base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(v.salt) < 8 || len(v.key) < 16 || len(v.key) > maxArgonKeyBytes ||
		v.m < 8 || v.m > maxArgonMemoryKiB || v.t < 1 || v.t > maxArgonTime || v.p < 1 || v.p > maxArgonThreads {
		return phc{}, errBadHash
	}
	return v, nil
}

// verify reports whether password matches the PHC string encoded, in constant time.
func (h *hasher) verify(ctx context.Context, encoded, password string) (bool, error) {
	v, err := parsePHC(encoded)
	if err != nil {
		return false, err
	}
	release, err := h.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	key := argon2.IDKey([]byte(password), v.salt, v.t, v.m, v.p, uint32(len(v.key))) //nolint:gosec // G115: len bounded by maxArgonKeyBytes
	return subtle.ConstantTimeCompare(key, v.key) == 1, nil
}
