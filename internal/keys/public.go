package keys

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"strings"
)

// EncodePublicPEM encodes pub as a PKIX "PUBLIC KEY" PEM block: the form WritePublic
// writes, TUF metadata carries as the key's value and KeyID hashes.
func EncodePublicPEM(pub *ecdsa.PublicKey) ([]byte, error) {
	if err := checkPublic(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

// WritePublic writes pub to a new file at path, as EncodePublicPEM, with mode 0644; it never
// replaces an existing file (the error then wraps fs.ErrExist).
func WritePublic(path string, pub *ecdsa.PublicKey) error {
	data, err := EncodePublicPEM(pub)
	if err != nil {
		return err
	}
	if err := writeNew(path, data, 0o644); err != nil {
		return fmt.Errorf("write public key: %w", err)
	}
	return nil
}

// ReadPublic reads a public key file as ParsePublicPEM.
func ReadPublic(path string) (*ecdsa.PublicKey, error) {
	data, _, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key %s: %w", path, err)
	}
	pub, err := ParsePublicPEM(data)
	if err != nil {
		return nil, fmt.Errorf("read public key %s: %w", path, err)
	}
	return pub, nil
}

// spki is the outer PKIX SubjectPublicKeyInfo (RFC 5280), enough to see the algorithm.
type spki struct {
	Algo      pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// ParsePublicPEM parses exactly one PKIX "PUBLIC KEY" PEM block, with nothing around it but
// white space, holding an ECDSA P-256 key. Other key kinds are ErrUnsupportedKey, anything
// else ErrMalformed. Fuzzed by FuzzParsePublicPEM.
func ParsePublicPEM(data []byte) (*ecdsa.PublicKey, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxFileBytes)
	}
	b, err := decodeOnePEM(data)
	if err != nil {
		return nil, err
	}
	switch {
	case b.Type == pemPrivate || b.Type == pemEncrypted:
		return nil, fmt.Errorf("%w: this is a private key; give its .pub file", ErrMalformed)
	case b.Type != pemPublic:
		return nil, fmt.Errorf("%w: PEM block %q is not a public key", ErrMalformed, b.Type)
	case len(b.Headers) != 0:
		return nil, fmt.Errorf("%w: PEM headers on a public key", ErrMalformed)
	}
	var outer spki
	rest, err := asn1.Unmarshal(b.Bytes, &outer)
	if err != nil {
		return nil, fmt.Errorf("%w: PKIX: %w", ErrMalformed, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: bytes after the PKIX structure", ErrMalformed)
	}
	if err := checkAlgorithm(outer.Algo); err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: PKIX: %w", ErrMalformed, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok { // unreachable after checkAlgorithm, kept to fail closed
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, k)
	}
	if err := checkPublic(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// Info is what a key file holds, as Inspect finds it.
type Info struct {
	Public    *ecdsa.PublicKey
	Private   bool // the file holds the private key
	Encrypted bool // ... encrypted with a passphrase
}

// Inspect reads a public or a private key file and returns its public key. A private key is
// read as ReadPrivate reads it (mode check, passphrase only when encrypted), so Inspect
// also proves that the passphrase opens it.
func Inspect(path string, passphrase func() ([]byte, error)) (Info, error) {
	data, mode, err := readFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("read key %s: %w", path, err)
	}
	if b, _ := pem.Decode(data); b == nil || !strings.HasSuffix(b.Type, "PRIVATE KEY") {
		// Not a private key of any kind: as a public key it is fine or the error says why.
		pub, err := ParsePublicPEM(data)
		if err != nil {
			return Info{}, fmt.Errorf("read key %s: %w", path, err)
		}
		return Info{Public: pub}, nil
	}
	key, enc, err := decodePrivateFile(path, data, mode, passphrase)
	if err != nil {
		return Info{}, err
	}
	return Info{Public: &key.PublicKey, Private: true, Encrypted: enc}, nil
}
