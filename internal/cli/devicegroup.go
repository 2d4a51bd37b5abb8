package cli

import (
	"context"
	"flag"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newDeviceGroupCmd(env *Env) *ffcli.Command {
	return newNoun(env, "device-group", "Create and manage a product's device groups.",
		`A device group decides which OS feed (Retail or RetailEval) and which updates (UpdateAll,
or UpdateOSOnly for side-loaded development devices) its devices take. A group is named as
PRODUCT/GROUP, or as GROUP with --product PRODUCT; products and groups by ID or by name.
Use --product when a product name contains a slash.

EXAMPLES
  moat device-group list --product DW100
  moat device-group create --product DW100 --name Beta --os-feed Retail --update-policy UpdateAll
  moat device-group show DW100/Production
  moat device-group update --product DW100 Beta --os-feed RetailEval`,
		newGroupCreate(env), newGroupList(env), newGroupShow(env), newGroupUpdate(env), newGroupDelete(env))
}

func groupFields(g client.DeviceGroup) [][2]string {
	return [][2]string{{"ID", g.ID}, {"Product", g.ProductID}, {"Name", g.Name}, {"Description", g.Description},
		{"OS feed", string(g.OSFeed)}, {"Update policy", string(g.UpdatePolicy)}, {"Maintenance window", windowText(g.MaintenanceWindow)},
		{"Created", fmtTime(g.CreatedAt)}, {"Updated", fmtTime(g.UpdatedAt)}, {"Version", itoa(g.Version)}}
}

func feedNames() string {
	var s []string
	for _, f := range client.OSFeeds {
		s = append(s, string(f))
	}
	return strings.Join(s, " or ")
}

func policyNames() string {
	var s []string
	for _, p := range client.UpdatePolicies {
		s = append(s, string(p))
	}
	return strings.Join(s, " or ")
}

func checkFeed(v string) error {
	if !slices.Contains(client.OSFeeds, client.OSFeed(v)) {
		return usagef("--os-feed must be %s, got %q", feedNames(), v)
	}
	return nil
}

func checkPolicy(v string) error {
	if !slices.Contains(client.UpdatePolicies, client.UpdatePolicy(v)) {
		return usagef("--update-policy must be %s, got %q", policyNames(), v)
	}
	return nil
}

// groupRef splits a group reference: GROUP with --product, else PRODUCT/GROUP.
func groupRef(product string, args []string) (string, string, error) {
	if err := wantArgs(args, 1, "the device group (PRODUCT/GROUP, or GROUP with --product)"); err != nil {
		return "", "", err
	}
	if product != "" {
		return product, args[0], nil
	}
	p, g, ok := strings.Cut(args[0], "/")
	if !ok || p == "" || g == "" {
		return "", "", usagef("name the device group as PRODUCT/GROUP, or pass --product PRODUCT and GROUP")
	}
	return p, g, nil
}

// resolveGroup finds the product and the group a command names.
func (s *session) resolveGroup(ctx context.Context, product string, args []string) (*client.Client, string, client.DeviceGroup, error) {
	pref, gref, err := groupRef(product, args)
	if err != nil {
		return nil, "", client.DeviceGroup{}, err
	}
	c, tenant, err := s.inTenant(ctx)
	if err != nil {
		return nil, "", client.DeviceGroup{}, err
	}
	p, err := s.findProduct(ctx, tenant, pref)
	if err != nil {
		return nil, "", client.DeviceGroup{}, err
	}
	g, err := s.findGroup(ctx, tenant, p, gref)
	return c, tenant, g, err
}

func productFlag(fs *flag.FlagSet, v *string) {
	fs.StringVar(v, "product", "", "the `PRODUCT` (ID or name)")
}

func newGroupCreate(env *Env) *ffcli.Command {
	var product, name, desc, feed, policy, window string
	return newVerb(env, "device-group", verb{
		name:   "create",
		short:  "Create a device group in a product.",
		tenant: true,
		long: `Creates a device group. Its OS feed and update policy are required: a group's update
behaviour is never a silent default. With --maintenance-window the group's devices download
new images at once but install them only inside the window (DAYS HH:MM LENGTH ZONE: days
mon..sun comma-separated or "daily", local start time, a length from 15m to 24h, an IANA
time zone); a deployment made with --ignore-window installs at once. Needs the Contributor
role.

EXAMPLES
  moat device-group create --product DW100 --name Beta --os-feed Retail --update-policy UpdateAll
  moat device-group create --product DW100 --name Lab --os-feed RetailEval --update-policy UpdateOSOnly --description "bench devices"
  moat device-group create --product DW100 --name Night --os-feed Retail --update-policy UpdateAll --maintenance-window "mon,tue,wed,thu,fri 02:00 3h Europe/Berlin"`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&name, "name", "", "group `NAME` (required, unique in the product)")
			fs.StringVar(&desc, "description", "", "free-text `DESCRIPTION`")
			fs.StringVar(&feed, "os-feed", "", "`FEED`: Retail or RetailEval (required)")
			fs.StringVar(&policy, "update-policy", "", "`POLICY`: UpdateAll or UpdateOSOnly (required)")
			fs.StringVar(&window, "maintenance-window", "", "install only inside `\"DAYS HH:MM LENGTH ZONE\"` (default: any time)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if product == "" {
				return usagef("--product is required")
			}
			if err := checkName("name", name); err != nil {
				return err
			}
			if err := checkFeed(feed); err != nil {
				return err
			}
			if err := checkPolicy(policy); err != nil {
				return err
			}
			req := client.DeviceGroupCreate{
				Name: name, Description: desc, OSFeed: client.OSFeed(feed), UpdatePolicy: client.UpdatePolicy(policy),
			}
			if s.given("maintenance-window") {
				w, err := parseWindow(window)
				if err != nil {
					return err
				}
				req.MaintenanceWindow = w
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := s.findProduct(ctx, tenant, product)
			if err != nil {
				return err
			}
			g, err := c.CreateDeviceGroup(ctx, tenant, p.ID, req)
			if err != nil {
				return err
			}
			return s.show(g, groupFields(g))
		},
	})
}

