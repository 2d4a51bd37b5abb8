package storetest

import (
	"context"
	"fmt"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var productTests = []test{
	{"CreateGet", testProductCreateGet},
	{"GetByNameFoldsCase", testProductGetByName},
	{"NameUniquePerTenant", testProductNameUnique},
	{"ListOrdersByIDAndPages", testProductList},
	{"Update", testProductUpdate},
	{"Delete", testProductDelete},
	{"DeleteRemovesGroups", testProductDeleteRemovesGroups},
	{"DeleteWithDevicesIsInUse", testProductDeleteInUse},
	{"DeleteRemovesDeployments", testProductDeleteRemovesDeployments},
}

func testProductCreateGet(h *harness) {
	a := h.tenant("A")
	want := h.product(a.ID, "DW100")
	got, err := h.getProduct(a.ID, want.ID)
	wantEqual(h.t, "Products().Get("+string(want.ID)+")", got, err, want)

	_, err = h.getProduct(a.ID, product.ID(ident.New(product.IDPrefix, h.tick())))
	wantErr(h.t, "Products().Get(missing)", err, store.ErrNotFound)

	dup := h.newProduct(a.ID, "DW200")
	dup.ID = want.ID
	err = h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), dup) })
	wantErr(h.t, "Products().Create(existing ID)", err, store.ErrConflict)
}

func testProductGetByName(h *harness) {
	a := h.tenant("A")
	want := h.product(a.ID, "Dishwasher DW100")
	for _, name := range []string{"Dishwasher DW100", "dishwasher dw100", "DISHWASHER DW100"} {
		got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (product.Product, error) {
			return tt.Products().GetByName(ctx, name)
		})
		wantEqual(h.t, "Products().GetByName("+name+")", got, err, want)
	}
	_, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (product.Product, error) {
		return tt.Products().GetByName(ctx, "DW100")
	})
	wantErr(h.t, "Products().GetByName(DW100)", err, store.ErrNotFound)
}

func testProductNameUnique(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	first := h.product(a.ID, "DW100")
	for _, name := range []string{"DW100", "dw100"} {
		dup := h.newProduct(a.ID, name)
		err := h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), dup) })
		wantErr(h.t, "Products().Create("+name+") after DW100 in the same tenant", err, store.ErrConflict)
	}
	// Another tenant's names are not in scope: B may have a DW100 too.
	other := h.product(b.ID, "DW100")

	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Product, error) {
		return tt.Products().List(ctx, store.Page{})
	})
	wantEqual(h.t, "Products().List in A", got, err, []product.Product{first})
	got, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Product, error) {
		return tt.Products().List(ctx, store.Page{})
	})
	wantEqual(h.t, "Products().List in B", got, err, []product.Product{other})
}

func testProductList(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	ids := h.ids(product.IDPrefix, 5)
	want := make([]product.Product, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		p := h.newProduct(a.ID, fmt.Sprintf("DW%d00", i+1))
		p.ID = product.ID(ids[i])
		h.mustIn("Products().Create", a.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), p) })
		want[i] = p
	}
	h.product(b.ID, "Not A's")
	checkList(h, "Products().List", want, func(p product.Product) string { return string(p.ID) },
		func(p store.Page) ([]product.Product, error) {
			return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Product, error) {
				return tt.Products().List(ctx, p)
			})
		})
}

