package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
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
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// The offline platform keys live in the directory given to 'moat platform init'.
const (
	platformRootKey = "root.key"
	platformOSKey   = "os.key"
	platformRoot1   = "1.root.json"
	// platformRootCA is the platform root's X.509 certificate: the root key, self-signed,
	// as the top of every tenant's device CA chain. It is public.
	platformRootCA = "root-ca.pem"
)

// The platform root certificate's name and lifetime: it outlives every tenant CA it signs.
const (
	rootCAName     = "moat platform root"
	rootCAValidity = 20 * 365 * 24 * time.Hour
)

func newPlatformCmd(env *Env) *ffcli.Command {
	return newNoun(env, "platform", "Platform operator: the offline roots of trust, tenant device CAs and device registration.",
		`The platform operator holds two offline keys: the root key signs root.json, the top of
every device's trust, and the X.509 root certificate (root-ca.pem) that certifies each
tenant's device CA; the OS key signs each tenant's targets.json (OS images, and which
tenant keys may sign the tenant's applications). The server holds only its online key,
which signs snapshot and timestamp: a compromise of the running server cannot add software
or make a device CA.

Keep the directory of 'moat platform init' offline (a hardware token or an air-gapped
machine in production) and bring it online only to sign. The operator also makes and
registers the identity keys of manufactured devices.

EXAMPLES
  moat platform init --out ./platform-keys --passphrase-file ./passphrase.txt
  moat platform ca-sign --keys ./platform-keys --passphrase-file ./passphrase.txt
  moat platform targets-sign --tenant Contoso --keys ./platform-keys --passphrase-file ./passphrase.txt
  moat platform manufacture --count 100 --out ./devices`,
		newPlatformInit(env), newPlatformCACertificate(env), newPlatformCASign(env), newPlatformTargetsSign(env),
		newPlatformOSPublish(env), newPlatformDeviceCmd(env), newPlatformManufacture(env), newPlatformAudit(env))
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
		short: "Create the platform root and OS keys offline; upload the first root.json and the root certificate.",
		long: `Creates the platform root key and OS key in DIR (never uploaded), asks the server for its
online key, builds 1.root.json (root: the root key; targets: the OS key; snapshot and
timestamp: the server's online key), signs it with the root key, uploads it, and writes it to
DIR/1.root.json: the file every device pins as its trust anchor.

It then makes the platform root certificate, the root key's self-signed X.509 certificate
("moat platform root", valid 20 years) that certifies every tenant's device CA, writes it to
DIR/root-ca.pem and uploads it. Needs the platform-operator role. Refuses to overwrite
existing keys.

EXAMPLES
  moat platform init --out ./platform-keys --passphrase-file ./passphrase.txt
  MOAT_KEY_PASSPHRASE=... moat platform init --out ./platform-keys`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out", "", "`DIR` for root.key, os.key, 1.root.json and root-ca.pem (required; created 0700)")
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
			for _, name := range []string{platformRootKey, platformOSKey, platformRoot1, platformRootCA} {
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
			// The root certificate needs the root.json just uploaded: the server accepts
			// only a certificate of a root key of the platform's TUF root.
			caPath := filepath.Join(out, platformRootCA)
			caPEM, err := deviceca.NewRootCertificate(rootK, rootCAName, time.Now(), rootCAValidity)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(caPath, caPEM, 0o644, false); err != nil {
				return err
			}
			rootCert, err := deviceca.ParseRootCertificate(caPEM)
			if err != nil {
				return err
			}
			if _, err := c.PutPlatformCertificate(ctx, caPEM); err != nil {
				return fmt.Errorf("upload the root certificate %s: %w (upload it again with 'moat platform ca-certificate --keys %s')", caPath, err, shellQuote(out))
			}
			res := map[string]any{"root_version": v.Version, "root_key_id": keys.KeyID(&rootK.PublicKey),
				"os_key_id": keys.KeyID(&osK.PublicKey), "online_key_id": ok.TUFKeyID, "trust_anchor": filepath.Join(out, platformRoot1),
				"root_certificate": caPath, "root_certificate_sha256": certFingerprint(rootCert),
				"root_certificate_not_after": rootCert.NotAfter.UTC()}
			if s.json() {
				return s.printJSON(res)
			}
			if err := s.show(res, [][2]string{
				{"Root version", itoa(v.Version)},
				{"Root key", keys.KeyID(&rootK.PublicKey) + " (" + filepath.Join(out, platformRootKey) + ")"},
				{"OS key", keys.KeyID(&osK.PublicKey) + " (" + filepath.Join(out, platformOSKey) + ")"},
				{"Online key", ok.TUFKeyID + " (held by the server)"},
				{"Trust anchor", filepath.Join(out, platformRoot1) + " (pin it on every device)"},
				{"Root certificate", caPath + " (uploaded; valid until " + fmtTime(rootCert.NotAfter) + ")"},
				{"Root cert SHA-256", certFingerprint(rootCert)},
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
				feeds := []string{feed}
				if old, ok := osTargets[path]; ok {
					if old.SHA256 != sum {
						return &cliError{code: ExitConflict, msg: path + " is already published with other bytes", hint: "a version is immutable: raise the version in os.json"}
					}
					for _, f := range old.Custom.Feeds {
						if f != feed {
							feeds = append(feeds, f)
						}
					}
				}
				osTargets[path] = tuf.TargetFile{Length: size, SHA256: sum, Custom: target.Custom{
					Kind: target.KindOS, Version: m.Version, SecurityVersion: m.SecurityVersion,
					ComponentID: m.ComponentID, Feeds: feeds,
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

// readRootKey reads the offline platform root key from dir.
func readRootKey(env *Env, dir, passFile string) (*ecdsa.PrivateKey, error) {
	return keys.ReadPrivate(filepath.Join(dir, platformRootKey), func() ([]byte, error) {
		return keys.Passphrase(env.Getenv, env.Stdin, passFile)
	})
}

// maxCertFileBytes bounds what is read of a local certificate file.
const maxCertFileBytes = 64 << 10

// readRootCA reads dir/root-ca.pem and checks that it is the certificate of rootKey.
func readRootCA(dir string, rootKey *ecdsa.PrivateKey) (*x509.Certificate, []byte, error) {
	path := filepath.Join(dir, platformRootCA)
	data, err := readBounded(path, maxCertFileBytes)
	if err != nil {
		return nil, nil, err
	}
	cert, err := deviceca.ParseRootCertificate(data)
	if err != nil {
		return nil, nil, &cliError{code: ExitError, msg: fmt.Sprintf("%s: %v", path, err),
			hint: "it must be the file 'moat platform init' or 'moat platform ca-certificate' wrote"}
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&rootKey.PublicKey) {
		return nil, nil, &cliError{code: ExitError, msg: fmt.Sprintf("%s is not a certificate of the root key %s", path, filepath.Join(dir, platformRootKey)),
			hint: "check --keys; to make a certificate of this root key, move the file away and run 'moat platform ca-certificate'"}
	}
	return cert, data, nil
}

// rootCAShown is what 'moat platform ca-certificate -o json' prints.
type rootCAShown struct {
	File     string    `json:"file"`
	Created  bool      `json:"created"`
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
	KeyID    string    `json:"root_key_id"`
}

func newPlatformCACertificate(env *Env) *ffcli.Command {
	var dir, passFile string
	var renew bool
	return newVerb(env, "platform", verb{
		name:  "ca-certificate",
		short: "Upload the platform root certificate that certifies tenant device CAs, making it if needed.",
		long: `Uploads DIR/root-ca.pem, the root key's self-signed X.509 certificate at the top of every
tenant's device CA chain. It makes the certificate first, offline with DIR/root.key ("moat
platform root", valid 20 years), when DIR has none (a platform initialised before 'moat
platform init' made one) or when --renew asks for a new one (same key, new validity).

Running it again uploads the same certificate, so it is safe to repeat. The server accepts
only a certificate of a root key of the platform's root.json, and refuses one of another key
than the certificate it already holds: the tenant CAs it certified stay valid. Needs the
platform-operator role.

EXAMPLES
  moat platform ca-certificate --keys ./platform-keys --passphrase-file ./passphrase.txt
  moat platform ca-certificate --keys ./platform-keys --renew`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "keys", "", "`DIR` written by 'moat platform init' (required)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the root key's passphrase from the first line of `FILE`, - for standard input (default: $MOAT_KEY_PASSPHRASE)")
			fs.BoolVar(&renew, "renew", false, "make a new certificate of the root key even if DIR has one, and replace it")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if dir == "" {
				return usagef("--keys DIR is required: the directory of 'moat platform init'")
			}
			rootK, err := readRootKey(env, dir, passFile)
			if err != nil {
				return err
			}
			path := filepath.Join(dir, platformRootCA)
			_, statErr := os.Lstat(path)
			exists := statErr == nil
			var cert *x509.Certificate
			var certPEM []byte
			if exists && !renew {
				if cert, certPEM, err = readRootCA(dir, rootK); err != nil {
					return err
				}
				if time.Now().After(cert.NotAfter) {
					return &cliError{code: ExitError, msg: fmt.Sprintf("%s expired at %s", path, fmtTime(cert.NotAfter)),
						hint: "make a new one with --renew"}
				}
			} else {
				if certPEM, err = deviceca.NewRootCertificate(rootK, rootCAName, time.Now(), rootCAValidity); err != nil {
					return err
				}
				if cert, err = deviceca.ParseRootCertificate(certPEM); err != nil {
					return err
				}
				if err := writeFileAtomic(path, certPEM, 0o644, exists); err != nil {
					return err
				}
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			if _, err := c.PutPlatformCertificate(ctx, certPEM); err != nil {
				return err
			}
			res := rootCAShown{File: path, Created: !exists || renew, Subject: cert.Subject.String(),
				SHA256: certFingerprint(cert), NotAfter: cert.NotAfter.UTC(), KeyID: keys.KeyID(&rootK.PublicKey)}
			if s.json() {
				return s.printJSON(res)
			}
			what := "Uploaded"
			if res.Created {
				what = "Made and uploaded"
			}
			s.done("%s the platform root certificate %s.", what, path)
			return s.show(res, [][2]string{{"Subject", res.Subject}, {"SHA-256", res.SHA256},
				{"Valid until", fmtTime(res.NotAfter)}, {"Root key", res.KeyID}})
		},
	})
}

// signedCA is one row of 'moat platform ca-sign'.
type signedCA struct {
	tenantName string
	ca         client.DeviceCA
	notAfter   time.Time
}

func newPlatformCASign(env *Env) *ffcli.Command {
	var dir, passFile, tenantRef string
	var validity time.Duration
	var dryRun bool
	return newVerb(env, "platform", verb{
		name:  "ca-sign",
		short: "Certify the tenants' pending device CAs offline with the platform root key.",
		long: `Lists the tenants' device CAs that wait for the platform root (a new tenant's first CA, or
one that 'moat ca-certificate rotate' started), checks each certificate request locally, signs
it offline with DIR/root.key under DIR/root-ca.pem, and uploads the certificate: the CA
becomes the tenant's active one and issues its device certificates, and the CA it replaces
stays trusted for an overlap. The root key never leaves this machine.

Before each CA is signed, its tenant and CA ID, as the request itself names them, are shown
on standard error; a request that names another tenant or CA than the server lists it under
is refused. --dry-run only lists. Needs the platform-operator role.

EXAMPLES
  moat platform ca-sign --keys ./platform-keys --dry-run
  moat platform ca-sign --keys ./platform-keys --passphrase-file ./passphrase.txt
  moat platform ca-sign --keys ./platform-keys --tenant Contoso --validity 8760h`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "keys", "", "`DIR` written by 'moat platform init': root.key and root-ca.pem (required)")
			fs.StringVar(&tenantRef, "tenant", "", "sign only the CAs of this tenant (`ID|NAME`)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the root key's passphrase from the first line of `FILE`, - for standard input (default: $MOAT_KEY_PASSPHRASE)")
			fs.DurationVar(&validity, "validity", 5*365*24*time.Hour, "how long each tenant CA certificate is valid (it must end before the root certificate)")
			fs.BoolVar(&dryRun, "dry-run", false, "list the pending CAs and sign nothing")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if dir == "" && !dryRun {
				return usagef("--keys DIR is required: the directory of 'moat platform init'")
			}
			if validity < 24*time.Hour {
				return usagef("--validity must be at least 24h")
			}
			var rootK *ecdsa.PrivateKey
			var rootCert *x509.Certificate
			if !dryRun {
				var err error
				if rootK, err = readRootKey(env, dir, passFile); err != nil {
					return err
				}
				if rootCert, _, err = readRootCA(dir, rootK); err != nil {
					return err
				}
				if end := time.Now().Add(validity); end.After(rootCert.NotAfter) {
					return usagef("--validity %s would end at %s, after the root certificate (%s)", validity, fmtTime(end), fmtTime(rootCert.NotAfter))
				}
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			only := ""
			if tenantRef != "" {
				t, err := s.findTenant(ctx, tenantRef)
				if err != nil {
					return err
				}
				only = t.ID
			}
			pending, err := client.Collect(ctx, client.ListOptions{}, c.ListPendingDeviceCAs)
			if err != nil {
				return err
			}
			names := map[string]string{}
			tenantName := func(id string) string {
				if n, ok := names[id]; ok {
					return n
				}
				n := "?"
				if t, err := c.GetTenant(ctx, id); err == nil {
					n = t.Name
				}
				names[id] = n
				return n
			}
			var todo []client.DeviceCA
			for _, ca := range pending {
				if only == "" || ca.TenantID == only {
					todo = append(todo, ca)
				}
			}
			if dryRun {
				return printList(s, todo, []string{"TENANT", "TENANT ID", "CA ID", "REQUESTED"}, func(ca client.DeviceCA) []string {
					return []string{tenantName(ca.TenantID), ca.TenantID, ca.ID, fmtTime(ca.CreatedAt)}
				})
			}
			if len(todo) == 0 {
				if s.json() {
					return s.printJSON([]client.DeviceCA{})
				}
				s.done("No device CA waits for the platform root.")
				return nil
			}
			var done []signedCA
			var errs []error
			for _, ca := range todo {
				name := tenantName(ca.TenantID)
				sc, err := signPendingCA(ctx, s, c, rootCert, rootK, ca, name, validity)
				if err != nil {
					s.note("moat: device CA %s of tenant %s: %v", ca.ID, clean(name), err)
					errs = append(errs, err)
					continue
				}
				done = append(done, sc)
			}
			if s.json() {
				out := []client.DeviceCA{}
				for _, d := range done {
					out = append(out, d.ca)
				}
				if err := s.printJSON(out); err != nil {
					return err
				}
			} else if len(done) > 0 {
				s.done("Certified %s with the platform root:", plural(len(done), "device CA"))
				if err := printList(s, done, []string{"TENANT", "TENANT ID", "CA ID", "STATE", "VALID UNTIL"}, func(d signedCA) []string {
					return []string{d.tenantName, d.ca.TenantID, d.ca.ID, d.ca.State, fmtTime(d.notAfter)}
				}); err != nil {
					return err
				}
			}
			if len(errs) > 0 {
				code := ExitError
				if e, ok := errors.AsType[*client.Error](errors.Join(errs...)); ok {
					code = exitForStatus(e.Status)
				}
				return &cliError{code: code, msg: fmt.Sprintf("%d of %s not certified (see above)", len(errs), plural(len(todo), "device CA")),
					hint: "fix the cause and run 'moat platform ca-sign' again: it signs only the CAs still pending"}
			}
			return nil
		},
	})
}

// signPendingCA checks a pending CA's request, signs it with the root key and uploads the
// certificate. It signs only what the request names, and only if that is what the server
// lists it as: a server cannot get a CA for one tenant certified under another's name.
func signPendingCA(ctx context.Context, s *session, c *client.Client, root *x509.Certificate, rootK *ecdsa.PrivateKey,
	ca client.DeviceCA, tenantName string, validity time.Duration) (signedCA, error) {
	info, err := deviceca.ParseCSR([]byte(ca.CSRPEM))
	if err != nil {
		return signedCA{}, err
	}
	if info.TenantID != ca.TenantID || info.CAID != ca.ID {
		return signedCA{}, fmt.Errorf("the request names CA %s of tenant %s, not what the server lists; refusing to sign it", info.CAID, info.TenantID)
	}
	s.note("Signing device CA %s of tenant %s (%s).", info.CAID, clean(tenantName), info.TenantID)
	certPEM, err := deviceca.SignCA(root, rootK, []byte(ca.CSRPEM), time.Now(), validity)
	if err != nil {
		return signedCA{}, err
	}
	cert, err := parseCertsPEM(certPEM)
	if err != nil {
		return signedCA{}, fmt.Errorf("the signed certificate: %w", err)
	}
	up, err := c.PutDeviceCACertificate(ctx, info.TenantID, info.CAID, certPEM)
	if err != nil {
		return signedCA{}, err
	}
	return signedCA{tenantName: tenantName, ca: up, notAfter: cert[0].NotAfter}, nil
}
