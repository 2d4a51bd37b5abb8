// Package cloudlink is the device's link to the tenant's cloud (`moat cloud`): it holds one
// MQTT 3.1.1 session over TLS with the device's attested certificate, sends what the app
// publishes (telemetry and events) from a bounded queue on disk, and hands the cloud's
// diagnostics requests to the app and sends its replies back. The topics and payloads are
// internal/telemetry's; the MQTT client is eclipse/paho.mqtt.golang.
//
// # What it trusts and enforces
//
// It trusts Config.CAs for the broker's certificate and nothing else (no system roots),
// and presents the certificate Config.Certificate returns: the attestation client's, so
// a device whose software stops attesting loses its cloud when the certificate expires
// (DESIGN rule 1). It connects with client ID = device ID and user name = product, what the
// broker checks against the certificate (ATTACKS row 32). After every renewal it closes the
// session and connects again with the new certificate (TestLink_ReconnectsWithRenewedCertificate).
//
// What the app publishes is checked with the cloud's own decoders before it is queued: only
// the topics "telemetry" and "events" (TestLink_RefusesOtherAppTopics), only payloads
// telemetry.DecodeTelemetry or DecodeEvent accept; the link adds "v" (1) and "time" (the
// device's clock) when the app leaves them out. Queued messages are written atomically with
// fsync and deleted only after the broker's PUBACK, so an outage or a restart loses nothing
// that fits the queue (ATTACKS row 35, TestLink_DeliversOnceAcrossBrokerOutageAndRestart);
// a connection lost between the broker's receipt and its PUBACK sends that message again
// (MQTT QoS 1 is at least once). The queue is bounded (Config.MaxQueueBytes and
// MaxQueueMessages); when full the oldest telemetry is dropped first, counted and logged,
// and events and replies are kept as long as there is telemetry to drop
// (TestLink_OfflineFloodStaysWithinMaxQueue).
//
// Diagnostics requests are decoded strictly (telemetry.DecodeRequest); one past its
// deadline is answered "expired" without running; at most Config.MaxDiagnostics run at
// once (more are answered "busy"); a request ID seen recently, or whose reply is still
// queued, is not run again (TestLink_AnswersDiagnosticsOnce).
//
// # Concurrency
//
// Run runs the link until its context ends; call it once. Publish and Kick are safe from
// any goroutine, before and while Run runs.
package cloudlink

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/moat-iot/moat/internal/telemetry"
)

// Defaults.
const (
	DefaultMaxQueueBytes    = 1 << 20
	DefaultMaxQueueMessages = 2000
	DefaultMaxDiagnostics   = 2
	DefaultDiagnoseTimeout  = 5 * time.Minute
	DefaultMinBackoff       = time.Second
	DefaultMaxBackoff       = 2 * time.Minute
	// DefaultCertCheckInterval is how often a connected link asks for the certificate when
	// no change notification comes.
	DefaultCertCheckInterval = time.Minute
	// DefaultPublishRate and DefaultPublishBurst pace what the link sends: below the
	// cloud's default per-device limit (10 messages/s, burst 100), so that a backlog the
	// outbox gathered while offline is delivered, not dropped as rate_limited.
	DefaultPublishRate  = 5
	DefaultPublishBurst = 50
)

// App topics: what the app's telemetry.publish may name.
const (
	TopicTelemetry = "telemetry"
	TopicEvents    = "events"
)

// ErrRefused is wrapped by Publish's errors for a message the cloud would not accept (a
// topic other than TopicTelemetry and TopicEvents, a payload its decoder refuses): the app
// must change it, retrying does not help.
var ErrRefused = errors.New("refused")

// Config configures a Link. Fields without "optional" are required.
type Config struct {
	// Broker is the cloud's MQTT listener, mqtts://HOST:PORT.
	Broker string
	// CAs are the only trust for the broker's certificate (`moat cloud`'s server CA).
	CAs *x509.CertPool
	// Certificate returns the device's current certificate (the attestation client's).
	Certificate func(ctx context.Context) (tls.Certificate, error)
	// CertificateChanged, optional, returns a channel closed when the certificate may have
	// changed (a renewal, a new attestation session); without it the link polls
	// Certificate every CertCheckInterval.
	CertificateChanged func() <-chan struct{}
	// DeviceID is the device's ID (64 hex digits): the MQTT client ID and topic prefix.
	DeviceID string
	// Product is the device's product: the MQTT user name.
	Product string
	// QueueDir holds the outbox.
	QueueDir string
	// Now is the device's clock (payload times, request deadlines, TLS validity).
	Now func() time.Time
	// Diagnose runs a diagnostic in the app (periph.Server.Diagnose) and returns its result.
	Diagnose func(ctx context.Context, command string, args json.RawMessage) (json.RawMessage, error)
	// Logger, optional; nil discards.
	Logger *slog.Logger
	// MaxQueueBytes and MaxQueueMessages, optional, bound the outbox
	// (DefaultMaxQueueBytes, DefaultMaxQueueMessages). MaxQueueBytes is at least 64 KiB.
	MaxQueueBytes    int64
	MaxQueueMessages int
	// MaxDiagnostics, optional, bounds the diagnostics running at once (DefaultMaxDiagnostics).
	MaxDiagnostics int
	// DiagnoseTimeout, optional, bounds one diagnostic besides its request's deadline.
	DiagnoseTimeout time.Duration
	// MinBackoff and MaxBackoff, optional, bound the wait between failed connections.
	MinBackoff, MaxBackoff time.Duration
	// CertCheckInterval, optional (DefaultCertCheckInterval).
	CertCheckInterval time.Duration
	// PublishRate (messages per second) and PublishBurst, optional, pace publishing
	// (DefaultPublishRate, DefaultPublishBurst); keep them within the cloud's per-device
	// limit (moat cloud --device-rate, --device-burst).
	PublishRate  float64
	PublishBurst int
}

