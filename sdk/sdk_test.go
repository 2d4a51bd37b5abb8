package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/agent/netproxy"
	"github.com/moat-iot/moat/internal/agent/periph"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/sdk"
)

// runtime is a real periph server with a DW100 simulation, as the agent runs it.
type runtime struct {
	sock   string
	sim    *periph.DW100
	srv    *periph.Server
	mu     sync.Mutex
	denied []string
	pub    []string
}

var dw100Caps = image.Capabilities{
	GPIO:      []int{periph.DW100Heater, periph.DW100Door},
	ADC:       []int{periph.DW100WaterTemp, periph.DW100DryingTemp, periph.DW100RinseAgent},
	UART:      []string{"ISU0"},
	I2CMaster: []string{"ISU2"},
	PWM:       []string{"PWM0"},
}

func startRuntime(t *testing.T) *runtime {
	t.Helper()
	return startRuntimeWith(t, nil)
}

// startRuntimeWith is startRuntime with mod applied to the server's configuration.
func startRuntimeWith(t *testing.T, mod func(*periph.Config)) *runtime {
	t.Helper()
	rt := &runtime{sim: periph.NewDW100()}
	cfg := periph.Config{
		Capabilities: dw100Caps,
		Backend:      rt.sim,
		Denied: func(c string) {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			rt.denied = append(rt.denied, c)
		},
		Telemetry: func(_ context.Context, topic string, payload json.RawMessage) error {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			rt.pub = append(rt.pub, topic+" "+string(payload))
			return nil
		},
		Now: time.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := periph.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.srv = srv
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
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rt
}

func connect(t *testing.T, rt *runtime) *sdk.Client {
	t.Helper()
	c, err := sdk.ConnectSocket(t.Context(), rt.sock)
	if err != nil {
		t.Fatalf("ConnectSocket() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClient_Peripherals(t *testing.T) {
	t.Parallel()
	rt := startRuntime(t)
	c := connect(t, rt)
	ctx := t.Context()

	rt.sim.SetWaterTemp(480)
	if v, err := c.ADC(periph.DW100WaterTemp).Read(ctx); err != nil || v != 480 {
		t.Errorf("ADC(0).Read() = %d, %v, want 480", v, err)
	}
	if err := c.GPIO(periph.DW100Heater).Set(ctx, true); err != nil || !rt.sim.HeaterOn() {
		t.Errorf("GPIO(4).Set(true) = %v, heater %v", err, rt.sim.HeaterOn())
	}
	rt.sim.SetDoorOpen(true)
	if open, err := c.GPIO(periph.DW100Door).Get(ctx); err != nil || !open {
		t.Errorf("GPIO(17).Get() = %v, %v, want true", open, err)
	}
	if err := c.GPIO(periph.DW100Door).Set(ctx, false); !errors.Is(err, sdk.ErrIO) {
		t.Errorf("GPIO(17).Set() on an input = %v, want ErrIO", err)
	}
	if n, err := c.UART("ISU0").Write(ctx, []byte("AT\r")); err != nil || n != 3 {
		t.Errorf("UART.Write() = %d, %v", n, err)
	}
	if p, err := c.UART("ISU0").Read(ctx, 16, time.Second); err != nil || string(p) != "AT\r" {
		t.Errorf("UART.Read() = %q, %v, want the loopback", p, err)
	}
	rt.sim.AddI2C("ISU2", 0x48, []byte{0x12, 0x34})
	if p, err := c.I2C("ISU2").Transfer(ctx, 0x48, []byte{0}, 2); err != nil || string(p) != "\x12\x34" {
		t.Errorf("I2C.Transfer() = %x, %v", p, err)
	}
	if err := c.PWM("PWM0").Set(ctx, 20*time.Millisecond, 1500*time.Microsecond, true); err != nil {
		t.Errorf("PWM.Set() = %v", err)
	}
	if st, _ := rt.sim.PWM("PWM0"); st != (periph.PWMState{PeriodNS: 20e6, DutyNS: 1.5e6, Enabled: true}) {
		t.Errorf("PWM0 = %+v", st)
	}
}

func TestClient_CapabilityDenied(t *testing.T) {
	t.Parallel()
	rt := startRuntime(t)
	c := connect(t, rt)
	ctx := t.Context()
	errs := []error{
		c.GPIO(5).Set(ctx, true),
		func() error { _, err := c.ADC(7).Read(ctx); return err }(),
		func() error { _, err := c.UART("ISU9").Write(ctx, []byte("x")); return err }(),
		func() error { _, err := c.I2C("ISU9").Transfer(ctx, 1, nil, 1); return err }(),
		c.PWM("PWM9").Set(ctx, time.Millisecond, 0, false),
	}
	for i, err := range errs {
		if !errors.Is(err, sdk.ErrCapabilityDenied) {
			t.Errorf("call %d = %v, want ErrCapabilityDenied", i, err)
		}
		if e, ok := errors.AsType[*sdk.Error](err); !ok || e.Code != "capability_denied" {
			t.Errorf("call %d = %v, want *sdk.Error with code capability_denied", i, err)
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	want := []string{"gpio:5", "adc:7", "uart:ISU9", "i2c_master:ISU9", "pwm:PWM9"}
	if diff := cmp.Diff(want, rt.denied); diff != "" {
		t.Errorf("denials reported (-want +got):\n%s", diff)
	}
}

func TestClient_TelemetryHealthDiagnostics(t *testing.T) {
	t.Parallel()
	rt := startRuntime(t)
	c := connect(t, rt)
	ctx := t.Context()

	if err := c.Publish(ctx, "dw100/cycle", map[string]any{"water": 523, "phase": "wash"}); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	if err := c.Publish(ctx, "bad topic", 1); !errors.Is(err, sdk.ErrBadRequest) {
		t.Errorf("Publish(bad topic) = %v, want ErrBadRequest", err)
	}
	if err := c.ReportUnhealthy(ctx, "warming up"); err != nil {
		t.Fatal(err)
	}
	if err := c.ReportHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.srv.WaitHealthy(ctx); err != nil {
		t.Errorf("WaitHealthy() = %v", err)
	}
	rt.mu.Lock()
	gotPub := rt.pub
	rt.mu.Unlock()
	if diff := cmp.Diff([]string{`dw100/cycle {"phase":"wash","water":523}`}, gotPub); diff != "" {
		t.Errorf("telemetry (-want +got):\n%s", diff)
	}

	dctx, cancel := context.WithCancel(ctx)
	loopDone := make(chan error, 1)
	go func() {
		loopDone <- c.Diagnostics(dctx, func(name string, args json.RawMessage) (any, error) {
			switch name {
			case "heater_check":
				var a struct{ Seconds int }
				if err := json.Unmarshal(args, &a); err != nil {
					return nil, err
				}
				return map[string]any{"ok": true, "seconds": a.Seconds}, nil
			}
			return nil, fmt.Errorf("no diagnostic %q", name)
		})
	}()
	// The app's other calls go on while the loop waits.
	if _, err := c.ADC(periph.DW100DryingTemp).Read(ctx); err != nil {
		t.Errorf("ADC read during the diagnostics loop = %v", err)
	}
	callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
	defer callCancel()
	res, err := rt.srv.Diagnose(callCtx, "heater_check", json.RawMessage(`{"Seconds":3}`))
	if err != nil || string(res) != `{"ok":true,"seconds":3}` {
		t.Errorf("Diagnose(heater_check) = %s, %v", res, err)
	}
	_, err = rt.srv.Diagnose(callCtx, "self_destruct", nil)
	if de, ok := errors.AsType[*periph.DiagnosticError](err); !ok || de.Message != `no diagnostic "self_destruct"` {
		t.Errorf("Diagnose(self_destruct) = %v, want the handler's error", err)
	}
	cancel()
	if err := <-loopDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Diagnostics() = %v, want context.Canceled", err)
	}
}

func TestClient_ContextEndsCallAndReconnects(t *testing.T) {
	t.Parallel()
	rt := startRuntime(t)
	c := connect(t, rt)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.UART("ISU0").Read(ctx, 1, 5*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("UART.Read() past its context = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("UART.Read() returned after %v, want about 50ms", d)
	}
	// The next call gets a fresh connection and the right reply.
	if _, err := c.ADC(periph.DW100RinseAgent).Read(t.Context()); err != nil {
		t.Errorf("call after a cancelled one = %v", err)
	}
}

func TestConnect_NeedsTheRuntime(t *testing.T) {
	t.Setenv(sdk.EnvSocket, "")
	if _, err := sdk.Connect(t.Context()); !errors.Is(err, sdk.ErrNoRuntime) {
		t.Errorf("Connect() without %s = %v, want ErrNoRuntime", sdk.EnvSocket, err)
	}
	rt := startRuntime(t)
	t.Setenv(sdk.EnvSocket, rt.sock)
	c, err := sdk.Connect(t.Context())
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	c.Close()
}

// TestDial_ThroughProxy runs the SDK's dialer and HTTP client against the real proxy.
func TestDial_ThroughProxy(t *testing.T) {
	hits := 0
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		fmt.Fprint(w, "rinse agent ordered")
	}))
	defer web.Close()
	allowed := strings.TrimPrefix(web.URL, "http://")
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("undeclared host reached") }))
	defer other.Close()

	var mu sync.Mutex
	var denied []string
	cfg := netproxy.DefaultConfig()
	cfg.AllowedHosts = []string{allowed}
	cfg.Denied = func(c string) { mu.Lock(); denied = append(denied, c); mu.Unlock() }
	p, err := netproxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()

	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	if _, err := sdk.Dial(t.Context(), "tcp", allowed); !errors.Is(err, sdk.ErrNoNetwork) {
		t.Errorf("Dial() without a proxy = %v, want ErrNoNetwork", err)
	}
	t.Setenv("HTTPS_PROXY", "http://"+l.Addr().String())

	resp, err := sdk.HTTPClient().Get(web.URL + "/order")
	if err != nil {
		t.Fatalf("GET through the proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "rinse agent ordered" || hits != 1 {
		t.Errorf("GET through the proxy = %q (hits %d)", body, hits)
	}
	otherHost := strings.TrimPrefix(other.URL, "http://")
	if _, err := sdk.Dial(t.Context(), "tcp", otherHost); !errors.Is(err, sdk.ErrHostDenied) {
		t.Errorf("Dial(undeclared) = %v, want ErrHostDenied", err)
	}
	if _, err := sdk.HTTPClient().Get(other.URL); !errors.Is(err, sdk.ErrHostDenied) {
		t.Errorf("GET undeclared = %v, want ErrHostDenied", err)
	}
	if _, err := sdk.Dial(t.Context(), "udp", allowed); err == nil {
		t.Error("Dial(udp) = nil error")
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"host:" + otherHost, "host:" + otherHost}, denied); diff != "" {
		t.Errorf("denials (-want +got):\n%s", diff)
	}
}

// TestSDK_ImportsOnlyTheStandardLibrary keeps the SDK importable by third-party apps: it
// must not import moat's internal packages (which Go forbids outside the module) nor
// anything outside the standard library.
func TestSDK_ImportsOnlyTheStandardLibrary(t *testing.T) {
	t.Parallel()
	goTool := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	out, err := exec.CommandContext(t.Context(), goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/moat-iot/moat/sdk" {
			t.Errorf("sdk depends on %s; it may use the standard library only", p)
		}
	}
}
