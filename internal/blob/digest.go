package blob

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Digest is the SHA-256 of a blob's content: its name.
type Digest [32]byte

const digestPrefix = "sha256:"

// String returns the canonical form, "sha256:" and 64 lower-case hex digits.
func (d Digest) String() string { return digestPrefix + d.Hex() }

// Hex returns the 64 lower-case hex digits of d.
func (d Digest) Hex() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses "sha256:<64 lower-case hex>" or the bare 64 hex digits. Upper-case hex
// is refused so that each digest has one spelling (one cache key, one path). Errors wrap
// ErrInvalidDigest.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	h := strings.TrimPrefix(s, digestPrefix)
	if len(h) != 2*len(d) {
		return Digest{}, fmt.Errorf("%w: %q is not %s and %d hex digits", ErrInvalidDigest, clip(s), digestPrefix, 2*len(d))
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return Digest{}, fmt.Errorf("%w: %q has a character other than 0-9, a-f", ErrInvalidDigest, clip(s))
		}
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return Digest{}, fmt.Errorf("%w: %w", ErrInvalidDigest, err) // unreachable: checked above
	}
	return d, nil
}

// MarshalText encodes d in its canonical form.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses d with ParseDigest.
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// clip shortens untrusted input quoted in an error.
func clip(s string) string {
	const maxLen = 80
	if len(s) > maxLen {
		return s[:maxLen] + "..."
	}
	return s
}
