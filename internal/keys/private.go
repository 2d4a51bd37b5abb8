package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"

	"golang.org/x/crypto/scrypt"
)

// PEM block types of key files.
const (
	pemPrivate   = "PRIVATE KEY"                // PKCS#8, unencrypted
	pemEncrypted = "MOAT ENCRYPTED PRIVATE KEY" // PKCS#8 under scrypt and AES-256-GCM
	pemPublic    = "PUBLIC KEY"                 // PKIX
)

// Headers of a "MOAT ENCRYPTED PRIVATE KEY" block, in the order of the additional data.
const (
	hdrVersion = "Version"
	hdrKDF     = "KDF"
	hdrN       = "KDF-N"
	hdrR       = "KDF-R"
	hdrP       = "KDF-P"
	hdrSalt    = "KDF-Salt"
	hdrCipher  = "Cipher"
	hdrNonce   = "Cipher-Nonce"

	formatVersion = "1"
	kdfScrypt     = "scrypt"
	cipherAESGCM  = "AES-256-GCM"
)

// kdfParams are scrypt's cost parameters and salt.
type kdfParams struct {
	N, R, P int
	Salt    []byte
}

// defaultKDF is what WritePrivate uses (about 128 MiB and a fraction of a second); the
// parameters are stored in each file, so they can be raised without breaking old files.
var defaultKDF = kdfParams{N: 1 << 17, R: 8, P: 1}

const (
	saltLen    = 16
	maxSaltLen = 64
	nonceLen   = 12
)

// kdfLimits bound the scrypt parameters a reader accepts, before any work: scrypt needs
// 128·N·r bytes and time proportional to N·r·p.
type kdfLimits struct {
	maxNR  uint64 // N·r
	maxNRP uint64 // N·r·p
	maxR   int
	maxP   int
}

// readLimits allow twice the default memory (256 MiB) and four times its work, so the
// defaults can be raised a little for new files; a hostile file asking for more is refused
// without allocating. Attacked by TestReadPrivate_RejectsHostileKDFParams.
var readLimits = kdfLimits{maxNR: 1 << 21, maxNRP: 1 << 22, maxR: 32, maxP: 16}

func (l kdfLimits) check(p kdfParams) error {
	switch {
	case p.N < 2 || p.N&(p.N-1) != 0:
		return fmt.Errorf("%w: scrypt N = %d is not a power of two above 1", ErrMalformed, p.N)
	case p.R < 1 || p.R > l.maxR:
		return fmt.Errorf("%w: scrypt r = %d is not in [1, %d]", ErrMalformed, p.R, l.maxR)
	case p.P < 1 || p.P > l.maxP:
		return fmt.Errorf("%w: scrypt p = %d is not in [1, %d]", ErrMalformed, p.P, l.maxP)
	}
	// N < 2^31 and r, p <= 32: the products fit in a uint64.
	nr := uint64(p.N) * uint64(p.R)
	if nr > l.maxNR || nr*uint64(p.P) > l.maxNRP {
		return fmt.Errorf("%w: scrypt parameters N=%d r=%d p=%d exceed this reader's bounds (N·r <= %d, N·r·p <= %d)",
			ErrMalformed, p.N, p.R, p.P, l.maxNR, l.maxNRP)
	}
	if len(p.Salt) < saltLen || len(p.Salt) > maxSaltLen {
		return fmt.Errorf("%w: salt of %d bytes, want %d to %d", ErrMalformed, len(p.Salt), saltLen, maxSaltLen)
	}
	return nil
}

// WritePrivate writes key to a new file at path with mode 0600; it never replaces an
// existing file (the error then wraps fs.ErrExist).
//
// With a nil passphrase the file is an unencrypted PKCS#8 "PRIVATE KEY" PEM block, which
// OpenSSL also reads. Otherwise it is a "MOAT ENCRYPTED PRIVATE KEY" block: the PKCS#8 DER
// sealed with AES-256-GCM under a key derived from the passphrase by scrypt (see
// docs/keys.md). An empty but non-nil passphrase is an error, so an unset variable never
// silently yields an unencrypted key.
func WritePrivate(path string, key *ecdsa.PrivateKey, passphrase []byte) error {
	return writePrivate(path, key, passphrase, defaultKDF)
}

