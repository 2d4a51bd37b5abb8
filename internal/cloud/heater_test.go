package cloud_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// TestCloud_FailingHeaterAlertRunsDiagnosticsOnTheDevice is the seed's detection loop with
// real parts: twelve attested DW100s hold their MQTT sessions through the agent's own
// cloud link; they wash cycle after cycle, and from the second cycle one dries at 40 °C
// while the fleet dries at about 65 °C. The fleet rule of examples/dw100/rules.yaml fires
// once, for that device only, with the readings as evidence; its action runs the heater
// self-test on that device over its MQTT session, and the self-test's verdict is stored
// with the alert.
func TestCloud_FailingHeaterAlertRunsDiagnosticsOnTheDevice(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	// A webhook receiver that verifies the signature (Standard Webhooks) and fails the
	// first delivery: the event arrives again with the same webhook-id, and is kept once.
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var hookMu sync.Mutex
	hookIDs, hookEvents, hookCalls, hookTypes := map[string]bool{}, []outbox.WebhookEvent{}, 0, map[string]int{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		ev, err := outbox.Verify(secret, r.Header, body, time.Now(), 5*time.Minute)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		hookMu.Lock()
		defer hookMu.Unlock()
		hookTypes[ev.Type]++
		if ev.Type != "alert.opened" {
			return // the actions' own events (service request, reservation): accepted
		}
		if hookCalls++; hookCalls == 1 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		if id := r.Header.Get("webhook-id"); !hookIDs[id] {
			hookIDs[id] = true
			hookEvents = append(hookEvents, ev)
		}
	}))
	t.Cleanup(hook.Close)
	cfg := e.Config()
	secretFile := filepath.Join(t.TempDir(), "crm.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Webhooks, cfg.WebhookSecretFiles = []string{"crm=" + hook.URL}, []string{"crm=" + secretFile}
	e.Start(t, cfg)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)

	const n = 12
	type dw struct {
		cloudenv.CloudDevice
		link  *cloudlink.Link
		tests atomic.Int32
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	fleet := make([]*dw, n)
	for i := range fleet {
		d := &dw{CloudDevice: e.Device(t)}
		failing := i == 0
		l, err := cloudlink.New(cloudlink.Config{
			Broker: "mqtts://" + e.MQTTAddr, CAs: pool, DeviceID: d.ID, Product: "DW100",
			Certificate: func(context.Context) (tls.Certificate, error) { return d.Cert, nil },
			QueueDir:    t.TempDir(), Now: time.Now,
			Diagnose: func(ctx context.Context, command string, args json.RawMessage) (json.RawMessage, error) {
				d.tests.Add(1)
				if command != "heater-self-test" {
					return nil, fmt.Errorf("no diagnostic %q", command)
				}
				if failing {
					return json.RawMessage(`{"ok":false,"rise_c_per_min":0.2,"verdict":"heater_failing"}`), nil
				}
				return json.RawMessage(`{"ok":true,"rise_c_per_min":9.5,"verdict":"ok"}`), nil
			},
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		d.link = l
		wg.Go(func() { _ = l.Run(ctx) })
		fleet[i] = d
	}

	// Four cycles, 40 minutes apart, three drying readings each; each cycle is stored for
	// the whole fleet before the next starts, so every device's cycle is judged against a
	// fleet that has washed too.
	base := time.Now().Add(-4 * time.Hour)
	for c := range 4 {
		for i, d := range fleet {
			for k := range 3 {
				temp := 64 + float64((i*7+k*3)%20)/10 // 64.0 to 65.9 °C
				if i == 0 && c >= 1 {
					temp = 40 + float64(k)/10
				}
				p, err := telemetry.Encode(telemetry.Telemetry{V: 1, Time: base.Add(time.Duration(c)*40*time.Minute + time.Duration(k)*time.Minute),
					Cycle: fmt.Sprintf("c%d", c), Phase: "drying", Readings: map[string]telemetry.Reading{"drying_temp": {Value: temp, Unit: "Cel"}}})
				if err != nil {
					t.Fatal(err)
				}
				if err := d.link.Publish(ctx, cloudlink.TopicTelemetry, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, d := range fleet {
			cloudenv.Eventually(t, fmt.Sprintf("cycle %d of %s stored", c, d.ID[:8]), func() (bool, error) {
				got, err := cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
				return got == 3*(c+1), err
			})
		}
	}

	var alerts client.Page[client.Alert]
	cloudenv.Eventually(t, "the heater alert", func() (bool, error) {
		var err error
		alerts, err = e.Admin.ListAlerts(t.Context(), client.AlertQuery{})
		return err == nil && len(alerts.Items) > 0, err
	})
	if len(alerts.Items) != 1 {
		t.Fatalf("alerts = %+v, want exactly one", alerts.Items)
	}
	a := alerts.Items[0]
	if a.Device != fleet[0].ID || a.Rule != "heater-drying-anomaly" || a.State != "open" || a.Product != "DW100" {
		t.Fatalf("alert %+v, want heater-drying-anomaly open on the failing device %s", a, fleet[0].ID)
	}
	if !strings.Contains(string(a.Evidence), "40") {
		t.Errorf("evidence %s does not hold the cool readings", a.Evidence)
	}
	var got client.Alert
	cloudenv.Eventually(t, "the self-test's verdict on the alert", func() (bool, error) {
		var err error
		got, err = e.Admin.GetAlert(t.Context(), a.ID)
		return err == nil && len(got.Diagnostics) == 1 && got.Diagnostics[0].State == "succeeded", err
	})
	dg := got.Diagnostics[0]
	if dg.Device != fleet[0].ID || dg.Command != "heater-self-test" || dg.RequestedBy != "rule:heater-drying-anomaly" || !strings.Contains(string(dg.Result), "heater_failing") {
		t.Errorf("diagnostic %+v, want the failing device's heater self-test with verdict heater_failing", dg)
	}
	// The rule's other actions ran from the outbox: a service request for the alert, the
	// heater's reservation judged out of warranty (no sale is recorded: the shop is never
	// asked), and one signed alert.opened event at the webhook despite its first refusal.
	cloudenv.Eventually(t, "the service request and the reservation's outcome", func() (bool, error) {
		srs, err := e.Admin.ListServiceRequests(t.Context(), client.ServiceRequestQuery{Device: fleet[0].ID})
		if err != nil {
			return false, err
		}
		res, err := e.Admin.ListReservations(t.Context(), client.ReservationQuery{Device: fleet[0].ID})
		return len(srs.Items) == 1 && srs.Items[0].AlertID == a.ID && len(res.Items) == 1 && res.Items[0].State == "out_of_warranty", err
	})
	cloudenv.Eventually(t, "the webhook's event", func() (bool, error) {
		hookMu.Lock()
		defer hookMu.Unlock()
		// The actions' events come after the alert's: once they are in, so is every
		// delivery of alert.opened there will be.
		return len(hookEvents) > 0 && hookTypes["service_request.opened"] > 0 && hookTypes["part.reservation"] > 0, nil
	})
	hookMu.Lock()
	if ev := hookEvents[0]; len(hookEvents) != 1 || ev.Type != "alert.opened" || !strings.Contains(string(ev.Data), fleet[0].ID) || hookCalls != 2 {
		t.Errorf("webhook got %d alert.opened events (first %+v) after %d calls, want one, of the failing device, after 2 calls", len(hookEvents), ev, hookCalls)
	}
	hookMu.Unlock()
	for i, d := range fleet {
		want := int32(0)
		if i == 0 {
			want = 1
		}
		if got := d.tests.Load(); got != want {
			t.Errorf("device %d ran the self-test %d times, want %d", i, got, want)
		}
	}
}
