package sim_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/sim"
	"github.com/moat-iot/moat/internal/testenv"
)

// fleet is a platform with an OS, two app versions and version 1.0.0 deployed to
// DW100/Production, and the tokens the simulator needs.
type fleet struct {
	p          *testenv.Platform
	group      string
	app1, app2 testenv.Image
	admin      string // an Administrator's token
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	ctx := t.Context()
	p := testenv.NewPlatform(t)
	f := &fleet{p: p}
	p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	f.app1 = p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	f.app2 = p.PublishApp("dw100-app", "2.0.0", 2, "DW100")
	gs, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(gs.Items) != 1 {
		t.Fatalf("ListDeviceGroups(Production) = %+v, %v", gs, err)
	}
	f.group = gs.Items[0].ID
	f.deploy(t, f.app1)
	m, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "sim-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	f.admin = m.Secret
	return f
}

func (f *fleet) deploy(t *testing.T, im testenv.Image) {
	t.Helper()
	if _, err := f.p.Admin.CreateDeployment(t.Context(), f.p.Tenant, f.p.Product, f.group, client.DeploymentCreate{Target: im.Path}); err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) config(t *testing.T, n int) sim.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(f.p.Server.CAPEM) {
		t.Fatal("server CA PEM holds no certificate")
	}
	return sim.Config{ServerURL: f.p.Server.URL, DeviceURL: f.p.Server.DeviceURL, ServerCAs: pool, Token: f.admin,
		OperatorToken: f.p.Server.OperatorToken, Product: "DW100", Group: "Production", Devices: n, Ramp: 1000, Root: f.p.Root}
}

// start runs s until the test ends and fails the test if Run fails.
func start(t *testing.T, s *sim.Sim) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// waitFor polls s until cond holds, failing the test after deadline.
func waitFor(t *testing.T, s *sim.Sim, deadline time.Duration, what string, cond func(sim.Stats) bool) sim.Stats {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		st := s.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(end) {
			t.Fatalf("after %v, not %s: %s", deadline, what, st.Line())
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not timing one
	}
}

// TestSim_DevicesAttestAndUpdate: 50 simulated devices register, attest with what they run
// and wait; a deployment reaches all of them, each verifies and installs it, attests with it
// and reports its update states, which the service holds.
func TestSim_DevicesAttestAndUpdate(t *testing.T) {
	t.Parallel()
	const n = 50
	f := newFleet(t)
	s, err := sim.New(f.config(t, n))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	waitFor(t, s, time.Minute, "all attested and waiting", func(st sim.Stats) bool {
		return st.Attested == n && st.Waiting == n && st.Apps["1.0.0"] == n && st.OSes["1.0.0"] == n
	})
	f.deploy(t, f.app2)
	st := waitFor(t, s, time.Minute, "all on app 2.0.0", func(st sim.Stats) bool {
		return st.Targets[f.app2.Path].Devices == n && st.Apps["2.0.0"] == n && st.Waiting == n && st.StatesSent >= 5*n
	})
	if st.GaveUp != 0 || st.Refusals != 0 || st.Installs != n || st.Attestations < 2*n {
		t.Errorf("stats = %+v, want no refusals, %d installs and two attestations each", st, n)
	}
	ds, err := f.p.Admin.ListDevices(t.Context(), f.p.Tenant, client.ListOptions{Product: "DW100", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) != n {
		t.Fatalf("ListDevices = %d devices, want %d", len(ds.Items), n)
	}
	for _, d := range ds.Items {
		if d.UpdateState != client.UpdateCommitted || d.Attestation == nil || d.Attestation.Refusal != "" {
			t.Errorf("device %.16s: update state %q, attestation %+v; want committed and accepted", d.ID, d.UpdateState, d.Attestation)
			continue
		}
		if !attested(d.Attestation.Images, f.app2.Path) {
			t.Errorf("device %.16s attested %+v, want %s", d.ID, d.Attestation.Images, f.app2.Path)
		}
	}
}

func attested(ms []client.Measurement, path string) bool {
	for _, m := range ms {
		if m.Path == path {
			return true
		}
	}
	return false
}

// TestNew_RejectsIncompleteConfig: every required field is checked, all at once.
func TestNew_RejectsIncompleteConfig(t *testing.T) {
	t.Parallel()
	_, err := sim.New(sim.Config{CrashVersion: "2.0.0"})
	if err == nil {
		t.Fatal("New(empty config) = nil error")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) < 8 {
		t.Errorf("New(empty config) = %v, want every missing field named", err)
	}
}

// TestSim_ReconnectStorm: after Expire every device drops its certificate and its
// long-poll at once and attests again; the storm statistics count each device once, and
// the server issued each a new certificate (one more attestation each).
func TestSim_ReconnectStorm(t *testing.T) {
	t.Parallel()
	const n = 30
	f := newFleet(t)
	s, err := sim.New(f.config(t, n))
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	before := waitFor(t, s, time.Minute, "all attested and waiting", func(st sim.Stats) bool {
		return st.Attested == n && st.Waiting == n
	})
	if before.Storm != nil {
		t.Fatalf("Storm = %+v before any Expire, want nil", before.Storm)
	}
	if got := s.Expire(); got != n {
		t.Fatalf("Expire() = %d, want %d", got, n)
	}
	// The long-poll lasts up to 50 s: recovering well within it shows the waits were ended.
	st := waitFor(t, s, 40*time.Second, "all recovered and waiting", func(st sim.Stats) bool {
		return st.Storm != nil && st.Storm.Devices == n && st.Waiting == n && st.Certified == n
	})
	sm := st.Storm
	if sm.Expired != n || sm.Last.Before(sm.P99) || sm.P99.Before(sm.P50) || sm.P50.Before(sm.At) {
		t.Errorf("Storm = %+v, want %d expired and At <= P50 <= P99 <= Last", sm, n)
	}
	if st.Attestations < before.Attestations+n {
		t.Errorf("attestations %d after the storm, %d before: want one more per device", st.Attestations, before.Attestations)
	}
	ds, err := f.p.Admin.ListDevices(t.Context(), f.p.Tenant, client.ListOptions{Product: "DW100", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.Items {
		if d.Attestation == nil || d.Attestation.At.Before(sm.At.Truncate(time.Second)) {
			t.Errorf("device %.16s: last attestation %+v, want one after the storm at %s", d.ID, d.Attestation, sm.At)
		}
	}
}
