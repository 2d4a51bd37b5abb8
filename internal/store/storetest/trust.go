package storetest

import (
	"context"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
	"github.com/moat-iot/moat/internal/trust"
)

var signingKeyTests = []test{
	{"CreateGetList", testSigningKeyCreateGetList},
	{"Unique", testSigningKeyUnique},
	{"Revoke", testSigningKeyRevoke},
	{"TenantIsolation", testSigningKeyIsolation},
}

func (h *harness) signingKey(tid tenant.ID, name, tufID string) trust.SigningKey {
	h.t.Helper()
	k := trust.SigningKey{
		ID: trust.KeyID(ident.New(trust.IDPrefix, h.tick())), TenantID: tid, Name: name, TUFKeyID: tufID,
		Algorithm: trust.Algorithm, PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\n" + name + "\n-----END PUBLIC KEY-----\n",
		CreatedAt: h.tick(),
	}
	h.mustIn("SigningKeys().Create", tid, func(tt store.TenantTx) error { return tt.SigningKeys().Create(h.ctx(), k) })
	k.CreatedAt = k.CreatedAt.UTC()
	return k
}

func testSigningKeyCreateGetList(h *harness) {
	a := h.tenant("A")
	k1 := h.signingKey(a.ID, "ci", "aa")
	k2 := h.signingKey(a.ID, "release", "bb")
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Get(ctx, k1.ID)
	})
	wantEqual(h.t, "SigningKeys().Get", got, err, k1)
	checkList(h, "SigningKeys().List", []trust.SigningKey{k1, k2}, func(k trust.SigningKey) string { return string(k.ID) },
		func(p store.Page) ([]trust.SigningKey, error) {
			return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]trust.SigningKey, error) {
				return tt.SigningKeys().List(ctx, p)
			})
		})
	_, err = readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Get(ctx, "key_missing")
	})
	wantErr(h.t, "SigningKeys().Get(missing)", err, store.ErrNotFound)
}

func testSigningKeyUnique(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	h.signingKey(a.ID, "ci", "aa")
	create := func(tid tenant.ID, name, tufID string) error {
		return h.in(tid, func(tt store.TenantTx) error {
			return tt.SigningKeys().Create(h.ctx(), trust.SigningKey{
				ID: trust.KeyID(ident.New(trust.IDPrefix, h.tick())), TenantID: tid, Name: name, TUFKeyID: tufID,
				Algorithm: trust.Algorithm, PublicKeyPEM: "x", CreatedAt: h.tick(),
			})
		})
	}
	wantErr(h.t, "SigningKeys().Create(same name, other case)", create(a.ID, "CI", "cc"), store.ErrConflict)
	wantErr(h.t, "SigningKeys().Create(same TUF key ID)", create(a.ID, "other", "aa"), store.ErrConflict)
	// Another tenant may register the same public key and name: keys are public.
	if err := create(b.ID, "ci", "aa"); err != nil {
		h.t.Errorf("B: SigningKeys().Create(A's key) = %v, want nil", err)
	}
}

func testSigningKeyRevoke(h *harness) {
	a := h.tenant("A")
	k := h.signingKey(a.ID, "ci", "aa")
	first := h.tick()
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Revoke(ctx, k.ID, first)
	})
	want := k
	at := first.UTC()
	want.RevokedAt = &at
	wantEqual(h.t, "SigningKeys().Revoke", got, err, want)
	got, err = readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Revoke(ctx, k.ID, h.tick())
	})
	wantEqual(h.t, "SigningKeys().Revoke twice", got, err, want)
	_, err = readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Revoke(ctx, "key_missing", h.tick())
	})
	wantErr(h.t, "SigningKeys().Revoke(missing)", err, store.ErrNotFound)
}

func testSigningKeyIsolation(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	k := h.signingKey(a.ID, "ci", "aa")
	_, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Get(ctx, k.ID)
	})
	wantErr(h.t, "B: SigningKeys().Get(A's key)", err, store.ErrNotFound)
	_, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Revoke(ctx, k.ID, h.tick())
	})
	wantErr(h.t, "B: SigningKeys().Revoke(A's key)", err, store.ErrNotFound)
	list, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]trust.SigningKey, error) {
		return tt.SigningKeys().List(ctx, store.Page{})
	})
	wantEmpty(h.t, "B: SigningKeys().List", list, err)
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (trust.SigningKey, error) {
		return tt.SigningKeys().Get(ctx, k.ID)
	})
	wantEqual(h.t, "A: SigningKeys().Get after B's attempts", got, err, k)
}
