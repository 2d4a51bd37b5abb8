package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var deviceTests = []test{
	{"RegisterGet", testDeviceRegisterGet},
	{"RegisterStoresUnclaimed", testDeviceRegisterUnclaimed},
	{"Claim", testDeviceClaim},
	{"ConcurrentClaimOneWins", testDeviceConcurrentClaim},
	{"Update", testDeviceUpdate},
	{"UpdateNeverChangesTenant", testDeviceUpdateKeepsTenant},
	{"AttestedStoresWhatUpdateAndSeenDo", testDeviceAttested},
	{"AttestedRefusesStaleAndOtherChanges", testDeviceAttestedRefused},
	{"JSONRoundTrips", testDeviceJSON},
	{"TenantGetUpdate", testTenantDeviceGetUpdate},
	{"TenantUpdateGroupMustExist", testTenantDeviceGroupMustExist},
	{"TenantListOrdersByIDFiltersAndPages", testTenantDeviceList},
	{"CountInGroup", testDeviceCountInGroup},
}

var deviceCATests = []test{
	{"PlatformCAPutGet", testPlatformCA},
	{"CreateGetUpdate", testDeviceCACreateGetUpdate},
	{"ListOldestFirst", testDeviceCAList},
	{"PendingCAsAcrossTenants", testPendingCAs},
}

var certificateTests = []test{
	{"RecordGet", testCertificateRecordGet},
	{"SerialUniqueAcrossTenants", testCertificateSerialUnique},
	{"ListForDeviceNewestFirst", testCertificateListForDevice},
}

var deploymentTests = []test{
	{"CreateCurrentList", testDeploymentCurrentList},
	{"CurrentBreaksTiesByID", testDeploymentCurrentTie},
	{"CreateNeedsGroupAndUniqueID", testDeploymentCreateRefused},
	{"GetAndReverts", testDeploymentGetReverts},
}

// newDevice returns an unregistered device whose ID ascends with the harness clock.
func (h *harness) newDevice() device.Device {
	at := h.tick()
	var r [16]byte
	rand.Read(r[:])
	id := strings.TrimPrefix(ident.New("dev", at), "dev_") + hex.EncodeToString(r[:])
	return device.Device{
		ID:           device.ID(id),
		PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\n" + id + "\n-----END PUBLIC KEY-----\n",
		RegisteredAt: at,
		Floors:       map[string]uint32{},
		Version:      1,
	}
}

// device registers a new device in its own transaction.
func (h *harness) device() device.Device {
	h.t.Helper()
	d := h.newDevice()
	h.must("Devices().Register", func(tx store.Tx) error { return tx.Devices().Register(h.ctx(), d) })
	return d
}

func (h *harness) claimDevice(id device.ID, tid tenant.ID, at time.Time) (device.Device, error) {
	return read(h, func(ctx context.Context, tx store.Tx) (device.Device, error) {
		return tx.Devices().Claim(ctx, id, tid, at)
	})
}

// claimed registers a device and claims it for tenant tid.
func (h *harness) claimed(tid tenant.ID) device.Device {
	h.t.Helper()
	d := h.device()
	got, err := h.claimDevice(d.ID, tid, h.tick())
	if err != nil {
		h.t.Fatalf("Devices().Claim(%s, %s) = %v, want nil", d.ID, tid, err)
	}
	return got
}

// placed registers a device, claims it for tenant tid and puts it into group g.
func (h *harness) placed(tid tenant.ID, g product.Group) device.Device {
	h.t.Helper()
	d := h.claimed(tid)
	d.ProductID, d.GroupID, d.Version = g.ProductID, g.ID, d.Version+1
	h.mustIn("Devices().Update(into "+g.Name+")", tid, func(tt store.TenantTx) error { return tt.Devices().Update(h.ctx(), d) })
	return d
}

func (h *harness) getDevice(id device.ID) (device.Device, error) {
	return read(h, func(ctx context.Context, tx store.Tx) (device.Device, error) { return tx.Devices().Get(ctx, id) })
}

func (h *harness) getTenantDevice(tid tenant.ID, id device.ID) (device.Device, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (device.Device, error) { return tt.Devices().Get(ctx, id) })
}

func (h *harness) listDevices(tid tenant.ID, f device.Filter, p store.Page) ([]device.Device, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]device.Device, error) {
		return tt.Devices().List(ctx, f, p)
	})
}

func (h *harness) updateDevice(d device.Device) error {
	return h.tx(func(tx store.Tx) error { return tx.Devices().Update(h.ctx(), d) })
}

func (h *harness) updateTenantDevice(tid tenant.ID, d device.Device) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.Devices().Update(h.ctx(), d) })
}

func (h *harness) countInGroup(tid tenant.ID, pid product.ID, gid product.GroupID) (int, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (int, error) {
		return tt.Devices().CountInGroup(ctx, pid, gid)
	})
}

func testDeviceRegisterGet(h *harness) {
	d := h.newDevice()
	d.Floors = nil // stored as no floors, read back as an empty map
	h.must("Devices().Register", func(tx store.Tx) error { return tx.Devices().Register(h.ctx(), d) })
	want := d
	want.Floors = map[string]uint32{}
	got, err := h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get", got, err, want)

	_, err = h.getDevice(h.newDevice().ID)
	wantErr(h.t, "Devices().Get(missing)", err, store.ErrNotFound)

	again := h.newDevice()
	again.ID = d.ID
	err = h.tx(func(tx store.Tx) error { return tx.Devices().Register(h.ctx(), again) })
	wantErr(h.t, "Devices().Register(registered ID)", err, store.ErrConflict)
	got, err = h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get after a second Register", got, err, want)
}

// testDeviceRegisterUnclaimed: registration cannot put a device into a tenant or a group;
// only Claim does.
func testDeviceRegisterUnclaimed(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.newDevice()
	at := h.tick()
	d.TenantID, d.ClaimedAt, d.ProductID, d.GroupID, d.Version = a.ID, &at, p.ID, g.ID, 7
	d.Blocked, d.Development = true, true
	h.must("Devices().Register(naming a tenant)", func(tx store.Tx) error { return tx.Devices().Register(h.ctx(), d) })
	want := d
	want.TenantID, want.ClaimedAt, want.ProductID, want.GroupID, want.Version = "", nil, "", "", 1
	got, err := h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get", got, err, want)
	_, err = h.getTenantDevice(a.ID, d.ID)
	wantErr(h.t, "A: Devices().Get(registered naming A)", err, store.ErrNotFound)
}

func testDeviceClaim(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	d := h.device()
	at := h.tick()
	got, err := h.claimDevice(d.ID, a.ID, at)
	want := d
	want.TenantID, want.ClaimedAt, want.Version = a.ID, &at, 2
	wantEqual(h.t, "Devices().Claim(A)", got, err, want)

	got, err = h.claimDevice(d.ID, a.ID, h.tick())
	wantEqual(h.t, "Devices().Claim(A) again", got, err, want)
	_, err = h.claimDevice(d.ID, b.ID, h.tick())
	wantErr(h.t, "Devices().Claim(B) of A's device", err, store.ErrConflict)
	_, err = h.claimDevice(h.newDevice().ID, a.ID, h.tick())
	wantErr(h.t, "Devices().Claim(unregistered)", err, store.ErrNotFound)

	got, err = h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get after the claims", got, err, want)
	got, err = h.getTenantDevice(a.ID, d.ID)
	wantEqual(h.t, "A: Devices().Get", got, err, want)
}

