// Package director defines the per-device update assignment that the security service's
// online director key signs (Uptane's director role, simplified), and its verification on
// the device.
//
// An assignment names one device of one tenant, an increasing counter, a short validity
// window and at most one image per kind ("os", "app"), each by its TUF target path, SHA-256,
// length, version and security version. [Issue] signs one on the server; [Verify] checks one
// on the device; [CheckAgainstRepo] is the cross-check the device makes against the image
// repository it verified separately, before it installs anything.
//
// What it trusts: the director public key pinned on the device (passed to Verify), the
// device's own identity and clock (passed in [Expect]), the last counter it accepted and
// its anti-rollback floors (the caller persists both), and the image repository view the
// caller verified with TUF (the lookup passed to CheckAgainstRepo).
//
// What it enforces (DESIGN rule 2, the Uptane split): an assignment alone is never enough
// to install. It must be signed by exactly the pinned key (TestVerify_RejectsSignatureBySecondKey,
// TestVerify_RejectsForgery), its signed bytes must be the one canonical encoding, so no
// unsigned, duplicated or ambiguous field can influence an install (ATTACKS row 22;
// TestVerify_RejectsAmbiguousEncoding), it must name this device and tenant (ATTACKS row 19;
// TestVerify_RejectsReplayToOtherDevice), be inside its validity window
// (TestVerify_RejectsOutsideValidity), carry a counter above the last accepted one
// (TestVerify_RejectsReplayedCounter), and every image it names must be in the verified
// repository with the same hash, length and security version (ATTACKS row 18;
// TestCheckAgainstRepo_RejectsMismatch) and not below the device's floor (ATTACKS row 26;
// TestCheckAgainstRepo_RejectsBelowFloor). A compromise of the online director key can
// therefore withhold updates or re-assign an older signed image that the floor still
// allows, but cannot make a device install bytes the offline keys did not sign.
// The install windows, the deferral bound and IgnoreWindow (issue 12) are signed like the
// rest and held to one encoding (TestVerify_RejectsAmbiguousWindowEncoding); windows must
// be ascending and apart, at most MaxWindows (TestValidate_RefusesBadWindows). They only
// delay the install of an image the checks above admitted, so a compromised director key
// gains nothing from them beyond the withholding it can already do.
// ATTACKS row 20 (partial bundle) is the update client's: an assignment is all-or-nothing
// input to it. Bad input of any shape is an error and never a panic (FuzzVerify).
//
// Concurrency: the package has no state; every function is safe for concurrent use.
// Verify and CheckAgainstRepo do not keep the counter or floors: the caller records the
// accepted counter (and raises floors after a successful install) atomically with acting
// on the assignment.
package director

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/target"
)

// Format is the only assignment format version this package issues and accepts.
const Format = 1

// Limits of an assignment.
const (
	MaxImages       = 8                  // images in one assignment
	MaxWindows      = 16                 // install windows in one assignment
	MaxDeferral     = 7 * 24 * time.Hour // MaxDeferralSeconds
	MaxImageBytes   = 4 << 30            // length of one image (4 GiB)
	MaxValidity     = 7 * 24 * time.Hour // ExpiresAt - IssuedAt
	ClockSkew       = 5 * time.Minute    // how far IssuedAt may be ahead of the device's clock
	DefaultMaxBytes = 64 << 10           // size of an envelope Verify reads unless told otherwise
	maxIDLen        = 128
)

// Image kinds. An os image's path is under "os/" (signed by the platform OS key) and an
// app image's under "apps/" (delegated to the tenant's key), so the kind cannot be used to
// pass one off as the other.
const (
	KindOS  = "os"
	KindApp = "app"
)

// Errors that callers branch on with errors.Is.
var (
	ErrTooLarge     = envelope.ErrTooLarge
	ErrMalformed    = envelope.ErrMalformed
	ErrSignature    = envelope.ErrSignature
	ErrNotCanonical = envelope.ErrNotCanonical
	ErrWrongDevice  = errors.New("assignment for another device")
	ErrExpired      = errors.New("assignment outside its validity window")
	ErrReplayed     = errors.New("assignment counter not above the last accepted")
	ErrRepoMismatch = errors.New("assigned image differs from the image repository")
	ErrBelowFloor   = errors.New("assigned image below the anti-rollback floor")
)

// Assignment is what the director says one device should run. Its JSON encoding, with the
// fields in this order and times in RFC 3339 UTC to the second, is what the director key
// signs.
type Assignment struct {
	Version   int       `json:"version"` // Format
	DeviceID  string    `json:"device_id"`
	TenantID  string    `json:"tenant_id"`
	Counter   uint64    `json:"counter"` // strictly increasing per device, from 1
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Images    []Image   `json:"images"` // at most one per kind; empty: nothing assigned
	// InstallWindows are the device group's maintenance windows from about now on (issue
	// 12): the device installs an image only inside one, unless the image has
	// IgnoreWindow. Ascending, non-overlapping, UTC, at most MaxWindows; none: install at
	// any time. They decide only when an image the device verified is installed, never
	// which one.
	InstallWindows []Window `json:"install_windows,omitempty"`
	// MaxDeferralSeconds bounds how long the device's app may defer installing a pending
	// image, counted from its first deferral (the product's setting, 0 to MaxDeferral);
	// 0: the app cannot defer.
	MaxDeferralSeconds int64 `json:"max_deferral_seconds,omitempty"`
}

// Window is one install window: From inclusive, Until exclusive, in UTC to the second.
type Window struct {
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
}

// Contains reports whether t is inside w.
func (w Window) Contains(t time.Time) bool { return !t.Before(w.From) && t.Before(w.Until) }

