// Package diag runs remote diagnostics: the cloud asks a device's application to run a
// named diagnostic (the DW100's heater self-test) and keeps the answer. A request is stored
// first (pending), then published for the device's MQTT session with JetStream, so that a
// device that is offline gets it when it next connects; the device's reply arrives through
// the ingest, which records it in the same transaction as the other messages of its batch
// and calls [Service.Finished]. A request no reply reached before its deadline times out
// ([Service.Expire]); a late reply then changes nothing.
//
// Who may ask (ATTACKS row 32, DESIGN rule 3): only the cloud itself, for the tenant's staff
// with the Contributor or Administrator role (the API checks) and for the rules' actions. A
// device has no way to publish on another device's request topic (the broker's
// permissions) nor to answer another device's request (the store matches the reply's
// device: cloudstore TestDiagnosticRefusesOtherDevicesReply).
//
// Waiters are bounded: at most Config.MaxWaiters callers wait at once (past it Wait
// returns ErrBusy at once), each for at most MaxWait (TestWait_BoundedWaiters).
package diag

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
)

// Limits.
const (
	MaxWaiters = 1024
	MaxWait    = time.Minute
	// MinTimeout and MaxTimeout bound a request's timeout.
	MinTimeout = time.Second
	MaxTimeout = 24 * time.Hour
)

// ErrBusy: too many callers are waiting for outcomes.
var ErrBusy = errors.New("too many callers are waiting for diagnostics outcomes")

// Store is what the service needs of the cloud's database.
type Store interface {
	CreateDiagnostic(ctx context.Context, n cloudstore.NewDiagnostic) (cloudstore.Diagnostic, error)
	MarkDiagnosticSent(ctx context.Context, id string) error
	ExpireDiagnostics(ctx context.Context, now time.Time) ([]string, error)
	GetDiagnostic(ctx context.Context, id string) (cloudstore.Diagnostic, error)
}

// Publisher sends device its request id, data being the encoded
// telemetry.DiagnosticRequest, where the device's persistent MQTT session gets it now or
// when it next connects (broker.RequestMsg). It returns once the broker stored it.
type Publisher func(ctx context.Context, device, id string, data []byte) error

// Config configures a Service.
type Config struct {
	Store   Store
	Publish Publisher
	// Timeout is a request's default timeout.
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
	// MaxWaiters, optional, bounds the callers waiting at once (MaxWaiters).
	MaxWaiters int
}

