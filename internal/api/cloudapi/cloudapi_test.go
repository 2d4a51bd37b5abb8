package cloudapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/cloudapi"
	"github.com/moat-iot/moat/internal/api/httpapi"
	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/diag"
	"github.com/moat-iot/moat/internal/cloud/operator"
)

// slowVerifier stands for a security service that takes its time: each check waits
// until release is closed.
type slowVerifier struct {
	release chan struct{}
	mu      sync.Mutex
	waiting int
	arrived chan struct{}
}

func (v *slowVerifier) Verify(ctx context.Context, token string) (operator.Principal, error) {
	v.mu.Lock()
	v.waiting++
	if v.waiting == cloudapi.MaxTokenChecks {
		close(v.arrived)
	}
	v.mu.Unlock()
	select {
	case <-v.release:
	case <-ctx.Done():
	}
	return operator.Principal{}, operator.ErrUnauthenticated
}

func newAPI(t *testing.T, v cloudapi.Verifier) http.Handler {
	t.Helper()
	st, err := cloudstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "cloud.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d, err := diag.New(diag.Config{Store: st, Timeout: time.Minute, Now: time.Now,
		Publish: func(context.Context, string, string, []byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	api, err := cloudapi.New(cloudapi.Config{Store: st, Diag: d, Verifier: v, Metrics: httpapi.NewMetrics(prometheus.NewRegistry()), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	return mux
}

// TestAPI_CapsTokenChecks: tokens the verifier has not cached cost a request to the
// security service each; at most MaxTokenChecks run at once, and past it callers get 503
// with Retry-After at once instead of piling up.
func TestAPI_CapsTokenChecks(t *testing.T) {
	v := &slowVerifier{release: make(chan struct{}), arrived: make(chan struct{})}
	srv := httptest.NewServer(newAPI(t, v))
	defer srv.Close()
	var wg sync.WaitGroup
	for range cloudapi.MaxTokenChecks {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", srv.URL+"/api/v1/alerts", nil)
			req.Header.Set("Authorization", "Bearer moat_made_up")
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	<-v.arrived
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/alerts", nil)
	req.Header.Set("Authorization", "Bearer moat_another")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	close(v.release)
	wg.Wait()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("check %d while %d are in flight: %d (Retry-After %q), want 503 with Retry-After",
			cloudapi.MaxTokenChecks+1, cloudapi.MaxTokenChecks, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestAPI_RefusesBadRequests: bodies over the limit, of another media type or with
// unknown fields, and bad parameters are refused with a problem and change nothing.
func TestAPI_RefusesBadRequests(t *testing.T) {
	v := okVerifier{}
	srv := httptest.NewServer(newAPI(t, v))
	defer srv.Close()
	c, err := client.New(srv.URL, client.WithToken("moat_ok"))
	if err != nil {
		t.Fatal(err)
	}
	dev := "4f2a000000000000000000000000000000000000000000000000000000000001"
	for name, tc := range map[string]struct {
		method, path, ct, body string
		want                   int
	}{
		"oversized body":   {"POST", "/api/v1/devices/" + dev + "/diagnostics", "application/json", `{"command":"x","args":"` + string(make([]byte, 10_000)) + `"}`, 413},
		"not json":         {"POST", "/api/v1/devices/" + dev + "/diagnostics", "text/plain", `command=x`, 415},
		"unknown field":    {"POST", "/api/v1/devices/" + dev + "/diagnostics", "application/json", `{"command":"x","sudo":true}`, 400},
		"bad timeout":      {"POST", "/api/v1/devices/" + dev + "/diagnostics", "application/json", `{"command":"x","timeout":"forever"}`, 400},
		"unknown device":   {"POST", "/api/v1/devices/" + dev + "/diagnostics", "application/json", `{"command":"x"}`, 404},
		"bad device id":    {"GET", "/api/v1/devices/../../etc/telemetry", "", "", 404},
		"bad page token":   {"GET", "/api/v1/alerts?page_token=bm90IGpzb24", "", "", 400},
		"bad state":        {"GET", "/api/v1/alerts?state=burning", "", "", 400},
		"bad wait":         {"GET", "/api/v1/diagnostics/dgn_x?wait=1h", "", "", 400},
		"unknown route":    {"GET", "/api/v1/secrets", "", "", 404},
		"limit over range": {"GET", "/api/v1/devices?limit=100000", "", "", 400},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, bytesReader(tc.body))
		req.Header.Set("Authorization", "Bearer moat_ok")
		if tc.ct != "" {
			req.Header.Set("Content-Type", tc.ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, tc.want)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q, want application/problem+json", name, ct)
		}
	}
	ds, err := c.ListDiagnostics(t.Context(), "", client.ListOptions{})
	if err != nil || len(ds.Items) != 0 {
		t.Errorf("diagnostics after bad requests: %v, %v; want none", ds.Items, err)
	}
}

type okVerifier struct{}

func (okVerifier) Verify(context.Context, string) (operator.Principal, error) {
	return operator.Principal{UserID: "usr_1", UserName: "admin", Role: client.RoleAdministrator}, nil
}

func bytesReader(s string) *strings.Reader { return strings.NewReader(s) }
