// Package periph is the device runtime's local API for one application: a server on a Unix
// socket through which the app reads sensors and drives outputs (GPIO, ADC, UART, I2C, PWM),
// publishes telemetry, reports its health and answers diagnostics commands. The app reaches
// the hardware only through it: the app runs unprivileged (internal/agent/sandbox) and the
// device files are not its to open.
//
// # Protocol
//
// Newline-delimited JSON, one request at a time per connection: the app writes one JSON
// object on one line, {"id": N, "op": "gpio.set", "pin": 4, "value": true}, and reads one
// line back, {"id": N, "ok": true} or {"id": N, "ok": false, "error": {"code": "...",
// "message": "..."}}. docs/app-sdk.md is the full reference (every op, field and code);
// the public package sdk is the Go client.
//
// # What it trusts and enforces
//
// It trusts nothing the app sends. Decoding is strict and bounded: a line of at most
// MaxLineBytes, exactly one JSON object, no unknown or duplicate fields, required fields
// present, numbers in range (FuzzDecodeRequest). Bad input gets an error reply on the same
// connection, never a crash. Every peripheral op is checked against the manifest's
// capabilities before the backend sees it: an undeclared pin, channel, UART, I2C bus or
// PWM is refused with capability_denied and reported through Config.Denied (DESIGN rule 6;
// attacked by TestServer_RefusesUndeclaredPeripherals and, from a real sandboxed process,
// by sandbox.TestSandbox_RefusesUndeclaredGPIOAndHost). The socket is created mode 0600,
// owned by the app's user, in a directory the caller keeps to the runtime and that user
// ([Listen] refuses a directory that group or others may write).
//
// At most Config.MaxConns connections are served at once; a reply is written within 10 s
// or the connection is closed, so an app that stops reading holds no runtime goroutine.
//
// # Concurrency
//
// A Server's methods are safe for concurrent use. [Server.Serve] may run on several
// listeners at once. [Server.Diagnose] and [Server.WaitHealthy] are called by the runtime
// while Serve runs.
package periph

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/image"
)

// writeTimeout bounds writing one reply.
const writeTimeout = 10 * time.Second

// Health statuses of health.report.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Health is one health.report from the app.
type Health struct {
	Status string // HealthHealthy or HealthUnhealthy
	Detail string // the app's words, at most 1 KiB; may be empty
	At     time.Time
}

// Config configures a Server. Every field without "optional" is required.
type Config struct {
	// Capabilities are the app manifest's; only the peripherals they list are served.
	Capabilities image.Capabilities
	// Backend is the hardware: a *Simulated, a *DW100 or a *Linux.
	Backend Backend
	// Denied is called, synchronously, for every refused peripheral op with the capability
	// it lacked, spelled as in the manifest: "gpio:5", "adc:3", "uart:ISU1",
	// "i2c_master:ISU2", "pwm:PWM-CONTROLLER-0" (names from the app are cut at 64 bytes
	// and non-printable bytes replaced). An app in a loop calls it often: the runtime
	// coalesces before queueing error reports.
	Denied func(capability string)
	// Telemetry receives telemetry.publish: a checked topic and a JSON payload. An error
	// is the app's CodeUnavailable, or CodeBadRequest when it wraps ErrTelemetryRefused. Called from the app's connection goroutine; it should
	// not block for long.
	Telemetry func(ctx context.Context, topic string, payload json.RawMessage) error
	// Health, optional, receives every health.report.
	Health func(Health)
	// Updates, optional, takes update.defer and update.allow (issue 12); without it they
	// are answered unsupported.
	Updates UpdateControl
	// Now is the device's clock, for Health.At.
	Now func() time.Time
	// MaxConns bounds the connections served at once; 8 if zero.
	MaxConns int
	// Logger, optional, receives denials and connection errors; nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Backend == nil {
		errs = append(errs, errors.New("backend: required"))
	}
	if c.Denied == nil {
		errs = append(errs, errors.New("denied: required"))
	}
	if c.Telemetry == nil {
		errs = append(errs, errors.New("telemetry: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if c.MaxConns < 0 {
		errs = append(errs, errors.New("max_conns: must not be negative"))
	}
	return errors.Join(errs...)
}

// UpdateControl is the runtime's side of the app's update deferral (Azure Sphere's
// SoftwareUpdateDeferral): the app asks to hold updates while it is busy, or lets them go.
// The runtime bounds a deferral by the product's setting; its methods are called from the
// app's connection goroutines.
type UpdateControl interface {
	// DeferUpdates asks to install no update for d (1 s to 7 days) from now; it returns
	// until when the app asked (the runtime may install earlier, once its bound passes).
	DeferUpdates(d time.Duration) (time.Time, error)
	// AllowUpdates ends the app's deferral: pending updates may install now.
	AllowUpdates() error
}

// ErrTelemetryRefused, wrapped by a Config.Telemetry error, says the message itself is
// refused (a topic or payload the cloud does not take): the app gets bad_request rather
// than unavailable.
var ErrTelemetryRefused = errors.New("telemetry refused")

// Server serves the local API of one app.
type Server struct {
	cfg  Config
	caps capSet
	log  *slog.Logger
	sem  chan struct{}
	diag *diagQueue

	mu          sync.Mutex
	healthy     chan struct{} // closed at the first healthy report
	wasHealthy  bool
	reportedCap map[string]bool // capabilities whose denial was logged at Warn
}

// New returns a Server for one app.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("periph server config: %w", err)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 8
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:         cfg,
		caps:        newCapSet(cfg.Capabilities),
		log:         log,
		sem:         make(chan struct{}, cfg.MaxConns),
		diag:        newDiagQueue(),
		healthy:     make(chan struct{}),
		reportedCap: make(map[string]bool),
	}, nil
}

