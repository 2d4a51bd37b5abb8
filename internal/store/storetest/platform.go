package storetest

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var tenantTests = []test{
	{"CreateGet", testTenantCreateGet},
	{"GetByNameFoldsCase", testTenantGetByName},
	{"DuplicateNameConflicts", testTenantDuplicateName},
	{"ListOrdersByIDAndPages", testTenantList},
	{"ListForUser", testTenantListForUser},
}

func testTenantCreateGet(h *harness) {
	want := h.tenant("Contoso")
	got, err := read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) { return tx.Tenants().Get(ctx, want.ID) })
	wantEqual(h.t, "Tenants().Get("+string(want.ID)+")", got, err, want)

	missing := tenant.ID(ident.New(tenant.IDPrefix, h.tick()))
	_, err = read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) { return tx.Tenants().Get(ctx, missing) })
	wantErr(h.t, "Tenants().Get(missing)", err, store.ErrNotFound)
}

func testTenantGetByName(h *harness) {
	want := h.tenant("Contoso Ltd")
	for _, name := range []string{"Contoso Ltd", "contoso ltd", "CONTOSO LTD", "cOnToSo lTd"} {
		got, err := read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) {
			return tx.Tenants().GetByName(ctx, name)
		})
		wantEqual(h.t, "Tenants().GetByName("+name+")", got, err, want)
	}
	_, err := read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) {
		return tx.Tenants().GetByName(ctx, "Contoso")
	})
	wantErr(h.t, "Tenants().GetByName(Contoso)", err, store.ErrNotFound)
}

func testTenantDuplicateName(h *harness) {
	first := h.tenant("Acme")
	for _, name := range []string{"Acme", "ACME", "acme"} {
		dup := h.newTenant(name)
		err := h.tx(func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), dup) })
		wantErr(h.t, "Tenants().Create("+name+") after Acme", err, store.ErrConflict)
	}
	sameID := h.newTenant("Other")
	sameID.ID = first.ID
	err := h.tx(func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), sameID) })
	wantErr(h.t, "Tenants().Create(existing ID)", err, store.ErrConflict)

	got, err := read(h, func(ctx context.Context, tx store.Tx) ([]tenant.Tenant, error) {
		return tx.Tenants().List(ctx, store.Page{})
	})
	wantEqual(h.t, "Tenants().List after conflicts", got, err, []tenant.Tenant{first})
}

func testTenantList(h *harness) {
	ids := h.ids(tenant.IDPrefix, 5)
	want := make([]tenant.Tenant, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		x := h.newTenant("Tenant " + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i:i+1])
		x.ID = tenant.ID(ids[i])
		h.must("Tenants().Create", func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), x) })
		want[i] = x
	}
	checkList(h, "Tenants().List", want, func(x tenant.Tenant) string { return string(x.ID) },
		func(p store.Page) ([]tenant.Tenant, error) {
			return read(h, func(ctx context.Context, tx store.Tx) ([]tenant.Tenant, error) { return tx.Tenants().List(ctx, p) })
		})
}

func testTenantListForUser(h *harness) {
	ids := h.ids(tenant.IDPrefix, 4)
	all := make([]tenant.Tenant, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		x := h.newTenant("Tenant " + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i:i+1])
		x.ID = tenant.ID(ids[i])
		h.must("Tenants().Create", func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), x) })
		all[i] = x
	}
	alice, bob, carol := h.user("alice", false), h.user("bob", false), h.user("carol", true)
	h.member(all[3].ID, alice, auth.Reader)
	h.member(all[0].ID, alice, auth.Administrator)
	h.member(all[2].ID, alice, auth.Contributor)
	h.member(all[1].ID, bob, auth.Reader)

	listFor := func(u auth.UserID) func(store.Page) ([]tenant.Tenant, error) {
		return func(p store.Page) ([]tenant.Tenant, error) {
			return read(h, func(ctx context.Context, tx store.Tx) ([]tenant.Tenant, error) {
				return tx.Tenants().ListForUser(ctx, u, p)
			})
		}
	}
	id := func(x tenant.Tenant) string { return string(x.ID) }
	checkList(h, "Tenants().ListForUser(alice)", []tenant.Tenant{all[0], all[2], all[3]}, id, listFor(alice.ID))
	checkList(h, "Tenants().ListForUser(bob)", []tenant.Tenant{all[1]}, id, listFor(bob.ID))
	got, err := listFor(carol.ID)(store.Page{})
	wantEmpty(h.t, "Tenants().ListForUser(carol, an operator without roles)", got, err)
}

