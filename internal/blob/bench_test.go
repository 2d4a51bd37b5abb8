package blob_test

import (
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkServe measures GET of an 8 MiB blob through Handler and Serve (digest lookup,
// open, caching headers, http.ServeContent) over HTTPS on loopback, and reports it as a
// ratio to http.ServeFile of the same file, measured in the same run with the same kind of
// client (TLS 1.3, keep-alive). x-baseline-throughput above 1 is faster than ServeFile.
func BenchmarkServe(b *testing.B) {
	const size = 8 << 20
	w := newWorld(b, size)
	path := filepath.Join(w.dir, "sha256", w.digest.Hex()[:2], w.digest.Hex())
	base := newServer(b, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.ServeFile(rw, r, path)
	}))

	get := func(c *http.Client, url string) {
		res, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || n != size {
			b.Fatalf("GET %s = %s, %d bytes, %v", url, res.Status, n, err)
		}
	}
	const warmup, baseN = 5, 60
	bc := base.Client()
	for range warmup {
		get(bc, base.URL)
	}
	start := time.Now()
	for range baseN {
		get(bc, base.URL)
	}
	baseMBps := float64(baseN*size) / 1e6 / time.Since(start).Seconds()

	hc, url := w.srv.Client(), w.url()
	for range warmup {
		get(hc, url)
	}
	b.SetBytes(size)
	for b.Loop() {
		get(hc, url)
	}
	mbps := float64(b.N) * size / 1e6 / b.Elapsed().Seconds()
	b.ReportMetric(baseMBps, "baseline-MB/s")
	b.ReportMetric(mbps/baseMBps, "x-baseline-throughput")
}
