// Package notify carries small events between `moat server` replicas that share one
// PostgreSQL database, with LISTEN/NOTIFY: a replica that changed something a device waits
// for (a deployment, a group, a published image) publishes "wake:TENANT", and every
// replica, itself included, wakes the tenant's devices that long-poll it, at once instead
// of at their next 15 s re-check (issue 12, item 5).
//
// Wire format: one notification per event on one channel (Config.Channel), payload
// "KIND:TENANT" with TENANT "*" for every tenant, at most MaxPayloadBytes. Kinds are
// registered with Handle; a payload of a kind this replica does not know is counted and
// ignored, so a newer replica may add kinds (a token revocation, say) while older ones run.
//
// What it trusts and enforces:
//
//   - Whoever can NOTIFY on the database (its roles) is trusted as much as for the data
//     itself; an event is a hint to re-read state, never state: a forged or repeated
//     "wake" costs each waiting device one re-check, nothing more. Payloads are parsed
//     strictly and bounded (Parse; FuzzParse).
//   - Events are at most once: PostgreSQL drops them while a listener is disconnected. So
//     after every (re)connection the listener tells each kind's handler "every tenant"
//     (TestNotify_ReconnectWakesEveryone), and devices keep their periodic re-check.
//   - Publish never blocks its caller and holds a bounded set of pending events
//     (Config.MaxPending); identical ones coalesce, and past the bound a kind's events
//     collapse into its "every tenant" event, which subsumes them
//     (TestNotify_PublishIsBoundedAndCoalesces). Events are sent by pg_notify in their own
//     statement, after the caller's transaction committed (the caller publishes after it
//     returns), so a listener that wakes re-reads committed state.
//   - The listener holds one dedicated connection and reconnects with capped exponential
//     backoff and jitter; the sender reconnects likewise.
//
// Concurrency: Handle before Run; Publish from any goroutine; handlers run on the listen
// goroutine one at a time and must not block (push.Waits.Notify does not).
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/tenant"
)

// Kind names a kind of event: lower-case letters, digits and '-', at most 32.
type Kind string

// KindWake wakes the devices of a tenant waiting for updates.
const KindWake Kind = "wake"

// AllTenants is the Tenant of an event for every tenant ("*" on the wire).
const AllTenants tenant.ID = ""

// MaxPayloadBytes bounds a payload this package sends or accepts.
const MaxPayloadBytes = 128

// DefaultChannel is the LISTEN/NOTIFY channel.
const DefaultChannel = "moat_events"

const (
	// DefaultMaxPending bounds the events waiting to be sent.
	DefaultMaxPending = 10_000
	maxBatch          = 500 // events per pg_notify statement
	sendTimeout       = 10 * time.Second
)

var (
	kindPattern    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	tenantPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	channelPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// ErrInvalidPayload: a payload is not "KIND:TENANT" within the bounds.
var ErrInvalidPayload = errors.New("invalid notification payload")

// Event is one notification.
type Event struct {
	Kind Kind
	// Tenant is the tenant concerned, or AllTenants.
	Tenant tenant.ID
}

// Payload renders e for the wire.
func (e Event) Payload() (string, error) {
	if !kindPattern.MatchString(string(e.Kind)) {
		return "", fmt.Errorf("event kind %q: %w", e.Kind, ErrInvalidPayload)
	}
	t := string(e.Tenant)
	if e.Tenant == AllTenants {
		t = "*"
	} else if !tenantPattern.MatchString(t) {
		return "", fmt.Errorf("event tenant of %d bytes: %w", len(t), ErrInvalidPayload)
	}
	return string(e.Kind) + ":" + t, nil
}

// Parse reads a payload. It is the parser of bytes from the database (fuzzed by FuzzParse).
func Parse(payload string) (Event, error) {
	if len(payload) > MaxPayloadBytes {
		return Event{}, fmt.Errorf("payload of %d bytes: %w", len(payload), ErrInvalidPayload)
	}
	k, t, ok := strings.Cut(payload, ":")
	if !ok || !kindPattern.MatchString(k) || (t != "*" && !tenantPattern.MatchString(t)) {
		return Event{}, ErrInvalidPayload
	}
	e := Event{Kind: Kind(k), Tenant: tenant.ID(t)}
	if t == "*" {
		e.Tenant = AllTenants
	}
	return e, nil
}

// Handler receives the events of one kind.
type Handler func(Event)

// Config configures a Notifier. DSN, Logger and Registerer are required.
type Config struct {
	// DSN is the PostgreSQL connection string (it may hold a password: never logged).
	DSN string
	// Channel is the LISTEN/NOTIFY channel; empty is DefaultChannel. Replicas that share
	// a database must share it.
	Channel    string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// MaxPending bounds the events waiting to be sent; 0 is DefaultMaxPending.
	MaxPending int
	// MinBackoff and MaxBackoff bound the wait before a reconnection; 0 is 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("notify: DSN is required"))
	} else if _, err := pgx.ParseConfig(c.DSN); err != nil {
		errs = append(errs, errors.New("notify: DSN: invalid format")) // the error may quote a password
	}
	if c.Logger == nil || c.Registerer == nil {
		errs = append(errs, errors.New("notify: Logger and Registerer are required"))
	}
	if c.Channel != "" && !channelPattern.MatchString(c.Channel) {
		errs = append(errs, fmt.Errorf("notify: channel %q: want lower-case letters, digits and _", c.Channel))
	}
	if c.MaxPending < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || (c.MaxBackoff != 0 && c.MaxBackoff < c.MinBackoff) {
		errs = append(errs, errors.New("notify: MaxPending and backoffs must not be negative, MaxBackoff not below MinBackoff"))
	}
	return errors.Join(errs...)
}

