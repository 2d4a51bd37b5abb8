package storetest

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// The fleet-status cases (issue 11): Filter.State and CountStatus select and count by the
// rules of device.Classify, in SQL, given what each group should run.
var fleetStatusTests = []test{
	{"ListByStateFollowsClassify", testStatusList},
	{"CountStatusSplitsEachCount", testStatusCount},
	{"RefusesUnknownStateOrMissingShould", testStatusRefused},
	{"ListStatusAddsFleetColumns", testStatusListRows},
	{"TenantIsolation", testIsolationStatus},
}

// setUpdateState writes the device's latest update state as the device-API writer of
// schema 13 does, with a direct UPDATE: the conformance cases need the column, whichever
// Go API writes it. The stores of this module expose their database with SQL().
func (h *harness) setUpdateState(d device.Device, state string) {
	h.t.Helper()
	db, ok := h.s.(interface{ SQL() *sql.DB })
	if !ok {
		h.t.Fatalf("store %T has no SQL(): cannot set update_state", h.s)
	}
	if _, err := db.SQL().ExecContext(h.ctx(), `UPDATE devices SET update_state = $1, update_state_at = $2 WHERE id = $3`,
		state, h.tick().UTC(), d.ID); err != nil {
		h.t.Fatalf("set update_state of %s: %v", d.ID, err)
	}
}

func (h *harness) countStatus(tid tenant.ID, f device.Filter, n int) ([]store.StatusCount, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]store.StatusCount, error) {
		return tt.Devices().CountStatus(ctx, f, n)
	})
}

// statusFleet is a product with two groups that should run different things, a device in
// every state, and devices outside the product that no state of it may select.
type statusFleet struct {
	a      tenant.Tenant
	p      product.Product
	g, g2  product.Group
	should map[product.GroupID]device.Should
	// devices of the product, and the state Classify gives each
	devices []device.Device
	states  []string
}

