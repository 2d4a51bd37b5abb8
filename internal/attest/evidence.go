// Package attest defines the attestation evidence a device signs with its identity key
// (DESIGN rule 1, issue 5 item 4), and its strict verification on the server.
//
// Evidence names the device, echoes the server's nonce, carries the device's time,
// whether it runs in development mode, and the measurements of what it booted: at most
// one OS and one application image, each by its TUF target path, SHA-256, version and
// security version. [Sign] produces the signed envelope on the device; [Verify] checks one
// on the server. The envelope is the house pattern of internal/director: a canonical JSON
// body and exactly one ECDSA P-256 signature over its SHA-256.
//
// What it trusts: the device's registered identity public key (passed to Verify by the
// caller, from its registry), the nonce the server issued for this session and the
// server's clock (passed in [Expect]).
//
// What it enforces: evidence is accepted only if it is exactly one canonical encoding
// (TestAttest_RejectsAmbiguousEncoding), signed by exactly the registered key
// (TestAttest_RejectsForgery), names the device that key identifies, so a device cannot
// present evidence under another device's ID (TestAttest_RejectsOtherDevicesKey), echoes
// the session's nonce (ATTACKS row 2; TestAttest_RejectsReplayedEvidence), and carries a
// time within the allowed skew (TestAttest_RejectsStaleEvidence). Bad input of any shape
// is an error and never a panic (ATTACKS row 5; FuzzVerify).
//
// What it does not do, and the caller must: issue nonces and mark each one used exactly
// once, atomically, in its store (Verify only compares; a nonce accepted twice is the
// store's failure, ATTACKS rows 1 and 2); check that the device is registered, claimed and
// not blocked; and judge the measurements against the image registry, revocations and the
// device's anti-rollback floor (ATTACKS row 4). Verify checks only their form.
//
// Concurrency: the package has no state; every function is safe for concurrent use.
package attest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/envelope"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/target"
)

// Format is the only evidence format version this package signs and accepts.
const Format = 1

// Limits of evidence.
const (
	MaxMeasurements = 8
	DefaultMaxBytes = 16 << 10        // envelope size Verify accepts unless told otherwise
	DefaultMaxSkew  = 5 * time.Minute // allowed |Time - Now| unless told otherwise
	NonceBytes      = 32
)

// Measurement kinds.
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
	ErrWrongDevice  = errors.New("evidence for another device")
	ErrNonce        = errors.New("evidence nonce does not match")
	ErrStale        = errors.New("evidence time outside the allowed skew")
)

// Evidence is what a device says about itself in one attestation. Its JSON encoding, with
// the fields in this order and the time in RFC 3339 UTC to the second, is what the
// identity key signs.
type Evidence struct {
	Format          int           `json:"format"`    // Format
	DeviceID        string        `json:"device_id"` // identity.IDFromPublicKey of the signing key
	Nonce           string        `json:"nonce"`     // the server's nonce: unpadded base64url of NonceBytes bytes
	Time            time.Time     `json:"time"`      // the device's clock, UTC, whole seconds
	DevelopmentMode bool          `json:"development_mode"`
	Measurements    []Measurement `json:"measurements"` // at most one per kind
}

// Measurement is one image the device booted, named as the TUF image repository names it.
type Measurement struct {
	Kind            string `json:"kind"`   // KindOS or KindApp
	Path            string `json:"path"`   // TUF target path: "os/..." or "apps/..."
	SHA256          string `json:"sha256"` // 64 lower-case hex digits
	Version         string `json:"version"`
	SecurityVersion uint32 `json:"security_version"`
}

// Validate reports every problem with the evidence's content, joined.
func (e Evidence) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if e.Format != Format {
		bad("format: %d, want %d", e.Format, Format)
	}
	if !identity.ValidID(e.DeviceID) {
		bad("device_id: %q is not 64 lower-case hex digits", e.DeviceID)
	}
	if !validNonce(e.Nonce) {
		bad("nonce: %q is not unpadded base64url of %d bytes", e.Nonce, NonceBytes)
	}
	switch t := e.Time; {
	case t.IsZero():
		bad("time: missing")
	case t.Location() != time.UTC:
		bad("time: %s is not in UTC", t.Format(time.RFC3339))
	case t.Nanosecond() != 0:
		bad("time: %s has a fraction of a second", t.Format(time.RFC3339Nano))
	case t.Year() < 2000 || t.Year() > 9999:
		bad("time: year %d out of range", t.Year())
	}
	if len(e.Measurements) > MaxMeasurements {
		bad("measurements: %d, at most %d", len(e.Measurements), MaxMeasurements)
	}
	seen := map[string]bool{}
	for i, m := range e.Measurements {
		if err := m.validate(); err != nil {
			bad("measurements[%d]: %w", i, err)
		}
		if seen[m.Kind] {
			bad("measurements[%d]: a second measurement of kind %q", i, m.Kind)
		}
		seen[m.Kind] = true
	}
	return errors.Join(errs...)
}

func (m Measurement) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var prefix string
	switch m.Kind {
	case KindOS:
		prefix = "os/"
	case KindApp:
		prefix = "apps/"
	default:
		bad("kind: %q, want %q or %q", m.Kind, KindOS, KindApp)
	}
	if !target.ValidVersion(m.Version) {
		bad("version: %q is not 1 to %d letters, digits or .+-", m.Version, target.MaxVersionLen)
	}
	switch {
	case !target.ValidPath(m.Path):
		bad("path: %q is not a clean relative path of letters, digits and ._+- segments", m.Path)
	case prefix != "" && !strings.HasPrefix(m.Path, prefix):
		bad("path: %q of a %s measurement is not under %s", m.Path, m.Kind, prefix)
	case m.Path[strings.LastIndexByte(m.Path, '/')+1:] != m.Version:
		bad("path: %q does not end in its version %q", m.Path, m.Version)
	}
	if !target.ValidSHA256(m.SHA256) {
		bad("sha256: %q is not 64 lower-case hex digits", m.SHA256)
	}
	return errors.Join(errs...)
}

func validNonce(s string) bool {
	// Unpadded base64url of 32 bytes is 43 characters; the last one carries 4 zero bits,
	// which the strict decoder checks, so each nonce has one spelling.
	b, err := nonceEncoding.DecodeString(s)
	return err == nil && len(b) == NonceBytes
}