// testDeviceConcurrentClaim: of several tenants claiming one device at once, exactly one
// gets it and every other one ErrConflict.
func testDeviceConcurrentClaim(h *harness) {
	const n = 8
	tenants := make([]tenant.Tenant, n)
	for i := range tenants {
		tenants[i] = h.tenant(fmt.Sprintf("T%d", i))
	}
	d := h.device()
	at := h.tick()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = h.claimDevice(d.ID, tenants[i].ID, at) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			h.t.Errorf("concurrent Devices().Claim by tenants %d and %d both = nil, want one winner", winner, i)
		default:
			wantErr(h.t, fmt.Sprintf("concurrent Devices().Claim by tenant %d", i), err, store.ErrConflict)
		}
	}
	if winner < 0 {
		h.t.Fatalf("concurrent Devices().Claim by %d tenants: none succeeded: %v", n, errs)
	}
	want := d
	want.TenantID, want.ClaimedAt, want.Version = tenants[winner].ID, &at, 2
	got, err := h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get after the race", got, err, want)
}

func testDeviceUpdate(h *harness) {
	d := h.device()
	v2 := d
	v2.Blocked, v2.Floors, v2.Version = true, map[string]uint32{"os/moat": 3}, 2
	if err := h.updateDevice(v2); err != nil {
		h.t.Fatalf("Devices().Update(version 2) = %v, want nil", err)
	}
	got, err := h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get after Update", got, err, v2)

	stale := d
	stale.Development, stale.Version = true, 2
	wantErr(h.t, "Devices().Update(stale version)", h.updateDevice(stale), store.ErrStale)
	skip := v2
	skip.Version = 4
	wantErr(h.t, "Devices().Update(version 4 over 2)", h.updateDevice(skip), store.ErrStale)
	got, err = h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get after stale Updates", got, err, v2)

	missing := h.newDevice()
	missing.Version = 2
	wantErr(h.t, "Devices().Update(unregistered)", h.updateDevice(missing), store.ErrNotFound)
}

// testDeviceUpdateKeepsTenant: neither Update moves a device between tenants, claims an
// unclaimed one or releases a claimed one.
func testDeviceUpdateKeepsTenant(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	c := h.claimed(a.ID)
	u := h.device()

	for i, tid := range []tenant.ID{b.ID, ""} {
		x := c
		at := h.tick()
		x.TenantID, x.ClaimedAt, x.Version = tid, &at, c.Version+1
		if i == 0 {
			x.ClaimedAt = nil
		}
		if err := h.updateDevice(x); err != nil {
			h.t.Fatalf("Devices().Update(TenantID %q) = %v, want nil", tid, err)
		}
		want := c
		want.Version = x.Version
		got, err := h.getDevice(c.ID)
		wantEqual(h.t, fmt.Sprintf("Devices().Get after Update(TenantID %q)", tid), got, err, want)
		c = want
	}
	x := c
	x.TenantID, x.Version = b.ID, c.Version+1
	if err := h.updateTenantDevice(a.ID, x); err != nil {
		h.t.Fatalf("A: Devices().Update(TenantID B) = %v, want nil", err)
	}
	c.Version = x.Version
	got, err := h.getTenantDevice(a.ID, c.ID)
	wantEqual(h.t, "A: Devices().Get after Update(TenantID B)", got, err, c)

	claim := u
	at := h.tick()
	claim.TenantID, claim.ClaimedAt, claim.Version = a.ID, &at, 2
	if err := h.updateDevice(claim); err != nil {
		h.t.Fatalf("Devices().Update(unclaimed, TenantID A) = %v, want nil", err)
	}
	u.Version = 2
	got, err = h.getDevice(u.ID)
	wantEqual(h.t, "Devices().Get(unclaimed) after Update naming A", got, err, u)
	// Still claimable.
	_, err = h.claimDevice(u.ID, b.ID, h.tick())
	if err != nil {
		h.t.Errorf("Devices().Claim(B) after an Update naming A = %v, want nil", err)
	}
}

func testDeviceJSON(h *harness) {
	d := h.device()
	v2 := d
	v2.Floors = map[string]uint32{"os/moat": 7, "apps/dishwasher": 4_000_000_000}
	v2.Attestation = &device.Attestation{
		At: h.tick(), Serial: "0a1b2c", DevelopmentMode: true,
		Images: []device.Measurement{
			{Kind: "os", Path: "os/moat/1.2.3", SHA256: strings.Repeat("ab", 32), Version: "1.2.3", SecurityVersion: 7},
			{Kind: "app", Path: "apps/dishwasher/2.0.0", SHA256: strings.Repeat("cd", 32), Version: "2.0.0", SecurityVersion: 4_000_000_000},
		},
	}
	v2.Certificate = &device.Current{Serial: "0a1b2c", IssuedAt: h.tick(), NotAfter: h.tick().Add(24 * time.Hour)}
	v2.Version = 2
	if err := h.updateDevice(v2); err != nil {
		h.t.Fatalf("Devices().Update(floors, attestation) = %v, want nil", err)
	}
	got, err := h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get(floors, attestation)", got, err, v2)

	v3 := v2
	v3.Floors = nil
	v3.Attestation = &device.Attestation{At: h.tick(), Refusal: device.RefusedBelowFloor, Detail: "os/moat 6 < 7"}
	v3.Version = 3
	if err := h.updateDevice(v3); err != nil {
		h.t.Fatalf("Devices().Update(nil floors, refusal without images) = %v, want nil", err)
	}
	want := v3
	want.Floors = map[string]uint32{}
	att := *v3.Attestation
	att.Images = []device.Measurement{}
	want.Attestation = &att
	got, err = h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get(nil floors, refusal without images)", got, err, want)

	v4 := want
	v4.Attestation, v4.Certificate, v4.Version = nil, nil, 4
	if err := h.updateDevice(v4); err != nil {
		h.t.Fatalf("Devices().Update(no attestation) = %v, want nil", err)
	}
	got, err = h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get(no attestation)", got, err, v4)
}

func testTenantDeviceGetUpdate(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g, g2 := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development")
	d := h.claimed(a.ID)
	got, err := h.getTenantDevice(a.ID, d.ID)
	wantEqual(h.t, "A: Devices().Get", got, err, d)
	_, err = h.getTenantDevice(a.ID, h.newDevice().ID)
	wantErr(h.t, "A: Devices().Get(unregistered)", err, store.ErrNotFound)

	v := d
	v.ProductID, v.GroupID, v.Blocked, v.Development, v.Version = p.ID, g.ID, true, true, d.Version+1
	if err := h.updateTenantDevice(a.ID, v); err != nil {
		h.t.Fatalf("A: Devices().Update(into Production) = %v, want nil", err)
	}
	got, err = h.getTenantDevice(a.ID, d.ID)
	wantEqual(h.t, "A: Devices().Get after Update", got, err, v)

	stale := d
	stale.ProductID, stale.GroupID, stale.Version = p.ID, g2.ID, d.Version+1
	wantErr(h.t, "A: Devices().Update(stale version)", h.updateTenantDevice(a.ID, stale), store.ErrStale)
	missing := h.newDevice()
	missing.Version = 2
	wantErr(h.t, "A: Devices().Update(unregistered)", h.updateTenantDevice(a.ID, missing), store.ErrNotFound)

	moved := v
	moved.GroupID, moved.Blocked, moved.Version = g2.ID, false, v.Version+1
	if err := h.updateTenantDevice(a.ID, moved); err != nil {
		h.t.Fatalf("A: Devices().Update(into Development) = %v, want nil", err)
	}
	out := moved
	out.ProductID, out.GroupID, out.Version = "", "", moved.Version+1
	if err := h.updateTenantDevice(a.ID, out); err != nil {
		h.t.Fatalf("A: Devices().Update(out of every group) = %v, want nil", err)
	}
	got, err = h.getTenantDevice(a.ID, d.ID)
	wantEqual(h.t, "A: Devices().Get after leaving its group", got, err, out)
}

