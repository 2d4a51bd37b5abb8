package storetest

import (
	"fmt"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

var leaseTests = []test{
	{"FirstClaimWins", testLeaseFirstClaimWins},
	{"LapsesAtExpiry", testLeaseLapsesAtExpiry},
	{"NamesIndependent", testLeaseNamesIndependent},
	{"ConcurrentClaimsOneWins", testLeaseConcurrent},
}

type leaseResult struct {
	granted bool
	until   time.Time
}

func (h *harness) acquire(name, holder string, now, expires time.Time) leaseResult {
	h.t.Helper()
	var r leaseResult
	h.must("Leases().Acquire", func(tx store.Tx) error {
		var err error
		r.granted, r.until, err = tx.Leases().Acquire(h.ctx(), name, holder, now, expires)
		return err
	})
	return r
}

func (h *harness) wantLease(call string, got leaseResult, granted bool, until time.Time) {
	h.t.Helper()
	if got.granted != granted || !got.until.Equal(until) {
		h.t.Errorf("%s = %v, %v; want %v, %v", call, got.granted, got.until, granted, until)
	}
}

// testLeaseFirstClaimWins attacks the one-replica rule of background jobs: while a period
// is claimed, neither another replica nor the holder itself can claim it again.
func testLeaseFirstClaimWins(h *harness) {
	now := h.tick()
	end := now.Add(time.Minute)
	h.wantLease("Acquire(a, free)", h.acquire("refresh", "a", now, end), true, end)
	h.wantLease("Acquire(b, held by a)", h.acquire("refresh", "b", now.Add(30*time.Second), now.Add(90*time.Second)), false, end)
	h.wantLease("Acquire(a again, early)", h.acquire("refresh", "a", now.Add(59*time.Second), now.Add(2*time.Minute)), false, end)
}

// testLeaseLapsesAtExpiry: a holder that stopped leaves a lease that lapses at its expiry,
// when another claimant gets it.
func testLeaseLapsesAtExpiry(h *harness) {
	now := h.tick()
	end := now.Add(time.Minute)
	h.acquire("refresh", "a", now, end)
	next := end.Add(time.Minute)
	h.wantLease("Acquire(b, at a's expiry)", h.acquire("refresh", "b", end, next), true, next)
	h.wantLease("Acquire(a, held by b)", h.acquire("refresh", "a", end.Add(time.Second), end.Add(2*time.Minute)), false, next)
	later := next.Add(time.Hour)
	h.wantLease("Acquire(a, after b's expiry)", h.acquire("refresh", "a", later, later.Add(time.Minute)), true, later.Add(time.Minute))
}

func testLeaseNamesIndependent(h *harness) {
	now := h.tick()
	end := now.Add(time.Minute)
	h.acquire("refresh", "a", now, end)
	h.wantLease("Acquire(b, another job)", h.acquire("gc", "b", now, end), true, end)
}

// testLeaseConcurrent: of many replicas claiming a free lease at once, exactly one wins.
func testLeaseConcurrent(h *harness) {
	now := h.tick()
	end := now.Add(time.Minute)
	const n = 8
	var wg sync.WaitGroup
	results := make([]leaseResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = h.tx(func(tx store.Tx) error {
				var err error
				results[i].granted, results[i].until, err = tx.Leases().Acquire(h.ctx(), "refresh", fmt.Sprintf("replica-%d", i), now, end)
				return err
			})
		})
	}
	wg.Wait()
	granted := 0
	for i, r := range results {
		if errs[i] != nil {
			h.t.Errorf("Acquire by replica %d = %v, want nil", i, errs[i])
		}
		if r.granted {
			granted++
		}
		if !r.until.Equal(end) {
			h.t.Errorf("Acquire by replica %d: until %v, want %v", i, r.until, end)
		}
	}
	if granted != 1 {
		h.t.Errorf("%d of %d concurrent claims granted, want exactly 1", granted, n)
	}
}
