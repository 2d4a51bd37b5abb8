// Package ident makes object identifiers and checks the human-given names and descriptions
// that every management object carries.
//
// Identifiers are a type prefix, a 48-bit millisecond timestamp and 80 random bits, hex
// encoded, so they sort by creation time (stable pagination) and cannot be guessed (no
// enumeration across tenants, rule 3). Safe for concurrent use.
package ident

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/problem"
)

// New returns a fresh identifier such as "prd_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f".
func New(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + "_" + hex.EncodeToString(b[:])
}

// Valid reports whether s has the shape of an identifier with the given prefix.
// Handlers check it before a lookup so that malformed path values are a clean 404.
func Valid(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix+"_")
	if !ok || len(rest) != 32 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
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
// UTF-8, at most MaxNameChars characters, no control characters, no leading or trailing space.
func CheckName(v *problem.Validation, field, s string) {
	switch {
	case s == "":
		v.Add(field, "name_required", "%s must not be empty", field)
	case !utf8.ValidString(s):
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
	case !utf8.ValidString(s):
		v.Add(field, "invalid_utf8", "%s is not valid UTF-8", field)
	case utf8.RuneCountInString(s) > MaxDescriptionChars:
		v.Add(field, "description_too_long", "%s must be at most %d characters", field, MaxDescriptionChars)
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		v.Add(field, "invalid_character", "%s must not contain control characters", field)
	}
}