// Notifier publishes events to every replica and hands those it hears to its handlers.
type Notifier struct {
	cfg      Config
	log      *slog.Logger
	handlers map[Kind]Handler
	metrics  metrics

	mu      sync.Mutex
	pending map[Event]struct{}
	ready   chan struct{} // capacity 1: something is pending
	running bool
}

type metrics struct {
	published  prometheus.Counter
	collapsed  prometheus.Counter
	received   *prometheus.CounterVec // result: handled | ignored | invalid
	reconnects *prometheus.CounterVec // conn: listen | send
	sendErrors prometheus.Counter
}

// New returns a Notifier; register handlers with Handle, then Run it.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Channel == "" {
		cfg.Channel = DefaultChannel
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	n := &Notifier{cfg: cfg, log: cfg.Logger, handlers: map[Kind]Handler{},
		pending: map[Event]struct{}{}, ready: make(chan struct{}, 1)}
	n.metrics = metrics{
		published:  prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_notify_published_total", Help: "Events sent to the other replicas by PostgreSQL NOTIFY."}),
		collapsed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_notify_collapsed_total", Help: "Events folded into an every-tenant event because MaxPending were waiting to be sent."}),
		received:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_notify_received_total", Help: "Events heard by LISTEN, by result (handled, ignored: unknown kind, invalid)."}, []string{"result"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_notify_reconnects_total", Help: "Connections to PostgreSQL for events lost and made again, by connection (listen, send)."}, []string{"conn"}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_notify_send_errors_total", Help: "pg_notify statements that failed (their events are retried once reconnected)."}),
	}
	for _, r := range []string{"handled", "ignored", "invalid"} {
		n.metrics.received.WithLabelValues(r)
	}
	for _, c := range []string{"listen", "send"} {
		n.metrics.reconnects.WithLabelValues(c)
	}
	for _, c := range []prometheus.Collector{n.metrics.published, n.metrics.collapsed, n.metrics.received, n.metrics.reconnects, n.metrics.sendErrors} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("notify: register metrics: %w", err)
		}
	}
	return n, nil
}

// Handle registers h for events of kind k; call it before Run.
func (n *Notifier) Handle(k Kind, h Handler) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		return errors.New("notify: Handle after Run")
	}
	if !kindPattern.MatchString(string(k)) || h == nil {
		return fmt.Errorf("notify: handle kind %q: want a valid kind and a handler", k)
	}
	if _, ok := n.handlers[k]; ok {
		return fmt.Errorf("notify: kind %q has a handler already", k)
	}
	n.handlers[k] = h
	return nil
}

// Publish queues e for every replica (this one included) and returns at once. An event
// that cannot be rendered is logged and dropped.
func (n *Notifier) Publish(e Event) {
	if _, err := e.Payload(); err != nil {
		n.log.Warn("notify: event dropped", "kind", e.Kind, "err", err)
		return
	}
	n.mu.Lock()
	if _, ok := n.pending[e]; !ok && len(n.pending) >= n.cfg.MaxPending {
		// Full: the kind's every-tenant event subsumes this one (and costs one entry per
		// kind past the bound, at most).
		n.metrics.collapsed.Inc()
		e.Tenant = AllTenants
	}
	n.pending[e] = struct{}{}
	n.mu.Unlock()
	select {
	case n.ready <- struct{}{}:
	default:
	}
}

