package cloud_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestCloud_BufferedThroughOutageDeliveredOnce is ATTACKS row 35 through the whole path:
// the cloud goes down, the device's agent keeps 130 readings in its outbox (more than the
// cloud's per-device burst), the cloud comes back on the same data; every reading is
// stored exactly once (none dropped as rate-limited: the link paces itself below the
// cloud's per-device limit).
func TestCloud_BufferedThroughOutageDeliveredOnce(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	cfg := e.Config()
	cfg.MQTTAddr = freeAddr(t) // the device's --cloud stays the same across the restart
	e.Start(t, cfg)
	d := e.Device(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	l, err := cloudlink.New(cloudlink.Config{
		Broker: "mqtts://" + cfg.MQTTAddr, CAs: pool, DeviceID: d.ID, Product: "DW100",
		Certificate: func(context.Context) (tls.Certificate, error) { return d.Cert, nil },
		QueueDir:    t.TempDir(), Now: time.Now,
		Diagnose: func(context.Context, string, json.RawMessage) (json.RawMessage, error) {
			return nil, fmt.Errorf("no diagnostics in this test")
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { _ = l.Run(ctx) })

	base := time.Now().Add(-3 * time.Hour)
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			p, err := telemetry.Encode(telemetry.Telemetry{V: 1, Time: base.Add(time.Duration(i) * time.Second), Cycle: "c1", Phase: "drying",
				Readings: map[string]telemetry.Reading{"drying_temp": {Value: 60 + float64(i%50)/10, Unit: "Cel"}}})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Publish(ctx, cloudlink.TopicTelemetry, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 10)
	cloudenv.Eventually(t, "the first ten stored", func() (bool, error) {
		n, err := cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
		return n == 10, err
	})

	e.Stop()
	publish(10, 140)
	if s := l.Stats(); s.Queued < 130 {
		t.Fatalf("outbox holds %d messages during the outage, want the 130 sent meanwhile", s.Queued)
	}
	e.Start(t, cfg)
	var n int
	cloudenv.Eventually(t, "all 140 stored after the outage", func() (bool, error) {
		var err error
		n, err = cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
		return n >= 140, err
	})
	if s := l.Stats(); s.Dropped != 0 {
		t.Errorf("the outbox dropped %d messages", s.Dropped)
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would land in the next batch
	if n, _ = cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID); n != 140 {
		t.Errorf("%d readings stored, want each of 140 exactly once", n)
	}
}
