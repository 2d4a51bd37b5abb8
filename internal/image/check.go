package image

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// validUUID reports whether s is a UUID in its canonical lower-case 8-4-4-4-12 form, not
// the nil UUID.
func validUUID(s string) bool {
	if len(s) != 36 || s == "00000000-0000-0000-0000-000000000000" {
		return false
	}
	for i := range len(s) {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isLowerHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// maxVersionLen bounds a version string; SemVer sets no limit.
const maxVersionLen = 128

// validSemver reports whether s is a semantic version by SemVer 2.0.0: MAJOR.MINOR.PATCH
// without leading zeros, an optional pre-release of dot-separated identifiers (numeric ones
// without leading zeros) and optional build metadata.
func validSemver(s string) bool {
	if s == "" || len(s) > maxVersionLen {
		return false
	}
	s, build, hasBuild := strings.Cut(s, "+")
	core, pre, hasPre := strings.Cut(s, "-")
	nums := strings.Split(core, ".")
	if len(nums) != 3 {
		return false
	}
	for _, n := range nums {
		if !numeric(n) || len(n) > 1 && n[0] == '0' {
			return false
		}
	}
	if hasPre {
		for _, id := range strings.Split(pre, ".") {
			if !identifier(id) || numeric(id) && len(id) > 1 && id[0] == '0' {
				return false
			}
		}
	}
	if hasBuild {
		for _, id := range strings.Split(build, ".") {
			if !identifier(id) {
				return false
			}
		}
	}
	return true
}

func numeric(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// identifier reports whether s is a non-empty run of [0-9A-Za-z-].
func identifier(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && c != '-' {
			return false
		}
	}
	return true
}

// checkPath accepts a path inside a payload: relative, slash-separated, already clean
// (no ".", "..", empty or trailing components), valid UTF-8 without control characters or
// backslashes, at most MaxPathBytes. Pack and Unpack apply the same rule, so whatever Pack
// writes Unpack reads. Enforces ATTACKS row 17; attacked by TestUnpack_RejectsUnsafeEntries.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > MaxPathBytes:
		return fmt.Errorf("path longer than %d bytes", MaxPathBytes)
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case strings.ContainsFunc(p, func(r rune) bool { return unicode.IsControl(r) || r == '\\' }):
		return errors.New("path contains a control character or a backslash")
	case strings.HasPrefix(p, "/"):
		return errors.New("path is absolute")
	case p == ".." || strings.HasPrefix(p, "../") || strings.HasSuffix(p, "/..") || strings.Contains(p, "/../"):
		return errors.New(`path contains ".."`)
	case path.Clean(p) != p || p == ".":
		return errors.New("path is not clean")
	}
	return nil
}

// checkHostPort accepts "host:port" with host a lower-case DNS name or an IP address in its
// canonical form (IPv6 in brackets) and port a decimal 1-65535 without leading zeros.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" || a.String() != host {
			return fmt.Errorf("%q: write the IP address as %s, without a zone", s, a.WithZone(""))
		}
		if a.Is6() && !strings.HasPrefix(s, "[") {
			return fmt.Errorf("%q: put an IPv6 address in brackets", s)
		}
		return nil
	}
	if !dnsName(host) {
		return fmt.Errorf("%q: host must be a lower-case DNS name or an IP address", s)
	}
	return nil
}

// dnsName reports whether s is a lower-case host name: dot-separated labels of 1-63
// letters, digits and inner hyphens, at most 253 bytes, and a last label that is not all
// digits (so that a mistyped IP address is not taken for a name).
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := range len(l) {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return !numeric(labels[len(labels)-1])
}

func checkPin(n int) error {
	if n < 0 || n > 255 {
		return fmt.Errorf("%d is not a pin number from 0 to 255", n)
	}
	return nil
}

// checkPeripheral accepts a peripheral name such as "ISU0" or "PWM-CONTROLLER-0": a letter,
// then letters, digits, '-' or '_', at most 32 in all.
func checkPeripheral(s string) error {
	ok := s != "" && len(s) <= 32
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		ok = letter || i > 0 && ('0' <= c && c <= '9' || c == '-' || c == '_')
	}
	if !ok {
		return fmt.Errorf("%q is not a peripheral name such as ISU0 (a letter, then letters, digits, - or _; at most 32)", s)
	}
	return nil
}
