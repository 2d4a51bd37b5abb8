package sdk_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/telemetry"
	"github.com/moat-iot/moat/sdk"
)

// TestSDKPayloads_DecodeInTheCloud keeps the SDK's payload types in step with
// internal/telemetry: what PublishTelemetry and PublishEvent send goes through the real
// local API and the real cloud link's checks into its outbox, and decodes there with the
// cloud's own decoders to what the app meant.
func TestSDKPayloads_DecodeInTheCloud(t *testing.T) {
	t.Parallel()
	queue := t.TempDir()
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	link, err := cloudlink.New(cloudlink.Config{
		Broker: "mqtts://127.0.0.1:1", CAs: x509.NewCertPool(), DeviceID: strings.Repeat("ab", 32), Product: "dw100",
		QueueDir: queue, Now: func() time.Time { return now },
		Certificate: func(context.Context) (tls.Certificate, error) { return tls.Certificate{}, errors.New("offline") },
		Diagnose:    func(context.Context, string, json.RawMessage) (json.RawMessage, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := periph.New(periph.Config{
		Backend: periph.NewDW100(), Denied: func(string) {}, Now: time.Now,
		Telemetry: func(ctx context.Context, topic string, payload json.RawMessage) error {
			// As the agent wires it (internal/agent/cloud.go).
			if err := link.Publish(ctx, topic, payload); errors.Is(err, cloudlink.ErrRefused) {
				return fmt.Errorf("%w: %w", periph.ErrTelemetryRefused, err)
			} else if err != nil {
				return err
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rt := &runtime{srv: srv}
	dir, err := os.MkdirTemp("", "sdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rt.sock = filepath.Join(dir, "app.sock")
	l, err := periph.Listen(rt.sock, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	c := connect(t, rt)

	at := time.Date(2026, 7, 1, 11, 59, 0, 0, time.FixedZone("x", 3600))
	tel := sdk.Telemetry{Cycle: "c-42", Phase: "drying", Readings: map[string]sdk.Reading{
		"drying_temp": {Value: 64.5, Unit: sdk.UnitCelsius}, "rinse_agent": {Value: 80, Unit: sdk.UnitPercent},
	}}
	if err := c.PublishTelemetry(t.Context(), tel); err != nil {
		t.Fatalf("PublishTelemetry() = %v", err)
	}
	tel.Time = at
	if err := c.PublishTelemetry(t.Context(), tel); err != nil {
		t.Fatalf("PublishTelemetry(with time) = %v", err)
	}
	ev := sdk.Event{Time: at, Name: "cycle_end", Cycle: "c-42", Message: "done", Readings: map[string]sdk.Reading{
		"water_used": {Value: 11.5, Unit: sdk.UnitLitre}, "energy_used": {Value: 0.93, Unit: sdk.UnitKilowattHour},
	}}
	if err := c.PublishEvent(t.Context(), ev); err != nil {
		t.Fatalf("PublishEvent() = %v", err)
	}
	// A payload the cloud refuses is the app's bad request, not a retry.
	bad := sdk.Telemetry{Readings: map[string]sdk.Reading{"Bad Name": {Value: 1, Unit: "x"}}}
	if err := c.PublishTelemetry(t.Context(), bad); !errors.Is(err, sdk.ErrBadRequest) {
		t.Errorf("PublishTelemetry(bad name) = %v, want ErrBadRequest", err)
	}
	if err := c.Publish(t.Context(), "dw100/alerts", map[string]any{"x": 1}); !errors.Is(err, sdk.ErrBadRequest) {
		t.Errorf("Publish(dw100/alerts) = %v, want ErrBadRequest", err)
	}

	des, err := os.ReadDir(queue)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	if len(names) != 3 {
		t.Fatalf("queue holds %v, want 3 messages", names)
	}
	read := func(i int) []byte {
		data, err := os.ReadFile(filepath.Join(queue, names[i]))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	want := telemetry.Telemetry{V: 1, Time: now, Cycle: "c-42", Phase: "drying", Readings: map[string]telemetry.Reading{
		"drying_temp": {Value: 64.5, Unit: "Cel"}, "rinse_agent": {Value: 80, Unit: "%"},
	}}
	for i, wantTime := range []time.Time{now, at} {
		got, err := telemetry.DecodeTelemetry(read(i))
		if err != nil {
			t.Fatalf("DecodeTelemetry(%s) = %v", read(i), err)
		}
		want.Time = wantTime
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("telemetry %d (-want +got):\n%s", i, diff)
		}
	}
	gotEv, err := telemetry.DecodeEvent(read(2))
	if err != nil {
		t.Fatalf("DecodeEvent(%s) = %v", read(2), err)
	}
	wantEv := telemetry.Event{V: 1, Time: at, Name: "cycle_end", Cycle: "c-42", Message: "done", Readings: map[string]telemetry.Reading{
		"water_used": {Value: 11.5, Unit: "L"}, "energy_used": {Value: 0.93, Unit: "kW.h"},
	}}
	if diff := cmp.Diff(wantEv, gotEv, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
}
