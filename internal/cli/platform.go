package cli

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/tuf"
)

// The offline platform keys live in the directory given to 'moat platform init'.
const (
	platformRootKey = "root.key"
	platformOSKey   = "os.key"
	platformRoot1   = "1.root.json"
)

func newPlatformCmd(env *Env) *ffcli.Command {
	return newNoun(env, "platform", "Platform operator: the offline root of trust of the image repository.",
		`The platform operator holds two offline keys: the root key signs root.json, the top of
every device's trust; the OS key signs each tenant's targets.json (OS images, and which
tenant keys may sign the tenant's applications). The server holds only its online key,
which signs snapshot and timestamp: a compromise of the running server cannot add software.

Keep the directory of 'moat platform init' offline (a hardware token or an air-gapped
machine in production) and bring it online only to sign.

EXAMPLES
  moat platform init --out ./platform-keys --passphrase-file ./passphrase.txt
  moat platform targets-sign --tenant Contoso --keys ./platform-keys --passphrase-file ./passphrase.txt`,
		newPlatformInit(env), newPlatformTargetsSign(env))
}

// keyPassphrase returns the passphrase for new keys, or nil with --no-passphrase.
func keyPassphrase(env *Env, passFile string, noPass bool) ([]byte, error) {
	pass, err := keys.Passphrase(env.Getenv, env.Stdin, passFile)
	if err != nil {
		return nil, err
	}
	switch {
	case noPass && pass != nil:
		return nil, usagef("--no-passphrase contradicts the passphrase given; give one of them")
	case pass == nil && !noPass:
		return nil, usagef("offline keys need a passphrase: give --passphrase-file FILE or set %s, or give --no-passphrase", keys.EnvPassphrase)
	}
	return pass, nil
}

func newPlatformInit(env *Env) *ffcli.Command {
	var out, passFile string
	var noPass bool
	var valid time.Duration
	return newVerb(env, "platform", verb{
		name:  "init",
		short: "Create the platform root and OS keys offline and upload the first root.json.",
		long: `Creates the platform root key and OS key in DIR (never uploaded), asks the server for its
online key, builds 1.root.json (root: the root key; targets: the OS key; snapshot and
timestamp: the server's online key), signs it with the root key, uploads it, and writes it to
DIR/1.root.json: the file every device pins as its trust anchor. Needs the platform-operator
role. Refuses to overwrite existing keys.

EXAMPLES
  moat platform init --out ./platform-keys --passphrase-file ./passphrase.txt
  MOAT_KEY_PASSPHRASE=... moat platform init --out ./platform-keys`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out", "", "`DIR` for root.key, os.key and 1.root.json (required; created 0700)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the keys' passphrase from the first line of `FILE`, - for standard input (default: $MOAT_KEY_PASSPHRASE)")
			fs.BoolVar(&noPass, "no-passphrase", false, "store the keys unencrypted, protected by their file mode (0600) alone")
			fs.DurationVar(&valid, "valid-for", 365*24*time.Hour, "how long 1.root.json is valid")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if out == "" {
				return usagef("--out DIR is required: where the offline keys go")
			}
			if valid < 24*time.Hour {
				return usagef("--valid-for must be at least 24h")
			}
			for _, name := range []string{platformRootKey, platformOSKey, platformRoot1} {
				if _, err := os.Lstat(filepath.Join(out, name)); err == nil {
					return errKeyExists(filepath.Join(out, name))
				}
			}
			pass, err := keyPassphrase(env, passFile, noPass)
			if err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			ok, err := c.GetOnlineKey(ctx)
			if err != nil {
				return err
			}
			online, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
			if err != nil {
				return fmt.Errorf("the server's online key: %w", err)
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			rootK, err := writeNewKey(filepath.Join(out, platformRootKey), pass)
			if err != nil {
				return err
			}
			osK, err := writeNewKey(filepath.Join(out, platformOSKey), pass)
			if err != nil {
				return err
			}
			signer, err := keys.Signer(rootK)
			if err != nil {
				return err
			}
			root1, err := tuf.NewRoot(signer, &rootK.PublicKey, &osK.PublicKey, online, time.Now().Add(valid))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(out, platformRoot1), root1, 0o600); err != nil {
				return err
			}
			v, err := c.PutPlatformRoot(ctx, root1)
			if err != nil {
				return err
			}
			res := map[string]any{"root_version": v.Version, "root_key_id": keys.KeyID(&rootK.PublicKey),
				"os_key_id": keys.KeyID(&osK.PublicKey), "online_key_id": ok.TUFKeyID, "trust_anchor": filepath.Join(out, platformRoot1)}
			if s.json() {
				return s.printJSON(res)
			}
			if err := s.show(res, [][2]string{
				{"Root version", itoa(v.Version)},
				{"Root key", keys.KeyID(&rootK.PublicKey) + " (" + filepath.Join(out, platformRootKey) + ")"},
				{"OS key", keys.KeyID(&osK.PublicKey) + " (" + filepath.Join(out, platformOSKey) + ")"},
				{"Online key", ok.TUFKeyID + " (held by the server)"},
				{"Trust anchor", filepath.Join(out, platformRoot1) + " (pin it on every device)"},
			}); err != nil {
				return err
			}
			s.note("Keep %s offline; bring it online only to sign.", out)
			return nil
		},
	})
}

