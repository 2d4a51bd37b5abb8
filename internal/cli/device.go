package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/identity"
)

func newDeviceCmd(env *Env) *ffcli.Command {
	return newNoun(env, "device", "Claim devices, put them in device groups, block them and inspect them.",
		`A device is known by its ID, the SHA-256 of its identity public key (64 hex digits). The
platform operator registers each manufactured device; a tenant then claims it, once and for
good, and puts it in a device group, named PRODUCT/GROUP by names (as 'moat device-group
list' shows them). A device gets a certificate only after it attests that it runs genuine,
approved software; blocking it refuses its attestation.

EXAMPLES
  moat device claim --from devices.txt
  moat device update 3f9a...e1 --device-group DW100/Production
  moat device list --product DW100
  moat device show 3f9a...e1
  moat device block 3f9a...e1`,
		newDeviceClaim(env), newDeviceList(env), newDeviceShow(env), newDeviceUpdate(env),
		newDeviceToggle(env, deviceToggle{name: "block", short: "Block a device: its attestation is refused from now on.",
			long: `Blocks the device: its next attestation is refused, so it gets no new certificate and, once
the one it holds expires (24 h by default), cannot reach the tenant's cloud. Use it for a
stolen or misbehaving device. Needs the Administrator role.

EXAMPLES
  moat device block 3f9a...e1`,
			get: func(d client.Device) bool { return d.Blocked }, set: func(u *client.DeviceUpdate, v bool) { u.Blocked = &v }, value: true,
			did: "Blocked device %s: its attestation is refused from now on.", already: "Device %s is already blocked."}),
		newDeviceToggle(env, deviceToggle{name: "unblock", short: "Unblock a device: it may attest again.",
			long: `Unblocks the device: its next attestation is judged on its merits again. Needs the
Administrator role.

EXAMPLES
  moat device unblock 3f9a...e1`,
			get: func(d client.Device) bool { return d.Blocked }, set: func(u *client.DeviceUpdate, v bool) { u.Blocked = &v }, value: false,
			did: "Unblocked device %s.", already: "Device %s is not blocked."}),
		newDeviceToggle(env, deviceToggle{name: "enable-development", short: "Let a device attest in development mode (side-loaded development images).",
			long: `Grants the device the development capability: it may attest while in development mode,
running development images side-loaded by an engineer. Put such devices in a group with the
UpdateOSOnly policy so that deployments do not replace the side-loaded app. Needs the
Administrator role.

EXAMPLES
  moat device enable-development 3f9a...e1
  moat device update 3f9a...e1 --device-group DW100/Development`,
			get: func(d client.Device) bool { return d.Development }, set: func(u *client.DeviceUpdate, v bool) { u.Development = &v }, value: true,
			did: "Device %s may now attest in development mode.", already: "Device %s already has the development capability."}),
		newDeviceToggle(env, deviceToggle{name: "disable-development", short: "Withdraw a device's development capability.",
			long: `Withdraws the development capability: an attestation in development mode is refused from
now on, so the device must run released images again. Needs the Administrator role.

EXAMPLES
  moat device disable-development 3f9a...e1`,
			get: func(d client.Device) bool { return d.Development }, set: func(u *client.DeviceUpdate, v bool) { u.Development = &v }, value: false,
			did: "Device %s may no longer attest in development mode.", already: "Device %s does not have the development capability."}),
		newDeviceCertificates(env), newDeviceErrorReports(env), newDeviceUpdateHistory(env))
}

// deviceArg checks the one device ID argument.
func deviceArg(args []string) (string, error) {
	if err := wantArgs(args, 1, "the device ID"); err != nil {
		return "", err
	}
	id := strings.ToLower(args[0])
	if !identity.ValidID(id) {
		return "", usagef("%q is not a device ID: 64 hex digits, as 'moat device list' shows them", clip(args[0]))
	}
	return id, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// groupNames maps IDs to names for display: products to NAME, device groups to
// PRODUCT/GROUP.
type groupNames struct {
	products, groups map[string]string
}

func (n groupNames) group(d client.Device) string {
	if d.GroupID == "" {
		return "-"
	}
	if g, ok := n.groups[d.GroupID]; ok {
		return g
	}
	return d.GroupID
}

// loadGroupNames reads the tenant's products and device groups.
func loadGroupNames(ctx context.Context, c *client.Client, tenant string) (groupNames, error) {
	n := groupNames{products: map[string]string{}, groups: map[string]string{}}
	prods, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.Product], error) {
		return c.ListProducts(ctx, tenant, o)
	})
	if err != nil {
		return n, err
	}
	for _, p := range prods {
		n.products[p.ID] = p.Name
		groups, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceGroup], error) {
			return c.ListDeviceGroups(ctx, tenant, p.ID, o)
		})
		if err != nil {
			return n, err
		}
		for _, g := range groups {
			n.groups[g.ID] = p.Name + "/" + g.Name
		}
	}
	return n, nil
}

