package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestExchange_OneAccessLinePerRequest: each request writes one access line with the same
// fields whichever way it is finished (DoneAttrs, DoneRoute), and counts once in metrics.
func TestExchange_OneAccessLinePerRequest(t *testing.T) {
	t.Parallel()
	m := NewMetrics(prometheus.NewRegistry())
	rm := m.Route("GET /things/{id}")
	for _, tc := range []struct {
		name string
		done func(x *Exchange, log *slog.Logger)
	}{
		{"DoneAttrs", func(x *Exchange, log *slog.Logger) {
			x.DoneAttrs(log, m, "GET /things/{id}", slog.String("user_id", "usr_1"), slog.String("tenant_id", "ten_1"))
		}},
		{"DoneRoute", func(x *Exchange, log *slog.Logger) {
			x.DoneRoute(log, rm, slog.String("user_id", "usr_1"), slog.String("tenant_id", "ten_1"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "api")
			r := httptest.NewRequestWithContext(t.Context(), "GET", "/things/1", nil)
			r.RemoteAddr = "192.0.2.1:1234"
			x := Begin(httptest.NewRecorder(), r, 0)
			x.W.WriteHeader(http.StatusTeapot)
			tc.done(&x, log)
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("%s wrote %d lines, want 1:\n%s", tc.name, len(lines), buf.String())
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range got {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			want := []string{"component", "duration_ms", "level", "method", "msg", "remote_addr", "request_id", "route", "status", "tenant_id", "time", "user_id"}
			if !slices.Equal(keys, want) {
				t.Errorf("access line fields = %v, want %v", keys, want)
			}
			if got["msg"] != "http request" || got["level"] != "INFO" || got["request_id"] != x.ID || got["method"] != "GET" ||
				got["route"] != "GET /things/{id}" || got["status"] != float64(http.StatusTeapot) || got["remote_addr"] != "192.0.2.1:1234" ||
				got["user_id"] != "usr_1" || got["tenant_id"] != "ten_1" || got["component"] != "api" {
				t.Errorf("access line = %s", lines[0])
			}
			if _, ok := got["duration_ms"].(float64); !ok {
				t.Errorf("access line duration_ms = %v, want a number", got["duration_ms"])
			}
		})
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET /things/{id}", "418")); got != 2 {
		t.Errorf("requests{418} = %v, want 2 (one per request)", got)
	}
}
