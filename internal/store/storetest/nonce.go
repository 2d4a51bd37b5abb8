package storetest

import (
	"context"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

var nonceTests = []test{
	{"SpendOnce", testNonceSpendOnce},
	{"SpentByAnyDevice", testNonceSpentByAnyDevice},
	{"KeptUntilExpiry", testNonceKeptUntilExpiry},
	{"ConcurrentSpendOneWins", testNonceConcurrent},
	{"RefusalLeavesTxUsable", testNonceRefusalLeavesTxUsable},
}

func (h *harness) spend(device, nonce string, expires, now time.Time) error {
	return h.tx(func(tx store.Tx) error { return tx.Nonces().Spend(h.ctx(), device, nonce, expires, now) })
}

// testNonceSpendOnce attacks rule 1: a replayed quote (its nonce spent again) is refused.
func testNonceSpendOnce(h *harness) {
	now := h.tick()
	if err := h.spend("dev-a", "n1", now.Add(time.Minute), now); err != nil {
		h.t.Fatalf("Spend = %v, want nil", err)
	}
	wantErr(h.t, "Spend(again)", h.spend("dev-a", "n1", now.Add(time.Minute), now), store.ErrNonceUsed)
	if err := h.spend("dev-a", "n2", now.Add(time.Minute), now); err != nil {
		h.t.Errorf("Spend(another nonce) = %v, want nil", err)
	}
}

// testNonceSpentByAnyDevice: a nonce is spent once in all, not once per device.
func testNonceSpentByAnyDevice(h *harness) {
	now := h.tick()
	if err := h.spend("dev-a", "n1", now.Add(time.Minute), now); err != nil {
		h.t.Fatalf("Spend = %v, want nil", err)
	}
	wantErr(h.t, "Spend(by another device)", h.spend("dev-b", "n1", now.Add(time.Minute), now), store.ErrNonceUsed)
}

// testNonceKeptUntilExpiry: DeleteExpired removes only spent nonces past their expiry; one
// not yet expired stays spent.
func testNonceKeptUntilExpiry(h *harness) {
	now := h.tick()
	if err := h.spend("dev-a", "old", now.Add(time.Minute), now); err != nil {
		h.t.Fatal(err)
	}
	if err := h.spend("dev-a", "new", now.Add(time.Hour), now); err != nil {
		h.t.Fatal(err)
	}
	n, err := read(h, func(ctx context.Context, tx store.Tx) (int64, error) {
		return tx.Nonces().DeleteExpired(ctx, now.Add(2*time.Minute))
	})
	wantEqual(h.t, "DeleteExpired", n, err, int64(1))
	wantErr(h.t, "Spend(unexpired, after pruning)", h.spend("dev-a", "new", now.Add(time.Hour), now.Add(2*time.Minute)), store.ErrNonceUsed)
}

func testNonceConcurrent(h *harness) {
	now := h.tick()
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = h.spend("dev-a", "n1", now.Add(time.Minute), now) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		wantErr(h.t, "concurrent Spend", err, store.ErrNonceUsed)
	}
	if ok != 1 {
		h.t.Errorf("%d of %d concurrent Spends succeeded, want exactly 1", ok, n)
	}
}

// testNonceRefusalLeavesTxUsable: the attestation records a replay's refusal in the
// transaction whose Spend failed, so the failure must not abort it (PostgreSQL aborts a
// transaction on a unique violation).
func testNonceRefusalLeavesTxUsable(h *harness) {
	now := h.tick()
	if err := h.spend("dev-a", "n1", now.Add(time.Minute), now); err != nil {
		h.t.Fatal(err)
	}
	err := h.tx(func(tx store.Tx) error {
		wantErr(h.t, "Spend(again)", tx.Nonces().Spend(h.ctx(), "dev-a", "n1", now.Add(time.Minute), now), store.ErrNonceUsed)
		return tx.Nonces().Spend(h.ctx(), "dev-a", "n2", now.Add(time.Minute), now)
	})
	if err != nil {
		h.t.Errorf("Spend after a refused Spend in the same transaction = %v, want nil", err)
	}
}
