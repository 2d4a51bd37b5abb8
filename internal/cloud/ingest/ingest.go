// Package ingest moves what devices publish from the broker's JetStream stream
// (telemetry.Stream) into the cloud's database (internal/cloud/cloudstore), durably: a
// durable pull consumer fetches a batch, every message is decoded with internal/telemetry,
// the good ones are written in one transaction, and only then is every message of the
// batch acknowledged. A crash before the commit redelivers the batch; a crash after it
// redelivers messages whose stream sequence is stored already, which the store skips, so
// each message is stored once (TestIngest_StoresRedeliveredMessageOnce).
//
// What it trusts: the broker's subject (the broker lets a device publish only under its own
// ID, ATTACKS row 32) and the JetStream metadata (stream sequence and arrival time). What
// it enforces on everything else, each attacked by a test:
//   - payloads are decoded strictly and bounded (rule 5); a malformed, oversized or
//     unknown-subject message is acknowledged and dropped with a counted, rate-limited
//     logged reason and never stops the ingest (TestIngest_DropsMalformedAndKeepsGoing);
//   - a device's flood is limited per device with a token bucket over broker arrival
//     times, counted, and does not starve other devices (TestIngest_LimitsFloodingDevice);
//   - what arrived after the device's certificate expired (the devices table, kept by the
//     broker on each connection) is dropped: it covers the will message the broker fires
//     when it closes an expired connection (ATTACKS rows 8, 34;
//     TestIngest_DropsMessagesAfterCertificateExpiry);
//   - a diagnostics reply whose topic and payload name different requests is dropped, and
//     a reply finishes only its own device's request (cloudstore).
//
// Run fetches the next batch on a second goroutine while the current one commits (at most
// one batch ahead); decoding, the store, the acks and the hook run on Run's goroutine, one
// batch at a time and in fetch order. Prune may run concurrently with it.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/telemetry"
)

// Store is what the ingest needs of the cloud's database (*cloudstore.Store).
type Store interface {
	WriteBatch(ctx context.Context, records []cloudstore.Record) (cloudstore.BatchResult, error)
	Devices(ctx context.Context, ids []string) (map[string]cloudstore.Device, error)
	DeleteRawBefore(ctx context.Context, t time.Time, chunk int) (int64, error)
	DeleteSummariesBefore(ctx context.Context, t time.Time, chunk int) (int64, error)
}

// Sample is one stored message as the hook sees it: device, product (from the devices
// table), Kind(), and exactly one decoded payload.
type Sample = cloudstore.Record

// Hook receives the messages of each committed batch that were stored now (not
// redeliveries), in stream order, after they were acknowledged: the rules engine and the
// diagnostics service (replies) consume them. It runs on the ingest's goroutine, so a slow
// hook slows the ingest (back-pressure rather than an unbounded queue). A crash between
// the commit and the hook loses the hook's view of that batch, never the rows.
type Hook func(ctx context.Context, samples []Sample)

// Config tunes the ingest; DefaultConfig holds the defaults.
type Config struct {
	// Durable names the JetStream durable consumer; replicas of `moat cloud` with the same
	// name share the work.
	Durable string
	// BatchSize and BatchWait bound one fetch: at most BatchSize messages, waiting at most
	// BatchWait for them. One batch is one transaction.
	BatchSize int
	BatchWait time.Duration
	// AckWait is how long JetStream waits for an ack before redelivering.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered and not yet acknowledged.
	MaxAckPending int
	// RetryDelay is how long a batch whose commit failed waits before redelivery.
	RetryDelay time.Duration
	// DeviceRate (messages per second) and DeviceBurst bound what one device may send;
	// more is dropped as rate_limited.
	DeviceRate  float64
	DeviceBurst int
	// MaxDevices bounds the devices the rate limiter tracks (idle ones are evicted first).
	MaxDevices int
	// RawRetention is how long raw readings are kept; SummaryRetention how long cycle and
	// hourly summaries and events are.
	RawRetention     time.Duration
	SummaryRetention time.Duration
	// PruneChunk is the rows one retention transaction deletes.
	PruneChunk int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Durable:          "ingest",
		BatchSize:        500,
		BatchWait:        50 * time.Millisecond,
		AckWait:          30 * time.Second,
		MaxAckPending:    5000,
		RetryDelay:       time.Second,
		DeviceRate:       10,
		DeviceBurst:      50,
		MaxDevices:       100_000,
		RawRetention:     7 * 24 * time.Hour,
		SummaryRetention: 400 * 24 * time.Hour,
		PruneChunk:       cloudstore.DefaultPruneChunk,
	}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Durable != "" && len(c.Durable) <= 64, "durable: must be 1 to 64 characters")
	check(c.BatchSize >= 1 && c.BatchSize <= 1000, "batch_size: must be 1 to 1000, not %d", c.BatchSize)
	check(c.BatchWait >= time.Millisecond && c.BatchWait <= 10*time.Second, "batch_wait: must be 1ms to 10s, not %s", c.BatchWait)
	check(c.AckWait >= time.Second, "ack_wait: must be at least 1s, not %s", c.AckWait)
	check(c.MaxAckPending >= c.BatchSize, "max_ack_pending: must be at least batch_size (%d), not %d", c.BatchSize, c.MaxAckPending)
	check(c.RetryDelay > 0 && c.RetryDelay < c.AckWait, "retry_delay: must be positive and below ack_wait, not %s", c.RetryDelay)
	check(c.DeviceRate > 0, "device_rate: must be positive, not %v", c.DeviceRate)
	check(c.DeviceBurst >= 1, "device_burst: must be at least 1, not %d", c.DeviceBurst)
	check(c.MaxDevices >= 1, "max_devices: must be at least 1, not %d", c.MaxDevices)
	check(c.RawRetention >= time.Hour, "raw_retention: must be at least 1h, not %s", c.RawRetention)
	check(c.SummaryRetention >= c.RawRetention, "summary_retention: must be at least raw_retention (%s), not %s", c.RawRetention, c.SummaryRetention)
	check(c.PruneChunk >= 1, "prune_chunk: must be at least 1, not %d", c.PruneChunk)
	return errors.Join(errs...)
}