// testTenantDeviceGroupMustExist: a device's group is one of its own tenant's groups.
func testTenantDeviceGroupMustExist(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	g := h.group(a.ID, p.ID, "Production")
	bp := h.product(b.ID, "DW100")
	bg := h.group(b.ID, bp.ID, "Production")
	d := h.claimed(a.ID)

	for _, c := range []struct {
		name string
		pid  product.ID
		gid  product.GroupID
	}{
		{"missing group", p.ID, product.GroupID(ident.New(product.GroupIDPrefix, h.tick()))},
		{"group under another product", q.ID, g.ID},
		{"B's group", bp.ID, bg.ID},
	} {
		x := d
		x.ProductID, x.GroupID, x.Version = c.pid, c.gid, d.Version+1
		if err := h.updateTenantDevice(a.ID, x); err == nil {
			h.t.Errorf("A: Devices().Update(into %s) = nil, want an error", c.name)
		}
		if err := h.updateDevice(x); err == nil {
			h.t.Errorf("Devices().Update(into %s) = nil, want an error", c.name)
		}
	}
	got, err := h.getDevice(d.ID)
	wantEqual(h.t, "Devices().Get after refused Updates", got, err, d)
	n, err := h.countInGroup(b.ID, bp.ID, bg.ID)
	wantEqual(h.t, "B: Devices().CountInGroup(Production)", n, err, 0)

	// An unclaimed device has no tenant, so no group.
	u := h.device()
	u.ProductID, u.GroupID, u.Version = p.ID, g.ID, 2
	if err := h.updateDevice(u); err == nil {
		h.t.Errorf("Devices().Update(unclaimed device into A's group) = nil, want an error")
	}
}

func testTenantDeviceList(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	gp, gp2, gq := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development"), h.group(a.ID, q.ID, "Production")

	// Registered in ID order, claimed in reverse: the list must order by ID.
	regs := make([]device.Device, 7)
	for i := range regs {
		regs[i] = h.device()
	}
	h.device()      // unclaimed
	h.claimed(b.ID) // another tenant's
	want := make([]device.Device, len(regs))
	for i := len(regs) - 1; i >= 0; i-- {
		d, err := h.claimDevice(regs[i].ID, a.ID, h.tick())
		if err != nil {
			h.t.Fatalf("Devices().Claim = %v", err)
		}
		want[i] = d
	}
	place := func(i int, g product.Group) {
		d := want[i]
		d.ProductID, d.GroupID, d.Version = g.ProductID, g.ID, d.Version+1
		if err := h.updateTenantDevice(a.ID, d); err != nil {
			h.t.Fatalf("Devices().Update = %v", err)
		}
		want[i] = d
	}
	place(0, gp)
	place(2, gp)
	place(3, gp2)
	place(4, gq)
	place(6, gp)

	pick := func(is ...int) []device.Device {
		out := []device.Device{}
		for _, i := range is {
			out = append(out, want[i])
		}
		return out
	}
	id := func(d device.Device) string { return string(d.ID) }
	for _, c := range []struct {
		f    device.Filter
		want []device.Device
	}{
		{device.Filter{}, want},
		{device.Filter{ProductID: p.ID}, pick(0, 2, 3, 6)},
		{device.Filter{ProductID: p.ID, GroupID: gp.ID}, pick(0, 2, 6)},
		{device.Filter{GroupID: gp2.ID}, pick(3)},
		{device.Filter{ProductID: q.ID, GroupID: gq.ID}, pick(4)},
		{device.Filter{ProductID: q.ID, GroupID: gp.ID}, pick()},
		{device.Filter{ProductID: product.ID(ident.New(product.IDPrefix, h.tick()))}, pick()},
	} {
		call := fmt.Sprintf("A: Devices().List(%+v)", c.f)
		if len(c.want) == 0 {
			list, err := h.listDevices(a.ID, c.f, store.Page{})
			wantEmpty(h.t, call, list, err)
			continue
		}
		checkList(h, call, c.want, id, func(pg store.Page) ([]device.Device, error) { return h.listDevices(a.ID, c.f, pg) })
	}
}

func testDeviceCountInGroup(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g, g2 := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development")
	h.placed(a.ID, g)
	h.placed(a.ID, g)
	h.placed(a.ID, g2)
	h.claimed(a.ID)
	for _, c := range []struct {
		g    product.Group
		want int
	}{{g, 2}, {g2, 1}} {
		n, err := h.countInGroup(a.ID, p.ID, c.g.ID)
		wantEqual(h.t, "Devices().CountInGroup("+c.g.Name+")", n, err, c.want)
	}
	n, err := h.countInGroup(a.ID, product.ID(ident.New(product.IDPrefix, h.tick())), g.ID)
	wantEqual(h.t, "Devices().CountInGroup(group under another product ID)", n, err, 0)
}

// Deleting a group or product that still has devices is ErrInUse and changes nothing.

func testGroupDeleteInUse(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.placed(a.ID, g)
	for _, v := range []int64{0, 1} {
		err := h.in(a.ID, func(tt store.TenantTx) error { return tt.Groups().Delete(h.ctx(), p.ID, g.ID, v) })
		wantErr(h.t, fmt.Sprintf("Groups().Delete(group with a device, version %d)", v), err, store.ErrInUse)
	}
	got, err := h.getGroup(a.ID, p.ID, g.ID)
	wantEqual(h.t, "Groups().Get after refused Delete", got, err, g)
	gotD, err := h.getTenantDevice(a.ID, d.ID)
	wantEqual(h.t, "Devices().Get after refused Delete", gotD, err, d)

	out := d
	out.ProductID, out.GroupID, out.Version = "", "", d.Version+1
	h.mustIn("Devices().Update(out of the group)", a.ID, func(tt store.TenantTx) error { return tt.Devices().Update(h.ctx(), out) })
	h.mustIn("Groups().Delete(emptied group)", a.ID, func(tt store.TenantTx) error { return tt.Groups().Delete(h.ctx(), p.ID, g.ID, 1) })
}

func testProductDeleteInUse(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	empty, g := h.group(a.ID, p.ID, "Development"), h.group(a.ID, p.ID, "Production")
	d := h.placed(a.ID, g)
	for _, v := range []int64{0, 1} {
		err := h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Delete(h.ctx(), p.ID, v) })
		wantErr(h.t, fmt.Sprintf("Products().Delete(product with a device, version %d)", v), err, store.ErrInUse)
	}
	gotP, err := h.getProduct(a.ID, p.ID)
	wantEqual(h.t, "Products().Get after refused Delete", gotP, err, p)
	for _, x := range []product.Group{empty, g} {
		got, err := h.getGroup(a.ID, p.ID, x.ID)
		wantEqual(h.t, "Groups().Get("+x.Name+") after refused Products().Delete", got, err, x)
	}

	out := d
	out.ProductID, out.GroupID, out.Version = "", "", d.Version+1
	h.mustIn("Devices().Update(out of the group)", a.ID, func(tt store.TenantTx) error { return tt.Devices().Update(h.ctx(), out) })
	h.mustIn("Products().Delete(emptied product)", a.ID, func(tt store.TenantTx) error { return tt.Products().Delete(h.ctx(), p.ID, 1) })
	_, err = h.getGroup(a.ID, p.ID, g.ID)
	wantErr(h.t, "Groups().Get after Products().Delete", err, store.ErrNotFound)
}

