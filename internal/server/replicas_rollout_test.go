package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/device"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/testenv"
)

// Replicas share a staged rollout (issue 12, item 5): two `moat server` processes advance
// one rollout under the rollout-advance lease; the one holding it is killed in the middle,
// and the other finishes the rollout, each stage opened once, every device served.

// served records every answer the test's clients get, so that a test can say that every
// request was served: any 5xx other than a 503 with Retry-After (the documented "come back
// later") is a failure.
type served struct {
	mu    sync.Mutex
	n     int
	retry int      // 503s with Retry-After
	bad   []string // other 5xx
}

func (s *served) record(r *http.Request, res *http.Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	switch {
	case res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") != "":
		s.retry++
	case res.StatusCode >= 500:
		s.bad = append(s.bad, fmt.Sprintf("%s %s%s = %d", r.Method, r.URL.Host, r.URL.Path, res.StatusCode))
	}
}

// check fails the test for every answer that was not served.
func (s *served) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bad {
		t.Errorf("not served: %s (a 5xx other than 503 with Retry-After)", b)
	}
	t.Logf("%d answers recorded, %d of them 503 with Retry-After", s.n, s.retry)
}

// recorder is an http.RoundTripper that hands every answer to served.
type recorder struct {
	base http.RoundTripper
	s    *served
}

func (rt recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := rt.base.RoundTrip(r)
	if err == nil {
		rt.s.record(r, res)
	}
	return res, err
}

// recordingClient is an HTTP client that trusts caPEM only, presents certs, and records
// every answer in s.
func recordingClient(t *testing.T, caPEM []byte, s *served, certs ...tls.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("replica CA holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: certs}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: recorder{base: tr, s: s}}
}

// MemberOn is a management API client on replica r with a token's secret.
func MemberOn(t *testing.T, r *Replica, secret string, s *served) *client.Client {
	t.Helper()
	c, err := client.New(r.URL, client.WithHTTPClient(recordingClient(t, r.CAPEM(t), s)), client.WithToken(secret))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// LeaseHolder is the name under which the replica takes background job leases, as its
// log says at start-up ("background jobs started", lease_holder).
func (r *Replica) LeaseHolder(t *testing.T) string {
	t.Helper()
	for l := range strings.Lines(r.Logs.String()) {
		var line struct {
			Msg    string `json:"msg"`
			Holder string `json:"lease_holder"`
		}
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "background jobs started" && line.Holder != "" {
			return line.Holder
		}
	}
	t.Fatalf("replica %s logged no lease holder name\n%s", r.Name, r.Logs.String())
	return ""
}

// Alive reports whether the replica's process still runs.
func (r *Replica) Alive() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// rolloutDevice is one device of the rollout test: attested with real evidence, asking
// for its assignment through the device API of either replica.
type rolloutDevice struct {
	d       testenv.Device
	stage   int                         // the rollout stage its hash puts it in
	clients map[*Replica]*client.Client // by replica, with its current certificate
	running string                      // the app it attested with
	counter uint64                      // the last assignment counter it accepted
}

// rolloutFleet is the test's devices and what they share.
type rolloutFleet struct {
	t        *testing.T
	rp       *replicaPair
	s        *served
	director *ecdsa.PublicKey
	anon     map[*Replica]*client.Client
	osImg    testenv.Image
	devs     []*rolloutDevice
}

// attest attests dev through replica r running app, and gives it clients on both
// replicas with the certificate issued.
func (f *rolloutFleet) attest(dev *rolloutDevice, r *Replica, app testenv.Image) error {
	ctx := f.t.Context()
	n, err := f.anon[r].CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: dev.d.ID})
	if err != nil {
		return fmt.Errorf("nonce for %s on %s: %w", dev.d.ID, r.Name, err)
	}
	ev, err := attest.Sign(dev.d.Key, attest.Evidence{DeviceID: dev.d.ID, Nonce: n.Nonce, Time: time.Now(),
		Measurements: []attest.Measurement{f.osImg.Measurement(), app.Measurement()}})
	if err != nil {
		return err
	}
	is, err := f.anon[r].Attest(ctx, ev)
	if err != nil {
		return fmt.Errorf("attest %s on %s: %w", dev.d.ID, r.Name, err)
	}
	cert, err := testenv.TLSCertificate(f.t, is.ChainPEM, dev.d.Key)
	if err != nil {
		return err
	}
	hc := recordingClient(f.t, r.CAPEM(f.t), f.s, cert)
	dev.clients = map[*Replica]*client.Client{}
	for _, rr := range []*Replica{f.rp.A, f.rp.B} {
		if dev.clients[rr], err = client.New(rr.DeviceURL, client.WithHTTPClient(hc)); err != nil {
			return err
		}
	}
	dev.running = app.Path
	return nil
}