func writePrivate(path string, key *ecdsa.PrivateKey, passphrase []byte, kp kdfParams) error {
	data, err := encodePrivatePEM(key, passphrase, kp)
	if err != nil {
		return err
	}
	if err := writeNew(path, data, 0o600); err != nil {
		return fmt.Errorf("write private key: %w", err)
	}
	return nil
}

func encodePrivatePEM(key *ecdsa.PrivateKey, passphrase []byte, kp kdfParams) ([]byte, error) {
	if err := checkPrivate(key); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	defer clear(der)
	if passphrase == nil {
		return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
	}
	if len(passphrase) == 0 {
		return nil, errors.New("empty passphrase: give one, or nil for an unencrypted key")
	}
	return sealDER(der, passphrase, kp)
}

// sealDER encrypts der into a "MOAT ENCRYPTED PRIVATE KEY" block with a fresh salt and
// nonce.
func sealDER(der, passphrase []byte, kp kdfParams) ([]byte, error) {
	kp.Salt = make([]byte, saltLen)
	nonce := make([]byte, nonceLen)
	if _, err := io.ReadFull(rand.Reader, kp.Salt); err != nil {
		return nil, fmt.Errorf("random salt: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	aead, err := newAEAD(passphrase, kp)
	if err != nil {
		return nil, err
	}
	b := &pem.Block{
		Type: pemEncrypted,
		Headers: map[string]string{
			hdrVersion: formatVersion,
			hdrKDF:     kdfScrypt,
			hdrN:       strconv.Itoa(kp.N),
			hdrR:       strconv.Itoa(kp.R),
			hdrP:       strconv.Itoa(kp.P),
			hdrSalt:    base64.StdEncoding.EncodeToString(kp.Salt),
			hdrCipher:  cipherAESGCM,
			hdrNonce:   base64.StdEncoding.EncodeToString(nonce),
		},
		Bytes: aead.Seal(nil, nonce, der, additionalData(kp)),
	}
	return pem.EncodeToMemory(b), nil
}

// additionalData is what AES-GCM authenticates besides the ciphertext: the block type and
// every header but the nonce (which GCM authenticates by itself), one "Name: value" line
// each, in a fixed order. So no parameter can be changed, even to one that derives the same
// key. docs/keys.md documents it byte for byte.
func additionalData(kp kdfParams) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", pemEncrypted)
	for _, h := range [][2]string{
		{hdrVersion, formatVersion},
		{hdrKDF, kdfScrypt},
		{hdrN, strconv.Itoa(kp.N)},
		{hdrR, strconv.Itoa(kp.R)},
		{hdrP, strconv.Itoa(kp.P)},
		{hdrSalt, base64.StdEncoding.EncodeToString(kp.Salt)},
		{hdrCipher, cipherAESGCM},
	} {
		fmt.Fprintf(&b, "%s: %s\n", h[0], h[1])
	}
	return b.Bytes()
}

func newAEAD(passphrase []byte, kp kdfParams) (cipher.AEAD, error) {
	k, err := scrypt.Key(passphrase, kp.Salt, kp.N, kp.R, kp.P, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: scrypt: %w", ErrMalformed, err)
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(block)
}

// ReadPrivate reads a private key written by WritePrivate, or an unencrypted PKCS#8
// P-256 key from elsewhere (OpenSSL's "openssl genpkey"). It refuses a file that group or
// others may read (ErrExposed, with the chmod to run) before decoding it. It calls
// passphrase only when the file is encrypted, after the file's parameters were checked;
// passphrase may be nil for callers that expect an unencrypted key (ErrNoPassphrase then).
// A wrong passphrase or a modified file is ErrWrongPassphrase, a corrupted one ErrMalformed,
// a key other than ECDSA P-256 ErrUnsupportedKey.
func ReadPrivate(path string, passphrase func() ([]byte, error)) (*ecdsa.PrivateKey, error) {
	data, mode, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	key, _, err := decodePrivateFile(path, data, mode, passphrase)
	return key, err
}

// decodePrivateFile checks the mode of a private key file, then decodes what was read of it.
func decodePrivateFile(path string, data []byte, mode fs.FileMode, passphrase func() ([]byte, error)) (*ecdsa.PrivateKey, bool, error) {
	if err := checkPrivateMode(path, mode); err != nil {
		return nil, false, fmt.Errorf("read private key %s: %w", path, err)
	}
	key, enc, err := decodePrivatePEM(data, passphrase, readLimits)
	if err != nil {
		return nil, false, fmt.Errorf("read private key %s: %w", path, err)
	}
	return key, enc, nil
}

// decodePrivatePEM decodes one private key PEM block and reports whether it was encrypted.
func decodePrivatePEM(data []byte, passphrase func() ([]byte, error), lim kdfLimits) (key *ecdsa.PrivateKey, encrypted bool, err error) {
	b, err := decodeOnePEM(data)
	if err != nil {
		return nil, false, err
	}
	switch b.Type {
	case pemPrivate:
		if len(b.Headers) != 0 {
			return nil, false, fmt.Errorf("%w: PEM headers on an unencrypted key (OpenSSL's legacy encryption is not supported)", ErrMalformed)
		}
		key, err := parsePKCS8(b.Bytes)
		return key, false, err
	case pemEncrypted:
		key, err := decrypt(b, passphrase, lim)
		return key, true, err
	case pemPublic:
		return nil, false, fmt.Errorf("%w: this is a public key, not a private key", ErrMalformed)
	case "EC PRIVATE KEY":
		return nil, false, fmt.Errorf("%w: SEC 1 \"EC PRIVATE KEY\" files are not read; convert with 'openssl pkcs8 -topk8 -nocrypt'", ErrMalformed)
	case "RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "DSA PRIVATE KEY":
		return nil, false, fmt.Errorf("%w: %q", ErrUnsupportedKey, b.Type)
	case "ENCRYPTED PRIVATE KEY":
		return nil, false, fmt.Errorf("%w: PKCS#8 password-based encryption is not supported; moat encrypts keys its own way (docs/keys.md)", ErrMalformed)
	default:
		return nil, false, fmt.Errorf("%w: PEM block %q is not a private key", ErrMalformed, b.Type)
	}
}

// decrypt opens a "MOAT ENCRYPTED PRIVATE KEY" block: headers first, bounds checked, then
// the passphrase, then scrypt and AES-GCM.
func decrypt(b *pem.Block, passphrase func() ([]byte, error), lim kdfLimits) (*ecdsa.PrivateKey, error) {
	kp, nonce, err := parseHeaders(b.Headers)
	if err != nil {
		return nil, err
	}
	if err := lim.check(kp); err != nil {
		return nil, err
	}
	if len(b.Bytes) < 16 {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than its authentication tag", ErrMalformed, len(b.Bytes))
	}
	if passphrase == nil {
		return nil, ErrNoPassphrase
	}
	pass, err := passphrase()
	if err != nil {
		return nil, err // the source's own error says where it looked
	}
	if len(pass) == 0 {
		return nil, ErrNoPassphrase
	}
	aead, err := newAEAD(pass, kp)
	if err != nil {
		return nil, err
	}
	der, err := aead.Open(nil, nonce, b.Bytes, additionalData(kp))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	defer clear(der)
	key, err := parsePKCS8(der)
	if err != nil {
		// Authentic, so written with the passphrase, yet not a key: not ours to guess why.
		return nil, fmt.Errorf("decrypted content: %w", err)
	}
	return key, nil
}

// parseHeaders reads the encryption headers strictly: exactly the known set, known values,
// canonical decimals and base64, so that the additional data rebuilt from them is the
// one that was written.
func parseHeaders(h map[string]string) (kdfParams, []byte, error) {
	var kp kdfParams
	want := []string{hdrVersion, hdrKDF, hdrN, hdrR, hdrP, hdrSalt, hdrCipher, hdrNonce}
	var errs []error
	for _, k := range want {
		if _, ok := h[k]; !ok {
			errs = append(errs, fmt.Errorf("missing header %s", k))
		}
	}
	if len(h) != len(want) || len(errs) > 0 {
		for k := range h {
			if !contains(want, k) {
				errs = append(errs, fmt.Errorf("unknown header %q", k))
			}
		}
		return kp, nil, fmt.Errorf("%w: %w", ErrMalformed, errors.Join(errs...))
	}
	if v := h[hdrVersion]; v != formatVersion {
		return kp, nil, fmt.Errorf("%w: format version %q, this reader knows %s", ErrMalformed, v, formatVersion)
	}
	if v := h[hdrKDF]; v != kdfScrypt {
		return kp, nil, fmt.Errorf("%w: key derivation %q, want %s", ErrMalformed, v, kdfScrypt)
	}
	if v := h[hdrCipher]; v != cipherAESGCM {
		return kp, nil, fmt.Errorf("%w: cipher %q, want %s", ErrMalformed, v, cipherAESGCM)
	}
	var err error
	if kp.N, err = parseDecimal(hdrN, h[hdrN]); err != nil {
		return kp, nil, err
	}
	if kp.R, err = parseDecimal(hdrR, h[hdrR]); err != nil {
		return kp, nil, err
	}
	if kp.P, err = parseDecimal(hdrP, h[hdrP]); err != nil {
		return kp, nil, err
	}
	if kp.Salt, err = parseBase64(hdrSalt, h[hdrSalt]); err != nil {
		return kp, nil, err
	}
	nonce, err := parseBase64(hdrNonce, h[hdrNonce])
	if err != nil {
		return kp, nil, err
	}
	if len(nonce) != nonceLen {
		return kp, nil, fmt.Errorf("%w: nonce of %d bytes, want %d", ErrMalformed, len(nonce), nonceLen)
	}
	return kp, nonce, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseDecimal accepts a canonical decimal below 2^31: no sign, no leading zeros.
func parseDecimal(name, s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("%w: header %s = %q is not a decimal number below 2^31", ErrMalformed, name, s)
	}
	return int(n), nil
}

func parseBase64(name, s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("%w: header %s is not canonical standard base64", ErrMalformed, name)
	}
	return b, nil
}

// Object identifiers of the algorithms a PKCS#8 or PKIX structure names.
var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256        = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidRSA         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEd25519     = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// pkcs8 is the outer PKCS#8 structure (RFC 5208), enough to see the algorithm.
type pkcs8 struct {
	Version    int
	Algo       pkix.AlgorithmIdentifier
	PrivateKey []byte
}

// parsePKCS8 parses exactly one PKCS#8 structure holding an ECDSA P-256 key. It reads the
// algorithm first, so that a key of another kind is ErrUnsupportedKey and a damaged one
// ErrMalformed.
func parsePKCS8(der []byte) (*ecdsa.PrivateKey, error) {
	var outer pkcs8
	rest, err := asn1.Unmarshal(der, &outer)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS#8: %w", ErrMalformed, err)
	}
	if len(rest) != 0 { // x509 would ignore them; a key file has none
		return nil, fmt.Errorf("%w: bytes after the PKCS#8 structure", ErrMalformed)
	}
	if err := checkAlgorithm(outer.Algo); err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS#8: %w", ErrMalformed, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok { // unreachable after checkAlgorithm, kept to fail closed
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, k)
	}
	if err := checkPrivate(key); err != nil {
		return nil, err
	}
	return key, nil
}

