// Package image is moat's image package format: the one file a tenant (or the platform
// operator, for OS images) packs, signs and publishes, and a device downloads and installs.
//
// A package is a fixed header, a manifest as canonical JSON, and the payload, a
// zstd-compressed tar (docs/image-format.md has the byte layout). There is no signature
// inside: the TUF targets metadata, signed offline by the image's owner, names the SHA-256 and
// length of the whole file, so every byte, header and manifest included, is covered (rule 2;
// ATTACKS row 22). Because the bytes that are signed are the bytes that are read, the reader
// is strict: the manifest must be the canonical encoding of its own decoded value (no
// duplicate keys, unknown fields, reordering or padding for an unsigned reading to hide in),
// the payload must have exactly the declared length and SHA-256, and nothing may follow it.
// Strictness is attacked by TestOpen_RejectsBitFlips, TestOpen_RejectsDuplicateKey and
// FuzzOpen.
//
// Unpack extracts a payload into a directory and trusts nothing in it: no absolute paths, no
// "..", no links or devices, bounded size and entry count, every write through an os.Root
// (ATTACKS row 17; attacked by TestUnpack_RejectsUnsafeEntries and FuzzOpen). Payload bytes
// are verified only when the payload has been read to its end, so a caller that must write
// only verified bytes (ATTACKS row 21) unpacks into a staging directory and discards it on
// error, or first copies Reader.Payload to a file it alone controls.
//
// Pack builds a package from a directory deterministically: the same content gives the same
// bytes, whatever the file times, owners or location (TestPack_Deterministic).
//
// Functions here keep no state; a Reader is for one goroutine.
package image

import "errors"

// Magic starts every package.
const Magic = "MOATIMG\x00"

// FormatVersion is the package format this code reads and writes, in the header and in the
// manifest's format field.
const FormatVersion = 1

// Limits on untrusted input.
const (
	// MaxManifestBytes bounds the manifest section.
	MaxManifestBytes = 64 << 10
	// MaxEntries bounds the number of tar entries Unpack accepts.
	MaxEntries = 10000
	// MaxPathBytes bounds the length of a path inside the payload.
	MaxPathBytes = 1024
)

// headerLen is the size of the fixed header: magic, format version, manifest length.
const headerLen = len(Magic) + 4 + 4

// Errors callers branch on with errors.Is. Each is wrapped with the detail of what was wrong.
var (
	// ErrBadMagic: the file does not start with Magic; it is not an image package.
	ErrBadMagic = errors.New("not a moat image package")
	// ErrUnsupportedVersion: the header names a format version this code does not know.
	ErrUnsupportedVersion = errors.New("unsupported image package format version")
	// ErrTruncated: the file ends inside the header, the manifest or the payload.
	ErrTruncated = errors.New("image package truncated")
	// ErrTrailingData: bytes follow the payload, or follow the end of the payload's tar or
	// zstd stream.
	ErrTrailingData = errors.New("trailing data after image payload")
	// ErrPayloadMismatch: the payload is not what the manifest declares: its SHA-256
	// differs, or it is not a well-formed zstd-compressed tar.
	ErrPayloadMismatch = errors.New("image payload does not match its manifest")
	// ErrNotCanonical: the manifest bytes are not the canonical JSON encoding of the
	// manifest they decode to (duplicate or unknown keys, other order, white space, escapes).
	ErrNotCanonical = errors.New("image manifest is not canonical JSON")
	// ErrInvalidManifest: the manifest is not JSON of the manifest's shape, or a field is
	// invalid. Validation failures also carry a *problem.Error listing every field.
	ErrInvalidManifest = errors.New("invalid image manifest")
	// ErrTooLarge: the manifest, the unpacked payload or its entry count exceed a limit.
	ErrTooLarge = errors.New("image package exceeds a limit")
	// ErrUnsafePath: a path is absolute, contains "..", escapes the target directory, or
	// names a symlink, hard link, device or other non-regular file.
	ErrUnsafePath = errors.New("unsafe path in image")
)
