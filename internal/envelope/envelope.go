// Package envelope is the one signed-document format moat's online and device keys use for
// what is not TUF metadata: director assignments (internal/director) and attestation
// evidence (internal/attest). An envelope is {"signed": <canonical JSON>, "signatures":
// [{"keyid", "sig"}]} with exactly one ECDSA P-256 signature over the SHA-256 of the signed
// bytes.
//
// Open is strict so that nothing unsigned or ambiguous can influence what is acted on
// (ATTACKS rows 5 and 22): a size limit; strict decoding (no unknown fields, no trailing
// data); exactly one signature, by the pinned key, checked over the raw bytes before they
// are read; and both the signed bytes and the envelope must be exactly their canonical
// encodings, so a duplicate key, an escape, padding or a reordering is refused rather than
// interpreted. Attacked by director's and attest's Rejects* tests and fuzz targets.
//
// Stateless; safe for concurrent use.
package envelope

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/moat-iot/moat/internal/identity"
)

// Errors callers branch on; internal/director and internal/attest re-export them.
var (
	ErrTooLarge     = errors.New("envelope too large")
	ErrMalformed    = errors.New("malformed envelope")
	ErrSignature    = errors.New("envelope signature invalid")
	ErrNotCanonical = errors.New("envelope not in canonical form")
)

// Signed is the envelope: the canonical document bytes and the signature over them.
type Signed struct {
	Signed     json.RawMessage `json:"signed"`
	Signatures []Signature     `json:"signatures"`
}

// Signature is an ECDSA P-256 signature over the SHA-256 of Signed.Signed.
type Signature struct {
	KeyID string `json:"keyid"` // KeyID of the signing key
	Sig   string `json:"sig"`   // ASN.1 DER, standard base64 with padding
}

// KeyID returns the hex SHA-256 of the PKIX (SubjectPublicKeyInfo) DER encoding of pub.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	id := identity.IDFromPublicKey(pub) // the same digest, without x509's encoder
	if id == "" {
		return "", errors.New("not an ECDSA P-256 public key")
	}
	return string(id), nil
}

// Seal signs body, which must already be the canonical encoding of the document, with sign
// (ASN.1 DER over a SHA-256 digest, by the key pub) and returns the envelope.
func Seal(pub *ecdsa.PublicKey, body []byte, sign func(digest []byte) ([]byte, error)) ([]byte, error) {
	kid, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	sig, err := sign(sum[:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return json.Marshal(Signed{
		Signed:     body,
		Signatures: []Signature{{KeyID: kid, Sig: base64.StdEncoding.EncodeToString(sig)}},
	})
}

// Key is a public key with its KeyID, worked out once (NewKey) for a key that opens many
// envelopes: a device's identity key, cached by the server (issue 15: the key ID was worked
// out twice per attestation, an eighth of the evidence check beside the signature).
type Key struct {
	pub *ecdsa.PublicKey
	id  string
}

// NewKey returns pub with its KeyID; an error when pub is not an ECDSA P-256 key.
func NewKey(pub *ecdsa.PublicKey) (Key, error) {
	id, err := KeyID(pub)
	if err != nil {
		return Key{}, err
	}
	return Key{pub: pub, id: id}, nil
}

// Public is the key.
func (k Key) Public() *ecdsa.PublicKey { return k.pub }

// ID is the key's KeyID.
func (k Key) ID() string { return k.id }

// Open checks data, signed by pub, decodes the document into v (a pointer), and checks that
// canonical (which encodes *v the way Seal's caller did) reproduces the signed bytes. The
// caller validates the document's content afterwards.
func Open(data []byte, pub *ecdsa.PublicKey, maxBytes int, v any, canonical func() ([]byte, error)) error {
	k, err := NewKey(pub)
	if err != nil {
		return err
	}
	return OpenKey(data, k, maxBytes, v, canonical)
}

// OpenKey is Open with the key's ID worked out already. The zero Key opens nothing.
func OpenKey(data []byte, k Key, maxBytes int, v any, canonical func() ([]byte, error)) error {
	pub, kid := k.pub, k.id
	if pub == nil || kid == "" {
		return errors.New("no key")
	}
	if len(data) > maxBytes {
		return fmt.Errorf("%d bytes, limit %d: %w", len(data), maxBytes, ErrTooLarge)
	}
	var env Signed
	if err := decodeStrict(data, &env); err != nil {
		return fmt.Errorf("envelope: %w: %w", ErrMalformed, err)
	}
	if len(env.Signed) == 0 || bytes.Equal(env.Signed, []byte("null")) {
		return fmt.Errorf("envelope: no signed field: %w", ErrMalformed)
	}
	// The signature is checked over the raw bytes before anything in them is read.
	if n := len(env.Signatures); n != 1 {
		return fmt.Errorf("%d signatures, want exactly 1: %w", n, ErrSignature)
	}
	s := env.Signatures[0]
	if s.KeyID != kid {
		return fmt.Errorf("signed by key %.16q, want the pinned key %.16s: %w", s.KeyID, kid, ErrSignature)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
	if err != nil || base64.StdEncoding.EncodeToString(sig) != s.Sig {
		return fmt.Errorf("signature is not standard base64: %w", ErrSignature)
	}
	sum := sha256.Sum256(env.Signed)
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return fmt.Errorf("signature by key %.16s does not verify: %w", kid, ErrSignature)
	}
	if err := decodeStrict(env.Signed, v); err != nil {
		return fmt.Errorf("signed: %w: %w", ErrMalformed, err)
	}
	c, err := canonical()
	if err != nil {
		return fmt.Errorf("signed: %w: %w", ErrMalformed, err)
	}
	if !bytes.Equal(c, env.Signed) {
		return fmt.Errorf("signed bytes are not the canonical encoding: %w", ErrNotCanonical)
	}
	if b, err := json.Marshal(env); err != nil || !bytes.Equal(b, data) {
		return fmt.Errorf("envelope is not the canonical encoding: %w", ErrNotCanonical)
	}
	return nil
}

// decodeStrict decodes exactly one JSON value into v: unknown fields and trailing data
// (other than white space, which the canonical check then refuses) are errors.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