// Listen creates the app's socket at path: mode 0600, owned by uid and gid (each -1 to keep
// the runtime's). A stale socket at path is replaced; any other file there is an error, and
// so is a directory that group or others may write, where another user could swap the
// socket.
func Listen(path string, uid, gid int) (net.Listener, error) {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("socket directory %s: must be a directory that group and others cannot write (mode %v)", dir, fi.Mode().Perm())
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("socket %s: a file that is not a socket is in the way", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	if uid >= 0 || gid >= 0 {
		if err := os.Lchown(path, uid, gid); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("socket owner: %w", err)
		}
	}
	return l, nil
}

// Serve accepts connections on l and serves them until ctx is done, then closes l and every
// connection it accepted and returns nil once their handlers have finished. It returns an
// error if accepting fails otherwise.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		select {
		case s.sem <- struct{}{}:
		default:
			wg.Go(func() { s.refuse(c) })
			continue
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			s.serveConn(ctx, c)
		})
	}
}

// refuse answers a connection over the limit with one unavailable reply and closes it.
func (s *Server) refuse(c net.Conn) {
	defer func() { _ = c.Close() }()
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	b, _ := json.Marshal(response{Err: &protoError{Code: CodeUnavailable, Message: fmt.Sprintf("more than %d connections", s.cfg.MaxConns)}})
	_, _ = c.Write(append(b, '\n'))
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer func() { _ = c.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	br := bufio.NewReader(c)
	for {
		line, tooLong, err := readLine(br, MaxLineBytes)
		if err != nil {
			// EOF, a closed connection, or a last line without its newline: done.
			return
		}
		var resp response
		if tooLong {
			resp = response{Err: &protoError{Code: CodeTooLarge, Message: fmt.Sprintf("a request line is at most %d bytes", MaxLineBytes)}}
		} else {
			resp = s.handle(ctx, line)
		}
		b, err := json.Marshal(resp)
		if err != nil {
			s.log.ErrorContext(ctx, "encode local API reply", "error", err)
			b, _ = json.Marshal(response{ID: resp.ID, Err: &protoError{Code: CodeInternal, Message: "cannot encode the reply"}})
		}
		// Socket deadlines run on the real clock, not Config.Now.
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := c.Write(append(b, '\n')); err != nil {
			return
		}
	}
}

// handle answers one request line.
func (s *Server) handle(ctx context.Context, line []byte) response {
	r, perr := decodeRequest(line)
	if perr != nil {
		return response{ID: r.ID, Err: perr}
	}
	// Enforces DESIGN rule 6; attacked by TestServer_RefusesUndeclaredPeripherals.
	if capName, ok := s.caps.need(&r); !ok {
		s.denied(ctx, capName)
		return response{ID: r.ID, Err: &protoError{Code: CodeCapabilityDenied, Message: "the app's manifest does not declare " + capName}}
	}
	res, perr := s.do(ctx, &r)
	return response{ID: r.ID, Err: perr, Result: res}
}

func (s *Server) denied(ctx context.Context, capName string) {
	s.mu.Lock()
	first := !s.reportedCap[capName] && len(s.reportedCap) < 64
	if first {
		s.reportedCap[capName] = true
	}
	s.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "app capability denied", "capability", capName)
	s.cfg.Denied(capName)
}