// minQueueBytes is room for a few of the largest messages.
const minQueueBytes = 64 << 10

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if _, err := brokerAddr(c.Broker); err != nil {
		errs = append(errs, err)
	}
	if c.CAs == nil {
		errs = append(errs, errors.New("cas: required"))
	}
	if c.Certificate == nil {
		errs = append(errs, errors.New("certificate: required"))
	}
	if !telemetry.ValidDeviceID(c.DeviceID) {
		errs = append(errs, errors.New("device_id: must be 64 lower-case hex digits"))
	}
	if c.Product == "" {
		errs = append(errs, errors.New("product: required (the MQTT user name)"))
	}
	if c.QueueDir == "" {
		errs = append(errs, errors.New("queue_dir: required"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if c.Diagnose == nil {
		errs = append(errs, errors.New("diagnose: required"))
	}
	if c.MaxQueueBytes != 0 && c.MaxQueueBytes < minQueueBytes {
		errs = append(errs, fmt.Errorf("max_queue_bytes: at least %d", minQueueBytes))
	}
	if c.MaxQueueMessages < 0 || c.MaxQueueMessages == 1 {
		errs = append(errs, errors.New("max_queue_messages: at least 2"))
	}
	if c.MaxDiagnostics < 0 || c.DiagnoseTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.CertCheckInterval < 0 || c.PublishRate < 0 || c.PublishBurst < 0 {
		errs = append(errs, errors.New("max_diagnostics, diagnose_timeout, min_backoff, max_backoff and cert_check_interval must not be negative"))
	}
	return errors.Join(errs...)
}

// brokerAddr checks an mqtts://HOST:PORT URL.
func brokerAddr(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "mqtts" || u.Hostname() == "" || u.Port() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("broker: %q is not mqtts://HOST:PORT", s)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("broker: %q has no valid port", s)
	}
	return u, nil
}

// Stats are the link's counters.
type Stats struct {
	Queued    int   // messages waiting for a PUBACK
	Bytes     int64 // their size on disk
	Sent      int64 // messages the broker acknowledged
	Dropped   int64 // messages dropped because the queue was full
	Connects  int64 // sessions established
	Refused   int64 // app messages refused
	Diagnoses int64 // diagnostics run
}

// Link is the device's cloud link.
type Link struct {
	cfg    Config
	broker *url.URL
	log    *slog.Logger
	q      *queue
	kick   chan struct{} // a message was queued
	certK  chan struct{} // the certificate may have changed
	diagWG sync.WaitGroup
	diag   *diagnostics
	pace   *rate.Limiter // publishes, within the cloud's per-device limit

	sent, dropped, connects, refused, diagnoses atomic.Int64
}

// New validates cfg and opens the queue.
func New(cfg Config) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cloud link config: %w", err)
	}
	cfg.MaxQueueBytes = cmp0(cfg.MaxQueueBytes, DefaultMaxQueueBytes)
	cfg.MaxQueueMessages = cmp0(cfg.MaxQueueMessages, DefaultMaxQueueMessages)
	cfg.MaxDiagnostics = cmp0(cfg.MaxDiagnostics, DefaultMaxDiagnostics)
	cfg.DiagnoseTimeout = cmp0(cfg.DiagnoseTimeout, DefaultDiagnoseTimeout)
	cfg.MinBackoff = cmp0(cfg.MinBackoff, DefaultMinBackoff)
	cfg.MaxBackoff = max(cmp0(cfg.MaxBackoff, DefaultMaxBackoff), cfg.MinBackoff)
	cfg.CertCheckInterval = cmp0(cfg.CertCheckInterval, DefaultCertCheckInterval)
	cfg.PublishRate = cmp0(cfg.PublishRate, DefaultPublishRate)
	cfg.PublishBurst = cmp0(cfg.PublishBurst, DefaultPublishBurst)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, _ := brokerAddr(cfg.Broker)
	l := &Link{cfg: cfg, broker: u, log: log, kick: make(chan struct{}, 1), certK: make(chan struct{}, 1),
		pace: rate.NewLimiter(rate.Limit(cfg.PublishRate), cfg.PublishBurst)}
	q, err := openQueue(cfg.QueueDir, cfg.MaxQueueBytes, cfg.MaxQueueMessages, log, func(kind string) {
		l.dropped.Add(1)
	})
	if err != nil {
		return nil, err
	}
	l.q = q
	l.diag = newDiagnostics(cfg.MaxDiagnostics)
	return l, nil
}

