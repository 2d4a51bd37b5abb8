package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/fleet/assign"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/repo"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// Fleet status (issue 11, part 2): what each device should run beside what it does run.
//
// What a group should run is what the director would assign a device of the group: the
// same inputs (group, current deployment, catalog) through the same assign.Images and
// Config.Policy, for a device of the group with no anti-rollback floors (TestStatus_Should
// MatchesTheSignedAssignment). A device whose floors forbid its group's should (it attested
// a higher security version of the component) is assigned something else, or nothing, by
// the director; the per-device status (DeviceStatuses) computes that device's own should
// with its floors and marks it OwnShould, while its state and the counts compare it with
// the group's should, so the filter, the list and the matrix agree (docs/fleet-status.md).
// A policy that answers per device (a staged rollout) would need the same care.
//
// The counts and the state filter run in the database on indexed columns (store
// CountStatus and Filter.State): nothing here loads every device.

// MaxMatrixRows bounds the rows (group and what its devices run) of one fleet-status
// matrix; past it FleetStatus.Truncated is set.
const MaxMatrixRows = 1000

// ShouldImage is one image a device should run.
type ShouldImage struct {
	Target  string `json:"target"`
	Version string `json:"version"`
}

// Should is what a device, or every device of a group, should run and why.
type Should struct {
	// OS and App are the images the director assigns; nil for a kind it assigns none of
	// (the device keeps what it runs).
	OS  *ShouldImage `json:"os,omitempty"`
	App *ShouldImage `json:"app,omitempty"`
	// OSReason and AppReason say why: "os feed Retail: newest os/moat/1.2.0",
	// "deployment dep_... (by alice at ...)", "group takes OS updates only", "no
	// deployment", or the policy that chose otherwise.
	OSReason  string `json:"os_reason"`
	AppReason string `json:"app_reason"`
	// Policy names the policy that chose (Config.Policy): "default" without one.
	Policy string `json:"policy"`
}

// Targets is s as the store's state filter takes it.
func (s Should) Targets() device.Should {
	var t device.Should
	if s.OS != nil {
		t.OSTarget = s.OS.Target
	}
	if s.App != nil {
		t.AppTarget = s.App.Target
	}
	return t
}

// GroupShould is what a device group's devices should run.
type GroupShould struct {
	ProductID product.ID      `json:"product_id"`
	GroupID   product.GroupID `json:"device_group_id"`
	Group     string          `json:"device_group"`
	Should    Should          `json:"should"`
}

// StateCounts counts devices per fleet state (device.Classify).
type StateCounts struct {
	Devices int `json:"devices"`
	Current int `json:"current"`
	Pending int `json:"pending"`
	Failed  int `json:"failed"`
	Refused int `json:"refused"`
	Never   int `json:"never_attested"`
}

func (c *StateCounts) add(o StateCounts) {
	c.Devices += o.Devices
	c.Current += o.Current
	c.Pending += o.Pending
	c.Failed += o.Failed
	c.Refused += o.Refused
	c.Never += o.Never
}

// StatusRow is one cell of the matrix: the group's devices that run one combination of
// images (by their last successful attestation; "" for a kind never attested), per state.
type StatusRow struct {
	Does device.Running `json:"does"`
	// Matches: running Does is running what the group should (those that attest
	// successfully are current).
	Matches bool        `json:"matches"`
	Counts  StateCounts `json:"counts"`
}

// GroupStatus is one group's part of the matrix.
type GroupStatus struct {
	GroupID product.GroupID `json:"device_group_id"`
	Group   string          `json:"device_group"`
	Should  Should          `json:"should"`
	Rows    []StatusRow     `json:"rows"`
	Totals  StateCounts     `json:"totals"`
}

