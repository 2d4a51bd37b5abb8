package httpapi

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RouteMetrics are the metrics of one route with its label lookups done once (issue 15
// item 4): observing a request through Metrics hashes the route and the status code's
// text into each vector on every request, and formats the code. The series are the same,
// made at a route's first request with each code as before, so /metrics shows no series
// a request did not make. Safe for concurrent use.
type RouteMetrics struct {
	m     *Metrics
	route string

	duration atomic.Pointer[prometheus.Observer]
	mu       sync.Mutex                    // serializes additions to codes
	codes    atomic.Pointer[[]codeCounter] // copied on write: read without a lock
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

// Route returns the metrics of route, to observe its requests with Exchange.DoneRoute.
func (m *Metrics) Route(route string) *RouteMetrics { return &RouteMetrics{m: m, route: route} }

func (r *RouteMetrics) observe(status int, d time.Duration) {
	r.counter(status).Inc()
	o := r.duration.Load()
	if o == nil {
		h := r.m.duration.WithLabelValues(r.route)
		o = &h
		r.duration.Store(o) // a racing request stores the same series
	}
	(*o).Observe(d.Seconds())
}

// counter is the route's request counter for status, made on its first request.
func (r *RouteMetrics) counter(status int) prometheus.Counter {
	if cs := r.codes.Load(); cs != nil {
		for _, c := range *cs {
			if c.code == status {
				return c.c
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var cs []codeCounter
	if p := r.codes.Load(); p != nil {
		for _, c := range *p {
			if c.code == status {
				return c.c
			}
		}
		cs = append(cs, *p...)
	}
	// Statuses are few (the handlers answer a fixed set), so the list stays short.
	c := r.m.requests.WithLabelValues(r.route, strconv.Itoa(status))
	cs = append(cs, codeCounter{code: status, c: c})
	r.codes.Store(&cs)
	return c
}

// DoneRoute is DoneAttrs with the route's metrics resolved beforehand (Metrics.Route).
func (x *Exchange) DoneRoute(log *slog.Logger, rm *RouteMetrics, extra ...slog.Attr) {
	d := time.Since(x.Start)
	x.log(log, rm.route, d, extra)
	rm.observe(x.W.status, d)
}
