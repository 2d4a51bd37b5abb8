package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
)

// BenchmarkWorker_Row measures one row through the worker on SQLite (claim, a no-op
// handler, record) against its baseline, enqueueing the row (one insert transaction).
func BenchmarkWorker_Row(b *testing.B) {
	s, err := cloudstore.OpenSQLite(b.Context(), filepath.Join(b.TempDir(), "cloud.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w, err := outbox.New(outbox.Config{Store: s, Now: func() time.Time { return t0.Add(time.Hour) }, Logger: discardLogger(), Batch: 64, Concurrency: 4,
		Handlers: outbox.Handlers{"job": func(context.Context, outbox.Job) (string, error) { return "ok", nil }}})
	if err != nil {
		b.Fatal(err)
	}
	payload := json.RawMessage(`{"to":"owner@home.example"}`)
	const batch = 64
	var enqueue, perform time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		for range batch {
			i++
			if err := s.EnqueueOutbox(b.Context(), t0, cloudstore.OutboxItem{Kind: "job", Key: fmt.Sprintf("k%d", i), Payload: payload}); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		if n, err := w.RunOnce(b.Context()); n != batch || err != nil {
			b.Fatalf("RunOnce = %d, %v", n, err)
		}
		enqueue += mid.Sub(start)
		perform += time.Since(mid)
	}
	rows := float64(b.N * batch)
	b.ReportMetric(float64(perform.Nanoseconds())/rows, "ns/row")
	b.ReportMetric(float64(enqueue.Nanoseconds())/rows, "ns/enqueue")
	b.ReportMetric(float64(perform)/float64(enqueue), "row/enqueue")
}