// checkAlgorithm accepts only id-ecPublicKey on the named curve P-256.
func checkAlgorithm(a pkix.AlgorithmIdentifier) error {
	switch {
	case a.Algorithm.Equal(oidRSA):
		return fmt.Errorf("%w: RSA", ErrUnsupportedKey)
	case a.Algorithm.Equal(oidEd25519):
		return fmt.Errorf("%w: Ed25519", ErrUnsupportedKey)
	case !a.Algorithm.Equal(oidECPublicKey):
		return fmt.Errorf("%w: algorithm %v", ErrUnsupportedKey, a.Algorithm)
	}
	var curve asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(a.Parameters.FullBytes, &curve); err != nil || len(rest) != 0 {
		return fmt.Errorf("%w: ECDSA without a named curve", ErrUnsupportedKey)
	}
	if !curve.Equal(oidP256) {
		return fmt.Errorf("%w: ECDSA on curve %v", ErrUnsupportedKey, curve)
	}
	return nil
}

// decodeOnePEM decodes data holding exactly one PEM block and nothing else but white space.
func decodeOnePEM(data []byte) (*pem.Block, error) {
	if bytes.Count(data, []byte("-----BEGIN")) != 1 {
		return nil, fmt.Errorf("%w: want exactly one PEM block", ErrMalformed)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("-----BEGIN ")) {
		return nil, fmt.Errorf("%w: text before the PEM block", ErrMalformed)
	}
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: no valid PEM block", ErrMalformed)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: text after the PEM block", ErrMalformed)
	}
	return b, nil
}