// assignment asks replica r for dev's assignment, verifies the director's signature, and
// returns the app it assigns. A 503 (with Retry-After, else served fails the test) is
// asked again, within a deadline.
func (f *rolloutFleet) assignment(dev *rolloutDevice, r *Replica) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := dev.clients[r].GetAssignment(f.t.Context())
		if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling a condition, not timing an assertion
			continue
		}
		if err != nil {
			return "", fmt.Errorf("assignment of %s from %s: %w", dev.d.ID, r.Name, err)
		}
		a, err := director.Verify(raw, f.director, director.Expect{DeviceID: dev.d.ID, TenantID: f.rp.P.Tenant, Now: time.Now()})
		if err != nil {
			return "", fmt.Errorf("assignment of %s from %s: %w", dev.d.ID, r.Name, err)
		}
		if a.Counter < dev.counter {
			return "", fmt.Errorf("assignment of %s from %s: counter %d below %d, accepted before", dev.d.ID, r.Name, a.Counter, dev.counter)
		}
		dev.counter = a.Counter
		for _, im := range a.Images {
			if im.Kind == director.KindApp {
				return im.Path, nil
			}
		}
		return "", nil
	}
}

// rolloutDevices is how many devices the rollout test attests: enough that each of four
// stages holds some.
const rolloutDevices = 40

// rolloutSoak is each stage's soak: long enough to kill a replica between two advances.
const rolloutSoak = 5 * time.Second

