package client_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
)

// TestError_RetryAfter: a busy server's Retry-After reaches the caller, in seconds or as a
// date; one asking for more than an hour is capped, and garbage is ignored.
func TestError_RetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, header string
		lo, hi       time.Duration
	}{
		{"seconds", "2", 2 * time.Second, 2 * time.Second},
		{"date", time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat), 20 * time.Second, 31 * time.Second},
		{"capped", "999999", time.Hour, time.Hour},
		{"garbage", "soon", 0, 0},
		{"none", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"status":503,"code":"server_busy"}`))
			}))
			t.Cleanup(srv.Close)
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetMe(t.Context())
			e := asError(t, "GetMe(503)", err)
			if e.Status != 503 || e.Code != "server_busy" || e.RetryAfter < tc.lo || e.RetryAfter > tc.hi {
				t.Errorf("GetMe(503, Retry-After %q) = %+v, want RetryAfter in [%v, %v]", tc.header, e, tc.lo, tc.hi)
			}
		})
	}
}
