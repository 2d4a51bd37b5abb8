package server

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/localtls"
)

// onlineKey loads the server's online signing key (snapshot and timestamp of the TUF
// repository). Without --online-key it lives in DATA/keys/online.key and is created, 0600,
// at the first start; replicas that share a database must share this key (--online-key).
// It is the only repository key the server holds: it cannot add software (DESIGN rule 2).
func onlineKey(cfg Config) (*ecdsa.PrivateKey, error) {
	path := cfg.OnlineKey
	if path == "" {
		dir := filepath.Join(cfg.DataDir, "keys")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		path = filepath.Join(dir, "online.key")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			k, err := keys.Generate()
			if err != nil {
				return nil, err
			}
			if err := keys.WritePrivate(path, k, nil); err != nil {
				return nil, fmt.Errorf("create online key: %w", err)
			}
		}
	}
	k, err := keys.ReadPrivate(path, func() ([]byte, error) { return nil, keys.ErrNoPassphrase })
	if err != nil {
		return nil, fmt.Errorf("read online key %s: %w", path, err)
	}
	return k, nil
}

// caKEK loads the key-encryption key that wraps tenant device-CA keys at rest: 32 bytes in
// --ca-kek, or DATA/keys/ca.kek, created (0600) at the first start. A database dump alone
// therefore holds no usable CA key.
func caKEK(cfg Config) ([]byte, error) {
	path := cfg.CAKeyKEK
	if path == "" {
		dir := filepath.Join(cfg.DataDir, "keys")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		path = filepath.Join(dir, "ca.kek")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if err := localtls.WriteFileAtomic(path, []byte(rand.Text()+rand.Text()), 0o600); err != nil {
				return nil, fmt.Errorf("create CA key-encryption key: %w", err)
			}
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("CA key-encryption key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("CA key-encryption key %s: mode %v lets others read it; chmod 600", path, info.Mode().Perm())
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA key-encryption key: %w", err)
	}
	// The file holds text (two rand.Text strings, 2 x 130 bits); hash it to the AES key.
	if len(text) < 32 {
		return nil, fmt.Errorf("CA key-encryption key %s: shorter than 32 bytes", path)
	}
	sum := sha256.Sum256(text)
	return sum[:], nil
}