func testProductUpdate(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	taken := h.product(a.ID, "DW200")
	update := func(x product.Product) error {
		return h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Update(h.ctx(), x) })
	}

	v2 := p
	v2.Name, v2.Description, v2.UpdatedAt, v2.Version = "DW100 Pro", "Now with steam.", h.tick(), 2
	if err := update(v2); err != nil {
		h.t.Fatalf("Products().Update(version 2) = %v, want nil", err)
	}
	got, err := h.getProduct(a.ID, p.ID)
	wantEqual(h.t, "Products().Get after Update", got, err, v2)

	stale := p // read at version 1, written after v2
	stale.Name, stale.UpdatedAt, stale.Version = "Lost update", h.tick(), 2
	wantErr(h.t, "Products().Update(stale version)", update(stale), store.ErrStale)
	got, err = h.getProduct(a.ID, p.ID)
	wantEqual(h.t, "Products().Get after stale Update", got, err, v2)

	clash := v2
	clash.Name, clash.Version = "dw200", 3
	wantErr(h.t, "Products().Update(name of another product)", update(clash), store.ErrConflict)
	got, err = h.getProduct(a.ID, p.ID)
	wantEqual(h.t, "Products().Get after conflicting Update", got, err, v2)
	got, err = h.getProduct(a.ID, taken.ID)
	wantEqual(h.t, "Products().Get(DW200) after conflicting Update", got, err, taken)

	missing := h.newProduct(a.ID, "Ghost")
	missing.Version = 2
	wantErr(h.t, "Products().Update(missing)", update(missing), store.ErrNotFound)
}

func testProductDelete(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	del := func(id product.ID, version int64) error {
		return h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Delete(h.ctx(), id, version) })
	}
	v2 := p
	v2.Description, v2.Version = "Second edition.", 2
	h.mustIn("Products().Update", a.ID, func(tt store.TenantTx) error { return tt.Products().Update(h.ctx(), v2) })

	wantErr(h.t, "Products().Delete(version 1 of 2)", del(p.ID, 1), store.ErrStale)
	got, err := h.getProduct(a.ID, p.ID)
	wantEqual(h.t, "Products().Get after stale Delete", got, err, v2)

	if err := del(p.ID, 2); err != nil {
		h.t.Fatalf("Products().Delete(version 2) = %v, want nil", err)
	}
	_, err = h.getProduct(a.ID, p.ID)
	wantErr(h.t, "Products().Get after Delete", err, store.ErrNotFound)
	wantErr(h.t, "Products().Delete again", del(p.ID, 2), store.ErrNotFound)
	wantErr(h.t, "Products().Delete(missing, 0)", del(product.ID(ident.New(product.IDPrefix, h.tick())), 0), store.ErrNotFound)

	// Version 0 skips the check.
	q := h.product(a.ID, "DW300")
	q.Version = 2
	h.mustIn("Products().Update", a.ID, func(tt store.TenantTx) error { return tt.Products().Update(h.ctx(), q) })
	if err := del(q.ID, 0); err != nil {
		h.t.Fatalf("Products().Delete(version 0) = %v, want nil", err)
	}
	_, err = h.getProduct(a.ID, q.ID)
	wantErr(h.t, "Products().Get after Delete(version 0)", err, store.ErrNotFound)
}

func testProductDeleteRemovesGroups(h *harness) {
	a := h.tenant("A")
	p, keep := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	var gone []product.Group
	for _, dg := range product.DefaultGroups {
		gone = append(gone, h.group(a.ID, p.ID, dg.Name))
	}
	kept := h.group(a.ID, keep.ID, "Production")

	h.mustIn("Products().Delete(DW100)", a.ID, func(tt store.TenantTx) error { return tt.Products().Delete(h.ctx(), p.ID, 0) })
	for _, g := range gone {
		_, err := h.getGroup(a.ID, p.ID, g.ID)
		wantErr(h.t, "Groups().Get("+g.Name+") of a deleted product", err, store.ErrNotFound)
	}
	groups, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Group, error) {
		return tt.Groups().List(ctx, p.ID, store.Page{})
	})
	wantEmpty(h.t, "Groups().List(deleted product)", groups, err)
	got, err := h.getGroup(a.ID, keep.ID, kept.ID)
	wantEqual(h.t, "Groups().Get(group of another product)", got, err, kept)

	// The name is free again.
	h.product(a.ID, "DW100")
}

