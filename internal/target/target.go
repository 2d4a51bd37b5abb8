// Package target checks the names of image targets as signed documents carry them: the
// TUF target path, the version and the SHA-256 that director assignments
// (internal/director) and attestation evidence (internal/attest) name. One definition, so
// the server's and the device's documents accept exactly the same names.
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
