package periph

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
)

// dw100Caps are the capabilities of examples/dw100/app/app.json, plus a UART, an I2C bus
// and a PWM for the ops the DW100 does not use.
var dw100Caps = image.Capabilities{
	AllowedHosts: []string{"telemetry.contoso.example:8883"},
	GPIO:         []int{DW100Heater, DW100Door},
	ADC:          []int{DW100WaterTemp, DW100DryingTemp, DW100RinseAgent},
	UART:         []string{"ISU0"},
	I2CMaster:    []string{"ISU2"},
	PWM:          []string{"PWM0"},
}

// recorder collects what the server hands to the runtime.
type recorder struct {
	mu        sync.Mutex
	denied    []string
	telemetry []string
	health    []Health
	failPub   error
}

func (r *recorder) Denied(c string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.denied = append(r.denied, c)
}

func (r *recorder) Telemetry(_ context.Context, topic string, payload json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failPub != nil {
		return r.failPub
	}
	r.telemetry = append(r.telemetry, topic+" "+string(payload))
	return nil
}

func (r *recorder) Health(h Health) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.health = append(r.health, h)
}

func (r *recorder) Denials() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.denied...)
}

var testNow = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type fixture struct {
	srv  *Server
	rec  *recorder
	sock string
}

// startServer serves a DW100 simulation with dw100Caps on a socket in a temporary
// directory until the test ends, and checks that Serve returns then.
func startServer(t *testing.T, b Backend, mod func(*Config)) *fixture {
	t.Helper()
	rec := &recorder{}
	cfg := Config{
		Capabilities: dw100Caps,
		Backend:      b,
		Denied:       rec.Denied,
		Telemetry:    rec.Telemetry,
		Health:       rec.Health,
		Now:          func() time.Time { return testNow },
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	// A short directory: socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "periph")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "app.sock")
	l, err := Listen(sock, -1, -1)
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve() = %v, want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve() did not return after cancel")
		}
	})
	return &fixture{srv: srv, rec: rec, sock: sock}
}

// conn is a raw protocol client.
type conn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (f *fixture) dial(t *testing.T) *conn {
	t.Helper()
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{t: t, c: c, br: bufio.NewReader(c)}
}

type reply struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Value   json.RawMessage `json:"value"`
	Data    []byte          `json:"data"`
	Written int             `json:"written"`
	Until   string          `json:"until"`
	Request *struct {
		RequestID string          `json:"request_id"`
		Name      string          `json:"name"`
		Args      json.RawMessage `json:"args"`
	} `json:"request"`
}

func (r reply) code() string {
	if r.Error == nil {
		return ""
	}
	return r.Error.Code
}

// send writes line and returns the decoded reply.
func (c *conn) send(line string) reply {
	c.t.Helper()
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write([]byte(line + "\n")); err != nil {
		c.t.Fatalf("write %s: %v", line, err)
	}
	b, err := c.br.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("read reply to %.80s: %v", line, err)
	}
	var r reply
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		c.t.Fatalf("reply %s: %v", b, err)
	}
	if r.OK != (r.Error == nil) {
		c.t.Fatalf("reply %s: ok and error disagree", b)
	}
	return r
}

// trySend sends line on a new connection and reports whether it got an ok reply.
func (f *fixture) trySend(line string) bool {
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return false
	}
	b, err := bufio.NewReader(c).ReadBytes('\n')
	var r reply
	return err == nil && json.Unmarshal(b, &r) == nil && r.OK
}

func (c *conn) ok(line string) reply {
	c.t.Helper()
	r := c.send(line)
	if !r.OK {
		c.t.Fatalf("%s = error %s: %s, want ok", line, r.Error.Code, r.Error.Message)
	}
	return r
}