// Service runs diagnostics. Safe for concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	waiters map[string][]chan struct{}
	nwait   int
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("store: required"))
	}
	if cfg.Publish == nil {
		errs = append(errs, errors.New("publish: required"))
	}
	if cfg.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if cfg.Timeout < MinTimeout || cfg.Timeout > MaxTimeout {
		errs = append(errs, fmt.Errorf("timeout: must be between %s and %s", MinTimeout, MaxTimeout))
	}
	if cfg.MaxWaiters < 0 {
		errs = append(errs, errors.New("max_waiters: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("diagnostics: %w", err)
	}
	if cfg.MaxWaiters == 0 {
		cfg.MaxWaiters = MaxWaiters
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: log, waiters: map[string][]chan struct{}{}}, nil
}

// Request is one diagnostics request to make.
type Request struct {
	Device  string
	Command string
	Args    json.RawMessage
	// RequestedBy names the staff member ("user:support") or the rule ("rule:heater").
	RequestedBy string
	// AlertID, optional, is the alert the request is made for.
	AlertID int64
	// Timeout, optional, replaces the service's default.
	Timeout time.Duration
}

// NewID returns a fresh request ID: "dgn_" and 26 random base32 characters (130 bits).
func NewID() string { return "dgn_" + strings.ToLower(rand.Text()) }

// Run stores the request and publishes it to the device. Invalid input (a bad device ID,
// command, arguments or timeout) is cloudstore.ErrInvalid and stores nothing. A request
// that could not be published stays pending and times out like one the device never
// answered.
func (s *Service) Run(ctx context.Context, r Request) (cloudstore.Diagnostic, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = s.cfg.Timeout
	}
	if timeout < MinTimeout || timeout > MaxTimeout {
		return cloudstore.Diagnostic{}, fmt.Errorf("%w: timeout must be between %s and %s", cloudstore.ErrInvalid, MinTimeout, MaxTimeout)
	}
	now := s.cfg.Now().UTC().Truncate(time.Microsecond) // the store's precision: the device sees the stored deadline
	n := cloudstore.NewDiagnostic{ID: NewID(), Device: r.Device, Command: r.Command, Args: r.Args,
		RequestedBy: r.RequestedBy, RequestedAt: now, Deadline: now.Add(timeout), AlertID: r.AlertID}
	d, err := s.cfg.Store.CreateDiagnostic(ctx, n)
	if err != nil {
		return cloudstore.Diagnostic{}, err
	}
	data, err := telemetry.Encode(telemetry.DiagnosticRequest{V: telemetry.Version, ID: n.ID, Command: n.Command, Args: n.Args, Deadline: n.Deadline})
	if err != nil { // CreateDiagnostic validated the same request
		return cloudstore.Diagnostic{}, fmt.Errorf("diagnostic %s: %w", n.ID, err)
	}
	if err := s.cfg.Publish(ctx, n.Device, n.ID, data); err != nil {
		s.log.WarnContext(ctx, "diagnostics request not published; it will time out", "diagnostic", n.ID, "device", n.Device, "error", err)
		return d, nil
	}
	if err := s.cfg.Store.MarkDiagnosticSent(ctx, n.ID); err != nil && !errors.Is(err, cloudstore.ErrConflict) {
		return d, err
	}
	// ErrConflict: the reply already arrived and finished it.
	return s.cfg.Store.GetDiagnostic(ctx, n.ID)
}

// Finished wakes the callers waiting for request id: its outcome is stored.
func (s *Service) Finished(id string) {
	s.mu.Lock()
	ws := s.waiters[id]
	delete(s.waiters, id)
	s.nwait -= len(ws)
	s.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
}

// Wait returns the request id once it is no longer pending or sent, or as it is after
// wait (at most MaxWait), or when ctx ends.
func (s *Service) Wait(ctx context.Context, id string, wait time.Duration) (cloudstore.Diagnostic, error) {
	wait = min(wait, MaxWait)
	d, err := s.cfg.Store.GetDiagnostic(ctx, id)
	if err != nil || !open(d) || wait <= 0 {
		return d, err
	}
	ch := make(chan struct{})
	s.mu.Lock()
	if s.nwait >= s.cfg.MaxWaiters {
		s.mu.Unlock()
		return d, ErrBusy
	}
	s.waiters[id] = append(s.waiters[id], ch)
	s.nwait++
	s.mu.Unlock()
	// Asked again after registering: a reply stored between the first read and the
	// registration woke nobody.
	if d, err = s.cfg.Store.GetDiagnostic(ctx, id); err != nil || !open(d) {
		s.forget(id, ch)
		return d, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		s.forget(id, ch)
	case <-ctx.Done():
		s.forget(id, ch)
		return d, context.Cause(ctx)
	}
	return s.cfg.Store.GetDiagnostic(ctx, id)
}

func (s *Service) forget(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			s.nwait--
			break
		}
	}
	if len(ws) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = ws
	}
}

func open(d cloudstore.Diagnostic) bool {
	return d.State == cloudstore.DiagnosticPending || d.State == cloudstore.DiagnosticSent
}

// Waiting is the number of callers waiting for outcomes now.
func (s *Service) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nwait
}

// Expire times out every request past its deadline and wakes their waiters.
func (s *Service) Expire(ctx context.Context) error {
	for {
		ids, err := s.cfg.Store.ExpireDiagnostics(ctx, s.cfg.Now())
		if err != nil {
			return err
		}
		for _, id := range ids {
			s.log.InfoContext(ctx, "diagnostics request timed out", "diagnostic", id)
			s.Finished(id)
		}
		if len(ids) < 1000 {
			return nil
		}
	}
}