// testGroupDeleteRemovesDeployments recreates the deleted group under its old ID: it must
// start without deployments.
func testGroupDeleteRemovesDeployments(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g, keep := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development")
	h.deployment(a.ID, g, "apps/dishwasher/1.0.0")
	h.deployment(a.ID, g, "apps/dishwasher/1.0.1")
	kept := h.deployment(a.ID, keep, "apps/dishwasher/0.9.0")

	h.mustIn("Groups().Delete(group with deployments)", a.ID, func(tt store.TenantTx) error {
		return tt.Groups().Delete(h.ctx(), p.ID, g.ID, 0)
	})
	h.mustIn("Groups().Create(same ID again)", a.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), g) })
	h.wantNoDeployments(a.ID, g)
	got, err := h.currentDeployment(a.ID, keep)
	wantEqual(h.t, "Deployments().Current(another group)", got, err, kept)
}

func testProductDeleteRemovesDeployments(h *harness) {
	a := h.tenant("A")
	p, keep := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	g, kg := h.group(a.ID, p.ID, "Production"), h.group(a.ID, keep.ID, "Production")
	h.deployment(a.ID, g, "apps/dishwasher/1.0.0")
	kept := h.deployment(a.ID, kg, "apps/dishwasher/0.9.0")

	h.mustIn("Products().Delete(product with deployments)", a.ID, func(tt store.TenantTx) error {
		return tt.Products().Delete(h.ctx(), p.ID, 0)
	})
	h.mustIn("Products().Create(same ID again)", a.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), p) })
	h.mustIn("Groups().Create(same ID again)", a.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), g) })
	h.wantNoDeployments(a.ID, g)
	got, err := h.currentDeployment(a.ID, kg)
	wantEqual(h.t, "Deployments().Current(another product's group)", got, err, kept)
}

func (h *harness) wantNoDeployments(tid tenant.ID, g product.Group) {
	h.t.Helper()
	_, err := h.currentDeployment(tid, g)
	wantErr(h.t, "Deployments().Current(recreated group)", err, store.ErrNotFound)
	list, err := h.listDeployments(tid, g, store.Page{})
	wantEmpty(h.t, "Deployments().List(recreated group)", list, err)
}

func testPlatformCA(h *harness) {
	get := func() (string, error) {
		return read(h, func(ctx context.Context, tx store.Tx) (string, error) { return tx.PlatformCA().Get(ctx) })
	}
	_, err := get()
	wantErr(h.t, "PlatformCA().Get before Put", err, store.ErrNotFound)
	for _, pem := range []string{"-----BEGIN CERTIFICATE-----\nfirst\n-----END CERTIFICATE-----\n", "second"} {
		h.must("PlatformCA().Put", func(tx store.Tx) error { return tx.PlatformCA().Put(h.ctx(), pem, h.tick()) })
		got, err := get()
		wantEqual(h.t, "PlatformCA().Get after Put", got, err, pem)
	}
}

func (h *harness) newCA(tid tenant.ID) device.CA {
	at := h.tick()
	id := ident.New(device.CAIDPrefix, at)
	return device.CA{
		ID: id, TenantID: tid, State: device.CAPending, CreatedAt: at,
		CSRPEM:     "-----BEGIN CERTIFICATE REQUEST-----\n" + id + "\n-----END CERTIFICATE REQUEST-----\n",
		WrappedKey: []byte("wrapped\x00key " + id), Version: 1,
	}
}

func (h *harness) ca(tid tenant.ID) device.CA {
	h.t.Helper()
	c := h.newCA(tid)
	h.mustIn("DeviceCAs().Create", tid, func(tt store.TenantTx) error { return tt.DeviceCAs().Create(h.ctx(), c) })
	return c
}

func (h *harness) getCA(tid tenant.ID, id string) (device.CA, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (device.CA, error) { return tt.DeviceCAs().Get(ctx, id) })
}

func (h *harness) listCAs(tid tenant.ID) ([]device.CA, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]device.CA, error) { return tt.DeviceCAs().List(ctx) })
}

func (h *harness) updateCA(tid tenant.ID, c device.CA) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.DeviceCAs().Update(h.ctx(), c) })
}

func testDeviceCACreateGetUpdate(h *harness) {
	a := h.tenant("A")
	c := h.ca(a.ID)
	got, err := h.getCA(a.ID, c.ID)
	wantEqual(h.t, "DeviceCAs().Get", got, err, c)
	_, err = h.getCA(a.ID, h.newCA(a.ID).ID)
	wantErr(h.t, "DeviceCAs().Get(missing)", err, store.ErrNotFound)
	dup := h.newCA(a.ID)
	dup.ID = c.ID
	err = h.in(a.ID, func(tt store.TenantTx) error { return tt.DeviceCAs().Create(h.ctx(), dup) })
	wantErr(h.t, "DeviceCAs().Create(existing ID)", err, store.ErrConflict)

	active := c
	at := h.tick()
	active.State, active.CertificatePEM, active.ActivatedAt, active.Version = device.CAActive, "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n", &at, 2
	if err := h.updateCA(a.ID, active); err != nil {
		h.t.Fatalf("DeviceCAs().Update(active) = %v, want nil", err)
	}
	got, err = h.getCA(a.ID, c.ID)
	wantEqual(h.t, "DeviceCAs().Get after activation", got, err, active)

	stale := c
	stale.State, stale.Version = device.CARetired, 2
	wantErr(h.t, "DeviceCAs().Update(stale version)", h.updateCA(a.ID, stale), store.ErrStale)
	missing := h.newCA(a.ID)
	missing.Version = 2
	wantErr(h.t, "DeviceCAs().Update(missing)", h.updateCA(a.ID, missing), store.ErrNotFound)

	retired := active
	until := h.tick().Add(30 * 24 * time.Hour)
	retired.State, retired.RetireAt, retired.WrappedKey, retired.Version = device.CARetired, &until, []byte("rewrapped"), 3
	if err := h.updateCA(a.ID, retired); err != nil {
		h.t.Fatalf("DeviceCAs().Update(retired) = %v, want nil", err)
	}
	got, err = h.getCA(a.ID, c.ID)
	wantEqual(h.t, "DeviceCAs().Get after retirement", got, err, retired)
}

func testDeviceCAList(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	want := make([]device.CA, 4)
	for i := range want {
		want[i] = h.newCA(a.ID)
	}
	for i := len(want) - 1; i >= 0; i-- {
		h.mustIn("DeviceCAs().Create", a.ID, func(tt store.TenantTx) error { return tt.DeviceCAs().Create(h.ctx(), want[i]) })
	}
	h.ca(b.ID)
	got, err := h.listCAs(a.ID)
	wantEqual(h.t, "DeviceCAs().List", got, err, want)
	got, err = h.listCAs(h.tenant("C").ID)
	wantEmpty(h.t, "C: DeviceCAs().List", got, err)
}

func testPendingCAs(h *harness) {
	pending := func() ([]device.CA, error) {
		return read(h, func(ctx context.Context, tx store.Tx) ([]device.CA, error) { return tx.PendingCAs(ctx) })
	}
	got, err := pending()
	wantEmpty(h.t, "PendingCAs() with no CA", got, err)

	a, b := h.tenant("A"), h.tenant("B")
	b0, a1, a2, b3 := h.newCA(b.ID), h.newCA(a.ID), h.newCA(a.ID), h.newCA(b.ID)
	at := h.tick()
	a2.State, a2.CertificatePEM, a2.ActivatedAt = device.CAActive, "cert", &at
	for _, c := range []device.CA{b3, a2, a1, b0} {
		h.mustIn("DeviceCAs().Create", c.TenantID, func(tt store.TenantTx) error { return tt.DeviceCAs().Create(h.ctx(), c) })
	}
	got, err = pending()
	wantEqual(h.t, "PendingCAs()", got, err, []device.CA{b0, a1, b3})

	b3.State, b3.CertificatePEM, b3.ActivatedAt, b3.Version = device.CAActive, "cert", &at, 2
	if err := h.updateCA(b.ID, b3); err != nil {
		h.t.Fatalf("DeviceCAs().Update(active) = %v", err)
	}
	got, err = pending()
	wantEqual(h.t, "PendingCAs() after an activation", got, err, []device.CA{b0, a1})
}