var userTests = []test{
	{"CreateGet", testUserCreateGet},
	{"CountOperators", testUserCountOperators},
	{"Roles", testUserRoles},
}

func testUserCreateGet(h *harness) {
	for _, want := range []auth.User{h.user("alice", false), h.user("root", true)} {
		got, err := read(h, func(ctx context.Context, tx store.Tx) (auth.User, error) { return tx.Users().Get(ctx, want.ID) })
		wantEqual(h.t, "Users().Get("+string(want.ID)+")", got, err, want)
	}
	missing := auth.UserID(ident.New(userPrefix, h.tick()))
	_, err := read(h, func(ctx context.Context, tx store.Tx) (auth.User, error) { return tx.Users().Get(ctx, missing) })
	wantErr(h.t, "Users().Get(missing)", err, store.ErrNotFound)

	dup := h.newUser("mallory", true)
	dup.ID = h.user("bob", false).ID
	err = h.tx(func(tx store.Tx) error { return tx.Users().Create(h.ctx(), dup) })
	wantErr(h.t, "Users().Create(existing ID)", err, store.ErrConflict)
}

func testUserCountOperators(h *harness) {
	count := func() (int, error) {
		return read(h, func(ctx context.Context, tx store.Tx) (int, error) { return tx.Users().CountOperators(ctx) })
	}
	n, err := count()
	wantEqual(h.t, "Users().CountOperators() on an empty store", n, err, 0)
	h.user("alice", false)
	h.user("root", true)
	h.user("bob", false)
	h.user("admin", true)
	n, err = count()
	wantEqual(h.t, "Users().CountOperators()", n, err, 2)
}

func testUserRoles(h *harness) {
	a, b, c := h.tenant("A"), h.tenant("B"), h.tenant("C")
	alice, bob := h.user("alice", false), h.user("bob", false)
	h.member(a.ID, alice, auth.Reader)
	h.member(b.ID, alice, auth.Administrator)
	h.member(c.ID, bob, auth.Contributor)
	h.member(a.ID, alice, auth.Contributor) // replaces Reader

	roles := func(u auth.UserID) (map[tenant.ID]auth.Role, error) {
		return read(h, func(ctx context.Context, tx store.Tx) (map[tenant.ID]auth.Role, error) {
			return tx.Users().Roles(ctx, u)
		})
	}
	got, err := roles(alice.ID)
	wantEqual(h.t, "Users().Roles(alice)", got, err, map[tenant.ID]auth.Role{a.ID: auth.Contributor, b.ID: auth.Administrator})
	got, err = roles(bob.ID)
	wantEqual(h.t, "Users().Roles(bob)", got, err, map[tenant.ID]auth.Role{c.ID: auth.Contributor})
	got, err = roles(h.user("carol", true).ID)
	if err != nil || len(got) != 0 {
		h.t.Errorf("Users().Roles(carol) = %v, %v, want no roles, nil", got, err)
	}
}

var tokenTests = []test{
	{"CreateGet", testTokenCreateGet},
	{"ListForUser", testTokenListForUser},
	{"RevokeByOwner", testTokenRevoke},
	{"RevokeByOtherUserIsNotFound", testTokenRevokeOtherUser},
}

func (h *harness) token(u auth.UserID, name string, ttl time.Duration) auth.Token {
	h.t.Helper()
	k, secret := auth.NewToken(u, name, h.tick(), ttl)
	if secret == "" {
		h.t.Fatalf("auth.NewToken(%s, %s) secret is empty", u, name)
	}
	h.must("Tokens().Create("+name+")", func(tx store.Tx) error { return tx.Tokens().Create(h.ctx(), k) })
	return k
}

func (h *harness) getToken(id auth.TokenID) (auth.Token, error) {
	return read(h, func(ctx context.Context, tx store.Tx) (auth.Token, error) { return tx.Tokens().Get(ctx, id) })
}