func writeNewKey(path string, pass []byte) (*ecdsa.PrivateKey, error) {
	k, err := keys.Generate()
	if err != nil {
		return nil, err
	}
	if err := keys.WritePrivate(path, k, pass); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, errKeyExists(path)
		}
		return nil, err
	}
	return k, nil
}

func newPlatformTargetsSign(env *Env) *ffcli.Command {
	var tenantRef, dir, passFile string
	var valid time.Duration
	return newVerb(env, "platform", verb{
		name:  "targets-sign",
		short: "Sign a tenant's targets.json offline, delegating its apps to its active keys, and upload it.",
		long: `Fetches the tenant's active registered signing keys from the server, builds the tenant's
next targets.json delegating "apps" to exactly those keys, signs it with the platform OS key
from DIR, and uploads it. Run it after a tenant registers or revokes a key. The keys to be
delegated are printed: check them against what the tenant told you out of band.

EXAMPLES
  moat platform targets-sign --tenant Contoso --keys ./platform-keys --passphrase-file ./passphrase.txt`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&tenantRef, "tenant", "", "the tenant `ID|NAME` (required)")
			fs.StringVar(&dir, "keys", "", "`DIR` written by 'moat platform init' (required)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the OS key's passphrase from the first line of `FILE` (default: $MOAT_KEY_PASSPHRASE)")
			fs.DurationVar(&valid, "valid-for", 365*24*time.Hour, "how long the targets.json is valid")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if tenantRef == "" || dir == "" {
				return usagef("--tenant and --keys are required")
			}
			if valid < 24*time.Hour {
				return usagef("--valid-for must be at least 24h")
			}
			osK, err := keys.ReadPrivate(filepath.Join(dir, platformOSKey), func() ([]byte, error) {
				return keys.Passphrase(env.Getenv, env.Stdin, passFile)
			})
			if err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			t, err := s.findTenant(ctx, tenantRef)
			if err != nil {
				return err
			}
			d, err := c.GetTenantDelegation(ctx, t.ID)
			if err != nil {
				return err
			}
			if len(d.Keys) == 0 {
				return &cliError{code: ExitConflict, msg: fmt.Sprintf("tenant %s has no active signing key to delegate to", clean(t.Name)),
					hint: "the tenant registers one with 'moat tenant signing-key add'"}
			}
			var pubs []*ecdsa.PublicKey
			for _, k := range d.Keys {
				pub, err := keys.ParsePublicPEM([]byte(k.PublicKeyPEM))
				if err != nil {
					return fmt.Errorf("tenant key %s: %w", k.TUFKeyID, err)
				}
				if keys.KeyID(pub) != k.TUFKeyID {
					return fmt.Errorf("tenant key %s: the server's key ID does not match the key", k.TUFKeyID)
				}
				pubs = append(pubs, pub)
			}
			signer, err := keys.Signer(osK)
			if err != nil {
				return err
			}
			targets, err := tuf.SignTargets(signer, d.TargetsVersion+1, time.Now().Add(valid), nil, pubs)
			if err != nil {
				return err
			}
			v, err := c.PutTenantTargets(ctx, t.ID, targets)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(map[string]any{"tenant_id": t.ID, "targets_version": v.Version, "delegated_keys": d.Keys})
			}
			s.done("Signed targets.json version %d for %s, delegating apps to:", v.Version, clean(t.Name))
			return printList(s, d.Keys, []string{"NAME", "TUF KEY ID"}, func(k client.DelegationKey) []string {
				return []string{k.Name, k.TUFKeyID}
			})
		},
	})
}
