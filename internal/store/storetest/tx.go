package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/auth"
	"github.com/moat-iot/moat/internal/product"
	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var txTests = []test{
	{"RollsBackOnError", testTxRollback},
	{"ReadsOwnWrites", testTxReadsOwnWrites},
	{"Ping", testPing},
	{"TimestampsRoundTrip", testTimestamps},
}

var errAbort = errors.New("abort")

func testTxRollback(h *harness) {
	x := h.newTenant("Rolled Back")
	u := h.newUser("root", true)
	k, _ := auth.NewToken(u.ID, "ci", h.tick(), 0)
	p := h.newProduct(x.ID, "DW100")
	g := h.newGroup(x.ID, p.ID, "Production")
	e := h.newEvent(x.ID, "product.create")
	err := h.tx(func(tx store.Tx) error {
		ctx := h.ctx()
		tt, err := tx.ForTenant(x.ID)
		if err != nil {
			return err
		}
		err = errors.Join(
			tx.Tenants().Create(ctx, x),
			tx.Users().Create(ctx, u),
			tx.Tokens().Create(ctx, k),
			tt.Products().Create(ctx, p),
			tt.Groups().Create(ctx, g),
			tt.Members().Put(ctx, u.ID, auth.Administrator, h.tick()),
			tt.Audit().Append(ctx, e),
		)
		if err != nil {
			return err
		}
		if _, err := tx.Tenants().Get(ctx, x.ID); err != nil {
			return fmt.Errorf("read own write: %w", err)
		}
		return errAbort
	})
	wantErr(h.t, "InTx(writes, then an error)", err, errAbort)

	_, err = read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) { return tx.Tenants().Get(ctx, x.ID) })
	wantErr(h.t, "Tenants().Get after rollback", err, store.ErrNotFound)
	_, err = read(h, func(ctx context.Context, tx store.Tx) (auth.User, error) { return tx.Users().Get(ctx, u.ID) })
	wantErr(h.t, "Users().Get after rollback", err, store.ErrNotFound)
	_, err = h.getToken(k.ID)
	wantErr(h.t, "Tokens().Get after rollback", err, store.ErrNotFound)
	_, err = h.getProduct(x.ID, p.ID)
	wantErr(h.t, "Products().Get after rollback", err, store.ErrNotFound)
	_, err = h.getGroup(x.ID, p.ID, g.ID)
	wantErr(h.t, "Groups().Get after rollback", err, store.ErrNotFound)
	_, err = h.getMember(x.ID, u.ID)
	wantErr(h.t, "Members().Get after rollback", err, store.ErrNotFound)
	events, err := readIn(h, x.ID, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) {
		return tt.Audit().List(ctx, store.Page{})
	})
	wantEmpty(h.t, "Audit().List after rollback", events, err)
	n, err := read(h, func(ctx context.Context, tx store.Tx) (int, error) { return tx.Users().CountOperators(ctx) })
	wantEqual(h.t, "Users().CountOperators() after rollback", n, err, 0)

	// The same records commit when fn succeeds: the rollback left nothing in the way.
	h.must("InTx(the same writes)", func(tx store.Tx) error {
		return errors.Join(tx.Tenants().Create(h.ctx(), x), tx.Users().Create(h.ctx(), u))
	})
}

func testTxReadsOwnWrites(h *harness) {
	a := h.newTenant("A")
	p := h.newProduct(a.ID, "DW100")
	h.must("InTx(create and read)", func(tx store.Tx) error {
		ctx := h.ctx()
		if err := tx.Tenants().Create(ctx, a); err != nil {
			return err
		}
		tt, err := tx.ForTenant(a.ID)
		if err != nil {
			return err
		}
		if err := tt.Products().Create(ctx, p); err != nil {
			return err
		}
		got, err := tt.Products().GetByName(ctx, "dw100")
		wantEqual(h.t, "Products().GetByName(dw100) in the creating transaction", got, err, p)
		return nil
	})
}

func testPing(h *harness) {
	if err := h.s.Ping(h.ctx()); err != nil {
		h.t.Errorf("Ping() = %v, want nil", err)
	}
}

