package storetest

import (
	"context"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// The isolation cases attack rule 3: tenant B's TenantTx is handed tenant A's IDs and names
// (as a confused or malicious handler would) and must find nothing, change nothing, and
// leave A's data as it was.
var isolationTests = []test{
	{"EmptyTenantIsRefused", testIsolationNoTenant},
	{"Products", testIsolationProducts},
	{"Groups", testIsolationGroups},
	{"Members", testIsolationMembers},
	{"Audit", testIsolationAudit},
	{"Devices", testIsolationDevices},
	{"UnclaimedDevices", testIsolationUnclaimedDevices},
	{"DeviceCAs", testIsolationDeviceCAs},
	{"Certificates", testIsolationCertificates},
	{"Deployments", testIsolationDeployments},
	{"ErrorReports", testIsolationErrorReports},
	{"UpdateEvents", testIsolationUpdateEvents},
	{"FleetQueries", testIsolationFleet},
}

func testIsolationNoTenant(h *harness) {
	err := h.tx(func(tx store.Tx) error {
		tt, err := tx.ForTenant("")
		if tt != nil {
			h.t.Errorf("ForTenant(\"\") = %v, want nil", tt)
		}
		return err
	})
	wantErr(h.t, `ForTenant("")`, err, store.ErrNoTenant)

	a := h.tenant("A")
	id, err := readIn(h, a.ID, func(_ context.Context, tt store.TenantTx) (tenant.ID, error) { return tt.ID(), nil })
	wantEqual(h.t, "ForTenant(A).ID()", id, err, a.ID)
}

func (h *harness) listProducts(tid tenant.ID) ([]product.Product, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]product.Product, error) {
		return tt.Products().List(ctx, store.Page{})
	})
}

func testIsolationProducts(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p := h.product(a.ID, "DW100")
	inB := func(fn func(ctx context.Context, s store.Products) error) error {
		return h.in(b.ID, func(tt store.TenantTx) error { return fn(h.ctx(), tt.Products()) })
	}

	_, err := h.getProduct(b.ID, p.ID)
	wantErr(h.t, "B: Products().Get(A's product)", err, store.ErrNotFound)
	_, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (product.Product, error) {
		return tt.Products().GetByName(ctx, p.Name)
	})
	wantErr(h.t, "B: Products().GetByName(A's product)", err, store.ErrNotFound)
	list, err := h.listProducts(b.ID)
	wantEmpty(h.t, "B: Products().List", list, err)
	list, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Product, error) {
		return tt.Products().List(ctx, store.Page{After: ""})
	})
	wantEmpty(h.t, "B: Products().List(After: \"\")", list, err)

	hijack := p
	hijack.TenantID, hijack.Name, hijack.Version = b.ID, "Hijacked", 2
	err = inB(func(ctx context.Context, s store.Products) error { return s.Update(ctx, hijack) })
	wantErr(h.t, "B: Products().Update(A's product)", err, store.ErrNotFound)
	for _, v := range []int64{0, 1} {
		err = inB(func(ctx context.Context, s store.Products) error { return s.Delete(ctx, p.ID, v) })
		wantErr(h.t, "B: Products().Delete(A's product)", err, store.ErrNotFound)
	}

	// A record that names another tenant is stored in the TenantTx's tenant: the tenant
	// comes from ForTenant, never from the caller's data.
	planted := h.newProduct(a.ID, "Planted")
	h.mustIn("B: Products().Create(product naming A)", b.ID, func(tt store.TenantTx) error {
		return tt.Products().Create(h.ctx(), planted)
	})
	planted.TenantID = b.ID
	got, err := h.getProduct(b.ID, planted.ID)
	wantEqual(h.t, "B: Products().Get(planted)", got, err, planted)
	_, err = h.getProduct(a.ID, planted.ID)
	wantErr(h.t, "A: Products().Get(planted in B)", err, store.ErrNotFound)

	list, err = h.listProducts(a.ID)
	wantEqual(h.t, "A: Products().List after B's attempts", list, err, []product.Product{p})
}