// do runs a request whose capability is granted.
func (s *Server) do(ctx context.Context, r *request) (map[string]any, *protoError) {
	b := s.cfg.Backend
	switch r.Op {
	case OpGPIOSet:
		return nil, backendErr(b.SetGPIO(ctx, r.Pin, r.Value))
	case OpGPIOGet:
		v, err := b.GPIO(ctx, r.Pin)
		return map[string]any{"value": v}, backendErr(err)
	case OpADCRead:
		v, err := b.ReadADC(ctx, r.Channel)
		return map[string]any{"value": v}, backendErr(err)
	case OpUARTWrite:
		n, err := b.WriteUART(ctx, r.UART, r.Data)
		return map[string]any{"written": n}, backendErr(err)
	case OpUARTRead:
		rctx, cancel := context.WithTimeout(ctx, time.Duration(r.TimeoutMS)*time.Millisecond)
		defer cancel()
		p, err := b.ReadUART(rctx, r.UART, r.Max)
		if len(p) > r.Max {
			p = p[:r.Max]
		}
		return map[string]any{"data": nonNil(p)}, backendErr(err)
	case OpI2CTransfer:
		p, err := b.TransferI2C(ctx, r.Bus, r.Address, r.Write, r.Read)
		if err == nil && len(p) != r.Read {
			err = fmt.Errorf("i2c %s: read %d bytes, want %d", r.Bus, len(p), r.Read)
		}
		return map[string]any{"data": nonNil(p)}, backendErr(err)
	case OpPWMSet:
		return nil, backendErr(b.SetPWM(ctx, r.PWM, PWMState{PeriodNS: r.PeriodNS, DutyNS: r.DutyNS, Enabled: r.Enabled}))
	case OpTelemetryPublish:
		if err := s.cfg.Telemetry(ctx, r.Topic, r.Payload); err != nil {
			s.log.WarnContext(ctx, "app telemetry not taken", "topic", r.Topic, "error", err)
			code := CodeUnavailable
			if errors.Is(err, ErrTelemetryRefused) {
				code = CodeBadRequest // retrying does not help: the app must change it
			}
			return nil, &protoError{Code: code, Message: "telemetry not taken: " + err.Error()}
		}
		return nil, nil
	case OpHealthReport:
		s.reportHealth(Health{Status: r.Status, Detail: r.Detail, At: s.cfg.Now()})
		return nil, nil
	case OpDiagnosticsNext:
		c := s.diag.next(ctx, time.Duration(r.TimeoutMS)*time.Millisecond)
		if c == nil {
			return map[string]any{"request": nil}, nil
		}
		return map[string]any{"request": map[string]any{"request_id": c.id, "name": c.name, "args": c.args}}, nil
	case OpUpdateDefer, OpUpdateAllow:
		return s.updates(r)
	case OpDiagnosticsReply:
		if !s.diag.reply(r.RequestID, r.Result, r.Error, r.HasError) {
			return nil, &protoError{Code: CodeUnknownRequest, Message: fmt.Sprintf("no diagnostics request %q is waiting for a reply", truncate(r.RequestID, 64))}
		}
		return nil, nil
	}
	return nil, &protoError{Code: CodeInternal, Message: "op " + r.Op + " has no handler"}
}

// updates answers update.defer and update.allow.
func (s *Server) updates(r *request) (map[string]any, *protoError) {
	u := s.cfg.Updates
	if u == nil {
		return nil, &protoError{Code: CodeUnsupported, Message: "this runtime does not take update deferrals"}
	}
	if r.Op == OpUpdateAllow {
		if err := u.AllowUpdates(); err != nil {
			return nil, &protoError{Code: CodeUnavailable, Message: "allow updates: " + err.Error()}
		}
		return nil, nil
	}
	until, err := u.DeferUpdates(time.Duration(r.Seconds) * time.Second)
	if err != nil {
		return nil, &protoError{Code: CodeUnavailable, Message: "defer updates: " + err.Error()}
	}
	return map[string]any{"until": until.UTC().Format(time.RFC3339)}, nil
}

func nonNil(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	return p
}

// backendErr maps a backend error to its wire error.
func backendErr(err error) *protoError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnsupported):
		return &protoError{Code: CodeUnsupported, Message: err.Error()}
	}
	return &protoError{Code: CodeIOError, Message: err.Error()}
}

func (s *Server) reportHealth(h Health) {
	if h.Status == HealthHealthy {
		s.mu.Lock()
		if !s.wasHealthy {
			s.wasHealthy = true
			close(s.healthy)
		}
		s.mu.Unlock()
	}
	if s.cfg.Health != nil {
		s.cfg.Health(h)
	}
}

// ErrNotHealthy is returned by WaitHealthy when the app has not reported healthy in time.
var ErrNotHealthy = errors.New("app did not report healthy")

// WaitHealthy returns nil once the app has reported healthy (at any time since New), or an
// error wrapping ErrNotHealthy and ctx's error when ctx is done first. The runtime's health
// deadline is ctx's: an update commits only after WaitHealthy returns nil.
func (s *Server) WaitHealthy(ctx context.Context) error {
	select {
	case <-s.healthy:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotHealthy, context.Cause(ctx))
	}
}
