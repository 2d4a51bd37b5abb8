package cli

import (
	"context"
	"flag"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newTenantCmd(env *Env) *ffcli.Command {
	return newNoun(env, "tenant", "Create, list and select tenants.",
		`A tenant is a manufacturer's account: every product, device group and audit event
belongs to exactly one, and nothing of one tenant is visible from another. Platform
operators create tenants; the commands that work inside a tenant use the one chosen with
'moat tenant select', or --tenant.

EXAMPLES
  moat tenant create --name Contoso
  moat tenant select Contoso
  moat tenant list`,
		newTenantCreate(env), newTenantList(env), newTenantShow(env), newTenantSelect(env), newSigningKeyCmd(env))
}

func tenantFields(t client.Tenant) [][2]string {
	return [][2]string{{"ID", t.ID}, {"Name", t.Name}, {"Created", fmtTime(t.CreatedAt)}, {"Version", itoa(t.Version)}}
}

func newTenantCreate(env *Env) *ffcli.Command {
	var name string
	return newVerb(env, "tenant", verb{
		name:  "create",
		short: "Create a tenant (platform operators only); you become its Administrator.",
		long: `Creates a tenant. The platform operator who creates it becomes its first Administrator
and can then add members with 'moat member create'.

EXAMPLES
  moat tenant create --name Contoso
  moat tenant create --name Contoso -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "tenant `NAME` (required, unique)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			t, err := c.CreateTenant(ctx, client.TenantCreate{Name: name})
			if err != nil {
				return err
			}
			if err := s.show(t, tenantFields(t)); err != nil {
				return err
			}
			s.note("Next: moat tenant select %s", shellQuote(t.Name))
			return nil
		},
	})
}

func newTenantList(env *Env) *ffcli.Command {
	return newVerb(env, "tenant", verb{
		name:  "list",
		short: "List the tenants you can see.",
		long: `Lists the tenants in which you hold a role; a platform operator sees every tenant. The
selected tenant is marked with *.

EXAMPLES
  moat tenant list
  moat tenant list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, c.ListTenants)
			if err != nil {
				return err
			}
			return printList(s, items, []string{"", "ID", "NAME", "CREATED"}, func(t client.Tenant) []string {
				mark := ""
				if t.ID == s.cfg.Tenant {
					mark = "*"
				}
				return []string{mark, t.ID, t.Name, fmtTime(t.CreatedAt)}
			})
		},
	})
}

func newTenantShow(env *Env) *ffcli.Command {
	return newVerb(env, "tenant", verb{
		name:  "show",
		args:  "[ID|NAME]",
		short: "Show a tenant (by default the selected one).",
		long: `Shows a tenant given by ID or name, or the selected tenant when none is given.

EXAMPLES
  moat tenant show
  moat tenant show Contoso -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if len(args) > 1 {
				return usagef("unexpected argument %q", args[1])
			}
			var t client.Tenant
			if len(args) == 1 {
				var err error
				if t, err = s.findTenant(ctx, args[0]); err != nil {
					return err
				}
			} else {
				c, id, err := s.inTenant(ctx)
				if err != nil {
					return err
				}
				if t, err = c.GetTenant(ctx, id); err != nil {
					return err
				}
			}
			return s.show(t, tenantFields(t))
		},
	})
}

func newTenantSelect(env *Env) *ffcli.Command {
	return newVerb(env, "tenant", verb{
		name:  "select",
		args:  "ID|NAME",
		short: "Choose the tenant that later commands work in.",
		long: `Checks that you can see the tenant, then stores it in config.json as the current tenant.
Commands that work inside a tenant use it unless given --tenant.

EXAMPLES
  moat tenant select Contoso
  moat tenant select tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the tenant to select (ID or name)"); err != nil {
				return err
			}
			t, err := s.findTenant(ctx, args[0])
			if err != nil {
				return err
			}
			s.cfg.Tenant, s.cfg.TenantName = t.ID, t.Name
			if err := saveConfig(s.env, s.cfg); err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(t)
			}
			s.done("Selected tenant %s.", tenantLabel(t.ID, t.Name))
			return nil
		},
	})
}
