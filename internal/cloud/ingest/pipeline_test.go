package ingest

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
)

// blocking holds the first WriteBatch until release is closed.
type blocking struct {
	Store
	calls    atomic.Int64
	firstLen atomic.Int64
	release  chan struct{}
}

func (b *blocking) WriteBatch(ctx context.Context, rs []cloudstore.Record) (cloudstore.BatchResult, error) {
	if b.calls.Add(1) == 1 {
		b.firstLen.Store(int64(len(rs)))
		<-b.release
	}
	return b.Store.WriteBatch(ctx, rs)
}

// TestIngest_FetchesNextBatchWhileCommitting: while a batch's commit hangs, the next batch
// is fetched (one, not more), but nothing is acknowledged and no second commit starts;
// once the commit returns, every message is stored and acknowledged, and the hook sees
// them in stream order.
func TestIngest_FetchesNextBatchWhileCommitting(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.BatchSize, cfg.MaxAckPending = 5, 100
	cfg.AckWait = time.Minute // the held batch must not be redelivered while the test looks
	b := &blocking{release: make(chan struct{})}
	h := newHarness(t, cfg, func(s Store) Store { b.Store = s; return b })
	var once sync.Once
	release := func() { once.Do(func() { close(b.release) }) }
	t.Cleanup(release) // runs before the harness stops Run, so a failing test does not hang
	const n = 30
	now := time.Now()
	for i := range n {
		h.publish(subject(devA), telemetryPayload(t, now.Add(time.Duration(i)*time.Second), float64(i)))
	}
	var cons jetstream.Consumer
	waitFor(t, "the ingest's consumer", func() bool {
		c, err := h.js.Consumer(t.Context(), telemetry.Stream, "ingest")
		cons = c
		return err == nil
	})
	waitFor(t, "the next batch fetched while the first commits", func() bool {
		info, err := cons.Info(t.Context())
		first := int(b.firstLen.Load())
		return err == nil && first > 0 && info.NumAckPending == first+cfg.BatchSize
	})
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 0 || b.calls.Load() != 1 {
		t.Errorf("while the first commit hangs: ack floor %d, %d commits; want 0 and 1 (acks only after a batch's own commit, one commit at a time)",
			info.AckFloor.Stream, b.calls.Load())
	}
	release()
	waitFor(t, "every message stored and acked", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.AckFloor.Stream == n && h.readings(devA) == n
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.IsSortedFunc(h.samples, func(a, b Sample) int { return int(a.Seq) - int(b.Seq) }) || len(h.samples) != n {
		t.Errorf("hook saw %d samples, in stream order %v; want %d in order", len(h.samples),
			slices.IsSortedFunc(h.samples, func(a, b Sample) int { return int(a.Seq) - int(b.Seq) }), n)
	}
}