func cmp0[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	n, b := l.q.size()
	return Stats{Queued: n, Bytes: b, Sent: l.sent.Load(), Dropped: l.dropped.Load(), Connects: l.connects.Load(),
		Refused: l.refused.Load(), Diagnoses: l.diagnoses.Load()}
}

// Kick tells the link its certificate may have changed (a new attestation session).
func (l *Link) Kick() {
	select {
	case l.certK <- struct{}{}:
	default:
	}
}

// Publish checks what the app published on topic ("telemetry" or "events") and queues it
// durably for the cloud: when it returns nil the message survives a power cut. A message
// the cloud would refuse is an error wrapping ErrRefused. When the app leaves out "v" or
// "time" the link adds them (1 and the device's clock, UTC).
func (l *Link) Publish(_ context.Context, topic string, payload []byte) error {
	kind := ""
	switch topic {
	case TopicTelemetry:
		kind = kindTelemetry
	case TopicEvents:
		kind = kindEvent
	default:
		// Attacked by TestLink_RefusesOtherAppTopics: the app reaches the device's own
		// telemetry and events topics only, never its diagnostics replies or anything else.
		l.refused.Add(1)
		return fmt.Errorf("%w: topic %.64q: an app publishes on %q or %q only", ErrRefused, topic, TopicTelemetry, TopicEvents)
	}
	data, err := l.canonical(kind, payload)
	if err != nil {
		l.refused.Add(1)
		return fmt.Errorf("%w: %s payload: %w", ErrRefused, topic, err)
	}
	if err := l.q.put(kind, "", data); err != nil {
		return err
	}
	l.wake()
	return nil
}

func (l *Link) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// canonical fills in "v" and "time" when absent, checks the payload with the cloud's
// decoder and returns its canonical encoding.
func (l *Link) canonical(kind string, payload []byte) ([]byte, error) {
	payload = bytes.TrimSpace(payload)
	if len(payload) > telemetry.MaxPayloadBytes {
		return nil, fmt.Errorf("at most %d bytes, not %d", telemetry.MaxPayloadBytes, len(payload))
	}
	var head map[string]json.RawMessage
	if len(payload) > 0 && payload[0] == '{' && json.Unmarshal(payload, &head) == nil {
		// Insert the missing fields as text, ahead of the app's: the strict decoder below
		// still sees every key the app sent (duplicates included).
		var add []byte
		if _, ok := head["v"]; !ok {
			add = append(add, `"v":`+strconv.Itoa(telemetry.Version)+`,`...)
		}
		if _, ok := head["time"]; !ok {
			t, _ := l.cfg.Now().UTC().MarshalJSON()
			add = append(append(append(add, `"time":`...), t...), ',')
		}
		if len(add) > 0 {
			if len(head) == 0 {
				add = add[:len(add)-1] // no comma before "}"
			}
			payload = append(append([]byte{'{'}, add...), payload[1:]...)
		}
	}
	if kind == kindTelemetry {
		t, err := telemetry.DecodeTelemetry(payload)
		if err != nil {
			return nil, err
		}
		return telemetry.Encode(t)
	}
	e, err := telemetry.DecodeEvent(payload)
	if err != nil {
		return nil, err
	}
	return telemetry.Encode(e)
}

// Run holds the session until ctx ends, reconnecting with backoff and jitter, and after
// every certificate change.
func (l *Link) Run(ctx context.Context) error {
	defer l.diagWG.Wait()
	backoff := l.cfg.MinBackoff
	for ctx.Err() == nil {
		err := l.session(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errRenewed):
			backoff = l.cfg.MinBackoff
			continue // at once, with the new certificate
		case errors.Is(err, errWasUp):
			backoff = l.cfg.MinBackoff
		}
		wait := jitter(backoff)
		l.log.WarnContext(ctx, "cloud link down", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
	return nil
}

// jitter draws from the upper half of d, so a fleet that lost its broker together does not
// come back in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) //nolint:gosec // G404: spreading reconnects needs no secret randomness
}
