package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

// newSigningKeyCmd is `moat tenant signing-key`: the tenant's registered offline public keys.
func newSigningKeyCmd(env *Env) *ffcli.Command {
	c := newNoun(env, "signing-key", "Register, list and revoke the tenant's offline image signing keys.",
		`A tenant signs its application images offline, with a key made by 'moat key generate'
that never leaves the tenant's hands. Registering the public half (FILE.pub) lets moat check
what the tenant signed; revoking a key makes it sign nothing from then on (its record stays).
Registering and revoking need the Administrator role.

EXAMPLES
  moat key generate --out contoso-release.key
  moat tenant signing-key add --name release --public-key contoso-release.key.pub
  moat tenant signing-key list
  moat tenant signing-key revoke key_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f`,
		newSigningKeyAdd(env), newSigningKeyList(env), newSigningKeyRevoke(env))
	c.ShortUsage = "moat tenant signing-key <command> [flags]"
	return c
}

func signingKeyFields(k client.SigningKey) [][2]string {
	return [][2]string{{"ID", k.ID}, {"Name", k.Name}, {"TUF key ID", k.TUFKeyID}, {"Algorithm", k.Algorithm},
		{"Created", fmtTime(k.CreatedAt)}, {"Revoked", fmtTimePtr(k.RevokedAt)}}
}

// maxPublicKeyFileBytes bounds what add reads; a public key PEM is a few hundred bytes.
const maxPublicKeyFileBytes = 8 << 10

func newSigningKeyAdd(env *Env) *ffcli.Command {
	var name, file string
	return newVerb(env, "tenant signing-key", verb{
		name:   "add",
		short:  "Register an offline public signing key (PEM) for the tenant's images.",
		tenant: true,
		long: `Registers the public key in FILE (a PEM "PUBLIC KEY" block, ECDSA P-256, as written by
'moat key generate' to FILE.pub). Never give the private key: the server refuses it, and it
must not leave your machine.

EXAMPLES
  moat tenant signing-key add --name release --public-key contoso-release.key.pub
  moat tenant signing-key add --name ci --public-key ci.pub --tenant Contoso -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "key `NAME` (required)")
			fs.StringVar(&file, "public-key", "", "`FILE` holding the PEM public key (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			if file == "" {
				return usagef("--public-key FILE is required")
			}
			f, err := os.Open(file)
			if err != nil {
				return fmt.Errorf("read public key: %w", err)
			}
			defer f.Close()
			pemText, err := io.ReadAll(io.LimitReader(f, maxPublicKeyFileBytes+1))
			if err != nil {
				return fmt.Errorf("read public key %s: %w", file, err)
			}
			if len(pemText) > maxPublicKeyFileBytes {
				return usagef("%s is too large to be a public key", file)
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			k, err := c.CreateSigningKey(ctx, tenant, client.SigningKeyCreate{Name: name, PublicKeyPEM: string(pemText)})
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(k)
			}
			return s.show(k, signingKeyFields(k))
		},
	})
}

func newSigningKeyList(env *Env) *ffcli.Command {
	return newVerb(env, "tenant signing-key", verb{
		name:   "list",
		short:  "List the tenant's signing keys, revoked ones included.",
		tenant: true,
		long: `Lists the tenant's registered signing keys with their TUF key IDs.

EXAMPLES
  moat tenant signing-key list
  moat tenant signing-key list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.SigningKey], error) {
				return c.ListSigningKeys(ctx, tenant, o)
			})
			if err != nil {
				return err
			}
			return printList(s, items, []string{"ID", "NAME", "TUF KEY ID", "CREATED", "REVOKED"}, func(k client.SigningKey) []string {
				return []string{k.ID, k.Name, k.TUFKeyID, fmtTime(k.CreatedAt), fmtTimePtr(k.RevokedAt)}
			})
		},
	})
}

func newSigningKeyRevoke(env *Env) *ffcli.Command {
	return newVerb(env, "tenant signing-key", verb{
		name:   "revoke",
		args:   "ID",
		short:  "Revoke a signing key: it signs nothing from then on.",
		tenant: true,
		long: `Revokes the key at once. Use it when a key leaked or a signer left; register a new key
first so that releases can go on.

EXAMPLES
  moat tenant signing-key revoke key_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the signing key ID"); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			k, err := c.RevokeSigningKey(ctx, tenant, args[0])
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(k)
			}
			s.done("Revoked signing key %s (%s).", clean(k.Name), k.ID)
			return nil
		},
	})
}
