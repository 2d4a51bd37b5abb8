package storetest

import (
	"context"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// InReadTx promises one consistent snapshot, no waiting for writers, and no writes.
var readTxTests = []test{
	{"SeesCommittedWrites", testReadTxSeesCommitted},
	{"RefusesWrites", testReadTxRefusesWrites},
	{"RefusesDeviceWrites", testReadTxRefusesDeviceWrites},
	{"DoesNotWaitForWriters", testReadTxDoesNotWait},
	{"SeesOneSnapshot", testReadTxSnapshot},
}

// readTx runs fn in a read-only transaction.
func (h *harness) readTx(ctx context.Context, fn func(store.Tx) error) error {
	return h.s.InReadTx(ctx, fn)
}

func (h *harness) listTenantsRO(ctx context.Context, tx store.Tx) []tenant.Tenant {
	h.t.Helper()
	got, err := tx.Tenants().List(ctx, store.Page{})
	if err != nil {
		h.t.Fatalf("Tenants().List in InReadTx error = %v, want nil", err)
	}
	return got
}

func testReadTxSeesCommitted(h *harness) {
	a := h.tenant("A")
	p := h.product(a.ID, "DW100")
	err := h.readTx(h.ctx(), func(tx store.Tx) error {
		got, err := tx.Tenants().Get(h.ctx(), a.ID)
		wantEqual(h.t, "Tenants().Get in InReadTx", got, err, a)
		tt, err := tx.ForTenant(a.ID)
		if err != nil {
			return err
		}
		gotP, err := tt.Products().GetByName(h.ctx(), "dw100")
		wantEqual(h.t, "Products().GetByName in InReadTx", gotP, err, p)
		_, err = tx.ForTenant("")
		wantErr(h.t, `ForTenant("") in InReadTx`, err, store.ErrNoTenant)
		return nil
	})
	if err != nil {
		h.t.Fatalf("InReadTx = %v, want nil", err)
	}
}

func testReadTxRefusesWrites(h *harness) {
	a := h.tenant("A")
	x := h.newTenant("Written in a read transaction")
	err := h.readTx(h.ctx(), func(tx store.Tx) error { return tx.Tenants().Create(h.ctx(), x) })
	if err == nil {
		h.t.Errorf("InReadTx(Tenants().Create) = nil, want an error")
	}
	p := h.newProduct(a.ID, "DW100")
	err = h.readTx(h.ctx(), func(tx store.Tx) error {
		tt, err := tx.ForTenant(a.ID)
		if err != nil {
			return err
		}
		return tt.Products().Create(h.ctx(), p)
	})
	if err == nil {
		h.t.Errorf("InReadTx(Products().Create) = nil, want an error")
	}
	_, err = read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) { return tx.Tenants().Get(ctx, x.ID) })
	wantErr(h.t, "Tenants().Get(tenant created in InReadTx)", err, store.ErrNotFound)
	_, err = h.getProduct(a.ID, p.ID)
	wantErr(h.t, "Products().Get(product created in InReadTx)", err, store.ErrNotFound)
}

// testReadTxDoesNotWait reads while a write transaction is open and holds the write lock.
func testReadTxDoesNotWait(h *harness) {
	a := h.tenant("A")
	x := h.newTenant("Uncommitted")
	written, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // also when the test fails half-way: the writer holds a connection
	go func() {
		done <- h.tx(func(tx store.Tx) error {
			err := tx.Tenants().Create(h.ctx(), x)
			close(written)
			<-release
			return err
		})
	}()
	<-written
	// A reader that waited for the writer would wait forever: the writer commits only
	// after the read. The deadline turns that into a failure.
	ctx, cancel := context.WithTimeout(h.ctx(), 30*time.Second)
	err := h.readTx(ctx, func(tx store.Tx) error {
		wantEqual(h.t, "Tenants().List in InReadTx during a write", h.listTenantsRO(ctx, tx), nil, []tenant.Tenant{a})
		_, err := tx.Tenants().Get(ctx, x.ID)
		wantErr(h.t, "Tenants().Get(uncommitted) in InReadTx", err, store.ErrNotFound)
		return nil
	})
	cancel()
	unblock()
	if err != nil {
		h.t.Errorf("InReadTx during an open write transaction = %v, want nil", err)
	}
	if err := <-done; err != nil {
		h.t.Fatalf("InTx(Tenants().Create) = %v, want nil", err)
	}
	err = h.readTx(h.ctx(), func(tx store.Tx) error {
		wantEqual(h.t, "Tenants().List in InReadTx after the commit", h.listTenantsRO(h.ctx(), tx), nil, []tenant.Tenant{a, x})
		return nil
	})
	if err != nil {
		h.t.Errorf("InReadTx after the write = %v, want nil", err)
	}
}

// testReadTxSnapshot commits a write between two reads of one read-only transaction: the
// second read must not see it.
func testReadTxSnapshot(h *harness) {
	a := h.tenant("A")
	x := h.newTenant("Committed meanwhile")
	err := h.readTx(h.ctx(), func(tx store.Tx) error {
		wantEqual(h.t, "Tenants().List in InReadTx", h.listTenantsRO(h.ctx(), tx), nil, []tenant.Tenant{a})
		done := make(chan error, 1)
		go func() { done <- h.tx(func(w store.Tx) error { return w.Tenants().Create(h.ctx(), x) }) }()
		if err := <-done; err != nil {
			h.t.Fatalf("InTx(Tenants().Create) during InReadTx = %v, want nil", err)
		}
		wantEqual(h.t, "Tenants().List again in the same InReadTx", h.listTenantsRO(h.ctx(), tx), nil, []tenant.Tenant{a})
		_, err := tx.Tenants().Get(h.ctx(), x.ID)
		wantErr(h.t, "Tenants().Get(committed after the snapshot) in InReadTx", err, store.ErrNotFound)
		return nil
	})
	if err != nil {
		h.t.Fatalf("InReadTx = %v, want nil", err)
	}
	got, err := read(h, func(ctx context.Context, tx store.Tx) ([]tenant.Tenant, error) {
		return tx.Tenants().List(ctx, store.Page{})
	})
	wantEqual(h.t, "Tenants().List in a new transaction", got, err, []tenant.Tenant{a, x})
}