// FleetStatus is the fleet-status matrix of one product (or one of its groups): per group,
// what its devices should run beside what they do run, with counts per state.
type FleetStatus struct {
	ProductID product.ID    `json:"product_id"`
	Product   string        `json:"product"`
	Groups    []GroupStatus `json:"device_groups"`
	Totals    StateCounts   `json:"totals"`
	// Truncated: the product's devices run more than MaxMatrixRows combinations per group;
	// the rows and totals cover the first MaxMatrixRows.
	Truncated bool `json:"truncated"`
}

// DeviceStatus is one device's fleet status.
type DeviceStatus struct {
	ID        device.ID       `json:"id"`
	ProductID product.ID      `json:"product_id"`
	GroupID   product.GroupID `json:"device_group_id"`
	Blocked   bool            `json:"blocked"`
	// Should is what the director assigns this device now (its own floors included).
	Should Should `json:"should"`
	// OwnShould: the device's floors make its Should differ from its group's; its State
	// compares it with the group's should (GroupShould), like the counts.
	OwnShould   bool           `json:"own_should"`
	GroupShould *Should        `json:"group_should,omitempty"`
	Does        device.Running `json:"does"`
	// State is its fleet state: never, refused, current, failed or pending.
	State         string     `json:"state"`
	UpdateState   string     `json:"update_state"`
	UpdateStateAt *time.Time `json:"update_state_at,omitempty"`
	LastSeenAt    *time.Time `json:"last_seen_at,omitempty"`
	// Attestation is the outcome of its last attestation; nil when it never attested.
	Attestation *AttestationOutcome `json:"attestation,omitempty"`
}

