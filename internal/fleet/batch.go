package fleet

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moat-iot/moat/internal/store"
)

// Group commit of attestation writes (issue 15). An attestation's crypto (verifying the
// evidence, signing the certificate) runs in its caller's goroutine, in parallel with the
// others; what it must make durable (the spent nonce, the certificate record, the
// device's new state) is one write, and concurrent attestations share one transaction and
// so one commit (one fsync on SQLite, one WAL flush on PostgreSQL). Each caller still gets
// its own result, after the commit that made its write durable: a certificate is never
// returned before its spent nonce is on disk (DESIGN rule 1; attacked by
// TestNonce_SingleUseAcrossRestart).
//
// A write that fails rolls its batch back; the batch is then retried without it, so one
// failure fails no other caller (TestGroupCommit_OneFailureDoesNotFailOthers). The queue
// is bounded: past DefaultAttestQueue waiting writes a caller is turned away at once with
// ErrBusy, which the device API answers 503 with Retry-After (TestGroupCommit_QueueFullIs503),
// rather than queueing without bound.

// Defaults of the group commit (Config.AttestQueue, AttestBatch, AttestBatchWait).
const (
	DefaultAttestQueue     = 1024
	DefaultAttestBatch     = 128
	DefaultAttestBatchWait = 2 * time.Millisecond
	// BusyRetryAfter is what a caller turned away with ErrBusy is told to wait.
	BusyRetryAfter = 2 * time.Second
	// batchTimeout bounds one batch's transaction, retries included.
	batchTimeout = 30 * time.Second
)

// ErrBusy: the attestation write queue is full; retry after BusyRetryAfter.
var ErrBusy = errors.New("attestation queue full")

// committer runs the writes of concurrent callers in shared transactions. It has no
// goroutine of its own while idle: the caller that finds it idle starts one, which ends
// when the queue is empty. Safe for concurrent use.
type committer struct {
	st       store.Store
	maxQueue int
	maxBatch int
	maxWait  time.Duration

	mu      sync.Mutex
	queue   []*pending
	running bool
	more    chan struct{} // a write was queued; capacity 1
	// coming counts callers that announced a write and have not queued it yet: the
	// committer waits up to maxWait for them, never for callers that do not exist (a lone
	// caller does not wait at all).
	coming atomic.Int64
}

type pending struct {
	fn   func(ctx context.Context, tx store.Tx) error
	done chan error // capacity 1: the committer never blocks on a caller that left
}

func newCommitter(st store.Store, maxQueue, maxBatch int, maxWait time.Duration) *committer {
	return &committer{st: st, maxQueue: maxQueue, maxBatch: maxBatch, maxWait: maxWait, more: make(chan struct{}, 1)}
}

// ticket is a caller's announcement that it will queue a write soon.
type ticket struct {
	c    *committer
	done atomic.Bool
}

// announce tells the committer a write is on its way; release (or do) withdraws it.
func (c *committer) announce() *ticket {
	c.coming.Add(1)
	return &ticket{c: c}
}

// release withdraws the announcement; it may be called more than once.
func (t *ticket) release() {
	if t != nil && t.done.CompareAndSwap(false, true) {
		t.c.coming.Add(-1)
	}
}

// do queues fn and returns its error once the transaction it ran in committed (nil) or
// its batch was retried without it (fn's error). fn must do only store work and may run
// more than once (a batch is retried after another write's failure, or after a
// serialization failure): it must set its results afresh each time. ErrBusy when the
// queue is full. t, when not nil, is released.
func (c *committer) do(ctx context.Context, t *ticket, fn func(ctx context.Context, tx store.Tx) error) error {
	p := &pending{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if len(c.queue) >= c.maxQueue {
		c.mu.Unlock()
		t.release()
		return ErrBusy
	}
	c.queue = append(c.queue, p)
	start := !c.running
	c.running = true
	c.mu.Unlock()
	t.release()
	select {
	case c.more <- struct{}{}:
	default:
	}
	if start {
		go c.drain()
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The write may still commit: as if the answer were lost on the way.
		return ctx.Err()
	}
}

// drain commits batches until the queue is empty.
func (c *committer) drain() {
	for {
		batch := c.take()
		if batch == nil {
			return
		}
		c.commit(batch)
	}
}

// take returns the next batch, at most maxBatch writes, after waiting up to maxWait while
// announced writes are still coming; nil (and the committer idle) when there is none.
func (c *committer) take() []*pending {
	c.mu.Lock()
	if c.filling() {
		c.mu.Unlock()
		timer := time.NewTimer(c.maxWait)
		for waiting := true; waiting; {
			select {
			case <-c.more:
				c.mu.Lock()
				waiting = c.filling()
				c.mu.Unlock()
			case <-timer.C:
				waiting = false
			}
		}
		timer.Stop()
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.running = false
		return nil
	}
	n := min(len(c.queue), c.maxBatch)
	batch := slices.Clone(c.queue[:n])
	c.queue = slices.Delete(c.queue, 0, n)
	return batch
}

// filling reports whether the batch should wait for announced writes. c.mu is held.
func (c *committer) filling() bool {
	return c.maxWait > 0 && len(c.queue) > 0 && len(c.queue) < c.maxBatch && c.coming.Load() > 0
}

// commit runs the batch in one transaction. A write whose fn fails is answered with its
// error and the rest run again without it; a failure no write returned (begin, commit)
// is every write's.
func (c *committer) commit(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	errs := make([]error, len(batch))
	live := make([]int, len(batch))
	for i := range live {
		live[i] = i
	}
	for len(live) > 0 {
		failed, failErr := -1, error(nil)
		err := c.st.InTx(ctx, func(tx store.Tx) error {
			failed = -1
			for k, i := range live {
				if err := batch[i].fn(ctx, tx); err != nil {
					failed, failErr = k, err
					return err
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		if failed < 0 {
			for _, i := range live {
				errs[i] = err
			}
			break
		}
		errs[live[failed]] = failErr
		live = slices.Delete(live, failed, failed+1)
	}
	for i, p := range batch {
		p.done <- errs[i]
	}
}
