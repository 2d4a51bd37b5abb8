package mgmt_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkAPI_AuthenticatedRead measures GET of one product over HTTPS on loopback with a
// bearer token (token lookup, role check, tenant-scoped read, JSON, access log, metrics),
// and reports it as a ratio to a minimal Go HTTPS handler measured in the same run with the
// same kind of client (TLS 1.3, keep-alive).
func BenchmarkAPI_AuthenticatedRead(b *testing.B) {
	w := newWorld(b)
	path := w.a.productPath()
	body := w.a.admin.must(200, "GET", path, nil).Body

	baseline := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		rw.Write(body)
	}))
	defer baseline.Close()
	bc := baseline.Client()
	get := func(c *http.Client, req *http.Request) {
		res, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
	baseReq, _ := http.NewRequest("GET", baseline.URL, nil)
	const baseN = 3000
	for range 100 { // warm up the connection
		get(bc, baseReq)
	}
	start := time.Now()
	for range baseN {
		get(bc, baseReq)
	}
	baseNs := float64(time.Since(start).Nanoseconds()) / baseN

	hc := w.srv.HTTPClient(b)
	req, _ := http.NewRequest("GET", w.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+w.a.admin.token)
	for range 100 {
		get(hc, req)
	}
	b.ResetTimer()
	for b.Loop() {
		get(hc, req)
	}
	b.StopTimer()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(baseNs, "baseline-ns/op")
	b.ReportMetric(ns/baseNs, "x-baseline")
	b.ReportMetric(1e9/ns, "req/s")
}