// AttestationOutcome is what the status shows of a device's last attestation.
type AttestationOutcome struct {
	At time.Time `json:"at"`
	// Refusal is empty on success.
	Refusal string `json:"refusal,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// ErrUnknownState: a state filter that is not one of device.States.
var ErrUnknownState = errors.New("unknown fleet state")

// policyName names Config.Policy for the reasons: "default" when none is set, else its
// Name() when it has one.
func (s *Service) policyName() string {
	switch p := s.cfg.Policy.(type) {
	case nil:
		return "default"
	case interface{ Name() string }:
		return p.Name()
	}
	return "custom"
}

// groupInputs are what the shoulds of a product's groups are computed from.
type groupInputs struct {
	product     product.Product
	groups      []product.Group
	deployments map[product.GroupID]*device.Deployment
}

// readGroups reads the product and its groups (one when gid is set) with their current
// deployments, in tt.
func readGroups(ctx context.Context, tt store.TenantTx, pid product.ID, gid product.GroupID) (groupInputs, error) {
	in := groupInputs{deployments: map[product.GroupID]*device.Deployment{}}
	var err error
	if in.product, err = tt.Products().Get(ctx, pid); err != nil {
		return in, err
	}
	if gid != "" {
		g, err := tt.Groups().Get(ctx, pid, gid)
		if err != nil {
			return in, err
		}
		in.groups = []product.Group{g}
	} else {
		for p := (store.Page{Limit: store.MaxLimit}); ; {
			gs, err := tt.Groups().List(ctx, pid, p)
			if err != nil {
				return in, err
			}
			in.groups = append(in.groups, gs...)
			if len(gs) < p.Limit {
				break
			}
			p.After = string(gs[len(gs)-1].ID)
		}
	}
	for _, g := range in.groups {
		d, err := tt.Deployments().Current(ctx, pid, g.ID)
		switch {
		case err == nil:
			in.deployments[g.ID] = &d
		case !errors.Is(err, store.ErrNotFound):
			return in, err
		}
	}
	return in, nil
}

// should computes what the director assigns the device of in, and why: assign.Images with
// the service's policy (the director's own call), then assign.Default's choice for the
// reasons.
func (s *Service) should(ctx context.Context, in assign.Input) (Should, error) {
	images, err := assign.Images(ctx, s.cfg.Policy, in)
	if err != nil {
		return Should{}, err
	}
	out := Should{Policy: s.policyName()}
	for _, im := range images {
		ref := &ShouldImage{Target: im.Path, Version: im.Version}
		if im.Kind == director.KindOS {
			out.OS = ref
		} else {
			out.App = ref
		}
	}
	def, err := assign.Default.Choose(ctx, in)
	if err != nil {
		return Should{}, err
	}
	out.OSReason = osReason(in, out.OS, def.OS, out.Policy)
	out.AppReason = appReason(in, out.App, def.App, out.Policy)
	return out, nil
}

func osReason(in assign.Input, got *ShouldImage, def *repo.Image, policy string) string {
	feed := "os feed " + string(in.Group.OSFeed)
	switch {
	case got != nil && def != nil && def.Path == got.Target:
		return feed + ": newest " + got.Target
	case got != nil:
		return "policy " + policy + " chose " + got.Target
	case def != nil:
		return "policy " + policy + " assigns no OS"
	}
	return feed + ": no OS image published that the device may run"
}

func appReason(in assign.Input, got *ShouldImage, def *repo.Image, policy string) string {
	dep := in.Deployment
	switch {
	case got != nil && def != nil && def.Path == got.Target:
		return fmt.Sprintf("deployment %s (by %s at %s)", dep.ID, dep.CreatedBy, dep.CreatedAt.UTC().Format(time.RFC3339))
	case got != nil:
		return "policy " + policy + " chose " + got.Target
	case def != nil:
		return "policy " + policy + " assigns no app"
	case in.Group.UpdatePolicy != product.UpdateAll:
		return "group takes OS updates only"
	case dep == nil:
		return "no deployment"
	}
	im, ok := in.Catalog.Images[dep.Target]
	if !ok || im.SHA256 != dep.SHA256 {
		return fmt.Sprintf("deployment %s names %s, which the catalog no longer lists (revoked)", dep.ID, dep.Target)
	}
	return fmt.Sprintf("deployment %s names %s, below the device's floor for %s", dep.ID, dep.Target, im.Component())
}

// groupDevice is the device whose assignment is its group's should: in the group, with no
// floors.
func groupDevice(t tenant.ID, g product.Group) device.Device {
	return device.Device{TenantID: t, ProductID: g.ProductID, GroupID: g.ID, Floors: map[string]uint32{}}
}

// shoulds computes each group's should from in.
func (s *Service) shoulds(ctx context.Context, t tenant.ID, in groupInputs, cat *repo.Catalog) ([]GroupShould, error) {
	out := make([]GroupShould, 0, len(in.groups))
	for _, g := range in.groups {
		sh, err := s.should(ctx, assign.Input{Device: groupDevice(t, g), Group: g, Deployment: in.deployments[g.ID], Catalog: cat})
		if err != nil {
			return nil, err
		}
		out = append(out, GroupShould{ProductID: g.ProductID, GroupID: g.ID, Group: g.Name, Should: sh})
	}
	return out, nil
}

// GroupShoulds returns what each group of the product (or the one group gid) should run,
// and why. ErrNotFound (store) for a product or group that is not the tenant's.
func (s *Service) GroupShoulds(ctx context.Context, t tenant.ID, pid product.ID, gid product.GroupID) ([]GroupShould, error) {
	var in groupInputs
	err := s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		in, err = readGroups(ctx, tt, pid, gid)
		return err
	})
	if err != nil {
		return nil, err
	}
	cat, err := s.cfg.Repo.Catalog(ctx, t)
	if err != nil {
		return nil, err
	}
	return s.shoulds(ctx, t, in, cat)
}

// StateFilter returns the device filter that selects the product's devices (of group gid
// when set) in the fleet state (device.States; "" for any): with each group's should when a
// state is given. ErrUnknownState for another state.
func (s *Service) StateFilter(ctx context.Context, t tenant.ID, pid product.ID, gid product.GroupID, state string) (device.Filter, error) {
	f := device.Filter{ProductID: pid, GroupID: gid}
	if state == "" {
		return f, nil
	}
	if !slices.Contains(device.States, state) {
		return f, fmt.Errorf("%w %q", ErrUnknownState, state)
	}
	shoulds, err := s.GroupShoulds(ctx, t, pid, gid)
	if err != nil {
		return f, err
	}
	f.State, f.Should = state, map[product.GroupID]device.Should{}
	for _, g := range shoulds {
		f.Should[g.GroupID] = g.Should.Targets()
	}
	return f, nil
}

// Status returns the fleet-status matrix of the product (of group gid when set): per group,
// its should, and its devices counted per what they run and per state in the database
// (store CountStatus). This is what the API and the console show. ErrNotFound (store) for
// a product or group that is not the tenant's.
func (s *Service) Status(ctx context.Context, t tenant.ID, pid product.ID, gid product.GroupID) (FleetStatus, error) {
	cat, err := s.cfg.Repo.Catalog(ctx, t)
	if err != nil {
		return FleetStatus{}, err
	}
	var in groupInputs
	var counts []store.StatusCount
	err = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		if in, err = readGroups(ctx, tt, pid, gid); err != nil {
			return err
		}
		counts, err = tt.Devices().CountStatus(ctx, device.Filter{ProductID: pid, GroupID: gid}, MaxMatrixRows+1)
		return err
	})
	if err != nil {
		return FleetStatus{}, err
	}
	shoulds, err := s.shoulds(ctx, t, in, cat)
	if err != nil {
		return FleetStatus{}, err
	}
	return Tally(in.product, shoulds, counts), nil
}

// Tally builds the matrix from the groups' shoulds and the store's counts (CountStatus,
// asked for MaxMatrixRows+1, ordered by group and what the devices run): the devices of a
// count that never attested are never; the others are in the state device.Classify gives
// the count's refusal, images and update state, so the matrix and the state filter agree.
// Groups keep the order of shoulds; counts of groups not in shoulds are left out.
func Tally(p product.Product, shoulds []GroupShould, counts []store.StatusCount) FleetStatus {
	out := FleetStatus{ProductID: p.ID, Product: p.Name, Groups: make([]GroupStatus, len(shoulds))}
	if len(counts) > MaxMatrixRows {
		counts, out.Truncated = counts[:MaxMatrixRows], true
	}
	index := make(map[product.GroupID]int, len(shoulds))
	for i, g := range shoulds {
		index[g.GroupID] = i
		out.Groups[i] = GroupStatus{GroupID: g.GroupID, Group: g.Group, Should: g.Should, Rows: []StatusRow{}}
	}
	for _, c := range counts {
		i, ok := index[c.GroupID]
		if !ok {
			continue
		}
		g := &out.Groups[i]
		should := g.Should.Targets()
		// The store splits what the devices run by refusal and update state: one row each.
		if n := len(g.Rows); n == 0 || g.Rows[n-1].Does != c.Running {
			g.Rows = append(g.Rows, StatusRow{Does: c.Running, Matches: should.Matches(c.Running)})
		}
		var n StateCounts
		n.Devices, n.Never = c.Devices, c.Devices-c.Attested
		switch device.Classify(should, true, c.Refusal, c.Running, c.UpdateState) {
		case device.StateRefused:
			n.Refused = c.Attested
		case device.StateCurrent:
			n.Current = c.Attested
		case device.StateFailed:
			n.Failed = c.Attested
		default:
			n.Pending = c.Attested
		}
		g.Rows[len(g.Rows)-1].Counts.add(n)
		g.Totals.add(n)
		out.Totals.add(n)
	}
	return out
}

// DeviceStatuses returns a page of the devices f selects (see StateFilter), each with its
// status: its own should (with its floors, as the director assigns it), what it runs, its
// state against its group's should, its update state, last contact and last attestation.
func (s *Service) DeviceStatuses(ctx context.Context, t tenant.ID, f device.Filter, p store.Page) ([]DeviceStatus, error) {
	cat, err := s.cfg.Repo.Catalog(ctx, t)
	if err != nil {
		return nil, err
	}
	var rows []store.DeviceRow
	var in groupInputs
	err = s.cfg.Store.InReadTx(ctx, func(tx store.Tx) error {
		tt, err := tx.ForTenant(t)
		if err != nil {
			return err
		}
		if rows, err = tt.Devices().ListStatus(ctx, f, p); err != nil {
			return err
		}
		in, err = readPageGroups(ctx, tt, rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	groups := map[product.GroupID]product.Group{}
	for _, g := range in.groups {
		groups[g.ID] = g
	}
	shoulds := map[product.GroupID]Should{}
	for _, g := range in.groups {
		sh, err := s.should(ctx, assign.Input{Device: groupDevice(t, g), Group: g, Deployment: in.deployments[g.ID], Catalog: cat})
		if err != nil {
			return nil, err
		}
		shoulds[g.ID] = sh
	}
	out := make([]DeviceStatus, 0, len(rows))
	for _, r := range rows {
		st, err := s.deviceStatus(ctx, r, groups, in.deployments, shoulds, cat)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// readPageGroups reads the groups of a page's devices with their current deployments.
func readPageGroups(ctx context.Context, tt store.TenantTx, rows []store.DeviceRow) (groupInputs, error) {
	in := groupInputs{deployments: map[product.GroupID]*device.Deployment{}}
	seen := map[product.GroupID]product.ID{}
	for _, r := range rows {
		if r.Device.GroupID != "" {
			seen[r.Device.GroupID] = r.Device.ProductID
		}
	}
	for _, gid := range slices.Sorted(maps.Keys(seen)) {
		g, err := tt.Groups().Get(ctx, seen[gid], gid)
		if err != nil {
			return in, err
		}
		in.groups = append(in.groups, g)
		d, err := tt.Deployments().Current(ctx, g.ProductID, gid)
		switch {
		case err == nil:
			in.deployments[gid] = &d
		case !errors.Is(err, store.ErrNotFound):
			return in, err
		}
	}
	return in, nil
}

func (s *Service) deviceStatus(ctx context.Context, r store.DeviceRow, groups map[product.GroupID]product.Group,
	deps map[product.GroupID]*device.Deployment, shoulds map[product.GroupID]Should, cat *repo.Catalog) (DeviceStatus, error) {
	d := r.Device
	st := DeviceStatus{ID: d.ID, ProductID: d.ProductID, GroupID: d.GroupID, Blocked: d.Blocked, Does: r.Running,
		UpdateState: r.UpdateState, UpdateStateAt: r.UpdateStateAt, LastSeenAt: r.LastSeenAt}
	if a := d.Attestation; a != nil {
		st.Attestation = &AttestationOutcome{At: a.At, Refusal: a.Refusal, Detail: a.Detail}
	}
	g, ok := groups[d.GroupID]
	if !ok {
		// Outside any group the director assigns nothing.
		st.Should = Should{OSReason: "in no device group", AppReason: "in no device group", Policy: s.policyName()}
		st.State = device.Classify(device.Should{}, d.Attestation != nil, refusalOf(d), r.Running, r.UpdateState)
		return st, nil
	}
	own, err := s.should(ctx, assign.Input{Device: d, Group: g, Deployment: deps[g.ID], Catalog: cat})
	if err != nil {
		return st, err
	}
	group := shoulds[g.ID]
	st.Should = own
	if own.Targets() != group.Targets() {
		st.OwnShould, st.GroupShould = true, &group
	}
	st.State = device.Classify(group.Targets(), d.Attestation != nil, refusalOf(d), r.Running, r.UpdateState)
	return st, nil
}

func refusalOf(d device.Device) string {
	if d.Attestation == nil {
		return ""
	}
	return d.Attestation.Refusal
}
