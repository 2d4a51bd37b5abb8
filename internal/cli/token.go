package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newTokenCmd(env *Env) *ffcli.Command {
	return newNoun(env, "token", "Create, list and revoke your own API tokens.",
		`API tokens authenticate you to the management API. Each token belongs to one user and
acts with that user's roles; its secret is shown once, when it is created. Revoke a token
that leaked or is no longer needed.

EXAMPLES
  moat token create --name ci --expires-in 720h
  moat token list
  moat token revoke tok_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f`,
		newTokenCreate(env), newTokenList(env), newTokenRevoke(env))
}

func tokenFields(t client.Token) [][2]string {
	return [][2]string{{"ID", t.ID}, {"Name", t.Name}, {"Created", fmtTime(t.CreatedAt)},
		{"Expires", fmtTimePtr(t.ExpiresAt)}, {"Revoked", fmtTimePtr(t.RevokedAt)}}
}

func newTokenCreate(env *Env) *ffcli.Command {
	var name, expires string
	return newVerb(env, "token", verb{
		name:  "create",
		short: "Create an API token for yourself; its secret is shown once.",
		long: `Creates an API token with your roles, for a script or another machine. The secret is
printed once and cannot be shown again: store it in a secret manager.

EXAMPLES
  moat token create --name ci --expires-in 720h
  moat token create --name laptop -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "token `NAME` (required)")
			fs.StringVar(&expires, "expires-in", "", "lifetime as a Go `DURATION` from 1h to 8784h, e.g. 720h (default: never expires)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			if expires != "" {
				if _, err := time.ParseDuration(expires); err != nil {
					return usagef("--expires-in must be a duration such as 720h, got %q", expires)
				}
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			tc, err := c.CreateToken(ctx, client.TokenCreate{Name: name, ExpiresIn: expires})
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(tc)
			}
			if err := s.show(tc.Token, tokenFields(tc.Token)); err != nil {
				return err
			}
			fmt.Fprintf(s.env.Stdout, "\nSecret (shown once, keep it safe):\n  %s\n", tc.Secret)
			return nil
		},
	})
}

func newTokenList(env *Env) *ffcli.Command {
	return newVerb(env, "token", verb{
		name:  "list",
		short: "List your API tokens.",
		long: `Lists your API tokens, including expired and revoked ones. Secrets are never shown again.

EXAMPLES
  moat token list
  moat token list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, c.ListTokens)
			if err != nil {
				return err
			}
			return printList(s, items, []string{"ID", "NAME", "CREATED", "EXPIRES", "REVOKED"}, func(t client.Token) []string {
				return []string{t.ID, t.Name, fmtTime(t.CreatedAt), fmtTimePtr(t.ExpiresAt), fmtTimePtr(t.RevokedAt)}
			})
		},
	})
}

func newTokenRevoke(env *Env) *ffcli.Command {
	return newVerb(env, "token", verb{
		name:  "revoke",
		args:  "ID",
		short: "Revoke one of your API tokens.",
		long: `Revokes the token at once: it authenticates nobody from then on. Revoking the token you
are logged in with logs you out.

EXAMPLES
  moat token revoke tok_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the token ID"); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			t, err := c.RevokeToken(ctx, args[0])
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(t)
			}
			s.done("Revoked token %s (%s).", clean(t.Name), t.ID)
			return nil
		},
	})
}
