// Package identity is the device's identity: its ECDSA P-256 identity key, held behind
// the small [Signer] interface, and the device ID derived from the public half.
//
// A device ID is the lower-case hex SHA-256 of the PKIX (SubjectPublicKeyInfo) DER
// encoding of the device's P-256 public key ([IDFromPublicKey]): 64 characters, the same
// on every machine, and bound to the key, so nobody can claim an ID without the key.
//
// What it trusts: the local filesystem and the operating system's access control for
// the key file of a [FileKey] (a TPM backend would hold the key in hardware instead).
// What it enforces (DESIGN trust model, rule 1: the identity key is what evidence is
// signed with): only P-256 keys are created or opened; a key file is created exclusively
// (never overwriting an identity), with mode 0600, durably (temporary file, fsync,
// rename, fsync of the directory), and [OpenFileKey] refuses a file that group or others
// may read or write, or a key of another type or curve.
//
// The package uses the standard library only, so the slim device build stays small.
//
// Concurrency: the package has no state; a FileKey is immutable after opening and safe
// for concurrent use.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
)

// DeviceID names one device: the lower-case hex SHA-256 of the PKIX DER of its identity
// public key.
type DeviceID string

// IDLen is the length of a device ID in characters.
const IDLen = 2 * sha256.Size

// IDFromPublicKey returns the device ID of pub: the lower-case hex SHA-256 of the PKIX
// (SubjectPublicKeyInfo) DER encoding of the P-256 public key. It returns "" for nil or
// a key that is not on P-256, which [ValidID] refuses.
//
// The encoding is the same for every P-256 key up to the point, so it is written as that
// prefix and the point, not by x509 (issue 15: x509's reflective encoding was most of the
// cost, and the server works an ID out on every certificate it issues);
// TestIDFromPublicKey_SameAsX509 checks the bytes against x509.MarshalPKIXPublicKey.
func IDFromPublicKey(pub *ecdsa.PublicKey) DeviceID {
	if pub == nil || pub.Curve != elliptic.P256() {
		return ""
	}
	point, err := pub.Bytes() // the uncompressed point; an error for a point not on the curve
	if err != nil {
		return ""
	}
	h := sha256.New()
	h.Write(p256SPKIPrefix)
	h.Write(point)
	var sum [sha256.Size]byte
	return DeviceID(hex.EncodeToString(h.Sum(sum[:0])))
}

// p256SPKIPrefix is the PKIX encoding of a P-256 public key up to its 65-byte point:
// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (no unused bits) }.
var p256SPKIPrefix = []byte{
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
}

// ValidID reports whether s has the form of a device ID: exactly 64 lower-case hex digits.
func ValidID(s string) bool {
	if len(s) != IDLen {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Signer holds a device identity key. The private key need not be exportable: a TPM 2.0
// or secure-element backend implements the same interface.
type Signer interface {
	// Public returns the P-256 public key.
	Public() *ecdsa.PublicKey
	// Sign signs a SHA-256 digest (32 bytes) and returns an ASN.1 DER ECDSA signature.
	Sign(digest []byte) ([]byte, error)
}

// CryptoSigner adapts s to crypto.Signer, so the identity key authenticates TLS
// connections (mutual TLS on the device API) without leaving its backend. It signs only
// SHA-256 digests, which is what ECDSA P-256 uses in TLS 1.3 and moat's TLS 1.2 suites.
func CryptoSigner(s Signer) crypto.Signer { return cryptoSigner{s} }

type cryptoSigner struct{ s Signer }

func (c cryptoSigner) Public() crypto.PublicKey { return c.s.Public() }

func (c cryptoSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("identity: only SHA-256 digests are signed")
	}
	return c.s.Sign(digest)
}