func (h *harness) newCertificate(tid tenant.ID, d device.ID, g product.Group) device.Certificate {
	at := h.tick()
	var serial [16]byte
	rand.Read(serial[:])
	return device.Certificate{
		Serial: hex.EncodeToString(serial[:]), DeviceID: d, TenantID: tid, CAID: ident.New(device.CAIDPrefix, at),
		ProductID: g.ProductID, GroupID: g.ID,
		Images: []device.Measurement{
			{Kind: "os", Path: "os/moat/1.2.3", SHA256: strings.Repeat("ef", 32), Version: "1.2.3", SecurityVersion: 2},
		},
		IssuedAt: at, NotAfter: at.Add(24 * time.Hour),
	}
}

func (h *harness) recordCertificate(tid tenant.ID, c device.Certificate) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.Certificates().Record(h.ctx(), c) })
}

func (h *harness) getCertificate(tid tenant.ID, serial string) (device.Certificate, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (device.Certificate, error) {
		return tt.Certificates().Get(ctx, serial)
	})
}

func (h *harness) listCertificates(tid tenant.ID, d device.ID, n int) ([]device.Certificate, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]device.Certificate, error) {
		return tt.Certificates().ListForDevice(ctx, d, n)
	})
}

func testCertificateRecordGet(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.placed(a.ID, g)
	c := h.newCertificate(a.ID, d.ID, g)
	if err := h.recordCertificate(a.ID, c); err != nil {
		h.t.Fatalf("Certificates().Record = %v, want nil", err)
	}
	got, err := h.getCertificate(a.ID, c.Serial)
	wantEqual(h.t, "Certificates().Get", got, err, c)
	_, err = h.getCertificate(a.ID, "00ff")
	wantErr(h.t, "Certificates().Get(missing)", err, store.ErrNotFound)

	bare := h.newCertificate(a.ID, d.ID, g)
	bare.Images = nil
	if err := h.recordCertificate(a.ID, bare); err != nil {
		h.t.Fatalf("Certificates().Record(no images) = %v, want nil", err)
	}
	bare.Images = []device.Measurement{}
	got, err = h.getCertificate(a.ID, bare.Serial)
	wantEqual(h.t, "Certificates().Get(no images)", got, err, bare)
}

func testCertificateSerialUnique(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	ap, bp := h.product(a.ID, "DW100"), h.product(b.ID, "DW100")
	ag, bg := h.group(a.ID, ap.ID, "Production"), h.group(b.ID, bp.ID, "Production")
	ad, bd := h.placed(a.ID, ag), h.placed(b.ID, bg)
	c := h.newCertificate(a.ID, ad.ID, ag)
	if err := h.recordCertificate(a.ID, c); err != nil {
		h.t.Fatalf("A: Certificates().Record = %v, want nil", err)
	}
	again := h.newCertificate(a.ID, ad.ID, ag)
	again.Serial = c.Serial
	wantErr(h.t, "A: Certificates().Record(same serial)", h.recordCertificate(a.ID, again), store.ErrConflict)
	inB := h.newCertificate(b.ID, bd.ID, bg)
	inB.Serial = c.Serial
	wantErr(h.t, "B: Certificates().Record(A's serial)", h.recordCertificate(b.ID, inB), store.ErrConflict)

	got, err := h.getCertificate(a.ID, c.Serial)
	wantEqual(h.t, "A: Certificates().Get after refused Records", got, err, c)
	_, err = h.getCertificate(b.ID, c.Serial)
	wantErr(h.t, "B: Certificates().Get(A's serial)", err, store.ErrNotFound)
}

func testCertificateListForDevice(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d, other := h.placed(a.ID, g), h.placed(a.ID, g)
	newest := make([]device.Certificate, 4) // newest first
	for i := len(newest) - 1; i >= 0; i-- {
		newest[i] = h.newCertificate(a.ID, d.ID, g)
	}
	for _, c := range newest { // recorded newest first, so that insertion order is wrong
		if err := h.recordCertificate(a.ID, c); err != nil {
			h.t.Fatalf("Certificates().Record = %v", err)
		}
	}
	oc := h.newCertificate(a.ID, other.ID, g)
	if err := h.recordCertificate(a.ID, oc); err != nil {
		h.t.Fatalf("Certificates().Record = %v", err)
	}
	for _, c := range []struct {
		limit int
		want  []device.Certificate
	}{{0, newest}, {-1, newest}, {2, newest[:2]}, {4, newest}, {100, newest}} {
		got, err := h.listCertificates(a.ID, d.ID, c.limit)
		wantEqual(h.t, fmt.Sprintf("Certificates().ListForDevice(limit %d)", c.limit), got, err, c.want)
	}
	got, err := h.listCertificates(a.ID, other.ID, 10)
	wantEqual(h.t, "Certificates().ListForDevice(other device)", got, err, []device.Certificate{oc})
	got, err = h.listCertificates(a.ID, h.newDevice().ID, 10)
	wantEmpty(h.t, "Certificates().ListForDevice(unregistered)", got, err)
}

func (h *harness) newDeployment(tid tenant.ID, g product.Group, target string) device.Deployment {
	at := h.tick()
	return device.Deployment{
		ID: ident.New(device.DeploymentIDPrefix, at), TenantID: tid, ProductID: g.ProductID, GroupID: g.ID,
		Target: target, SHA256: strings.Repeat("12", 32), CreatedAt: at, CreatedBy: "usr_0123",
	}
}

func (h *harness) createDeployment(tid tenant.ID, d device.Deployment) error {
	return h.in(tid, func(tt store.TenantTx) error { return tt.Deployments().Create(h.ctx(), d) })
}

func (h *harness) deployment(tid tenant.ID, g product.Group, target string) device.Deployment {
	h.t.Helper()
	d := h.newDeployment(tid, g, target)
	if err := h.createDeployment(tid, d); err != nil {
		h.t.Fatalf("Deployments().Create(%s) = %v, want nil", target, err)
	}
	return d
}

func (h *harness) currentDeployment(tid tenant.ID, g product.Group) (device.Deployment, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (device.Deployment, error) {
		return tt.Deployments().Current(ctx, g.ProductID, g.ID)
	})
}

func (h *harness) getDeployment(tid tenant.ID, g product.Group, id string) (device.Deployment, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (device.Deployment, error) {
		return tt.Deployments().Get(ctx, g.ProductID, g.ID, id)
	})
}

func (h *harness) listDeployments(tid tenant.ID, g product.Group, p store.Page) ([]device.Deployment, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]device.Deployment, error) {
		return tt.Deployments().List(ctx, g.ProductID, g.ID, p)
	})
}