// TestServer_RefusesUndeclaredPeripherals attacks DESIGN rule 6 (ATTACKS row 27) for every
// peripheral kind: the op is refused, the runtime is told, and the hardware is untouched.
func TestServer_RefusesUndeclaredPeripherals(t *testing.T) {
	t.Parallel()
	sim := NewDW100()
	sim.AddI2C("ISU3", 0x50, nil)
	f := startServer(t, sim, nil)
	c := f.dial(t)
	tests := []struct{ line, capability string }{
		{`{"id":1,"op":"gpio.set","pin":5,"value":true}`, "gpio:5"},
		{`{"id":2,"op":"gpio.get","pin":18}`, "gpio:18"},
		{`{"id":3,"op":"gpio.set","pin":-1,"value":true}`, "gpio:-1"},
		{`{"id":4,"op":"adc.read","channel":3}`, "adc:3"},
		{`{"id":5,"op":"uart.write","uart":"ISU1","data":"aGk="}`, "uart:ISU1"},
		{`{"id":6,"op":"uart.read","uart":"isu0","max":1,"timeout_ms":0}`, "uart:isu0"},
		{`{"id":7,"op":"i2c.transfer","bus":"ISU3","address":80,"write":"AAE=","read":0}`, "i2c_master:ISU3"},
		{`{"id":8,"op":"pwm.set","pwm":"PWM1","period_ns":10,"duty_ns":5,"enabled":true}`, "pwm:PWM1"},
		{`{"id":9,"op":"uart.write","uart":"ISU0\u0000\n` + strings.Repeat("x", 100) + `","data":""}`, "uart:ISU0??" + strings.Repeat("x", 58) + "..."},
	}
	for _, tt := range tests {
		r := c.send(tt.line)
		if r.code() != CodeCapabilityDenied {
			t.Errorf("%s = %+v, want %s", tt.line, r, CodeCapabilityDenied)
		}
	}
	var want []string
	for _, tt := range tests {
		want = append(want, tt.capability)
	}
	if diff := cmp.Diff(want, f.rec.Denials()); diff != "" {
		t.Errorf("Denied calls mismatch (-want +got):\n%s", diff)
	}
	if sim.Pin(5) || sim.I2CRegisters("ISU3", 0x50)[0] != 0 {
		t.Error("a refused op reached the hardware")
	}
	if _, set := sim.PWM("PWM1"); set {
		t.Error("a refused pwm.set reached the hardware")
	}
	// Declared peripherals still work on the same connection.
	c.ok(`{"id":10,"op":"gpio.set","pin":4,"value":true}`)
	if !sim.HeaterOn() {
		t.Error("gpio.set 4 = ok, but the heater is off")
	}
}

func TestServer_DW100(t *testing.T) {
	t.Parallel()
	sim := NewDW100()
	f := startServer(t, sim, nil)
	c := f.dial(t)

	sim.SetWaterTemp(523)
	sim.SetDryingTemp(612)
	sim.SetRinseAgent(7)
	for ch, want := range map[int]string{DW100WaterTemp: "523", DW100DryingTemp: "612", DW100RinseAgent: "7"} {
		r := c.ok(fmt.Sprintf(`{"id":1,"op":"adc.read","channel":%d}`, ch))
		if string(r.Value) != want {
			t.Errorf("adc.read %d = %s, want %s", ch, r.Value, want)
		}
	}
	if r := c.ok(`{"id":2,"op":"gpio.get","pin":17}`); string(r.Value) != "false" {
		t.Errorf("door = %s, want false (closed)", r.Value)
	}
	sim.SetDoorOpen(true)
	if r := c.ok(`{"id":3,"op":"gpio.get","pin":17}`); string(r.Value) != "true" {
		t.Errorf("door = %s, want true (open)", r.Value)
	}
	if r := c.send(`{"id":4,"op":"gpio.set","pin":17,"value":false}`); r.code() != CodeIOError {
		t.Errorf("gpio.set on the door switch = %+v, want %s", r, CodeIOError)
	}
	c.ok(`{"id":5,"op":"gpio.set","pin":4,"value":true}`)
	if r := c.ok(`{"id":6,"op":"gpio.get","pin":4}`); string(r.Value) != "true" || !sim.HeaterOn() {
		t.Errorf("heater = %s (sim %v), want on", r.Value, sim.HeaterOn())
	}
	if got := f.rec.Denials(); len(got) != 0 {
		t.Errorf("Denied(%v) for declared peripherals", got)
	}
}

