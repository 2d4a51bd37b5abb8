package cli

import (
	"context"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newAuditCmd(env *Env) *ffcli.Command {
	return newNoun(env, "audit", "Read the tenant's audit log.",
		`Every change made through the management API is recorded in the audit log of the tenant it
concerns: who made it, with which token, what changed, when and from where. Reading it
needs the Administrator role.

EXAMPLES
  moat audit list
  moat audit list -o json`,
		newAuditList(env))
}

func newAuditList(env *Env) *ffcli.Command {
	return newVerb(env, "audit", verb{
		name:   "list",
		short:  "List the tenant's audit events, oldest first.",
		tenant: true,
		long: `Lists the tenant's audit events, oldest first.

EXAMPLES
  moat audit list
  moat audit list --tenant Contoso -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.AuditEvent], error) {
				return c.ListAuditEvents(ctx, tenant, o)
			})
			if err != nil {
				return err
			}
			return printList(s, items, []string{"AT", "ACTOR", "ACTION", "OBJECT", "DETAIL"}, func(e client.AuditEvent) []string {
				return []string{fmtTime(e.At), e.ActorName, e.Action, e.ObjectID, e.Detail}
			})
		},
	})
}
