package storetest

import (
	"context"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

var nonceTests = []test{
	{"ConsumeOnce", testNonceConsumeOnce},
	{"BoundToDevice", testNonceBoundToDevice},
	{"Expiry", testNonceExpiry},
	{"ConcurrentConsumeOneWins", testNonceConcurrent},
}

func (h *harness) issueNonce(device, nonce string, expires time.Time) {
	h.t.Helper()
	h.must("Nonces().Issue", func(tx store.Tx) error { return tx.Nonces().Issue(h.ctx(), device, nonce, expires) })
}

func (h *harness) consume(device, nonce string, now time.Time) error {
	return h.tx(func(tx store.Tx) error { return tx.Nonces().Consume(h.ctx(), device, nonce, now) })
}

// testNonceConsumeOnce attacks rule 1: a replayed quote (its nonce used again) is refused.
func testNonceConsumeOnce(h *harness) {
	now := h.tick()
	h.issueNonce("dev-a", "n1", now.Add(time.Minute))
	if err := h.consume("dev-a", "n1", now); err != nil {
		h.t.Fatalf("Consume = %v, want nil", err)
	}
	wantErr(h.t, "Consume(again)", h.consume("dev-a", "n1", now), store.ErrNonceUsed)
	wantErr(h.t, "Consume(never issued)", h.consume("dev-a", "n2", now), store.ErrNotFound)
	wantErr(h.t, "Issue(same nonce again)", h.tx(func(tx store.Tx) error {
		return tx.Nonces().Issue(h.ctx(), "dev-a", "n1", now.Add(time.Hour))
	}), store.ErrConflict)
}

func testNonceBoundToDevice(h *harness) {
	now := h.tick()
	h.issueNonce("dev-a", "n1", now.Add(time.Minute))
	wantErr(h.t, "Consume(another device's nonce)", h.consume("dev-b", "n1", now), store.ErrNotFound)
	if err := h.consume("dev-a", "n1", now); err != nil {
		h.t.Errorf("Consume by its device after another's attempt = %v, want nil", err)
	}
}

func testNonceExpiry(h *harness) {
	now := h.tick()
	h.issueNonce("dev-a", "old", now.Add(time.Minute))
	h.issueNonce("dev-a", "new", now.Add(time.Hour))
	wantErr(h.t, "Consume(expired)", h.consume("dev-a", "old", now.Add(2*time.Minute)), store.ErrExpired)
	n, err := read(h, func(ctx context.Context, tx store.Tx) (int64, error) {
		return tx.Nonces().DeleteExpired(ctx, now.Add(2*time.Minute))
	})
	wantEqual(h.t, "DeleteExpired", n, err, int64(1))
	if err := h.consume("dev-a", "new", now.Add(2*time.Minute)); err != nil {
		h.t.Errorf("Consume(unexpired) = %v, want nil", err)
	}
}

func testNonceConcurrent(h *harness) {
	now := h.tick()
	h.issueNonce("dev-a", "n1", now.Add(time.Minute))
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = h.consume("dev-a", "n1", now) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		wantErr(h.t, "concurrent Consume", err, store.ErrNonceUsed)
	}
	if ok != 1 {
		h.t.Errorf("%d of %d concurrent Consumes succeeded, want exactly 1", ok, n)
	}
}