func TestServer_UARTI2CPWM(t *testing.T) {
	t.Parallel()
	sim := NewSimulated()
	sim.AddI2C("ISU2", 0x50, []byte{0xAA, 0xBB, 0xCC})
	f := startServer(t, sim, nil)
	c := f.dial(t)

	if r := c.ok(`{"id":1,"op":"uart.write","uart":"ISU0","data":"aGVsbG8="}`); r.Written != 5 {
		t.Errorf("uart.write written = %d, want 5", r.Written)
	}
	if r := c.ok(`{"id":2,"op":"uart.read","uart":"ISU0","max":3,"timeout_ms":1000}`); string(r.Data) != "hel" {
		t.Errorf("uart.read = %q, want \"hel\" (loopback)", r.Data)
	}
	if r := c.ok(`{"id":3,"op":"uart.read","uart":"ISU0","max":100,"timeout_ms":0}`); string(r.Data) != "lo" {
		t.Errorf("uart.read = %q, want \"lo\"", r.Data)
	}
	if r := c.ok(`{"id":4,"op":"uart.read","uart":"ISU0","max":100,"timeout_ms":20}`); r.Data == nil || len(r.Data) != 0 {
		t.Errorf("uart.read of nothing = %q, want \"\"", r.Data)
	}
	sim.FeedUART("ISU0", []byte("rx"))
	if r := c.ok(`{"id":5,"op":"uart.read","uart":"ISU0","max":100,"timeout_ms":1000}`); string(r.Data) != "rx" {
		t.Errorf("uart.read = %q, want fed \"rx\"", r.Data)
	}

	if r := c.ok(`{"id":6,"op":"i2c.transfer","bus":"ISU2","address":80,"write":"AQ==","read":2}`); string(r.Data) != "\xBB\xCC" {
		t.Errorf("i2c read from register 1 = %x, want bbcc", r.Data)
	}
	c.ok(`{"id":7,"op":"i2c.transfer","bus":"ISU2","address":80,"write":"AhEi","read":0}`)
	if got := sim.I2CRegisters("ISU2", 0x50)[:4]; string(got) != "\xAA\xBB\x11\x22" {
		t.Errorf("registers after write = %x, want aabb1122", got)
	}
	if r := c.send(`{"id":8,"op":"i2c.transfer","bus":"ISU2","address":81,"write":"AA==","read":1}`); r.code() != CodeIOError {
		t.Errorf("i2c to an absent device = %+v, want %s", r, CodeIOError)
	}

	c.ok(`{"id":9,"op":"pwm.set","pwm":"PWM0","period_ns":20000000,"duty_ns":1500000,"enabled":true}`)
	if got, _ := sim.PWM("PWM0"); got != (PWMState{PeriodNS: 20000000, DutyNS: 1500000, Enabled: true}) {
		t.Errorf("PWM0 = %+v after pwm.set", got)
	}
	if r := c.send(`{"id":10,"op":"adc.read","channel":0}`); r.code() != CodeIOError {
		t.Errorf("adc.read of an unconnected channel = %+v, want %s", r, CodeIOError)
	}
}

func TestServer_BadInputKeepsConnection(t *testing.T) {
	t.Parallel()
	f := startServer(t, NewDW100(), nil)
	c := f.dial(t)
	for _, tt := range []struct {
		line     string
		wantID   uint64
		wantCode string
	}{
		{`not json`, 0, CodeBadRequest},
		{``, 0, CodeBadRequest},
		{`{"id":7,"op":"reboot"}`, 7, CodeUnknownOp},
		{`{"id":8,"op":"gpio.get","pin":4,"extra":1}`, 8, CodeBadRequest},
		{`{"id":1,"op":"telemetry.publish","topic":"t","payload":"` + strings.Repeat("x", MaxLineBytes) + `"}`, 0, CodeTooLarge},
		{"\x00\xff\xfe", 0, CodeBadRequest},
	} {
		r := c.send(tt.line)
		if r.ID != tt.wantID || r.code() != tt.wantCode {
			t.Errorf("%.60s = id %d code %q, want id %d code %q", tt.line, r.ID, r.code(), tt.wantID, tt.wantCode)
		}
	}
	if r := c.ok(`{"id":9,"op":"gpio.get","pin":17}`); r.ID != 9 {
		t.Errorf("reply id = %d, want 9", r.ID)
	}
}

