package outbox

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// otherKind labels rows of a kind without a handler, so a stray kind in the database
// cannot grow the metrics' label sets.
const otherKind = "other"

type metrics struct {
	done, retried, dead *prometheus.CounterVec
	leaseLost           prometheus.Counter
	pending, oldest     prometheus.Gauge
	kinds               map[string]bool
}

func newMetrics(reg prometheus.Registerer, hs Handlers) (metrics, error) {
	m := metrics{
		done: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_cloud_outbox_done_total",
			Help: "Outbox rows performed, by kind."}, []string{"kind"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_cloud_outbox_retried_total",
			Help: "Outbox attempts that failed and were scheduled again, by kind."}, []string{"kind"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_cloud_outbox_dead_total",
			Help: "Outbox rows given up (permanent error, unknown kind or too many attempts), by kind."}, []string{"kind"}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_cloud_outbox_lease_lost_total",
			Help: "Attempts whose outcome was not recorded because their lease expired and another attempt took the row."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_cloud_outbox_pending",
			Help: "Outbox rows not yet done or dead, as of the last batch."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_cloud_outbox_oldest_pending_age_seconds",
			Help: "Age of the oldest pending outbox row, as of the last batch."}),
		kinds: map[string]bool{otherKind: true},
	}
	for k := range hs {
		m.kinds[k] = true
	}
	for k := range m.kinds {
		m.done.WithLabelValues(k) // every kind shows, at 0
		m.retried.WithLabelValues(k)
		m.dead.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.done, m.retried, m.dead, m.leaseLost, m.pending, m.oldest} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}

func (m metrics) label(kind string) string {
	if m.kinds[kind] {
		return kind
	}
	return otherKind
}
