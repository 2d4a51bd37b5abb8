package cloud_test

import (
	"errors"
	"fmt"
	"io"
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
	"github.com/moat-iot/moat/internal/testenv/cloudenv"
)

// TestCloud_MosquittoPublishIsStored: an independent MQTT client (Debian's mosquitto_pub)
// with an attested device's certificate publishes a reading; the cloud stores it under
// that device and serves it on its API to the tenant's staff.
func TestCloud_MosquittoPublishIsStored(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	d := e.Device(t)
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", cloudenv.Reading(at, "c1", "drying", 64.5)); err != nil {
		t.Fatal(err)
	}
	var got client.Page[client.Reading]
	cloudenv.Eventually(t, "the reading is stored", func() (bool, error) {
		var err error
		got, err = e.Admin.ListTelemetry(t.Context(), d.ID, client.TelemetryQuery{})
		return err == nil && len(got.Items) == 1, err
	})
	r := got.Items[0]
	if !r.Time.Equal(at) || r.Metric != "drying_temp" || r.Value != 64.5 || r.Unit != "Cel" || r.Cycle != "c1" || r.Phase != "drying" {
		t.Errorf("stored reading %+v, want drying_temp 64.5 Cel at %v in c1/drying", r, at)
	}
	devs, err := e.Admin.ListCloudDevices(t.Context(), client.ListOptions{})
	if err != nil || len(devs.Items) != 1 || devs.Items[0].ID != d.ID || devs.Items[0].Product != "DW100" || !devs.Items[0].CertNotAfter.Equal(d.NotAfter) {
		t.Errorf("devices = %+v, %v; want %s of DW100 with its certificate's expiry %v", devs.Items, err, d.ID, d.NotAfter)
	}
}