func testDeploymentCurrentList(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g, other, none := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development"), h.group(a.ID, p.ID, "Empty")
	newest := make([]device.Deployment, 5) // newest first
	for i := len(newest) - 1; i >= 0; i-- {
		newest[i] = h.newDeployment(a.ID, g, fmt.Sprintf("apps/dishwasher/1.0.%d", len(newest)-1-i))
	}
	for _, d := range newest { // newest created first: insertion order is wrong
		if err := h.createDeployment(a.ID, d); err != nil {
			h.t.Fatalf("Deployments().Create = %v", err)
		}
	}
	od := h.deployment(a.ID, other, "apps/dishwasher/0.1.0")

	got, err := h.currentDeployment(a.ID, g)
	wantEqual(h.t, "Deployments().Current(Production)", got, err, newest[0])
	got, err = h.currentDeployment(a.ID, other)
	wantEqual(h.t, "Deployments().Current(Development)", got, err, od)
	_, err = h.currentDeployment(a.ID, none)
	wantErr(h.t, "Deployments().Current(group without deployments)", err, store.ErrNotFound)
	list, err := h.listDeployments(a.ID, none, store.Page{})
	wantEmpty(h.t, "Deployments().List(group without deployments)", list, err)

	checkList(h, "Deployments().List(Production)", newest, func(d device.Deployment) string { return d.ID },
		func(pg store.Page) ([]device.Deployment, error) { return h.listDeployments(a.ID, g, pg) })

	// A new deployment becomes current.
	latest := h.deployment(a.ID, g, "apps/dishwasher/2.0.0")
	got, err = h.currentDeployment(a.ID, g)
	wantEqual(h.t, "Deployments().Current after Create", got, err, latest)
}

func testDeploymentCurrentTie(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	ids := h.ids(device.DeploymentIDPrefix, 2)
	at := h.tick()
	var ds []device.Deployment
	for i := len(ids) - 1; i >= 0; i-- {
		d := h.newDeployment(a.ID, g, fmt.Sprintf("apps/dishwasher/1.0.%d", i))
		d.ID, d.CreatedAt = ids[i], at
		if err := h.createDeployment(a.ID, d); err != nil {
			h.t.Fatalf("Deployments().Create = %v", err)
		}
		ds = append(ds, d)
	}
	got, err := h.currentDeployment(a.ID, g)
	wantEqual(h.t, "Deployments().Current(two at the same time)", got, err, ds[0]) // the greater ID
}

// testDeploymentGetReverts: Get finds a deployment only in its own group, and a rollback's
// Reverts survives the round trip while an ordinary deployment's stays empty.
func testDeploymentGetReverts(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g, other := h.group(a.ID, p.ID, "Production"), h.group(a.ID, p.ID, "Development")
	first := h.deployment(a.ID, g, "apps/dishwasher/1.0.0")
	second := h.deployment(a.ID, g, "apps/dishwasher/1.0.1")
	back := h.newDeployment(a.ID, g, first.Target)
	back.Reverts = second.ID
	if err := h.createDeployment(a.ID, back); err != nil {
		h.t.Fatalf("Deployments().Create(rollback) = %v", err)
	}

	got, err := h.getDeployment(a.ID, g, first.ID)
	wantEqual(h.t, "Deployments().Get(first)", got, err, first)
	got, err = h.getDeployment(a.ID, g, back.ID)
	wantEqual(h.t, "Deployments().Get(rollback)", got, err, back)
	got, err = h.currentDeployment(a.ID, g)
	wantEqual(h.t, "Deployments().Current after a rollback", got, err, back)
	list, err := h.listDeployments(a.ID, g, store.Page{})
	wantEqual(h.t, "Deployments().List with a rollback", list, err, []device.Deployment{back, second, first})

	_, err = h.getDeployment(a.ID, other, first.ID)
	wantErr(h.t, "Deployments().Get(another group's deployment)", err, store.ErrNotFound)
	_, err = h.getDeployment(a.ID, g, h.ids(device.DeploymentIDPrefix, 1)[0])
	wantErr(h.t, "Deployments().Get(unknown ID)", err, store.ErrNotFound)
}

func testDeploymentCreateRefused(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.deployment(a.ID, g, "apps/dishwasher/1.0.0")
	dup := h.newDeployment(a.ID, g, "apps/dishwasher/1.0.1")
	dup.ID = d.ID
	wantErr(h.t, "Deployments().Create(existing ID)", h.createDeployment(a.ID, dup), store.ErrConflict)

	ghost := h.newGroup(a.ID, p.ID, "Ghost")
	if err := h.createDeployment(a.ID, h.newDeployment(a.ID, ghost, "apps/dishwasher/1.0.2")); err == nil {
		h.t.Errorf("Deployments().Create(missing group) = nil, want an error")
	}
	got, err := h.currentDeployment(a.ID, g)
	wantEqual(h.t, "Deployments().Current after refused Creates", got, err, d)
}

// The isolation cases for devices, CAs, certificates and deployments: tenant B is handed
// A's IDs and must find nothing and change nothing.

func testIsolationDevices(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.placed(a.ID, g)
	bp := h.product(b.ID, "DW100")
	bg := h.group(b.ID, bp.ID, "Production")

	_, err := h.getTenantDevice(b.ID, d.ID)
	wantErr(h.t, "B: Devices().Get(A's device)", err, store.ErrNotFound)
	for _, f := range []device.Filter{{}, {ProductID: p.ID}, {ProductID: p.ID, GroupID: g.ID}} {
		list, err := h.listDevices(b.ID, f, store.Page{})
		wantEmpty(h.t, fmt.Sprintf("B: Devices().List(%+v)", f), list, err)
	}
	n, err := h.countInGroup(b.ID, p.ID, g.ID)
	wantEqual(h.t, "B: Devices().CountInGroup(A's group)", n, err, 0)

	for _, x := range []struct {
		name string
		pid  product.ID
		gid  product.GroupID
	}{{"unchanged", d.ProductID, d.GroupID}, {"into B's group", bp.ID, bg.ID}, {"out of its group", "", ""}} {
		hijack := d
		hijack.TenantID, hijack.ProductID, hijack.GroupID, hijack.Blocked, hijack.Version = b.ID, x.pid, x.gid, true, d.Version+1
		wantErr(h.t, "B: Devices().Update(A's device, "+x.name+")", h.updateTenantDevice(b.ID, hijack), store.ErrNotFound)
	}
	_, err = h.claimDevice(d.ID, b.ID, h.tick())
	wantErr(h.t, "Devices().Claim(A's device for B)", err, store.ErrConflict)
	// Nor can B free A's group for deletion by deleting its own.
	err = h.in(b.ID, func(tt store.TenantTx) error { return tt.Groups().Delete(h.ctx(), p.ID, g.ID, 0) })
	wantErr(h.t, "B: Groups().Delete(A's group)", err, store.ErrNotFound)

	got, err := h.getTenantDevice(a.ID, d.ID)
	wantEqual(h.t, "A: Devices().Get after B's attempts", got, err, d)
	list, err := h.listDevices(a.ID, device.Filter{}, store.Page{})
	wantEqual(h.t, "A: Devices().List after B's attempts", list, err, []device.Device{d})
}

// testIsolationUnclaimedDevices: a registered device no tenant claimed is no tenant's.
func testIsolationUnclaimedDevices(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	u := h.device()
	for _, tid := range []tenant.ID{a.ID, b.ID} {
		_, err := h.getTenantDevice(tid, u.ID)
		wantErr(h.t, string(tid)+": Devices().Get(unclaimed)", err, store.ErrNotFound)
		list, err := h.listDevices(tid, device.Filter{}, store.Page{})
		wantEmpty(h.t, string(tid)+": Devices().List", list, err)
		x := u
		x.Blocked, x.Version = true, 2
		wantErr(h.t, string(tid)+": Devices().Update(unclaimed)", h.updateTenantDevice(tid, x), store.ErrNotFound)
	}
	got, err := h.getDevice(u.ID)
	wantEqual(h.t, "Devices().Get(unclaimed) after the attempts", got, err, u)
}

