package server

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moat-iot/moat/internal/keys"
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
