package sim_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/sim"
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// TestSim_TelemetryReachesCloudAndFailingHeaterAlerts runs a real `moat cloud` (its
// embedded MQTT broker trusts the tenant's device CA chain, and it runs the DW100 rules of
// examples/dw100) and 20 simulated devices with a cloud, one of them with a failing heater.
// Every device's telemetry is in the cloud's store, read through the cloud's API; the fleet
// rule heater-drying-anomaly opens an alert for the failing device only, its heater
// self-test runs on that device over its MQTT session and the verdict is on the alert. After
// a reconnect storm every device holds a new session.
func TestSim_TelemetryReachesCloudAndFailingHeaterAlerts(t *testing.T) {
	t.Parallel()
	const n = 20
	ctx := t.Context()
	f, e := newCloudFleet(t)
	cfg := f.config(t, n)
	cfg.Cloud = cloudConfig(t, e)
	cfg.Cloud.FailingHeaterPercent = 5
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	waitFor(t, s, time.Minute, "all connected to the cloud", func(st sim.Stats) bool {
		return st.Cloud != nil && st.Cloud.Connected == n && st.Cloud.FailingHeaters == 1
	})

	// The cloud's own API: every device's readings arrived.
	ds, err := f.p.Admin.ListDevices(ctx, f.p.Tenant, client.ListOptions{Product: "DW100", Limit: 100})
	if err != nil || len(ds.Items) != n {
		t.Fatalf("ListDevices = %d devices, %v; want %d", len(ds.Items), err, n)
	}
	for _, d := range ds.Items {
		eventually(t, time.Minute, "telemetry of "+d.ID[:16]+" in the cloud", func() (bool, error) {
			got, err := e.Admin.ListTelemetry(ctx, d.ID, client.TelemetryQuery{Metric: "drying_temp", Limit: 1})
			return err == nil && len(got.Items) > 0, err
		})
	}

	// The fleet rule sees the cool drying air of one DW100 and opens an alert for it alone.
	var alerts client.Page[client.Alert]
	eventually(t, 2*time.Minute, "the heater alert", func() (bool, error) {
		var err error
		alerts, err = e.Admin.ListAlerts(ctx, client.AlertQuery{})
		return err == nil && len(alerts.Items) > 0, err
	})
	if len(alerts.Items) != 1 || alerts.Items[0].Rule != "heater-drying-anomaly" {
		t.Fatalf("alerts = %+v, want one heater-drying-anomaly", alerts.Items)
	}
	a := alerts.Items[0]
	readings, err := e.Admin.ListTelemetry(ctx, a.Device, client.TelemetryQuery{Metric: "drying_temp", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readings.Items {
		if r.Phase == "drying" && r.Value > 50 {
			t.Fatalf("alert on device %.16s, which dried at %.1f °C: not the failing heater", a.Device, r.Value)
		}
	}
	var got client.Alert
	eventually(t, time.Minute, "the self-test's verdict on the alert", func() (bool, error) {
		var err error
		got, err = e.Admin.GetAlert(ctx, a.ID)
		return err == nil && len(got.Diagnostics) == 1 && got.Diagnostics[0].State == "succeeded", err
	})
	if dg := got.Diagnostics[0]; dg.Device != a.Device || dg.Command != "heater-self-test" || !strings.Contains(string(dg.Result), "heater_failing") {
		t.Errorf("diagnostic %+v, want the failing device's heater self-test with verdict heater_failing", dg)
	}

	// A reconnect storm ends every session; each device connects again with its new
	// certificate.
	before := s.Stats().Cloud
	if before.DiagnosticsAnswered != 1 || before.TelemetrySent < n || before.TelemetrySent > before.Published {
		t.Errorf("cloud stats %+v, want one diagnostic answered and the telemetry sent", before)
	}
	s.Expire()
	waitFor(t, s, time.Minute, "all reconnected after the storm", func(st sim.Stats) bool {
		return st.Storm != nil && st.Storm.Devices == n && st.Cloud.Connected == n && st.Cloud.Connects >= before.Connects+n
	})
}

// newCloudFleet is a fleet (as newFleet, app 1.0.0 deployed) whose tenant runs `moat
// cloud` with the DW100 rules of examples/dw100; the cloud trusts the tenant's device CA
// chain.
func newCloudFleet(t *testing.T) (*fleet, *cloudenv.Cloud) {
	t.Helper()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	f := &fleet{p: e.P, app1: e.App}
	gs, err := f.p.Admin.ListDeviceGroups(t.Context(), f.p.Tenant, f.p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(gs.Items) != 1 {
		t.Fatalf("ListDeviceGroups(Production) = %+v, %v", gs, err)
	}
	f.group = gs.Items[0].ID
	f.deploy(t, f.app1)
	m, err := f.p.Admin.CreateMember(t.Context(), f.p.Tenant, client.MemberCreate{Name: "sim-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	f.admin = m.Secret
	return f, e
}

// cloudConfig sends telemetry to e's broker every second.
func cloudConfig(t *testing.T, e *cloudenv.Cloud) *sim.CloudConfig {
	t.Helper()
	cas := x509.NewCertPool()
	if !cas.AppendCertsFromPEM(e.CAPEM) {
		t.Fatal("cloud CA PEM holds no certificate")
	}
	return &sim.CloudConfig{Broker: "mqtts://" + e.MQTTAddr, CAs: cas, Interval: time.Second}
}

// eventually polls cond until it holds, failing the test after deadline.
func eventually(t *testing.T, deadline time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("after %v, not %s (last error: %v)", deadline, what, err)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, not timing one
	}
}

// TestNew_RejectsBadCloudConfig: every cloud field is checked, all at once.
func TestNew_RejectsBadCloudConfig(t *testing.T) {
	t.Parallel()
	cfg := sim.Config{ServerURL: "https://x", DeviceURL: "https://x", ServerCAs: x509.NewCertPool(), Token: "t", OperatorToken: "o",
		Product: "DW100", Group: "Production", Devices: 1,
		Cloud: &sim.CloudConfig{Broker: "tcp://broker:1883", Interval: time.Millisecond, FailingHeaterPercent: 101}}
	_, err := sim.New(cfg)
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("New(bad cloud) = %v, want broker, cas, interval and failing_heater_percent named", err)
	}
	cfg.Cloud = &sim.CloudConfig{Broker: "mqtts://127.0.0.1:8883", CAs: x509.NewCertPool()}
	if _, err := sim.New(cfg); err != nil {
		t.Fatalf("New(good cloud) = %v", err)
	}
}
