package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newProductCmd(env *Env) *ffcli.Command {
	return newNoun(env, "product", "Create and manage products.",
		`A product is a model of device the tenant makes, such as the DW100 dishwasher. Each new
product gets five default device groups (Development, Field Test, Production, Field Test OS
Evaluation, Production OS Evaluation). Products are named by ID or by name.

EXAMPLES
  moat product create --name DW100 --description "Contoso dishwasher"
  moat product list
  moat product update DW100 --description "Contoso DW100 dishwasher"`,
		newProductCreate(env), newProductList(env), newProductShow(env), newProductUpdate(env), newProductDelete(env))
}

func productFields(p client.Product) [][2]string {
	return [][2]string{{"ID", p.ID}, {"Name", p.Name}, {"Description", p.Description},
		{"Max update deferral", deferralText(p.MaxUpdateDeferralSeconds)},
		{"Created", fmtTime(p.CreatedAt)}, {"Updated", fmtTime(p.UpdatedAt)}, {"Version", itoa(p.Version)}}
}

func newProductCreate(env *Env) *ffcli.Command {
	var name, desc, deferral string
	return newVerb(env, "product", verb{
		name:   "create",
		short:  "Create a product with its five default device groups.",
		tenant: true,
		long: `Creates a product in the tenant, with the default device groups Development, Field Test,
Production, Field Test OS Evaluation and Production OS Evaluation. Needs the Contributor role.
--max-update-deferral bounds how long an app on the product's devices may defer an update,
counted from its first deferral of a pending image (default 24h, at most 168h; 0s: never).

EXAMPLES
  moat product create --name DW100
  moat product create --name DW100 --description "Contoso dishwasher" --tenant Contoso
  moat product create --name DW200 --max-update-deferral 4h`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "product `NAME` (required, unique in the tenant)")
			fs.StringVar(&desc, "description", "", "free-text `DESCRIPTION`")
			fs.StringVar(&deferral, "max-update-deferral", "", "how long an app may defer an update, a `DURATION` from 0s to 168h (default 24h)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			req := client.ProductCreate{Name: name, Description: desc}
			if s.given("max-update-deferral") {
				secs, err := parseDeferral(deferral)
				if err != nil {
					return err
				}
				req.MaxUpdateDeferralSeconds = &secs
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := c.CreateProduct(ctx, tenant, req)
			if err != nil {
				return err
			}
			if err := s.show(p, productFields(p)); err != nil {
				return err
			}
			s.note("Its device groups: moat device-group list --product %s", shellQuote(p.Name))
			return nil
		},
	})
}

func newProductList(env *Env) *ffcli.Command {
	return newVerb(env, "product", verb{
		name:   "list",
		short:  "List the tenant's products.",
		tenant: true,
		long: `Lists every product of the tenant.

EXAMPLES
  moat product list
  moat product list --tenant Contoso -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.Product], error) {
				return c.ListProducts(ctx, tenant, o)
			})
			if err != nil {
				return err
			}
			return printList(s, items, []string{"ID", "NAME", "DESCRIPTION"}, func(p client.Product) []string {
				return []string{p.ID, p.Name, p.Description}
			})
		},
	})
}

func newProductShow(env *Env) *ffcli.Command {
	return newVerb(env, "product", verb{
		name:   "show",
		args:   "ID|NAME",
		short:  "Show a product.",
		tenant: true,
		long: `Shows a product given by ID or name.

EXAMPLES
  moat product show DW100
  moat product show prd_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the product (ID or name)"); err != nil {
				return err
			}
			_, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := s.findProduct(ctx, tenant, args[0])
			if err != nil {
				return err
			}
			return s.show(p, productFields(p))
		},
	})
}

func newProductUpdate(env *Env) *ffcli.Command {
	var name, desc, deferral string
	return newVerb(env, "product", verb{
		name:   "update",
		args:   "ID|NAME",
		short:  "Rename a product or change its description or update-deferral bound.",
		tenant: true,
		long: `Reads the product, then changes the given fields on exactly the version read: if someone
else changed the product in between, nothing changes and the command exits 8; run it again.
Fields not given stay as they are. Needs the Contributor role.

EXAMPLES
  moat product update DW100 --description "Contoso DW100 dishwasher"
  moat product update DW100 --name DW100-EU
  moat product update DW100 --max-update-deferral 12h`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "new `NAME`")
			fs.StringVar(&desc, "description", "", "new `DESCRIPTION` (\"\" clears it)")
			fs.StringVar(&deferral, "max-update-deferral", "", "how long an app may defer an update, a `DURATION` from 0s to 168h")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the product (ID or name)"); err != nil {
				return err
			}
			var upd client.ProductUpdate
			if s.given("name") {
				if err := checkName("name", name); err != nil {
					return err
				}
				upd.Name = &name
			}
			if s.given("description") {
				upd.Description = &desc
			}
			if s.given("max-update-deferral") {
				secs, err := parseDeferral(deferral)
				if err != nil {
					return err
				}
				upd.MaxUpdateDeferralSeconds = &secs
			}
			if upd.Name == nil && upd.Description == nil && upd.MaxUpdateDeferralSeconds == nil {
				return usagef("nothing to change: give --name, --description or --max-update-deferral")
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := s.findProduct(ctx, tenant, args[0])
			if err != nil {
				return err
			}
			out, err := c.UpdateProduct(ctx, tenant, p.ID, p.Version, upd)
			if err != nil {
				return changedMeanwhile(err, "product", p.Name)
			}
			return s.show(out, productFields(out))
		},
	})
}

func newProductDelete(env *Env) *ffcli.Command {
	return newVerb(env, "product", verb{
		name:   "delete",
		args:   "ID|NAME",
		short:  "Delete a product and its device groups.",
		tenant: true,
		long: `Deletes the product and all its device groups, provided nobody changed the product since
it was read. Needs the Contributor role. With --output json nothing is printed.

EXAMPLES
  moat product delete DW100`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the product (ID or name)"); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := s.findProduct(ctx, tenant, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteProduct(ctx, tenant, p.ID, p.Version); err != nil {
				return changedMeanwhile(err, "product", p.Name)
			}
			s.done("Deleted product %s (%s).", clean(p.Name), p.ID)
			return nil
		},
	})
}

// changedMeanwhile explains a 412 on a conditional write: someone else changed the object
// between our read and our write, and nothing was changed.
func changedMeanwhile(err error, what, name string) error {
	if e, ok := errors.AsType[*client.Error](err); ok && e.Status == http.StatusPreconditionFailed {
		return &cliError{code: ExitPrecondition,
			msg:  fmt.Sprintf("%s %s was changed by someone else since it was read; nothing was changed", what, clean(name)),
			hint: "run the command again to apply your change to the current version"}
	}
	return err
}
