package ingest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
)

// BenchmarkIngest_SQLite measures durable messages per second from the stream into SQLite
// (publish acknowledged by JetStream, fetched, decoded, committed, acked), next to the
// baseline of writing the same records straight into a store (no broker, no decoding).
func BenchmarkIngest_SQLite(b *testing.B) {
	const perLoop = 2000
	cfg := DefaultConfig()
	cfg.DeviceRate, cfg.DeviceBurst = 1e9, 1e9 // measure the path, not the limiter
	h := newHarness(b, cfg, nil)
	now := time.Now()
	payload := telemetryPayload(b, now, 65)
	devs := []string{devA, devB}

	// Baseline: the same records written directly, in batches of BatchSize.
	base, err := cloudstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "base.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	t, _ := telemetry.DecodeTelemetry(payload)
	seq := uint64(0)
	start := time.Now()
	for range 5 {
		recs := make([]cloudstore.Record, 0, perLoop)
		for i := range perLoop {
			seq++
			recs = append(recs, cloudstore.Record{Seq: seq, Device: devs[i%2], Product: "dw100", ReceivedAt: now, Telemetry: &t})
			if len(recs) == cfg.BatchSize {
				if _, err := base.WriteBatch(context.Background(), recs); err != nil {
					b.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	baseRate := float64(5*perLoop) / time.Since(start).Seconds()

	total := 0
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		for i := range perLoop {
			if _, err := h.js.PublishAsync(telemetry.StoredPrefix+subject(devs[i%2]), payload); err != nil {
				b.Fatal(err)
			}
		}
		<-h.js.PublishAsyncComplete()
		total += perLoop
		for int(testutil.ToFloat64(h.in.m.stored)) < total {
			time.Sleep(time.Millisecond)
		}
		elapsed += time.Since(start)
	}
	rate := float64(total) / elapsed.Seconds()
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(baseRate, "direct_msgs/s")
	b.ReportMetric(rate/baseRate, "ratio")
	var m dto.Metric
	if err := h.in.m.batch.Write(&m); err == nil && m.Histogram.GetSampleCount() > 0 {
		b.ReportMetric(m.Histogram.GetSampleSum()/float64(m.Histogram.GetSampleCount()), "msgs/batch")
	}
}