func (h *harness) revoke(u auth.UserID, id auth.TokenID, at time.Time) (auth.Token, error) {
	return read(h, func(ctx context.Context, tx store.Tx) (auth.Token, error) { return tx.Tokens().Revoke(ctx, u, id, at) })
}

func testTokenCreateGet(h *harness) {
	alice := h.user("alice", false)
	for _, want := range []auth.Token{h.token(alice.ID, "ci", 0), h.token(alice.ID, "laptop", 90*24*time.Hour)} {
		got, err := h.getToken(want.ID)
		wantEqual(h.t, "Tokens().Get("+string(want.ID)+")", got, err, want)
		if len(got.Hash) != 32 {
			h.t.Errorf("Tokens().Get(%s).Hash = %d bytes, want 32", want.ID, len(got.Hash))
		}
	}
	_, err := h.getToken(auth.TokenID(ident.New("tok", h.tick())))
	wantErr(h.t, "Tokens().Get(missing)", err, store.ErrNotFound)

	nobody := auth.UserID(ident.New(userPrefix, h.tick()))
	orphan, _ := auth.NewToken(nobody, "orphan", h.tick(), 0)
	err = h.tx(func(tx store.Tx) error { return tx.Tokens().Create(h.ctx(), orphan) })
	if err == nil {
		h.t.Errorf("Tokens().Create(token of a missing user) = nil, want an error")
	}
}

func testTokenListForUser(h *harness) {
	alice, bob := h.user("alice", false), h.user("bob", false)
	var want []auth.Token
	for _, name := range []string{"a1", "a2", "a3", "a4", "a5"} {
		want = append(want, h.token(alice.ID, name, time.Hour))
		h.token(bob.ID, "b-"+name, 0)
	}
	slices.SortFunc(want, func(a, b auth.Token) int { return strings.Compare(string(a.ID), string(b.ID)) })
	checkList(h, "Tokens().ListForUser(alice)", want, func(k auth.Token) string { return string(k.ID) },
		func(p store.Page) ([]auth.Token, error) {
			return read(h, func(ctx context.Context, tx store.Tx) ([]auth.Token, error) {
				return tx.Tokens().ListForUser(ctx, alice.ID, p)
			})
		})
	carol := h.user("carol", false)
	got, err := read(h, func(ctx context.Context, tx store.Tx) ([]auth.Token, error) {
		return tx.Tokens().ListForUser(ctx, carol.ID, store.Page{})
	})
	wantEmpty(h.t, "Tokens().ListForUser(carol)", got, err)
}

func testTokenRevoke(h *harness) {
	alice := h.user("alice", false)
	k := h.token(alice.ID, "ci", time.Hour)
	other := h.token(alice.ID, "laptop", 0)

	first := h.tick()
	want := k
	want.RevokedAt = &first
	got, err := h.revoke(alice.ID, k.ID, first)
	wantEqual(h.t, "Tokens().Revoke(alice, ci)", got, err, want)
	got, err = h.getToken(k.ID)
	wantEqual(h.t, "Tokens().Get(ci) after Revoke", got, err, want)

	// Revoking again keeps the first time: the audit trail says when it stopped working.
	got, err = h.revoke(alice.ID, k.ID, h.tick())
	wantEqual(h.t, "Tokens().Revoke(alice, ci) again", got, err, want)
	got, err = h.getToken(k.ID)
	wantEqual(h.t, "Tokens().Get(ci) after second Revoke", got, err, want)

	got, err = h.getToken(other.ID)
	wantEqual(h.t, "Tokens().Get(laptop), not revoked", got, err, other)

	_, err = h.revoke(alice.ID, auth.TokenID(ident.New("tok", h.tick())), h.tick())
	wantErr(h.t, "Tokens().Revoke(alice, missing)", err, store.ErrNotFound)
}

func testTokenRevokeOtherUser(h *harness) {
	alice, mallory := h.user("alice", false), h.user("mallory", false)
	k := h.token(alice.ID, "ci", 0)
	_, err := h.revoke(mallory.ID, k.ID, h.tick())
	wantErr(h.t, "Tokens().Revoke(mallory, alice's token)", err, store.ErrNotFound)
	got, err := h.getToken(k.ID)
	wantEqual(h.t, "Tokens().Get(alice's token) after mallory's Revoke", got, err, k)
}
