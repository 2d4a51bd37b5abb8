// Package ident makes object identifiers and checks the human-given names and descriptions
// that every management object carries.
//
// Identifiers are a type prefix, a 48-bit millisecond timestamp and 80 random bits, hex
// encoded, so they sort by creation time (stable pagination) and cannot be guessed (no
// enumeration across tenants, rule 3). Safe for concurrent use.
package ident

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/problem"
)

// monotonic keeps identifiers made by this process strictly increasing, even within one
// millisecond or when the clock steps back: the later of two objects sorts later.
var monotonic struct {
	sync.Mutex
	last [16]byte
}

// New returns a fresh identifier such as "prd_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f".
func New(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	monotonic.Lock()
	if bytes.Compare(b[:6], monotonic.last[:6]) <= 0 {
		// Same or earlier millisecond: continue from the last ID, plus a random step so
		// that IDs stay unguessable.
		b = monotonic.last
		var step [2]byte
		rand.Read(step[:])
		increment(&b, uint64(binary.BigEndian.Uint16(step[:]))+1)
	}
	monotonic.last = b
	monotonic.Unlock()
	return prefix + "_" + hex.EncodeToString(b[:])
}

// increment adds n to the 80-bit random part of b (big-endian), carrying into the time part
// only on overflow, which keeps the order.
func increment(b *[16]byte, n uint64) {
	for i := 15; i >= 0 && n > 0; i-- {
		sum := uint64(b[i]) + n&0xff
		b[i] = byte(sum) //nolint:gosec // G115: truncation to the low byte is the point; the carry moves on in n
		n = n>>8 + sum>>8
	}
}

// Valid reports whether s has the shape of an identifier with the given prefix.
// Handlers check it before a lookup so that malformed path values are a clean 404.
func Valid(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix+"_")
	if !ok || len(rest) != 32 {
		return false
	}
	for _, c := range rest {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Limits on names and descriptions, in characters (runes).
const (
	MaxNameChars        = 64
	MaxDescriptionChars = 512
)

// CheckName records a problem when s is not an acceptable object name: non-empty, valid
// UTF-8 (U+FFFD counts as invalid: encoding/json substitutes it for invalid escapes such as
// lone surrogates, which would otherwise slip through), at most MaxNameChars characters, no control characters, no leading or trailing space.
func CheckName(v *problem.Validation, field, s string) {
	switch {
	case s == "":
		v.Add(field, "name_required", "%s must not be empty", field)
	case !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError):
		v.Add(field, "invalid_utf8", "%s is not valid UTF-8", field)
	case utf8.RuneCountInString(s) > MaxNameChars:
		v.Add(field, "name_too_long", "%s must be at most %d characters", field, MaxNameChars)
	case strings.TrimSpace(s) != s:
		v.Add(field, "name_whitespace", "%s must not start or end with white space", field)
	case strings.ContainsFunc(s, unicode.IsControl):
		v.Add(field, "invalid_character", "%s must not contain control characters", field)
	}
}

// CheckDescription records a problem when s is not an acceptable description: valid
// UTF-8, at most MaxDescriptionChars characters, no control characters other than newline
// and tab. Empty is allowed.
func CheckDescription(v *problem.Validation, field, s string) {
	switch {
	case !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError):
		v.Add(field, "invalid_utf8", "%s is not valid UTF-8", field)
	case utf8.RuneCountInString(s) > MaxDescriptionChars:
		v.Add(field, "description_too_long", "%s must be at most %d characters", field, MaxDescriptionChars)
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		v.Add(field, "invalid_character", "%s must not contain control characters", field)
	}
}
