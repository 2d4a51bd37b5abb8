package deviceca

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
)

// Wrapped key format, version 1:
//
//	version (1 byte, 1) || nonce (12 random bytes) || AES-256-GCM(PKCS #8 DER) || tag (16 bytes)
//
// The additional data is the version byte, the label wrapLabel and the caller's binding,
// so a wrapped key opens only with the same key-encryption key and the same binding, and
// a key-encryption key shared with another use of AES-GCM cannot be confused with this one.
const (
	wrapVersion byte = 1
	wrapLabel        = "moat deviceca wrapped CA key\x00"
	// KEKSize is the size of a key-encryption key in bytes: AES-256.
	KEKSize = 32
)

// Wrap encrypts a tenant CA private key for storage under kek (KEKSize random bytes) with
// AES-256-GCM and a random nonce, and binds it to aad, which must name the key's tenant
// and CA (for example tenantID + "/" + caID) so that a wrapped key cannot be moved to
// another tenant's or CA's row. A random 96-bit nonce allows 2^32 wraps under one kek.
func Wrap(kek []byte, key *ecdsa.PrivateKey, aad string) ([]byte, error) {
	aead, err := newAEAD(kek, aad)
	if err != nil {
		return nil, fmt.Errorf("wrap CA key: %w", err)
	}
	if key == nil {
		return nil, fmt.Errorf("wrap CA key: %w: no key", ErrInvalidInput)
	}
	if _, err := signerKey(key); err != nil {
		return nil, fmt.Errorf("wrap CA key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("wrap CA key: %w", err)
	}
	defer clear(der)
	// The random-nonce AEAD draws its nonce from crypto/rand and writes it before the
	// ciphertext; the nil is the nonce argument it requires to be empty.
	return aead.Seal([]byte{wrapVersion}, nil, der, additionalData(aad)), nil //nolint:gosec // G407: the nonce is random, made inside NewGCMWithRandomNonce's Seal

}

// Unwrap opens a key sealed by [Wrap] with the same kek and aad. A wrong kek, a wrong
// aad or any modification is ErrUnwrap.
func Unwrap(kek []byte, wrapped []byte, aad string) (*ecdsa.PrivateKey, error) {
	aead, err := newAEAD(kek, aad)
	if err != nil {
		return nil, fmt.Errorf("unwrap CA key: %w", err)
	}
	if len(wrapped) < 1+aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("unwrap CA key: %w: %d bytes, too short", ErrUnwrap, len(wrapped))
	}
	if wrapped[0] != wrapVersion {
		return nil, fmt.Errorf("unwrap CA key: %w: version %d, want %d", ErrUnwrap, wrapped[0], wrapVersion)
	}
	der, err := aead.Open(nil, nil, wrapped[1:], additionalData(aad))
	if err != nil {
		return nil, fmt.Errorf("unwrap CA key: %w", ErrUnwrap)
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("unwrap CA key: %w: %w", ErrUnwrap, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("unwrap CA key: %w: not an ECDSA key", ErrUnwrap)
	}
	if _, err := signerKey(key); err != nil {
		return nil, fmt.Errorf("unwrap CA key: %w: %w", ErrUnwrap, err)
	}
	return key, nil
}

// newAEAD returns AES-256-GCM with random nonces under kek, after checking kek and aad.
func newAEAD(kek []byte, aad string) (cipher.AEAD, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("%w: key-encryption key is %d bytes, want %d", ErrInvalidInput, len(kek), KEKSize)
	}
	if aad == "" {
		return nil, fmt.Errorf("%w: no binding (aad) given", ErrInvalidInput)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func additionalData(aad string) []byte {
	return append(append([]byte{wrapVersion}, wrapLabel...), aad...)
}
