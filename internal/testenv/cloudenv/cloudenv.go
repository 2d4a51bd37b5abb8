// Package cloudenv is the test environment of the manufacturer cloud: a security service
// (testenv.Platform) with a DW100 product and released images, the tenant's `moat cloud`,
// attested DW100s, and Debian's mosquitto_pub as an independent MQTT client. It is its
// own package so that tests without a cloud do not link one.
package cloudenv

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/cloud"
	"github.com/moat-iot/moat/internal/testenv"
)

// Cloud is a security service with a DW100 product and released images, and the
// manufacturer cloud (`moat cloud`) of its tenant, started with Start.
type Cloud struct {
	P       *testenv.Platform
	OS, App testenv.Image
	// Chain is the tenant's device CA chain file, ServerCA the security service's TLS CA.
	Chain, ServerCA string
	Dir             string
	*cloud.Cloud
	// Admin is the tenant's Administrator on the cloud's API.
	Admin *client.Client
	Logs  *testenv.SyncBuffer
	stop  func()
}

// NewCloud builds the security service side; Start starts the cloud.
func NewCloud(t testing.TB) *Cloud {
	t.Helper()
	e := &Cloud{P: testenv.NewPlatform(t), Dir: t.TempDir()}
	e.OS = e.P.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	e.App = e.P.PublishApp("dw100-app", "1.0.0", 1, "DW100")
	chain, err := e.P.Admin.GetDeviceCAChain(context.Background(), e.P.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	e.Chain = writeFile(t, e.Dir, "devices.pem", chain)
	e.ServerCA = writeFile(t, e.Dir, "server-ca.pem", e.P.Server.CAPEM)
	return e
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// repoRoot is the module's root directory (this file is internal/testenv/cloudenv/cloudenv.go).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Config is the cloud's configuration: free loopback ports, data under Dir, the DW100
// rules of examples/dw100.
func (e *Cloud) Config() cloud.Config {
	cfg := cloud.DefaultConfig()
	cfg.Addr, cfg.MQTTAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = filepath.Join(e.Dir, "cloud")
	cfg.DeviceCA, cfg.Server, cfg.ServerCA = e.Chain, e.P.Server.URL, e.ServerCA
	cfg.Rules = []string{filepath.Join(repoRoot(), "examples", "dw100", "rules.yaml")}
	return cfg
}

// Start runs the cloud with cfg until Stop or the end of the test; its log is dumped when
// the test fails.
func (e *Cloud) Start(t testing.TB, cfg cloud.Config) {
	t.Helper()
	e.Logs = &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := cloud.Open(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	e.Cloud = c
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
		e.Stop()
		if t.Failed() {
			t.Logf("cloud log:\n%s", e.Logs.String())
		}
	})
	e.Admin = e.APIClient(t, e.AdminToken(t))
}

// Stop stops the running cloud; its data stays for the next Start.
func (e *Cloud) Stop() {
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

// AdminToken is a fresh token of the tenant's Administrator.
func (e *Cloud) AdminToken(t testing.TB) string {
	t.Helper()
	tok, err := e.P.Admin.CreateToken(t.Context(), client.TokenCreate{Name: fmt.Sprintf("cloud-%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

// APIClient is a client of the cloud's API with token.
func (e *Cloud) APIClient(t testing.TB, token string) *client.Client {
	t.Helper()
	c, err := client.New(e.URL, client.WithToken(token), client.WithCACertPEM(e.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CloudDevice is an attested DW100 with its certificate and key on disk for MQTT clients.
type CloudDevice struct {
	ID       string
	Cert     tls.Certificate
	CertFile string // PEM chain
	KeyFile  string // PKCS#8 PEM
	NotAfter time.Time
}

// Device registers, claims and attests a DW100 on the security service.
func (e *Cloud) Device(t testing.TB) CloudDevice {
	t.Helper()
	d := e.P.NewDevice(true, "DW100/Production")
	cert, err := e.P.Attest(d, e.OS.Measurement(), e.App.Measurement())
	if err != nil {
		t.Fatalf("Attest = %v", err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return CloudDevice{ID: d.ID, Cert: cert, CertFile: writeFile(t, t.TempDir(), "cert.pem", chain), KeyFile: d.Key.Path(), NotAfter: cert.Leaf.NotAfter}
}

// Mosquitto returns the path of a Debian mosquitto client (mosquitto_pub, mosquitto_sub):
// an MQTT implementation independent of moat's. Without it the test fails under CI=true
// (the test command installs it) and skips otherwise.
func Mosquitto(t testing.TB, name string) string {
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

// Publish publishes lines (one message each) as d on topic with mosquitto_pub, QoS 1: it
// returns once the broker acknowledged every message.
func (e *Cloud) Publish(t testing.TB, d CloudDevice, topic string, lines ...string) error {
	t.Helper()
	host, port, _ := strings.Cut(e.MQTTAddr, ":")
	caFile := filepath.Join(e.Dir, "cloud-ca.pem")
	if err := os.WriteFile(caFile, e.CAPEM, 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(t.Context(), Mosquitto(t, "mosquitto_pub"), "-h", host, "-p", port, "-V", "mqttv311", //nolint:gosec // G204: the test's own mosquitto_pub, with arguments it made
		"--cafile", caFile, "--cert", d.CertFile, "--key", d.KeyFile,
		"-i", d.ID, "-u", "DW100", "-q", "1", "-t", topic, "-l")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("mosquitto_pub: %w: %s", err, out)
	}
	return nil
}

// Reading is a v1 telemetry payload of one drying temperature.
func Reading(at time.Time, cycle, phase string, drying float64) string {
	b, _ := json.Marshal(map[string]any{"v": 1, "time": at.UTC().Format(time.RFC3339Nano), "cycle": cycle, "phase": phase,
		"readings": map[string]any{"drying_temp": map[string]any{"value": drying, "unit": "Cel"}}})
	return string(b)
}

// TelemetryCount is the number of readings the cloud holds for dev.
func TelemetryCount(ctx context.Context, c *client.Client, dev string) (int, error) {
	n := 0
	q := client.TelemetryQuery{Limit: 1000}
	for {
		page, err := c.ListTelemetry(ctx, dev, q)
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

// Eventually polls cond until it holds or 30 s pass.
func Eventually(t testing.TB, what string, cond func() (bool, error)) {
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
