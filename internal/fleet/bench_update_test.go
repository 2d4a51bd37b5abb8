package fleet_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// BenchmarkUpdateCheckCached measures an unchanged device's update check over kept-alive
// mutual TLS on loopback as the agent makes it (issue 15): GET /api/v1/device/assignment
// with If-None-Match naming the assignment it holds, answered 304 (authenticate the
// certificate and the device's state, find its cached assignment current; no signature).
// BenchmarkUpdateCheckSigned is the same device without If-None-Match (an agent before
// issue 15, or `moat sim` until it sends it): the assignment computed and signed anew each
// time. Both report checks per second next to a minimal Go HTTPS handler that requires a
// client certificate and answers the signed assignment as a fixed body, measured in the
// same run with the same kind of client (x-baseline: the ratio of rates), and the bytes on
// the wire per check (TLS records, both directions; wire-down-B/check is the server's
// answer) next to the size of the tenant's signed timestamp.json (x-timestamp: the
// answer's wire bytes over it). The baseline runs in blocks between the checks.
func BenchmarkUpdateCheckCached(b *testing.B) { benchmarkUpdateCheck(b, true) }

// BenchmarkUpdateCheckSigned: see BenchmarkUpdateCheckCached.
func BenchmarkUpdateCheckSigned(b *testing.B) { benchmarkUpdateCheck(b, false) }

func benchmarkUpdateCheck(b *testing.B, conditional bool) {
	p := testenv.NewPlatform(b)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	app := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	ctx := context.Background()
	gs, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, gs.Items[0].ID, client.DeploymentCreate{Target: app.Path}); err != nil {
		b.Fatal(err)
	}
	d := p.NewDevice(true, "DW100/Production")
	cert, err := p.Attest(d, osImg.Measurement(), app.Measurement())
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.Server.CAPEM) {
		b.Fatal("server CA PEM holds no certificate")
	}
	var wire wireCount
	dc, err := client.New(p.Server.DeviceURL, client.WithHTTPClient(wire.client(b, pool, cert)))
	if err != nil {
		b.Fatal(err)
	}
	held, err := dc.GetAssignment(ctx)
	if err != nil {
		b.Fatal(err)
	}
	timestamp, err := dc.GetDeviceTUFFile(ctx, "timestamp.json")
	if err != nil {
		b.Fatal(err)
	}
	check := func() {
		if !conditional {
			if _, err := dc.GetAssignment(ctx); err != nil {
				b.Fatal(err)
			}
			return
		}
		if _, changed, err := dc.GetAssignmentIfChanged(ctx, held); err != nil || changed {
			b.Fatalf("GetAssignmentIfChanged = changed %t, %v; want not modified", changed, err)
		}
	}
	check() // the assignment held is the one cached now

	// Baseline: the least a Go mTLS server does per request.
	base := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no certificate", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(held)
	}))
	base.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12}
	base.StartTLS()
	defer base.Close()
	basePool := x509.NewCertPool()
	basePool.AddCert(base.Certificate())
	var baseWire wireCount
	bc := baseWire.client(b, basePool, cert)
	get := func() {
		resp, err := bc.Get(base.URL)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	// The baseline runs in blocks between blocks of checks, so that both see the same
	// load on the machine (other processes, the garbage collector).
	const block = 100
	var baseDur time.Duration
	baseN := 0
	baseline := func() {
		start := time.Now()
		for range block {
			get()
		}
		baseDur += time.Since(start)
		baseN += block
	}
	baseWire.reset()
	baseline()

	wire.reset()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		check()
		if i++; i%block == 0 {
			b.StopTimer()
			baseline()
			b.StartTimer()
		}
	}
	b.StopTimer()
	baseNs := float64(baseDur.Nanoseconds()) / float64(baseN)
	baseDown := float64(baseWire.down.Load()) / float64(baseN)
	n := float64(b.N)
	ns := float64(b.Elapsed().Nanoseconds()) / n
	down := float64(wire.down.Load()) / n
	b.ReportMetric(1e9/ns, "checks/s")
	b.ReportMetric(1e9/baseNs, "baseline-req/s")
	b.ReportMetric(baseNs/ns, "x-baseline")
	b.ReportMetric(down, "wire-down-B/check")
	b.ReportMetric(float64(wire.up.Load())/n, "wire-up-B/check")
	b.ReportMetric(baseDown, "baseline-wire-down-B/req")
	b.ReportMetric(float64(len(timestamp)), "timestamp-B")
	b.ReportMetric(down/float64(len(timestamp)), "x-timestamp")
}

// wireCount counts the bytes a client's connections carry, TLS records included.
type wireCount struct{ up, down atomic.Int64 }

func (w *wireCount) reset() { w.up.Store(0); w.down.Store(0) }

// client is an HTTP client presenting cert, trusting pool, whose connections w counts.
func (w *wireCount) client(b *testing.B, pool *x509.CertPool, cert tls.Certificate) *http.Client {
	var d net.Dialer
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countedConn{Conn: c, w: w}, nil
		},
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type countedConn struct {
	net.Conn
	w *wireCount
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.down.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.up.Add(int64(n))
	return n, err
}