// Deps are an Ingest's collaborators; all but Hook are required.
type Deps struct {
	JetStream  jetstream.JetStream
	Store      Store
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
	Hook       Hook
}

// Ingest consumes the device stream into the store.
type Ingest struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	limiter *limiter
	logs    *logLimiter
	m       metrics
}

// New returns an Ingest; Run starts it.
func New(cfg Config, deps Deps) (*Ingest, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if deps.JetStream == nil || deps.Store == nil || deps.Logger == nil || deps.Registerer == nil || deps.Now == nil {
		errs = append(errs, errors.New("ingest: JetStream, Store, Logger, Registerer and Now are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	return &Ingest{
		cfg:     cfg,
		deps:    deps,
		log:     deps.Logger,
		limiter: newLimiter(cfg.DeviceRate, cfg.DeviceBurst, cfg.MaxDevices),
		logs:    &logLimiter{every: 10 * time.Second, last: map[string]time.Time{}, suppressed: map[string]int{}},
		m:       m,
	}, nil
}

// ConsumerConfig is the durable consumer Run creates or updates on telemetry.Stream.
func (in *Ingest) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       in.cfg.Durable,
		Description:   "moat cloud ingest: stores device telemetry, events and diagnostics replies",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       in.cfg.AckWait,
		MaxAckPending: in.cfg.MaxAckPending,
		// A message the store keeps refusing is retried for ever rather than dropped: the
		// failure is the database's (every payload was validated), and an operator fixes it.
		MaxDeliver:      -1,
		MaxRequestBatch: in.cfg.BatchSize,
	}
}

// Run consumes until ctx ends; it returns nil then. Errors fetching from JetStream or
// writing the store are logged and retried; only failing to create the consumer returns
// an error.
func (in *Ingest) Run(ctx context.Context) error {
	cons, err := in.deps.JetStream.CreateOrUpdateConsumer(ctx, telemetry.Stream, in.ConsumerConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("create ingest consumer %s on stream %s: %w", in.cfg.Durable, telemetry.Stream, err)
	}
	// One goroutine fetches while this one decodes, commits, acknowledges and runs the
	// hook: the channel is unbuffered, so at most one fetched batch waits beyond the one
	// being committed (MaxAckPending still bounds the unacknowledged messages). Batches are
	// processed, and so acknowledged, in the order they were fetched, each only after its
	// own commit; a failed batch is negatively acknowledged alone, and the batch fetched
	// meanwhile is processed as usual (its messages are different ones).
	batches := make(chan []jetstream.Msg)
	fetchCtx, stopFetch := context.WithCancel(ctx)
	var fetcher sync.WaitGroup
	fetcher.Go(func() { in.fetchLoop(fetchCtx, cons, batches) })
	defer func() {
		stopFetch()
		fetcher.Wait()
	}()
	backoff := time.Duration(0)
	for {
		var msgs []jetstream.Msg
		select {
		case <-ctx.Done():
			return nil
		case msgs = <-batches:
		}
		if err := in.process(ctx, msgs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = in.retryAfter(ctx, backoff, "ingest batch failed; retrying", err)
			continue
		}
		backoff = 0
	}
}

// fetchLoop fetches batches and hands each non-empty one to Run until ctx ends. A batch
// it holds when ctx ends is negatively acknowledged, so another replica (or the next
// start) gets it without waiting AckWait; nothing of it was stored.
func (in *Ingest) fetchLoop(ctx context.Context, cons jetstream.Consumer, batches chan<- []jetstream.Msg) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		msgs, err := in.fetch(cons)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = in.retryAfter(ctx, backoff, "ingest fetch failed; retrying", err)
			continue
		}
		backoff = 0
		if len(msgs) == 0 {
			continue
		}
		select {
		case batches <- msgs:
		case <-ctx.Done():
			for _, msg := range msgs {
				_ = msg.Nak()
			}
			return
		}
	}
}

// retryAfter logs err, waits the doubled backoff (100ms to 5s) or until ctx ends, and
// returns the backoff it waited.
func (in *Ingest) retryAfter(ctx context.Context, backoff time.Duration, msg string, err error) time.Duration {
	backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
	in.log.WarnContext(ctx, msg, "err", err, "retry_in", backoff)
	select {
	case <-ctx.Done():
	case <-time.After(backoff):
	}
	return backoff
}

func (in *Ingest) fetch(cons jetstream.Consumer) ([]jetstream.Msg, error) {
	batch, err := cons.Fetch(in.cfg.BatchSize, jetstream.FetchMaxWait(in.cfg.BatchWait))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	var msgs []jetstream.Msg
	for msg := range batch.Messages() {
		msgs = append(msgs, msg)
	}
	if err := batch.Error(); err != nil && len(msgs) == 0 && !errors.Is(err, jetstream.ErrNoMessages) && !isTimeout(err) {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return msgs, nil
}