func TestServer_TelemetryAndHealth(t *testing.T) {
	t.Parallel()
	f := startServer(t, NewDW100(), nil)
	c := f.dial(t)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := f.srv.WaitHealthy(ctx); !errors.Is(err, ErrNotHealthy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitHealthy() before any report = %v, want ErrNotHealthy and DeadlineExceeded", err)
	}

	c.ok(`{"id":1,"op":"telemetry.publish","topic":"dw100/cycle","payload":{ "water": 523 }}`)
	c.ok(`{"id":2,"op":"health.report","status":"unhealthy","detail":"warming up"}`)
	c.ok(`{"id":3,"op":"health.report","status":"healthy"}`)
	if err := f.srv.WaitHealthy(t.Context()); err != nil {
		t.Errorf("WaitHealthy() after a healthy report = %v", err)
	}
	f.rec.mu.Lock()
	gotT, gotH := f.rec.telemetry, f.rec.health
	f.rec.failPub = errors.New("queue full")
	f.rec.mu.Unlock()
	if diff := cmp.Diff([]string{`dw100/cycle {"water":523}`}, gotT); diff != "" {
		t.Errorf("telemetry mismatch (-want +got):\n%s", diff)
	}
	wantH := []Health{{Status: HealthUnhealthy, Detail: "warming up", At: testNow}, {Status: HealthHealthy, At: testNow}}
	if diff := cmp.Diff(wantH, gotH); diff != "" {
		t.Errorf("health mismatch (-want +got):\n%s", diff)
	}
	if r := c.send(`{"id":4,"op":"telemetry.publish","topic":"t","payload":1}`); r.code() != CodeUnavailable {
		t.Errorf("publish with the queue full = %+v, want %s", r, CodeUnavailable)
	}
}

func TestServer_Diagnostics(t *testing.T) {
	t.Parallel()
	f := startServer(t, NewDW100(), nil)
	app := f.dial(t)

	if r := app.ok(`{"id":1,"op":"diagnostics.next","timeout_ms":0}`); r.Request != nil {
		t.Errorf("diagnostics.next with nothing queued = %+v, want null request", r.Request)
	}

	type result struct {
		v   json.RawMessage
		err error
	}
	ask := func(name string, args json.RawMessage) chan result {
		ch := make(chan result, 1)
		go func() {
			v, err := f.srv.Diagnose(t.Context(), name, args)
			ch <- result{v, err}
		}()
		return ch
	}
	first := ask("heater_resistance", json.RawMessage(`{"probe": 1}`))
	r := app.ok(`{"id":2,"op":"diagnostics.next","timeout_ms":5000}`)
	if r.Request == nil || r.Request.Name != "heater_resistance" || string(r.Request.Args) != `{"probe":1}` {
		t.Fatalf("diagnostics.next = %+v, want heater_resistance {\"probe\":1}", r.Request)
	}
	app.ok(fmt.Sprintf(`{"id":3,"op":"diagnostics.reply","request_id":%q,"result":{"ohms":27.5}}`, r.Request.RequestID))
	if got := <-first; got.err != nil || string(got.v) != `{"ohms":27.5}` {
		t.Errorf("Diagnose() = %s, %v, want {\"ohms\":27.5}", got.v, got.err)
	}
	if r := app.send(fmt.Sprintf(`{"id":4,"op":"diagnostics.reply","request_id":%q,"result":1}`, r.Request.RequestID)); r.code() != CodeUnknownRequest {
		t.Errorf("second reply to one request = %+v, want %s", r, CodeUnknownRequest)
	}

	second := ask("self_test", nil)
	r = app.ok(`{"id":5,"op":"diagnostics.next","timeout_ms":5000}`)
	if r.Request == nil || string(r.Request.Args) != "null" {
		t.Fatalf("diagnostics.next = %+v, want self_test with null args", r.Request)
	}
	app.ok(fmt.Sprintf(`{"id":6,"op":"diagnostics.reply","request_id":%q,"error":"heater open circuit"}`, r.Request.RequestID))
	got := <-second
	if de, ok := errors.AsType[*DiagnosticError](got.err); !ok || de.Message != "heater open circuit" || !errors.Is(got.err, ErrDiagnosticFailed) {
		t.Errorf("Diagnose() = %v, want a DiagnosticError \"heater open circuit\"", got.err)
	}

	// A caller that gives up takes its request out of the queue.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.srv.Diagnose(ctx, "slow", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Diagnose() with nobody answering = %v, want DeadlineExceeded", err)
	}
	if r := app.ok(`{"id":7,"op":"diagnostics.next","timeout_ms":0}`); r.Request != nil {
		t.Errorf("diagnostics.next after the caller gave up = %+v, want none", r.Request)
	}
	if _, err := f.srv.Diagnose(t.Context(), "bad name!", nil); err == nil {
		t.Error("Diagnose(\"bad name!\") = nil error")
	}
	if _, err := f.srv.Diagnose(t.Context(), "x", json.RawMessage(`{`)); err == nil {
		t.Error("Diagnose(invalid args) = nil error")
	}
}

