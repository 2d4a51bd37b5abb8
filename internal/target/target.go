// Package target is the one definition of what signed documents say about an image target:
// the names (TUF target path, version, SHA-256) that director assignments
// (internal/director) and attestation evidence (internal/attest) carry, and the custom
// metadata (Custom: kind, version, security version, component, product, feeds) that the
// offline keys sign into targets.json and apps.json. Server and device both link it and
// nothing of the server, so they accept exactly the same documents (DESIGN rules 2 and 5;
// the targettest suite, which every reader runs, attacks it).
//
// Pure functions; safe for concurrent use.
package target

import "strings"

// Limits of a name.
const (
	MaxPathLen    = 255
	MaxVersionLen = 64
)

// ValidVersion accepts 1 to MaxVersionLen letters, digits and .+-, but not "." or "..".
func ValidVersion(s string) bool {
	if s == "" || len(s) > MaxVersionLen || s == "." || s == ".." {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !IsAlnum(c) && c != '.' && c != '+' && c != '-' {
			return false
		}
	}
	return true
}

// ValidPath accepts "a/b/c" of at most MaxPathLen bytes with at least two segments, none
// empty, "." or "..", each of letters, digits and ._+-.
func ValidPath(p string) bool {
	if len(p) > MaxPathLen {
		return false
	}
	segs := strings.Split(p, "/")
	if len(segs) < 2 {
		return false
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return false
		}
		for i := range len(s) {
			if c := s[i]; !IsAlnum(c) && c != '.' && c != '_' && c != '+' && c != '-' {
				return false
			}
		}
	}
	return true
}

// ValidSHA256 accepts exactly 64 lower-case hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// IsAlnum reports whether c is an ASCII letter or digit.
func IsAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