// TestCloud_OfflineDiagnosticsTimeOut: a diagnostics request to a device that is not
// connected times out cleanly: the request is stored, waited for, and ends timed_out with
// a reason; nothing hangs.
func TestCloud_OfflineDiagnosticsTimeOut(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	d := e.Device(t)
	// Known to the cloud: it connected once.
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", cloudenv.Reading(time.Now().Add(-time.Minute), "c1", "drying", 64)); err != nil {
		t.Fatal(err)
	}
	run, err := e.Admin.RunDiagnostic(t.Context(), d.ID, client.DiagnosticCreate{Command: "heater-self-test", Timeout: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	if run.State != "pending" || run.RequestedBy == "" || !run.Deadline.After(run.RequestedAt) {
		t.Fatalf("new request %+v, want pending with a deadline", run)
	}
	var got client.Diagnostic
	cloudenv.Eventually(t, "the request times out", func() (bool, error) {
		got, err = e.Admin.GetDiagnostic(t.Context(), run.ID, 10*time.Second)
		return err == nil && got.State != "pending", err
	})
	if got.State != "timed_out" || got.Error == "" || got.FinishedAt == nil {
		t.Errorf("offline device's request ended %+v, want timed_out with a reason", got)
	}
	if _, err := e.Admin.RunDiagnostic(t.Context(), strings.Repeat("e", 64), client.DiagnosticCreate{Command: "heater-self-test"}); !isStatus(err, 404) {
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
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	d := e.Device(t)
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", cloudenv.Reading(time.Now().Add(-time.Minute), "c1", "drying", 64)); err != nil {
		t.Fatal(err)
	}
	cloudenv.Eventually(t, "stored", func() (bool, error) {
		n, err := cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
		return n == 1, err
	})
	run, err := e.Admin.RunDiagnostic(t.Context(), d.ID, client.DiagnosticCreate{Command: "heater-self-test", Timeout: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.P.Op.CreateTenant(t.Context(), client.TenantCreate{Name: "Fabrikam"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.P.Op.CreateMember(t.Context(), other.ID, client.MemberCreate{Name: "fabrikam-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	stranger := e.APIClient(t, m.Secret)
	ctx := t.Context()
	calls := map[string]func() error{
		"devices":     func() error { _, err := stranger.ListCloudDevices(ctx, client.ListOptions{}); return err },
		"telemetry":   func() error { _, err := stranger.ListTelemetry(ctx, d.ID, client.TelemetryQuery{}); return err },
		"summaries":   func() error { _, err := stranger.ListSummaries(ctx, d.ID, "cycle", time.Time{}, 0); return err },
		"events":      func() error { _, err := stranger.ListEvents(ctx, d.ID, time.Time{}, 0); return err },
		"alerts":      func() error { _, err := stranger.ListAlerts(ctx, client.AlertQuery{}); return err },
		"alert":       func() error { _, err := stranger.GetAlert(ctx, "1"); return err },
		"diagnostics": func() error { _, err := stranger.ListDiagnostics(ctx, "", client.ListOptions{}); return err },
		"diagnostic":  func() error { _, err := stranger.GetDiagnostic(ctx, run.ID, 0); return err },
		"run": func() error {
			_, err := stranger.RunDiagnostic(ctx, d.ID, client.DiagnosticCreate{Command: "heater-self-test"})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !isStatus(err, 401) {
			t.Errorf("%s as another tenant's Administrator: %v, want 401", name, err)
		}
	}
	ds, err := e.Admin.ListDiagnostics(ctx, d.ID, client.ListOptions{})
	if err != nil || len(ds.Items) != 1 {
		t.Errorf("the tenant's diagnostics after the stranger's attempts: %+v, %v; want only its own one", ds.Items, err)
	}
}

// TestAPI_ReaderCannotRunDiagnostics: sending a command to a device needs Contributor or
// Administrator; a Reader reads but is refused (403) and nothing is sent.
func TestAPI_ReaderCannotRunDiagnostics(t *testing.T) {
	t.Parallel()
	e := cloudenv.NewCloud(t)
	e.Start(t, e.Config())
	d := e.Device(t)
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", cloudenv.Reading(time.Now().Add(-time.Minute), "c1", "drying", 64)); err != nil {
		t.Fatal(err)
	}
	m, err := e.P.Admin.CreateMember(t.Context(), e.P.Tenant, client.MemberCreate{Name: "support", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	reader := e.APIClient(t, m.Secret)
	cloudenv.Eventually(t, "the reader reads", func() (bool, error) {
		n, err := cloudenv.TelemetryCount(t.Context(), reader, d.ID)
		return n == 1, err
	})
	if _, err := reader.RunDiagnostic(t.Context(), d.ID, client.DiagnosticCreate{Command: "heater-self-test"}); !isStatus(err, 403) {
		t.Fatalf("a Reader runs diagnostics: %v, want 403", err)
	}
	ds, err := e.Admin.ListDiagnostics(t.Context(), "", client.ListOptions{})
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
	e := cloudenv.NewCloud(t)
	bin := buildMoat(t)
	d := e.Device(t)
	dataDir := filepath.Join(e.Dir, "cloud")
	args := []string{"cloud", "--data", dataDir, "--addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--device-ca", e.Chain, "--server", e.P.Server.URL, "--server-ca", e.ServerCA, "--device-rate", "1000", "--device-burst", "1000"}
	proc := startMoat(t, bin, args)
	e.Cloud = &cloud.Cloud{URL: proc.url, MQTTAddr: proc.mqtt, CAPEM: readFile(t, filepath.Join(dataDir, "tls", "ca.pem"))}
	base := time.Now().Add(-time.Hour)
	var lines []string
	for i := range 50 {
		lines = append(lines, cloudenv.Reading(base.Add(time.Duration(i)*time.Second), "c1", "drying", 60+float64(i)/10))
	}
	if err := e.Publish(t, d, "devices/"+d.ID+"/telemetry", lines...); err != nil {
		t.Fatal(err)
	}
	proc.kill(t)

	proc = startMoat(t, bin, args)
	defer proc.kill(t)
	e.Cloud = &cloud.Cloud{URL: proc.url, MQTTAddr: proc.mqtt, CAPEM: e.CAPEM}
	e.Admin = e.APIClient(t, e.AdminToken(t))
	var n int
	cloudenv.Eventually(t, "all 50 stored after the restart", func() (bool, error) {
		var err error
		n, err = cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID)
		return n >= 50, err
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would land in the next batch
	if n, _ = cloudenv.TelemetryCount(t.Context(), e.Admin, d.ID); n != 50 {
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
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
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