var groupTests = []test{
	{"CreateGet", testGroupCreateGet},
	{"GetByNameFoldsCase", testGroupGetByName},
	{"NameUniquePerProduct", testGroupNameUnique},
	{"ListOrdersByIDAndPages", testGroupList},
	{"Update", testGroupUpdate},
	{"Delete", testGroupDelete},
	{"DeleteWithDevicesIsInUse", testGroupDeleteInUse},
	{"DeleteRemovesDeployments", testGroupDeleteRemovesDeployments},
}

func testGroupCreateGet(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	want := h.newGroup(a.ID, p.ID, "Field Test")
	want.OSFeed, want.UpdatePolicy = product.RetailEval, product.UpdateOSOnly
	h.mustIn("Groups().Create", a.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), want) })

	got, err := h.getGroup(a.ID, p.ID, want.ID)
	wantEqual(h.t, "Groups().Get("+string(want.ID)+")", got, err, want)
	_, err = h.getGroup(a.ID, q.ID, want.ID)
	wantErr(h.t, "Groups().Get(group, another product)", err, store.ErrNotFound)
	_, err = h.getGroup(a.ID, p.ID, product.GroupID(ident.New(product.GroupIDPrefix, h.tick())))
	wantErr(h.t, "Groups().Get(missing)", err, store.ErrNotFound)

	orphan := h.newGroup(a.ID, product.ID(ident.New(product.IDPrefix, h.tick())), "Orphans")
	err = h.in(a.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), orphan) })
	if err == nil {
		h.t.Errorf("Groups().Create(group of a missing product) = nil, want an error")
	}
}

func testGroupGetByName(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	want := h.group(a.ID, p.ID, "Field Test OS Evaluation")
	byName := func(pid product.ID, name string) (product.Group, error) {
		return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (product.Group, error) {
			return tt.Groups().GetByName(ctx, pid, name)
		})
	}
	for _, name := range []string{"Field Test OS Evaluation", "field test os evaluation", "FIELD TEST OS EVALUATION"} {
		got, err := byName(p.ID, name)
		wantEqual(h.t, "Groups().GetByName("+name+")", got, err, want)
	}
	_, err := byName(q.ID, want.Name)
	wantErr(h.t, "Groups().GetByName(another product)", err, store.ErrNotFound)
	_, err = byName(p.ID, "Field Test")
	wantErr(h.t, "Groups().GetByName(Field Test)", err, store.ErrNotFound)
}

func testGroupNameUnique(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	first := h.group(a.ID, p.ID, "Production")
	for _, name := range []string{"Production", "PRODUCTION"} {
		dup := h.newGroup(a.ID, p.ID, name)
		err := h.in(a.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), dup) })
		wantErr(h.t, "Groups().Create("+name+") after Production in the same product", err, store.ErrConflict)
	}
	// Every product has its own Production group.
	other := h.group(a.ID, q.ID, "Production")

	list := func(pid product.ID) ([]product.Group, error) {
		return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Group, error) {
			return tt.Groups().List(ctx, pid, store.Page{})
		})
	}
	got, err := list(p.ID)
	wantEqual(h.t, "Groups().List(DW100)", got, err, []product.Group{first})
	got, err = list(q.ID)
	wantEqual(h.t, "Groups().List(DW200)", got, err, []product.Group{other})
}

func testGroupList(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	ids := h.ids(product.GroupIDPrefix, 5)
	want := make([]product.Group, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		g := h.newGroup(a.ID, p.ID, product.DefaultGroups[i].Name)
		g.ID = product.GroupID(ids[i])
		h.mustIn("Groups().Create", a.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), g) })
		want[i] = g
	}
	h.group(a.ID, q.ID, "Development")
	checkList(h, "Groups().List(DW100)", want, func(g product.Group) string { return string(g.ID) },
		func(pg store.Page) ([]product.Group, error) {
			return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]product.Group, error) {
				return tt.Groups().List(ctx, p.ID, pg)
			})
		})
}

