package cloud_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv"
)

// benchFleet is a security service with the DW100 product and benchDevices attested
// DW100s: certificates the real service issued, as devices get them.
type benchFleet struct {
	p        *testenv.Platform
	dir      string
	chain    string // the tenant's device CA chain file
	serverCA string // the security service's TLS CA file
	devices  []benchDevice
}

type benchDevice struct {
	id   string
	cert tls.Certificate
}

func newBenchFleet(tb testing.TB, n int) *benchFleet {
	tb.Helper()
	f := &benchFleet{p: testenv.NewPlatform(tb), dir: tb.TempDir()}
	osImg := f.p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := f.p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	chain, err := f.p.Admin.GetDeviceCAChain(tb.Context(), f.p.Tenant)
	if err != nil {
		tb.Fatal(err)
	}
	f.chain = benchWrite(tb, f.dir, "devices.pem", chain)
	f.serverCA = benchWrite(tb, f.dir, "server-ca.pem", f.p.Server.CAPEM)
	for range n {
		d := f.p.NewDevice(true, "DW100/Production")
		cert, err := f.p.Attest(d, osImg.Measurement(), app.Measurement())
		if err != nil {
			tb.Fatalf("Attest = %v", err)
		}
		f.devices = append(f.devices, benchDevice{id: d.ID, cert: cert})
	}
	return f
}

func benchWrite(tb testing.TB, dir, name string, data []byte) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// payloads are each device's telemetry messages of one round, encoded before the clock
// starts: drying-phase readings of a DW100 in cycles of 20 readings, one a second, with
// per-device temperatures a tenth of a degree apart (no rule fires: the fleet rule sees
// a spread below its min_spread, the thresholds are not crossed).
func payloads(tb testing.TB, devices []benchDevice, perDevice int, round int) [][][]byte {
	tb.Helper()
	base := time.Now().Add(-time.Duration(perDevice+1) * time.Second).Truncate(time.Second)
	out := make([][][]byte, len(devices))
	for i := range devices {
		out[i] = make([][]byte, perDevice)
		for j := range perDevice {
			t := telemetry.Telemetry{
				V: telemetry.Version, Time: base.Add(time.Duration(j) * time.Second),
				Cycle: fmt.Sprintf("bench-%d-%d", round, j/20), Phase: "drying",
				Readings: map[string]telemetry.Reading{
					"drying_temp": {Value: 70 + float64(i%7)/10, Unit: "Cel"},
					"water_temp":  {Value: 55, Unit: "Cel"},
					"rinse_agent": {Value: 60, Unit: "%"},
				},
			}
			b, err := telemetry.Encode(t)
			if err != nil {
				tb.Fatal(err)
			}
			out[i][j] = b
		}
	}
	return out
}

// connectAll connects every device to the MQTT listener at addr as the agent does
// (internal/agent/cloudlink): client ID the device ID, user name the product, its
// certificate, MQTT 3.1.1, clean session false. A few connect at a time.
func connectAll(tb testing.TB, addr string, caPEM []byte, devices []benchDevice) []mqtt.Client {
	tb.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		tb.Fatal("no CA certificate in the broker's CA PEM")
	}
	clients := make([]mqtt.Client, len(devices))
	errs := make([]error, len(devices))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, d := range devices {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			opts := mqtt.NewClientOptions().AddBroker("tls://" + addr).
				SetClientID(d.id).SetUsername("DW100").SetProtocolVersion(4).
				SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
				SetKeepAlive(time.Minute).SetConnectTimeout(30 * time.Second).
				SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{d.cert}, MinVersion: tls.VersionTLS12})
			c := mqtt.NewClient(opts)
			tok := c.Connect()
			if !tok.WaitTimeout(60 * time.Second) {
				errs[i] = fmt.Errorf("device %s: connect timed out", d.id)
				return
			}
			if err := tok.Error(); err != nil {
				errs[i] = fmt.Errorf("device %s: connect: %w", d.id, err)
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	disconnect := func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				wg.Go(func() { c.Disconnect(250) })
			}
		}
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		disconnect()
		tb.Fatal(err)
	}
	tb.Cleanup(disconnect)
	return clients
}

// loadResult is one measured round.
type loadResult struct {
	msgs    int
	elapsed time.Duration   // from the first publish until every message was acknowledged and done
	acked   time.Duration   // from the first publish until the last PUBACK
	pubacks []time.Duration // every message's publish → PUBACK latency, as its device saw it
}

func (r loadResult) rate() float64 { return float64(r.msgs) / r.elapsed.Seconds() }

