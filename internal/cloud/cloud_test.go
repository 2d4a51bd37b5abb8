package cloud_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud"
	"github.com/moat-iot/moat/internal/testenv"
)

// env is a security service with a DW100 product and its released images, and a cloud
// of its tenant.
type env struct {
	p        *testenv.Platform
	os, app  testenv.Image
	chain    string // the tenant's device CA chain file
	serverCA string // the security service's TLS CA file
	dir      string
	cloud    *cloud.Cloud
	admin    *client.Client // the tenant's Administrator, on the cloud's API
	logs     *testenv.SyncBuffer
	stop     func()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{p: testenv.NewPlatform(t), dir: t.TempDir()}
	e.os = e.p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	e.app = e.p.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	chain, err := e.p.Admin.GetDeviceCAChain(t.Context(), e.p.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	e.chain = writeFile(t, e.dir, "devices.pem", chain)
	e.serverCA = writeFile(t, e.dir, "server-ca.pem", e.p.Server.CAPEM)
	return e
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// config is the cloud's configuration for e, on free loopback ports.
func (e *env) config(t *testing.T) cloud.Config {
	cfg := cloud.DefaultConfig()
	cfg.Addr, cfg.MQTTAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = filepath.Join(e.dir, "cloud")
	cfg.DeviceCA, cfg.Server, cfg.ServerCA = e.chain, e.p.Server.URL, e.serverCA
	cfg.Rules = []string{filepath.Join("..", "..", "examples", "dw100", "rules.yaml")}
	return cfg
}

// start runs the cloud with cfg until the test ends.
func (e *env) start(t *testing.T, cfg cloud.Config) {
	t.Helper()
	e.logs = &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := cloud.Open(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	e.cloud = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
			e.stop = nil
		}
		if t.Failed() {
			t.Logf("cloud log:\n%s", e.logs.String())
		}
	})
	e.admin = e.apiClient(t, adminToken(t, e.p))
}