// deviceGroupName returns PRODUCT/GROUP of one device's group, or its IDs if the names
// cannot be read.
func deviceGroupName(ctx context.Context, c *client.Client, tenant string, d client.Device) string {
	if d.GroupID == "" {
		return "-"
	}
	p, err := c.GetProduct(ctx, tenant, d.ProductID)
	if err != nil {
		return d.ProductID + "/" + d.GroupID
	}
	g, err := c.GetDeviceGroup(ctx, tenant, d.ProductID, d.GroupID)
	if err != nil {
		return p.Name + "/" + d.GroupID
	}
	return p.Name + "/" + g.Name
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// attestationResult sums up a device's last attestation for one table cell.
func attestationResult(a *client.Attestation) string {
	switch {
	case a == nil:
		return "never attested"
	case a.Refusal != "":
		return "refused: " + a.Refusal
	default:
		return "certified"
	}
}

func deviceFields(d client.Device, group string) [][2]string {
	claimed := "-"
	if d.ClaimedAt != nil {
		claimed = fmtTime(*d.ClaimedAt)
	}
	floors := "-"
	if len(d.Floors) > 0 {
		var fs []string
		for _, k := range slices.Sorted(maps.Keys(d.Floors)) {
			fs = append(fs, fmt.Sprintf("%s=%d", k, d.Floors[k]))
		}
		floors = strings.Join(fs, ", ")
	}
	f := [][2]string{{"ID", d.ID}, {"Registered", fmtTime(d.RegisteredAt)}, {"Claimed", claimed},
		{"Device group", group}, {"Blocked", yesNo(d.Blocked)}, {"Development", yesNo(d.Development)},
		{"Floors", floors}, {"Last seen", lastSeenField(d)}, {"Update state", updateStateField(d)}}
	a := d.Attestation
	if a == nil {
		f = append(f, [2]string{"Last attestation", "never"})
	} else {
		f = append(f, [2]string{"Last attestation", fmtTime(a.At)}, [2]string{"Result", attestationResult(a)})
		if a.Refusal != "" {
			f = append(f, [2]string{"Refusal detail", a.Detail})
		} else {
			f = append(f, [2]string{"Certificate", a.Serial})
		}
		f = append(f, [2]string{"Development mode", yesNo(a.DevelopmentMode)})
		for _, m := range a.Images {
			f = append(f, [2]string{"Attested image", fmt.Sprintf("%s (%s %s, security version %d, sha256 %s)",
				m.Path, m.Kind, m.Version, m.SecurityVersion, m.SHA256)})
		}
	}
	return append(f, [2]string{"Version", itoa(d.Version)})
}

// maxIDFileBytes bounds an ID list file: 10000 IDs and comments fit well.
const maxIDFileBytes = 4 << 20

// readIDFile reads device IDs, one per line; blank lines and # comments are skipped.
func readIDFile(path string) ([]string, error) {
	data, err := readBounded(path, maxIDFileBytes)
	if err != nil {
		return nil, err
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		id := strings.ToLower(line)
		if !identity.ValidID(id) {
			return nil, usagef("%s:%d: %q is not a device ID (64 hex digits)", path, n, clip(line))
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return ids, nil
}

// claimBatch is how many devices one claim request names (the server's limit, which keeps
// a request within its body limit).
const claimBatch = 500

func newDeviceClaim(env *Env) *ffcli.Command {
	var from string
	return newVerb(env, "device", verb{
		name:   "claim",
		args:   "[ID...]",
		short:  "Claim registered devices into the tenant, for good.",
		tenant: true,
		long: `Claims the devices named by ID, and those listed in --from FILE (one ID per line; blank
lines and # comments are skipped, as in the devices.txt of 'moat platform manufacture'). A
claim is final: a device claimed by another tenant cannot be claimed. Claiming a device the
tenant already has changes nothing. Devices are claimed in batches of 500, each all or
nothing. Needs the Administrator role.

EXAMPLES
  moat device claim --from devices.txt
  moat device claim 3f9a...e1 7c02...9b -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&from, "from", "", "claim also the device IDs in `FILE`, one per line")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			var ids []string
			for _, a := range args {
				id := strings.ToLower(a)
				if !identity.ValidID(id) {
					return usagef("%q is not a device ID: 64 hex digits", clip(a))
				}
				ids = append(ids, id)
			}
			if from != "" {
				more, err := readIDFile(from)
				if err != nil {
					return err
				}
				ids = append(ids, more...)
			}
			ids = dedupe(ids)
			if len(ids) == 0 {
				return usagef("name the devices to claim: IDs as arguments, or --from FILE")
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			var claimed []client.Device
			for batch := range slices.Chunk(ids, claimBatch) {
				res, err := c.ClaimDevices(ctx, tenant, client.DeviceClaim{DeviceIDs: batch})
				if err != nil {
					return claimError(err, len(claimed))
				}
				claimed = append(claimed, res.Devices...)
			}
			if s.json() {
				return s.printJSON(claimed)
			}
			s.done("Claimed %s into the tenant:", plural(len(claimed), "device"))
			if err := printList(s, claimed, []string{"ID", "CLAIMED"}, func(d client.Device) []string {
				return []string{d.ID, fmtTimePtr(d.ClaimedAt)}
			}); err != nil {
				return err
			}
			s.note("Put them in a device group: moat device update ID --device-group PRODUCT/GROUP")
			return nil
		},
	})
}

// claimError explains a refused claim: which device, and what was claimed before it.
func claimError(err error, before int) error {
	e, ok := errors.AsType[*client.Error](err)
	if !ok || (e.Code != "device_not_found" && e.Code != "device_claimed") {
		return err
	}
	msg := e.Detail
	if before == 0 {
		msg += "; no device was claimed"
	} else {
		msg += fmt.Sprintf("; the first %d devices were claimed, the rest not", before)
	}
	hint := "check the ID: only devices the platform operator registered can be claimed ('moat platform manufacture' lists them in devices.txt)"
	if e.Code == "device_claimed" {
		hint = "a device belongs for good to the tenant that claimed it first; remove it from the list"
	}
	return &cliError{code: exitForStatus(e.Status), msg: msg, hint: hint}
}

// plural says "1 device" or "2 devices".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func dedupe(ids []string) []string {
	seen := map[string]bool{}
	out := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func newDeviceList(env *Env) *ffcli.Command {
	var product, group, state string
	return newVerb(env, "device", verb{
		name:   "list",
		short:  "List the tenant's devices, with their group, state and last attestation.",
		tenant: true,
		long: `Lists the tenant's devices: device group (PRODUCT/GROUP), blocked, development capability,
and the time and result of the last attestation.

With --product, lists that product's devices with their fleet status instead: what each
should run beside what it does run, its state, its last update state, when the service
last heard from it and its last attestation (-o json prints the device statuses). --group
keeps one group of the product, --state one state: never, refused, current, failed
(its update failed or rolled back) or pending (see 'moat fleet status').

EXAMPLES
  moat device list
  moat device list --product DW100 --group Production --state failed
  moat device list --product DW100 -o json`,
		flags: func(fs *flag.FlagSet) {
			productFlag(fs, &product)
			fs.StringVar(&group, "group", "", "only the device group `NAME` of --product")
			fs.StringVar(&state, "state", "", "only devices in this fleet `STATE`: never, refused, current, failed, pending")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if err := checkState(state); err != nil {
				return err
			}
			if product == "" && (group != "" || state != "") {
				return usagef("--group and --state need --product: what a device should run is chosen per product and group")
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			if product != "" {
				p, err := s.findProduct(ctx, tenant, product)
				if err != nil {
					return err
				}
				return deviceStatusList(ctx, s, c, tenant, p.ID, client.ListOptions{Product: p.Name, Group: group, State: state})
			}
			var opts client.ListOptions
			all, err := client.Collect(ctx, opts, func(ctx context.Context, o client.ListOptions) (client.Page[client.Device], error) {
				return c.ListDevices(ctx, tenant, o)
			})
			if err != nil {
				return err
			}
			items := all
			if s.json() {
				return s.printJSON(items)
			}
			names, err := loadGroupNames(ctx, c, tenant)
			if err != nil {
				return err
			}
			return printList(s, items, []string{"ID", "DEVICE GROUP", "BLOCKED", "DEVELOPMENT", "LAST ATTESTATION", "RESULT"}, func(d client.Device) []string {
				at := "-"
				if d.Attestation != nil {
					at = fmtTime(d.Attestation.At)
				}
				return []string{d.ID, names.group(d), yesNo(d.Blocked), yesNo(d.Development), at, attestationResult(d.Attestation)}
			})
		},
	})
}

func newDeviceShow(env *Env) *ffcli.Command {
	return newVerb(env, "device", verb{
		name:   "show",
		args:   "ID",
		short:  "Show a device: group, floors, state and its last attestation.",
		tenant: true,
		long: `Shows a device: its device group, whether it is blocked or may run development images, its
anti-rollback floors (the highest security version it attested per image), and its last
attestation: when, whether it got a certificate or why it was refused, and the images it
attested. Support staff start here when a device cannot connect.

EXAMPLES
  moat device show 3f9a...e1
  moat device show 3f9a...e1 -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			id, err := deviceArg(args)
			if err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			d, err := c.GetDevice(ctx, tenant, id)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(d)
			}
			return s.show(d, deviceFields(d, deviceGroupName(ctx, c, tenant, d)))
		},
	})
}

// checkGroupPath refuses a device group that is not PRODUCT/GROUP before any request.
func checkGroupPath(flagName, v string) error {
	p, g, ok := strings.Cut(v, "/")
	if !ok || p == "" || g == "" || strings.TrimSpace(p) != p || strings.TrimSpace(g) != g {
		return usagef("--%s must name a device group as PRODUCT/GROUP (names, as 'moat device-group list' shows them), got %q", flagName, clip(v))
	}
	return nil
}

func newDeviceUpdate(env *Env) *ffcli.Command {
	var group string
	return newVerb(env, "device", verb{
		name:   "update",
		args:   "ID",
		short:  "Move a device to a device group.",
		tenant: true,
		long: `Reads the device, then moves it to the device group PRODUCT/GROUP (by names) on exactly the
version read: if someone else changed the device in between, nothing changes and the command
exits 8; run it again. The group decides which OS feed and which deployments the device
takes. Needs the Contributor role.

EXAMPLES
  moat device update 3f9a...e1 --device-group DW100/Production
  moat device update 3f9a...e1 --device-group "DW100/Field Test"`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&group, "device-group", "", "the device group `PRODUCT/GROUP` (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			id, err := deviceArg(args)
			if err != nil {
				return err
			}
			if !s.given("device-group") {
				return usagef("nothing to change: give --device-group PRODUCT/GROUP")
			}
			if err := checkGroupPath("device-group", group); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			d, err := c.GetDevice(ctx, tenant, id)
			if err != nil {
				return err
			}
			out, err := c.UpdateDevice(ctx, tenant, id, d.Version, client.DeviceUpdate{DeviceGroup: &group})
			if err != nil {
				return changedMeanwhile(err, "device", id)
			}
			if s.json() {
				return s.printJSON(out)
			}
			return s.show(out, deviceFields(out, deviceGroupName(ctx, c, tenant, out)))
		},
	})
}

