package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// pemType is the PEM block type of a key file: PKCS #8.
const pemType = "PRIVATE KEY"

// maxKeyFileBytes bounds what OpenFileKey reads.
const maxKeyFileBytes = 16 << 10

// ErrInsecureKeyFile is returned by OpenFileKey for a key file group or others may access.
var ErrInsecureKeyFile = errors.New("identity key file is accessible to group or others")

// FileKey is a software identity key kept in a PKCS #8 PEM file of mode 0600.
type FileKey struct {
	path string
	key  *ecdsa.PrivateKey
}

var _ Signer = (*FileKey)(nil)

// Public returns the P-256 public key.
func (k *FileKey) Public() *ecdsa.PublicKey { return &k.key.PublicKey }

// Sign signs a SHA-256 digest with the identity key and returns ASN.1 DER.
func (k *FileKey) Sign(digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("identity sign: digest is %d bytes, want %d", len(digest), sha256.Size)
	}
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, digest)
	if err != nil {
		return nil, fmt.Errorf("identity sign: %w", err)
	}
	return sig, nil
}

// ID returns the device ID of the key.
func (k *FileKey) ID() DeviceID { return IDFromPublicKey(&k.key.PublicKey) }

// Path returns the file the key was read from or written to.
func (k *FileKey) Path() string { return k.path }

// CreateFileKey generates a new P-256 identity key and writes it to path as PKCS #8 PEM,
// mode 0600. It never overwrites: if path exists it fails with an error wrapping
// fs.ErrExist. The key is written to a temporary file in the same directory, synced,
// renamed into place without replacing anything, and the directory is synced.
func CreateFileKey(path string) (*FileKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create identity key %s: %w", path, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("create identity key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
	if err := writeExclusive(path, data); err != nil {
		return nil, fmt.Errorf("create identity key %s: %w", path, err)
	}
	return &FileKey{path: path, key: key}, nil
}

// writeExclusive writes data durably to path, which must not exist.
func writeExclusive(path string, data []byte) (err error) {
	if _, err := os.Lstat(path); err == nil {
		return os.ErrExist
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			os.Remove(tmpName)
		}
	}()
	// CreateTemp opens with O_EXCL and mode 0600; Chmod makes it independent of umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// A hard link, unlike rename, fails if path exists, so a key created concurrently
	// is never replaced.
	if err := os.Link(tmpName, path); err != nil {
		return err
	}
	if err := os.Remove(tmpName); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// OpenFileKey reads an identity key written by CreateFileKey. It refuses a file that is
// not a regular file, that group or others may access (ErrInsecureKeyFile), and a key
// that is not ECDSA P-256.
func OpenFileKey(path string) (*FileKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open identity key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open identity key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open identity key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("open identity key %s: mode %04o, want 0600: %w", path, perm, ErrInsecureKeyFile)
	}
	if fi.Size() > maxKeyFileBytes {
		return nil, fmt.Errorf("open identity key %s: %d bytes, too large", path, fi.Size())
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("open identity key %s: %w", path, err)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("open identity key %s: %w", path, err)
	}
	return &FileKey{path: path, key: key}, nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("not a PEM %q block", pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return key, nil
}
