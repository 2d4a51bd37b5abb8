// Package sdk is what a moat application imports to use its device: read sensors and drive
// outputs (GPIO, ADC, UART, I2C, PWM), publish telemetry, report health, answer diagnostics
// commands from the tenant's cloud, and reach the network hosts its manifest declares.
//
// The app talks to the moat runtime over a Unix socket whose path is in $MOAT_SOCKET
// ([Connect]); the protocol, for apps in other languages, is in docs/app-sdk.md. Network
// connections go through the runtime's proxy at $HTTPS_PROXY ([Dial], [HTTPClient]).
//
// Everything the app may use is declared in its manifest; anything else is refused with an
// error for which errors.Is(err, [ErrCapabilityDenied]) (peripherals) or
// errors.Is(err, [ErrHostDenied]) (hosts) is true, and the refusal is reported to the
// tenant in an error report.
//
// The package depends on the standard library only (TestSDK_ImportsOnlyTheStandardLibrary),
// so third-party apps can vendor it. A [Client] is safe for concurrent use; its calls are
// made one at a time over one connection, and [Client.Diagnostics] uses a second one.
package sdk

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// EnvSocket names the environment variable that holds the runtime's socket path.
const EnvSocket = "MOAT_SOCKET"

// Errors an app branches on, with errors.Is. A refusal by the runtime is an *Error whose
// Code says which.
var (
	// ErrCapabilityDenied: the manifest does not declare the pin, channel, UART, I2C bus
	// or PWM (code "capability_denied").
	ErrCapabilityDenied = errors.New("capability not declared in the app manifest")
	// ErrUnsupported: the device has no such peripheral kind (code "unsupported").
	ErrUnsupported = errors.New("not supported by this device")
	// ErrIO: the peripheral failed (code "io_error").
	ErrIO = errors.New("peripheral error")
	// ErrBadRequest: the runtime refused the request's form (codes "bad_request",
	// "too_large", "unknown_op"); a bug in the app or a runtime too old for the op.
	ErrBadRequest = errors.New("request refused by the runtime")
	// ErrUnavailable: the runtime cannot take the request now; retry later (code
	// "unavailable").
	ErrUnavailable = errors.New("runtime unavailable")
	// ErrNoRuntime: $MOAT_SOCKET is not set: the program is not running under moat.
	ErrNoRuntime = errors.New("not running under the moat runtime: " + EnvSocket + " is not set")
	// ErrProtocol: the runtime's reply was malformed.
	ErrProtocol = errors.New("malformed reply from the runtime")
)

// Error is a refusal by the runtime.
type Error struct {
	Op      string // the op, such as "gpio.set"
	Code    string // the wire code, such as "capability_denied"
	Message string // the runtime's words
}

func (e *Error) Error() string {
	return fmt.Sprintf("moat %s: %s: %s", e.Op, e.Code, e.Message)
}

// Is maps the wire code to the package's sentinel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrCapabilityDenied:
		return e.Code == "capability_denied"
	case ErrUnsupported:
		return e.Code == "unsupported"
	case ErrIO:
		return e.Code == "io_error"
	case ErrBadRequest:
		return e.Code == "bad_request" || e.Code == "too_large" || e.Code == "unknown_op"
	case ErrUnavailable:
		return e.Code == "unavailable"
	}
	return false
}

// maxReplyBytes bounds one reply line. The largest the runtime sends is a 4 KiB read,
// base64-encoded, or a diagnostics request of at most 16 KiB of arguments.
const maxReplyBytes = 1 << 20

// Client is a connection to the runtime's local API. If a call fails on the connection
// (the runtime restarted, or ctx ended mid-call), the connection is dropped and the next
// call dials again.
type Client struct {
	path string

	mu     sync.Mutex
	conn   net.Conn
	br     *bufio.Reader
	nextID uint64
}

// Connect connects to the runtime at $MOAT_SOCKET.
func Connect(ctx context.Context) (*Client, error) {
	path := os.Getenv(EnvSocket)
	if path == "" {
		return nil, ErrNoRuntime
	}
	return ConnectSocket(ctx, path)
}

