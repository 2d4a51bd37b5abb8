package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
)

// Store is what the Worker needs of the cloud's database (*cloudstore.Store).
type Store interface {
	ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]cloudstore.OutboxRow, error)
	CompleteOutbox(ctx context.Context, id int64, attempt int, result string, now time.Time) error
	RetryOutbox(ctx context.Context, id int64, attempt int, errText string, next time.Time) error
	KillOutbox(ctx context.Context, id int64, attempt int, errText string, now time.Time) error
	OutboxBacklog(ctx context.Context) (cloudstore.OutboxBacklog, error)
}

// Defaults of Config's zero fields.
const (
	DefaultLease       = 2 * time.Minute
	DefaultBatch       = 16
	DefaultConcurrency = 4
	DefaultPoll        = 2 * time.Second
	DefaultBackoffBase = 5 * time.Second
	DefaultBackoffMax  = time.Hour
	DefaultMaxAttempts = 25
	// MaxConcurrency bounds Config.Concurrency: each running job may hold a connection.
	MaxConcurrency = 64
)

// Config configures a Worker. Zero numbers take the defaults above.
type Config struct {
	Store    Store
	Handlers Handlers
	// Lease is how long a claimed row is the worker's; a handler's context ends with it, and
	// a row whose worker died is claimed again after it.
	Lease time.Duration
	// Batch is the rows claimed at once (at most cloudstore.MaxOutboxClaim).
	Batch int
	// Concurrency is the jobs run at once (at most MaxConcurrency).
	Concurrency int
	// Poll is how often Run looks for due rows when nobody Kicks it.
	Poll time.Duration
	// BackoffBase and BackoffMax: the n-th failed attempt is retried after about
	// BackoffBase*2^(n-1) (between half and all of it, jittered), at most BackoffMax.
	BackoffBase, BackoffMax time.Duration
	// MaxAttempts: a row whose attempt MaxAttempts fails is dead.
	MaxAttempts int
	Now         func() time.Time
	Logger      *slog.Logger
	// Registerer, when set, receives the worker's metrics.
	Registerer prometheus.Registerer
}

func (c *Config) defaults() {
	c.Lease = cmpOr(c.Lease, DefaultLease)
	c.Batch = cmpOr(c.Batch, DefaultBatch)
	c.Concurrency = cmpOr(c.Concurrency, DefaultConcurrency)
	c.Poll = cmpOr(c.Poll, DefaultPoll)
	c.BackoffBase = cmpOr(c.BackoffBase, DefaultBackoffBase)
	c.BackoffMax = cmpOr(c.BackoffMax, DefaultBackoffMax)
	c.MaxAttempts = cmpOr(c.MaxAttempts, DefaultMaxAttempts)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Validate reports every problem of c (after the defaults).
func (c Config) Validate() error {
	c.defaults()
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store: required"))
	}
	if len(c.Handlers) == 0 {
		errs = append(errs, errors.New("handlers: required"))
	}
	for kind, h := range c.Handlers {
		if h == nil {
			errs = append(errs, fmt.Errorf("handlers: %s: nil handler", kind))
		}
	}
	if c.Now == nil {
		errs = append(errs, errors.New("now: required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger: required"))
	}
	if c.Lease < time.Second {
		errs = append(errs, errors.New("lease: must be at least 1s"))
	}
	if c.Batch < 1 || c.Batch > cloudstore.MaxOutboxClaim {
		errs = append(errs, fmt.Errorf("batch: must be 1 to %d", cloudstore.MaxOutboxClaim))
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("concurrency: must be 1 to %d", MaxConcurrency))
	}
	if c.Poll < 10*time.Millisecond {
		errs = append(errs, errors.New("poll: must be at least 10ms"))
	}
	if c.BackoffBase <= 0 || c.BackoffMax < c.BackoffBase {
		errs = append(errs, errors.New("backoff: base must be positive and max at least base"))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, errors.New("max_attempts: must be at least 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("outbox worker: %w", err)
	}
	return nil
}

// Worker performs due outbox rows. Its methods are safe for concurrent use; several
// Workers (one per cloud replica) may share one database.
type Worker struct {
	cfg  Config
	log  *slog.Logger
	m    metrics
	kick chan struct{}
}

// New returns a Worker.
func New(cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	m, err := newMetrics(cfg.Registerer, cfg.Handlers)
	if err != nil {
		return nil, fmt.Errorf("outbox worker: register metrics: %w", err)
	}
	return &Worker{cfg: cfg, log: cfg.Logger, m: m, kick: make(chan struct{}, 1)}, nil
}

// Kick wakes Run at once (after an enqueue). It never blocks: kicks while one is pending
// are one kick.
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run performs due rows until ctx ends: a full batch is followed by the next at once,
// otherwise it waits for Poll or a Kick.
func (w *Worker) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.kick:
		}
		n, err := w.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "outbox batch", "error", err)
		}
		wait := w.cfg.Poll
		if err == nil && n == w.cfg.Batch {
			wait = 0
		}
		t.Reset(wait)
	}
}