// adminToken is a fresh token of the tenant's Administrator.
func adminToken(t *testing.T, p *testenv.Platform) string {
	t.Helper()
	tok, err := p.Admin.CreateToken(t.Context(), client.TokenCreate{Name: fmt.Sprintf("cloud-%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

func (e *env) apiClient(t *testing.T, token string) *client.Client {
	t.Helper()
	c, err := client.New(e.cloud.URL, client.WithToken(token), client.WithCACertPEM(e.cloud.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// device is an attested DW100 with its certificate and key on disk for MQTT clients.
type device struct {
	id             string
	cert           tls.Certificate
	certFile, key  string
	chainPEM       []byte
	notAfter       time.Time
	serial, tenant string
}

func (e *env) device(t *testing.T) device {
	t.Helper()
	d := e.p.NewDevice(true, "DW100/Production")
	cert, err := e.p.Attest(d, e.os.Measurement(), e.app.Measurement())
	if err != nil {
		t.Fatalf("Attest = %v", err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	dir := t.TempDir()
	return device{id: d.ID, cert: cert, certFile: writeFile(t, dir, "cert.pem", chain), key: d.Key.Path(), chainPEM: chain, notAfter: cert.Leaf.NotAfter}
}

// needMosquitto returns the path of a mosquitto client, failing under CI=true without it.
func needMosquitto(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (Debian's mosquitto-clients): the test command installs it", name)
		}
		t.Skipf("%s not found; install Debian's mosquitto-clients", name)
	}
	return path
}

// pub publishes lines (one message each) as d with mosquitto_pub, QoS 1: it exits once
// the broker acknowledged every message.
func (e *env) pub(t *testing.T, d device, topic string, lines ...string) error {
	t.Helper()
	host, port, _ := strings.Cut(e.cloud.MQTTAddr, ":")
	cmd := exec.Command(needMosquitto(t, "mosquitto_pub"), "-h", host, "-p", port, "-V", "mqttv311",
		"--cafile", caFile(t, e), "--cert", d.certFile, "--key", d.key,
		"-i", d.id, "-u", "DW100", "-q", "1", "-t", topic, "-l")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("mosquitto_pub: %v: %s", err, out)
	}
	return nil
}

func caFile(t *testing.T, e *env) string {
	path := filepath.Join(e.dir, "cloud-ca.pem")
	if _, err := os.Stat(path); err != nil {
		writeFile(t, e.dir, "cloud-ca.pem", e.cloud.CAPEM)
	}
	return path
}

func reading(at time.Time, cycle, phase string, drying float64) string {
	b, _ := json.Marshal(map[string]any{"v": 1, "time": at.UTC().Format(time.RFC3339Nano), "cycle": cycle, "phase": phase,
		"readings": map[string]any{"drying_temp": map[string]any{"value": drying, "unit": "Cel"}}})
	return string(b)
}

// eventually polls cond until it holds or 30 s pass.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within 30s (last error: %v)", what, lastErr)
}

func telemetryCount(t *testing.T, c *client.Client, dev string) (int, error) {
	n := 0
	q := client.TelemetryQuery{Limit: 1000}
	for {
		page, err := c.ListTelemetry(t.Context(), dev, q)
		if err != nil {
			return 0, err
		}
		n += len(page.Items)
		if page.NextPageToken == "" {
			return n, nil
		}
		q.PageToken = page.NextPageToken
	}
}

// TestCloud_MosquittoPublishIsStored: an independent MQTT client (Debian's mosquitto_pub)
// with an attested device's certificate publishes a reading; the cloud stores it under
// that device and serves it on its API to the tenant's staff.
func TestCloud_MosquittoPublishIsStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, e.config(t))
	d := e.device(t)
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	if err := e.pub(t, d, "devices/"+d.id+"/telemetry", reading(at, "c1", "drying", 64.5)); err != nil {
		t.Fatal(err)
	}
	var got client.Page[client.Reading]
	eventually(t, "the reading is stored", func() (bool, error) {
		var err error
		got, err = e.admin.ListTelemetry(t.Context(), d.id, client.TelemetryQuery{})
		return err == nil && len(got.Items) == 1, err
	})
	r := got.Items[0]
	if !r.Time.Equal(at) || r.Metric != "drying_temp" || r.Value != 64.5 || r.Unit != "Cel" || r.Cycle != "c1" || r.Phase != "drying" {
		t.Errorf("stored reading %+v, want drying_temp 64.5 Cel at %v in c1/drying", r, at)
	}
	devs, err := e.admin.ListCloudDevices(t.Context(), client.ListOptions{})
	if err != nil || len(devs.Items) != 1 || devs.Items[0].ID != d.id || devs.Items[0].Product != "DW100" || !devs.Items[0].CertNotAfter.Equal(d.notAfter) {
		t.Errorf("devices = %+v, %v; want %s of DW100 with its certificate's expiry %v", devs.Items, err, d.id, d.notAfter)
	}
}

// TestCloud_OfflineDiagnosticsTimeOut: a diagnostics request to a device that is not
// connected times out cleanly: the request is stored, waited for, and ends timed_out with
// a reason; nothing hangs.
func TestCloud_OfflineDiagnosticsTimeOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, e.config(t))
	d := e.device(t)
	// Known to the cloud: it connected once.
	if err := e.pub(t, d, "devices/"+d.id+"/telemetry", reading(time.Now().Add(-time.Minute), "c1", "drying", 64)); err != nil {
		t.Fatal(err)
	}
	run, err := e.admin.RunDiagnostic(t.Context(), d.id, client.DiagnosticCreate{Command: "heater-self-test", Timeout: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	if run.State != "pending" || run.RequestedBy == "" || !run.Deadline.After(run.RequestedAt) {
		t.Fatalf("new request %+v, want pending with a deadline", run)
	}
	var got client.Diagnostic
	eventually(t, "the request times out", func() (bool, error) {
		got, err = e.admin.GetDiagnostic(t.Context(), run.ID, 10*time.Second)
		return err == nil && got.State != "pending", err
	})
	if got.State != "timed_out" || got.Error == "" || got.FinishedAt == nil {
		t.Errorf("offline device's request ended %+v, want timed_out with a reason", got)
	}
	if _, err := e.admin.RunDiagnostic(t.Context(), strings.Repeat("e", 64), client.DiagnosticCreate{Command: "heater-self-test"}); !isStatus(err, 404) {
		t.Errorf("diagnostics for a device the cloud never saw: %v, want 404", err)
	}
}

func isStatus(err error, status int) bool {
	ce, ok := errors.AsType[*client.Error](err)
	return ok && ce.Status == status
}

// TestAPI_OtherTenantSeesNothing attacks rule 3 on every route of the cloud's API: the
// Administrator of another tenant of the same security service gets 401 everywhere and
// no object; the cloud's own tenant reads.
func TestAPI_OtherTenantSeesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, e.config(t))
	d := e.device(t)
	if err := e.pub(t, d, "devices/"+d.id+"/telemetry", reading(time.Now().Add(-time.Minute), "c1", "drying", 64)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stored", func() (bool, error) {
		n, err := telemetryCount(t, e.admin, d.id)
		return n == 1, err
	})
	run, err := e.admin.RunDiagnostic(t.Context(), d.id, client.DiagnosticCreate{Command: "heater-self-test", Timeout: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.p.Op.CreateTenant(t.Context(), client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.p.Op.CreateMember(t.Context(), other.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	stranger := e.apiClient(t, m.Secret)
	ctx := t.Context()
	calls := map[string]func() error{
		"devices":     func() error { _, err := stranger.ListCloudDevices(ctx, client.ListOptions{}); return err },
		"telemetry":   func() error { _, err := stranger.ListTelemetry(ctx, d.id, client.TelemetryQuery{}); return err },
		"summaries":   func() error { _, err := stranger.ListSummaries(ctx, d.id, "cycle", time.Time{}, 0); return err },
		"events":      func() error { _, err := stranger.ListEvents(ctx, d.id, time.Time{}, 0); return err },
		"alerts":      func() error { _, err := stranger.ListAlerts(ctx, client.AlertQuery{}); return err },
		"alert":       func() error { _, err := stranger.GetAlert(ctx, "1"); return err },
		"diagnostics": func() error { _, err := stranger.ListDiagnostics(ctx, "", client.ListOptions{}); return err },
		"diagnostic":  func() error { _, err := stranger.GetDiagnostic(ctx, run.ID, 0); return err },
		"run": func() error {
			_, err := stranger.RunDiagnostic(ctx, d.id, client.DiagnosticCreate{Command: "heater-self-test"})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !isStatus(err, 401) {
			t.Errorf("%s as another tenant's Administrator: %v, want 401", name, err)
		}
	}
	ds, err := e.admin.ListDiagnostics(ctx, d.id, client.ListOptions{})
	if err != nil || len(ds.Items) != 1 {
		t.Errorf("the tenant's diagnostics after the stranger's attempts: %+v, %v; want only its own one", ds.Items, err)
	}
}

// TestAPI_ReaderCannotRunDiagnostics: sending a command to a device needs Contributor or
// Administrator; a Reader reads but is refused (403) and nothing is sent.
func TestAPI_ReaderCannotRunDiagnostics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, e.config(t))
	d := e.device(t)
	if err := e.pub(t, d, "devices/"+d.id+"/telemetry", reading(time.Now().Add(-time.Minute), "c1", "drying", 64)); err != nil {
		t.Fatal(err)
	}
	m, err := e.p.Admin.CreateMember(t.Context(), e.p.Tenant, client.MemberCreate{Name: "support", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	reader := e.apiClient(t, m.Secret)
	eventually(t, "the reader reads", func() (bool, error) {
		n, err := telemetryCount(t, reader, d.id)
		return n == 1, err
	})
	if _, err := reader.RunDiagnostic(t.Context(), d.id, client.DiagnosticCreate{Command: "heater-self-test"}); !isStatus(err, 403) {
		t.Fatalf("a Reader runs diagnostics: %v, want 403", err)
	}
	ds, err := e.admin.ListDiagnostics(t.Context(), "", client.ListOptions{})
	if err != nil || len(ds.Items) != 0 {
		t.Errorf("diagnostics after the Reader's attempt: %+v, %v; want none", ds.Items, err)
	}
}

// TestCloud_AcknowledgedMessagesSurviveKill: messages the broker acknowledged (PUBACK) are
// stored even when `moat cloud` is killed (SIGKILL) right after the acknowledgement: a
// real moat binary, mosquitto_pub publishing 50 messages with QoS 1, a kill as soon as it
// exits, a restart on the same data directory; each message is stored exactly once.
func TestCloud_AcknowledgedMessagesSurviveKill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bin := buildMoat(t)
	d := e.device(t)
	dataDir := filepath.Join(e.dir, "cloud")
	args := []string{"cloud", "--data", dataDir, "--addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--device-ca", e.chain, "--server", e.p.Server.URL, "--server-ca", e.serverCA, "--device-rate", "1000", "--device-burst", "1000"}
	proc := startMoat(t, bin, args)
	e.cloud = &cloud.Cloud{URL: proc.url, MQTTAddr: proc.mqtt, CAPEM: readFile(t, filepath.Join(dataDir, "tls", "ca.pem"))}
	base := time.Now().Add(-time.Hour)
	var lines []string
	for i := range 50 {
		lines = append(lines, reading(base.Add(time.Duration(i)*time.Second), "c1", "drying", 60+float64(i)/10))
	}
	if err := e.pub(t, d, "devices/"+d.id+"/telemetry", lines...); err != nil {
		t.Fatal(err)
	}
	proc.kill(t)

	proc = startMoat(t, bin, args)
	defer proc.kill(t)
	e.cloud = &cloud.Cloud{URL: proc.url, MQTTAddr: proc.mqtt, CAPEM: e.cloud.CAPEM}
	e.admin = e.apiClient(t, adminToken(t, e.p))
	var n int
	eventually(t, "all 50 stored after the restart", func() (bool, error) {
		var err error
		n, err = telemetryCount(t, e.admin, d.id)
		return n >= 50, err
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would land in the next batch
	if n, _ = telemetryCount(t, e.admin, d.id); n != 50 {
		t.Errorf("%d readings stored, want each of the 50 acknowledged exactly once", n)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildMoat builds cmd/moat once per test binary.
func buildMoat(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moat-cloud-test-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "moat")
		out, err := exec.Command("go", "build", "-o", builtBin, "../../cmd/moat").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

type moatProc struct {
	cmd       *exec.Cmd
	url, mqtt string
	out       *testenv.SyncBuffer
}

// startMoat runs `moat cloud` and reads its addresses from what it prints.
func startMoat(t *testing.T, bin string, args []string) *moatProc {
	t.Helper()
	p := &moatProc{cmd: exec.Command(bin, args...), out: &testenv.SyncBuffer{}}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		b := make([]byte, 4096)
		var acc string
		for {
			n, err := stdout.Read(b)
			acc += string(b[:n])
			for {
				line, rest, ok := strings.Cut(acc, "\n")
				if !ok {
					break
				}
				acc = rest
				lines <- line
			}
			if err != nil {
				close(lines)
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
	}()
	timeout := time.After(30 * time.Second)
	for p.url == "" || p.mqtt == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("moat cloud exited: %s", p.out.String())
			}
			if rest, ok := strings.CutPrefix(line, "moat cloud: "); ok {
				p.url, _, _ = strings.Cut(rest, " ")
			}
			if rest, ok := strings.CutPrefix(line, "MQTT for devices: mqtts://"); ok {
				p.mqtt = rest
			}
		case <-timeout:
			p.kill(t)
			t.Fatalf("moat cloud did not print its addresses: %s", p.out.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return p
}

func (p *moatProc) kill(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}