func newStatusFleet(h *harness) *statusFleet {
	f := &statusFleet{a: h.tenant("A")}
	f.p = h.product(f.a.ID, "DW100")
	f.g, f.g2 = h.group(f.a.ID, f.p.ID, "Production"), h.group(f.a.ID, f.p.ID, "FieldTest")
	q := h.product(f.a.ID, "DW200")
	gq := h.group(f.a.ID, q.ID, "Production")
	// g should run osB and appY; g2 osA and whatever app (it takes OS updates only).
	f.should = map[product.GroupID]device.Should{
		f.g.ID:  {OSTarget: osB.Path, AppTarget: appY.Path},
		f.g2.ID: {OSTarget: osA.Path},
	}
	add := func(d device.Device, update, want string) {
		h.t.Helper()
		if update != "" {
			h.setUpdateState(d, update)
		}
		f.devices, f.states = append(f.devices, d), append(f.states, want)
	}
	add(h.attest(h.placed(f.a.ID, f.g), "", osB, appY), "committed", device.StateCurrent)
	add(h.attest(h.placed(f.a.ID, f.g), "", osA, appX), "", device.StatePending)
	add(h.attest(h.placed(f.a.ID, f.g), "", osA, appX), "failed", device.StateFailed)
	// Running what it should wins over an older failure.
	add(h.attest(h.placed(f.a.ID, f.g), "", osB, appY), "rolled_back", device.StateCurrent)
	add(h.placed(f.a.ID, f.g), "", device.StateNever)
	// A refusal wins over what the last success showed, and over a failed update.
	add(h.attest(h.attest(h.placed(f.a.ID, f.g), "", osB, appY), device.RefusedBlocked, osB, appY), "failed", device.StateRefused)
	add(h.attest(h.placed(f.a.ID, f.g), "", osB, appX), "downloading", device.StatePending)
	add(h.attest(h.placed(f.a.ID, f.g2), "", osA, appX), "", device.StateCurrent)
	add(h.attest(h.placed(f.a.ID, f.g2), "", osB, appY), "rolled_back", device.StateFailed)
	add(h.attest(h.placed(f.a.ID, f.g2), device.RefusedUnknownImage), "", device.StateRefused)
	// Outside the product (and outside any group): never selected by the product's states.
	h.attest(h.placed(f.a.ID, gq), "", osA, appX)
	h.setUpdateState(h.attest(h.claimed(f.a.ID), "", osA), "failed")
	h.claimed(f.a.ID)
	for i, d := range f.devices {
		got, err := h.getTenantDevice(f.a.ID, d.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		f.devices[i] = got
	}
	return f
}

// testStatusList: each state lists exactly the product's devices Classify puts in it, in ID
// order and across pages, and together the states list every device of the product.
func testStatusList(h *harness) {
	f := newStatusFleet(h)
	seen := 0
	for _, state := range device.States {
		var want []device.Device
		for i, d := range f.devices {
			if f.states[i] == state {
				want = append(want, d)
			}
		}
		seen += len(want)
		filter := device.Filter{ProductID: f.p.ID, State: state, Should: f.should}
		call := fmt.Sprintf("A: Devices().List(State: %s)", state)
		checkList(h, call, want, func(d device.Device) string { return string(d.ID) },
			func(pg store.Page) ([]device.Device, error) { return h.listDevices(f.a.ID, filter, pg) })
		// One group: the other's should is not needed.
		filter = device.Filter{ProductID: f.p.ID, GroupID: f.g2.ID, State: state, Should: map[product.GroupID]device.Should{f.g2.ID: f.should[f.g2.ID]}}
		var want2 []device.Device
		for _, d := range want {
			if d.GroupID == f.g2.ID {
				want2 = append(want2, d)
			}
		}
		got, err := h.listDevices(f.a.ID, filter, store.Page{})
		if len(want2) == 0 {
			wantEmpty(h.t, call+" in "+f.g2.Name, got, err)
		} else {
			wantEqual(h.t, call+" in "+f.g2.Name, got, err, want2)
		}
	}
	if seen != len(f.devices) {
		h.t.Errorf("states cover %d devices, want %d", seen, len(f.devices))
	}
}

// testStatusCount: CountStatus splits CountRunning's counts by never, refused and failed
// update, and the states derived from them add up to what the state filter lists.
func testStatusCount(h *harness) {
	f := newStatusFleet(h)
	got, err := h.countStatus(f.a.ID, device.Filter{ProductID: f.p.ID}, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	running, err := h.countRunning(f.a.ID, device.Filter{ProductID: f.p.ID}, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	perRunning := map[store.RunningCount]int{} // CountRunning's key, devices left 0
	for _, c := range running {
		key := c
		key.Devices = 0
		perRunning[key] = c.Devices
	}
	states := map[string]int{}
	for _, c := range got {
		if c.ProductID != f.p.ID || c.Attested > c.Devices || c.Refusal != "" && c.Attested != c.Devices {
			h.t.Errorf("CountStatus row %+v: want the product's, attested at most all, and a refusal only of attested devices", c)
		}
		perRunning[store.RunningCount{ProductID: c.ProductID, GroupID: c.GroupID, Running: c.Running}] -= c.Devices
		states[device.StateNever] += c.Devices - c.Attested
		states[device.Classify(f.should[c.GroupID], true, c.Refusal, c.Running, c.UpdateState)] += c.Attested
	}
	for k, n := range perRunning {
		if n != 0 {
			h.t.Errorf("CountStatus counts %d devices fewer than CountRunning for %+v", n, k)
		}
	}
	want := map[string]int{}
	for _, s := range f.states {
		want[s]++
	}
	for _, s := range device.States {
		if states[s] != want[s] {
			h.t.Errorf("states from CountStatus: %s = %d, want %d", s, states[s], want[s])
		}
	}
	one, err := h.countStatus(f.a.ID, device.Filter{ProductID: f.p.ID}, 2)
	wantEqual(h.t, "Devices().CountStatus(limit 2)", one, err, got[:2])
}

// testStatusRefused: a misspelt state, or a state without the groups' should, is an error,
// not an empty list that reads as "no such devices".
func testStatusRefused(h *harness) {
	f := newStatusFleet(h)
	for _, filter := range []device.Filter{
		{ProductID: f.p.ID, State: "Pending", Should: f.should},
		{ProductID: f.p.ID, State: "ok", Should: f.should},
		{ProductID: f.p.ID, State: device.StateFailed},
		{ProductID: f.p.ID, State: device.StateCurrent, Should: map[product.GroupID]device.Should{}},
	} {
		if _, err := h.countStatus(f.a.ID, device.Filter{}, 0); err == nil {
			h.t.Error("Devices().CountStatus without a product error = nil, want an error")
		}
		if _, err := h.listDevices(f.a.ID, filter, store.Page{}); err == nil {
			h.t.Errorf("Devices().List(State: %q, %d groups) error = nil, want an error", filter.State, len(filter.Should))
		}
		if _, err := h.countStatus(f.a.ID, filter, 0); err == nil {
			h.t.Errorf("Devices().CountStatus(State: %q, %d groups) error = nil, want an error", filter.State, len(filter.Should))
		}
	}
}

// testIsolationStatus: B, given A's product and group IDs and their should, lists and counts
// none of A's devices in any state (rule 3).
func testIsolationStatus(h *harness) {
	f := newStatusFleet(h)
	b := h.tenant("B")
	for _, state := range append([]string{""}, device.States...) {
		filter := device.Filter{ProductID: f.p.ID, State: state}
		if state != "" {
			filter.Should = f.should
		}
		list, err := h.listDevices(b.ID, filter, store.Page{})
		wantEmpty(h.t, fmt.Sprintf("B: Devices().List(State: %q)", state), list, err)
		counts, err := h.countStatus(b.ID, filter, 0)
		wantEmpty(h.t, fmt.Sprintf("B: Devices().CountStatus(State: %q)", state), counts, err)
	}
}

// testStatusListRows: ListStatus lists what List does, each device with what it runs by its
// last success (kept through a refusal), its latest update state and its last contact.
func testStatusListRows(h *harness) {
	f := newStatusFleet(h)
	seen := h.tick().UTC()
	db := h.s.(interface{ SQL() *sql.DB }).SQL()
	if _, err := db.ExecContext(h.ctx(), `UPDATE devices SET last_seen_at = $1 WHERE id = $2`, seen, f.devices[5].ID); err != nil {
		h.t.Fatal(err)
	}
	for _, filter := range []device.Filter{{ProductID: f.p.ID}, {ProductID: f.p.ID, State: device.StateRefused, Should: f.should}} {
		list, err := h.listDevices(f.a.ID, filter, store.Page{})
		if err != nil {
			h.t.Fatal(err)
		}
		rows, err := readIn(h, f.a.ID, func(ctx context.Context, tt store.TenantTx) ([]store.DeviceRow, error) {
			return tt.Devices().ListStatus(ctx, filter, store.Page{})
		})
		if err != nil {
			h.t.Fatal(err)
		}
		var devices []device.Device
		for _, r := range rows {
			devices = append(devices, r.Device)
		}
		wantEqual(h.t, fmt.Sprintf("ListStatus(%+v) devices", filter.State), devices, nil, list)
	}
	rows, err := readIn(h, f.a.ID, func(ctx context.Context, tt store.TenantTx) ([]store.DeviceRow, error) {
		return tt.Devices().ListStatus(ctx, device.Filter{ProductID: f.p.ID, State: device.StateRefused, Should: f.should}, store.Page{Limit: 1})
	})
	if err != nil || len(rows) != 1 {
		h.t.Fatalf("ListStatus(refused, limit 1) = %d rows, %v; want 1", len(rows), err)
	}
	r := rows[0]
	if r.Device.ID != f.devices[5].ID || r.Running != running(osB, appY) || r.UpdateState != "failed" ||
		r.UpdateStateAt == nil || r.LastSeenAt == nil || !r.LastSeenAt.Equal(seen) {
		h.t.Errorf("ListStatus(refused)[0] = %+v, want device 5 running osB appY, update failed, last seen %s", r, seen)
	}
}