func testIsolationGroups(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	p := h.product(a.ID, "DW100")
	g := h.group(a.ID, p.ID, "Production")
	own := h.product(b.ID, "DW100")
	inB := func(fn func(ctx context.Context, s store.Groups) error) error {
		return h.in(b.ID, func(tt store.TenantTx) error { return fn(h.ctx(), tt.Groups()) })
	}
	listGroups := func(tid tenant.ID, pid product.ID) ([]product.Group, error) {
		return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]product.Group, error) {
			return tt.Groups().List(ctx, pid, store.Page{})
		})
	}

	for _, pid := range []product.ID{p.ID, own.ID} {
		_, err := h.getGroup(b.ID, pid, g.ID)
		wantErr(h.t, "B: Groups().Get(A's group)", err, store.ErrNotFound)
		_, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (product.Group, error) {
			return tt.Groups().GetByName(ctx, pid, g.Name)
		})
		wantErr(h.t, "B: Groups().GetByName(A's group)", err, store.ErrNotFound)
		list, err := listGroups(b.ID, pid)
		wantEmpty(h.t, "B: Groups().List", list, err)
	}

	hijack := g
	hijack.TenantID, hijack.Name, hijack.Version = b.ID, "Hijacked", 2
	err := inB(func(ctx context.Context, s store.Groups) error { return s.Update(ctx, hijack) })
	wantErr(h.t, "B: Groups().Update(A's group)", err, store.ErrNotFound)
	for _, v := range []int64{0, 1} {
		err = inB(func(ctx context.Context, s store.Groups) error { return s.Delete(ctx, p.ID, g.ID, v) })
		wantErr(h.t, "B: Groups().Delete(A's group)", err, store.ErrNotFound)
	}
	// B cannot hang a group on A's product.
	planted := h.newGroup(a.ID, p.ID, "Planted")
	err = inB(func(ctx context.Context, s store.Groups) error { return s.Create(ctx, planted) })
	if err == nil {
		h.t.Errorf("B: Groups().Create(group of A's product) = nil, want an error")
	}
	// Nor delete A's product to take its groups with it.
	err = h.in(b.ID, func(tt store.TenantTx) error { return tt.Products().Delete(h.ctx(), p.ID, 0) })
	wantErr(h.t, "B: Products().Delete(A's product)", err, store.ErrNotFound)

	list, err := listGroups(a.ID, p.ID)
	wantEqual(h.t, "A: Groups().List after B's attempts", list, err, []product.Group{g})
}

func testIsolationMembers(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	alice := h.user("alice", false)
	m := h.member(a.ID, alice, auth.Administrator)

	_, err := h.getMember(b.ID, alice.ID)
	wantErr(h.t, "B: Members().Get(A's member)", err, store.ErrNotFound)
	list, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]auth.Member, error) {
		return tt.Members().List(ctx, store.Page{})
	})
	wantEmpty(h.t, "B: Members().List", list, err)
	n, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (int, error) {
		return tt.Members().CountRole(ctx, auth.Administrator)
	})
	wantEqual(h.t, "B: Members().CountRole(Administrator)", n, err, 0)
	err = h.in(b.ID, func(tt store.TenantTx) error { return tt.Members().Delete(h.ctx(), alice.ID) })
	wantErr(h.t, "B: Members().Delete(A's member)", err, store.ErrNotFound)

	// A role granted in B is B's alone.
	inB := h.member(b.ID, alice, auth.Reader)
	got, err := h.getMember(a.ID, alice.ID)
	wantEqual(h.t, "A: Members().Get(alice) after B's Put", got, err, m)
	got, err = h.getMember(b.ID, alice.ID)
	wantEqual(h.t, "B: Members().Get(alice)", got, err, inB)
	h.mustIn("B: Members().Delete(alice)", b.ID, func(tt store.TenantTx) error { return tt.Members().Delete(h.ctx(), alice.ID) })
	got, err = h.getMember(a.ID, alice.ID)
	wantEqual(h.t, "A: Members().Get(alice) after B's Delete", got, err, m)
}

func testIsolationAudit(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	e := h.event(a.ID, "product.create")
	list := func(tid tenant.ID) ([]audit.Event, error) {
		return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) {
			return tt.Audit().List(ctx, store.Page{})
		})
	}
	got, err := list(b.ID)
	wantEmpty(h.t, "B: Audit().List", got, err)

	planted := h.newEvent(a.ID, "tenant.takeover")
	h.mustIn("B: Audit().Append(event naming A)", b.ID, func(tt store.TenantTx) error {
		return tt.Audit().Append(h.ctx(), planted)
	})
	planted.TenantID = b.ID
	got, err = list(b.ID)
	wantEqual(h.t, "B: Audit().List", got, err, []audit.Event{planted})
	got, err = list(a.ID)
	wantEqual(h.t, "A: Audit().List after B's Append", got, err, []audit.Event{e})
}