// publishAll has each client publish its payloads on its telemetry topic with QoS 1,
// at most window unacknowledged at a time, all clients at once. arrived counts the
// messages that reached the far end (subscriber, store); the round ends when every
// message was acknowledged and arrived. arrived is polled at an interval of half the
// time the rest should take at the rate so far, between 2 and 100 ms: the end is seen
// within a few ms, with few polls (each /metrics scrape costs the cloud CPU).
func publishAll(tb testing.TB, clients []mqtt.Client, devices []benchDevice, msgs [][][]byte, window int, arrived func() (int64, error)) loadResult {
	tb.Helper()
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	lat := make([][]time.Duration, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		lat[i] = make([]time.Duration, 0, len(msgs[i]))
		wg.Go(func() {
			lat[i], errs[i] = publishOne(c, telemetry.TelemetryTopic(devices[i].id), msgs[i], window, lat[i])
		})
	}
	ackedc := make(chan time.Duration, 1)
	go func() {
		wg.Wait()
		ackedc <- time.Since(start)
	}()
	var acked time.Duration = -1
	deadline := start.Add(10 * time.Minute)
	tick := 100 * time.Millisecond
	for {
		select {
		case acked = <-ackedc:
			if err := errors.Join(errs...); err != nil {
				tb.Fatal(err)
			}
		case <-time.After(tick):
		}
		n, err := arrived()
		if err != nil {
			tb.Fatal(err)
		}
		if n >= int64(total) && acked >= 0 {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("round not done within 10 minutes: %d of %d arrived (acknowledged: %v)", n, total, acked >= 0)
		}
		tick = 100 * time.Millisecond
		if el := time.Since(start); n > 0 {
			rest := time.Duration(float64(el) * float64(int64(total)-n) / float64(n))
			tick = max(2*time.Millisecond, min(tick, rest/2))
		}
	}
	r := loadResult{msgs: total, elapsed: time.Since(start), acked: acked}
	for _, l := range lat {
		r.pubacks = append(r.pubacks, l...)
	}
	return r
}

// publishOne publishes msgs with QoS 1 from one client, at most window in flight, and
// records each one's publish → PUBACK latency. PUBACKs come in order on one connection
// (nats-server acknowledges a connection's QoS 1 messages in order), so waiting for the
// oldest token first times each one within the scheduling of this goroutine.
func publishOne(c mqtt.Client, topic string, msgs [][]byte, window int, lat []time.Duration) ([]time.Duration, error) {
	type sent struct {
		tok mqtt.Token
		at  time.Time
	}
	inflight := make(chan sent, window)
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for s := range inflight {
			if !s.tok.WaitTimeout(2 * time.Minute) {
				errc <- fmt.Errorf("%s: no PUBACK within 2 minutes", topic)
				for range inflight {
				}
				return
			}
			if err := s.tok.Error(); err != nil {
				errc <- fmt.Errorf("%s: publish: %w", topic, err)
				for range inflight {
				}
				return
			}
			lat = append(lat, time.Since(s.at))
		}
	}()
	for _, m := range msgs {
		at := time.Now()
		inflight <- sent{tok: c.Publish(topic, 1, false, m), at: at}
	}
	close(inflight)
	return lat, <-errc
}

// percentile is the p-th percentile (0 < p ≤ 100, nearest rank) of ds, which it sorts.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// metricsScraper scrapes the cloud's /metrics for the ingest's stored and dropped totals.
type metricsScraper struct {
	url string
	hc  *http.Client
}

func newMetricsScraper(tb testing.TB, baseURL string, caPEM []byte) *metricsScraper {
	tb.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		tb.Fatal("no CA certificate in the cloud's CA PEM")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 1,
		DisableCompression: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &metricsScraper{url: baseURL + "/metrics", hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// counts returns moat_cloud_ingest_stored_total and the sum of
// moat_cloud_ingest_dropped_total over its reasons.
func (s *metricsScraper) counts(ctx context.Context) (stored, dropped int64, err error) {
	m, err := s.scrape(ctx)
	if err != nil {
		return 0, 0, err
	}
	for name, v := range m {
		if strings.HasPrefix(name, "moat_cloud_ingest_dropped_total{") {
			dropped += int64(v)
		}
	}
	return int64(m["moat_cloud_ingest_stored_total"]), dropped, nil
}

// ingestStats describes the ingest's batches so far: how many, their mean size and the
// mean time of one batch's transaction.
func (s *metricsScraper) ingestStats(ctx context.Context) (string, error) {
	m, err := s.scrape(ctx)
	if err != nil {
		return "", err
	}
	n := m["moat_cloud_ingest_batch_messages_count"]
	if n == 0 {
		return "ingest: no batches", nil
	}
	return fmt.Sprintf("ingest: %.0f batches of %.0f messages on average, %.1f ms per batch transaction on average (%.1f s in all)",
		n, m["moat_cloud_ingest_batch_messages_sum"]/n, 1000*m["moat_cloud_ingest_commit_seconds_sum"]/m["moat_cloud_ingest_commit_seconds_count"],
		m["moat_cloud_ingest_commit_seconds_sum"]), nil
}

// scrape reads the moat_cloud_ingest_ samples of /metrics, by name with labels.
func (s *metricsScraper) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "moat_cloud_ingest_") {
			continue
		}
		name, value, _ := strings.Cut(line, " ")
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[name] = v
	}
	return m, sc.Err()
}

// counter counts messages a NATS subscriber receives.
type counter struct{ n atomic.Int64 }