// testTimestamps checks that every stored time comes back as the same instant, at the
// microsecond precision both databases keep, including its edges.
func testTimestamps(h *harness) {
	at := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			h.t.Fatal(err)
		}
		return t
	}
	created, updated := at("1999-12-31T23:59:59.999999-08:00"), at("2038-01-19T03:14:08.000001+05:30")
	x := h.newTenant("A")
	x.CreatedAt, x.UpdatedAt = created, updated
	h.must("Tenants().Create", func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), x) })
	gotT, err := read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) { return tx.Tenants().Get(ctx, x.ID) })
	checkTimes(h, "Tenants().Get", err, gotT.CreatedAt, created, gotT.UpdatedAt, updated)

	p := h.newProduct(x.ID, "DW100")
	p.CreatedAt, p.UpdatedAt = updated, created
	h.mustIn("Products().Create", x.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), p) })
	gotP, err := h.getProduct(x.ID, p.ID)
	checkTimes(h, "Products().Get", err, gotP.CreatedAt, updated, gotP.UpdatedAt, created)

	later := at("2100-02-28T12:00:00.5+00:00")
	p.UpdatedAt, p.Version = later, 2
	h.mustIn("Products().Update", x.ID, func(tt store.TenantTx) error { return tt.Products().Update(h.ctx(), p) })
	gotP, err = h.getProduct(x.ID, p.ID)
	checkTimes(h, "Products().Get after Update", err, gotP.CreatedAt, updated, gotP.UpdatedAt, later)

	g := h.newGroup(x.ID, p.ID, "Production")
	g.CreatedAt, g.UpdatedAt = created, later
	h.mustIn("Groups().Create", x.ID, func(tt store.TenantTx) error { return tt.Groups().Create(h.ctx(), g) })
	gotG, err := h.getGroup(x.ID, p.ID, g.ID)
	checkTimes(h, "Groups().Get", err, gotG.CreatedAt, created, gotG.UpdatedAt, later)

	u := h.newUser("alice", false)
	u.CreatedAt = updated
	h.must("Users().Create", func(tx store.Tx) error { return tx.Users().Create(h.ctx(), u) })
	gotU, err := read(h, func(ctx context.Context, tx store.Tx) (auth.User, error) { return tx.Users().Get(ctx, u.ID) })
	checkTimes(h, "Users().Get", err, gotU.CreatedAt, updated)

	k, _ := auth.NewToken(u.ID, "ci", created, 0)
	k.ExpiresAt = &later
	h.must("Tokens().Create", func(tx store.Tx) error { return tx.Tokens().Create(h.ctx(), k) })
	gotK, err := h.revoke(u.ID, k.ID, updated)
	if err != nil || gotK.ExpiresAt == nil || gotK.RevokedAt == nil {
		h.t.Fatalf("Tokens().Revoke = %+v, %v, want ExpiresAt and RevokedAt set, nil", gotK, err)
	}
	checkTimes(h, "Tokens().Revoke", nil, gotK.CreatedAt, created, *gotK.ExpiresAt, later, *gotK.RevokedAt, updated)

	e := h.newEvent(x.ID, "product.create")
	e.At = later
	h.mustIn("Audit().Append", x.ID, func(tt store.TenantTx) error { return tt.Audit().Append(h.ctx(), e) })
	gotE, err := readIn(h, x.ID, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) {
		return tt.Audit().List(ctx, store.Page{})
	})
	if err != nil || len(gotE) != 1 {
		h.t.Fatalf("Audit().List = %d events, %v, want 1, nil", len(gotE), err)
	}
	checkTimes(h, "Audit().List", nil, gotE[0].At, later)
}

// checkTimes compares pairs of got, want times as instants.
func checkTimes(h *harness, call string, err error, pairs ...time.Time) {
	h.t.Helper()
	if err != nil {
		h.t.Fatalf("%s error = %v, want nil", call, err)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		got, want := pairs[i], pairs[i+1]
		if !got.UTC().Equal(want.UTC()) {
			h.t.Errorf("%s time %d = %s, want %s", call, i/2, got.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano))
		}
	}
}

var concurrencyTests = []test{
	{"CreateProducts", testConcurrentCreates},
	{"UpdateRaceOneWins", testConcurrentUpdates},
}

func testConcurrentCreates(h *harness) {
	a := h.tenant("A")
	const n = 20
	ps := make([]product.Product, n)
	for i := range ps {
		ps[i] = h.newProduct(a.ID, fmt.Sprintf("DW%03d", i))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Go(func() {
			errs[i] = h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Create(h.ctx(), ps[i]) })
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			h.t.Errorf("Products().Create(%s) concurrently = %v, want nil", ps[i].Name, err)
		}
	}
	got, err := h.listProducts(a.ID)
	wantEqual(h.t, "Products().List after concurrent creates", got, err, ps) // IDs ascend with i
}

func testConcurrentUpdates(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	const n = 10
	errs := make([]error, n)
	writes := make([]product.Product, n)
	for i := range writes {
		writes[i] = p
		writes[i].Name, writes[i].UpdatedAt, writes[i].Version = fmt.Sprintf("Writer %d", i), h.tick(), 2
	}
	var wg sync.WaitGroup
	for i := range writes {
		wg.Go(func() {
			errs[i] = h.in(a.ID, func(tt store.TenantTx) error { return tt.Products().Update(h.ctx(), writes[i]) })
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			h.t.Errorf("Products().Update(version 2) by writers %d and %d both = nil, want one ErrStale", winner, i)
		case !errors.Is(err, store.ErrStale):
			h.t.Errorf("Products().Update(version 2) by writer %d = %v, want nil or %v", i, err, store.ErrStale)
		}
	}
	if winner < 0 {
		h.t.Fatalf("Products().Update(version 2) by %d writers: none succeeded, want one: %v", n, errs)
	}
	if stale := slices.DeleteFunc(slices.Clone(errs), func(err error) bool { return !errors.Is(err, store.ErrStale) }); len(stale) != n-1 {
		h.t.Errorf("Products().Update(version 2) by %d writers = %d ErrStale, want %d", n, len(stale), n-1)
	}
	got, err := h.getProduct(a.ID, p.ID)
	wantEqual(h.t, "Products().Get after the race", got, err, writes[winner])
}