// deviceToggle describes a verb that sets one boolean of a device.
type deviceToggle struct {
	name, short, long string
	get               func(client.Device) bool
	set               func(*client.DeviceUpdate, bool)
	value             bool
	did, already      string // messages, with the device ID
}

func newDeviceToggle(env *Env, t deviceToggle) *ffcli.Command {
	return newVerb(env, "device", verb{
		name:   t.name,
		args:   "ID",
		short:  t.short,
		tenant: true,
		long:   t.long,
		run: func(ctx context.Context, s *session, args []string) error {
			id, err := deviceArg(args)
			if err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			d, err := c.GetDevice(ctx, tenant, id)
			if err != nil {
				return err
			}
			if t.get(d) == t.value {
				if s.json() {
					return s.printJSON(d)
				}
				s.done(t.already, id)
				return nil
			}
			var upd client.DeviceUpdate
			t.set(&upd, t.value)
			out, err := c.UpdateDevice(ctx, tenant, id, d.Version, upd)
			if err != nil {
				return changedMeanwhile(err, "device", id)
			}
			if s.json() {
				return s.printJSON(out)
			}
			s.done(t.did, id)
			return nil
		},
	})
}

func newDeviceCertificates(env *Env) *ffcli.Command {
	return newVerb(env, "device", verb{
		name:   "certificates",
		args:   "ID",
		short:  "List the certificates issued to a device, newest first, with what it attested.",
		tenant: true,
		long: `Lists the certificates the tenant's device CA issued to the device after each successful
attestation, newest first: serial, issuing CA, validity and the images the device attested.

EXAMPLES
  moat device certificates 3f9a...e1
  moat device certificates 3f9a...e1 -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			id, err := deviceArg(args)
			if err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceCertificate], error) {
				return c.ListDeviceCertificates(ctx, tenant, id, o)
			})
			if err != nil {
				return err
			}
			return printList(s, items, []string{"SERIAL", "CA", "ISSUED", "VALID UNTIL", "IMAGES"}, func(dc client.DeviceCertificate) []string {
				var ims []string
				for _, m := range dc.Images {
					ims = append(ims, m.Path)
				}
				return []string{dc.Serial, dc.CAID, fmtTime(dc.IssuedAt), fmtTime(dc.NotAfter), strings.Join(ims, ", ")}
			})
		},
	})
}
