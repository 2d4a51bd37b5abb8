package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newDeploymentCmd(env *Env) *ffcli.Command {
	return newNoun(env, "deployment", "Deploy application images to device groups.",
		`A deployment puts one published application image (apps/NAME/VERSION, as 'moat image
list' shows it) on every device of a device group, until a newer deployment of the group
replaces it. Devices install it only because both the server assigns it and the tenant's
offline key signed it. Every deployment is kept: 'list' shows a group's history, and
'rollback' deploys an earlier one's image again as a new deployment that says which one it
reverts. A group is named PRODUCT/GROUP, or GROUP with --product PRODUCT.

EXAMPLES
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.0.0
  moat deployment list --device-group DW100/Production
  moat deployment rollback --device-group DW100/Production`,
		newDeploymentCreate(env), newDeploymentList(env), newDeploymentShow(env), newDeploymentRollback(env))
}

// deploymentGroup resolves --device-group (and --product) to a group.
func (s *session) deploymentGroup(ctx context.Context, product, group string) (*client.Client, string, client.DeviceGroup, string, error) {
	if group == "" {
		return nil, "", client.DeviceGroup{}, "", usagef("--device-group PRODUCT/GROUP is required")
	}
	c, tenant, g, err := s.resolveGroup(ctx, product, []string{group})
	if err != nil {
		return nil, "", client.DeviceGroup{}, "", err
	}
	name := group
	if product != "" {
		name = product + "/" + group
	}
	return c, tenant, g, name, nil
}

func deploymentFields(d client.Deployment, group string) [][2]string {
	f := [][2]string{{"ID", d.ID}, {"Device group", group + " (" + d.GroupID + ")"}, {"Image", d.Target},
		{"SHA-256", d.SHA256}, {"Created", fmtTime(d.CreatedAt)}, {"Created by", d.CreatedBy}}
	if d.Reverts != "" {
		f = append(f, [2]string{"Reverts", d.Reverts})
	}
	return f
}

func newDeploymentCreate(env *Env) *ffcli.Command {
	var product, group, target string
	return newVerb(env, "deployment", verb{
		name:   "create",
		short:  "Deploy an application image to a device group.",
		tenant: true,
		long: `Deploys the published application image --image (apps/NAME/VERSION) to the device group:
its devices take it at their next update check. The image must be in the tenant's current
apps.json ('moat image add') and made for the group's product. Needs the Contributor role.

EXAMPLES
  moat deployment create --device-group DW100/Production --image apps/dw100-app/1.0.0
  moat deployment create --product DW100 --device-group "Field Test" --image apps/dw100-app/1.1.0 -o json`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&group, "device-group", "", "the device group `PRODUCT/GROUP`, or GROUP with --product (required)")
			fs.StringVar(&target, "image", "", "the application image `apps/NAME/VERSION` (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if parts := strings.Split(target, "/"); len(parts) != 3 || parts[0] != "apps" || parts[1] == "" || parts[2] == "" {
				return usagef("--image must name an application image as apps/NAME/VERSION ('moat image list' shows them), got %q", clip(target))
			}
			c, tenant, g, name, err := s.deploymentGroup(ctx, product, group)
			if err != nil {
				return err
			}
			d, err := c.CreateDeployment(ctx, tenant, g.ProductID, g.ID, client.DeploymentCreate{Target: target})
			if err != nil {
				return err
			}
			return s.show(d, deploymentFields(d, name))
		},
	})
}

func newDeploymentList(env *Env) *ffcli.Command {
	var product, group string
	return newVerb(env, "deployment", verb{
		name:   "list",
		short:  "List a device group's deployments, the current one first.",
		tenant: true,
		long: `Lists the deployments of the device group, newest first; the first is the one its devices
run now.

EXAMPLES
  moat deployment list --device-group DW100/Production
  moat deployment list --product DW100 --device-group Production -o json`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&group, "device-group", "", "the device group `PRODUCT/GROUP`, or GROUP with --product (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, g, _, err := s.deploymentGroup(ctx, product, group)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.Deployment], error) {
				return c.ListDeployments(ctx, tenant, g.ProductID, g.ID, o)
			})
			if err != nil {
				return err
			}
			current := ""
			if len(items) > 0 {
				current = items[0].ID
			}
			return printList(s, items, []string{"ID", "IMAGE", "CURRENT", "CREATED", "CREATED BY", "SHA-256"}, func(d client.Deployment) []string {
				return []string{d.ID, d.Target, yesNo(d.ID == current), fmtTime(d.CreatedAt), d.CreatedBy, d.SHA256}
			})
		},
	})
}

func newDeploymentShow(env *Env) *ffcli.Command {
	var product, group string
	return newVerb(env, "deployment", verb{
		name:   "show",
		args:   "ID",
		short:  "Show one of a device group's deployments.",
		tenant: true,
		long: `Shows a deployment of the device group: its image and hash, when and by whom it was made,
and, for a rollback, the deployment it reverts.

EXAMPLES
  moat deployment show dep_0193... --device-group DW100/Production
  moat deployment show dep_0193... --device-group DW100/Production -o json`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&group, "device-group", "", "the device group `PRODUCT/GROUP`, or GROUP with --product (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "deployment ID"); err != nil {
				return err
			}
			c, tenant, g, name, err := s.deploymentGroup(ctx, product, group)
			if err != nil {
				return err
			}
			d, err := c.GetDeployment(ctx, tenant, g.ProductID, g.ID, args[0])
			if err != nil {
				return err
			}
			return s.show(d, deploymentFields(d, name))
		},
	})
}

func newDeploymentRollback(env *Env) *ffcli.Command {
	var product, group, to string
	return newVerb(env, "deployment", verb{
		name:   "rollback",
		short:  "Deploy an earlier deployment's image to a device group again.",
		tenant: true,
		long: `Rolls the device group back: deploys the image of the deployment before the current one
(or of --to ID) again, as a new deployment that names the one it reverts. The image must
still be in the tenant's current apps.json and made for the group's product, as for
'deployment create'; a revoked image is refused and nothing changes. Rolling back a
rollback deploys the reverted image again. Needs the Contributor role.

EXAMPLES
  moat deployment rollback --device-group DW100/Production
  moat deployment rollback --device-group DW100/Production --to dep_0193... -o json`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&group, "device-group", "", "the device group `PRODUCT/GROUP`, or GROUP with --product (required)")
			fs.StringVar(&to, "to", "", "the earlier deployment `ID` whose image to deploy again (default: the one before the current one)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, g, name, err := s.deploymentGroup(ctx, product, group)
			if err != nil {
				return err
			}
			d, err := c.RollbackDeployment(ctx, tenant, g.ProductID, g.ID, client.DeploymentRollback{To: to})
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(d)
			}
			fmt.Fprintf(s.env.Stdout, "Rolled %s back: %s reverts %s; the group runs %s again.\n", clean(name), d.ID, d.Reverts, clean(d.Target))
			return s.show(d, deploymentFields(d, name))
		},
	})
}
