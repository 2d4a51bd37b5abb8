package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// configFile is the CLI's login state in Env.ConfigDir. It holds an API token, so it is
// written with mode 0600 in a directory created with mode 0700.
const configFile = "config.json"

// loginConfig is what 'moat login' stores and every other command reads.
type loginConfig struct {
	Version int    `json:"version"`
	Server  string `json:"server"`
	Token   string `json:"token"`
	// CACertPEM pins the server's CA; empty means the system roots.
	CACertPEM string `json:"ca_cert_pem,omitempty"`
	// InsecureSkipVerify turns off TLS verification (login --insecure-skip-verify).
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
	// Tenant is the ID of the tenant chosen with 'moat tenant select', TenantName its name
	// at the time (for messages only).
	Tenant     string `json:"tenant,omitempty"`
	TenantName string `json:"tenant_name,omitempty"`
}

// loginConfigVersion is the only version of config.json this build reads.
const loginConfigVersion = 1

var errNotLoggedIn = &cliError{code: ExitUnauthenticated, msg: "not logged in",
	hint: "run 'moat login --server URL --ca-cert FILE --token -'"}

func configPath(env *Env) (string, error) {
	if env.ConfigDir == "" {
		return "", errors.New("no configuration directory (set MOAT_CONFIG_DIR)")
	}
	return filepath.Join(env.ConfigDir, configFile), nil
}

// loadConfig reads config.json strictly: unknown fields, trailing data and another version
// are errors. A missing file is errNotLoggedIn.
func loadConfig(env *Env) (*loginConfig, error) {
	path, err := configPath(env)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotLoggedIn
	}
	if err != nil {
		return nil, fmt.Errorf("read login state: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(env.Stderr, "moat: warning: %s holds a token but others may read it (mode %v); run 'chmod 600 %s'\n", path, st.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read login state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c loginConfig
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w; run 'moat login' again", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: trailing data after the JSON object; run 'moat login' again", path)
	}
	if c.Version != loginConfigVersion {
		return nil, fmt.Errorf("%s: version %d is not supported (want %d); run 'moat login' again", path, c.Version, loginConfigVersion)
	}
	if c.Server == "" || c.Token == "" {
		return nil, errNotLoggedIn
	}
	return &c, nil
}

// saveConfig writes config.json atomically with mode 0600.
func saveConfig(env *Env, c *loginConfig) error {
	path, err := configPath(env)
	if err != nil {
		return err
	}
	c.Version = loginConfigVersion
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode login state: %w", err)
	}
	if err := os.MkdirAll(env.ConfigDir, 0o700); err != nil {
		return fmt.Errorf("create configuration directory: %w", err)
	}
	tmp, err := os.CreateTemp(env.ConfigDir, ".config-*.json") // mode 0600
	if err != nil {
		return fmt.Errorf("write login state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write login state: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write login state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write login state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write login state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write login state: %w", err)
	}
	return nil
}

// removeConfig deletes config.json; a missing one is not an error.
func removeConfig(env *Env) (bool, error) {
	path, err := configPath(env)
	if err != nil {
		return false, err
	}
	err = os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove login state: %w", err)
	}
	return true, nil
}