// Pending is the number of events waiting to be sent.
func (n *Notifier) Pending() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.pending)
}

// take removes up to maxBatch pending events and returns their payloads.
func (n *Notifier) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, min(len(n.pending), maxBatch))
	for e := range n.pending {
		if len(out) == maxBatch {
			break
		}
		delete(n.pending, e)
		p, _ := e.Payload() // checked by Publish
		out = append(out, p)
	}
	return out
}

// putBack returns events whose sending failed, unless newer ones filled the set.
func (n *Notifier) putBack(payloads []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range payloads {
		if e, err := Parse(p); err == nil && len(n.pending) < n.cfg.MaxPending {
			n.pending[e] = struct{}{}
		}
	}
}

// Run listens and sends until ctx is done; it returns nil then. Connection failures are
// retried with backoff, never returned.
func (n *Notifier) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		return errors.New("notify: Run called twice")
	}
	n.running = true
	n.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { n.listenLoop(ctx) })
	wg.Go(func() { n.sendLoop(ctx) })
	wg.Wait()
	return nil
}

// listenLoop keeps one connection LISTENing and dispatches what it hears.
func (n *Notifier) listenLoop(ctx context.Context) {
	b := n.backoff()
	for ctx.Err() == nil {
		err := n.listenOnce(ctx, b.reset)
		if ctx.Err() != nil {
			return
		}
		n.metrics.reconnects.WithLabelValues("listen").Inc()
		n.log.WarnContext(ctx, "notify: listen connection lost; reconnecting", "err", err)
		if !b.wait(ctx) {
			return
		}
	}
}

func (n *Notifier) listenOnce(ctx context.Context, connected func()) error {
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.cfg.Channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	connected()
	// Events sent while no connection listened are lost: everyone once, per kind.
	for k, h := range n.handlers {
		h(Event{Kind: k, Tenant: AllTenants})
	}
	for {
		note, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if note.Channel != n.cfg.Channel {
			continue
		}
		n.dispatch(note.Payload)
	}
}

func (n *Notifier) dispatch(payload string) {
	e, err := Parse(payload)
	if err != nil {
		n.metrics.received.WithLabelValues("invalid").Inc()
		n.log.Warn("notify: invalid event ignored", "payload_bytes", len(payload))
		return
	}
	h, ok := n.handlers[e.Kind]
	if !ok {
		n.metrics.received.WithLabelValues("ignored").Inc()
		return
	}
	n.metrics.received.WithLabelValues("handled").Inc()
	h(e)
}

// sendLoop sends pending events in batches, one pg_notify statement each.
func (n *Notifier) sendLoop(ctx context.Context) {
	b := n.backoff()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.ready:
		}
		for {
			batch := n.take()
			if len(batch) == 0 {
				break
			}
			if conn == nil {
				var err error
				if conn, err = n.connect(ctx); err != nil {
					n.putBack(batch)
					n.metrics.reconnects.WithLabelValues("send").Inc()
					n.log.WarnContext(ctx, "notify: connect to send events", "err", err)
					if !b.wait(ctx) {
						return
					}
					continue
				}
			}
			sctx, cancel := context.WithTimeout(ctx, sendTimeout)
			_, err := conn.Exec(sctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, n.cfg.Channel, batch)
			cancel()
			if err != nil {
				n.putBack(batch)
				n.metrics.sendErrors.Inc()
				closeConn(conn)
				conn = nil
				if ctx.Err() != nil {
					return
				}
				n.log.WarnContext(ctx, "notify: send events", "err", err, "events", len(batch))
				if !b.wait(ctx) {
					return
				}
				continue
			}
			b.reset()
			n.metrics.published.Add(float64(len(batch)))
		}
	}
}

func (n *Notifier) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(n.cfg.DSN)
	if err != nil {
		return nil, errors.New("parse postgres connection string: invalid format")
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return conn, nil
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.Close(ctx) // the connection is done with either way
}

// backoff is capped exponential backoff with full jitter.
type backoff struct {
	min, max, next time.Duration
}

func (n *Notifier) backoff() *backoff {
	return &backoff{min: n.cfg.MinBackoff, max: n.cfg.MaxBackoff, next: n.cfg.MinBackoff}
}

func (b *backoff) reset() { b.next = b.min }

// wait sleeps a random duration up to the next backoff, or until ctx is done (false).
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1) //nolint:gosec // G404: jitter, not a secret
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
