package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

// The fleet status (issue 11): `moat fleet status` prints a product's matrix of what each
// group should run beside what its devices do run; `moat device list --product P` lists the
// devices with the same should/does/state columns (deviceStatusList).

func newFleetCmd(env *Env) *ffcli.Command {
	return newNoun(env, "fleet", "See what the tenant's devices should run beside what they do run.",
		`What a device should run is chosen per device group: the newest OS image on the group's OS
feed, and the app its group's current deployment names (unless the group takes OS updates
only). What it does run is what its last successful attestation showed. Each device is in
one state: never (never attested), refused (its last attestation was refused), current (it
runs what it should), failed (it does not, and its last update failed or rolled back) or
pending (it does not, and its update is on its way). See docs/fleet-status.md.

EXAMPLES
  moat fleet status --product DW100
  moat device list --product DW100 --state failed`,
		newFleetStatus(env))
}

func newFleetStatus(env *Env) *ffcli.Command {
	var product, group string
	return newVerb(env, "fleet", verb{
		name:   "status",
		short:  "Show a product's devices per group: what they should run beside what they run, per state.",
		tenant: true,
		long: `Prints, for each device group of the product (or the one --group names), what its devices
should run (SHOULD) beside each combination of images they do run (DOES), with the number
of devices in each state. Below the table, why each group should run what it does: the OS
feed and its newest image, the deployment, or the group's update policy. The counts are
computed by the server's database, so the command is as quick for 100,000 devices as for
ten. 'moat device list --product P --state S' lists the devices behind a count.

EXAMPLES
  moat fleet status --product DW100
  moat fleet status --product DW100 --group Production
  moat fleet status --product DW100 -o json`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&group, "group", "", "only the device group `NAME` of the product")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if product == "" {
				return usagef("--product is required: what a device should run is chosen per product and group")
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			p, err := s.findProduct(ctx, tenant, product)
			if err != nil {
				return err
			}
			m, err := c.GetFleetStatus(ctx, tenant, p.Name, group)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(m)
			}
			return printFleetStatus(s, m)
		},
	})
}

// printFleetStatus prints the matrix: one row per group and what its devices run, the
// group's should on its first row, then the reasons.
func printFleetStatus(s *session, m client.FleetStatus) error {
	w := s.env.Stdout
	t := m.Totals
	fmt.Fprintf(w, "%s: %d devices: %d current, %d pending, %d failed, %d refused, %d never attested\n\n",
		clean(m.Product), t.Devices, t.Current, t.Pending, t.Failed, t.Refused, t.Never)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE GROUP\tSHOULD RUN\tDOES RUN\tDEVICES\tCURRENT\tPENDING\tFAILED\tREFUSED\tNEVER")
	for _, g := range m.Groups {
		name, should := clean(g.Group), clean(shouldCell(g.Should))
		if len(g.Rows) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t0\t0\t0\t0\t0\t0\n", name, should)
			continue
		}
		for _, r := range g.Rows {
			n := r.Counts
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", name, should, clean(doesCell(r.Does, r.Counts)),
				n.Devices, n.Current, n.Pending, n.Failed, n.Refused, n.Never)
			name, should = "", "" // once per group
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if m.Truncated {
		fmt.Fprintln(w, "\n(truncated: the devices run too many combinations of images to show them all)")
	}
	fmt.Fprintln(w, "\nWHY")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, g := range m.Groups {
		fmt.Fprintf(tw, "%s\tOS: %s\n\tapp: %s\n", clean(g.Group), clean(g.Should.OSReason), clean(g.Should.AppReason))
	}
	return tw.Flush()
}

// imageCell names an image by the middle of its target path and its version:
// "os/moat-os/1.2.0" is "moat-os 1.2.0".
func imageCell(target, version string) string {
	parts := strings.Split(target, "/")
	if len(parts) == 3 {
		return parts[1] + " " + version
	}
	return target
}

// shouldCell sums up a should: "moat-os 1.2.0 + dw100-app 2.0.0"; a kind the director
// assigns none of is "any app" or "any OS" (the device keeps what it runs).
func shouldCell(sh client.Should) string {
	os, app := "any OS", "any app"
	if sh.OS != nil {
		os = imageCell(sh.OS.Target, sh.OS.Version)
	}
	if sh.App != nil {
		app = imageCell(sh.App.Target, sh.App.Version)
	}
	return os + " + " + app
}

// doesCell sums up what devices run: "-" for devices that never attested successfully.
func doesCell(r client.Running, n client.StateCounts) string {
	if r == (client.Running{}) {
		if n.Never == n.Devices {
			return "- (never attested)"
		}
		return "-"
	}
	os, app := "no OS", "no app"
	if r.OSTarget != "" {
		os = imageCell(r.OSTarget, r.OSVersion)
	}
	if r.AppTarget != "" {
		app = imageCell(r.AppTarget, r.AppVersion)
	}
	return os + " + " + app
}

// deviceStatusList lists the devices of the product (and group, and state) with their
// fleet status: the table of 'moat device list --product P'.
func deviceStatusList(ctx context.Context, s *session, c *client.Client, tenant, productID string, opts client.ListOptions) error {
	all, err := client.Collect(ctx, opts, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceStatus], error) {
		return c.ListDeviceStatuses(ctx, tenant, o)
	})
	if err != nil {
		return err
	}
	// The server filters by the product's name; its ID is checked here too.
	items := []client.DeviceStatus{}
	for _, d := range all {
		if d.ProductID == productID {
			items = append(items, d)
		}
	}
	if s.json() {
		return printList(s, items, nil, nil)
	}
	names, err := loadGroupNames(ctx, c, tenant)
	if err != nil {
		return err
	}
	header := []string{"ID", "DEVICE GROUP", "SHOULD RUN", "DOES RUN", "STATE", "UPDATE", "LAST SEEN", "LAST ATTESTATION"}
	return printList(s, items, header, func(d client.DeviceStatus) []string {
		should := shouldCell(d.Should)
		if d.OwnShould {
			should += " (its floors; group: " + shouldCell(*d.GroupShould) + ")"
		}
		does := "-"
		if d.Does != (client.Running{}) {
			does = doesCell(d.Does, client.StateCounts{})
		}
		update := d.UpdateState
		if update == "" {
			update = "-"
		}
		last := "never attested"
		if a := d.Attestation; a != nil {
			last = fmtTime(a.At) + " certified"
			if a.Refusal != "" {
				last = fmtTime(a.At) + " refused: " + a.Refusal
			}
		}
		return []string{d.ID, names.group(client.Device{ProductID: d.ProductID, GroupID: d.GroupID}), should, does,
			d.State, update, fmtTimePtr(d.LastSeenAt), last}
	})
}

// checkState refuses a --state that is not a fleet state before any request.
func checkState(state string) error {
	switch state {
	case "", client.StateNever, client.StateRefused, client.StateCurrent, client.StateFailed, client.StatePending:
		return nil
	}
	return usagef("--state must be one of never, refused, current, failed, pending; got %s", strconv.Quote(clip(state)))
}