// Image is one image the device should run, named as the TUF image repository names it.
type Image struct {
	Kind            string `json:"kind"`   // KindOS or KindApp
	Path            string `json:"path"`   // TUF target path: "os/<name>/<version>" or "apps/<component>/<version>"
	SHA256          string `json:"sha256"` // 64 lower-case hex digits
	Length          int64  `json:"length"` // bytes, 1..MaxImageBytes
	Version         string `json:"version"`
	SecurityVersion uint32 `json:"security_version"`
	// IgnoreWindow: install at once, outside the install windows (a security update).
	IgnoreWindow bool `json:"ignore_window,omitempty"`
}

// Validate reports every problem with the assignment's content, joined.
func (a Assignment) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if a.Version != Format {
		bad("version: %d, want %d", a.Version, Format)
	}
	if !validID(a.DeviceID) {
		bad("device_id: %q is not 1 to %d letters, digits or ._:-", a.DeviceID, maxIDLen)
	}
	if !validID(a.TenantID) {
		bad("tenant_id: %q is not 1 to %d letters, digits or ._:-", a.TenantID, maxIDLen)
	}
	if a.Counter == 0 {
		bad("counter: must be at least 1")
	}
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"issued_at", a.IssuedAt}, {"expires_at", a.ExpiresAt}} {
		if err := checkTime(f.name, f.t); err != nil {
			errs = append(errs, err)
		}
	}
	if !a.IssuedAt.IsZero() && !a.ExpiresAt.IsZero() {
		if v := a.ExpiresAt.Sub(a.IssuedAt); v <= 0 || v > MaxValidity {
			bad("expires_at: %s after issued_at, want more than 0 and at most %s", v, MaxValidity)
		}
	}
	if len(a.Images) > MaxImages {
		bad("images: %d, at most %d", len(a.Images), MaxImages)
	}
	seen := map[string]bool{}
	for i, im := range a.Images {
		if err := im.validate(); err != nil {
			bad("images[%d]: %w", i, err)
		}
		if seen[im.Kind] {
			bad("images[%d]: a second image of kind %q", i, im.Kind)
		}
		seen[im.Kind] = true
	}
	if err := checkWindows(a.InstallWindows); err != nil {
		errs = append(errs, err)
	}
	if a.MaxDeferralSeconds < 0 || a.MaxDeferralSeconds > int64(MaxDeferral/time.Second) {
		bad("max_deferral_seconds: %d, want 0 to %d", a.MaxDeferralSeconds, int64(MaxDeferral/time.Second))
	}
	return errors.Join(errs...)
}

// checkTime accepts a time in UTC, to the second, in years 2000 to 9999: one encoding.
func checkTime(name string, t time.Time) error {
	switch {
	case t.IsZero():
		return fmt.Errorf("%s: missing", name)
	case t.Location() != time.UTC:
		return fmt.Errorf("%s: %s is not in UTC", name, t.Format(time.RFC3339))
	case t.Nanosecond() != 0:
		return fmt.Errorf("%s: %s has a fraction of a second", name, t.Format(time.RFC3339Nano))
	case t.Year() < 2000 || t.Year() > 9999:
		return fmt.Errorf("%s: year %d out of range", name, t.Year())
	}
	return nil
}

// checkWindows accepts at most MaxWindows windows, each valid and non-empty, in ascending
// order with a gap between each and the next (touching windows are one window).
func checkWindows(ws []Window) error {
	var errs []error
	if len(ws) > MaxWindows {
		errs = append(errs, fmt.Errorf("install_windows: %d, at most %d", len(ws), MaxWindows))
	}
	for i, w := range ws {
		errF, errU := checkTime(fmt.Sprintf("install_windows[%d].from", i), w.From), checkTime(fmt.Sprintf("install_windows[%d].until", i), w.Until)
		if errF != nil || errU != nil {
			errs = append(errs, errF, errU)
			continue
		}
		if !w.From.Before(w.Until) {
			errs = append(errs, fmt.Errorf("install_windows[%d]: from %s is not before until %s", i, w.From.Format(time.RFC3339), w.Until.Format(time.RFC3339)))
		}
		if i > 0 && !w.From.After(ws[i-1].Until) {
			errs = append(errs, fmt.Errorf("install_windows[%d]: from %s does not come after the previous window's until %s", i, w.From.Format(time.RFC3339), ws[i-1].Until.Format(time.RFC3339)))
		}
	}
	return errors.Join(errs...)
}

func (im Image) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var prefix string
	switch im.Kind {
	case KindOS:
		prefix = "os/"
	case KindApp:
		prefix = "apps/"
	default:
		bad("kind: %q, want %q or %q", im.Kind, KindOS, KindApp)
	}
	if !target.ValidVersion(im.Version) {
		bad("version: %q is not 1 to %d letters, digits or .+-", im.Version, target.MaxVersionLen)
	}
	switch {
	case !target.ValidPath(im.Path):
		bad("path: %q is not a clean relative path of letters, digits and ._+- segments", im.Path)
	case prefix != "" && !strings.HasPrefix(im.Path, prefix):
		bad("path: %q of a %s image is not under %s", im.Path, im.Kind, prefix)
	case im.Path[strings.LastIndexByte(im.Path, '/')+1:] != im.Version:
		bad("path: %q does not end in its version %q", im.Path, im.Version)
	}
	if !target.ValidSHA256(im.SHA256) {
		bad("sha256: %q is not 64 lower-case hex digits", im.SHA256)
	}
	if im.Length <= 0 || im.Length > MaxImageBytes {
		bad("length: %d, want 1 to %d", im.Length, int64(MaxImageBytes))
	}
	return errors.Join(errs...)
}

func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !target.IsAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}
