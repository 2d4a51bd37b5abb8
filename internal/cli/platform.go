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
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/image"
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
		newPlatformInit(env), newPlatformTargetsSign(env), newPlatformOSPublish(env), newPlatformAudit(env))
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
			osTargets, err := trustedOSTargets(d, &osK.PublicKey)
			if err != nil {
				return err
			}
			signer, err := keys.Signer(osK)
			if err != nil {
				return err
			}
			targets, err := tuf.SignTargets(signer, d.TargetsVersion+1, time.Now().Add(valid), osTargets, pubs)
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

// trustedOSTargets returns the OS targets of the tenant's current targets.json after checking
// that the OS key signed it, so that re-signing never takes in what a server slipped in.
func trustedOSTargets(d client.Delegation, osPub *ecdsa.PublicKey) (map[string]tuf.TargetFile, error) {
	out := map[string]tuf.TargetFile{}
	if d.CurrentTargets == "" {
		return out, nil
	}
	cur, err := metadata.Targets().FromBytes([]byte(d.CurrentTargets))
	if err != nil {
		return nil, fmt.Errorf("the tenant's current targets.json: %w", err)
	}
	if err := tuf.VerifySignedByAny(cur, []*ecdsa.PublicKey{osPub}); err != nil {
		return nil, &cliError{code: ExitError, msg: "the tenant's current targets.json is not signed by this OS key; refusing to build on it",
			hint: "check --keys: it must be the directory of 'moat platform init'"}
	}
	out, err = tuf.TargetFilesOf(cur)
	if err != nil {
		return nil, fmt.Errorf("the tenant's current targets.json: %w", err)
	}
	return out, nil
}

func newPlatformOSPublish(env *Env) *ffcli.Command {
	var dir, passFile, feed string
	var valid time.Duration
	return newVerb(env, "platform", verb{
		name:  "os-publish",
		args:  "FILE",
		short: "Publish an OS image package to a feed in every tenant's targets.json.",
		long: `Verifies the OS image package FILE locally, uploads it, and for every tenant signs the next
targets.json offline with the OS key: its current OS images (checked against the OS key), the
new one at os/<name>/<version> on the feed --feed, and the delegation of its apps to its
active keys. Devices in groups that follow the feed take it; RetailEval comes before Retail.
Publishing a version already on one feed to the other adds that feed.

EXAMPLES
  moat image package examples/dw100/os --out moat-os.img
  moat platform os-publish moat-os.img --feed RetailEval --keys ./platform-keys
  moat platform os-publish moat-os.img --feed Retail --keys ./platform-keys`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "keys", "", "`DIR` written by 'moat platform init' (required)")
			fs.StringVar(&feed, "feed", "", "`FEED` to publish to: Retail or RetailEval (required)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the OS key's passphrase from the first line of `FILE` (default: $MOAT_KEY_PASSPHRASE)")
			fs.DurationVar(&valid, "valid-for", 365*24*time.Hour, "how long each targets.json is valid")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the package FILE"); err != nil {
				return err
			}
			if dir == "" || (feed != "Retail" && feed != "RetailEval") {
				return usagef("--keys DIR and --feed Retail|RetailEval are required")
			}
			m, sum, size, err := verifyPackage(args[0])
			if err != nil {
				return err
			}
			if m.Kind != image.KindOS {
				return usagef("%s is an %s image; tenants publish their apps with 'moat image add'", args[0], m.Kind)
			}
			osK, err := keys.ReadPrivate(filepath.Join(dir, platformOSKey), func() ([]byte, error) {
				return keys.Passphrase(env.Getenv, env.Stdin, passFile)
			})
			if err != nil {
				return err
			}
			signer, err := keys.Signer(osK)
			if err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			info, err := c.UploadPlatformBlob(ctx, &progress{r: f, w: s.env.Stderr, total: size})
			f.Close()
			if err != nil {
				return err
			}
			if info.Digest != "sha256:"+sum || info.Size != size {
				return fmt.Errorf("the server stored %s (%d bytes), not the package's sha256:%s (%d bytes)", info.Digest, info.Size, sum, size)
			}
			path := "os/" + m.Name + "/" + m.Version
			tenants, err := client.Collect(ctx, client.ListOptions{}, c.ListTenants)
			if err != nil {
				return err
			}
			published := 0
			for _, t := range tenants {
				d, err := c.GetTenantDelegation(ctx, t.ID)
				if err != nil {
					return err
				}
				if len(d.Keys) == 0 && d.CurrentTargets == "" {
					s.note("skipped tenant %s: no signing key registered and no targets.json yet", clean(t.Name))
					continue
				}
				osTargets, err := trustedOSTargets(d, &osK.PublicKey)
				if err != nil {
					return fmt.Errorf("tenant %s: %w", t.Name, err)
				}
				feeds := []any{feed}
				if old, ok := osTargets[path]; ok {
					if old.SHA256 != sum {
						return &cliError{code: ExitConflict, msg: path + " is already published with other bytes", hint: "a version is immutable: raise the version in os.json"}
					}
					if fs, ok := old.Custom["feeds"].([]any); ok {
						for _, f := range fs {
							if f != feed {
								feeds = append(feeds, f)
							}
						}
					}
				}
				osTargets[path] = tuf.TargetFile{Length: size, SHA256: sum, Custom: map[string]any{
					"kind": string(m.Kind), "version": m.Version, "security_version": m.SecurityVersion,
					"component_id": m.ComponentID, "feeds": feeds,
				}}
				var pubs []*ecdsa.PublicKey
				for _, k := range d.Keys {
					p, err := keys.ParsePublicPEM([]byte(k.PublicKeyPEM))
					if err != nil {
						return err
					}
					pubs = append(pubs, p)
				}
				if len(pubs) == 0 {
					s.note("skipped tenant %s: it has no active signing key to delegate its apps to", clean(t.Name))
					continue
				}
				signed, err := tuf.SignTargets(signer, d.TargetsVersion+1, time.Now().Add(valid), osTargets, pubs)
				if err != nil {
					return err
				}
				if _, err := c.PutTenantTargets(ctx, t.ID, signed); err != nil {
					return fmt.Errorf("tenant %s: %w", t.Name, err)
				}
				published++
			}
			if s.json() {
				return s.printJSON(map[string]any{"path": path, "sha256": sum, "feed": feed, "tenants": published})
			}
			s.done("Published %s (%s) to %s in %d tenants' targets.json.", path, sum[:16], feed, published)
			return nil
		},
	})
}

func newPlatformAudit(env *Env) *ffcli.Command {
	return newVerb(env, "platform", verb{
		name:  "audit",
		short: "List the platform's audit log: tenants created, roots and OS packages uploaded.",
		long: `Lists the platform-level changes, oldest first, with who made them and from where. Each
tenant's own changes are in its audit log ('moat audit list').

EXAMPLES
  moat platform audit
  moat platform audit -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, c.ListPlatformAuditEvents)
			if err != nil {
				return err
			}
			return printList(s, items, []string{"AT", "ACTOR", "ACTION", "OBJECT", "DETAIL"}, func(e client.AuditEvent) []string {
				return []string{fmtTime(e.At), e.ActorName, e.Action, e.ObjectID, e.Detail}
			})
		},
	})
}