func testIsolationDeviceCAs(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	c := h.ca(a.ID)
	_, err := h.getCA(b.ID, c.ID)
	wantErr(h.t, "B: DeviceCAs().Get(A's CA)", err, store.ErrNotFound)
	list, err := h.listCAs(b.ID)
	wantEmpty(h.t, "B: DeviceCAs().List", list, err)
	hijack := c
	hijack.TenantID, hijack.State, hijack.CertificatePEM, hijack.Version = b.ID, device.CAActive, "evil", 2
	wantErr(h.t, "B: DeviceCAs().Update(A's CA)", h.updateCA(b.ID, hijack), store.ErrNotFound)

	planted := h.newCA(a.ID)
	h.mustIn("B: DeviceCAs().Create(CA naming A)", b.ID, func(tt store.TenantTx) error {
		return tt.DeviceCAs().Create(h.ctx(), planted)
	})
	planted.TenantID = b.ID
	got, err := h.getCA(b.ID, planted.ID)
	wantEqual(h.t, "B: DeviceCAs().Get(planted)", got, err, planted)
	_, err = h.getCA(a.ID, planted.ID)
	wantErr(h.t, "A: DeviceCAs().Get(planted in B)", err, store.ErrNotFound)

	list, err = h.listCAs(a.ID)
	wantEqual(h.t, "A: DeviceCAs().List after B's attempts", list, err, []device.CA{c})
}

func testIsolationCertificates(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.placed(a.ID, g)
	c := h.newCertificate(a.ID, d.ID, g)
	if err := h.recordCertificate(a.ID, c); err != nil {
		h.t.Fatalf("A: Certificates().Record = %v", err)
	}
	_, err := h.getCertificate(b.ID, c.Serial)
	wantErr(h.t, "B: Certificates().Get(A's certificate)", err, store.ErrNotFound)
	list, err := h.listCertificates(b.ID, d.ID, 0)
	wantEmpty(h.t, "B: Certificates().ListForDevice(A's device)", list, err)

	planted := h.newCertificate(a.ID, d.ID, g)
	if err := h.recordCertificate(b.ID, planted); err != nil {
		h.t.Fatalf("B: Certificates().Record(certificate naming A) = %v, want nil", err)
	}
	planted.TenantID = b.ID
	got, err := h.getCertificate(b.ID, planted.Serial)
	wantEqual(h.t, "B: Certificates().Get(planted)", got, err, planted)
	_, err = h.getCertificate(a.ID, planted.Serial)
	wantErr(h.t, "A: Certificates().Get(planted in B)", err, store.ErrNotFound)
	list, err = h.listCertificates(a.ID, d.ID, 0)
	wantEqual(h.t, "A: Certificates().ListForDevice after B's Record", list, err, []device.Certificate{c})
}

func testIsolationDeployments(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	d := h.deployment(a.ID, g, "apps/dishwasher/1.0.0")
	_, err := h.currentDeployment(b.ID, g)
	wantErr(h.t, "B: Deployments().Current(A's group)", err, store.ErrNotFound)
	_, err = h.getDeployment(b.ID, g, d.ID)
	wantErr(h.t, "B: Deployments().Get(A's deployment)", err, store.ErrNotFound)
	list, err := h.listDeployments(b.ID, g, store.Page{})
	wantEmpty(h.t, "B: Deployments().List(A's group)", list, err)

	// B cannot deploy to A's group: the group must be B's own.
	planted := h.newDeployment(a.ID, g, "apps/evil/6.6.6")
	if err := h.createDeployment(b.ID, planted); err == nil {
		h.t.Errorf("B: Deployments().Create(to A's group) = nil, want an error")
	}
	got, err := h.currentDeployment(a.ID, g)
	wantEqual(h.t, "A: Deployments().Current after B's attempt", got, err, d)
	list, err = h.listDeployments(a.ID, g, store.Page{})
	wantEqual(h.t, "A: Deployments().List after B's attempt", list, err, []device.Deployment{d})
}

// testReadTxRefusesDeviceWrites: every write of the device aggregates fails in InReadTx and
// leaves nothing behind.
func testReadTxRefusesDeviceWrites(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	u, c := h.device(), h.placed(a.ID, g)
	ca := h.ca(a.ID)

	fresh := h.newDevice()
	u2 := u
	u2.Blocked, u2.Version = true, 2
	c2 := c
	c2.Development, c2.Version = true, c.Version+1
	ca2 := ca
	ca2.State, ca2.Version = device.CAActive, 2
	cert := h.newCertificate(a.ID, c.ID, g)
	dep := h.newDeployment(a.ID, g, "apps/dishwasher/1.0.0")
	writes := []struct {
		name string
		fn   func(ctx context.Context, tx store.Tx, tt store.TenantTx) error
	}{
		{"Devices().Register", func(ctx context.Context, tx store.Tx, _ store.TenantTx) error {
			return tx.Devices().Register(ctx, fresh)
		}},
		{"Devices().Claim", func(ctx context.Context, tx store.Tx, _ store.TenantTx) error {
			_, err := tx.Devices().Claim(ctx, u.ID, a.ID, h.tick())
			return err
		}},
		{"Devices().Update", func(ctx context.Context, tx store.Tx, _ store.TenantTx) error { return tx.Devices().Update(ctx, u2) }},
		{"PlatformCA().Put", func(ctx context.Context, tx store.Tx, _ store.TenantTx) error {
			return tx.PlatformCA().Put(ctx, "cert", h.tick())
		}},
		{"ForTenant.Devices().Update", func(ctx context.Context, _ store.Tx, tt store.TenantTx) error { return tt.Devices().Update(ctx, c2) }},
		{"DeviceCAs().Create", func(ctx context.Context, _ store.Tx, tt store.TenantTx) error {
			return tt.DeviceCAs().Create(ctx, h.newCA(a.ID))
		}},
		{"DeviceCAs().Update", func(ctx context.Context, _ store.Tx, tt store.TenantTx) error { return tt.DeviceCAs().Update(ctx, ca2) }},
		{"Certificates().Record", func(ctx context.Context, _ store.Tx, tt store.TenantTx) error {
			return tt.Certificates().Record(ctx, cert)
		}},
		{"Deployments().Create", func(ctx context.Context, _ store.Tx, tt store.TenantTx) error {
			return tt.Deployments().Create(ctx, dep)
		}},
	}
	for _, w := range writes {
		err := h.readTx(h.ctx(), func(tx store.Tx) error {
			tt, err := tx.ForTenant(a.ID)
			if err != nil {
				return err
			}
			return w.fn(h.ctx(), tx, tt)
		})
		if err == nil || errors.Is(err, store.ErrNoTenant) {
			h.t.Errorf("InReadTx(%s) = %v, want a write error", w.name, err)
		}
	}

	_, err := h.getDevice(fresh.ID)
	wantErr(h.t, "Devices().Get(registered in InReadTx)", err, store.ErrNotFound)
	got, err := h.getDevice(u.ID)
	wantEqual(h.t, "Devices().Get(claimed and updated in InReadTx)", got, err, u)
	got, err = h.getTenantDevice(a.ID, c.ID)
	wantEqual(h.t, "Devices().Get(updated in InReadTx)", got, err, c)
	_, err = read(h, func(ctx context.Context, tx store.Tx) (string, error) { return tx.PlatformCA().Get(ctx) })
	wantErr(h.t, "PlatformCA().Get(put in InReadTx)", err, store.ErrNotFound)
	cas, err := h.listCAs(a.ID)
	wantEqual(h.t, "DeviceCAs().List after InReadTx writes", cas, err, []device.CA{ca})
	_, err = h.getCertificate(a.ID, cert.Serial)
	wantErr(h.t, "Certificates().Get(recorded in InReadTx)", err, store.ErrNotFound)
	_, err = h.currentDeployment(a.ID, g)
	wantErr(h.t, "Deployments().Current(created in InReadTx)", err, store.ErrNotFound)
}

