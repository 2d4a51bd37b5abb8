package agent_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent"
	"github.com/moat-iot/moat/internal/agent/boot"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/errreport"
	"github.com/moat-iot/moat/internal/testenv"
)

// testApps builds the test app once per mode.
var (
	appsOnce sync.Once
	apps     map[string][]byte
	appsErr  error
)

func testApp(t *testing.T, mode string) []byte {
	t.Helper()
	appsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moat-testapp-")
		if err != nil {
			appsErr = err
			return
		}
		defer os.RemoveAll(dir)
		apps = map[string][]byte{}
		for _, m := range []string{"healthy", "crash", "silent", "undeclared"} {
			out := filepath.Join(dir, m)
			cmd := exec.Command("go", "build", "-ldflags", "-X main.mode="+m, "-o", out, "./testdata/testapp")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				appsErr = errors.New(string(b))
				return
			}
			if apps[m], err = os.ReadFile(out); err != nil {
				appsErr = err
				return
			}
		}
	})
	if appsErr != nil {
		t.Fatalf("build the test app: %v", appsErr)
	}
	return apps[mode]
}

// fleet is a platform with an OS on the Retail feed and a healthy app deployed to
// DW100/Production.
type fleet struct {
	*testenv.Platform
	os, app testenv.Image
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	p := testenv.NewPlatform(t)
	f := &fleet{Platform: p}
	f.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	f.app = p.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(f.app.Path)
	return f
}

func (f *fleet) deploy(target string) {
	ctx := context.Background()
	gs, err := f.Admin.ListDeviceGroups(ctx, f.Tenant, f.Product, client.ListOptions{Name: "Production"})
	if err != nil || len(gs.Items) != 1 {
		panic("no Production group")
	}
	if _, err := f.Admin.CreateDeployment(ctx, f.Tenant, f.Product, gs.Items[0].ID, client.DeploymentCreate{Target: target}); err != nil {
		panic(err)
	}
}

// device is an agent running in process for a device of the fleet.
type device struct {
	testenv.Device
	agent  *agent.Agent
	state  string
	cancel context.CancelFunc
	done   chan error
	logs   *testenv.SyncBuffer // the agent's log, as text
}