func newGroupList(env *Env) *ffcli.Command {
	var product string
	return newVerb(env, "device-group", verb{
		name:   "list",
		short:  "List a product's device groups.",
		tenant: true,
		long: `Lists every device group of the product, with its OS feed and update policy.

EXAMPLES
  moat device-group list --product DW100
  moat device-group list --product DW100 -o json`,
		flags: func(fs *flag.FlagSet) { productFlag(fs, &product) },
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if product == "" {
				return usagef("--product is required")
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := s.findProduct(ctx, tenant, product)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceGroup], error) {
				return c.ListDeviceGroups(ctx, tenant, p.ID, o)
			})
			if err != nil {
				return err
			}
			return printList(s, items, []string{"ID", "NAME", "OS FEED", "UPDATE POLICY"}, func(g client.DeviceGroup) []string {
				return []string{g.ID, g.Name, string(g.OSFeed), string(g.UpdatePolicy)}
			})
		},
	})
}

func newGroupShow(env *Env) *ffcli.Command {
	var product string
	return newVerb(env, "device-group", verb{
		name:   "show",
		args:   "PRODUCT/GROUP | --product PRODUCT GROUP",
		short:  "Show a device group.",
		tenant: true,
		long: `Shows a device group.

EXAMPLES
  moat device-group show DW100/Production
  moat device-group show --product DW100 "Field Test" -o json`,
		flags: func(fs *flag.FlagSet) { productFlag(fs, &product) },
		run: func(ctx context.Context, s *session, args []string) error {
			_, _, g, err := s.resolveGroup(ctx, product, args)
			if err != nil {
				return err
			}
			return s.show(g, groupFields(g))
		},
	})
}