// deviceColumns is every stored column of a device but its identity, registration, claim
// and tenant, read directly (the running times are read by no store method).
type deviceColumns struct {
	product, group, floors, refusal            string
	blocked, development                       bool
	attestation, certificate                   sql.NullString
	version                                    int64
	osTarget, osVersion, appTarget, appVersion string
	attestedAt, osSince, appSince, lastSeen    sql.NullTime
}

func (h *harness) deviceColumns(id device.ID) deviceColumns {
	h.t.Helper()
	var c deviceColumns
	var product, group sql.NullString
	db := h.s.(interface{ SQL() *sql.DB }).SQL()
	err := db.QueryRowContext(h.ctx(), `SELECT product_id, group_id, blocked, development, floors, attestation, certificate,
		version, running_os_target, running_os_version, running_app_target, running_app_version, attested_at, refusal,
		running_os_since, running_app_since, last_seen_at FROM devices WHERE id = $1`, id).Scan(&product, &group,
		&c.blocked, &c.development, &c.floors, &c.attestation, &c.certificate, &c.version, &c.osTarget, &c.osVersion,
		&c.appTarget, &c.appVersion, &c.attestedAt, &c.refusal, &c.osSince, &c.appSince, &c.lastSeen)
	if err != nil {
		h.t.Fatalf("read device %s: %v", id, err)
	}
	c.product, c.group = product.String, group.String
	for _, t := range []*sql.NullTime{&c.attestedAt, &c.osSince, &c.appSince, &c.lastSeen} {
		t.Time = t.Time.UTC()
	}
	return c
}

// testDeviceAttested: Attested, which writes only what changed, leaves every column as
// Update followed by Seen (with no coarseness) does, through a run of attestations that
// changes each part of the statement: a first success, the same images again, a refusal
// that revokes the certificate, a success after it, a replay (not the device calling, so
// not seen), another OS, and a last contact newer than the attestation.
func testDeviceAttested(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	ga := h.group(a.ID, h.product(a.ID, "DW100").ID, "Production")
	gb := h.group(b.ID, h.product(b.ID, "DW100").ID, "Production")
	byUpdate, byAttested := h.placed(a.ID, ga), h.placed(b.ID, gb)
	ok := func(images ...device.Measurement) func(at time.Time, d *device.Device) {
		return func(at time.Time, d *device.Device) {
			serial := fmt.Sprintf("%x", at.UnixNano())
			d.Attestation = &device.Attestation{At: at, Images: images, Serial: serial}
			d.Certificate = &device.Current{Serial: serial, IssuedAt: at, NotAfter: at.Add(24 * time.Hour)}
			for _, m := range images {
				d.Floors[m.Path[:strings.LastIndexByte(m.Path, '/')]] = m.SecurityVersion
			}
		}
	}
	refused := func(reason string, revoke bool, images ...device.Measurement) func(at time.Time, d *device.Device) {
		return func(at time.Time, d *device.Device) {
			d.Attestation = &device.Attestation{At: at, Images: images, Refusal: reason, Detail: "test"}
			if revoke {
				d.Certificate = nil
			}
		}
	}
	steps := []struct {
		name    string
		outcome func(at time.Time, d *device.Device)
		seen    bool
		later   bool // a later contact is stored before the attestation
	}{
		{"first success", ok(osA, appX), true, false},
		{"same images", ok(osA, appX), true, false},
		{"refused, revoked", refused(device.RefusedUnknownImage, true, osA, appY), true, false},
		{"success after a refusal", ok(osA, appY), true, false},
		{"replay", refused(device.RefusedNonce, false, osA, appY), false, false},
		{"another OS", ok(osB, appY), true, false},
		{"same images, seen later", ok(osB, appY), true, true},
		{"refused again", refused(device.RefusedBelowFloor, true, osA, appY), true, false},
	}
	for _, s := range steps {
		at := h.tick()
		if s.later {
			later := at.Add(time.Hour)
			for _, x := range []struct {
				tid tenant.ID
				id  device.ID
			}{{a.ID, byUpdate.ID}, {b.ID, byAttested.ID}} {
				h.mustIn("Devices().Seen(later)", x.tid, func(tt store.TenantTx) error {
					_, err := tt.Devices().Seen(h.ctx(), x.id, later, 0)
					return err
				})
			}
		}
		for _, d := range []*device.Device{&byUpdate, &byAttested} {
			d.Floors = maps.Clone(d.Floors)
			s.outcome(at, d)
			d.Version++
		}
		h.mustIn("Devices().Update("+s.name+")", a.ID, func(tt store.TenantTx) error {
			if err := tt.Devices().Update(h.ctx(), byUpdate); err != nil {
				return err
			}
			if !s.seen {
				return nil
			}
			_, err := tt.Devices().Seen(h.ctx(), byUpdate.ID, at, 0)
			return err
		})
		var seen *time.Time
		if s.seen {
			seen = &at
		}
		prev, err := h.getDevice(byAttested.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		h.must("Devices().Attested("+s.name+")", func(tx store.Tx) error {
			return tx.Devices().Attested(h.ctx(), prev, byAttested, seen)
		})
		want, got := h.deviceColumns(byUpdate.ID), h.deviceColumns(byAttested.ID)
		want.product, want.group, got.product, got.group = "", "", "", ""
		if got != want {
			h.t.Fatalf("after %s: Attested stored\n%+v\nUpdate and Seen\n%+v", s.name, got, want)
		}
		stored, err := h.getDevice(byAttested.ID)
		byAttested.LastSeenAt = stored.LastSeenAt
		wantEqual(h.t, "Devices().Get after Attested("+s.name+")", stored, err, byAttested)
	}
}

// testDeviceAttestedRefused: Attested writes nothing over another version, and refuses an
// outcome that changes more than an attestation does.
func testDeviceAttestedRefused(h *harness) {
	a := h.tenant("A")
	g := h.group(a.ID, h.product(a.ID, "DW100").ID, "Production")
	prev := h.placed(a.ID, g)
	at := h.tick()
	next := prev
	next.Attestation, next.Version = &device.Attestation{At: at, Images: []device.Measurement{osA}}, prev.Version+1
	attested := func(prev, d device.Device) error {
		return h.tx(func(tx store.Tx) error { return tx.Devices().Attested(h.ctx(), prev, d, &at) })
	}
	stale := prev
	stale.Version--
	staleNext := next
	staleNext.Version--
	wantErr(h.t, "Devices().Attested(over an older version)", attested(stale, staleNext), store.ErrStale)
	for name, change := range map[string]func(d *device.Device){
		"group":          func(d *device.Device) { d.GroupID = "" },
		"blocked":        func(d *device.Device) { d.Blocked = true },
		"development":    func(d *device.Device) { d.Development = true },
		"version":        func(d *device.Device) { d.Version++ },
		"no attestation": func(d *device.Device) { d.Attestation = nil },
	} {
		d := next
		change(&d)
		if err := attested(prev, d); err == nil {
			h.t.Errorf("Devices().Attested(changing the %s) = nil, want an error", name)
		}
	}
	got, err := h.getDevice(prev.ID)
	wantEqual(h.t, "Devices().Get after refused Attested", got, err, prev)
	missing := h.newDevice()
	missingNext := missing
	missingNext.Attestation, missingNext.Version = &device.Attestation{At: at}, missing.Version+1
	wantErr(h.t, "Devices().Attested(unregistered)", attested(missing, missingNext), store.ErrNotFound)
}
