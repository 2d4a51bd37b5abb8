package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newLoginCmd(env *Env) *ffcli.Command {
	var server, token, caFile string
	var insecure bool
	fs := flag.NewFlagSet("moat login", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.StringVar(&server, "server", "", "server `URL`, e.g. https://127.0.0.1:8443 (required)")
	fs.StringVar(&token, "token", "", "API `TOKEN`, or - to read it from standard input (default: $MOAT_TOKEN)")
	fs.StringVar(&caFile, "ca-cert", "", "PEM `FILE` of the CA to trust for the server's certificate (default: the system roots)")
	fs.BoolVar(&insecure, "insecure-skip-verify", false, "do not verify the server's certificate (unsafe: anyone on the network path can read the token)")
	s := &session{env: env, fs: fs}
	fs.StringVar(&s.output, "output", "table", "output format: table or json (json prints the API objects unchanged)")
	fs.StringVar(&s.output, "o", "table", "shorthand for --output")
	return &ffcli.Command{
		Name:       "login",
		ShortUsage: "moat login [flags] --server URL --token TOKEN|-",
		ShortHelp:  "Log in to a moat server with an API token.",
		LongHelp: `Checks the token against the server (GET /api/v1/me), then stores the server URL, the
token, the pinned CA certificate and the current tenant in config.json in the configuration
directory ($MOAT_CONFIG_DIR, else the user configuration directory), readable only by you
(mode 0600). Other commands use that login.

Pass the token as - to read it from standard input, or set MOAT_TOKEN, so that it does not
show up in the shell history or the process list. If you hold a role in exactly one tenant,
that tenant is selected; otherwise choose one with 'moat tenant select'.

EXAMPLES
  moat login --server https://127.0.0.1:8443 --ca-cert ./moat-data/tls/ca.pem --token - < token.txt
  MOAT_TOKEN=moat_tok_... moat login --server https://moat.example.com`,
		FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			args, err := parseInterleaved(fs, args)
			if err != nil {
				return err
			}
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if s.output != "table" && s.output != "json" {
				return usagef("--output must be table or json, got %q", s.output)
			}
			if server == "" {
				return usagef("--server is required, e.g. --server https://127.0.0.1:8443")
			}
			if caFile != "" && insecure {
				return usagef("--ca-cert and --insecure-skip-verify contradict each other; give one")
			}
			if token == "" && env.Getenv != nil {
				token = env.Getenv("MOAT_TOKEN")
			}
			if token, err = readSecret(env, token); err != nil {
				return err
			}
			if token == "" {
				return usagef("no token: pass --token - to read it from standard input, or set MOAT_TOKEN")
			}
			var caPEM []byte
			if caFile != "" {
				if caPEM, err = os.ReadFile(caFile); err != nil {
					return fmt.Errorf("read --ca-cert: %w", err)
				}
			}
			c, err := newClient(env, server, token, caPEM, insecure)
			if err != nil {
				return usageError{err.Error()}
			}
			me, err := c.GetMe(ctx)
			if err != nil {
				return err
			}
			cfg := &loginConfig{Server: c.BaseURL(), Token: token, CACertPEM: string(caPEM), InsecureSkipVerify: insecure}
			// Keep the selected tenant across a new login to the same server while the user
			// still holds a role in it; else select the only tenant, if there is one.
			if old, err := loadConfig(env); err == nil && old.Server == cfg.Server && hasRole(me, old.Tenant) {
				cfg.Tenant, cfg.TenantName = old.Tenant, old.TenantName
			} else if len(me.Roles) == 1 {
				cfg.Tenant = me.Roles[0].TenantID
				if t, err := c.GetTenant(ctx, cfg.Tenant); err == nil {
					cfg.TenantName = t.Name
				}
			}
			if err := saveConfig(env, cfg); err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(me)
			}
			who := fmt.Sprintf("Logged in to %s as %s (%s)", cfg.Server, me.User.Name, me.User.ID)
			if me.User.PlatformOperator {
				who += ", a platform operator"
			}
			fmt.Fprintln(env.Stdout, who+".")
			for _, r := range me.Roles {
				fmt.Fprintf(env.Stdout, "  %s in tenant %s\n", r.Role, r.TenantID)
			}
			switch {
			case cfg.Tenant != "":
				fmt.Fprintf(env.Stdout, "Selected tenant: %s\n", tenantLabel(cfg.Tenant, cfg.TenantName))
			case len(me.Roles) > 1:
				s.note("Choose a tenant with: moat tenant select NAME")
			case me.User.PlatformOperator:
				s.note("Create a tenant with: moat tenant create --name NAME")
			}
			return nil
		},
	}
}

func hasRole(me client.Me, tenant string) bool {
	return tenant != "" && slices.ContainsFunc(me.Roles, func(r client.TenantRole) bool { return r.TenantID == tenant })
}

func tenantLabel(id, name string) string {
	if name == "" {
		return id
	}
	return fmt.Sprintf("%s (%s)", clean(name), id)
}

func newLogoutCmd(env *Env) *ffcli.Command {
	fs := flag.NewFlagSet("moat logout", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return &ffcli.Command{
		Name:       "logout",
		ShortUsage: "moat logout",
		ShortHelp:  "Forget the stored login.",
		LongHelp: `Deletes config.json from the configuration directory. The token itself stays valid on
the server; revoke it with 'moat token revoke ID' first if nobody should use it again.

EXAMPLES
  moat logout`,
		FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			removed, err := removeConfig(env)
			if err != nil {
				return err
			}
			if removed {
				fmt.Fprintln(env.Stdout, "Logged out.")
			} else {
				fmt.Fprintln(env.Stderr, "moat: not logged in; nothing to do")
			}
			return nil
		},
	}
}
