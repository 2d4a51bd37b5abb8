package httpapi

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRouteMetrics_SameSeriesAsMetrics: a route's pre-resolved metrics count into the very
// series Metrics.observe does, make a series only when a request does, and keep concurrent
// first requests of a new status apart from each other.
func TestRouteMetrics_SameSeriesAsMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	rm := m.Route("GET /things/{id}")
	_ = m.Route("GET /unused")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			rm.observe(200, time.Millisecond)
			rm.observe(404, time.Millisecond)
		})
	}
	wg.Wait()
	m.observe("GET /things/{id}", 200, time.Millisecond)
	want := `
# HELP moat_api_requests_total Management API requests by route and status code.
# TYPE moat_api_requests_total counter
moat_api_requests_total{code="200",route="GET /things/{id}"} 9
moat_api_requests_total{code="404",route="GET /things/{id}"} 8
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "moat_api_requests_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("duration series = %d, want 1 (the route that served requests)", n)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET /things/{id}", "200")); got != 9 {
		t.Errorf("requests{200} = %v, want 9", got)
	}
}