// TestReplicas_KilledReplicaLeavesRolloutToTheOther: two replicas (advance job every
// second), 40 devices attested with real evidence through both, a staged deployment
// (25, 50, 75, 100 %, 5 s soak, crash and install gate set and healthy). Devices ask for
// their assignment through both replicas in rounds, and those assigned the new app attest
// with it (so the gate sees them on it). After the first advance the replica holding the
// rollout-advance lease (leases table) is killed by pid (SIGKILL); the other finishes the
// rollout once the lease lapses. The audit log holds one stage_advanced event per stage,
// in order, and one completion; every device, asked through the survivor, is assigned
// the new app; every answer to every device was served; no device ever got the new app
// before its stage opened nor the old one after.
func TestReplicas_KilledReplicaLeavesRolloutToTheOther(t *testing.T) {
	t.Parallel()
	began := time.Now()
	rp := StartReplicaPair(t, "--rollout-advance-interval", "1s")
	p, ctx := rp.P, t.Context()
	s := &served{}
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app1 := p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	app2 := p.PublishApp("dw100-app", "1.1.0", 2, "DW100")
	groups, err := p.Admin.ListDeviceGroups(ctx, p.Tenant, p.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(groups.Items) != 1 {
		t.Fatalf("group Production: %v", err)
	}
	group := groups.Items[0]
	if _, err := p.Admin.CreateDeployment(ctx, p.Tenant, p.Product, group.ID, client.DeploymentCreate{Target: app1.Path}); err != nil {
		t.Fatal(err)
	}
	// An administrator whose token works on both replicas (the platform's is on A).
	adm, err := p.Admin.CreateMember(ctx, p.Tenant, client.MemberCreate{Name: "rollout-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	admin := map[*Replica]*client.Client{rp.A: MemberOn(t, rp.A, adm.Secret, s), rp.B: MemberOn(t, rp.B, adm.Secret, s)}
	ok, err := p.Op.GetOnlineKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dirKey, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	f := &rolloutFleet{t: t, rp: rp, s: s, director: dirKey, osImg: osImg, anon: map[*Replica]*client.Client{}}
	for _, r := range []*Replica{rp.A, rp.B} {
		if f.anon[r], err = client.New(r.DeviceURL, client.WithHTTPClient(recordingClient(t, r.CAPEM(t), s))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rolloutDevices {
		dev := &rolloutDevice{d: p.NewDevice(true, "DW100/Production")}
		if err := f.attest(dev, []*Replica{rp.A, rp.B}[i%2], app1); err != nil {
			t.Fatal(err)
		}
		f.devs = append(f.devs, dev)
	}

	maxCrashRate, minCrashFree, maxFailed := 1.0, 90.0, 10.0
	dep, err := admin[rp.A].CreateDeployment(ctx, p.Tenant, p.Product, group.ID, client.DeploymentCreate{Target: app2.Path,
		Rollout: &client.RolloutCreate{Stages: []float64{25, 50, 75, 100}, Soak: rolloutSoak.String(),
			Gate: client.Gate{MaxCrashRate: &maxCrashRate, MinCrashFree: &minCrashFree, MaxFailedInstalls: &maxFailed, MinInstalls: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	perStage := make([]int, len(dep.Rollout.Stages))
	r := device.Rollout{Stages: dep.Rollout.Stages}
	for _, dev := range f.devs {
		dev.stage = r.StageOf(dep.ID, device.ID(dev.d.ID))
		perStage[dev.stage]++
	}
	t.Logf("devices per stage: %v", perStage)

	// The rollout as the replicas see it; after the kill only the survivor is asked.
	var victim, survivor *Replica
	readRollout := func() client.Rollout {
		t.Helper()
		r := rp.A
		if victim == rp.A {
			r = rp.B
		}
		d, err := admin[r].GetDeployment(ctx, p.Tenant, p.Product, group.ID, dep.ID)
		if err != nil {
			t.Fatalf("read deployment %s on %s: %v", dep.ID, r.Name, err)
		}
		return *d.Rollout
	}
	open := func(ro client.Rollout) int { // the last open stage; every stage once completed
		if ro.State == client.RolloutCompleted {
			return len(ro.Stages) - 1
		}
		return ro.Stage
	}

	var killedAt time.Time
	var stage1 client.Rollout
	deadline := time.Now().Add(3 * time.Minute)
	for round := 0; ; round++ {
		before := readRollout()
		if before.State != client.RolloutRunning && before.State != client.RolloutCompleted {
			t.Fatalf("rollout %s: %+v, want running (a healthy gate)", before.State, before)
		}
		for i, dev := range f.devs {
			r := []*Replica{rp.A, rp.B}[(i+round)%2]
			if victim != nil {
				r = survivor
			}
			app, err := f.assignment(dev, r)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case app == app2.Path && dev.stage > open(readRollout()):
				t.Fatalf("device %s of stage %d assigned %s before its stage opened", dev.d.ID, dev.stage+1, app)
			case app == app1.Path && dev.stage <= open(before):
				t.Fatalf("device %s of stage %d assigned %s after its stage opened", dev.d.ID, dev.stage+1, app)
			case app != app1.Path && app != app2.Path:
				t.Fatalf("device %s assigned %q, want %s or %s", dev.d.ID, app, app1.Path, app2.Path)
			}
			if app == app2.Path && dev.running != app2.Path {
				// It installs the new app and reports it by attesting with it.
				if err := f.attest(dev, r, app2); err != nil {
					t.Fatal(err)
				}
			}
		}
		after := readRollout()
		if after.State == client.RolloutCompleted {
			break
		}
		if victim == nil && after.Stage >= 1 {
			// The first advance is done: kill the replica holding the advance lease.
			stage1 = after
			holder := readLeases(t, rp.DSN)["rollout-advance"]
			switch holder {
			case rp.A.LeaseHolder(t):
				victim, survivor = rp.A, rp.B
			case rp.B.LeaseHolder(t):
				victim, survivor = rp.B, rp.A
			default:
				t.Fatalf("rollout-advance lease held by %q, neither A (%s) nor B (%s)", holder, rp.A.LeaseHolder(t), rp.B.LeaseHolder(t))
			}
			victim.Kill(t)
			killedAt = time.Now()
			t.Logf("killed replica %s (pid %d), holder of the rollout-advance lease, in stage %d of %d", victim.Name, victim.PID(), after.Stage+1, len(after.Stages))
			for readLeases(t, rp.DSN)["rollout-advance"] != survivor.LeaseHolder(t) {
				if time.Since(killedAt) > time.Minute {
					t.Fatalf("%s did not take the rollout-advance lease over within a minute of the kill", survivor.Name)
				}
				time.Sleep(20 * time.Millisecond) // polling a condition, not timing an assertion
			}
			t.Logf("%s took the rollout-advance lease over %s after the kill", survivor.Name, time.Since(killedAt).Round(time.Millisecond))
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout not completed within 3 minutes: %+v", after)
		}
	}
	if victim == nil {
		t.Fatal("the rollout completed before a replica could be killed")
	}
	if !survivor.Alive() {
		t.Fatalf("the surviving replica %s exited\n%s", survivor.Name, survivor.Logs.String())
	}

	// The audit log, through the survivor: one event per stage, in order, one completion.
	var advanced []client.AuditEvent
	var completed int
	audit := func(ctx context.Context, o client.ListOptions) (client.Page[client.AuditEvent], error) {
		return admin[survivor].ListAuditEvents(ctx, p.Tenant, o)
	}
	for e, err := range client.All(ctx, client.ListOptions{Limit: 1000}, audit) {
		if err != nil {
			t.Fatal(err)
		}
		if e.ObjectID != dep.ID {
			continue
		}
		switch e.Action {
		case "deployment.stage_advanced":
			advanced = append(advanced, e)
		case "deployment.rollout_completed":
			completed++
		}
	}
	var got []string
	for _, e := range advanced {
		got = append(got, strings.SplitN(e.Detail, " (", 2)[0])
	}
	want := []string{app2.Path + ": stage 2 of 4", app2.Path + ": stage 3 of 4", app2.Path + ": stage 4 of 4"}
	if !slices.Equal(got, want) || completed != 1 {
		t.Errorf("audit: stage_advanced %q and %d rollout_completed, want %q and 1", got, completed, want)
	}
	// One write per step: created at version 1, three advances and the completion.
	if final := readRollout(); final.Version != int64(len(final.Stages)+1) {
		t.Errorf("rollout at version %d, want %d: one write per stage and the completion", final.Version, len(final.Stages)+1)
	}
	// The survivor took the lease over and advanced the stages after the kill.
	if holder := readLeases(t, rp.DSN)["rollout-advance"]; holder != survivor.LeaseHolder(t) {
		t.Errorf("rollout-advance lease held by %q at the end, want the survivor %s (%s)", holder, survivor.Name, survivor.LeaseHolder(t))
	}
	for _, e := range advanced {
		if e.At.After(killedAt) {
			t.Logf("the survivor opened %q %s after the kill, %s after its soak ended (stage 2 opened at %s, soak %s)",
				strings.SplitN(e.Detail, " (", 2)[0], e.At.Sub(killedAt).Round(time.Millisecond),
				e.At.Sub(stage1.StageStartedAt.Add(rolloutSoak)).Round(time.Millisecond), stage1.StageStartedAt.Format(time.RFC3339Nano), rolloutSoak)
			break
		}
	}

	// Every device, asked through the survivor, is assigned the new app.
	for _, dev := range f.devs {
		app, err := f.assignment(dev, survivor)
		if err != nil {
			t.Fatal(err)
		}
		if app != app2.Path {
			t.Errorf("device %s (stage %d) assigned %q by %s after the rollout, want %s", dev.d.ID, dev.stage+1, app, survivor.Name, app2.Path)
		}
	}
	s.check(t)
	t.Logf("wall time %s", time.Since(began).Round(time.Millisecond))
}