func testGroupUpdate(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	g := h.group(a.ID, p.ID, "Development")
	taken := h.group(a.ID, p.ID, "Production")
	update := func(x product.Group) error {
		return h.in(a.ID, func(tt store.TenantTx) error { return tt.Groups().Update(h.ctx(), x) })
	}

	v2 := g
	v2.Name, v2.Description, v2.OSFeed, v2.UpdatePolicy = "Lab", "Bench devices.", product.RetailEval, product.UpdateOSOnly
	v2.UpdatedAt, v2.Version = h.tick(), 2
	if err := update(v2); err != nil {
		h.t.Fatalf("Groups().Update(version 2) = %v, want nil", err)
	}
	got, err := h.getGroup(a.ID, p.ID, g.ID)
	wantEqual(h.t, "Groups().Get after Update", got, err, v2)

	stale := g
	stale.Name, stale.Version = "Lost update", 2
	wantErr(h.t, "Groups().Update(stale version)", update(stale), store.ErrStale)
	clash := v2
	clash.Name, clash.Version = "production", 3
	wantErr(h.t, "Groups().Update(name of another group)", update(clash), store.ErrConflict)
	moved := v2
	moved.ProductID, moved.Version = q.ID, 3
	wantErr(h.t, "Groups().Update(group under another product)", update(moved), store.ErrNotFound)
	got, err = h.getGroup(a.ID, p.ID, g.ID)
	wantEqual(h.t, "Groups().Get after failed Updates", got, err, v2)
	got, err = h.getGroup(a.ID, p.ID, taken.ID)
	wantEqual(h.t, "Groups().Get(Production) after failed Updates", got, err, taken)

	missing := h.newGroup(a.ID, p.ID, "Ghost")
	missing.Version = 2
	wantErr(h.t, "Groups().Update(missing)", update(missing), store.ErrNotFound)
}

func testGroupDelete(h *harness) {
	a := h.tenant("A")
	p, q := h.product(a.ID, "DW100"), h.product(a.ID, "DW200")
	g := h.group(a.ID, p.ID, "Development")
	del := func(pid product.ID, id product.GroupID, version int64) error {
		return h.in(a.ID, func(tt store.TenantTx) error { return tt.Groups().Delete(h.ctx(), pid, id, version) })
	}
	v2 := g
	v2.Description, v2.Version = "Renamed.", 2
	h.mustIn("Groups().Update", a.ID, func(tt store.TenantTx) error { return tt.Groups().Update(h.ctx(), v2) })

	wantErr(h.t, "Groups().Delete(version 1 of 2)", del(p.ID, g.ID, 1), store.ErrStale)
	wantErr(h.t, "Groups().Delete(another product's ID)", del(q.ID, g.ID, 0), store.ErrNotFound)
	got, err := h.getGroup(a.ID, p.ID, g.ID)
	wantEqual(h.t, "Groups().Get after failed Deletes", got, err, v2)

	if err := del(p.ID, g.ID, 2); err != nil {
		h.t.Fatalf("Groups().Delete(version 2) = %v, want nil", err)
	}
	_, err = h.getGroup(a.ID, p.ID, g.ID)
	wantErr(h.t, "Groups().Get after Delete", err, store.ErrNotFound)
	wantErr(h.t, "Groups().Delete again", del(p.ID, g.ID, 0), store.ErrNotFound)

	k := h.group(a.ID, p.ID, "Production")
	k.Version = 2
	h.mustIn("Groups().Update", a.ID, func(tt store.TenantTx) error { return tt.Groups().Update(h.ctx(), k) })
	if err := del(p.ID, k.ID, 0); err != nil {
		h.t.Fatalf("Groups().Delete(version 0) = %v, want nil", err)
	}
	_, err = h.getGroup(a.ID, p.ID, k.ID)
	wantErr(h.t, "Groups().Get after Delete(version 0)", err, store.ErrNotFound)
	if _, err := h.getProduct(a.ID, p.ID); err != nil {
		h.t.Errorf("Products().Get(DW100) after deleting its groups = %v, want nil", err)
	}
}

