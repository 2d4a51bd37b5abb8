package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/ident"
)

func newMemberCmd(env *Env) *ffcli.Command {
	return newNoun(env, "member", "Manage the tenant's users and their roles.",
		`Members are the users of a tenant, each with one role: Reader (sees everything), Contributor
(also changes products and device groups) or Administrator (also manages members and reads
the audit log). These commands need the Administrator role. A tenant always keeps at least
one Administrator.

EXAMPLES
  moat member create --name alice --role Contributor
  moat member list
  moat member update usr_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f --role Administrator`,
		newMemberCreate(env), newMemberList(env), newMemberUpdate(env), newMemberDelete(env))
}

func memberFields(m client.Member) [][2]string {
	return [][2]string{{"User ID", m.User.ID}, {"Name", m.User.Name}, {"Role", string(m.Role)}, {"Tenant", m.TenantID}}
}

func roleNames() string {
	var s []string
	for _, r := range client.Roles {
		s = append(s, string(r))
	}
	return strings.Join(s, ", ")
}

func checkRole(r string) error {
	if !slices.Contains(client.Roles, client.Role(r)) {
		return usagef("--role must be one of %s, got %q", roleNames(), r)
	}
	return nil
}

func roleFlag(fs *flag.FlagSet, v *string) {
	fs.StringVar(v, "role", "", "`ROLE`: Reader, Contributor or Administrator (required)")
}

func newMemberCreate(env *Env) *ffcli.Command {
	var name, role string
	return newVerb(env, "member", verb{
		name:   "create",
		short:  "Create a user with a role in the tenant; its first token is shown once.",
		tenant: true,
		long: `Creates a new user with the given role in the tenant, and the user's first API token.
The token's secret is printed once: hand it to the user, who logs in with it.

EXAMPLES
  moat member create --name alice --role Contributor
  moat member create --name ci-bot --role Reader -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "user `NAME` (required)")
			roleFlag(fs, &role)
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			if err := checkRole(role); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			mc, err := c.CreateMember(ctx, tenant, client.MemberCreate{Name: name, Role: client.Role(role)})
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(mc)
			}
			if err := s.show(mc.Member, memberFields(mc.Member)); err != nil {
				return err
			}
			fmt.Fprintf(s.env.Stdout, "\nToken %s (shown once, hand it to %s):\n  %s\n", mc.Token.ID, clean(mc.Member.User.Name), mc.Secret)
			login := "moat login --server " + c.BaseURL()
			if s.cfg.CACertPEM != "" {
				login += " --ca-cert CA.pem"
			}
			s.note("They log in with: %s --token -", login)
			return nil
		},
	})
}

func newMemberList(env *Env) *ffcli.Command {
	return newVerb(env, "member", verb{
		name:   "list",
		short:  "List the tenant's users and their roles.",
		tenant: true,
		long: `Lists the users who hold a role in the tenant.

EXAMPLES
  moat member list
  moat member list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items, err := listMembers(ctx, c, tenant)
			if err != nil {
				return err
			}
			return printList(s, items, []string{"USER ID", "NAME", "ROLE"}, func(m client.Member) []string {
				return []string{m.User.ID, m.User.Name, string(m.Role)}
			})
		},
	})
}

func listMembers(ctx context.Context, c *client.Client, tenant string) ([]client.Member, error) {
	return client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.Member], error) {
		return c.ListMembers(ctx, tenant, o)
	})
}

// memberID resolves a user ID or the exact name of one member of the tenant.
func memberID(ctx context.Context, c *client.Client, tenant, ref string) (string, error) {
	if ident.Valid("usr", ref) {
		return ref, nil
	}
	ms, err := listMembers(ctx, c, tenant)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, m := range ms {
		if m.User.Name == ref {
			ids = append(ids, m.User.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", &cliError{code: ExitNotFound, msg: fmt.Sprintf("no member named %q in the tenant", ref),
			hint: "run 'moat member list' to see the members"}
	case 1:
		return ids[0], nil
	}
	return "", usagef("%d members are named %q; give the user ID (%s)", len(ids), ref, strings.Join(ids, ", "))
}

func newMemberUpdate(env *Env) *ffcli.Command {
	var role string
	return newVerb(env, "member", verb{
		name:   "update",
		args:   "USER_ID",
		short:  "Change a user's role in the tenant, or grant one.",
		tenant: true,
		long: `Sets the user's role in the tenant; a user of another tenant gets a role in this one too.
The user may be given by ID, or by name when it is a member already. The last Administrator
cannot be demoted.

EXAMPLES
  moat member update usr_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f --role Administrator
  moat member update alice --role Reader`,
		flags: func(fs *flag.FlagSet) { roleFlag(fs, &role) },
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the user (ID, or name of a member)"); err != nil {
				return err
			}
			if err := checkRole(role); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			id, err := memberID(ctx, c, tenant, args[0])
			if err != nil {
				return err
			}
			m, err := c.PutMember(ctx, tenant, id, client.Role(role))
			if err != nil {
				return err
			}
			return s.show(m, memberFields(m))
		},
	})
}

func newMemberDelete(env *Env) *ffcli.Command {
	return newVerb(env, "member", verb{
		name:   "delete",
		args:   "USER_ID",
		short:  "Remove a user's role in the tenant.",
		tenant: true,
		long: `Removes the user's role in the tenant; the user and its tokens remain, but no longer reach
this tenant. The last Administrator cannot be removed. With --output json nothing is printed.

EXAMPLES
  moat member delete usr_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f
  moat member delete alice`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the user (ID, or name of a member)"); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			id, err := memberID(ctx, c, tenant, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteMember(ctx, tenant, id); err != nil {
				return err
			}
			s.done("Removed %s from the tenant.", id)
			return nil
		},
	})
}