// agentConfig is what the tests' agents share: device d with its state in state, on the
// test server's device listener, a DW100 backend, logging to t; tests change what they
// need.
func (f *fleet) agentConfig(t *testing.T, d testenv.Device, state string) agent.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.Server.CAPEM)
	return agent.Config{
		StateDir: state, ServerURL: f.Server.DeviceURL, ServerCAs: pool, Root: f.Root, Identity: d.Key,
		Backend: periph.NewDW100(), Now: time.Now, CheckInterval: time.Hour, HealthTimeout: 5 * time.Second, Product: "DW100",
		Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (f *fleet) start(t *testing.T, d testenv.Device, state string) *device {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	cfg := f.agentConfig(t, d, state)
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(tlog{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dv := &device{Device: d, agent: a, state: state, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { dv.done <- a.Run(ctx) }()
	t.Cleanup(func() { dv.stop(t) })
	return dv
}

func (dv *device) stop(t *testing.T) {
	if dv.cancel == nil {
		return
	}
	dv.cancel()
	dv.cancel = nil
	select {
	case err := <-dv.done:
		if err != nil {
			t.Errorf("agent Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("agent did not stop within 20 s")
	}
}

// tlog writes the agent's log to the test's.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// eventually polls cond (the agent works in the background) for up to 90 s: generous,
// for a loaded CI machine running every package's tests with the race detector at once.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within 90 s; last: %s", what, last)
}

// record is the device as the security service sees it.
func (f *fleet) record(t *testing.T, id string) client.Device {
	t.Helper()
	d, err := f.Admin.GetDevice(context.Background(), f.Tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func attested(f *fleet, t *testing.T, id string, paths ...string) func() (bool, string) {
	return func() (bool, string) {
		d := f.record(t, id)
		if d.Attestation == nil || d.Attestation.Refusal != "" {
			return false, "attestation " + describe(d.Attestation)
		}
		if len(d.Attestation.Images) != len(paths) {
			return false, "attested " + describe(d.Attestation)
		}
		for i, p := range paths {
			if d.Attestation.Images[i].Path != p {
				return false, "attested " + describe(d.Attestation)
			}
		}
		return true, ""
	}
}

func describe(a *client.Attestation) string {
	if a == nil {
		return "none"
	}
	s := a.Refusal
	for _, im := range a.Images {
		s += " " + im.Path
	}
	return s
}

// TestAgent_FreshDeviceInstallsItsImagesAndAttests: a device with only its identity and the
// pinned root is refused (nothing booted), uses the recovery grant to install its group's
// OS and app, reboots into them, and attests with both: the whole lifecycle.
func TestAgent_FreshDeviceInstallsItsImagesAndAttests(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	f.start(t, d, t.TempDir())
	eventually(t, "the device attests with the OS and app it installed", attested(f, t, d.ID, f.os.Path, f.app.Path))
}

// reports lists the error reports the server received from a device (the agent sends
// what it queues while it is connected).
func (f *fleet) reports(t *testing.T, dv *device) []errreport.Report {
	t.Helper()
	var rs []errreport.Report
	got, err := f.Admin.ListErrorReports(context.Background(), f.Tenant, dv.ID, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got.Items {
		x := r.Report
		rs = append(rs, errreport.Report{ID: x.ID, Kind: errreport.Kind(x.Kind), ImagePath: x.ImagePath, Code: x.Code,
			ExitCode: x.ExitCode, Signal: x.Signal, StderrTail: x.StderrTail, Step: errreport.Step(x.Step), Target: x.Target, Capability: x.Capability})
	}
	return rs
}

func hasReport(rs []errreport.Report, match func(errreport.Report) bool) bool {
	for _, r := range rs {
		if match(r) {
			return true
		}
	}
	return false
}

// TestAgent_UpdatesToNewAppAndRollsBackACrashingOne: a running device moves to app 1.1.0
// when it is deployed; then 2.0.0, which crashes at start, uses up its tries and is rolled
// back to 1.1.0, marked bad, never retried, with a crash report and an update report queued.
func TestAgent_UpdatesToNewAppAndRollsBackACrashingOne(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	dv := f.start(t, d, t.TempDir())
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	// No nudge: the agent's long-poll hears of the deployment (its check interval is an hour).
	v11 := f.PublishAppWith("dw100-app", "1.1.0", 1, "DW100", testApp(t, "healthy"))
	f.deploy(v11.Path)
	eventually(t, "moves to 1.1.0 without waiting for its interval", attested(f, t, d.ID, f.os.Path, v11.Path))

	bad := f.PublishAppWith("dw100-app", "2.0.0", 2, "DW100", testApp(t, "crash"))
	f.deploy(bad.Path)
	eventually(t, "2.0.0 rolled back", func() (bool, string) {
		rs := f.reports(t, dv)
		crash := hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.AppCrash && r.ImagePath == bad.Path && r.ExitCode != nil && *r.ExitCode == 3 &&
				strings.Contains(r.StderrTail, "heater driver")
		})
		rolled := hasReport(rs, func(r errreport.Report) bool { return r.Kind == errreport.UpdateFailed && r.Code == "app_rolled_back" })
		return crash && rolled, "reports: " + kinds(rs)
	})
	// It runs 1.1.0 again and says so to the service; 2.0.0 is not tried again.
	dv.agent.Nudge()
	eventually(t, "back on 1.1.0", attested(f, t, d.ID, f.os.Path, v11.Path))
	checkLogLines(t, dv.logs.String())
}

// checkLogLines: an agent that started its app several times warned once that the app runs
// without the sandbox, and no line names the device twice (issue 10, defect 12).
func checkLogLines(t *testing.T, logs string) {
	t.Helper()
	if n := strings.Count(logs, agent.NoSandboxWarning); n != 1 {
		t.Errorf("the log warns %d times that the app runs without the sandbox, want once", n)
	}
	for l := range strings.Lines(logs) {
		if n := strings.Count(l, " device_id="); n > 1 {
			t.Errorf("log line names device_id %d times: %s", n, l)
		}
	}
}

func kinds(rs []errreport.Report) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(string(r.Kind) + "/" + r.Code + "/" + r.Capability + "/" + r.ImagePath + " ")
	}
	return b.String()
}

// TestAgent_UndeclaredPeripheralIsRefusedAndReported (rule 6): an app that drives a GPIO
// pin, or reaches a host, its manifest does not declare is refused, and each denial is
// reported.
func TestAgent_UndeclaredPeripheralIsRefusedAndReported(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	f := &fleet{Platform: p}
	f.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	f.app = p.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", testApp(t, "undeclared"))
	f.deploy(f.app.Path)
	d := f.NewDevice(true, "DW100/Production")
	dv := f.start(t, d, t.TempDir())
	eventually(t, "capability denial reported", func() (bool, string) {
		rs := f.reports(t, dv)
		gpio := hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.CapabilityDenied && r.Capability == "gpio:5" && r.ImagePath == f.app.Path
		})
		host := hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.CapabilityDenied && r.Capability == "host:evil.example:443" && r.ImagePath == f.app.Path
		})
		return gpio && host, kinds(rs)
	})
}