var memberTests = []test{
	{"PutReplacesRole", testMemberPut},
	{"ListOrdersByUserAndPages", testMemberList},
	{"Delete", testMemberDelete},
	{"CountRole", testMemberCountRole},
}

func (h *harness) getMember(tid tenant.ID, u auth.UserID) (auth.Member, error) {
	return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (auth.Member, error) { return tt.Members().Get(ctx, u) })
}

func testMemberPut(h *harness) {
	a := h.tenant("A")
	alice := h.user("alice", false)
	want := h.member(a.ID, alice, auth.Reader)
	got, err := h.getMember(a.ID, alice.ID)
	wantEqual(h.t, "Members().Get(alice)", got, err, want)

	for _, role := range []auth.Role{auth.Administrator, auth.Contributor} {
		want = h.member(a.ID, alice, role)
		got, err = h.getMember(a.ID, alice.ID)
		wantEqual(h.t, "Members().Get(alice) after Put("+string(role)+")", got, err, want)
	}
	list, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]auth.Member, error) {
		return tt.Members().List(ctx, store.Page{})
	})
	wantEqual(h.t, "Members().List after three Puts", list, err, []auth.Member{want})

	_, err = h.getMember(a.ID, h.user("bob", false).ID)
	wantErr(h.t, "Members().Get(bob, no role)", err, store.ErrNotFound)

	nobody := auth.UserID(ident.New(userPrefix, h.tick()))
	err = h.in(a.ID, func(tt store.TenantTx) error { return tt.Members().Put(h.ctx(), nobody, auth.Reader, h.tick()) })
	if err == nil {
		h.t.Errorf("Members().Put(missing user) = nil, want an error")
	}
}

func testMemberList(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	ids := h.ids(userPrefix, 5)
	want := make([]auth.Member, len(ids))
	roles := []auth.Role{auth.Reader, auth.Contributor, auth.Administrator, auth.Reader, auth.Contributor}
	for i := len(ids) - 1; i >= 0; i-- {
		u := h.newUser(fmt.Sprintf("user%d", i), i == 2)
		u.ID = auth.UserID(ids[i])
		h.must("Users().Create", func(tx store.Tx) error { return tx.Users().Create(h.ctx(), u) })
		want[i] = h.member(a.ID, u, roles[i])
	}
	h.member(b.ID, h.user("outsider", false), auth.Administrator)
	checkList(h, "Members().List", want, func(m auth.Member) string { return string(m.User.ID) },
		func(p store.Page) ([]auth.Member, error) {
			return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]auth.Member, error) {
				return tt.Members().List(ctx, p)
			})
		})
}

func testMemberDelete(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	alice, bob := h.user("alice", false), h.user("bob", false)
	h.member(a.ID, alice, auth.Administrator)
	keep := h.member(a.ID, bob, auth.Reader)
	elsewhere := h.member(b.ID, alice, auth.Contributor)
	del := func(u auth.UserID) error {
		return h.in(a.ID, func(tt store.TenantTx) error { return tt.Members().Delete(h.ctx(), u) })
	}

	if err := del(alice.ID); err != nil {
		h.t.Fatalf("Members().Delete(alice) = %v, want nil", err)
	}
	_, err := h.getMember(a.ID, alice.ID)
	wantErr(h.t, "Members().Get(alice) after Delete", err, store.ErrNotFound)
	wantErr(h.t, "Members().Delete(alice) again", del(alice.ID), store.ErrNotFound)

	got, err := h.getMember(a.ID, bob.ID)
	wantEqual(h.t, "Members().Get(bob)", got, err, keep)
	got, err = h.getMember(b.ID, alice.ID)
	wantEqual(h.t, "Members().Get(alice) in B", got, err, elsewhere)
	u, err := read(h, func(ctx context.Context, tx store.Tx) (auth.User, error) { return tx.Users().Get(ctx, alice.ID) })
	wantEqual(h.t, "Users().Get(alice) after Members().Delete", u, err, alice)
}