// RunOnce claims one batch of due rows, performs them (Concurrency at once) and records
// their outcomes. It returns how many rows it claimed.
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	rows, err := w.cfg.Store.ClaimOutbox(ctx, w.cfg.Now(), w.cfg.Lease, w.cfg.Batch)
	if err != nil {
		return 0, err
	}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, w.cfg.Concurrency)
		mu   sync.Mutex
		errs []error
	)
	for _, r := range rows {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := w.perform(ctx, r); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	w.updateBacklog(ctx)
	return len(rows), errors.Join(errs...)
}

func (w *Worker) updateBacklog(ctx context.Context) {
	b, err := w.cfg.Store.OutboxBacklog(ctx)
	if err != nil {
		return
	}
	w.m.pending.Set(float64(b.Pending))
	age := 0.0
	if !b.Oldest.IsZero() {
		age = max(w.cfg.Now().Sub(b.Oldest).Seconds(), 0)
	}
	w.m.oldest.Set(age)
}

// perform runs one attempt and records its outcome; it returns only a failure to record.
func (w *Worker) perform(ctx context.Context, r cloudstore.OutboxRow) error {
	job := Job{ID: r.ID, Kind: r.Kind, Key: r.Key, Device: r.Device, AlertID: r.AlertID, Payload: r.Payload,
		Attempt: r.Attempts, CreatedAt: r.CreatedAt}
	log := w.log.With("outbox_id", r.ID, "kind", r.Kind, "key", r.Key, "attempt", r.Attempts)
	label := w.m.label(r.Kind)
	h, ok := w.cfg.Handlers[r.Kind]
	var (
		result string
		err    error
	)
	if ok {
		result, err = w.call(ctx, h, job)
	} else {
		err = Permanent(fmt.Errorf("no handler for kind %q", r.Kind))
	}
	if ctx.Err() != nil && err != nil {
		// Shutting down: the lease expires and another attempt runs; nothing to record.
		return nil
	}
	now := w.cfg.Now()
	var rec error
	switch {
	case err == nil:
		rec = w.cfg.Store.CompleteOutbox(ctx, r.ID, r.Attempts, result, now)
		if rec == nil {
			w.m.done.WithLabelValues(label).Inc()
			log.InfoContext(ctx, "outbox row done", "result", result)
		}
	case IsPermanent(err) || r.Attempts >= w.cfg.MaxAttempts:
		if !IsPermanent(err) {
			err = fmt.Errorf("gave up after %d attempts: %w", r.Attempts, err)
		}
		rec = w.cfg.Store.KillOutbox(ctx, r.ID, r.Attempts, err.Error(), now)
		if rec == nil {
			w.m.dead.WithLabelValues(label).Inc()
			log.ErrorContext(ctx, "outbox row dead", "error", err)
		}
	default:
		next := now.Add(w.backoff(r.Attempts, err))
		rec = w.cfg.Store.RetryOutbox(ctx, r.ID, r.Attempts, err.Error(), next)
		if rec == nil {
			w.m.retried.WithLabelValues(label).Inc()
			log.WarnContext(ctx, "outbox row retried", "error", err, "next", next)
		}
	}
	if errors.Is(rec, cloudstore.ErrConflict) {
		// The lease ran out and another worker took the row: its outcome stands.
		w.m.leaseLost.Inc()
		log.WarnContext(ctx, "outbox lease lost before the outcome was recorded")
		return nil
	}
	if rec != nil {
		return fmt.Errorf("record outbox row %d: %w", r.ID, rec)
	}
	return nil
}

// call runs h under the lease; a panic is an error to retry (the handler may be fixed by
// a deploy; MaxAttempts ends it otherwise).
func (w *Worker) call(ctx context.Context, h Handler, job Job) (result string, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Lease)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			w.log.ErrorContext(ctx, "outbox handler panicked", "outbox_id", job.ID, "kind", job.Kind, "panic", fmt.Sprint(p),
				"stack", string(debug.Stack()))
			result, err = "", fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return h(ctx, job)
}

// backoff is the wait after the attempt-th failure: BackoffBase doubling per attempt, at
// most BackoffMax, jittered to between half and all of it so that rows failed together
// spread out; a RetryAfter hint longer than that wins, up to BackoffMax.
func (w *Worker) backoff(attempt int, err error) time.Duration {
	d := w.cfg.BackoffBase
	for i := 1; i < attempt && d < w.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.BackoffMax)
	d = d/2 + rand.N(d/2+1) //nolint:gosec // G404: jitter, not a secret
	if ra, ok := errors.AsType[retryAfter](err); ok && ra.d > d {
		d = min(ra.d, w.cfg.BackoffMax)
	}
	return d
}

type retryAfter struct {
	err error
	d   time.Duration
}

func (r retryAfter) Error() string { return r.err.Error() }
func (r retryAfter) Unwrap() error { return r.err }

// RetryAfter marks err as temporary with a hint from the remote side (an HTTP
// Retry-After) of when to try again; the worker waits at least d, up to its BackoffMax.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return retryAfter{err: err, d: d}
}