// ConnectSocket connects to the runtime's socket at path.
func ConnectSocket(ctx context.Context, path string) (*Client, error) {
	c := &Client{path: path}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.dial(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// dial connects; c.mu is held.
func (c *Client) dial(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("connect to the moat runtime: %w", err)
	}
	c.conn, c.br = conn, bufio.NewReader(conn)
	return nil
}

// call sends one request and decodes the reply's result fields into result (if not nil).
func (c *Client) call(ctx context.Context, op string, args map[string]any, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return err
		}
	}
	c.nextID++
	id := c.nextID
	req := make(map[string]any, len(args)+2)
	for k, v := range args {
		req[k] = v
	}
	req["id"], req["op"] = id, op
	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("moat %s: %w", op, err)
	}
	reply, err := c.roundTrip(ctx, append(line, '\n'))
	if err != nil {
		// The connection's state is unknown: a reply may still come. Start afresh.
		_ = c.conn.Close()
		c.conn = nil
		if ctx.Err() != nil {
			return fmt.Errorf("moat %s: %w", op, context.Cause(ctx))
		}
		return fmt.Errorf("moat %s: %w", op, err)
	}
	var head struct {
		ID    uint64 `json:"id"`
		OK    bool   `json:"ok"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply, &head); err != nil || head.ID != id || head.OK == (head.Error != nil) {
		_ = c.conn.Close()
		c.conn = nil
		return fmt.Errorf("moat %s: %w", op, ErrProtocol)
	}
	if head.Error != nil {
		return &Error{Op: op, Code: head.Error.Code, Message: head.Error.Message}
	}
	if result != nil {
		if err := json.Unmarshal(reply, result); err != nil {
			return fmt.Errorf("moat %s: %w: %w", op, ErrProtocol, err)
		}
	}
	return nil
}

// roundTrip writes line and reads one reply line; ctx's end interrupts both.
func (c *Client) roundTrip(ctx context.Context, line []byte) ([]byte, error) {
	conn := c.conn // the AfterFunc may run after call has replaced c.conn
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// No deadline from ctx's own: the AfterFunc runs once ctx.Err() is set, so a timeout
	// always reads as ctx's error.
	_ = conn.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if _, err := conn.Write(line); err != nil {
		return nil, err
	}
	var reply []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		reply = append(reply, frag...)
		if len(reply) > maxReplyBytes {
			return nil, ErrProtocol
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return reply, nil
	}
}

// GPIO is one GPIO pin.
type GPIO struct {
	c   *Client
	pin int
}

// GPIO returns pin, which the manifest must list under gpio.
func (c *Client) GPIO(pin int) GPIO { return GPIO{c, pin} }

// Set drives the pin high (true) or low.
func (g GPIO) Set(ctx context.Context, high bool) error {
	return g.c.call(ctx, "gpio.set", map[string]any{"pin": g.pin, "value": high}, nil)
}

// Get reads the pin's level.
func (g GPIO) Get(ctx context.Context) (bool, error) {
	var r struct {
		Value bool `json:"value"`
	}
	err := g.c.call(ctx, "gpio.get", map[string]any{"pin": g.pin}, &r)
	return r.Value, err
}

// ADC is one ADC channel.
type ADC struct {
	c  *Client
	ch int
}

// ADC returns channel ch, which the manifest must list under adc.
func (c *Client) ADC(ch int) ADC { return ADC{c, ch} }

// Read returns the channel's reading, in the unit the device documents (the DW100's
// temperatures are tenths of a degree C, its rinse-agent level percent).
func (a ADC) Read(ctx context.Context) (int64, error) {
	var r struct {
		Value int64 `json:"value"`
	}
	err := a.c.call(ctx, "adc.read", map[string]any{"channel": a.ch}, &r)
	return r.Value, err
}

// UART is one serial port.
type UART struct {
	c    *Client
	name string
}

// UART returns the port name, which the manifest must list under uart.
func (c *Client) UART(name string) UART { return UART{c, name} }

// Write sends p and returns how many bytes the port took.
func (u UART) Write(ctx context.Context, p []byte) (int, error) {
	var r struct {
		Written int `json:"written"`
	}
	err := u.c.call(ctx, "uart.write", map[string]any{"uart": u.name, "data": p}, &r)
	return r.Written, err
}

// Read returns up to max bytes (1 to 4096), waiting up to wait (at most 10 s) for the
// first; it returns no bytes and no error when nothing arrived.
func (u UART) Read(ctx context.Context, max int, wait time.Duration) ([]byte, error) {
	var r struct {
		Data []byte `json:"data"`
	}
	err := u.c.call(ctx, "uart.read", map[string]any{"uart": u.name, "max": max, "timeout_ms": wait.Milliseconds()}, &r)
	return r.Data, err
}

// I2C is one I2C master bus.
type I2C struct {
	c   *Client
	bus string
}

// I2C returns the bus, which the manifest must list under i2c_master.
func (c *Client) I2C(bus string) I2C { return I2C{c, bus} }

// Transfer writes w (may be empty) to the device at the 7-bit address addr and then reads
// read bytes (may be 0) from it, as one combined transaction.
func (i I2C) Transfer(ctx context.Context, addr int, w []byte, read int) ([]byte, error) {
	if w == nil {
		w = []byte{}
	}
	var r struct {
		Data []byte `json:"data"`
	}
	err := i.c.call(ctx, "i2c.transfer", map[string]any{"bus": i.bus, "address": addr, "write": w, "read": read}, &r)
	return r.Data, err
}

// PWM is one PWM output.
type PWM struct {
	c    *Client
	name string
}

// PWM returns the output name, which the manifest must list under pwm.
func (c *Client) PWM(name string) PWM { return PWM{c, name} }

// Set sets the output's period and duty cycle (0 to period) and enables or disables it.
func (p PWM) Set(ctx context.Context, period, duty time.Duration, enabled bool) error {
	return p.c.call(ctx, "pwm.set", map[string]any{"pwm": p.name, "period_ns": period.Nanoseconds(), "duty_ns": duty.Nanoseconds(), "enabled": enabled}, nil)
}

// Publish sends payload, encoded as JSON, as telemetry on topic (letters, digits, '-',
// '_', '.', '/'; at most 128 bytes). The runtime forwards it to the tenant's cloud under
// the device's own topic prefix. A json.RawMessage payload is sent as is.
func (c *Client) Publish(ctx context.Context, topic string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("moat telemetry.publish: payload: %w", err)
	}
	return c.call(ctx, "telemetry.publish", map[string]any{"topic": topic, "payload": json.RawMessage(raw)}, nil)
}

// ReportHealthy tells the runtime the app works. A newly installed app must do so within
// the runtime's health deadline or it is rolled back; report once start-up has checked
// what the app needs (its sensors answer, say), and again from time to time.
func (c *Client) ReportHealthy(ctx context.Context) error {
	return c.call(ctx, "health.report", map[string]any{"status": "healthy"}, nil)
}

// ReportUnhealthy tells the runtime the app does not work, and why (at most 1 KiB).
func (c *Client) ReportUnhealthy(ctx context.Context, detail string) error {
	return c.call(ctx, "health.report", map[string]any{"status": "unhealthy", "detail": detail}, nil)
}

// DiagnosticsHandler runs the diagnostic name with its JSON args and returns a result
// that encodes as JSON, or an error whose text (at most 1 KiB is sent) goes back to the
// tenant.
type DiagnosticsHandler func(name string, args json.RawMessage) (any, error)

// diagWait is how long one diagnostics.next waits on the runtime.
const diagWait = 25 * time.Second

// Diagnostics answers diagnostics requests with handler, one at a time, until ctx is done;
// then it returns ctx's error. It uses a connection of its own, so the app's other calls
// go on meanwhile. When the runtime goes away it reconnects, waiting up to 5 s between
// attempts. It returns early only if the runtime refuses the loop's requests
// (ErrBadRequest: a runtime without diagnostics).
func (c *Client) Diagnostics(ctx context.Context, handler DiagnosticsHandler) error {
	loop := &Client{path: c.path}
	defer func() { _ = loop.Close() }()
	backoff := 100 * time.Millisecond
	for {
		err := loop.serveOne(ctx, handler)
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case errors.Is(err, ErrBadRequest):
			return err
		case err != nil:
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		default:
			backoff = 100 * time.Millisecond
		}
	}
}

// serveOne waits for one request and answers it.
func (c *Client) serveOne(ctx context.Context, handler DiagnosticsHandler) error {
	var next struct {
		Request *struct {
			RequestID string          `json:"request_id"`
			Name      string          `json:"name"`
			Args      json.RawMessage `json:"args"`
		} `json:"request"`
	}
	if err := c.call(ctx, "diagnostics.next", map[string]any{"timeout_ms": diagWait.Milliseconds()}, &next); err != nil {
		return err
	}
	if next.Request == nil {
		return nil
	}
	reply := map[string]any{"request_id": next.Request.RequestID}
	result, herr := handler(next.Request.Name, next.Request.Args)
	var raw []byte
	if herr == nil {
		var err error
		if raw, err = json.Marshal(result); err != nil {
			herr = fmt.Errorf("encode result: %w", err)
		}
	}
	if herr != nil {
		msg := herr.Error()
		if msg == "" {
			msg = "error"
		}
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		reply["error"] = msg
	} else {
		reply["result"] = json.RawMessage(raw)
	}
	err := c.call(ctx, "diagnostics.reply", reply, nil)
	if e, ok := errors.AsType[*Error](err); ok && e.Code == "unknown_request" {
		return nil // the runtime stopped waiting; nothing to do
	}
	return err
}

// String describes the client for logs.
func (c *Client) String() string {
	return "moat runtime at " + strconv.Quote(c.path)
}