func testMemberCountRole(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	count := func(tid tenant.ID, r auth.Role) (int, error) {
		return readIn(h, tid, func(ctx context.Context, tt store.TenantTx) (int, error) { return tt.Members().CountRole(ctx, r) })
	}
	for _, r := range auth.Roles {
		n, err := count(a.ID, r)
		wantEqual(h.t, "Members().CountRole("+string(r)+") in an empty tenant", n, err, 0)
	}
	alice, bob, carol := h.user("alice", false), h.user("bob", false), h.user("carol", false)
	h.member(a.ID, alice, auth.Administrator)
	h.member(a.ID, bob, auth.Administrator)
	h.member(a.ID, carol, auth.Reader)
	h.member(b.ID, carol, auth.Administrator)
	h.member(a.ID, bob, auth.Contributor) // replaces Administrator

	want := map[auth.Role]int{auth.Administrator: 1, auth.Contributor: 1, auth.Reader: 1}
	for _, r := range auth.Roles {
		n, err := count(a.ID, r)
		wantEqual(h.t, "Members().CountRole("+string(r)+")", n, err, want[r])
	}
	n, err := count(b.ID, auth.Administrator)
	wantEqual(h.t, "Members().CountRole(Administrator) in B", n, err, 1)
}

var auditTests = []test{
	{"AppendListOrdersByIDAndPages", testAuditList},
	{"DuplicateIDConflicts", testAuditDuplicate},
	{"ListClampsLimit", testAuditClamp},
}

func testAuditList(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	ids := h.ids(audit.IDPrefix, 5)
	want := make([]audit.Event, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		e := h.newEvent(a.ID, fmt.Sprintf("product.update%d", i))
		e.ID = ids[i]
		h.mustIn("Audit().Append", a.ID, func(tt store.TenantTx) error { return tt.Audit().Append(h.ctx(), e) })
		want[i] = e
	}
	h.event(b.ID, "product.create")
	checkList(h, "Audit().List", want, func(e audit.Event) string { return e.ID },
		func(p store.Page) ([]audit.Event, error) {
			return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) {
				return tt.Audit().List(ctx, p)
			})
		})
}

func testAuditDuplicate(h *harness) {
	a := h.tenant("A")
	e := h.event(a.ID, "product.create")
	again := e
	again.Action = "product.delete"
	err := h.in(a.ID, func(tt store.TenantTx) error { return tt.Audit().Append(h.ctx(), again) })
	wantErr(h.t, "Audit().Append(existing ID)", err, store.ErrConflict)
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) {
		return tt.Audit().List(ctx, store.Page{})
	})
	wantEqual(h.t, "Audit().List", got, err, []audit.Event{e})
}

// maxPage is the largest page a store returns, whatever the caller asks for.
const maxPage = store.MaxLimit

func testAuditClamp(h *harness) {
	a := h.tenant("A")
	var all []audit.Event
	h.mustIn("Audit().Append ×MaxLimit+1", a.ID, func(tt store.TenantTx) error {
		for i := range maxPage + 1 {
			e := h.newEvent(a.ID, fmt.Sprintf("device.claim%d", i))
			if err := tt.Audit().Append(h.ctx(), e); err != nil {
				return err
			}
			all = append(all, e)
		}
		return nil
	})
	list := func(p store.Page) ([]audit.Event, error) {
		return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) { return tt.Audit().List(ctx, p) })
	}
	for _, limit := range []int{0, -1, maxPage + 1, 1 << 30} {
		p := store.Page{Limit: limit}
		got, err := list(p)
		wantEqual(h.t, fmt.Sprintf("Audit().List(%+v)", p), got, err, all[:maxPage])
	}
	p := store.Page{Limit: maxPage}
	got, err := list(p)
	wantEqual(h.t, fmt.Sprintf("Audit().List(%+v)", p), got, err, all[:maxPage])
	p = store.Page{After: all[maxPage-1].ID, Limit: maxPage}
	got, err = list(p)
	wantEqual(h.t, "Audit().List(After: the 1000th)", got, err, all[maxPage:])
}