// TestAgent_SandboxedApp (rule 6, as root): with --app-uid the app runs as that
// unprivileged user in its own network namespace: it cannot reach the network around the
// proxy, the proxy refuses undeclared hosts, and undeclared peripherals are refused; every
// denial is reported.
func TestAgent_SandboxedApp(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root: this test must run there")
		}
		t.Skip("the sandbox's namespace mode needs root")
	}
	p := testenv.NewPlatform(t)
	f := &fleet{Platform: p}
	f.os = p.PublishOS("moat-os", "1.0.0", 1, "Retail")
	f.app = p.PublishAppWith("dw100-app", "1.0.0", 1, "DW100", testApp(t, "undeclared"))
	f.deploy(f.app.Path)
	d := f.NewDevice(true, "DW100/Production")
	state := filepath.Join(t.TempDir(), "state")
	// The app's user must be able to traverse down to its slot, as under /var/lib.
	for dir := filepath.Dir(state); dir != "/"; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(dir, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
	whoami := make(chan string, 16)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.Server.CAPEM)
	a, err := agent.New(agent.Config{
		StateDir: state, ServerURL: f.Server.DeviceURL, ServerCAs: pool, Root: f.Root, Identity: d.Key,
		Backend: periph.NewDW100(), Now: time.Now, CheckInterval: time.Hour, HealthTimeout: 10 * time.Second,
		Product: "DW100", AppUID: 65534, AppGID: 65534,
		Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Telemetry: func(_ context.Context, topic string, payload []byte) error {
			if topic == "whoami" {
				whoami <- string(payload)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case w := <-whoami:
		if !strings.Contains(w, `"uid":65534`) || !strings.Contains(w, `"direct":"refused"`) {
			t.Errorf("the app reports %s, want uid 65534 and no direct network", w)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the sandboxed app never published")
	}
	dv := &device{Device: d, state: state}
	eventually(t, "both denials reported", func() (bool, string) {
		rs := f.reports(t, dv)
		gpio := hasReport(rs, func(r errreport.Report) bool { return r.Capability == "gpio:5" })
		host := hasReport(rs, func(r errreport.Report) bool { return r.Capability == "host:evil.example:443" })
		return gpio && host, kinds(rs)
	})
}

// TestAgent_NewOSRefusedAtAttestationRollsBack: a new OS that comes up but is refused at
// attestation (here it was revoked while the device installed it) is rolled back to the
// previous OS, which attests again; the failed step is reported.
func TestAgent_NewOSRefusedAtAttestationRollsBack(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	d := f.NewDevice(true, "DW100/Production")
	state := t.TempDir()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.Server.CAPEM)
	var os2Path atomic.Value // set once OS 2.0.0 is published
	os2Path.Store("")
	var revoked sync.Once
	a, err := agent.New(agent.Config{
		StateDir: state, ServerURL: f.Server.DeviceURL, ServerCAs: pool, Root: f.Root, Identity: d.Key,
		Backend: periph.NewDW100(), Now: time.Now, CheckInterval: time.Hour, HealthTimeout: 5 * time.Second, Product: "DW100",
		Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Step: func(step string) {
			p := os2Path.Load().(string)
			if step != "installed" || p == "" {
				return
			}
			if rec, err := boot.ReadRecord(state); err == nil && rec.OS.Pending != "" && rec.OS.Images[rec.OS.Pending].Path == p {
				revoked.Do(func() { f.RevokeOS(p) })
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "first boot", attested(f, t, d.ID, f.os.Path, f.app.Path))

	os2Path.Store("os/moat-os/2.0.0") // before publishing: the agent hears of it at once
	os2 := f.PublishOS("moat-os", "2.0.0", 1, "Retail")
	dv := &device{Device: d, state: state}
	eventually(t, "2.0.0 refused, rolled back and reported", func() (bool, string) {
		rs := f.reports(t, dv)
		return hasReport(rs, func(r errreport.Report) bool {
			return r.Kind == errreport.UpdateFailed && r.Step == errreport.StepAttest && r.Code == "os_refused" && r.Target == os2.Path
		}), kinds(rs)
	})
	eventually(t, "back on 1.0.0", attested(f, t, d.ID, f.os.Path, f.app.Path))
	eventually(t, "the service's update history shows the rollback with its reason", func() (bool, string) {
		h := f.history(t, d.ID, os2.Path)
		if len(h) == 0 {
			return false, "no history"
		}
		rb := h[len(h)-1]
		return rb.State == client.UpdateRolledBack && rb.Code == "os_refused" && rb.Kind == "os", steps(h)
	})
	if rec, err := boot.ReadRecord(state); err != nil || rec.OS.Images[rec.OS.Active].Path != f.os.Path || rec.OS.Pending != "" {
		t.Errorf("boot record OS = %+v, %v; want %s active and nothing pending", rec.OS, err, f.os.Path)
	}
}
