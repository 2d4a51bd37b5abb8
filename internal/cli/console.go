package cli

import (
	"context"
	"fmt"

	"github.com/peterbourgon/ff/v3/ffcli"
)

func newConsoleCmd(env *Env) *ffcli.Command {
	return newNoun(env, "console", "Open the web console.",
		`The web console is served by moat server under /ui/ on the management address. Sign in
by pasting an API token, or with a one-time link from moat console link.

EXAMPLES
  moat console link`,
		newConsoleLink(env))
}

func newConsoleLink(env *Env) *ffcli.Command {
	return newVerb(env, "console", verb{
		name:  "link",
		short: "Print a one-time web console sign-in link for yourself.",
		long: `Prints a link that signs you in to the web console once. It works a single time and
expires within 5 minutes; the session it starts acts with the token you are logged in
with, and ends when that token is revoked. A long-lived token never appears in the link.

EXAMPLES
  moat console link
  moat console link -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			l, err := c.CreateSignInLink(ctx)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(struct {
					URL       string `json:"url"`
					ExpiresAt string `json:"expires_at"`
				}{c.SignInLinkURL(l), fmtTime(l.ExpiresAt)})
			}
			fmt.Fprintln(s.env.Stdout, c.SignInLinkURL(l))
			s.note("one-time link, valid until %s", fmtTime(l.ExpiresAt))
			return nil
		},
	})
}
