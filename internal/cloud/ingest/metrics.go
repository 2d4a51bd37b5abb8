package ingest

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	stored, duplicates, unmatched, commitFailures prometheus.Counter
	dropped                                       *prometheus.CounterVec
	batch, commit                                 prometheus.Histogram
	pending, lag                                  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_cloud_ingest_stored_total",
			Help: "Device messages stored (telemetry, events, diagnostics replies)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_cloud_ingest_duplicates_total",
			Help: "Redelivered device messages that were stored already."}),
		unmatched: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_cloud_ingest_unmatched_replies_total",
			Help: "Diagnostics replies that finished no pending request of their device."}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_cloud_ingest_commit_failures_total",
			Help: "Batches whose transaction failed; their messages are redelivered."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_cloud_ingest_dropped_total",
			Help: "Device messages acknowledged and dropped, by reason."}, []string{"reason"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "moat_cloud_ingest_batch_messages",
			Help: "Messages per fetched batch.", Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000}}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "moat_cloud_ingest_commit_seconds",
			Help: "Time to write one batch in one transaction.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_cloud_ingest_pending_messages",
			Help: "Messages in the stream not yet delivered to the ingest, as of the last batch."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_cloud_ingest_lag_seconds",
			Help: "Age of the last message of the last stored batch when it was stored."}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.stored, m.duplicates, m.unmatched, m.commitFailures, m.dropped, m.batch, m.commit, m.pending, m.lag} {
		errs = append(errs, reg.Register(c))
	}
	for _, r := range Reasons {
		m.dropped.WithLabelValues(r) // every reason shows, at 0
	}
	return m, errors.Join(errs...)
}