func TestServer_DiagnosticsQueueIsBounded(t *testing.T) {
	t.Parallel()
	f := startServer(t, NewDW100(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range maxDiagQueue {
		wg.Go(func() { _, _ = f.srv.Diagnose(ctx, "q", nil) })
	}
	// Wait until all are queued.
	for {
		f.srv.diag.mu.Lock()
		n := len(f.srv.diag.queue)
		f.srv.diag.mu.Unlock()
		if n == maxDiagQueue {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := f.srv.Diagnose(ctx, "one-too-many", nil); !errors.Is(err, ErrDiagnosticsBusy) {
		t.Errorf("Diagnose() with the queue full = %v, want ErrDiagnosticsBusy", err)
	}
	cancel()
	wg.Wait()
}

func TestServer_BoundsConnections(t *testing.T) {
	t.Parallel()
	f := startServer(t, NewDW100(), func(c *Config) { c.MaxConns = 2 })
	a, b := f.dial(t), f.dial(t)
	a.ok(`{"id":1,"op":"gpio.get","pin":4}`)
	b.ok(`{"id":1,"op":"gpio.get","pin":4}`)
	third := f.dial(t)
	line, err := third.br.ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), CodeUnavailable) {
		t.Errorf("third connection got %q, %v, want an %s reply", line, err, CodeUnavailable)
	}
	if _, err := third.br.ReadByte(); err == nil {
		t.Error("third connection stays open")
	}
	a.c.Close()
	// The slot is free again once the server sees a's end; until then a new connection
	// is refused (and may be closed before the request is even written).
	deadline := time.Now().Add(5 * time.Second)
	for !f.trySend(`{"id":2,"op":"gpio.get","pin":4}`) {
		if time.Now().After(deadline) {
			t.Fatal("no connection slot after one closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestListen_SocketModeAndDirectory(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "periph")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	l, err := Listen(sock, -1, -1)
	if err != nil {
		t.Fatalf("Listen() = %v", err)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode = %v, %v, want socket 0600", fi.Mode(), err)
	}
	l.Close()

	// A stale socket is replaced; another file is not.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if l, err := Listen(sock, -1, -1); err != nil {
		t.Errorf("Listen() over a stale socket = %v", err)
	} else {
		l.Close()
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(plain, -1, -1); err == nil {
		l.Close()
		t.Error("Listen() over a regular file = nil error")
	}

	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(filepath.Join(open, "a.sock"), -1, -1); err == nil {
		l.Close()
		t.Error("Listen() in a world-writable directory = nil error")
	}
}

func TestNew_RequiresDependencies(t *testing.T) {
	t.Parallel()
	_, err := New(Config{MaxConns: -1})
	if err == nil {
		t.Fatal("New(Config{}) = nil error")
	}
	for _, field := range []string{"backend", "denied", "telemetry", "now", "max_conns"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("New(Config{}) = %v, want it to name %s", err, field)
		}
	}
}