func newGroupUpdate(env *Env) *ffcli.Command {
	var product, name, desc, feed, policy, window string
	var clearWindow bool
	return newVerb(env, "device-group", verb{
		name:   "update",
		args:   "PRODUCT/GROUP | --product PRODUCT GROUP",
		short:  "Change a device group's name, description, OS feed, update policy or maintenance window.",
		tenant: true,
		long: `Reads the group, then changes the given fields on exactly the version read: if someone
else changed the group in between, nothing changes and the command exits 8; run it again.
Fields not given stay as they are. Needs the Contributor role.

EXAMPLES
  moat device-group update DW100/Beta --os-feed RetailEval
  moat device-group update --product DW100 Beta --name "Beta testers" --update-policy UpdateOSOnly
  moat device-group update DW100/Production --maintenance-window "daily 01:30 2h America/New_York"
  moat device-group update DW100/Production --clear-maintenance-window`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&name, "name", "", "new `NAME`")
			fs.StringVar(&desc, "description", "", "new `DESCRIPTION` (\"\" clears it)")
			fs.StringVar(&feed, "os-feed", "", "new `FEED`: Retail or RetailEval")
			fs.StringVar(&policy, "update-policy", "", "new `POLICY`: UpdateAll or UpdateOSOnly")
			fs.StringVar(&window, "maintenance-window", "", "install only inside `\"DAYS HH:MM LENGTH ZONE\"`")
			fs.BoolVar(&clearWindow, "clear-maintenance-window", false, "remove the maintenance window: install at any time")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if _, _, err := groupRef(product, args); err != nil {
				return err
			}
			var upd client.DeviceGroupUpdate
			if s.given("name") {
				if err := checkName("name", name); err != nil {
					return err
				}
				upd.Name = &name
			}
			if s.given("description") {
				upd.Description = &desc
			}
			if s.given("os-feed") {
				if err := checkFeed(feed); err != nil {
					return err
				}
				f := client.OSFeed(feed)
				upd.OSFeed = &f
			}
			if s.given("update-policy") {
				if err := checkPolicy(policy); err != nil {
					return err
				}
				p := client.UpdatePolicy(policy)
				upd.UpdatePolicy = &p
			}
			if s.given("maintenance-window") {
				w, err := parseWindow(window)
				if err != nil {
					return err
				}
				upd.MaintenanceWindow = w
			}
			upd.ClearMaintenanceWindow = clearWindow
			if upd.MaintenanceWindow != nil && clearWindow {
				return usagef("give --maintenance-window or --clear-maintenance-window, not both")
			}
			if upd == (client.DeviceGroupUpdate{}) {
				return usagef("nothing to change: give --name, --description, --os-feed, --update-policy, --maintenance-window or --clear-maintenance-window")
			}
			c, tenant, g, err := s.resolveGroup(ctx, product, args)
			if err != nil {
				return err
			}
			out, err := c.UpdateDeviceGroup(ctx, tenant, g.ProductID, g.ID, g.Version, upd)
			if err != nil {
				return changedMeanwhile(err, "device group", g.Name)
			}
			return s.show(out, groupFields(out))
		},
	})
}

func newGroupDelete(env *Env) *ffcli.Command {
	var product string
	return newVerb(env, "device-group", verb{
		name:   "delete",
		args:   "PRODUCT/GROUP | --product PRODUCT GROUP",
		short:  "Delete a device group.",
		tenant: true,
		long: `Deletes a device group, provided nobody changed it since it was read. Needs the
Contributor role. With --output json nothing is printed.

EXAMPLES
  moat device-group delete DW100/Beta
  moat device-group delete --product DW100 Beta`,
		flags: func(fs *flag.FlagSet) { productFlag(fs, &product) },
		run: func(ctx context.Context, s *session, args []string) error {
			c, tenant, g, err := s.resolveGroup(ctx, product, args)
			if err != nil {
				return err
			}
			if err := c.DeleteDeviceGroup(ctx, tenant, g.ProductID, g.ID, g.Version); err != nil {
				return changedMeanwhile(err, "device group", g.Name)
			}
			s.done("Deleted device group %s (%s).", clean(g.Name), g.ID)
			return nil
		},
	})
}
