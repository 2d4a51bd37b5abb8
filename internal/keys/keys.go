// Package keys creates, stores and reads the offline signing keys of moat's signing roles:
// the platform root, the platform OS signing key and each tenant's image signing key. These
// keys sign on the operator's or the tenant's machine and never reach the server (DESIGN
// trust model; rule 2: a compromise of the running service alone cannot put foreign code on
// a device). Every key is ECDSA P-256, so the same keys fit secure elements and TPM 2.0, and
// is named by its TUF key ID, computed by go-tuf v2 itself.
//
// What it trusts: crypto/rand, the local file system, and the user running it. What it
// enforces (the file format is in docs/keys.md):
//   - only ECDSA P-256 keys are generated, read or written (ErrUnsupportedKey otherwise);
//     attacked by TestReadPrivate_RejectsOtherKeyTypes and TestParsePublicPEM_RejectsOtherKeyTypes;
//   - a key file is never overwritten; attacked by TestWrite_NeverOverwrites;
//   - a private key file is mode 0600 when written and refused when group or world may read
//     it; attacked by TestReadPrivate_RefusesExposedFile;
//   - an encrypted private key (scrypt, AES-256-GCM) is refused if anything in it changed,
//     and its scrypt parameters are bounded before any work, so a hostile file cannot make a
//     reader allocate gigabytes; attacked by TestReadPrivate_RejectsTampering and
//     TestReadPrivate_RejectsHostileKDFParams;
//   - decoders of key files are total over any input (rule 5): FuzzParsePublicPEM,
//     FuzzDecodePrivatePEM.
//
// The package holds no state; its functions are safe for concurrent use.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Errors callers branch on. Every error of this package that stands for one of them wraps it.
var (
	// ErrWrongPassphrase: an encrypted private key did not decrypt. AES-GCM cannot tell a
	// wrong passphrase from a modified file; either way nothing was read.
	ErrWrongPassphrase = errors.New("wrong passphrase, or the key file was modified")
	// ErrNoPassphrase: the private key is encrypted and no passphrase was given.
	ErrNoPassphrase = errors.New("the private key is encrypted and no passphrase was given")
	// ErrUnsupportedKey: a key other than ECDSA P-256 (RSA, Ed25519, another curve).
	ErrUnsupportedKey = errors.New("unsupported key: moat keys are ECDSA P-256")
	// ErrMalformed: the bytes are not a key file this package reads (corrupted, truncated,
	// another format, out-of-bounds parameters).
	ErrMalformed = errors.New("malformed key file")
	// ErrExposed: a private key file that group or others may read.
	ErrExposed = errors.New("private key file is readable by others")
)

// Algorithm is the TUF key type and signature scheme of every moat key.
const (
	KeyType   = metadata.KeyTypeECDSA_SHA2_P256   // "ecdsa"
	KeyScheme = metadata.KeySchemeECDSA_SHA2_P256 // "ecdsa-sha2-nistp256"
)

// Generate returns a new ECDSA P-256 key from crypto/rand.
func Generate() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return k, nil
}

// KeyID is the TUF key ID of pub as go-tuf v2 computes it: the hex SHA-256 of the canonical
// JSON of {"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": PEM}},
// where PEM is the PKIX "PUBLIC KEY" block WritePublic writes. TUF metadata and the server
// name the key by it.
//
// pub must be a P-256 key, as every key of this package is; anything else is a programming
// error and panics.
func KeyID(pub *ecdsa.PublicKey) string {
	if err := checkPublic(pub); err != nil {
		panic(fmt.Sprintf("keys.KeyID: %v", err))
	}
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		panic(fmt.Sprintf("keys.KeyID: %v", err))
	}
	id, err := k.ID()
	if err != nil {
		panic(fmt.Sprintf("keys.KeyID: %v", err))
	}
	return id
}

// Signer returns a signer for go-tuf v2's Metadata.Sign: ECDSA over SHA-256, ASN.1 DER
// signatures, the "ecdsa-sha2-nistp256" scheme. The signature carries KeyID of the key.
func Signer(key *ecdsa.PrivateKey) (signature.Signer, error) {
	if err := checkPrivate(key); err != nil {
		return nil, err
	}
	return signature.LoadECDSASigner(key, crypto.SHA256)
}

func checkPublic(pub *ecdsa.PublicKey) error {
	if pub == nil {
		return fmt.Errorf("%w: no public key", ErrUnsupportedKey)
	}
	if pub.Curve != elliptic.P256() {
		return fmt.Errorf("%w: ECDSA on %s", ErrUnsupportedKey, curveName(pub.Curve))
	}
	return nil
}

func checkPrivate(key *ecdsa.PrivateKey) error {
	if key == nil {
		return fmt.Errorf("%w: no private key", ErrUnsupportedKey)
	}
	return checkPublic(&key.PublicKey)
}

func curveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "an unknown curve"
	}
	return c.Params().Name
}
